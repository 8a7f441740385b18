"""CPU training step of a narrow BN-Inception: ms per step by width, memory format and precision.

The proxy of Figure 3 at the CPU scale (docs/paper.md Sec. 3, `model.net.width`) runs small inputs
(64 px: the last grid 2x2) through a narrow net on one thread per process. This measures what one step
costs there: forward, backward and SGD step of the plain loop of bench/inception.py (the same network
config as a run: `--model`, synthetic images held in memory), for every width and every combination
of channels_last and bf16 autocast. Prints a table of ms per step (the mean over `--steps` steps after
`--warmup`) and a JSON line with the machine's load (the numbers are only as quiet as it).

    python -m bnrepro.bench.cpu_width [--widths 1.0,0.5,0.25] [--image-size 64] [--batch 32] \
        [--threads 1] [--steps 10] [--warmup 3]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os

import torch

from bnrepro.bench.inception import plain_loop, speed_of, synthetic
from bnrepro.compose import compose_train
from bnrepro.provenance import hardware

# (label, channels_last, bf16 autocast)
VARIANTS = [("fp32", False, False), ("fp32 channels_last", True, False),
            ("bf16", False, True), ("bf16 channels_last", True, True)]  # fmt: skip


def step_ms(model: str, width: float, size: int, batch: int, channels_last: bool, bf16: bool, args) -> float:
    """Mean ms of one plain-loop step over `args.steps` steps after `args.warmup`."""
    cfg = compose_train(f"model={model}", "data=synthetic", f"data.batch_size={batch}",
                        f"data.image_size={size}", f"model.net.width={width}")  # fmt: skip
    cpu = torch.device("cpu")
    speed = dataclasses.replace(speed_of("fp32", cpu), channels_last=channels_last,
                                precision="bf16-mixed" if bf16 else "32-true")  # fmt: skip
    data = synthetic(4 * batch, size, cpu)
    return 1000 * batch / plain_loop(cfg, speed, data, cpu, args.warmup, args.steps)


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="bn_x5")
    p.add_argument("--widths", default="1.0,0.5,0.25")
    p.add_argument("--image-size", type=int, default=64)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--warmup", type=int, default=3)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    widths = [float(w) for w in args.widths.split(",")]
    table = {}
    print(f"{args.model}, {args.image_size} px, batch {args.batch}, {args.threads} thread(s): ms per step")
    print("| width | " + " | ".join(v[0] for v in VARIANTS) + " |\n|---|" + "---|" * len(VARIANTS))
    for w in widths:
        row = [
            step_ms(args.model, w, args.image_size, args.batch, cl, bf16, args) for _, cl, bf16 in VARIANTS
        ]
        table[w] = dict(zip((v[0] for v in VARIANTS), row))
        print(f"| {w} | " + " | ".join(f"{ms:.0f}" for ms in row) + " |", flush=True)
    result = dict(vars(args), ms_per_step=table, load_average=os.getloadavg(), hardware=hardware())
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
