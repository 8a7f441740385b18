"""Divergence is a result: a non-finite training loss stops the run cleanly on every rank.

The paper reports that Inception with 5x the LR diverged. Here the training step returns its per-step
losses; every `check_every_n_batches` Lightning batches the ranks agree (one all-reduce) whether any
loss was NaN/inf and, if so, all raise TrainingDiverged together -- no rank is left waiting in a
collective. Before every evaluation (so before any checkpoint is written) the weights themselves are
checked too: a step with a finite loss can still leave inf/NaN weights behind. Raising (rather than
`trainer.should_stop`) skips the checkpoints, so the last checkpoint on disk is the last good one;
RunSummary turns the exception into status "diverged".
"""

from __future__ import annotations

import lightning as L
import torch

from bnrepro.errors import EXIT_DIVERGED, ReproError


class TrainingDiverged(ReproError, RuntimeError):
    """Raised on every rank when the training loss became non-finite; `step` is the first bad step.
    A result, not bad input: exit status 3, and a multirun goes on with its other jobs (entry.py)."""

    exit_status = EXIT_DIVERGED

    def __init__(self, message: str, step: int | None = None):
        super().__init__(message)
        self.step = step


class DivergenceStop(L.Callback):
    """`inject_nan_at_step`: a test's stand-in for a blow-up at that step (testing.inject_nan_at_step)."""

    def __init__(self, check_every_n_batches: int, inject_nan_at_step: int | None):
        self.every = check_every_n_batches
        self.inject_nan_at_step = inject_nan_at_step

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        # Testing aid: NaN weights make the loss of the first step of this batch NaN on every rank.
        k, step = self.inject_nan_at_step, trainer.global_step
        if k is not None and step < k <= step + len(pl_module.mini_batches(batch)):  # step k in this batch
            with torch.no_grad():
                next(pl_module.parameters()).fill_(float("nan"))

    def on_validation_start(self, trainer, pl_module):
        if trainer.sanity_checking:
            return
        tensors = [*pl_module.parameters(), *pl_module.buffers()]
        bad = not all(bool(torch.isfinite(t).all()) for t in tensors if t.is_floating_point())
        if trainer.strategy.reduce_boolean_decision(bad, all=False):  # any rank (identity on one device)
            step = trainer.global_step
            raise TrainingDiverged(
                f"the weights became non-finite by step {step} (checked before evaluating it); "
                f"the run stopped, its last checkpoint is the last good one",
                step,
            )

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if outputs is None or (batch_idx + 1) % self.every:
            return
        losses = outputs if isinstance(outputs, torch.Tensor) else outputs["loss"]
        bad = ~torch.isfinite(losses.reshape(-1))
        if trainer.strategy.reduce_boolean_decision(bool(bad.any()), all=False):  # any rank
            first = trainer.global_step - bad.numel() + 1  # the step of this batch's first loss
            step = first + int(bad.nonzero()[0]) if bad.any() else trainer.global_step
            raise TrainingDiverged(
                f"training loss became non-finite at step {step} (e.g. {losses.reshape(-1)[-1].item()}); "
                f"the run stopped, its last checkpoint is the last good one",
                step,
            )
