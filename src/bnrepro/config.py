"""The configuration schema: Hydra structured configs registered in the ConfigStore.

conf/train.yaml starts its defaults list with `train_schema` (the TrainConfig below), so every YAML
file of every group is merged into these dataclasses. A misspelled key, a value of the wrong type or
an unknown choice therefore fails at composition time -- before any data is read or any DDP process
is spawned -- with OmegaConf's message naming the full key (e.g. `Key 'lrr' not in 'OptimizerConfig'
... full_key: optimizer.lrr`). Checks that a type cannot express (allowed strings, positive numbers)
live in `validate()` below and run right after composition.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING


class ConfigError(ValueError):
    """A configuration value that composes but cannot be run; the message names the key."""


@dataclass
class ModelConfig:
    name: str = MISSING  # the variant's name, used in run names and tables
    arch: str = MISSING  # a timm model name registered by bnrepro.models (e.g. mnist_mlp)
    norm: str = "batchnorm"  # batchnorm | none -- BN on or off for the whole net (Sec. 3)
    # Keyword arguments of the architecture (layer sizes, init); checked by building the net at start-up.
    kwargs: dict[str, Any] = field(default_factory=dict)


@dataclass
class ActivationConfig:
    name: str = MISSING  # timm activation name: sigmoid | relu


@dataclass
class OptimizerConfig:
    name: str = "sgd"  # sgd | adamw
    lr: float = MISSING  # base learning rate at global batch `reference_batch`, before lr_multiplier
    momentum: float = 0.0
    nesterov: bool = False
    weight_decay: float = 0.0
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])  # adamw only
    reference_batch: int = 32  # global batch at which `lr` is meant (PAPER.md Sec. 4: 32)
    lr_scaling: str = "linear"  # linear | none: scale lr by global_batch / reference_batch


@dataclass
class LRMultiplierConfig:
    factor: float = 1.0  # Sec. 4.2.1 "increase the learning rate": x1, x5, x30


@dataclass
class DataConfig:
    name: str = MISSING  # mnist | fashion_mnist
    root: str = "data"  # where torchvision's dataset folders live (or are downloaded to)
    download: bool = True  # try torchvision's download when no local copy is found
    # Extra read-only folders searched for the gzipped IDX files (Debian's dataset-fashion-mnist).
    system_dirs: list[str] = field(default_factory=list)
    batch_size: int = 60  # per device; global batch = devices x batch_size
    eval_batch_size: int = 10000
    binarize_threshold: float | None = 0.5  # Sec. 4.1 "binary input": pixel/255 > threshold; null = grey
    device_resident: bool = True  # keep the whole set as tensors on the training device


@dataclass
class TrainerConfig:
    """The subset of lightning.Trainer arguments the project sets; passed through as keywords."""

    accelerator: str = "auto"
    devices: Any = 1  # int, "auto" or a list of device ids
    num_nodes: int = 1
    strategy: str = "auto"
    precision: str = "32-true"
    max_steps: int = MISSING  # optimizer steps (one step = one mini-batch per device)
    deterministic: bool = False
    benchmark: bool | None = None
    enable_progress_bar: bool = True
    enable_model_summary: bool = False
    enable_checkpointing: bool = True
    num_sanity_val_steps: int = 0
    use_distributed_sampler: bool = False  # the project's loaders shard by rank themselves
    sync_batchnorm: bool = False  # False = per-device batch statistics, as the paper's per-batch BN


@dataclass
class LoopConfig:
    eval_every_steps: int = 500  # evaluate on the test/val set every this many optimizer steps
    # Optimizer steps run inside one Lightning batch (manual optimization). Lightning's per-batch work is
    # of the order of a whole MLP step (measured: 1.56x a plain loop at 1 step per batch, 0.98x at 100),
    # so small nets amortise it over several steps. A step still means one SGD update on one mini-batch.
    # Reduced automatically to divide eval_every_steps; forced to 1 under DDP, whose
    # gradient all-reduce expects one backward per forward.
    steps_per_batch: int = 1


@dataclass
class PercentilesConfig:
    enabled: bool = True
    module: str = MISSING  # dotted path of the activation module whose *input* is tracked
    unit: int = 0  # the fixed "typical" unit plotted in Figure 1(b,c)
    quantiles: list[float] = field(default_factory=lambda: [0.15, 0.5, 0.85])


@dataclass
class CallbacksConfig:
    percentiles: PercentilesConfig = field(default_factory=PercentilesConfig)


@dataclass
class WandbConfig:
    enabled: bool = False
    # auto: online when an API key is configured (WANDB_API_KEY or ~/.netrc), else offline.
    # Chosen before wandb.init, so wandb never prompts.
    mode: str = "auto"  # auto | online | offline | disabled
    project: str = "bn-inception-repro"
    entity: str | None = None
    group: str | None = None
    tags: list[str] = field(default_factory=list)


@dataclass
class LoggerConfig:
    # The run folder's metrics.csv is always written; these are mirrors of it.
    wandb: WandbConfig = field(default_factory=WandbConfig)


@dataclass
class TrainConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    activation: ActivationConfig = field(default_factory=ActivationConfig)
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    lr_multiplier: LRMultiplierConfig = field(default_factory=LRMultiplierConfig)
    data: DataConfig = field(default_factory=DataConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    loop: LoopConfig = field(default_factory=LoopConfig)
    callbacks: CallbacksConfig = field(default_factory=CallbacksConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    seed: int = 0
    task: str = "train"  # first folder level under runs/, e.g. the experiment's name
    # Stable name of the run's folder: relaunching the same command targets the same folder.
    run_name: str = "${model.name}-${data.name}-seed${seed}"
    runs_root: str = "runs"
    overwrite: bool = False  # allow reusing a run folder that already holds a finished run


CHOICES = {
    "model.norm": ("batchnorm", "none"),
    "activation.name": ("sigmoid", "relu"),
    "optimizer.name": ("sgd", "adamw"),
    "optimizer.lr_scaling": ("linear", "none"),
    "data.name": ("mnist", "fashion_mnist"),
    "logger.wandb.mode": ("auto", "online", "offline", "disabled"),
}
POSITIVE = (
    "optimizer.lr",
    "optimizer.reference_batch",
    "data.batch_size",
    "data.eval_batch_size",
    "trainer.max_steps",
    "loop.eval_every_steps",
    "loop.steps_per_batch",
)


def validate(cfg) -> None:
    """Checks the schema's types cannot express; raises ConfigError naming the key."""
    from omegaconf import OmegaConf

    for key, allowed in CHOICES.items():
        value = OmegaConf.select(cfg, key)
        if value not in allowed:
            raise ConfigError(f"{key}={value!r} is not one of {', '.join(allowed)}")
    for key in POSITIVE:
        value = OmegaConf.select(cfg, key)
        if not value > 0:
            raise ConfigError(f"{key}={value!r} must be positive")
    if cfg.trainer.max_steps % cfg.loop.eval_every_steps:
        raise ConfigError(
            f"trainer.max_steps={cfg.trainer.max_steps} must be a multiple of loop.eval_every_steps="
            f"{cfg.loop.eval_every_steps}, so that the last step is evaluated"
        )
    if cfg.optimizer.momentum < 0 or cfg.optimizer.weight_decay < 0:
        raise ConfigError("optimizer.momentum and optimizer.weight_decay must be >= 0")
    q = list(cfg.callbacks.percentiles.quantiles)
    if not all(0.0 <= x <= 1.0 for x in q):
        raise ConfigError(f"callbacks.percentiles.quantiles={q} must lie in [0, 1]")


def register() -> None:
    ConfigStore.instance().store(name="train_schema", node=TrainConfig)


register()
