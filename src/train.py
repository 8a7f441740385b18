"""Train one paper variant: `python src/train.py model=bn_x30 [data=imagenette] [trainer.devices=8]`.

Hydra composes conf/train.yaml (docs/design.md lists the groups); `-m` sweeps, e.g.
`python src/train.py -m model=bn_x5,bn_x30`, and an experiment is a sweep of its own
(`python src/train.py experiment=imagenet_figure3`: the variants of bnrepro/variants.py). Each run writes
one folder under runs/.

Exit status (bnrepro/errors.py; each refusal is a ReproError carrying its status, handled in
bnrepro/entry.py):
    0  finished, or preempted (SIGTERM / SIGUSR1: last.ckpt saved, relaunch the same command to resume)
    2  bad input (config, data set, run folder, checkpoint) or a run folder in use by another launch:
       nothing trained
    3  the run diverged (a result: summary.json says diverged=true and the step)
    4  out of disk space (relaunch to resume once there is space)
    1  the run failed otherwise
In a multirun a diverged job is reported and the sweep goes on with its other jobs.
"""

from __future__ import annotations

import atexit
import gc
import sys
from pathlib import Path

# Importing torch, Lightning and timm makes millions of objects, and Python's cyclic garbage collector
# scans them again and again: ~20% of the import time, and seconds at exit (measured, docs/benchmarks.md).
# Off while importing; what was imported is then frozen (never scanned again), and so is whatever is left
# at exit. Registered first, the freeze runs after every other exit handler.
gc.disable()
atexit.register(gc.freeze)

import hydra  # noqa: E402
from hydra.core.hydra_config import HydraConfig  # noqa: E402
from hydra.types import RunMode  # noqa: E402

import bnrepro.registry  # noqa: E402, F401  (registers the schema `train_schema` in Hydra's ConfigStore)
from bnrepro.entry import refusals_exit, run_command, task_started  # noqa: E402
from bnrepro.launch_record import remove_new_folders  # noqa: E402
from bnrepro.run import train  # noqa: E402

gc.freeze()
gc.enable()

CONF_DIR = str(Path(__file__).resolve().parent.parent / "conf")


@hydra.main(config_path=CONF_DIR, config_name="train", version_base="1.3")
def main(cfg) -> None:
    task_started()
    hydra_cfg = HydraConfig.get()
    run_dir = Path(hydra_cfg.runtime.output_dir)
    new = not any(run_dir.iterdir())  # Hydra has just created it: a refused launch removes it again
    try:
        run(cfg, run_dir, hydra_cfg)
    finally:
        remove_new_folders(run_dir, new)


def run(cfg, run_dir: Path, hydra_cfg) -> None:
    # The project's refusals (bnrepro/errors.py) exit with their status; see entry.py.
    with refusals_exit(cfg.run_name, multirun=hydra_cfg.mode == RunMode.MULTIRUN, run_dir=run_dir):
        summary = train(cfg, run_dir)  # bnrepro/run.py: plan, then build and fit
        if summary and summary.get("status") == "preempted":
            sys.exit(0)  # a multirun stops too: the machine is going away, the relaunch resumes every job


def command() -> None:
    run_command(main)  # Hydra's composition errors (a misspelled key, ...) exit 2, as bad input


if __name__ == "__main__":
    command()
