"""Runs what a paper result needs and is missing, then renders it into results/.

    python reproduce/reproduce.py mnist [hydra overrides...] [--jobs N]
    python reproduce/reproduce.py figure3 --launcher slurm trainer=ddp trainer.devices=8 \
                                  hydra.launcher.partition=<partition>     # one SLURM job per run
    python reproduce/reproduce.py figure3 data=fashion_mnist [seed=0,1,2] [target=0.9]
    python reproduce/reproduce.py figure3 experiment=fashion_figure3_cpu seed=0,1,2   # the 2-core scale
    python reproduce/reproduce.py --render-only [figure3 ...] [source=wandb_offline | source=wandb
                                  entity=<team> project=<project>] [data=imagenette]   # `just tables`

A spec (reproduce/<name>.yaml) names the experiment config (one per data set); the sweep is the
experiment's own (its hydra.sweeper.params, e.g. the variants of src/bnrepro/variants.py), with the spec's
`sweep:` and the command line's sweeps over it, expanded by Hydra's BasicSweeper as `python src/train.py
experiment=<name>` expands it: `seed=0,1,2` adds an axis, `model=bn_x30` replaces one. Each sweep point is
one run folder (runs/<task>/<run_name>, the same folder `python src/train.py` would use); a folder whose
summary.json says "finished" (or "diverged": a result too) with the same configuration is reused; anything
else is (re)run. Driver options, not Hydra overrides: target= (figure2/3), source= / entity= / project=
(render only: read the runs from W&B instead of the run folders, results/sources.py).

Why the missing jobs run as processes of this script (concurrent.futures + subprocess) and not through a
Hydra launcher: the jobs to run are the sweep's points minus the finished runs, which is not a sweep Hydra
can express (a launcher would get one one-job multirun per run, as --launcher slurm does), and locally
hydra/launcher=basic runs the jobs one after another in this one process (a job's sys.exit, src/train.py's
exit status 2, ends the sweep), while hydra-joblib-launcher reuses workers, mixes every job's output in one
stream and gives no exit status per job. Here each job is its own `src/train.py <overrides> hydra.mode=RUN`
process (no DDP or CUDA state carried over), with its whole output in <run folder>.log and its progress
and error lines echoed; one job per CPU core with the cores split between them; each judged by its exit
status (3, diverged, is a result; any other failure is reported with the end of its log once the other
jobs are done). On SLURM, where a launcher is the way in, each missing run goes through
hydra/launcher=slurm.
"""

from __future__ import annotations

import argparse
import atexit
import functools
import gc
import importlib
import os
import shlex
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

# As src/train.py: the garbage collector off while importing, the imports then frozen, and the exit not
# spent scanning them (seconds before the first job starts and after the last one ends).
gc.disable()
atexit.register(gc.freeze)

import yaml  # noqa: E402
from hydra import compose, initialize_config_dir  # noqa: E402
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper  # noqa: E402
from hydra.core.override_parser.overrides_parser import OverridesParser  # noqa: E402
from omegaconf import OmegaConf  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
CONF = ROOT / "conf"
sys.path.insert(0, str(ROOT / "src"))
import bnrepro.registry  # noqa: E402, F401  (registers the schema)
from bnrepro.config.resume import differences_from_run, flatten  # noqa: E402
from bnrepro.results.runs import find_runs, load_run  # noqa: E402
from bnrepro.results.sources import SourceError, read_runs  # noqa: E402
from bnrepro.run_status import COMPLETE  # noqa: E402

gc.freeze()
gc.enable()

DRIVER_OPTIONS = ("target", "source", "entity", "project")  # key=value options of this script itself


def load_spec(name: str) -> dict:
    path = ROOT / "reproduce" / f"{name}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in (ROOT / "reproduce").glob("*.yaml"))
        sys.exit(f"error: no spec reproduce/{name}.yaml; known: {', '.join(known)}")
    return yaml.safe_load(path.read_text())


def experiment_sweep(experiment: str) -> tuple[tuple[str, str], ...]:
    """hydra.sweeper.params of conf/experiment/<experiment>.yaml: (key, Hydra sweep string) pairs."""
    params = compose_job([f"experiment={experiment}"], return_hydra_config=True).hydra.sweeper.params
    return tuple((k, str(v)) for k, v in (params or {}).items())


def sweep_points(spec: dict, experiment: str | None = None) -> list[list[str]]:
    """The jobs of the spec's sweep on its experiment (or `experiment`), each a list of overrides: the
    experiment's hydra.sweeper.params with the spec's `sweep` over them, expanded by Hydra's BasicSweeper."""
    axes = {**dict(experiment_sweep(experiment or spec["experiment"])), **spec.get("sweep", {})}
    parsed = OverridesParser.create().parse_overrides([f"{k}={v}" for k, v in axes.items()])
    (points,) = BasicSweeper.split_arguments(parsed, max_batch_size=None)
    return points


def apply_arguments(spec: dict, args: list[str]) -> tuple[dict, list[str]]:
    """The spec with the command line's driver options and sweeps applied; the Hydra overrides left.

    data=<name> picks the spec's experiment for that data set (e.g. fashion_figure3 for fashion_mnist);
    experiment=<name> picks one explicitly (e.g. fashion_figure3_cpu, the proxy at 2 CPU cores' scale).
    The spec's `sweep` (a list is a comma sweep) becomes Hydra sweep strings, and an override that is a
    sweep (`seed=0,1,2`) or sets a swept key (`model=bn_x30`) joins it as that axis.
    """
    spec = dict(spec)
    sweep = {
        k: ",".join(map(str, v)) if isinstance(v, list) else str(v) for k, v in spec.get("sweep", {}).items()
    }
    overrides = []
    for a in args:
        key, value = a.split("=", 1)
        if key in DRIVER_OPTIONS:
            spec[key] = value
            continue
        if key == "experiment":  # an explicit experiment wins over the data set's (e.g. a CPU scale)
            spec["experiment"], spec["experiments"] = value, {}
            continue
        if key == "data" and value in spec.get("experiments", {}):
            spec["experiment"] = spec["experiments"][value]
        overrides.append(a)
    swept = {*dict(experiment_sweep(spec["experiment"])), *sweep}
    rest = []
    for a, o in zip(overrides, OverridesParser.create().parse_overrides(overrides)):
        if o.is_sweep_override() or o.get_key_element() in swept:
            sweep[o.get_key_element()] = a.split("=", 1)[1]
        else:
            rest.append(a)
    spec["sweep"] = sweep
    return spec, rest


def compose_job(overrides: list[str], return_hydra_config: bool = False):
    """The config `python src/train.py <overrides>` would run."""
    with initialize_config_dir(str(CONF), version_base="1.3"):
        return compose("train", overrides=overrides, return_hydra_config=return_hydra_config)


def planned_run(spec: dict, point: list[str], overrides: list[str]) -> tuple[list[str], Path, dict]:
    """Overrides of one job, its run folder and its resolved config (flat, dotted keys)."""
    job = [f"experiment={spec['experiment']}", *overrides, *point]
    cfg = compose_job(job, return_hydra_config=True)
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
    diff = differences_from_run(run_dir, config)
    if diff:
        shown = "; ".join(diff[:5])
        sys.exit(
            f"error: {run_dir} holds a finished run with another configuration ({shown}). Nothing was "
            f"changed. Move it away, or pass runs_root=<other folder> or seed=<n>, and run again."
        )
    return s["status"]


def _show(path: Path) -> str:
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


EXIT_DIVERGED = 3  # src/train.py's exit status for a run whose loss became non-finite


def default_jobs(n: int) -> int:
    """One job per CPU core; one at a time on a GPU machine, where every job takes the GPU(s) it is given
    (`--jobs N` shares them: the Fashion-MNIST proxy runs its five jobs at once on one H100)."""
    import torch

    return 1 if torch.cuda.is_available() else min(n, os.cpu_count() or 1)


def job_command(job: list[str], launcher: str = "local", launcher_args: tuple[str, ...] = ()) -> list[str]:
    """The training command of one job. local: a process on this machine. slurm: a one-job Hydra multirun
    through conf/hydra/launcher/slurm.yaml, which submits it and waits for it (its run folder is the
    same). No overwrite=true: an unfinished run (preempted, failed, killed) resumes from its last.ckpt."""
    train = [sys.executable, str(ROOT / "src" / "train.py")]
    if launcher == "slurm":
        return [
            *train,
            "-m",
            "hydra/launcher=slurm",
            *job,
            *launcher_args,
            "trainer.enable_progress_bar=false",
        ]
    return [*train, *job, "hydra.mode=RUN", "trainer.enable_progress_bar=false"]


def job_log(run_dir: Path) -> Path:
    """<run folder>.log beside the folder. Not run_dir.with_suffix: a run name with a dot in it
    (`<model>-lr0.0015-seed0`, `<model>-x5.0-...`) would lose what follows the dot, and the runs of
    an LR sweep would all write one log."""
    return run_dir.parent / f"{run_dir.name}.log"


LOG_TAIL = 15  # lines of a failed job's log shown on the console


def run_job(job: list[str], run_dir: Path, env: dict, launcher: str, launcher_args) -> int:
    """One job as its own process: its whole output in its log, its progress and error lines echoed."""
    cmd = job_command(job, launcher, launcher_args)
    print(f"launch: {shlex.join(cmd[1:])}", flush=True)
    run_dir.parent.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    with open(job_log(run_dir), "w") as log:
        proc = subprocess.Popen(
            cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        for line in proc.stdout:
            log.write(line)
            if line.startswith("[") or line.startswith("error"):
                print(line, end="", flush=True)
    code = proc.wait()
    # The job's whole process, start-up included (bench/mnist_e2e.py reads these lines).
    print(f"done: {_show(run_dir)} exit {code} in {time.perf_counter() - started:.1f} s", flush=True)
    return code


def run_jobs(
    jobs: list[tuple[list[str], Path]], parallel: int, launcher: str = "local", launcher_args=()
) -> None:
    """Runs the jobs, `parallel` at a time. A failed job does not stop the others (their work is kept);
    once all are done, each failed one is named with the last LOG_TAIL lines of its log. A diverged run
    (EXIT_DIVERGED) is a result, not a failure."""
    # Each job's share of the cores: torch's default thread count follows OMP_NUM_THREADS, and the job
    # decides and records its count from it (speed.num_threads, speed.py; 1 for the MNIST MLPs).
    threads = max(1, (os.cpu_count() or 1) // parallel)
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONUNBUFFERED": "1"}
    with ThreadPoolExecutor(parallel) as pool:  # threads only wait on the jobs' processes
        codes = list(pool.map(lambda j: run_job(*j, env, launcher, launcher_args), jobs))
    failed = [(d, code) for (_, d), code in zip(jobs, codes) if code not in (0, EXIT_DIVERGED)]
    for d, code in failed:
        tail = job_log(d).read_text(errors="replace").splitlines()[-LOG_TAIL:]
        print(f"failed: {_show(d)} (exit {code}); the last {len(tail)} lines of {_show(job_log(d))}:",
              *(f"  | {line}" for line in tail), sep="\n", flush=True)  # fmt: skip
    if failed:
        sys.exit("error: these jobs failed: "
                 + "; ".join(f"{d} (exit {code}, output in {job_log(d)})" for d, code in failed))  # fmt: skip


def renderers(spec: dict) -> list[str]:
    """The spec's renderer modules (one, or a list)."""
    return spec["renderer"] if isinstance(spec["renderer"], list) else [spec["renderer"]]


def companion_runs(spec: dict, runs, read) -> list:
    """The runs of the spec's `companions` of the rendered runs' task (the LR sweep beside its sigmoid pair
    and back; the LR sweep beside Figure 3, for the precondition): the newest complete run of each run
    folder on the same data set, read as the rendered runs were (`read(task)`, oldest first)."""
    if not spec.get("companions"):  # also: Figure 4's runs are evaluation records
        return []
    tasks = {r.summary.get("task") for r in runs}
    data = {r.summary.get("data") for r in runs}
    found = {}
    for task in sorted({c for t in tasks for c in (spec.get("companions") or {}).get(t, [])} - tasks):
        for r in read(task):
            if r.complete and r.summary.get("data") in data:
                found[(task, r.summary.get("run_name"))] = r
    return list(found.values())


def render(spec: dict, runs, command: str, results: Path, companions=()) -> None:
    """Each of the spec's renderers on `runs`, the companion tasks' runs in spec["companion_runs"]."""
    spec = {**spec, "companion_runs": list(companions)}
    for module in renderers(spec):
        for path in importlib.import_module(module).render(runs, out_dir=results, command=command, spec=spec):
            print(f"wrote {_show(path)}")


def reproduce(
    name: str, args: list[str], parallel: int | None, results: Path, launcher: str = "local"
) -> None:
    # hydra.launcher.* settings (partition, account, ...) only go to the submission command.
    launcher_args = tuple(a for a in args if a.startswith("hydra.launcher."))
    if launcher_args and launcher != "slurm":
        sys.exit(f"error: {launcher_args[0]} needs --launcher slurm")
    spec, overrides = apply_arguments(load_spec(name), [a for a in args if a not in launcher_args])
    plans = [planned_run(spec, p, overrides) for p in sweep_points(spec)]
    todo = [(job, d) for job, d, config in plans if status(d, config) not in COMPLETE]
    for _, d, _ in plans:
        print(f"{'run ' if any(d == t[1] for t in todo) else 'have'}  {_show(d)}")
    if todo:
        # On SLURM every job is its own allocation: submit them all at once.
        jobs_at_once = len(todo) if launcher == "slurm" else parallel or default_jobs(len(todo))
        run_jobs(todo, jobs_at_once, launcher, launcher_args)
    command = f"just reproduce {name} {shlex.join(args)}".strip()
    runs = [load_run(d) for _, d, _ in plans]
    if "evaluations" in spec:  # Figure 4: evaluate the trained runs, render the evaluations
        from evaluations import evaluate_missing

        runs = evaluate_missing(spec, runs, overrides)
    runs_root = plans[0][1].parent.parent  # hydra.run.dir: <runs_root>/<task>/<run_name>
    render(spec, runs, command, results, companion_runs(spec, runs, lambda task: find_runs(runs_root / task)))


def planned_names(spec: dict, overrides: list[str], data: str) -> dict[tuple[str, str], str]:
    """(task, run_name) -> model of each sweep point on data set `data`: the runs a table may use."""
    experiment = spec.get("experiments", {}).get(data, spec["experiment"])
    job = [f"experiment={experiment}", *(o for o in overrides if not o.startswith("data=")), f"data={data}"]
    cfgs = [compose_job([*job, *point]) for point in sweep_points(spec, experiment)]
    return {(c.task, c.run_name): c.model.name for c in cfgs}


def sweep_runs(spec: dict, overrides: list[str], data: str, read) -> tuple[list[str], list]:
    """The models the spec's sweep runs on data set `data`, and the newest complete run of each of its
    points there (by run folder: a sweep may run a model more than once; `read` gives oldest first)."""
    names = planned_names(spec, overrides, data)
    found = {}
    for task in sorted({t for t, _ in names}):
        for r in read(task):
            key = (r.summary.get("task"), r.summary.get("run_name"))
            if r.complete and r.summary.get("data") == data and key in names:
                found[key] = r
    return list(dict.fromkeys(names.values())), list(found.values())


def render_source(spec: dict, overrides: list[str], read) -> tuple[str | None, list, list[str]]:
    """(data set, its runs, the models its sweep runs): what a table is rendered from, reading a task's
    runs with `read(task)`. The data set named by data=; else, of the candidates (the default
    experiment's data set, the spec's, those the default task's runs were made on), the newest whose
    sweep has a run of every model -- a plain `just tables mnist` renders the runs of `just reproduce
    mnist data=fashion_mnist` --, or with `allow_missing` the newest with any run."""
    default = compose_job([f"experiment={spec['experiment']}", *overrides])
    named = [o.split("=", 1)[1] for o in overrides if o.startswith("data=")][-1:]
    made_on = sorted({r.summary["data"] for r in read(default.task) if r.summary.get("data")})
    candidates = named or list(dict.fromkeys([default.data.name, *spec.get("experiments", {}), *made_on]))
    found = {data: sweep_runs(spec, overrides, data, read) for data in candidates}  # -> (models, runs)
    whole = [
        d for d, (models, runs) in found.items() if runs and {r.summary["model"] for r in runs} >= set(models)
    ]
    some = [d for d, (_, runs) in found.items() if runs] if spec.get("allow_missing") else []
    if not (whole or some):
        return None, [], found[candidates[0]][0]
    data = max(whole or some, key=lambda d: max(r.summary["finished_at"] for r in found[d][1]))
    return data, found[data][1], found[data][0]


def render_only(name: str, args: list[str], runs_root: Path, results: Path) -> None:
    """Renders from the newest complete runs of the spec's sweep (render_source), or Figure 4 from the
    evaluations under runs_root/eval."""
    spec, overrides = apply_arguments(load_spec(name), args)
    source = spec.get("source", "local")
    companions = []
    if "evaluations" in spec:
        from evaluations import read_evaluations

        runs, command = read_evaluations(runs_root), f"just tables {name} {shlex.join(args)}".strip()
        missing = f"no evaluations under {_show(runs_root / 'eval')}; `just reproduce {name}` or src/eval.py"
    else:
        entity, project = spec.get("entity"), spec.get("project")
        read = functools.cache(lambda task: read_runs(source, runs_root, task, entity, project))
        try:
            data, runs, wanted = render_source(spec, overrides, read)
            companions = companion_runs(spec, runs, read)
        except SourceError as e:
            sys.exit(f"error: {e}")
        command = f"just tables {name} data={data} {shlex.join(a for a in args if not a.startswith('data='))}"
        missing = f"no complete runs of {', '.join(wanted)} ({source}); `just reproduce {name}` makes them"
        spec["source"] = {"local": f"local run folders under {_show(runs_root)}",
                          "wandb_offline": f"W&B offline runs under {_show(runs_root)} (wandb leet inspect --json)",
                          "wandb": f"W&B API, project {spec.get('entity') or '(default entity)'}/{spec.get('project')}"}[source]  # fmt: skip
    if not runs:
        print(f"{name}: {missing}")
        return
    render(spec, runs, command.strip(), results, companions)


def not_covered(names: list[str]) -> list[str]:
    """The specs to render when none is named: a spec whose renderers another one runs as well (figure2
    inside figure3) is left out, so its runs are not read twice."""
    modules = {n: set(renderers(load_spec(n))) for n in names}
    return [n for n in names if not any(modules[n] < modules[m] for m in names)]


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("names", nargs="*", help="spec names (reproduce/<name>.yaml), then Hydra overrides")
    p.add_argument("--render-only", action="store_true", help="only render from finished runs")
    p.add_argument(
        "--jobs", type=int, default=None, help="runs at once (default: one per CPU core; 1 with a GPU)"
    )
    p.add_argument(
        "--launcher", choices=("local", "slurm"), default="local",
        help="local: processes here; slurm: one SLURM job per run (hydra/launcher=slurm, hydra.launcher.<key>=...)",
    )  # fmt: skip
    p.add_argument("--results", type=Path, default=ROOT / "results", help="where tables and figures go")
    p.add_argument(
        "--runs-root", type=Path, default=ROOT / "runs", help="run folders to render from (--render-only)"
    )
    args = p.parse_intermixed_args(argv)  # overrides and --options in any order
    names = [a for a in args.names if "=" not in a]
    overrides = [a for a in args.names if "=" in a]
    if args.render_only:
        for name in names or not_covered(sorted(p.stem for p in (ROOT / "reproduce").glob("*.yaml"))):
            render_only(name, overrides, args.runs_root, args.results)
        return
    if len(names) != 1:
        sys.exit("error: name one spec, e.g. `python reproduce/reproduce.py mnist data=fashion_mnist`")
    reproduce(names[0], overrides, args.jobs, args.results, args.launcher)


if __name__ == "__main__":
    main()
