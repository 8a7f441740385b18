"""Lightning overhead on the MNIST MLP: the project's Lightning loop vs a plain PyTorch loop.

Both train the same BN MLP (same init, same optimizer, same on-device data, same index stream from
StepChunkSampler) for the same number of SGD steps of 60 examples, without evaluation, in one process,
alternating (plain, lightning, plain, lightning, ...) so drift on a shared machine hits both alike.
Reported: median ms/step of each and the ratio lightning/plain (target <= 1.25). On a GPU
(`--device cuda`) the Lightning loop replays each batch's K steps as one CUDA graph (lit/graphed.py, as
speed.cuda_graphs=auto does) and the plain loop stays eager: the ratio is then the speed-up over an
eager loop (target: 5x).

    python -m bnrepro.bench.mnist [--steps 5000] [--repeats 3] [--threads 1] [--norm batchnorm] [--device cuda]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from functools import partial

import lightning as L
import timm
import torch
import torch.nn.functional as F

import bnrepro.models  # noqa: F401
from bnrepro.bench import sync
from bnrepro.data.device_loader import StepChunkSampler, device_loader
from bnrepro.lit.classifier import ClassifierModule
from bnrepro.lit.multistep import MultiStepClassifier
from bnrepro.lit.schedules import Constant
from bnrepro.provenance import hardware

N_TRAIN, BATCH = 60000, 60


def make_data(seed: int = 0):
    gen = torch.Generator().manual_seed(seed)  # binary images like the thresholded MNIST
    x = (torch.rand(N_TRAIN, 1, 28, 28, generator=gen) > 0.5).float()
    return x, torch.randint(0, 10, (N_TRAIN,), generator=gen)


def sampler(steps: int, steps_per_batch: int | None) -> StepChunkSampler:
    return StepChunkSampler(N_TRAIN, BATCH, steps_per_epoch=steps, steps_per_batch=steps_per_batch)


def plain_loop(x, y, steps: int, norm: str, lr: float = 0.5) -> float:
    """The eager reference: one Python-driven step after the other, data on the same device."""
    net = timm.create_model("mnist_mlp", norm=norm).to(x.device)
    opt = torch.optim.SGD(net.parameters(), lr=lr)
    indices = sampler(steps, 1).step_indices(0, steps).to(x.device)
    sync(x.device)
    t0 = time.perf_counter()
    for idx in indices:
        loss = F.cross_entropy(net(x[idx]), y[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    sync(x.device)
    return time.perf_counter() - t0


def lightning_loop(
    x, y, steps: int, norm: str, steps_per_batch: int, lr: float = 0.5, cuda_graphs: bool = False
) -> float:
    """The project's module as run.py builds it: K steps per Lightning batch (lit/multistep.py), or
    Lightning's automatic optimization at K=1 without CUDA graphs."""
    net = timm.create_model("mnist_mlp", norm=norm)
    kwargs = dict(num_classes=10, global_batch=BATCH, optimizer=partial(torch.optim.SGD, lr=lr, weight_decay=0.0),
                  schedule=Constant(), reference_batch=BATCH, lr_rule="linear", aux_loss_weight=0.3,
                  decay_all_params=False, fused_optimizer=False, channels_last=False)  # fmt: skip
    chunks = steps_per_batch > 1 or cuda_graphs
    if chunks:
        module = MultiStepClassifier(net, **kwargs, cuda_graphs=cuda_graphs)
    else:
        module = ClassifierModule(net, **kwargs)
    loader = device_loader((x, y), sampler(steps, steps_per_batch if chunks else None))
    trainer = L.Trainer(
        accelerator=x.device.type, devices=1, max_steps=steps, max_epochs=1, logger=False,
        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0,
        num_sanity_val_steps=0,
    )  # fmt: skip
    t0 = time.perf_counter()
    trainer.fit(module, train_dataloaders=loader)
    sync(x.device)
    elapsed = time.perf_counter() - t0
    assert trainer.global_step == steps, (trainer.global_step, steps)
    return elapsed


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=5000)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--steps-per-batch", type=int, default=100)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--norm", default="batchnorm", choices=["batchnorm", "none"])
    p.add_argument("--device", default="cpu", help="cpu | cuda (data, both loops)")
    p.add_argument(
        "--cuda-graphs", action=argparse.BooleanOptionalAction, default=None,
        help="the Lightning loop's K steps as one CUDA graph (default: on for cuda, as speed.cuda_graphs=auto)",
    )  # fmt: skip
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    graphs = args.cuda_graphs if args.cuda_graphs is not None else device.type == "cuda"
    x, y = (t.to(device) for t in make_data())
    plain_loop(x, y, min(args.steps, 200), args.norm)  # warm-up: allocator, MKL, lazy imports
    warm = min(args.steps, 2 * args.steps_per_batch)
    lightning_loop(x, y, warm, args.norm, min(args.steps, args.steps_per_batch), cuda_graphs=graphs)
    plain, lit = [], []
    for _ in range(args.repeats):
        plain.append(plain_loop(x, y, args.steps, args.norm))
        lit.append(lightning_loop(x, y, args.steps, args.norm, args.steps_per_batch, cuda_graphs=graphs))
    result = {
        "steps": args.steps, "repeats": args.repeats, "threads": args.threads, "norm": args.norm,
        "steps_per_batch": args.steps_per_batch, "device": hardware(device), "cuda_graphs": graphs,
        "plain_ms_per_step": round(statistics.median(plain) / args.steps * 1e3, 4),
        "lightning_ms_per_step": round(statistics.median(lit) / args.steps * 1e3, 4),
    }  # fmt: skip
    result["ratio"] = round(result["lightning_ms_per_step"] / result["plain_ms_per_step"], 3)
    result["speedup_over_plain"] = round(result["plain_ms_per_step"] / result["lightning_ms_per_step"], 2)
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
