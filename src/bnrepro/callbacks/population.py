"""Alg. 2 of the paper: BN with population statistics for inference, evaluated at the end of training
and, with `eval_bn="population"`, at every evaluation during training.

During training, evaluation uses BN's moving averages (momentum 0.1) by default, as the paper tracks
accuracy (Sec. 3.1). With `eval_bn="population"`, every evaluation is of Alg. 2's inference network
instead: before it, the statistics are recomputed as below over `eval_bn_batches` training mini-batches
(the training stream's first ones, the same at every evaluation, so what changes from one evaluation to
the next is the weights); after it, the moving averages are put back exactly, buffers, momentum and
random generators as they were, so training does not change by a bit (tests/test_population.py).
At the end, this callback recomputes every BN layer's mean and variance as Alg. 2 defines them --
the average of mini-batch means, and m/(m-1) times the average mini-batch variance -- over
`num_batches` training mini-batches (PyTorch's cumulative average, momentum=None, keeps exactly these;
its running_var is already the unbiased m/(m-1) estimate). It then evaluates the validation set with
them, saves that network as checkpoints/population.ckpt, reports both accuracies (summary.json:
final_acc = moving averages, population_acc = Alg. 2) and restores the moving averages in memory.
"""

from __future__ import annotations

import copy
import itertools
from pathlib import Path

import lightning as L
import torch
from torch import nn

from bnrepro.callbacks import rng_state
from bnrepro.console import progress


def bn_layers(net: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    return [m for m in net.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


@torch.no_grad()
def recompute_population_statistics(net: nn.Module, batches, num_batches: int) -> int:
    """Replaces BN running stats by Alg. 2's population statistics over `num_batches` input batches.

    Only the BN layers run in training mode (dropout stays off, as at inference). Returns how many
    batches were used (fewer if `batches` runs out).
    """
    bns = bn_layers(net)
    was_training = net.training
    saved = [(copy.deepcopy(m.state_dict()), m.momentum) for m in bns]
    calls = dict.fromkeys(bns, 0)
    hooks = [m.register_forward_hook(lambda m, i, o: calls.__setitem__(m, calls[m] + 1)) for m in bns]
    net.eval()
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # cumulative average: every batch weighs the same
        m.train()
    used = 0
    for x in progress(
        itertools.islice(batches, num_batches), num_batches, "Alg. 2: BN statistics, training batch"
    ):
        net(x)
        used += 1
    for h in hooks:
        h.remove()
    for m, (state, momentum) in zip(bns, saved):
        m.momentum = momentum
        if not calls[m]:  # not on the inference path (auxiliary heads): keep what it had
            m.load_state_dict(state)
    net.train(was_training)
    return used


def _train_inputs(datamodule, pl_module):
    """Input mini-batches of the training stream from its first step, one at a time, over as many
    evaluation periods as needed (each iteration of the loader reads the next period; a training batch
    may hold several mini-batches: the module's mini_batches says which)."""
    loader = datamodule.train_dataloader(start_step=0)  # not where training is: the stream's first batches
    while True:
        for batch in loader:
            for x, y in pl_module.mini_batches(batch):
                # The data module's own step after the transfer, as in training (prepared chunks: jitter).
                x, _ = datamodule.on_after_batch_transfer((x.to(pl_module.device, non_blocking=True), y), 0)
                yield x


def population_from_training_batches(trainer, pl_module, num_batches: int) -> int:
    """Alg. 2's statistics in every BN layer of the module's net, from the first `num_batches` training
    mini-batches per device, averaged over the ranks. The random generators are left as they were (a
    loader or a data module's jitter could draw from them), so training goes on as it would have."""
    rng = rng_state.capture()
    try:
        with trainer.precision_plugin.forward_context():
            inputs = _train_inputs(trainer.datamodule, pl_module)
            used = recompute_population_statistics(pl_module.net, inputs, num_batches)
            inputs.close()  # the loader's iterator ends here, not whenever it is collected
    finally:
        rng_state.restore(rng)
    for m in bn_layers(pl_module.net):  # every rank averaged its own batches: average the ranks' averages
        for buf in (m.running_mean, m.running_var):
            buf.copy_(trainer.strategy.reduce(buf, reduce_op="mean"))
    return used


class PopulationStatistics(L.Callback):
    """`num_batches`: training mini-batches (per device) behind the final Alg. 2 evaluation.
    `eval_bn`: what BN uses at each evaluation during training, "moving" (its moving averages) or
    "population" (Alg. 2's statistics over `eval_bn_batches` training mini-batches, recomputed before
    each evaluation, the moving averages restored after it; checked once, with the config:
    config/checks.py). `checkpoint_dir`: where population.ckpt goes
    (the weights with Alg. 2's statistics, for evaluation); None: <run folder>/checkpoints (the trainer's
    default_root_dir)."""

    def __init__(self, num_batches: int, eval_bn: str, eval_bn_batches: int,
                 checkpoint_dir: str | Path | None = None):  # fmt: skip
        self.num_batches = num_batches
        self.eval_bn, self.eval_bn_batches = eval_bn, eval_bn_batches
        self.checkpoint_dir = Path(checkpoint_dir) if checkpoint_dir else None
        self.results: dict | None = None
        self._moving: list[dict] | None = None  # the moving averages while an evaluation uses Alg. 2's

    def summary_info(self) -> dict:
        """What summary.json says of this callback (the Figure 1 renderer names the evaluated network)."""
        batches = {"eval_bn_batches": self.eval_bn_batches} if self.eval_bn == "population" else {}
        return {"eval_bn": self.eval_bn, **batches}

    def on_validation_start(self, trainer, pl_module):
        # on_validation_start, before every on_validation_epoch_start: the percentiles' hook
        # (callbacks/percentiles.py) is not yet on, so it sees the validation set only, and through the
        # same network as the accuracy.
        bns = bn_layers(pl_module.net)
        if self.eval_bn != "population" or not bns:
            return
        if trainer.world_size > 1:  # the moving averages evaluated and kept are rank 0's (lit/classifier.py)
            for buf in pl_module.net.buffers():
                torch.distributed.broadcast(buf, src=0)
        # Cloned, not referenced: the recomputation writes into the buffers in place.
        self._moving = [{k: v.clone() for k, v in m.state_dict().items()} for m in bns]
        population_from_training_batches(trainer, pl_module, self.eval_bn_batches)

    def on_validation_end(self, trainer, pl_module):
        # Before the checkpoints (run.py puts this callback ahead of them): last.ckpt holds the moving
        # averages, so a resumed run trains on exactly what the uninterrupted one did.
        if self._moving is None:
            return
        for m, state in zip(bn_layers(pl_module.net), self._moving):
            m.load_state_dict(state)
        self._moving = None

    def on_train_end(self, trainer, pl_module):
        net = pl_module.net
        bns = bn_layers(net)
        if not bns:
            return  # Inception without BN: nothing to recompute
        saved = copy.deepcopy([m.state_dict() for m in bns])  # the moving averages, restored at the end
        used = population_from_training_batches(trainer, pl_module, self.num_batches)
        metrics = {**self.evaluate(trainer, pl_module), "population/batches": used * trainer.world_size}
        self.results = metrics
        trainer.callback_metrics.update({k: torch.tensor(v) for k, v in metrics.items()})
        for logger in trainer.loggers:
            logger.log_metrics(metrics, step=trainer.global_step)
        checkpoint_dir = self.checkpoint_dir or Path(trainer.default_root_dir) / "checkpoints"
        trainer.save_checkpoint(checkpoint_dir / "population.ckpt", weights_only=True)  # for evaluation
        for m, state in zip(bns, saved):  # back to the moving averages (= last.ckpt)
            m.load_state_dict(state)

    # Kept in every checkpoint: the final last.ckpt is written after Alg. 2's evaluation, so a run killed
    # after it but before summary.json is finished by the relaunch (which trains nothing, and so never
    # reaches on_train_end) with its Alg. 2 result; callbacks/summary.py reads `results`.
    def state_dict(self) -> dict:
        return {"results": self.results}

    def load_state_dict(self, state_dict: dict) -> None:
        self.results = state_dict.get("results")

    @torch.no_grad()
    def evaluate(self, trainer, pl_module) -> dict:
        """Top-1 (and top-5) on the validation set, with the module's own metrics (synced across ranks)."""
        net, device = pl_module.net, pl_module.device
        metrics = {"population/acc": pl_module.val_acc, "population/acc_top5": pl_module.val_acc_top5}
        metrics = {k: m for k, m in metrics.items() if m is not None}
        was_training = net.training
        net.eval()
        with trainer.precision_plugin.forward_context():
            for x, y in progress(trainer.datamodule.val_dataloader(), None, "Alg. 2: evaluating, batch"):
                x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
                logits = net(x)
                for m in metrics.values():
                    m.update(logits, y)
        net.train(was_training)
        out = {k: float(m.compute()) for k, m in metrics.items()}
        for m in metrics.values():
            m.reset()
        return out
