"""summary.json: the run's final and best metrics plus everything needed to place it in a table.

Written by global rank 0 at the end of fit (status "finished"); with status "diverged" and the step
when the training loss became non-finite (a result, callbacks/divergence.py); or with status "failed"
and the error when training raises otherwise, so a table can say so instead of silently missing the run.
"""

from __future__ import annotations

import math
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import lightning as L
from lightning.pytorch.loggers import WandbLogger
from lightning.pytorch.utilities.exceptions import SIGTERMException

from bnrepro.callbacks.divergence import TrainingDiverged
from bnrepro.provenance import git_sha, hardware, versions, write_json_atomic


class RunSummary(L.Callback):
    def __init__(self, run_dir: str | Path, info: dict, monitor: str = "val/acc", progress: bool = True):
        self.run_dir = Path(run_dir)
        self.info = dict(info)  # static facts from the config: model, data, seed, ...
        self.monitor = monitor
        self.progress = progress
        self.best: tuple[float, int] | None = None
        self.last: tuple[float, int] | None = None
        self.evaluations = 0
        self.last_top5: float | None = None
        self.written: dict | None = None  # what this rank wrote to summary.json (rank 0 only)
        self.earlier_wall_time = 0.0  # seconds trained before the last resume
        self.resumed_from: list[int] = []  # steps this run was resumed at

    # Checkpointed, so a resumed run's summary covers the whole run, not only its last leg.
    def state_dict(self) -> dict:
        return {"best": self.best, "last": self.last, "evaluations": self.evaluations,
                "last_top5": self.last_top5, "resumed_from": self.resumed_from,
                "wall_time_s": self.earlier_wall_time + time.perf_counter() - getattr(self, "t0", time.perf_counter())}  # fmt: skip

    def load_state_dict(self, state: dict) -> None:
        self.best, self.last = state["best"], state["last"]
        self.evaluations, self.last_top5 = state["evaluations"], state["last_top5"]
        self.earlier_wall_time, self.resumed_from = state["wall_time_s"], list(state["resumed_from"])
        self._resuming = True

    def on_fit_start(self, trainer, pl_module):
        self.t0 = time.perf_counter()
        # Read here: after fit, Lightning has moved the module back to the CPU.
        self.hardware = hardware(pl_module.device)
        self.started = datetime.now(timezone.utc).isoformat(timespec="seconds")

    def on_train_start(self, trainer, pl_module):
        if getattr(self, "_resuming", False):  # the loop position is restored by now
            self.resumed_from.append(trainer.global_step)
            self._resuming = False

    def on_validation_end(self, trainer, pl_module):
        # After every on_validation_epoch_end hook, so the module's val/acc of *this* evaluation is in.
        if trainer.sanity_checking or self.monitor not in trainer.callback_metrics:
            return
        value, step = float(trainer.callback_metrics[self.monitor]), trainer.global_step
        self.last = (value, step)
        top5 = trainer.callback_metrics.get("val/acc_top5")
        self.last_top5 = float(top5) if top5 is not None else None
        self.evaluations += 1
        if self.best is None or value > self.best[0]:
            self.best = (value, step)
        if self.progress and trainer.is_global_zero:
            name = self.info.get("model", "")
            print(
                f"[{name}] step {step}/{trainer.max_steps}  {self.monitor} {value:.4f}  "
                f"({time.perf_counter() - self.t0:.1f} s)", flush=True,
            )  # fmt: skip

    def summary(
        self, trainer, pl_module, status: str, error: str | None = None, diverged_at: int | None = None
    ):
        world = trainer.world_size
        examples = trainer.global_step * pl_module.global_batch
        metrics = trainer.callback_metrics
        population = {
            f"population_{k.split('/')[-1]}": v.item()
            for k, v in metrics.items()
            if k.startswith("population/")
        }
        out = {
            "status": status,
            **self.info,
            "steps": trainer.global_step,
            "max_steps": trainer.max_steps,
            "evaluations": self.evaluations,
            f"final_{self.monitor.split('/')[-1]}": self.last[0] if self.last else None,
            f"best_{self.monitor.split('/')[-1]}": self.best[0] if self.best else None,
            "best_step": self.best[1] if self.best else None,
            "best_paper_step": pl_module.paper_steps(self.best[1]) if self.best else None,
            "final_acc_top5": self.last_top5,
            # Alg. 2: the same network evaluated with population BN statistics (callbacks/population.py).
            **population,
            "world_size": world,
            "num_nodes": trainer.num_nodes,
            "per_device_batch": pl_module.batch_size,
            "global_batch": pl_module.global_batch,
            "examples_seen": examples,
            # Steps of the paper's mini-batch (optimizer.reference_batch): comparable across device counts.
            "paper_equivalent_steps": pl_module.paper_steps(trainer.global_step),
            "diverged": diverged_at is not None or not math.isfinite(float(metrics.get("train/loss", 0.0))),
            "diverged_at_step": diverged_at,
            "lr": pl_module.lr,
            "sync_batchnorm": any(type(m).__name__ == "SyncBatchNorm" for m in pl_module.modules()),
            "hardware": getattr(self, "hardware", None) or hardware(pl_module.device),
            "wall_time_s": round(self.earlier_wall_time + time.perf_counter() - self.t0, 2),
            "resumed_at_steps": self.resumed_from,
            "started_at": self.started,
            "finished_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "git_sha": git_sha(),
            "command": " ".join(["python", *sys.argv]),
            "versions": versions(),
        }
        if error:
            out["error"] = error
        return out

    def _write(self, trainer, pl_module, status: str, error: str | None = None, diverged_at=None) -> None:
        if trainer.is_global_zero:
            self.written = self.summary(trainer, pl_module, status, error, diverged_at)
            write_json_atomic(self.run_dir / "summary.json", self.written)
            # The same record in the W&B run, so tables can be built from W&B alone (results/sources.py).
            for logger in trainer.loggers:
                if isinstance(logger, WandbLogger):
                    logger.experiment.summary["run_summary"] = self.written

    def on_fit_end(self, trainer, pl_module):
        self._write(trainer, pl_module, "finished")

    def on_exception(self, trainer, pl_module, exception):
        if not hasattr(self, "t0"):  # fit had not started
            return
        if isinstance(exception, TrainingDiverged):
            self._write(trainer, pl_module, "diverged", str(exception), diverged_at=exception.step)
        elif isinstance(exception, SIGTERMException):  # callbacks/preemption.py saved last.ckpt
            self._write(
                trainer, pl_module, "preempted", "SIGTERM/SIGUSR1: relaunch the same command to resume"
            )
        else:
            self._write(trainer, pl_module, "failed", f"{type(exception).__name__}: {exception}")
