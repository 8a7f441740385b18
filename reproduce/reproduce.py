"""Runs what a paper result needs and is missing, then renders it into results/.

    python reproduce/reproduce.py mnist [hydra overrides...] [--jobs N]
    python reproduce/reproduce.py --render-only [mnist ...]     # `just tables`: never trains

A spec (reproduce/<name>.yaml) names the experiment config and the sweep. Each sweep point is one run
folder (runs/<task>/<run_name>, the same folder `python src/train.py` would use); a folder whose
summary.json says "finished" (or "diverged": a result too) with the same configuration is reused;
anything else is (re)run.
"""

from __future__ import annotations

import argparse
import importlib
import itertools
import os
import shlex
import subprocess
import sys
import threading
import time
from pathlib import Path

import yaml
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))
from bnrepro.config import TrainConfig  # noqa: E402  (importing registers the schema)
from bnrepro.results.runs import COMPLETE, find_runs, load_run  # noqa: E402


def load_spec(name: str) -> dict:
    path = ROOT / "reproduce" / f"{name}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in (ROOT / "reproduce").glob("*.yaml"))
        sys.exit(f"error: no spec reproduce/{name}.yaml; known: {', '.join(known)}")
    return yaml.safe_load(path.read_text())


def sweep_points(spec: dict) -> list[list[str]]:
    keys = list(spec["sweep"])
    return [
        [f"{k}={v}" for k, v in zip(keys, values)] for values in itertools.product(*spec["sweep"].values())
    ]


SCHEMA = OmegaConf.structured(TrainConfig)  # the schema's defaults

# Keys the driver sets for its own jobs; they do not change what a run computes.
DRIVER_KEYS = {"overwrite", "trainer.enable_progress_bar"}


def flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def planned_run(spec: dict, point: list[str], overrides: list[str]) -> tuple[list[str], Path, dict]:
    """Overrides of one job, its run folder and its resolved config (flat, dotted keys)."""
    job = [f"experiment={spec['experiment']}", *overrides, *point]
    with initialize_config_dir(str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("train", overrides=job, return_hydra_config=True)
    run_dir = Path(OmegaConf.select(cfg, "hydra.run.dir"))
    config = flatten({
        k: OmegaConf.to_container(cfg[k], resolve=True) if OmegaConf.is_config(cfg[k]) else cfg[k]
        for k in cfg
        if k != "hydra"
    })  # fmt: skip
    return job, (run_dir if run_dir.is_absolute() else ROOT / run_dir), config


def status(run_dir: Path, config: dict) -> str:
    """finished / diverged (reusable), missing, or failed; exits if the folder holds a different run."""
    if not (run_dir / "summary.json").is_file():
        return "missing"
    s = load_run(run_dir).summary
    if s.get("status") not in COMPLETE:
        return s.get("status", "unknown")
    there = flatten(yaml.safe_load((run_dir / "config.yaml").read_text()))
    # A key the stored config lacks was added to the schema later; at its default it changes nothing.
    there.update({k: OmegaConf.select(SCHEMA, k, throw_on_missing=False) for k in set(config) - set(there)})
    diff = sorted(k for k in (set(there) | set(config)) - DRIVER_KEYS if there.get(k) != config.get(k))
    if diff:
        shown = "; ".join(f"{k}: {there.get(k)!r} there, {config.get(k)!r} now" for k in diff[:5])
        sys.exit(
            f"error: {run_dir} holds a finished run with another configuration ({shown}). Nothing was "
            f"changed. Move it away, or pass runs_root=<other folder> or seed=<n>, and run again."
        )
    return s["status"]


def _show(path: Path) -> str:
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def _pump(proc: subprocess.Popen, log: Path) -> None:
    """Keeps the job's whole output in its log; echoes its progress and error lines."""
    with open(log, "w") as f:
        for line in proc.stdout:
            f.write(line)
            if line.startswith("[") or line.startswith("error"):
                print(line, end="", flush=True)


EXIT_DIVERGED = 3  # src/train.py's exit status for a run whose loss became non-finite


def run_jobs(jobs: list[tuple[list[str], Path]], parallel: int) -> None:
    """Runs the jobs, `parallel` at a time. A failed job does not stop the others (their work is kept)."""
    threads = max(1, (os.cpu_count() or 1) // parallel)
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONUNBUFFERED": "1"}
    pending, running, failed = list(jobs), [], []
    while pending or running:
        while pending and len(running) < parallel:
            job, run_dir = pending.pop(0)
            cmd = [sys.executable, str(ROOT / "src" / "train.py"), *job, "hydra.mode=RUN",
                   "trainer.enable_progress_bar=false", "overwrite=true"]  # fmt: skip
            print(f"launch: {shlex.join(cmd[1:])}", flush=True)
            run_dir.parent.mkdir(parents=True, exist_ok=True)
            proc = subprocess.Popen(
                cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
            )
            pump = threading.Thread(target=_pump, args=(proc, run_dir.with_suffix(".log")))
            pump.start()
            running.append((proc, pump, run_dir))
        time.sleep(0.2)
        for item in [r for r in running if r[0].poll() is not None]:
            running.remove(item)
            proc, pump, run_dir = item
            pump.join()
            if proc.returncode not in (0, EXIT_DIVERGED):  # a diverged run is a result, not a failure
                failed.append(f"{run_dir} (exit {proc.returncode}, output in {run_dir.with_suffix('.log')})")
    if failed:
        sys.exit("error: these jobs failed: " + "; ".join(failed))


def render(spec: dict, runs, command: str, results: Path) -> None:
    renderer = importlib.import_module(spec["renderer"])
    for path in renderer.render(*runs, out_dir=results, command=command):
        print(f"wrote {_show(path)}")


def reproduce(name: str, overrides: list[str], parallel: int | None, results: Path) -> None:
    spec = load_spec(name)
    plans = [planned_run(spec, p, overrides) for p in sweep_points(spec)]
    todo = [(job, d) for job, d, config in plans if status(d, config) not in COMPLETE]
    for _, d, _ in plans:
        print(f"{'run ' if any(d == t[1] for t in todo) else 'have'}  {_show(d)}")
    if todo:
        run_jobs(todo, parallel or min(len(todo), os.cpu_count() or 1))
    command = f"just reproduce {name} {shlex.join(overrides)}".strip()
    render(spec, [load_run(d) for _, d, _ in plans], command, results)


def render_only(name: str, runs_root: Path, results: Path) -> None:
    """Renders from the newest finished runs of the spec's experiment, one data set at a time."""
    spec = load_spec(name)
    task = spec["experiment"]
    runs = [r for r in find_runs(runs_root / task) if r.finished]
    models = spec["sweep"]["model"]
    by_data: dict[str, dict[str, object]] = {}
    for r in runs:  # oldest first, so the newest run of each model wins
        by_data.setdefault(r.summary["data"], {})[r.summary["model"]] = r
    complete = [(max(v.values(), key=lambda r: r.summary["finished_at"]).summary["finished_at"], d)
                for d, v in by_data.items() if all(m in v for m in models)]  # fmt: skip
    if not complete:
        print(
            f"{name}: no finished runs of {', '.join(models)} under runs/{task}; `just reproduce {name}` makes them"
        )
        return
    data = max(complete)[1]
    render(spec, [by_data[data][m] for m in models], f"just reproduce {name} data={data}", results)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("names", nargs="*", help="spec names (reproduce/<name>.yaml), then Hydra overrides")
    p.add_argument("--render-only", action="store_true", help="only render from finished runs")
    p.add_argument("--jobs", type=int, default=None, help="runs at once (default: one per CPU core)")
    p.add_argument("--results", type=Path, default=ROOT / "results", help="where tables and figures go")
    p.add_argument(
        "--runs-root", type=Path, default=ROOT / "runs", help="run folders to render from (--render-only)"
    )
    args = p.parse_intermixed_args(argv)  # overrides and --options in any order
    names = [a for a in args.names if "=" not in a]
    overrides = [a for a in args.names if "=" in a]
    if args.render_only:
        for name in names or sorted(p.stem for p in (ROOT / "reproduce").glob("*.yaml")):
            render_only(name, args.runs_root, args.results)
        return
    if len(names) != 1:
        sys.exit("error: name one spec, e.g. `python reproduce/reproduce.py mnist data=fashion_mnist`")
    reproduce(names[0], overrides, args.jobs, args.results)


if __name__ == "__main__":
    main()
