"""The training step's fast paths, resolved from the `speed` config node (null = auto), and the two
Lightning arguments that are about speed only (trainer.precision, trainer.benchmark: "auto" / null).
The one module that reads them.

auto picks the fastest choice that trains the same model: on a CUDA device bf16 autocast for the
image networks (BN's statistics and the loss stay float32), channels_last (NHWC convolutions on tensor cores), cudnn
benchmark (every training batch has the same shape), a fused optimizer step, and torch.compile -- or,
for the launch-bound MNIST nets (float32, data on the device, one device), CUDA graphs instead of
compile. On the CPU everything is off: none of it helps there and some of it is CUDA-only.
The resolved values go into summary.json ("speed") and docs/benchmarks.md quotes what each
buys (`just bench`).
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import asdict, dataclass

import torch

from bnrepro.errors import ConfigError


def on_cuda(accelerator: str) -> bool:
    return accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available())


def is_convolutional(net: torch.nn.Module) -> bool:
    return any(isinstance(m, torch.nn.Conv2d) for m in net.modules())


def trainer_args(cfg, convolutional: bool = False) -> dict:
    """precision and benchmark for lightning.Trainer, "auto" resolved for the accelerator asked for and
    the network (`convolutional`: an image network, see is_convolutional)."""
    t, cuda = cfg.trainer, on_cuda(cfg.trainer.accelerator)
    precision = t.precision
    if precision == "auto" and cuda and any(w in t.strategy for w in ("fork", "notebook")):
        raise ConfigError(
            f"trainer.precision=auto checks the GPU's bf16 support, which starts CUDA before "
            f"trainer.strategy={t.strategy} forks its processes: set trainer.precision=bf16-mixed or 32-true"
        )
    if precision == "auto":
        # The MNIST MLPs stay float32: launch-bound, bf16 would buy nothing and would round the sigmoid
        # inputs Figure 1 plots; they get CUDA graphs instead.
        # Native bf16 only (Ampere and later): emulated on a V100 / T4 it would be slower than float32.
        native = cuda and torch.cuda.is_bf16_supported(including_emulation=False)
        precision = "bf16-mixed" if convolutional and native else "32-true"
    return {"precision": precision, "benchmark": cudnn_benchmark(t, cuda)}


def cudnn_benchmark(t, cuda: bool) -> bool:
    """trainer.benchmark, auto (null): on for CUDA (every batch has the same shape) unless deterministic."""
    return bool(t.benchmark if t.benchmark is not None else (cuda and not t.deterministic))


@dataclass
class Speed:
    precision: str
    cudnn_benchmark: bool
    channels_last: bool
    fused_optimizer: bool
    compile: bool
    compile_mode: str
    cuda_graphs: bool
    num_threads: int

    def asdict(self) -> dict:
        return asdict(self)

    def config_values(self) -> dict:
        """What this resolves "auto" to, as config.yaml stores it: {"trainer": {...}, "speed": {...}}."""
        d = self.asdict()
        trainer = {"precision": d.pop("precision"), "benchmark": d.pop("cudnn_benchmark")}
        return {"trainer": trainer, "speed": d}


def num_threads(s, convolutional: bool, processes: int = 1) -> int:
    """speed.num_threads, auto (null): 1 for a network without convolutions -- the MNIST MLPs, whose
    matrices (60 x 784 x 100 at most) are too small to share between threads: on the 2-core development
    machine, shared with other work, 10k steps of the BN MLP took 15 s on one thread and 81 s on two
    (docs/benchmarks.md). Else what Lightning would choose: the count OMP_NUM_THREADS sets (`just
    reproduce` sets each parallel job's share of the cores), or the cores shared by this node's
    `processes` (DDP ranks)."""
    if s.num_threads is not None:
        if s.num_threads < 1:
            raise ConfigError(f"speed.num_threads={s.num_threads}: expected at least 1 (or null: auto)")
        return s.num_threads
    if not convolutional:
        return 1
    if "OMP_NUM_THREADS" in os.environ:
        return torch.get_num_threads()
    return max(1, torch.get_num_threads() // processes)


def resolve_speed(cfg, *, cuda: bool, world_size: int, num_nodes: int, precision: str, data_on_device: bool,
                  convolutional: bool = True) -> Speed:  # fmt: skip
    """Every fast path decided for the devices the run will train on (`cuda`, `world_size` over
    `num_nodes`, Lightning's `precision` with "auto" resolved: trainer_args), data module
    (`data_on_device`: its holds_data_on_device) and network (`convolutional`: is_convolutional); refuses,
    naming the key, what cannot work here."""
    from hydra.utils import get_class

    t, s = cfg.trainer, cfg.speed
    if t.sync_batchnorm and world_size > 1 and not cuda:
        raise ConfigError(
            "trainer.sync_batchnorm=true needs CUDA devices (torch's SyncBatchNorm does not run on the CPU); "
            "on the CPU the BN statistics are per device (trainer.sync_batchnorm=false)"
        )
    graphs_blockers = [
        why
        for why, blocked in (
            ("a CUDA device", not cuda),
            ("one device (DDP all-reduces inside the step)", world_size > 1),
            ("data held on the device (data.device_resident, MNIST / synthetic)", not data_on_device),
            ("float32 or bf16-mixed (no gradient scaler)", precision not in ("32-true", "bf16-mixed")),
            ("speed.compile=false", s.compile is True),
            # AdamW's step refuses to be captured unless built capturable (its step counts are tensors).
            (
                "optimizer=sgd (torch.optim.SGD)",
                not issubclass(get_class(cfg.optimizer._target_), torch.optim.SGD),
            ),
        )
        if blocked
    ]
    if s.cuda_graphs is True and graphs_blockers:
        raise ConfigError(f"speed.cuda_graphs=true needs {', '.join(graphs_blockers)}")
    # auto: float32 only -- bf16 autocast's cache of cast weights would need care inside a graph.
    graphs = s.cuda_graphs if s.cuda_graphs is not None else not graphs_blockers and precision == "32-true"
    return Speed(
        precision=precision,
        cudnn_benchmark=cudnn_benchmark(t, cuda),
        channels_last=s.channels_last if s.channels_last is not None else cuda,
        fused_optimizer=s.fused_optimizer if s.fused_optimizer is not None else cuda,
        compile=s.compile if s.compile is not None else cuda and not graphs,
        compile_mode=s.compile_mode,
        cuda_graphs=bool(graphs),
        num_threads=num_threads(s, convolutional, world_size // num_nodes),
    )


def use_threads(n: int) -> None:
    """torch's intra-op threads, and OMP_NUM_THREADS: Lightning's CPU DDP set-up would otherwise choose
    its own count, and the ranks it starts inherit the variable."""
    torch.set_num_threads(n)
    os.environ["OMP_NUM_THREADS"] = str(n)


@contextlib.contextmanager
def threads_restored():
    """What use_threads changed, restored on exit (a run inside a longer process: tests, a multirun)."""
    threads, env = torch.get_num_threads(), os.environ.get("OMP_NUM_THREADS")
    try:
        yield
    finally:
        torch.set_num_threads(threads)
        if env is None:
            os.environ.pop("OMP_NUM_THREADS", None)
        else:
            os.environ["OMP_NUM_THREADS"] = env


def apply_to_net(net: torch.nn.Module, speed: Speed) -> torch.nn.Module:
    """channels_last weights and torch.compile, in place: the state_dict keys stay the network's own,
    so checkpoints load with or without compile."""
    if speed.channels_last:
        net.to(memory_format=torch.channels_last)  # only 4-D tensors change (conv weights)
    if speed.compile:
        net.compile(mode=None if speed.compile_mode == "default" else speed.compile_mode)
    return net
