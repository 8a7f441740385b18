"""Training length and evaluation period in optimizer steps, from lengths given in steps, examples or
epochs (LoopConfig), once the global batch is known."""

from __future__ import annotations

from bnrepro.config.errors import ConfigError


def resolve_loop(cfg, global_batch: int) -> tuple[int, int]:
    """(max_steps, eval_every_steps) for this global batch; examples and epochs round to whole steps.

    The number of evaluations is ceil(length / period), and training runs exactly that many evaluation
    periods, so the last step is always evaluated.
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
        if steps % every:
            raise ConfigError(
                f"trainer.max_steps={steps} is not a multiple of the evaluation period ({every} steps at "
                f"global batch {global_batch}); set loop.eval_every_steps to a divisor of it"
            )
        return steps, every
    total = examples(loop.max_examples, loop.max_epochs)
    return every * -(-total // (every * global_batch)), every
