"""Loggers: the run folder's metrics.csv always; W&B as a mirror when enabled.

W&B's mode is decided here, before wandb.init, so wandb never stops to prompt for a login:
online only when an API key is configured, offline otherwise (`wandb sync <run>/wandb/offline-run-*`
uploads it later). A WANDB_MODE set in the environment wins over mode=auto.
"""

from __future__ import annotations

import csv
import io
import netrc
import os
import secrets
import shutil
import string
import warnings
from pathlib import Path

from lightning.fabric.utilities.rank_zero import rank_zero_only
from lightning.pytorch.loggers import CSVLogger, Logger

from bnrepro.checkpointing import ResumeError
from bnrepro.lightning_compat import continue_csv, drop_wandb_anonymous, run_csv_logger


def has_wandb_api_key() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    host = os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai").split("://")[-1].split("/")[0]
    try:
        return netrc.netrc(os.environ.get("NETRC")).authenticators(host) is not None
    except (OSError, netrc.NetrcParseError):
        return False


def wandb_mode(requested: str) -> str:
    if requested != "auto":
        return requested
    if os.environ.get("WANDB_MODE"):
        return os.environ["WANDB_MODE"]
    return "online" if has_wandb_api_key() else "offline"


def csv_logger(run_dir: Path, step: int | None) -> CSVLogger:
    """Lightning's CSVLogger writing the run folder's metrics.csv, every rewrite atomic
    (lightning_compat.run_csv_logger). A resumed run (`step`: its checkpoint's) continues the file up to
    that step: rows logged after it -- a kill after the last checkpoint -- are logged again by the
    resumed run, and rows of the step itself that a kill tore are written back from the checkpoint
    (checkpointing.RowsInCheckpoint). A fresh run starts a new file."""
    logger = run_csv_logger(run_dir)
    if rank_zero_only.rank != 0:
        return logger  # only rank 0 writes metrics.csv
    path = run_dir / "metrics.csv"
    keep = step is not None and path.is_file()
    continue_csv(logger, rows_up_to(path.read_bytes(), step, path) if keep else b"")
    return logger


class MetricsFileError(ResumeError):
    """metrics.csv is damaged in a way a killed write cannot explain; the message names the line."""


def rows_up_to(text: bytes, step: int, path: Path | str = "metrics.csv") -> bytes:
    """metrics.csv without the rows logged after `step`; unchanged, byte for byte, when there are none.

    Lightning's CSV logger appends each row in place, so a process killed mid-write (or a full disk)
    leaves a torn last line without its newline, to which the resumed run's next row would be glued.
    Everything after the last newline is dropped (the row was logged after the checkpoint: the process
    died writing it, before it could save a later one). A complete row whose field count differs from
    the header's, or whose step is not a number, cannot come from a torn write: MetricsFileError names
    the line.
    """
    complete = text[: text.rfind(b"\n") + 1]
    if not complete:
        return b""  # not even the header was written in full
    lines = complete.decode(errors="replace").splitlines()
    rows = list(csv.reader(io.StringIO(complete.decode(errors="replace"), newline="")))
    header, body = rows[0], rows[1:]
    column = header.index("step") if "step" in header else None
    keep = []
    for number, row in enumerate(body, start=2):
        where = f"{path}, line {number}" + (f" ({lines[number - 1][:60]!r})" if number <= len(lines) else "")
        if len(row) != len(header):
            raise MetricsFileError(
                f"{where} has {len(row)} fields, its header {len(header)}: the file was changed or damaged. "
                f"Nothing was changed. Delete that line (or the whole file: the curves before the "
                f"checkpoint are then lost) and relaunch, or start over with overwrite=true."
            )
        value = row[column] if column is not None else ""
        try:
            logged_after = bool(value) and float(value) > step
        except ValueError:
            raise MetricsFileError(f"{where}: step {value!r} is not a number. Nothing was changed.") from None
        if not logged_after:
            keep.append(row)
    if len(keep) == len(body):
        return complete  # bytes: the csv module's \r\n stay as they are
    out = io.StringIO(newline="")
    w = csv.writer(out)  # "\r\n" rows, as Lightning's CSV logger writes
    w.writerow(header)
    w.writerows(keep)
    return out.getvalue().encode()


def build_loggers(cfg, run_dir: Path, resolved_config: dict, resume_step: int | None = None) -> list[Logger]:
    """metrics.csv in the run folder, then every mirror the `logger` group turns on (each node's
    `_target_` is called with the run folder, the run's name and its resolved config as
    run_dir, name and run_config)."""
    from bnrepro.config.build import build

    loggers: list[Logger] = [csv_logger(run_dir, resume_step)]
    for key, node in cfg.logger.items():
        if node is not None:
            # A partial, called here: instantiate would also build the `_target_`s inside run_config.
            make = build(node, f"logger.{key}", _partial_=True)
            loggers.append(make(run_dir=run_dir, name=cfg.run_name, run_config=resolved_config))
    return loggers


def wandb_run_id(run_dir: Path) -> str | None:
    """The run folder's W&B run id, made once and kept in <run_dir>/wandb_id: a relaunch or a SLURM
    requeue of the same command resumes the same W&B run instead of starting another."""
    path = run_dir / "wandb_id"
    if not path.is_file() and rank_zero_only.rank == 0:
        run_dir.mkdir(parents=True, exist_ok=True)
        alphabet = string.ascii_lowercase + string.digits  # W&B's own id alphabet and length
        path.write_text("".join(secrets.choice(alphabet) for _ in range(8)))
    return path.read_text().strip() if path.is_file() else None  # other ranks do not log to W&B


def wandb_logger(*, mode: str, project: str, entity: str | None, group: str | None, tags: list[str],
                 run_dir: Path, name: str, run_config: dict):  # fmt: skip
    """W&B mirror of the run (logger=wandb); when W&B cannot be reached or refuses the key, an offline run
    instead (with a warning): a W&B outage never costs a run, and the run folder is complete either way."""
    from lightning.pytorch.loggers import WandbLogger

    os.environ.setdefault("WANDB_SILENT", "true")  # one line in the log, not a banner per process

    def make(mode: str) -> WandbLogger:
        logger = WandbLogger(project=project, entity=entity, group=group, tags=list(tags), name=name,
                             save_dir=str(run_dir), mode=mode, config=run_config, id=wandb_run_id(run_dir),
                             resume="allow")  # fmt: skip
        drop_wandb_anonymous(logger)  # else W&B warns "The anonymous setting has no effect" every run
        return logger

    mode = wandb_mode(mode)
    logger = make(mode)
    if mode != "online" or rank_zero_only.rank != 0:
        return logger
    earlier = set((run_dir / "wandb").glob("run-*"))  # online runs of earlier launches: kept
    try:
        logger.experiment  # noqa: B018  (wandb.init happens here: connect now, not mid-training)
    except Exception as e:  # network down, server error, key refused: wandb raises many kinds
        warnings.warn(f"W&B online failed ({type(e).__name__}: {e}); logging offline to {run_dir}/wandb "
                      f"instead (`wandb sync` uploads it later)", stacklevel=2)  # fmt: skip
        import wandb

        wandb.teardown()
        # The failed attempt's local folder (run-<time>-<id>) holds nothing the offline run will not: only
        # the offline-run-* folder is left beside the earlier launches', the one `wandb sync` uploads.
        for folder in set((run_dir / "wandb").glob("run-*")) - earlier:
            shutil.rmtree(folder, ignore_errors=True)
        # W&B's service may still hold the failed attempt's id: the offline run takes a new one (kept in
        # wandb_id, so the next launch resumes it; `wandb sync` uploads it).
        (run_dir / "wandb_id").unlink(missing_ok=True)
        logger = make("offline")
    return logger


def close_wandb(failed: bool = False) -> None:
    """Ends the W&B run of this process, if any. Lightning leaves it open, so without this the next job
    of a Hydra multirun (same process) would log into the previous job's run."""
    import sys

    wandb = sys.modules.get("wandb")  # only if a WandbLogger imported it
    if wandb is not None and wandb.run is not None:
        wandb.finish(exit_code=1 if failed else 0)
