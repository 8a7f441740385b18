"""Several optimizer steps per Lightning batch, for networks whose step costs about what Lightning's own
per-batch work costs: the MNIST MLPs (~1 ms a step on a CPU core, ~0.3 ms as a CUDA graph).

This file is the one place that knows a Lightning batch may hold K mini-batches. run.py builds
MultiStepClassifier when `resolve_steps_per_batch` (below) gives K > 1 or CUDA graphs are on, and sets
the data module's `steps_per_batch`, whose sampler then yields [K, B] index chunks
(data/device_loader.py StepChunkSampler). Callbacks stay per batch; where one needs the mini-batches of a batch it asks
`pl_module.mini_batches(batch)` (callbacks/population.py, callbacks/divergence.py).

Each of the K steps is a full SGD step -- zero_grad, forward, backward, update, then the LR schedule -- on
the plain torch optimizer, so a step means what it means with Lightning's automatic optimization (K=1,
lit/classifier.py) and the two train the same weights (tests/test_train.py). Lightning's step counter
(`trainer.global_step`) advances by K at the end of the batch. What is left out per step are Lightning's
per-step hooks (on_before_backward, on_after_backward, on_before_optimizer_step), which no callback of the
project uses; Lightning still runs every per-batch hook. Measured on the 2-core development machine, 10k
steps of the BN MLP with the project's callbacks: 9.4 s of fit through Lightning's optimizer wrapper and
manual_backward at every step, 8.3 s on the plain optimizer (median of 4; docs/benchmarks.md).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Sequence

import torch

from bnrepro.lightning_compat import count_optimizer_steps
from bnrepro.lit.classifier import ClassifierModule
from bnrepro.lit.graphed import GraphedSteps


def resolve_steps_per_batch(
    requested: int, eval_steps: Sequence[int], world_size: int, precision: str, chunks: bool
) -> int:
    """K, the optimizer steps of one Lightning batch: `requested` (loop.steps_per_batch) reduced to divide
    every evaluation period, i.e. every step in `eval_steps` (the regular period and the steps off its
    grid: a period is whole batches). 1 where several steps per batch cannot work: under
    DDP (its gradient all-reduce runs once per forward of the wrapped module), with a gradient scaler
    (16-mixed: the plain optimizer step would bypass it), or for a data module whose batches cannot be
    chunks (`chunks`: StepStreamDataModule.can_chunk_steps; image folders read by workers)."""
    if world_size > 1 or precision in ("16-mixed", "16") or not chunks:
        return 1
    return math.gcd(requested, *eval_steps)


class MultiStepClassifier(ClassifierModule):
    """ClassifierModule whose training batch is K mini-batches, [K, B, ...] inputs and [K, B] labels.

    `cuda_graphs`: True to replay the K steps as one CUDA graph (lit/graphed.py), or "emulate" (the same
    bookkeeping without a graph, for the CPU tests)."""

    def __init__(self, *args, cuda_graphs: bool | str = False, **kwargs):
        super().__init__(*args, **kwargs)
        self.automatic_optimization = False
        self.graphed = GraphedSteps(self._steps, emulate=cuda_graphs == "emulate") if cuda_graphs else None

    def mini_batches(self, batch) -> list:
        x, y = batch
        return list(zip(x, y))

    def training_step(self, batch, batch_idx):
        x, y = batch
        opt, sched = self.optimizers(), self.lr_schedulers()
        losses = self._graphed_steps(x, y, sched) if self.graphed is not None else None
        if losses is None:
            losses = self._steps(x, y, sched)
        # The bookkeeping LightningOptimizer.step does per step: Lightning's step counter
        # (trainer.global_step), so checkpoints, the loop and resumes see K steps.
        count_optimizer_steps(opt, len(x))
        self.train_loss.update(losses)
        return losses  # per step, for callbacks (divergence check)

    def _autocast_off(self):
        """Backward and the update outside autocast, as in automatic optimization and PyTorch's AMP
        recipe (manual optimization runs all of training_step inside Lightning's autocast context);
        measured on an H100 with torch.compile: inside it the step was 21% slower (docs/benchmarks.md)."""
        device = self.device.type
        if not torch.is_autocast_enabled(device):
            return contextlib.nullcontext()
        return torch.autocast(device, enabled=False)

    def _forward_context(self, steps: int):
        """Autocast caches the low-precision copy of each weight for the whole training_step; with several
        steps per batch the weights change in between, so the cache must not carry over."""
        device = self.device.type
        if steps > 1 and torch.is_autocast_enabled(device):
            return torch.autocast(device, dtype=torch.get_autocast_dtype(device), cache_enabled=False)
        return contextlib.nullcontext()

    def _steps(self, x: torch.Tensor, y: torch.Tensor, sched=None) -> torch.Tensor:
        """K optimizer steps on the plain torch optimizer; their losses. Eager (`sched` given): each step
        followed by its LR schedule step (the LR may change inside a batch). Captured as a CUDA graph
        (graphed.py calls it without `sched`): at one LR, gradients zeroed in place (a graph cannot
        allocate on replay; 0 + g == g, the same update)."""
        opt = self.optimizers().optimizer
        forward, update = self._forward_context(len(x)), self._autocast_off()
        losses = []
        for xb, yb in zip(x, y):
            with forward:
                loss = self.loss(self.net(self._input(xb)), yb)
            with update:
                opt.zero_grad(set_to_none=sched is not None)
                loss.backward()
                opt.step()
            if sched is not None:
                sched.step()
            losses.append(loss.detach())
        return torch.stack(losses)

    def _graphed_steps(self, x, y, sched) -> torch.Tensor | None:
        """The chunk through the CUDA graph when its K steps share one LR; None: run it eagerly."""
        step, k = self.global_step, len(x)
        factors = {self.lr_factor(step + i) for i in range(k)}
        if len(factors) != 1:
            # Eager across an LR change: its zero_grad(set_to_none) drops the gradient tensors the graph
            # writes into, so the graph must be captured again before its next use.
            self.graphed.invalidate()
            return None
        losses = self.graphed.run(x, y, lr=self.lr * factors.pop())
        if losses is not None:
            for _ in range(k):  # the schedule's step count, so checkpoints and resumes see K steps
                sched.step()
        return losses
