"""Training-step throughput of BN-Inception: the project's Lightning loop vs a plain PyTorch loop.

Both train the same network (model=bn_x30, built by models.build_net from the composed config) on the
same synthetic images held on the device (so the input pipeline is out of the picture: see
bench/pipeline.py for that), with the same fast paths, one after the other in one process. Each mode
is one combination of fast paths; the Lightning loop uses the project's ClassifierModule and
lightning.Trainer exactly as run.py sets them up. Reported per mode: images/s of both loops after
`--warmup` steps (compilation, cudnn autotuning) and the ratio lightning / plain (target >= 0.9).

    python -m bnrepro.bench.inception [--batch 256] [--steps 50] [--modes fp32,bf16,compiled]
    python -m bnrepro.bench.inception --tiny        # a few CPU steps on small images (the test)
"""

from __future__ import annotations

import argparse
import json
import time

import lightning as L
import torch
import torch.nn.functional as F

from bnrepro.bench import compose_train, sync
from bnrepro.data.device_loader import StepChunkSampler, device_loader
from bnrepro.lit.classifier import effective_lr
from bnrepro.provenance import hardware
from bnrepro.speed import Speed, apply_to_net

# name -> (precision, channels_last, fused optimizer, torch.compile)
MODES = {
    "fp32": ("32-true", False, False, False),  # eager float32: the peers' "about 2,700 images/s" setting
    "bf16": ("bf16-mixed", True, True, False),  # eager bf16 autocast + channels_last (peers: ~4,400)
    "compiled": ("bf16-mixed", True, True, True),  # + torch.compile: the trainer's GPU default
}


def compose_cfg(model: str, batch: int, image_size: int):
    return compose_train(
        f"model={model}", "data=synthetic", f"data.batch_size={batch}", f"data.image_size={image_size}"
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
    from bnrepro.models import build_net
    from bnrepro.run import build_module

    net = apply_to_net(build_net(cfg.model.net), speed)
    module = build_module(cfg, net, speed)
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


def plain_loop(cfg, speed: Speed, data, device, warmup: int, steps: int) -> float:
    """The same step without Lightning: forward under autocast, cross-entropy, backward, SGD step."""
    from bnrepro.models import build_net

    torch.backends.cudnn.benchmark = speed.cudnn_benchmark
    net = apply_to_net(build_net(cfg.model.net), speed).to(device)
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
    sync(device)
    return cfg.data.batch_size * steps / (time.perf_counter() - t0)


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="bn_x30")
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--warmup", type=int, default=20)
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--modes", default="fp32,bf16,compiled")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--tiny", action="store_true", help="2 timed steps of batch 4 at 64x64, eager fp32")
    args = p.parse_args(argv)
    if args.warmup < 1 or args.steps < 1:
        p.error("--warmup and --steps must be at least 1 (the clock starts after the warm-up steps)")
    if args.tiny:
        args.batch, args.image_size, args.warmup, args.steps, args.modes = 4, 64, 1, 2, "fp32"
    device = torch.device(args.device)
    cfg = compose_cfg(args.model, args.batch, args.image_size)
    data = synthetic(4 * args.batch, args.image_size, device)
    result = {"model": args.model, "batch": args.batch, "image_size": args.image_size, "warmup": args.warmup,
              "steps": args.steps, "hardware": hardware(device), "torch": torch.__version__, "modes": {}}  # fmt: skip
    for mode in args.modes.split(","):
        speed = speed_of(mode, device)
        plain = plain_loop(cfg, speed, data, device, args.warmup, args.steps)
        lit = lightning_loop(cfg, speed, data, device, args.warmup, args.steps)
        result["modes"][mode] = {"plain_images_per_s": round(plain, 1), "lightning_images_per_s": round(lit, 1),
                                 "lightning_over_plain": round(lit / plain, 3)}  # fmt: skip
        print(json.dumps({mode: result["modes"][mode]}), flush=True)
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
