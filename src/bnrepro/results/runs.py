"""Reading run folders: summary.json, metrics.csv and config.yaml, into one record per run."""

from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

# A run's outcome is known: it trained to the end, or it diverged (a result the tables report, Sec. 4.2.1).
COMPLETE = ("finished", "diverged")


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


def read_metrics(path: Path) -> dict[str, np.ndarray]:
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    keys = rows[0].keys() if rows else []
    return {
        k: np.array([float(r[k]) if r.get(k) not in ("", None) else math.nan for r in rows]) for k in keys
    }


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
