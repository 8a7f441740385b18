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
    records while the run trains -- Hydra's job log file, opened only once the launch is accepted."""
    handler = logging.FileHandler(run_dir / name)
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        yield
    finally:
        root.removeHandler(handler)
        handler.close()


class NewFolders(Callback):
    """Hydra callback (conf/train.yaml): notes which folders Hydra is about to create for the run
    (`hydra.run.dir`) or the sweep (`hydra.sweep.dir`), so that a refused launch can remove them again."""

    def on_run_start(self, config, **kwargs) -> None:
        _note_missing(config, "hydra.run.dir")

    def on_multirun_start(self, config, **kwargs) -> None:
        _note_missing(config, "hydra.sweep.dir")


def _note_missing(config, key: str) -> None:
    from omegaconf import OmegaConf

    from bnrepro.errors import EXIT_BAD_INPUT
    from bnrepro.runlock import NOT_WRITABLE, not_writable

    try:
        folder = Path(str(OmegaConf.select(config, key))).absolute()
    except Exception:  # an interpolation Hydra resolves only later: nothing noted, nothing removed
        return
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
        print(f"error: {not_writable(Path(e.filename or folder), e)}", file=sys.stderr)
        sys.exit(EXIT_BAD_INPUT)


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
