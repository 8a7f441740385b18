"""One record per run (Run), whatever the source: a local run folder (summary.json + metrics.csv), or a
W&B run (its summary's `run_summary` + its history rows, see results/sources.py).

Every source ends in `Run(path, summary, metrics)` with the same keys: summary is summary.json's dict,
metrics maps each logged column (`step`, `paper_step`, `val/acc`, ...) to an array with NaN where a row
did not log it. Tables and figures only ever read Runs, so all sources give the same table.

A run's curve metrics are here too, in the paper's units, for every renderer: its accuracy curve over
paper-equivalent steps (examples seen / 32), the step it first reaches a target, its best, final and
Alg. 2 accuracy, where it diverged. (The plateau rule on a curve: results/plateau.py.)
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from bnrepro.run_status import COMPLETE  # a result: trained to the end, or diverged (Sec. 4.2.1)

METRIC = "val/acc"  # single-crop top-1, the accuracy every table and figure compares
REFERENCE_BATCH = 32  # the paper's mini-batch: paper-equivalent steps = examples seen / 32
# Accuracies are compared with this tolerance: a target is a mean of maxima, and the mean of equal floats
# can differ from them in the last bit; 1e-6 is below one example in a million.
TOLERANCE = 1e-6


@dataclass
class Run:
    path: Path
    summary: dict
    metrics: dict[str, np.ndarray] = field(default_factory=dict)  # column -> values, NaN where absent

    @property
    def finished(self) -> bool:
        return self.summary.get("status") == "finished"

    @property
    def complete(self) -> bool:
        return self.summary.get("status") in COMPLETE

    def curve(self, key: str) -> tuple[np.ndarray, np.ndarray]:
        """(steps, values) of one metric, rows where it was logged."""
        steps, values = self.metrics["step"], self.metrics[key]
        keep = ~np.isnan(values)
        return steps[keep].astype(int), values[keep]

    def at_step(self, key: str, step: int) -> float:
        steps, values = self.curve(key)
        hit = values[steps == step]
        return float(hit[-1]) if len(hit) else math.nan


def columns(rows: list[dict]) -> dict[str, np.ndarray]:
    """Rows of logged values (a metrics.csv, a W&B history) -> column arrays, NaN where a row lacks one."""
    keys = sorted({k for r in rows for k in r})
    return {k: np.array([_number(r.get(k)) for r in rows], dtype=float) for k in keys}


def _number(v) -> float:
    return math.nan if v in ("", None) else float(v)


def read_metrics(path: Path) -> dict[str, np.ndarray]:
    with open(path, newline="") as f:
        return columns(list(csv.DictReader(f)))


def load_run(path: str | Path) -> Run:
    path = Path(path)
    summary_file = path / "summary.json"
    if not summary_file.is_file():
        raise FileNotFoundError(f"{path}: no summary.json (the run has not finished)")
    summary = json.loads(summary_file.read_text())
    metrics_file = path / "metrics.csv"
    metrics = read_metrics(metrics_file) if metrics_file.is_file() else {}
    return Run(path, summary, metrics)


def find_runs(root: str | Path) -> list[Run]:
    """Every run folder below `root` that has a summary.json, oldest first."""
    runs = [load_run(p.parent) for p in Path(root).glob("**/summary.json")]
    return sorted(runs, key=lambda r: r.summary.get("finished_at", ""))


def accuracy_curve(run: Run) -> tuple[np.ndarray, np.ndarray]:
    """(paper-equivalent steps, single-crop top-1) at each evaluation of the run."""
    steps, acc = run.curve(METRIC)
    paper = steps * run.summary.get("global_batch", REFERENCE_BATCH) / REFERENCE_BATCH
    return paper.astype(float), acc


def base_lr(run: Run) -> float:
    """The run's base LR: its initial LR (summary.json's `lr`) over its multiplier (x1 on the grid and
    the pilot, lr_multiplier.base)."""
    return float(run.summary["lr"]) / float(run.summary.get("lr_multiplier") or 1)


def reaches(value: float, target: float) -> bool:
    """`value` is at or above `target`, up to TOLERANCE: the one comparison of an accuracy with a goal."""
    return value >= target - TOLERANCE


def steps_to(run: Run, target: float) -> float | None:
    """First paper-equivalent step with accuracy >= target (up to TOLERANCE); None if never."""
    steps, acc = accuracy_curve(run)
    hit = np.flatnonzero(reaches(acc, target))
    return float(steps[hit[0]]) if len(hit) else None


def best(run: Run) -> tuple[float, float]:
    """(max accuracy, paper-equivalent step where it was first reached); NaN for a run with no evaluation."""
    steps, acc = accuracy_curve(run)
    if not len(acc):
        return math.nan, math.nan
    i = int(np.argmax(acc))
    return float(acc[i]), float(steps[i])


def final_accuracy(run: Run) -> float:
    """Top-1 at the last evaluation (summary.json's final_acc; else the curve's last value)."""
    value = run.summary.get("final_acc")
    if value is None:
        acc = accuracy_curve(run)[1]
        return float(acc[-1]) if len(acc) else math.nan
    return float(value)


def population_accuracy(run: Run) -> float:
    """Top-1 with Alg. 2's population statistics after the last step (BN nets); NaN without BN."""
    value = run.summary.get("population_acc")
    if value is None and "population/acc" in run.metrics:
        logged = run.curve("population/acc")[1]
        value = logged[-1] if len(logged) else None
    return math.nan if value is None else float(value)


def diverged_at(run: Run) -> float | None:
    """The paper-equivalent step at which the run's loss became non-finite; None if it did not diverge
    (or did not record the step)."""
    at = run.summary.get("diverged_at_step")
    if run.summary.get("status") != "diverged" or at is None:
        return None
    return at * run.summary.get("global_batch", REFERENCE_BATCH) / REFERENCE_BATCH


def divergence_mark(run: Run) -> tuple[float, float] | None:
    """Where a figure marks a diverged run: at the step its loss became non-finite (else its last
    evaluation), at its last accuracy (0 if it diverged before its first evaluation); None if it did not
    diverge. The last evaluation may be long before the divergence."""
    if run.summary.get("status") != "diverged":
        return None
    steps, acc = accuracy_curve(run)
    at = diverged_at(run)
    return (at if at is not None else (steps[-1] if len(steps) else 0.0)), (acc[-1] if len(acc) else 0.0)


def mean_std(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (ddof=1; NaN for one value)."""
    return float(np.mean(values)), float(np.std(values, ddof=1)) if len(values) > 1 else math.nan
