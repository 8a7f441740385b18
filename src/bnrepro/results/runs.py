"""One record per run (Run), whatever the source: a local run folder (summary.json + metrics.csv), or a
W&B run (its summary's `run_summary` + its history rows, see results/sources.py).

Every source ends in `Run(path, summary, metrics)` with the same keys: summary is summary.json's dict,
metrics maps each logged column (`step`, `paper_step`, `val/acc`, ...) to an array with NaN where a row
did not log it. Tables and figures only ever read Runs, so all sources give the same table.
"""

from __future__ import annotations

import csv
import json
import math
import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
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


def provenance(runs: list[Run], command: str, data_names: dict | None = None) -> dict:
    """What every table and figure states about the runs behind it."""
    s = runs[0].summary if runs else {}
    shas = sorted({r.summary.get("git_sha", "unknown") for r in runs}) or ["unknown"]
    return {
        "data": (data_names or {}).get(s.get("data"), s.get("data", "unknown")),
        "command": command,
        "git_sha": ", ".join(shas),
        "hardware": ", ".join(sorted({str(r.summary.get("hardware", "unknown")) for r in runs})) or "unknown",
        "world_size": ", ".join(sorted({str(r.summary.get("world_size")) for r in runs})),
        "global_batch": ", ".join(sorted({str(r.summary.get("global_batch")) for r in runs})),
        "num_runs": len(runs),
        "runs": ", ".join(_short(r.path) for r in runs),
        # How the runs were trained (their own command lines; one line when only model= differs).
        "run_commands": sorted(
            {re.sub(r"model=\S+", "model=<variant>", r.summary.get("command", "unknown")) for r in runs}
        ),  # fmt: skip
        "rendered": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def _short(path) -> str:
    """A run's path relative to the working folder when it lies below it (no machine-specific prefix)."""
    p = Path(str(path))
    return str(p.relative_to(Path.cwd())) if p.is_absolute() and p.is_relative_to(Path.cwd()) else str(path)
