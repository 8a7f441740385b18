"""Where runs are read from: local run folders, W&B offline run folders, or W&B's public API.

    source=local          runs/<task>/*/summary.json + metrics.csv (the default; always complete)
    source=wandb_offline  the .wandb logs under runs/<task>/*/wandb/, read by W&B's own reader
                          (`wandb leet inspect --json <run dir>` prints every record as one JSON line);
                          the offline-run-* folders of one W&B run id (one per launch of a resumed
                          run) are merged into one run
    source=wandb          entity=... project=...: W&B's public API, the full history via scan_history
                          (run.history() would return a 500-point sample)

A W&B run carries the run folder's summary.json as its summary key `run_summary` (callbacks/summary.py)
and the curves as history rows. Both W&B readers only fetch (history rows, run_summary); the shared
`wandb_run` turns them into the same Run a local folder gives.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

from bnrepro.console import progress
from bnrepro.results.runs import Run, columns, find_runs

SOURCES = ("local", "wandb_offline", "wandb")
WANDB_STEP = "trainer/global_step"  # Lightning's WandbLogger's step key; metrics.csv calls it `step`
WANDB_INTERNAL = ("_runtime", "_step", "_timestamp", "_wandb")


class SourceError(RuntimeError):
    pass


def wandb_run(where: str, history: list[dict], summary: dict | None) -> Run | None:
    """A Run from a W&B run's history rows and its `run_summary`; None for a W&B run of ours that never
    reached the end of fit (no run_summary), like a local folder without summary.json."""
    if not summary:
        return None
    rows = []
    for row in history:
        row = {k: v for k, v in row.items() if not k.startswith(WANDB_INTERNAL) and v is not None}
        if WANDB_STEP in row:
            row["step"] = row.pop(WANDB_STEP)
        rows.append(row)
    return Run(where, dict(summary), columns(rows))


def wandb_command() -> str:
    """The `wandb` command of the running Python's environment (beside its interpreter, so that
    `venv/bin/python reproduce/reproduce.py ...` works without an activated environment), else PATH's."""
    exe = shutil.which("wandb", path=str(Path(sys.executable).parent)) or shutil.which("wandb")
    if exe is None:
        raise SourceError(
            f"source=wandb_offline needs the `wandb` command, found neither beside {sys.executable} nor on "
            f"PATH: install it into this Python (`{sys.executable} -m pip install wandb`) or render from the "
            "run folders (source=local)"
        )
    return exe


def _leet(run_dir: Path) -> list[dict]:
    exe = wandb_command()
    proc = subprocess.run([exe, "leet", "inspect", "--json", str(run_dir)], capture_output=True, text=True)
    if proc.returncode != 0:
        hint = " (needs wandb >= 0.31: pip install -U wandb)" if "No such command" in proc.stderr else ""
        raise SourceError(f"`wandb leet inspect --json {run_dir}` failed{hint}: {proc.stderr.strip()[-500:]}")
    return [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]


def _read_leg(run_dir: Path) -> tuple[str, str, list[dict], dict]:
    """One offline-run-* folder: (W&B run id, start time, history rows, summary updates)."""
    run_id, started, history, summary = run_dir.name.rsplit("-", 1)[-1], "", [], {}
    for record in _leet(run_dir):
        kind = record.get("type")
        if kind == "run":
            run_id = record["run"].get("run_id", run_id)
            started = record["run"].get("start_time", "")
        elif kind == "history":
            history.append(record["history"]["item"])
        elif kind == "summary":
            summary.update(record["summary"].get("update", {}))
    return run_id, started or run_dir.name, history, summary


def read_wandb_offline(run_dir: str | Path) -> Run | None:
    """One W&B run folder (offline-run-* or run-*, holding a .wandb log) read through `wandb leet`."""
    _, _, history, summary = _read_leg(Path(run_dir))
    return wandb_run(str(run_dir), history, summary.get("run_summary"))


def merge_legs(legs: list[tuple[list[dict], dict]]) -> tuple[list[dict], dict]:
    """The folders of one W&B run id (a run preempted and resumed: W&B writes a new offline-run-* folder
    per launch), oldest first, as one history and one summary. A resumed launch redoes the steps after
    its checkpoint, so an earlier folder's rows from the first step the later one logged onwards are
    dropped (as metrics.csv drops the rows after the checkpoint); the summary is the latest run_summary."""
    rows: list[dict] = []
    summary: dict = {}
    for history, updates in legs:
        steps = [r[WANDB_STEP] for r in history if r.get(WANDB_STEP) is not None]
        if steps:
            first = min(steps)
            rows = [r for r in rows if r.get(WANDB_STEP) is None or r[WANDB_STEP] < first]
        rows += history
        summary.update(updates)
    return rows, summary


def wandb_offline_runs(root: str | Path) -> list[Run]:
    """Every W&B run below `root` with a finished run_summary, oldest first; the folders of one run id
    (one per launch of a resumed run) are merged into one run (merge_legs)."""
    dirs = sorted({p.parent for p in Path(root).glob("**/wandb/*run-*/*.wandb")})
    by_id: dict[tuple[Path, str], list[tuple[str, list[dict], dict]]] = {}
    for d in progress(dirs, len(dirs), f"reading the W&B offline runs under {Path(root).name}"):
        run_id, started, history, summary = _read_leg(d)
        by_id.setdefault((d.parent.parent, run_id), []).append((started, history, summary))
    runs = []
    for (run_folder, _), legs in sorted(by_id.items()):
        history, summary = merge_legs([(h, s) for _, h, s in sorted(legs, key=lambda leg: leg[0])])
        run = wandb_run(str(run_folder), history, summary.get("run_summary"))
        if run is not None:
            runs.append(run)
    return sorted(runs, key=lambda r: r.summary.get("finished_at", ""))


def wandb_api_runs(entity: str | None, project: str, task: str, api=None) -> list[Run]:
    """The project's W&B runs of one task through the public API (needs network and an API key)."""
    path = f"{entity}/{project}" if entity else project
    runs = []
    try:
        if api is None:
            import wandb

            api = wandb.Api()
        # Each run's full history is its own request (scan_history): minutes for a large project.
        for r in progress(api.runs(path, filters={"summary_metrics.run_summary.task": task}), None,
                          f"reading W&B runs of {path}, task {task}"):  # fmt: skip
            summary = r.summary.get("run_summary")
            run = wandb_run(r.url, list(r.scan_history()), dict(summary) if summary else None)
            if run is not None and run.summary.get("task") == task:
                runs.append(run)
    except Exception as e:  # no network, no API key, unknown project: wandb raises many kinds
        raise SourceError(
            f"W&B project {path!r}: {type(e).__name__}: {e}. Check the name (entity=<team> project=<project>), "
            f"`wandb login`, and the network; or render from the run folders (source=local)."
        ) from e
    return sorted(runs, key=lambda r: r.summary.get("finished_at", ""))


def read_runs(
    source: str, root: str | Path, task: str, entity: str | None = None, project: str | None = None
):
    """The runs of one task from `source` (see the module docstring)."""
    if source == "local":
        return find_runs(Path(root) / task)
    if source == "wandb_offline":
        return wandb_offline_runs(Path(root) / task)
    if source == "wandb":
        if not project:
            raise SourceError("source=wandb needs project=<W&B project> (and entity=<team> unless default)")
        return wandb_api_runs(entity, project, task)
    raise SourceError(f"source={source!r}: expected one of {', '.join(SOURCES)}")
