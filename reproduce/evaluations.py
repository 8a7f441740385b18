"""Figure 4's second stage: evaluate trained runs with the paper's protocols (src/eval.py).

Each evaluation of a spec (`evaluations:` in reproduce/figure4.yaml) is one src/eval.py call writing
<runs_root>/eval/<data>/<name>/eval.json; one that is already there is kept (like a finished run).
"""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def read_evaluations(runs_root: Path) -> list[dict]:
    """Every eval.json below runs_root/eval, oldest first, each with its folder as `path`."""
    out = []
    for p in sorted(Path(runs_root).glob("eval/**/eval.json")):
        record = json.loads(p.read_text())
        record["path"] = str(p.parent)
        out.append(record)
    return sorted(out, key=lambda r: r.get("finished_at", ""))


def current(record: Path, members: list[str], crops: int) -> bool:
    """An eval.json is reused only if it evaluated these checkpoints, with these crops, after they were
    last written (a retrained run makes its evaluations stale)."""
    if not record.is_file():
        return False
    r = json.loads(record.read_text())
    newest = max(Path(m).stat().st_mtime for m in members)
    same = [str(Path(c).resolve()) for c in r.get("checkpoints", [])] == [
        str(Path(m).resolve()) for m in members
    ]
    return same and r.get("crops") == crops and record.stat().st_mtime > newest


def eval_overrides(overrides: list[str], data: str) -> list[str]:
    """The command line's data and trainer overrides, for src/eval.py. Without `data=`, src/eval.py
    evaluates on the run's own data set and its `data` node is empty, so a `data.root=...` alone would not
    compose: `data=<the runs' data set>` goes before it."""
    passed = [o for o in overrides if o.split("=", 1)[0].split(".")[0] in ("data", "trainer")]
    if any(o.startswith("data.") for o in passed) and not any(o.startswith("data=") for o in passed):
        passed.insert(0, f"data={data}")
    return passed


def evaluate_missing(spec: dict, runs, overrides: list[str]) -> list[dict]:
    """Runs the spec's evaluations whose eval.json is missing; returns all of them."""
    finished = [r for r in runs if r.finished]
    if not finished:
        sys.exit("error: no finished run to evaluate; see the training errors above")
    runs_root = Path(finished[0].path).parent.parent
    data = finished[0].summary["data"]
    ckpts = [str(Path(r.path) / "checkpoints" / f"{spec.get('checkpoint', 'best')}.ckpt") for r in finished]
    passed = eval_overrides(overrides, data)
    records, failed = [], []
    for e in spec["evaluations"]:
        out = runs_root / "eval" / data / e["name"]
        members = ckpts[: e.get("members", 1)]
        if len(members) < e.get("members", 1):
            failed.append(f"{e['name']}: needs {e['members']} finished runs, have {len(members)}")
            continue
        if not current(out / "eval.json", members, e["crops"]):
            (out / "eval.json").unlink(missing_ok=True)
            which = f"ckpt={members[0]}" if len(members) == 1 else f"eval.ensemble=[{','.join(members)}]"
            cmd = [sys.executable, str(ROOT / "src" / "eval.py"), which, f"eval.crops={e['crops']}",
                   f"out={out}", *passed]  # fmt: skip
            print(f"evaluate: {shlex.join(cmd[1:])}", flush=True)
            if subprocess.run(cmd, cwd=ROOT).returncode != 0:
                failed.append(f"{e['name']} (see its output above)")
                continue
        records.append({**json.loads((out / "eval.json").read_text()), "path": str(out), "name": e["name"]})
    if failed:
        sys.exit("error: these evaluations failed: " + "; ".join(failed))
    return records
