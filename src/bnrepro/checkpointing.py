"""Checkpoints a run can always resume from: atomic writes, and the choice of what to resume.

A run folder is the run's key (runs/<task>/<run_name>): relaunching the same command, or a SLURM
requeue, lands in the same folder, and `resume=auto` continues from checkpoints/last.ckpt. last.ckpt
is written after every evaluation and when a SIGTERM / SIGUSR1 arrives (callbacks/preemption.py);
best.ckpt is the older fallback. Each holds model, optimizer, LR schedule, loop position, the
callbacks' state and the RNG states (callbacks/rng_state.py), so a resumed run repeats the
uninterrupted one exactly on the same hardware.
"""

from __future__ import annotations

import csv
import errno
import io
import os
from collections import Counter
from pathlib import Path
from typing import NamedTuple

import lightning as L
import torch
from lightning.fabric.utilities.cloud_io import get_filesystem
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.plugins.io import TorchCheckpointIO

from bnrepro import safe_load
from bnrepro.errors import ResumeError

__all__ = ["ResumeError"]  # defined in errors.py; imported from here by loggers.py and the tests


NO_SPACE_LEFT_BYTES = 64 * 2**20  # less free space than this after a failed write: the disk is full


def _as_no_space(e: RuntimeError, path: Path) -> Exception:
    """torch.save's error for a write that failed -- RuntimeError "[enforce fail at inline_container.cc]
    ... file write failed", with no errno -- as the OSError(ENOSPC) a full disk is (exit status 4, the
    file named) when the file system is (nearly) full; as EDQUOT when it is not (a quota, the other
    reason a write fails midway). Any other RuntimeError is returned unchanged."""
    text = str(e)
    if "No space left" in text:
        return OSError(errno.ENOSPC, "No space left on device", str(path))
    if "write failed" not in text:
        return e
    try:
        fs = os.statvfs(path.parent)
        full = fs.f_bavail * fs.f_frsize < NO_SPACE_LEFT_BYTES
    except OSError:
        full = True
    if full:
        return OSError(errno.ENOSPC, "No space left on device", str(path))
    return OSError(errno.EDQUOT, "the write failed with space left on the file system: a quota?", str(path))


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
        except OSError as e:  # named after the checkpoint, not its temporary file
            raise OSError(e.errno, e.strerror, str(path)) from e
        except RuntimeError as e:
            raise _as_no_space(e, path) from e
        finally:
            tmp.unlink(missing_ok=True)

    def load_checkpoint(self, path, map_location=None, weights_only=None) -> dict:
        """Lightning's resume load (trainer.fit(ckpt_path=...)), weights-only whatever the caller or the
        environment asks (safe_load.py): a run folder is never a way in."""
        if get_filesystem(path).protocol not in ("file", ("file", "local")):
            return super().load_checkpoint(path, map_location, weights_only=True)
        try:
            return safe_load.load(path, map_location=map_location or "cpu")
        except ValueError as e:
            raise ResumeError(str(e)) from None


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
        if self.monitor is None and trainer.global_step >= trainer.max_steps:
            return  # the run's last.ckpt: on_train_end, below
        if getattr(self, "_evaluated", True):
            super().on_train_epoch_end(trainer, pl_module)

    def on_train_end(self, trainer, pl_module) -> None:
        # last.ckpt at the run's last step is written after the end-of-run work (Alg. 2, its rows in
        # metrics.csv: callbacks ahead of this one). A relaunch from a last.ckpt at max_steps trains
        # nothing and runs none of that work, so a kill during it would have ended "finished" without
        # Alg. 2's result; now the relaunch resumes from the previous period's last.ckpt and redoes it.
        if self.monitor is None and getattr(self, "_evaluated", False):
            super().on_train_epoch_end(trainer, pl_module)

    def load_state_dict(self, state_dict: dict) -> None:
        """Lightning's, after re-pointing the state's paths at this run's folder: a run folder copied or
        moved elsewhere (another runs_root) would otherwise forget its best score ("The dirpath has
        changed ... won't be reloaded"), save the next evaluation as best-v1.ckpt and leave best.ckpt
        at the old best."""
        old = state_dict.get("dirpath")
        if old and self.dirpath and old != self.dirpath:

            def here(path):  # <old dirpath>/best.ckpt -> <this dirpath>/best.ckpt
                if not path or os.path.dirname(path) != old:
                    return path
                return os.path.join(self.dirpath, os.path.basename(path))

            state_dict = {**state_dict, "dirpath": self.dirpath,
                          **{k: here(state_dict.get(k)) for k in ("best_model_path", "kth_best_model_path",
                                                                    "last_model_path") if k in state_dict},
                          "best_k_models": {here(k): v for k, v in state_dict.get("best_k_models", {}).items()}}  # fmt: skip
        super().load_state_dict(state_dict)

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


# The metrics.csv rows of a checkpoint's own step, in the checkpoint: a resume writes back those a kill
# tore or kept from the file (rows logged after the checkpoint are logged again by the resumed run).
ROWS_KEY = "metrics_rows"


class RowsInCheckpoint(L.Callback):
    """Stores the rows metrics.csv got at a checkpoint's step under ROWS_KEY; on resume, appends them to
    metrics.csv when it lacks them. The run's CSV writer (lightning_compat.run_csv_logger, rank 0)
    remembers them (`last_rows`) and writes them back as it wrote them, byte for byte."""

    @staticmethod
    def _writer(trainer):
        for logger in trainer.loggers:
            writer = getattr(logger, "_experiment", None)
            if hasattr(writer, "last_rows"):
                return writer
        return None

    def on_save_checkpoint(self, trainer, pl_module, checkpoint: dict) -> None:
        writer = self._writer(trainer)
        if writer is not None:
            # Rows still buffered (a logger.log_metrics call without Lightning's save, e.g. Alg. 2's)
            # are written first: no row of the checkpoint's step is left for after it.
            writer.save()
            checkpoint[ROWS_KEY] = [r for r in writer.last_rows if r.get("step") == trainer.global_step]

    def on_load_checkpoint(self, trainer, pl_module, checkpoint: dict) -> None:
        writer, rows = self._writer(trainer), checkpoint.get(ROWS_KEY)
        if writer is None or not rows:
            return
        # The file's rows of that step are the first of the checkpoint's (written in this order).
        have = logged_steps(Path(writer.metrics_file_path))[int(checkpoint["global_step"])]
        if have < len(rows):
            writer.metrics.extend(dict(r) for r in rows[have:])
            writer.save()


def logged_steps(metrics: Path) -> Counter:
    """How many complete rows metrics.csv holds of each step (a torn last line, unreadable steps: none)."""
    steps: Counter = Counter()
    if not metrics.is_file():
        return steps
    text = metrics.read_bytes()
    lines = text[: text.rfind(b"\n") + 1].decode(errors="replace")
    for row in csv.DictReader(io.StringIO(lines, newline="")):
        try:
            steps[int(float(row.get("step") or ""))] += 1
        except ValueError:
            continue
    return steps


def check_rows_kept(run_dir: Path, path: Path, ckpt: dict) -> None:
    """A relaunch never continues (and so never declares finished) a run whose metrics.csv lost rows it
    cannot log again: the evaluations before the checkpoint (each logs a row at its step; the count is
    RunSummary's state) must have their rows, the checkpoint's own step's rows counting as kept when
    the checkpoint holds them. ResumeError naming the file otherwise (exit status 2)."""
    if path.resolve().parent != (run_dir / "checkpoints").resolve():
        return  # resume=<a checkpoint of another folder>: this folder's file starts there
    state = (ckpt.get("callbacks") or {}).get("RunSummary") or {}
    evaluations, step = state.get("evaluations") or 0, int(ckpt["global_step"])
    metrics = run_dir / "metrics.csv"
    steps = {s for s in logged_steps(metrics) if s <= step}
    if ckpt.get(ROWS_KEY):
        steps.add(step)
    if len(steps) < evaluations:
        raise ResumeError(
            f"{metrics} holds rows for {len(steps)} of the {evaluations} evaluations {path} records (up to "
            f"step {step}): rows were lost (the file was emptied, cut short or replaced), and a resumed run "
            f"cannot log them again. Nothing was changed. Restore metrics.csv (from a backup, or the folder "
            f"the run was copied from), or train the run again with overwrite=true."
        )


class ResumePoint(NamedTuple):
    path: Path | None  # the checkpoint to resume from; None: a fresh start
    step: int | None  # its global step
    corrupt: list[Path]  # unreadable checkpoints to set aside (resume_fallback)
    config: dict | None = None  # the resolved config it holds (None: written before configs were kept)


def _load(path: Path) -> dict:
    """The checkpoint at `path`; ResumeError naming a file torch cannot read or that is no checkpoint."""
    try:
        ckpt = safe_load.load(path)  # weights only: a hostile pickle is refused before its code runs
    except safe_load.UnsafeCheckpointError as e:
        raise ResumeError(str(e)) from None
    except safe_load.UnreadableCheckpointError as e:
        raise ResumeError(str(e)) from e
    try:
        int(ckpt["global_step"])
    except (TypeError, KeyError, ValueError, AttributeError) as e:  # a torch file, but not a checkpoint
        raise ResumeError(
            f"{path} is not a Lightning checkpoint (no global_step: {type(e).__name__}: {e})"
        ) from e
    return ckpt


def read_checkpoint(path: Path) -> tuple[int, dict | None]:
    """(The global step a checkpoint was saved at, the run config it holds); raises ResumeError naming a
    file torch cannot read."""
    ckpt = _load(path)
    return int(ckpt["global_step"]), ckpt.get(CONFIG_KEY)


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
        ckpt = _load(path)
        check_rows_kept(run_dir, path, ckpt)
        return ResumePoint(path, int(ckpt["global_step"]), [], ckpt.get(CONFIG_KEY))
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
            ckpt = _load(path)
        except ResumeError as e:
            if not fallback:
                raise ResumeError(
                    f"{e}. Nothing was changed. Pass resume_fallback=true to set it aside and resume from "
                    f"the previous good checkpoint, or overwrite=true to start the run again."
                ) from e
            errors.append(str(e))
            corrupt.append(path)
            continue
        check_rows_kept(run_dir, path, ckpt)  # not a damaged checkpoint: no fallback helps
        return ResumePoint(path, int(ckpt["global_step"]), corrupt, ckpt.get(CONFIG_KEY))
    raise ResumeError(f"no readable checkpoint in {folder}: {'; '.join(errors)}. Nothing was changed.")
