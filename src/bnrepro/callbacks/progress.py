"""Training progress as plain lines, for a stdout that is not a terminal (progress_bar below picks it).

Lightning's tqdm bar redraws one line with carriage returns: in a redirected log that is one very long
line (about 3 KB per tiny run). This prints a line every `every_s` seconds while training or evaluating,
from global rank 0 only; the line after each evaluation is callbacks/summary.py's.
"""

from __future__ import annotations

import time

from lightning.pytorch.callbacks import ProgressBar, TQDMProgressBar

from bnrepro.console import on_terminal


class LineProgress(ProgressBar):
    def __init__(self, every_s: float):
        super().__init__()
        self.every_s = every_s
        self._enabled = True
        self._start = self._last = 0.0
        self._first_step = 0

    def disable(self) -> None:
        self._enabled = False

    def enable(self) -> None:
        self._enabled = True

    def _on(self, trainer) -> bool:
        return self._enabled and trainer.is_global_zero and not trainer.sanity_checking

    def on_train_start(self, trainer, pl_module) -> None:
        self._start = self._last = time.monotonic()
        self._first_step = trainer.global_step  # a resumed run: time per step counts this launch's steps

    def _step(self, trainer) -> str:
        done = trainer.global_step - self._first_step
        pace = f", {(time.monotonic() - self._start) / done:.2f} s/step" if done else ""
        return (
            f"step {trainer.global_step}/{trainer.max_steps} ({time.monotonic() - self._start:.0f} s{pace})"
        )

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        now = time.monotonic()
        if self._on(trainer) and now - self._last >= self.every_s:
            self._last = now
            loss = trainer.callback_metrics.get("train/loss")
            print(f"training: {self._step(trainer)}" + (f", train/loss {float(loss):.4f}" if loss is not None else ""),
                  flush=True)  # fmt: skip

    def on_validation_start(self, trainer, pl_module) -> None:
        if trainer.state.fn != "fit":  # src/eval.py: a validation pass alone
            self._start = self._last = time.monotonic()

    def on_validation_batch_end(
        self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0
    ) -> None:
        now = time.monotonic()
        if self._on(trainer) and now - self._last >= self.every_s:  # a long evaluation (ImageNet's val set)
            self._last = now
            total = trainer.num_val_batches[dataloader_idx] if trainer.num_val_batches else "?"
            where = (
                f" at {self._step(trainer)}" if trainer.state.fn == "fit" else f" ({now - self._start:.0f} s)"
            )
            print(f"evaluating{where}: batch {batch_idx + 1}/{total}", flush=True)


def progress_bar(enabled: bool, every_s: float = 30.0) -> list:
    """The trainer's progress callback, [] when trainer.enable_progress_bar is false (Lightning refuses a
    progress bar callback then): tqdm's bar on a terminal, plain lines otherwise (LineProgress)."""
    if not enabled:
        return []
    return [TQDMProgressBar() if on_terminal() else LineProgress(every_s)]
