"""Lightning overhead on the MNIST MLP: the project's Lightning loop vs a plain PyTorch loop.

Both train the same BN MLP (same init, same optimizer, same on-device data, same index stream from
StepChunkSampler) for the same number of SGD steps of 60 examples, without evaluation, in one process,
alternating (plain, lightning, plain, lightning, ...) so drift on a shared machine hits both alike.
Reported: median ms/step of each and the ratio lightning/plain (target <= 1.25).

    python -m bnrepro.bench.mnist [--steps 5000] [--repeats 3] [--threads 1] [--norm batchnorm]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import lightning as L
import timm
import torch
import torch.nn.functional as F

import bnrepro.models  # noqa: F401
from bnrepro.data.device_loader import StepChunkSampler, device_loader
from bnrepro.lit.classifier import ClassifierModule

N_TRAIN, BATCH = 60000, 60


def make_data(seed: int = 0):
    gen = torch.Generator().manual_seed(seed)  # binary images like the thresholded MNIST
    x = (torch.rand(N_TRAIN, 1, 28, 28, generator=gen) > 0.5).float()
    return x, torch.randint(0, 10, (N_TRAIN,), generator=gen)


def sampler(steps: int, steps_per_batch: int) -> StepChunkSampler:
    return StepChunkSampler(N_TRAIN, BATCH, steps_per_epoch=steps, steps_per_batch=steps_per_batch)


def plain_loop(x, y, steps: int, norm: str, lr: float = 0.5) -> float:
    net = timm.create_model("mnist_mlp", norm=norm)
    opt = torch.optim.SGD(net.parameters(), lr=lr)
    indices = sampler(steps, 1).step_indices(0, steps)
    t0 = time.perf_counter()
    for idx in indices:
        loss = F.cross_entropy(net(x[idx]), y[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return time.perf_counter() - t0


def lightning_loop(x, y, steps: int, norm: str, steps_per_batch: int, lr: float = 0.5) -> float:
    net = timm.create_model("mnist_mlp", norm=norm)
    opt = {"name": "sgd", "lr": lr, "reference_batch": BATCH, "lr_scaling": "linear"}
    module = ClassifierModule(net, num_classes=10, batch_size=BATCH, optimizer=opt)
    loader = device_loader((x, y), sampler(steps, steps_per_batch))
    trainer = L.Trainer(
        accelerator="cpu", devices=1, max_steps=steps, max_epochs=1, logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0, num_sanity_val_steps=0,
    )  # fmt: skip
    t0 = time.perf_counter()
    trainer.fit(module, train_dataloaders=loader)
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
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    x, y = make_data()
    plain_loop(x, y, min(args.steps, 200), args.norm)  # warm-up: allocator, MKL, lazy imports
    lightning_loop(
        x, y, min(args.steps, args.steps_per_batch), args.norm, min(args.steps, args.steps_per_batch)
    )
    plain, lit = [], []
    for _ in range(args.repeats):
        plain.append(plain_loop(x, y, args.steps, args.norm))
        lit.append(lightning_loop(x, y, args.steps, args.norm, args.steps_per_batch))
    result = {
        "steps": args.steps, "repeats": args.repeats, "threads": args.threads, "norm": args.norm,
        "steps_per_batch": args.steps_per_batch,
        "plain_ms_per_step": round(statistics.median(plain) / args.steps * 1e3, 4),
        "lightning_ms_per_step": round(statistics.median(lit) / args.steps * 1e3, 4),
    }  # fmt: skip
    result["ratio"] = round(result["lightning_ms_per_step"] / result["plain_ms_per_step"], 3)
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
