"""What a launch writes about itself into its run folder -- Hydra's record and the log -- only once the
launch is accepted, so that a refused launch leaves the folder as it was.

Hydra would write both before the task function runs: `.hydra/` (config, overrides) per launch and the
job log `train.log`, and create the run folder itself. conf/train.yaml turns Hydra's record and its log
file off (`hydra.output_subdir: null`, `hydra/job_logging: run_folder`); run.py calls `write_record`
and `run_log` after every start-up check has passed. A refused launch removes the folders Hydra created
for it, if they are still empty (`NewFolders`, `remove_new_folders`).
"""

from __future__ import annotations

import contextlib
import logging
import re
import sys
from datetime import datetime
from pathlib import Path

from hydra.experimental.callback import Callback

# Hydra's default job-log format (hydra/conf/hydra/job_logging/default.yaml)
LOG_FORMAT = "[%(asctime)s][%(name)s][%(levelname)s] - %(message)s"

_new_folders: set[Path] = set()  # folders Hydra creates for this process's run or sweep


def write_record(run_dir: Path, cfg) -> Path | None:
    """Writes Hydra's record of this launch -- config.yaml (`cfg`, as composed), hydra.yaml and
    overrides.yaml -- to `<run_dir>/.hydra/<time>/`, as Hydra does with
    `hydra.output_subdir=.hydra/${now:...}`: each launch its own folder, so a relaunch never overwrites
    an earlier record. Nothing when the run is not launched by Hydra (a test's compose + train)."""
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import OmegaConf

    if not HydraConfig.initialized():
        return None
    hydra_cfg = HydraConfig.instance().cfg  # the launch's config, masked to its `hydra` node
    folder = run_dir / ".hydra" / datetime.now().strftime("%Y%m%d-%H%M%S-%f")
    folder.mkdir(parents=True)
    for name, node in (("config.yaml", cfg), ("hydra.yaml", hydra_cfg),
                       ("overrides.yaml", hydra_cfg.hydra.overrides.task)):  # fmt: skip
        (folder / name).write_text(OmegaConf.to_yaml(node))
    return folder


@contextlib.contextmanager
def run_log(run_dir: Path, name: str = "train.log"):
    """The run's log file `<run_dir>/train.log` (appended to by every launch), for the root logger's
    records while the run trains -- Hydra's job log file, opened only once the launch is accepted -- and
    Lightning's: imported before Hydra configures logging, Lightning gives its logger a console handler
    of its own and stops it propagating to the root, so its lines (resumed from, fit stopped at, ...)
    would reach the console but not train.log."""
    handler = logging.FileHandler(run_dir / name)
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    loggers = [logging.getLogger()]
    loggers += [
        logging.getLogger(n)
        for n in ("lightning.pytorch", "lightning.fabric")
        if not logging.getLogger(n).propagate
    ]
    for logger in loggers:
        logger.addHandler(handler)
    try:
        yield
    finally:
        for logger in loggers:
            logger.removeHandler(handler)
        handler.close()


# A run name is one folder name under runs_root/<task>: no separator and no leading dot, so that neither
# `..` nor a path can take the run folder (and what overwrite=true clears) outside runs_root.
RUN_NAME = re.compile(r"[A-Za-z0-9_+=,@-][A-Za-z0-9._+=,@-]*")


def run_name_problem(run_name) -> str | None:
    """Why `run_name` cannot name a run folder, or None."""
    if RUN_NAME.fullmatch(str(run_name)):
        return None
    return (
        f"run_name={run_name} is not a plain folder name: a run folder lies directly in runs_root/<task>, "
        f"so its name may hold letters, digits and . _ - + = , @ (not starting with a dot, no / or \\ or "
        f"spaces). Nothing was written."
    )


def _refuse(message: str) -> None:
    from bnrepro.errors import EXIT_BAD_INPUT

    print(f"error: {message}", file=sys.stderr)
    sys.exit(EXIT_BAD_INPUT)


class NewFolders(Callback):
    """Hydra callback (conf/train.yaml): notes which folders Hydra is about to create for the run
    (`hydra.run.dir`) or the sweep (`hydra.sweep.dir`), so that a refused launch can remove them again;
    refuses, before Hydra creates any, a run name that would leave runs_root and a runs_root that is a
    file or lies under one."""

    def on_run_start(self, config, **kwargs) -> None:
        if (problem := run_name_problem(_select(config, "run_name"))) is not None:
            _refuse(problem)
        _note_missing(config, "hydra.run.dir")

    def on_multirun_start(self, config, **kwargs) -> None:
        _note_missing(config, "hydra.sweep.dir")

    def on_job_start(self, config, **kwargs) -> None:
        # A sweep's job names are known only per job, and Hydra has made the job's folder by now: an
        # empty one is removed again before the refusal.
        if (problem := run_name_problem(_select(config, "run_name"))) is not None:
            with contextlib.suppress(OSError):
                Path(config.hydra.runtime.output_dir).rmdir()
            _refuse(problem)
        move_multirun_record(config)


def move_multirun_record(config) -> Path | None:
    """Moves the sweep's multirun.yaml, which Hydra's sweeper writes into the sweep folder (runs/<task>/,
    where it would sit among the run folders; its path is not configurable), to
    runs/<task>/.hydra/multirun-<time>.yaml: beside the runs, one per sweep. Done by the first job of the
    sweep; a later job (or another node's) finds it gone."""
    from omegaconf import OmegaConf

    if str(OmegaConf.select(config, "hydra.mode")) != "RunMode.MULTIRUN":
        return None
    record = Path(str(OmegaConf.select(config, "hydra.sweep.dir"))) / "multirun.yaml"
    try:
        stamp = datetime.fromtimestamp(record.stat().st_mtime).strftime("%Y%m%d-%H%M%S-%f")
        target = record.parent / ".hydra" / f"multirun-{stamp}.yaml"
        target.parent.mkdir(exist_ok=True)
        record.rename(target)
    except FileNotFoundError:
        return None
    return target


def _select(config, key: str):
    """OmegaConf.select; None for a value Hydra resolves only later."""
    from omegaconf import OmegaConf

    try:
        return OmegaConf.select(config, key)
    except Exception:  # an interpolation Hydra resolves only later
        return None


def _note_missing(config, key: str) -> None:
    from bnrepro.runlock import NOT_WRITABLE, not_writable

    value = _select(config, key)
    if value is None:  # an interpolation Hydra resolves only later: nothing noted, nothing removed
        return
    folder = Path(str(value)).absolute()
    if (
        file := next((p for p in (folder, *folder.parents) if p.exists() and not p.is_dir()), None)
    ) is not None:
        _refuse(f"{file} is a file, not a folder: the run folder {folder} cannot be made there. Nothing was "
                f"written. Give runs_root=<folder> a folder (now runs_root={_select(config, 'runs_root')}), "
                f"or move the file away.")  # fmt: skip
    missing = [p for p in (folder, *folder.parents) if not p.exists()]
    _new_folders.update(missing)
    try:  # as Hydra will a moment later, but with a message for a folder that cannot be written
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        for p in missing:
            with contextlib.suppress(OSError):
                p.rmdir()
        if e.errno not in NOT_WRITABLE:
            raise
        _refuse(str(not_writable(Path(e.filename or folder), e)))


def remove_new_folders(run_dir: Path, new: bool) -> None:
    """Removes `run_dir` if it is empty and was new to this launch (`new`: empty when the launch started),
    then each empty folder above it that Hydra created for this launch."""
    run_dir = run_dir.absolute()
    if not new:
        return
    for folder in (run_dir, *run_dir.parents):
        if folder != run_dir and folder not in _new_folders:
            return
        try:
            folder.rmdir()
        except OSError:
            return  # not empty: it holds a run (this launch's, or another job's)
