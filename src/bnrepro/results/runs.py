"""One record per run (Run), whatever the source: a local run folder (summary.json + metrics.csv), or a
W&B run (its summary's `run_summary` + its history rows, see results/sources.py).

Every source ends in `Run(path, summary, metrics)` with the same keys: summary is summary.json's dict,
metrics maps each logged column (`step`, `paper_step`, `val/acc`, ...) to an array with NaN where a row
did not log it. Tables and figures only ever read Runs, so all sources give the same table.
"""

from __future__ import annotations

import csv
import itertools
import json
import math
import os
import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from bnrepro.provenance import git_sha

# A run's outcome is known: it trained to the end, or it diverged (a result the tables report, Sec. 4.2.1).
COMPLETE = ("finished", "diverged")
REPOSITORY = Path(__file__).resolve().parents[3]  # this checkout: src/bnrepro/results/runs.py


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
    """What every table and figure states about the runs behind it. Paths and commands are made relative
    (`paths`); `warnings` are the bold lines a file starts with when it cannot be re-derived from one commit."""
    s = runs[0].summary if runs else {}
    trained = sorted({str(r.summary.get("git_sha") or "unknown") for r in runs}) or ["unknown"]
    rendered = git_sha()
    paths = RelativePaths.of(
        [r.path for r in runs],
        [str(r.summary.get("command", "")) for r in runs],
        [r.summary.get("task") for r in runs],
    )
    return {
        "data": (data_names or {}).get(s.get("data"), s.get("data", "unknown")),
        "command": paths(command),
        "git_sha": ", ".join(trained),  # the commit(s) the runs were trained at
        "rendered_sha": rendered,  # the commit this file is rendered at
        "warnings": commit_warnings(trained, rendered),
        "hardware": ", ".join(sorted({str(r.summary.get("hardware", "unknown")) for r in runs})) or "unknown",
        "world_size": ", ".join(sorted({str(r.summary.get("world_size")) for r in runs})),
        "global_batch": ", ".join(sorted({str(r.summary.get("global_batch")) for r in runs})),
        "num_runs": len(runs),
        "runs": ", ".join(paths.path(r.path) for r in runs),
        # How the runs were trained (their own command lines; one line when only model= differs).
        "run_commands": sorted(
            {
                paths(re.sub(r"model=\S+", "model=<variant>", r.summary.get("command", "unknown")))
                for r in runs
            }
        ),
        "paths": paths,
        "rendered": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def short_sha(shas: str) -> str:
    """Commit(s) cut to 12 characters for a figure's footer, keeping the `-dirty` marker."""
    return ", ".join(
        sha if sha == "unknown" else sha[:12] + ("-dirty" if sha.endswith("-dirty") else "")
        for sha in (s.strip() for s in shas.split(","))
    )


def commit_warnings(trained: list[str], rendered: str, what: str = "runs were trained") -> list[str]:
    """Bold lines for the top of a file that cannot be re-derived from one clean commit: a dirty or unknown
    tree (rendering, or the runs'), or runs made at another commit than the one rendering."""
    out = []
    if rendered == "unknown":
        out.append("**Warning: rendered outside a git checkout: the rendering commit is unknown.**")
    elif rendered.endswith("-dirty"):
        out.append(f"**Warning: rendered from a tree with uncommitted changes ({rendered}): this file cannot "
                   "be re-derived from a commit.**")  # fmt: skip
    dirty = [s for s in trained if s.endswith("-dirty")]
    if dirty:
        out.append(f"**Warning: the {what} from a tree with uncommitted changes ({', '.join(dirty)}): their "
                   "code is in no commit.**")  # fmt: skip
    if "unknown" in trained:
        out.append(f"**Warning: some {what} at an unknown commit.**")
    clean = rendered.removesuffix("-dirty")
    others = sorted({s for s in trained if s != "unknown" and s.removesuffix("-dirty") != clean})
    if others and rendered != "unknown":
        out.append(f"**Warning: the {what} at another commit ({', '.join(others)}) than the one rendering this "
                   f"file ({rendered}): re-deriving it needs both.**")  # fmt: skip
    return out


# An absolute path inside free text: a slash that starts a word (not one inside a URL, a fraction or
# `n/a`), followed by a path.
_ABSOLUTE = re.compile(r"(?<![\w.~:/<>)\]-])/[\w.@+~-]+(?:/[\w.@+~-]*)*")
RUNS_ROOT = "$runs_root"  # the runs folder, when it lies outside every checkout


class RelativePaths:
    """Rewrites absolute paths so no rendered file names a folder of the machine that made it.

    A path inside a checkout of this repository (the one rendering, or one named by a run's command as
    `<checkout>/src/train.py`) becomes relative to it; one inside a runs folder outside every checkout,
    `$runs_root/...`; a script of another checkout `src/...`; anything else `.../<its name>`.
    """

    def __init__(self, checkouts: list[Path], runs_roots: list[Path]):
        bases = [(Path(b), "") for b in checkouts] + [(Path(b), RUNS_ROOT) for b in runs_roots]
        # Deepest first; a checkout before a runs folder of the same depth.
        self.bases = sorted(dict.fromkeys(bases), key=lambda b: (-len(b[0].parts), b[1]))

    @classmethod
    def of(cls, paths, commands=(), tasks=(), marker: str | None = None) -> RelativePaths:
        """From run folders (their runs folder: the parent of the folder named by the run's task, or of
        `marker`) and the commands that made them (`<checkout>/src/<script>.py`)."""
        checkouts = [REPOSITORY]
        for command in commands:
            checkouts += [Path(m) for m in re.findall(r"(/\S*?)/src/\w+\.py\b", command or "")]
        roots = []
        for path, task in itertools.zip_longest(paths, tasks):
            p = Path(str(path))
            if not p.is_absolute():
                continue
            named = [a for a in p.parents if a.name in {task, marker} - {None}]
            root = named[0].parent if named else p.parent.parent
            if not any(root.is_relative_to(c) for c in checkouts):
                roots.append(root)
        return cls(checkouts, roots)

    def path(self, path) -> str:
        p = Path(str(path))
        if not p.is_absolute():
            return str(path)
        for base, label in self.bases:
            rel = _below(p, base)
            if rel is not None:
                return str(rel) if not label else label if rel == Path(".") else f"{label}/{rel}"
        if "src" in p.parts[:-1]:  # a script of a checkout that is not here
            return str(Path(*p.parts[len(p.parts) - 1 - p.parts[::-1].index("src") :]))
        return f".../{p.name}" if p.name else "..."

    def __call__(self, text: str) -> str:
        return _ABSOLUTE.sub(lambda m: self.path(m.group()), text)


def _below(path: Path, base: Path) -> Path | None:
    """`path` relative to `base` (either as written or with symlinks resolved); None if not below it."""
    for p in dict.fromkeys((path, Path(os.path.realpath(path)))):
        for b in dict.fromkeys((base, Path(os.path.realpath(base)))):
            if p.is_relative_to(b):
                return p.relative_to(b)
    return None
