"""Checkpoints a run can always resume from: atomic writes, and the choice of what to resume.

A run folder is the run's key (runs/<task>/<run_name>): relaunching the same command, or a SLURM
requeue, lands in the same folder, and `resume=auto` continues from checkpoints/last.ckpt. last.ckpt
is written after every evaluation and when a SIGTERM / SIGUSR1 arrives (callbacks/preemption.py);
best.ckpt is the older fallback. Each holds model, optimizer, LR schedule, loop position, the
callbacks' state and the RNG states (callbacks/rng_state.py), so a resumed run repeats the
uninterrupted one exactly on the same hardware.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import NamedTuple

import lightning as L
import torch
from lightning.fabric.utilities.cloud_io import get_filesystem
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.plugins.io import TorchCheckpointIO

from bnrepro.errors import ResumeError

__all__ = ["ResumeError"]  # defined in errors.py; imported from here by loggers.py and the tests


class AtomicCheckpointIO(TorchCheckpointIO):
    """torch.save to a temporary file beside the target, then an atomic rename: a kill during the write
    leaves the previous checkpoint intact and never a truncated one under the real name."""

    def save_checkpoint(self, checkpoint, path, storage_options=None) -> None:
        path = Path(path)
        if get_filesystem(path).protocol not in ("file", ("file", "local")):  # remote stores: Lightning's way
            return super().save_checkpoint(checkpoint, path, storage_options)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.partial")
        try:
            torch.save(checkpoint, tmp)
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)


class EvaluationCheckpoint(ModelCheckpoint):
    """Lightning's ModelCheckpoint, saving only after an evaluation of this launch.

    It saves at the end of each training epoch (one evaluation period; the evaluation runs just
    before). A run resumed from a checkpoint written there ends that epoch again without evaluating:
    ModelCheckpoint would warn that `val/acc` is missing from the metrics and rewrite last.ckpt. Its
    state (best score, best path) keeps ModelCheckpoint's key, so checkpoints written before restore.
    """

    def on_train_start(self, trainer, pl_module) -> None:
        self._evaluated = False
        super().on_train_start(trainer, pl_module)

    def on_validation_end(self, trainer, pl_module) -> None:
        self._evaluated = not trainer.sanity_checking
        super().on_validation_end(trainer, pl_module)

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        if getattr(self, "_evaluated", True):
            super().on_train_epoch_end(trainer, pl_module)

    @property
    def state_key(self) -> str:
        return "ModelCheckpoint" + super().state_key.removeprefix(type(self).__qualname__)


# The run's resolved config (what config.yaml holds) in every checkpoint: a resume is checked against it
# when config.yaml is gone (run.py).
CONFIG_KEY = "run_config"


class ConfigInCheckpoint(L.Callback):
    """Stores the run's resolved config in each checkpoint under CONFIG_KEY."""

    def __init__(self, config: dict):
        self.config = config

    def on_save_checkpoint(self, trainer, pl_module, checkpoint: dict) -> None:
        checkpoint[CONFIG_KEY] = self.config


class ResumePoint(NamedTuple):
    path: Path | None  # the checkpoint to resume from; None: a fresh start
    step: int | None  # its global step
    corrupt: list[Path]  # unreadable checkpoints to set aside (resume_fallback)
    config: dict | None = None  # the resolved config it holds (None: written before configs were kept)


def read_checkpoint(path: Path) -> tuple[int, dict | None]:
    """(The global step a checkpoint was saved at, the run config it holds); raises ResumeError naming a
    file torch cannot read."""
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
        return int(ckpt["global_step"]), ckpt.get(CONFIG_KEY)
    except Exception as e:  # truncated zip, pickle garbage, a file of something else
        raise ResumeError(f"{path} is not a readable checkpoint ({type(e).__name__}: {e})") from e


def checkpoint_step(path: Path) -> int:
    """The global step a checkpoint was saved at; raises ResumeError naming a file torch cannot read."""
    return read_checkpoint(path)[0]


def select_resume(run_dir: Path, resume: str, fallback: bool) -> ResumePoint:
    """The checkpoint to resume from (None for a fresh start), its step and config, and the unreadable
    ones to set aside, as `resume` (auto|true|false|<path>) asks. Changes nothing on disk: the caller
    sets them aside once every other start-up check has passed."""
    mode = str(resume).lower()
    if mode not in ("auto", "true", "false"):  # an explicit checkpoint
        path = Path(resume)
        if not path.is_file():
            raise ResumeError(f"resume={resume}: no such checkpoint file")
        step, config = read_checkpoint(path)
        return ResumePoint(path, step, [], config)
    folder = run_dir / "checkpoints"
    candidates = [p for p in (folder / "last.ckpt", folder / "best.ckpt") if p.is_file()]
    if mode == "false":
        if candidates:
            raise ResumeError(
                f"{run_dir} holds a partial run ({candidates[0]}) and resume=false. Nothing was changed. "
                f"Resume it (resume=auto, the default), start over with overwrite=true, or pick another "
                f"run_name=<name>."
            )
        return ResumePoint(None, None, [])
    if not candidates:
        if mode == "true":
            raise ResumeError(
                f"resume=true but {folder} holds no checkpoint to resume from. Run without resume=true to "
                f"start the run, or pass resume=<path to a .ckpt>."
            )
        return ResumePoint(None, None, [])
    errors, corrupt = [], []
    for path in candidates:
        try:
            step, config = read_checkpoint(path)
            return ResumePoint(path, step, corrupt, config)
        except ResumeError as e:
            if not fallback:
                raise ResumeError(
                    f"{e}. Nothing was changed. Pass resume_fallback=true to set it aside and resume from "
                    f"the previous good checkpoint, or overwrite=true to start the run again."
                ) from e
            errors.append(str(e))
            corrupt.append(path)
    raise ResumeError(f"no readable checkpoint in {folder}: {'; '.join(errors)}. Nothing was changed.")
