"""End to end, as a user feels it: `just reproduce mnist data=fashion_mnist` against a plain PyTorch
script that does the same work.

The peer is what one would write without the project, run as reproduce runs its jobs: one process per
net (`mnist_mlp`, `mnist_mlp_bn`), both at once, `--threads` torch threads each. Each process

- reads the data set with torchvision from the same folder, binarized at 0.5 (Sec. 4.1), as tensors;
- builds the net with `timm.create_model("mnist_mlp", ...)` and the same seed: the same initial weights;
- trains it with plain SGD, LR 0.1, batches of 60, for `--steps` steps over StepChunkSampler's index
  stream (drawn here and handed over in a file: the peer imports neither Lightning nor Hydra);
- every `--eval-every` steps evaluates the whole test set: top-1, top-5, loss, and the 15/50/85th
  percentiles of every unit of the last hidden layer's sigmoid input (torch.quantile, as
  callbacks/percentiles.py does); the BN net as Figure 1 evaluates it, with Alg. 2's population
  statistics over the stream's first `eval_bn_batches` mini-batches (the project's config), its moving averages put back afterwards;
- writes its curves at the end (metrics.csv, unit_percentiles.npz).

The project: `python reproduce/reproduce.py mnist data=<data> logger=csv` (no W&B, whose network time
would be timed too) into a fresh runs_root each time, `trainer.max_steps=--steps`, rendering included:
the whole command. Both are timed from process start to exit, alternately (peer, project, peer, ...), so
drift on a shared machine hits both alike. Reported: wall times, per-run times (each process, start-up
included; the project's from reproduce's `done:` lines), the CPU time of all the processes (steadier
than the wall time on a shared machine), the ratios project / peer, and how far apart the two curves are
(same data, init, index stream, update and threads: accuracy, loss and percentiles to the bit, the mean
training loss to ~1e-7, another order of the sum).

    python -m bnrepro.bench.mnist_e2e [--steps 50000] [--repeats 1] [--modes peer,project]
                                      [--project-root DIR]   # e.g. another checkout, for before/after
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[3]
MODELS = {"mnist_mlp": "none", "mnist_mlp_bn": "batchnorm"}  # model name -> the net's norm
QUANTILES = (0.15, 0.5, 0.85)
CURVES = ("val/acc", "val/loss", "train/loss", "act/p15", "act/p50", "act/p85")


# --- the peer: one net, one process ------------------------------------------------------------------


def load_split(data: str, root: str, train: bool) -> tuple[torch.Tensor, torch.Tensor]:
    from torchvision import datasets

    cls = {"mnist": datasets.MNIST, "fashion_mnist": datasets.FashionMNIST}[data]
    ds = cls(root, train=train, download=False)
    return (ds.data.unsqueeze(1).float().div_(255.0) > 0.5).float(), ds.targets.long()


def peer(args) -> None:
    torch.set_num_threads(args.threads)
    import timm

    import bnrepro.models  # noqa: F401  (registers mnist_mlp with timm)

    x, y = load_split(args.data, args.data_root, train=True)
    xt, yt = load_split(args.data, args.data_root, train=False)
    net = timm.create_model("mnist_mlp", norm=MODELS[args.model], act_layer="sigmoid", init_seed=args.seed,
                            in_features=784, hidden=[100, 100, 100], num_classes=10, init_std=0.05)  # fmt: skip
    opt = torch.optim.SGD(net.parameters(), lr=args.lr)
    stream = torch.load(args.indices)  # the training stream; its first --alg2-batches also feed Alg. 2
    indices = stream[: args.steps]
    tracked = net.get_submodule("blocks.2.act")  # Figure 1(b,c): its input
    q = torch.tensor(QUANTILES)
    rows, values, losses = [], [], []
    t0 = time.perf_counter()
    for step, idx in enumerate(indices, 1):
        loss = F.cross_entropy(net(x.index_select(0, idx)), y.index_select(0, idx))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(loss.detach())
        if step % args.eval_every:
            continue
        inputs = []
        hook = tracked.register_forward_hook(lambda m, i, o, inputs=inputs: inputs.append(i[0]))
        bns = [m for m in net.modules() if isinstance(m, torch.nn.BatchNorm1d)]
        saved = [{k: v.clone() for k, v in m.state_dict().items()} for m in bns]
        with torch.no_grad():
            if bns and args.alg2_batches:  # Alg. 2: the average BN statistics of the first training batches
                momenta = [m.momentum for m in bns]
                for m in bns:
                    m.reset_running_stats()
                    m.momentum = None
                for idx in stream[: args.alg2_batches]:
                    net(x.index_select(0, idx))
                for m, momentum in zip(bns, momenta):
                    m.momentum = momentum
            hook_on = len(inputs)
            net.eval()
            logits = net(xt)
            del inputs[:hook_on]  # only the test set's inputs
        net.train()
        for m, state in zip(bns, saved):
            m.load_state_dict(state)
        hook.remove()
        per_unit = torch.quantile(inputs[0].float().t().contiguous(), q, dim=1)  # [Q, units]
        values.append(per_unit.numpy())
        top5 = (logits.topk(5, dim=1).indices == yt[:, None]).any(1)
        rows.append({"step": step, "val/acc": float((logits.argmax(1) == yt).float().mean()),
                     "val/acc_top5": float(top5.float().mean()), "val/loss": float(F.cross_entropy(logits, yt)),
                     "train/loss": float(torch.stack(losses).mean()),
                     **{f"act/p{round(qi * 100)}": float(v) for qi, v in zip(QUANTILES, per_unit[:, 0])}})  # fmt: skip
        losses = []
        print(f"[{args.model}] step {step}/{args.steps}  val/acc {rows[-1]['val/acc']:.4f}  "
              f"({time.perf_counter() - t0:.1f} s)", flush=True)  # fmt: skip
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "metrics.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    np.savez(out / "unit_percentiles.npz", steps=np.array([r["step"] for r in rows]),
             quantiles=np.array(QUANTILES), values=np.stack(values))  # fmt: skip


# --- the driver ---------------------------------------------------------------------------------------


def prepare_data(data: str, root: Path) -> None:
    """The data set in torchvision's layout under `root` (from the system folders the config names)."""
    from bnrepro.compose import compose_train
    from bnrepro.data.mnist import prepare

    prepare(data, root, compose_train(f"data={data}").data.system_dirs, download=False)


def alg2_batches() -> int:
    """How many training batches Figure 1's BN net averages for Alg. 2 before each evaluation (its config's
    callbacks.population_stats.eval_bn_batches; 0 when it evaluates with its moving averages)."""
    from bnrepro.compose import compose_train

    stats = compose_train("model=mnist_mlp_bn").callbacks.population_stats
    return stats.eval_bn_batches if stats.eval_bn == "population" else 0


def write_indices(path: Path, data: str, root: Path, steps: int, batch: int = 60, seed: int = 0) -> None:
    """The project's training stream (data/device_loader.py StepChunkSampler) for seed 0, as [steps, 60]."""
    from bnrepro.data.device_loader import StepChunkSampler

    n = len(load_split(data, str(root), train=True)[1])
    steps = max(steps, alg2_batches())  # a short run's Alg. 2 still reads the stream's first batches
    torch.save(StepChunkSampler(n, batch, steps_per_epoch=steps, seed=seed).step_indices(0, steps), path)


def run_peer(args, work: Path, indices: Path) -> dict:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": str(args.threads)}
    out = work / "peer"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    alg2 = str(alg2_batches())  # composed before the clock starts
    t0 = time.perf_counter()
    procs = {
        m: subprocess.Popen(
            [
                sys.executable,
                "-m",
                "bnrepro.bench.mnist_e2e",
                "--worker",
                m,
                "--steps",
                str(args.steps),
                "--eval-every",
                str(args.eval_every),
                "--threads",
                str(args.threads),
                "--data",
                args.data,
                "--data-root",
                str(args.data_root),
                "--indices",
                str(indices),
                "--alg2-batches",
                alg2,
                "--out",
                str(out / m),
            ],
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=open(out / f"{m}.err", "w"),
        )  # fmt: skip
        for m in MODELS
    }
    per_run = {}
    while len(per_run) < len(procs):
        for m, proc in procs.items():
            if m not in per_run and proc.poll() is not None:
                per_run[m] = round(time.perf_counter() - t0, 1)  # both started at t0
                if proc.returncode:
                    sys.exit(f"error: the peer's {m} failed:\n{(out / f'{m}.err').read_text()[-3000:]}")
        time.sleep(0.05)
    return {"wall_s": round(time.perf_counter() - t0, 1), "per_run_s": per_run,
            "curves": {m: out / m / "metrics.csv" for m in MODELS}}  # fmt: skip


def children_cpu_s() -> float:
    """CPU seconds (user + system) of every finished child process and its waited-for descendants."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def timed(run, *args) -> dict:
    """`run`'s result with the CPU time its processes used: less sensitive than the wall time to other
    work on a shared machine (it still grows when that work competes for caches and memory)."""
    cpu = children_cpu_s()
    result = run(*args)
    return {**result, "cpu_s": round(children_cpu_s() - cpu, 1)}


def run_project(args, work: Path) -> dict:
    root = args.project_root.resolve()
    runs = work / "runs"
    shutil.rmtree(runs, ignore_errors=True)  # a fresh runs_root: both runs train (reproduce reuses none)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "OMP_NUM_THREADS")}
    env["PYTHONPATH"] = str(root / "src")
    cmd = [sys.executable, str(root / "reproduce" / "reproduce.py"), "mnist", f"data={args.data}", "logger=csv",
           f"runs_root={runs}", f"data.root={args.data_root}", f"trainer.max_steps={args.steps}",
           f"loop.eval_every_steps={args.eval_every}", "--results", str(work / "results")]  # fmt: skip
    t0 = time.perf_counter()
    r = subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if r.returncode:
        sys.exit(f"error: {' '.join(cmd)} failed:\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}")
    per_run = {
        m: float(s)
        for m, s in re.findall(r"^done: .*/(mnist_mlp(?:_bn)?)-\S+ exit 0 in ([\d.]+) s", r.stdout, re.M)
    }
    curves = {m: next(runs.glob(f"*/{m}-*/metrics.csv")) for m in MODELS}
    return {"wall_s": round(wall, 1), "per_run_s": per_run, "curves": curves}


def read_curves(path: Path) -> dict[str, list[float]]:
    with open(path, newline="") as f:
        rows = [r for r in csv.DictReader(f) if r.get("val/acc")]
    return {k: [float(r[k]) for r in rows] for k in ("step", *CURVES)}


def same_curves(a: dict, b: dict) -> dict:
    """Largest difference between the peer's and the project's curves, per net and metric."""
    out = {}
    for m in MODELS:
        ca, cb = read_curves(a[m]), read_curves(b[m])
        out[m] = {k: (max(abs(u - v) for u, v in zip(ca[k], cb[k])) if len(ca[k]) == len(cb[k]) else "lengths differ")
                  for k in ("step", *CURVES)}  # fmt: skip
    return out


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=50_000)
    p.add_argument("--eval-every", type=int, default=500)
    p.add_argument("--repeats", type=int, default=1, help="peer/project pairs, alternating")
    p.add_argument("--modes", default="peer,project", help="peer, project or both (alternating)")
    p.add_argument("--threads", type=int, default=1, help="the peer's torch threads per process")
    p.add_argument("--data", default="fashion_mnist", choices=("fashion_mnist", "mnist"))
    p.add_argument(
        "--data-root", type=Path, default=None, help="prepared data folder (default: a temporary one)"
    )
    p.add_argument("--project-root", type=Path, default=ROOT, help="the checkout whose reproduce.py is timed")
    p.add_argument("--keep", type=Path, default=None, help="keep the runs here instead of a temporary folder")
    p.add_argument("--worker", choices=tuple(MODELS), help=argparse.SUPPRESS)  # the peer's process
    p.add_argument("--indices", help=argparse.SUPPRESS)
    p.add_argument("--alg2-batches", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--out", help=argparse.SUPPRESS)
    p.add_argument("--lr", type=float, default=0.1, help=argparse.SUPPRESS)
    p.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        args.model = args.worker
        peer(args)
        return {}
    if args.steps % args.eval_every:
        p.error("--steps must be a multiple of --eval-every")
    modes = [m for m in args.modes.split(",") if m]
    work = Path(args.keep or tempfile.mkdtemp(prefix="mnist_e2e-"))
    work.mkdir(parents=True, exist_ok=True)
    if args.data_root is None:
        args.data_root = work / "data"
        prepare_data(args.data, args.data_root)  # decompressing is not timed (the project does it once)
    indices = work / "indices.pt"
    write_indices(indices, args.data, args.data_root, args.steps)
    runs = {m: [] for m in modes}
    for _ in range(args.repeats):
        for m in modes:
            runs[m].append(
                timed(run_peer, args, work, indices) if m == "peer" else timed(run_project, args, work)
            )
            r = runs[m][-1]
            print(f"{m}: {r['wall_s']} s (CPU {r['cpu_s']} s)  per run {r['per_run_s']}", flush=True)
    result = {"steps": args.steps, "eval_every": args.eval_every, "data": args.data, "repeats": args.repeats,
              "peer_threads": args.threads, "cpu_cores": os.cpu_count(), "project_root": str(args.project_root)}  # fmt: skip
    for m in modes:
        result[f"{m}_wall_s"] = [r["wall_s"] for r in runs[m]]
        result[f"{m}_per_run_s"] = [r["per_run_s"] for r in runs[m]]
        result[f"{m}_cpu_s"] = [r["cpu_s"] for r in runs[m]]
    if len(modes) == 2:
        pairs = [b["wall_s"] / a["wall_s"] for a, b in zip(runs["peer"], runs["project"])]
        result["ratio_per_pair"] = [round(r, 3) for r in pairs]
        result["ratio"] = round(statistics.median(pairs), 3)  # project / peer, wall time
        cpu = [b["cpu_s"] / a["cpu_s"] for a, b in zip(runs["peer"], runs["project"])]
        result["cpu_ratio"] = round(statistics.median(cpu), 3)
        result["max_curve_difference"] = same_curves(
            runs["peer"][-1]["curves"], runs["project"][-1]["curves"]
        )
    print(json.dumps(result, indent=2))
    if args.keep is None:
        shutil.rmtree(work, ignore_errors=True)
    return result


if __name__ == "__main__":
    main()
