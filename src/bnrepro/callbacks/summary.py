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
import torch
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
        # Examples this rank trained on / evaluated in the current evaluation, counted from the batches
        # (not derived from the step count): summed over ranks, they show that DDP trained on global
        # batches and evaluated every validation image exactly once.
        self.trained_here = 0
        self.evaluated_here = 0
        self.val_examples: int | None = None

    # Checkpointed, so a resumed run's summary covers the whole run, not only its last leg.
    def state_dict(self) -> dict:
        return {"best": self.best, "last": self.last, "evaluations": self.evaluations,
                "last_top5": self.last_top5, "resumed_from": self.resumed_from,
                "trained_here": self.trained_here, "val_examples": self.val_examples,
                "wall_time_s": self.earlier_wall_time + time.perf_counter() - getattr(self, "t0", time.perf_counter())}  # fmt: skip

    def load_state_dict(self, state: dict) -> None:
        self.best, self.last = state["best"], state["last"]
        self.evaluations, self.last_top5 = state["evaluations"], state["last_top5"]
        self.earlier_wall_time, self.resumed_from = state["wall_time_s"], list(state["resumed_from"])
        # Rank 0's count: every rank trains on batches of the same size, so each continues from it.
        self.trained_here, self.val_examples = state.get("trained_here", 0), state.get("val_examples")
        self._resuming = True

    def on_fit_start(self, trainer, pl_module):
        self.t0 = time.perf_counter()
        # Read here: after fit, Lightning has moved the module back to the CPU.
        self.hardware = hardware(pl_module.device)
        # Also read here: DDP's setup has converted BN by now; its teardown (before on_fit_end) reverts it.
        self.sync_batchnorm = any(isinstance(m, torch.nn.SyncBatchNorm) for m in pl_module.modules())
        self.started = datetime.now(timezone.utc).isoformat(timespec="seconds")

    def on_train_start(self, trainer, pl_module):
        if getattr(self, "_resuming", False):  # the loop position is restored by now
            self.resumed_from.append(trainer.global_step)
            self._resuming = False

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.trained_here += batch[1].numel()  # the labels of every step the batch holds

    def on_validation_epoch_start(self, trainer, pl_module):
        self.evaluated_here = 0

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0):
        self.evaluated_here += len(batch[1])  # (images, labels)

    def _sum_over_ranks(self, trainer, pl_module, count: int) -> int:
        # On the strategy's device (NCCL reduces CUDA tensors only), in int64 (exact at any count).
        count = torch.tensor(count, dtype=torch.int64, device=trainer.strategy.root_device)
        return int(trainer.strategy.reduce(count, reduce_op="sum"))

    def on_validation_end(self, trainer, pl_module):
        # After every on_validation_epoch_end hook, so the module's val/acc of *this* evaluation is in.
        if trainer.sanity_checking or self.monitor not in trainer.callback_metrics:
            return
        self.val_examples = self._sum_over_ranks(trainer, pl_module, self.evaluated_here)
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
        # Alg. 2's result: this launch's (callback_metrics), or, for a relaunch that found the run trained
        # and evaluated, the one its last checkpoint kept (PopulationStatistics.results).
        kept = next((c.results for c in trainer.callbacks if getattr(c, "results", None)), None) or {}
        population = {
            f"population_{k.split('/')[-1]}": float(v)
            for k, v in {**kept, **metrics}.items()
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
            "per_device_batch": pl_module.global_batch // world,
            "global_batch": pl_module.global_batch,
            "examples_seen": examples,
            # Counted from the batches, summed over ranks (finished runs): equal to examples_seen.
            # (A relaunch at max_steps skips on_train_end: every rank trained the same number of batches.)
            "examples_trained": getattr(self, "trained_total", self.trained_here * world),
            "val_examples": self.val_examples,  # in the last evaluation, over all ranks
            "strategy": type(trainer.strategy).__name__,
            # Steps of the paper's mini-batch (optimizer.reference_batch): comparable across device counts.
            "paper_equivalent_steps": pl_module.paper_steps(trainer.global_step),
            "diverged": diverged_at is not None or not math.isfinite(float(metrics.get("train/loss", 0.0))),
            "diverged_at_step": diverged_at,
            "lr": pl_module.lr,
            "sync_batchnorm": getattr(self, "sync_batchnorm", False),
            "cuda_graph_replays": pl_module.graphed.replays if getattr(pl_module, "graphed", None) else 0,
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

    def on_train_end(self, trainer, pl_module):
        # Every rank is here (a collective is safe, unlike in on_exception), before the teardown that
        # on_fit_end follows (the module is back on the CPU and the process group may be gone there).
        self.trained_total = self._sum_over_ranks(trainer, pl_module, self.trained_here)

    def on_fit_end(self, trainer, pl_module):
        self._write(trainer, pl_module, "finished")

    def on_exception(self, trainer, pl_module, exception):
        if not hasattr(self, "t0"):  # fit had not started
            return
        try:
            self._write_exception(trainer, pl_module, exception)
        except OSError as e:  # the disk that failed the run fails this too: the run's own error is reported
            print(f"warning: could not write {self.run_dir / 'summary.json'}: {e}", file=sys.stderr)

    def _write_exception(self, trainer, pl_module, exception):
        if isinstance(exception, TrainingDiverged):
            self._write(trainer, pl_module, "diverged", str(exception), diverged_at=exception.step)
        elif isinstance(exception, SIGTERMException):  # callbacks/preemption.py saved last.ckpt
            self._write(
                trainer, pl_module, "preempted", "SIGTERM/SIGUSR1: relaunch the same command to resume"
            )
        else:
            self._write(trainer, pl_module, "failed", f"{type(exception).__name__}: {exception}")
