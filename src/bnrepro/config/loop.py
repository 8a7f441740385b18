"""Training length and evaluation steps in optimizer steps, from lengths given in steps, examples or
epochs (LoopConfig), once the global batch is known."""

from __future__ import annotations

from dataclasses import dataclass

from bnrepro.config.errors import ConfigError


@dataclass(frozen=True)
class Loop:
    """A run's length and when it is evaluated, in optimizer steps of the run's global batch."""

    max_steps: int
    eval_every: int  # the regular period P: evaluations at P, 2P, ... counted from step 0
    eval_steps: tuple[int, ...]  # every evaluation step, increasing; the last one is max_steps

    @property
    def extra_eval_steps(self) -> tuple[int, ...]:
        """The evaluation steps off the regular grid: the dense early ones and a short last period's end."""
        return tuple(s for s in self.eval_steps if s % self.eval_every)


def resolve_loop(cfg, global_batch: int) -> Loop:
    """The run's Loop at this global batch; examples and epochs round to whole steps.

    The last step is always evaluated. A trainer.max_steps that is not a multiple of the period ends
    with a shorter period, evaluated at max_steps; a length in examples or epochs is rounded up to whole
    periods (so the paper's lengths are what they always were). Dense early evaluation
    (loop.early_eval_every_steps N up to loop.early_eval_until_steps M) adds N, 2N, ... <= M; the part
    of it past max_steps is dropped, so a short run of a configuration that has it still runs.
    """
    loop, epoch = cfg.loop, cfg.data.num_train_examples * cfg.loop.epoch_scale
    if global_batch > cfg.data.num_train_examples:
        raise ConfigError(
            f"the global batch {global_batch} (data.batch_size x devices) is larger than the training set "
            f"(data.num_train_examples={cfg.data.num_train_examples}); lower data.batch_size"
        )

    def examples(n_examples, n_epochs):
        return n_examples if n_examples is not None else round(n_epochs * epoch)

    every = loop.eval_every_steps or max(
        1, round(examples(loop.eval_every_examples, loop.eval_every_epochs) / global_batch)
    )
    if cfg.trainer.max_steps is not None:
        steps = cfg.trainer.max_steps
    else:
        total = examples(loop.max_examples, loop.max_epochs)
        steps = every * -(-total // (every * global_batch))
    early = early_steps(loop.early_eval_every_steps, loop.early_eval_until_steps, every)
    grid = range(every, steps + 1, every)
    return Loop(steps, every, tuple(sorted({*grid, *(s for s in early if s < steps), steps})))


def early_steps(early_every: int | None, until: int | None, every: int) -> range:
    """N, 2N, ... <= M of dense early evaluation (empty when off, or when the regular period P <= N);
    ConfigError naming the keys when M < N (config/checks.py has made them positive and set together)."""
    if early_every is None:
        return range(0)
    if early_every >= every:
        # The regular period is already as dense (a short run, a big global batch): nothing to add. Not
        # refused, so that an experiment's dense start does not stop a quick run of it.
        return range(0)
    if until < early_every:
        raise ConfigError(
            f"loop.early_eval_until_steps={until} is below loop.early_eval_every_steps={early_every}: no "
            f"early evaluation would happen; set it to the last step to evaluate densely"
        )
    return range(early_every, until + 1, early_every)
