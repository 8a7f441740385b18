"""Training-step throughput of BN-Inception: the project's Lightning loop vs a plain PyTorch loop.

Both train the same network (model=bn_x30, built by models.build_net from the composed config) on the
same synthetic images held on the device (so the input pipeline is out of the picture: see
bench/pipeline.py for that), with the same fast paths, one after the other in one process. Each mode
is one combination of fast paths; the Lightning loop uses the project's ClassifierModule and
lightning.Trainer exactly as run.py sets them up. Reported per mode and BN grouping
(`--bn-groups 32,none`: model.net.bn_group, the paper's statistics over 32 examples, or over the whole
batch): images/s of both loops after `--warmup` steps (compilation, cudnn autotuning) and the ratio
lightning / plain (target >= 0.95). `--peers cadene` adds the plain loop on the Cadene port of the Caffe
model (pretrainedmodels' BNInception, random weights; 224x224 only), the public reference.
`--profile` summarises a torch.profiler trace of a few plain steps: the share of convolution,
batch-norm, elementwise and other kernels' time.

    python -m bnrepro.bench.inception [--batch 256] [--steps 50] [--modes fp32,bf16,compiled] \
        [--bn-groups 32,none] [--peers cadene] [--profile]
    python -m bnrepro.bench.inception --tiny        # a few CPU steps on small images (the test)
"""

from __future__ import annotations

import argparse
import json
import time

import lightning as L
import torch
import torch.nn.functional as F

from bnrepro.bench import sync
from bnrepro.compose import compose_train
from bnrepro.data.device_loader import StepChunkSampler, device_loader
from bnrepro.lit.classifier import effective_lr
from bnrepro.provenance import hardware
from bnrepro.speed import Speed, apply_to_net

# name -> (precision, channels_last, fused optimizer, torch.compile)
MODES = {
    "fp32": ("32-true", False, False, False),  # eager float32: the peers' "about 2,700 images/s" setting
    "fp32cl": (
        "32-true",
        True,
        False,
        False,
    ),  # + channels_last: the CPU proxy's setting (fashion_figure3_cpu)
    "bf16": ("bf16-mixed", True, True, False),  # eager bf16 autocast + channels_last (peers: ~4,400)
    "compiled": ("bf16-mixed", True, True, True),  # + torch.compile: the trainer's GPU default
}


def compose_cfg(
    model: str, batch: int, image_size: int, bn_group: str | None = None, width: float = 1.0, divisor: int = 8
):
    # "model": the variant's own setting (Inception has no BN to group)
    group = (
        []
        if bn_group in (None, "model")
        else [f"model.net.bn_group={'null' if bn_group == 'none' else bn_group}"]
    )
    return compose_train(
        f"model={model}",
        "data=synthetic",
        f"data.batch_size={batch}",
        f"data.image_size={image_size}",
        f"model.net.width={width}",
        f"model.net.channel_divisor={divisor}",
        *group,
    )


def synthetic(n: int, image_size: int, device: torch.device, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 3, image_size, image_size, generator=gen).to(device)
    return x, torch.randint(0, 1000, (n,), generator=gen).to(device)


def speed_of(mode: str, device: torch.device) -> Speed:
    precision, channels_last, fused, compiled = MODES[mode]
    return Speed(precision, device.type == "cuda", channels_last, fused, compiled, "default", False,
                 torch.get_num_threads())  # fmt: skip


class StepClock(L.Callback):
    """Wall time from the end of step `warmup` to the end of the last step, device synchronised."""

    def __init__(self, warmup: int):
        self.warmup = warmup

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.global_step == self.warmup:
            sync(pl_module.device)
            self.t0 = time.perf_counter()
        elif trainer.global_step == trainer.max_steps:
            sync(pl_module.device)
            self.elapsed = time.perf_counter() - self.t0


def lightning_loop(cfg, speed: Speed, data, device, warmup: int, steps: int) -> float:
    from dataclasses import replace
    from pathlib import Path

    from bnrepro.models import build_net
    from bnrepro.plan import plan
    from bnrepro.run import build_module

    net = apply_to_net(build_net(cfg.model.net), speed)
    module = build_module(replace(plan(cfg, Path("unused")), speed=speed), net)  # the run's module, this mode
    total = warmup + steps
    sampler = StepChunkSampler(len(data[0]), cfg.data.batch_size, steps_per_epoch=total)
    clock = StepClock(warmup)
    trainer = L.Trainer(
        accelerator=device.type, devices=1, precision=speed.precision, benchmark=speed.cudnn_benchmark,
        max_steps=total, max_epochs=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, limit_val_batches=0, num_sanity_val_steps=0, callbacks=[clock],
    )  # fmt: skip
    trainer.fit(module, train_dataloaders=device_loader(data, sampler))
    return cfg.data.batch_size * steps / clock.elapsed


def cadene_net():
    """The Cadene port of the Caffe BN-Inception (pretrainedmodels, a test dependency), random weights."""
    from pretrainedmodels.models.bninception import BNInception

    return BNInception(num_classes=1000)


def plain_loop(cfg, speed: Speed, data, device, warmup: int, steps: int, net=None, profile=None) -> float:
    """The same step without Lightning: forward under autocast, cross-entropy, backward, SGD step.
    `net`: another network to train the same way (a peer); `profile`: a torch.profiler to step."""
    from bnrepro.models import build_net

    torch.backends.cudnn.benchmark = speed.cudnn_benchmark
    net = apply_to_net(net if net is not None else build_net(cfg.model.net), speed).to(device)
    o = cfg.optimizer
    lr = effective_lr(o.lr, cfg.data.batch_size, cfg.lr_scaling.reference_batch, cfg.lr_scaling.rule)
    opt = torch.optim.SGD(net.parameters(), lr=lr, momentum=o.momentum, weight_decay=o.weight_decay,
                          fused=speed.fused_optimizer or None)  # fmt: skip
    x, y = data
    memory_format = torch.channels_last if speed.channels_last else torch.contiguous_format
    indices = StepChunkSampler(len(x), cfg.data.batch_size, steps_per_epoch=warmup + steps).step_indices(
        0, warmup + steps
    )
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=speed.precision == "bf16-mixed")
    for i, idx in enumerate(indices):
        if i == warmup:
            sync(device)
            t0 = time.perf_counter()
        idx = idx.to(device)
        xb = x.index_select(0, idx).contiguous(memory_format=memory_format)
        with autocast:
            out = net(xb)
            loss = F.cross_entropy(out[0] if isinstance(out, tuple) else out, y.index_select(0, idx))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if profile is not None:
            profile.step()
    sync(device)
    return cfg.data.batch_size * steps / (time.perf_counter() - t0)


# Kernel names -> category for --profile: where a BN-Inception step's time goes.
CATEGORIES = (
    ("convolution", ("conv", "cudnn", "gemm", "mm", "sm90", "sm80", "implicit")),
    ("batch norm", ("batch_norm", "batchnorm", "bn_", "var_mean", "welford")),
    ("elementwise", ("add", "mul", "relu", "sigmoid", "threshold", "copy", "fill", "div", "sub", "rsqrt",
                     "elementwise", "vectorized", "where", "neg")),
    ("pooling", ("pool",)),
)  # fmt: skip


def categorise(name: str) -> str:
    lower = name.lower()
    return next((c for c, keys in CATEGORIES if any(k in lower for k in keys)), "other")


def profile_summary(cfg, speed: Speed, data, device, steps: int = 3) -> dict:
    """Share of kernel time by category over `steps` plain training steps (after one warm-up step)."""
    from torch.profiler import ProfilerActivity, profile, schedule

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities, schedule=schedule(wait=0, warmup=1, active=steps, repeat=1)) as prof:
        plain_loop(cfg, speed, data, device, warmup=1, steps=steps, profile=prof)
    device_time = "self_device_time_total" if device.type == "cuda" else "self_cpu_time_total"
    totals: dict[str, float] = {}
    for event in prof.key_averages():
        if event.key.startswith("ProfilerStep"):
            continue
        t = getattr(event, device_time, 0.0)
        totals[categorise(event.key)] = totals.get(categorise(event.key), 0.0) + t
    whole = sum(totals.values()) or 1.0
    return {c: round(100 * t / whole, 1) for c, t in sorted(totals.items(), key=lambda kv: -kv[1])}


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="bn_x30")
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--width", type=float, default=1.0, help="model.net.width (the CPU proxy: 0.125 at 64 px)")
    p.add_argument(
        "--channel-divisor", type=int, default=8, help="model.net.channel_divisor (the CPU proxy: 4)"
    )
    p.add_argument("--warmup", type=int, default=20)
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--modes", default="fp32,bf16,compiled")
    p.add_argument(
        "--bn-groups",
        default="32,none",
        help="model.net.bn_group values (none: whole batch; model: the variant's own, e.g. for Inception)",
    )
    p.add_argument("--peers", default="", help="cadene: also the Cadene port's plain loop (224x224)")
    p.add_argument("--profile", action="store_true", help="kernel-time shares of the plain step per mode")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--tiny", action="store_true", help="2 timed steps of batch 4 at 64x64, eager fp32")
    args = p.parse_args(argv)
    if args.warmup < 1 or args.steps < 1:
        p.error("--warmup and --steps must be at least 1 (the clock starts after the warm-up steps)")
    if args.tiny:
        args.batch, args.image_size, args.warmup, args.steps, args.modes = 8, 64, 1, 2, "fp32"
        args.bn_groups = "4,none"  # two groups of 4 in a batch of 8, and the whole batch
    device = torch.device(args.device)
    data = synthetic(4 * args.batch, args.image_size, device)
    result = {"model": args.model, "width": args.width, "channel_divisor": args.channel_divisor, "batch": args.batch, "image_size": args.image_size, "warmup": args.warmup,
              "steps": args.steps, "hardware": hardware(device), "torch": torch.__version__, "modes": {}}  # fmt: skip
    for mode in args.modes.split(","):
        speed = speed_of(mode, device)
        for group in args.bn_groups.split(","):
            cfg = compose_cfg(
                args.model, args.batch, args.image_size, group, args.width, args.channel_divisor
            )
            plain = plain_loop(cfg, speed, data, device, args.warmup, args.steps)
            lit = lightning_loop(cfg, speed, data, device, args.warmup, args.steps)
            row = {"plain_images_per_s": round(plain, 1), "lightning_images_per_s": round(lit, 1),
                   "lightning_over_plain": round(lit / plain, 3)}  # fmt: skip
            if "cadene" in args.peers:
                cadene = plain_loop(cfg, speed, data, device, args.warmup, args.steps, net=cadene_net())
                row.update(cadene_images_per_s=round(cadene, 1), lightning_over_cadene=round(lit / cadene, 3))
            if args.profile:
                row["profile_percent"] = profile_summary(cfg, speed, data, device)
            key = f"{mode}/bn_group={group}"
            result["modes"][key] = row
            print(json.dumps({key: row}), flush=True)
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
