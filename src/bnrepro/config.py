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
    aux_loss_weight: float = 0.3  # weight of each auxiliary head's loss, when the net has them (GoogLeNet)


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
    # false: weight decay on conv/fc weights only, not on biases and BN's gamma/beta (timm's
    # param_groups_weight_decay; Caffe's GoogLeNet also exempts biases). true: on every parameter.
    decay_all_params: bool = False


@dataclass
class LRScheduleConfig:
    """LR decay, counted in examples seen so it does not depend on batch size or device count."""

    name: str = "constant"  # constant | exponential
    gamma: float = 0.96  # exponential: multiply the LR by gamma ...
    decay_every_epochs: float = 8.0  # ... every this many epochs (GoogLeNet: x0.96 every 8 epochs) ...
    speedup: float = 1.0  # ... divided by this (Sec. 4.2.1: the BN variants decay 6x faster)
    epoch_examples: int = "${data.num_train_examples}"  # type: ignore[assignment]  # one epoch, in examples
    epoch_scale: float = "${loop.epoch_scale}"  # type: ignore[assignment]  # see LoopConfig.epoch_scale
    staircase: bool = True  # decay in steps (GoogLeNet), not continuously


@dataclass
class LRMultiplierConfig:
    factor: float = 1.0  # Sec. 4.2.1 "increase the learning rate": x1, x5, x30


@dataclass
class DataConfig:
    name: str = MISSING  # mnist | fashion_mnist | imagenet | imagenette | synthetic
    root: str = "data"  # where the data set's folders live (or are downloaded to)
    download: bool = True  # try torchvision's download when no local copy is found (not ImageNet)
    # Extra read-only folders searched for the gzipped IDX files (Debian's dataset-fashion-mnist).
    system_dirs: list[str] = field(default_factory=list)
    num_classes: int = 10
    # Examples in one epoch of the training set: the unit of lr_schedule.decay_every_epochs; for
    # data=synthetic also how many examples are made.
    num_train_examples: int = 60000
    # data=synthetic: how many validation examples are made; mnist / fashion_mnist: the first this many
    # test images are evaluated (10000 = all; fewer only for quick checks)
    num_val_examples: int = 10000
    batch_size: int = 60  # per device; global batch = devices x batch_size
    eval_batch_size: int = 10000
    binarize_threshold: float | None = 0.5  # Sec. 4.1 "binary input": pixel/255 > threshold; null = grey
    device_resident: bool = True  # keep the whole set as tensors on the training device (MNIST, synthetic)
    # mnist / fashion_mnist: false = the 28x28 one-channel tensors as stored (the MLPs of Sec. 4.1);
    # true = images for an ImageNet network: resized to image_size, grey replicated to 3 channels,
    # normalised by mean/std, made on the device per batch (experiment=fashion_figure3).
    to_images: bool = False
    # Image data sets (imagenet, imagenette, synthetic).
    variant: str | None = None  # imagenette: full | 320px | 160px (torchvision's Imagenette sizes)
    image_size: int = 224  # training crop and evaluation centre crop
    resize_size: int = 256  # evaluation: shorter side resized to this, then the centre crop
    mean: list[float] = field(default_factory=lambda: [0.485, 0.456, 0.406])  # timm's ImageNet mean/std
    std: list[float] = field(default_factory=lambda: [0.229, 0.224, 0.225])
    # Sec. 4.2.1 "shuffle training examples more thoroughly". thorough: a fresh permutation of the whole
    # set every epoch. shard: one fixed permutation cut into shards of shard_size examples, shuffled
    # only within each shard every epoch -- the same examples keep meeting in mini-batches.
    shuffle: str = "thorough"
    shard_size: int = 1024
    num_workers: int = 8  # decoding processes per device
    pin_memory: bool = True
    persistent_workers: bool = True  # keep workers between evaluation periods


@dataclass
class AugmentConfig:
    """Training-time distortions of image data (Sec. 4.2.1); evaluation is always resize + centre crop."""

    name: str = "none"  # none | full | reduced
    crop_scale: list[float] = field(default_factory=lambda: [0.08, 1.0])  # random-resized crop: area range
    crop_ratio: list[float] = field(default_factory=lambda: [0.75, 4 / 3])  # ... and aspect ratio range
    hflip: bool = True
    color_jitter: float = 0.0  # brightness = contrast = saturation jitter strength (photometric)


@dataclass
class TrainerConfig:
    """The subset of lightning.Trainer arguments the project sets; passed through as keywords."""

    accelerator: str = "auto"
    devices: Any = 1  # int, "auto" or a list of device ids
    num_nodes: int = 1
    strategy: str = "auto"
    # auto: bf16-mixed on a CUDA device that supports it (the fastest correct choice for the ImageNet
    # nets: BN's statistics stay float32 under autocast), 32-true elsewhere. Or any Lightning precision.
    precision: str = "auto"
    # Training length in optimizer steps (one step = one mini-batch on every device). null: derived from
    # loop.max_examples and the global batch. Set, it wins over loop.max_examples.
    max_steps: int | None = None
    deterministic: bool = False
    benchmark: bool | None = None  # cudnn.benchmark; null = auto: on for CUDA (fixed input shapes)
    enable_progress_bar: bool = True
    enable_model_summary: bool = False
    enable_checkpointing: bool = True
    num_sanity_val_steps: int = 0
    use_distributed_sampler: bool = False  # the project's loaders shard by rank themselves
    sync_batchnorm: bool = False  # False = per-device batch statistics, as the paper's per-batch BN
    # Fast paths; not Lightning arguments (run.py applies them). null = auto: the fastest correct choice
    # for the device, recorded in summary.json ("speed"). See README "Speed".
    channels_last: bool | None = None  # NHWC weights and inputs (tensor cores); auto: on for CUDA
    fused_optimizer: bool | None = None  # one fused kernel for the optimizer step; auto: on for CUDA
    compile: bool | None = None  # torch.compile the network; auto: on for CUDA unless cuda_graphs
    compile_mode: str = "default"  # default | reduce-overhead | max-autotune (torch.compile's modes)
    # Capture the K optimizer steps of a Lightning batch (loop.steps_per_batch) as one CUDA graph and
    # replay it: the MNIST nets are launch-bound. auto: on for one CUDA device, float32, data held on
    # the device; true: required (an error where it cannot be used); false: off.
    cuda_graphs: bool | None = None


# TrainerConfig keys that are not lightning.Trainer arguments.
SPEED_KEYS = ("channels_last", "fused_optimizer", "compile", "compile_mode", "cuda_graphs")


@dataclass
class LoopConfig:
    """Training length and evaluation period: in optimizer steps, in examples seen, or in epochs.

    Steps (trainer.max_steps, eval_every_steps) win over examples, examples over epochs. Examples and
    epochs (x data.num_train_examples) do not change when the device count changes the global batch,
    and epochs give a proxy data set (data=imagenette) the same schedule relative to its size.
    """

    eval_every_steps: int | None = None
    eval_every_examples: int | None = None
    eval_every_epochs: float | None = None
    max_examples: int | None = None  # used when trainer.max_steps is null
    max_epochs: float | None = None  # used when trainer.max_steps and loop.max_examples are null
    # Multiplies every length given in epochs (max_epochs, eval_every_epochs and the LR decay interval
    # lr_schedule.decay_every_epochs). 1 = the paper's schedule; a proxy data set runs it compressed
    # (experiment=fashion_figure3: 0.01, Inception's 774 epochs become 7.7 and its LR decays every 0.08).
    epoch_scale: float = 1.0
    # Optimizer steps run inside one Lightning batch (manual optimization). Lightning's per-batch work is
    # of the order of a whole MLP step (measured: 1.56x a plain loop at 1 step per batch, 0.98x at 100),
    # so small nets amortise it over several steps. A step still means one SGD update on one mini-batch.
    # Reduced automatically to divide eval_every_steps; forced to 1 under DDP, whose
    # gradient all-reduce expects one backward per forward.
    steps_per_batch: int = 1


@dataclass
class PercentilesConfig:
    enabled: bool = False  # on for the MNIST nets (Figure 1b,c)
    module: str = MISSING  # dotted path of the activation module whose *input* is tracked
    unit: int = 0  # the fixed "typical" unit plotted in Figure 1(b,c)
    quantiles: list[float] = field(default_factory=lambda: [0.15, 0.5, 0.85])


@dataclass
class PopulationStatsConfig:
    """Alg. 2: recompute BN's mean/variance over training batches before the final evaluation."""

    enabled: bool = True  # no effect on nets without BN
    num_batches: int = 100  # training mini-batches (per device) averaged; CHOICE, the paper gives none


@dataclass
class DivergenceConfig:
    """A non-finite training loss stops the run on every rank: summary.json says diverged, exit status 3."""

    check_every_n_batches: int = 1  # Lightning batches between checks (one check costs a host sync)
    inject_nan_at_step: int | None = None  # testing aid: poison the weights so this step's loss is NaN


@dataclass
class PreemptionConfig:
    """SIGTERM (a scheduler's kill, `scancel`) and SIGUSR1 (SLURM's warning before a time limit, with
    `#SBATCH --signal=SIGUSR1@90`) save checkpoints/last.ckpt at the end of the current step and exit
    cleanly; under SLURM, SIGUSR1 also requeues the job, which resumes from there."""

    requeue: bool = True  # under SLURM, `scontrol requeue $SLURM_JOB_ID` after saving on SIGUSR1
    stop_at_step: int | None = (
        None  # testing aid: behave as if SIGTERM arrived at this step (or the batch holding it)
    )


@dataclass
class CallbacksConfig:
    percentiles: PercentilesConfig = field(default_factory=PercentilesConfig)
    population_stats: PopulationStatsConfig = field(default_factory=PopulationStatsConfig)
    divergence: DivergenceConfig = field(default_factory=DivergenceConfig)
    preemption: PreemptionConfig = field(default_factory=PreemptionConfig)


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
    lr_schedule: LRScheduleConfig = field(default_factory=LRScheduleConfig)
    data: DataConfig = field(default_factory=DataConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
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
    # Relaunching a command continues its run folder. auto: from checkpoints/last.ckpt when the folder
    # holds an unfinished run, else a fresh start; true: resuming is required (an error if there is
    # nothing to resume); false: a fresh start only (an error if the folder holds a partial run);
    # or a checkpoint's path.
    resume: str = "auto"
    # A truncated or corrupt checkpoint is an error naming it; true: set it aside (<name>.corrupt) and
    # resume from the previous good one (best.ckpt) instead.
    resume_fallback: bool = False


CHOICES = {
    "model.norm": ("batchnorm", "none"),
    "activation.name": ("sigmoid", "relu"),
    "optimizer.name": ("sgd", "adamw"),
    "optimizer.lr_scaling": ("linear", "none"),
    "lr_schedule.name": ("constant", "exponential"),
    "data.name": ("mnist", "fashion_mnist", "imagenet", "imagenette", "synthetic"),
    "data.shuffle": ("thorough", "shard"),
    "augment.name": ("none", "full", "reduced"),
    "logger.wandb.mode": ("auto", "online", "offline", "disabled"),
    "trainer.compile_mode": ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"),
}
POSITIVE = (
    "optimizer.lr",
    "optimizer.reference_batch",
    "lr_schedule.gamma",
    "lr_schedule.decay_every_epochs",
    "lr_schedule.speedup",
    "lr_schedule.epoch_examples",
    "data.num_classes",
    "data.num_train_examples",
    "data.num_val_examples",
    "data.batch_size",
    "data.eval_batch_size",
    "data.image_size",
    "data.resize_size",
    "data.shard_size",
    "loop.steps_per_batch",
    "loop.epoch_scale",
    "callbacks.population_stats.num_batches",
    "callbacks.divergence.check_every_n_batches",
)
# (steps key, examples key, epochs key): each needs one of its keys set; the first set one wins.
LENGTHS = (
    ("trainer.max_steps", "loop.max_examples", "loop.max_epochs"),
    ("loop.eval_every_steps", "loop.eval_every_examples", "loop.eval_every_epochs"),
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
    for keys in LENGTHS:
        values = {k: OmegaConf.select(cfg, k) for k in keys}
        if all(v is None for v in values.values()):
            raise ConfigError(f"set {keys[0]}, {keys[1]} or {keys[2]}")
        for k, v in values.items():
            if v is not None and not v > 0:
                raise ConfigError(f"{k}={v!r} must be positive")
    steps, every = cfg.trainer.max_steps, cfg.loop.eval_every_steps
    if steps is not None and every is not None and steps % every:
        raise ConfigError(
            f"trainer.max_steps={steps} must be a multiple of loop.eval_every_steps={every}, "
            f"so that the last step is evaluated"
        )
    if cfg.optimizer.momentum < 0 or cfg.optimizer.weight_decay < 0:
        raise ConfigError("optimizer.momentum and optimizer.weight_decay must be >= 0")
    q = list(cfg.callbacks.percentiles.quantiles)
    if not all(0.0 <= x <= 1.0 for x in q):
        raise ConfigError(f"callbacks.percentiles.quantiles={q} must lie in [0, 1]")
    scale = list(cfg.augment.crop_scale)
    if len(scale) != 2 or not 0 < scale[0] <= scale[1] <= 1:
        raise ConfigError(f"augment.crop_scale={scale} must be [low, high] with 0 < low <= high <= 1")


def resolve_loop(cfg, global_batch: int) -> tuple[int, int]:
    """(max_steps, eval_every_steps) for this global batch; examples and epochs round to whole steps.

    The number of evaluations is ceil(length / period), and training runs exactly that many evaluation
    periods, so the last step is always evaluated.
    """
    loop, epoch = cfg.loop, cfg.data.num_train_examples * cfg.loop.epoch_scale
    if global_batch > cfg.data.num_train_examples:
        raise ConfigError(
            f"the global batch {global_batch} (data.batch_size x devices) is larger than the training set "
            f"(data.num_train_examples={cfg.data.num_train_examples}); lower data.batch_size"
        )

    def examples(n_examples, n_epochs):
        return n_examples if n_examples is not None else round(n_epochs * epoch)

    every = loop.eval_every_steps or max(
        1, round(examples(loop.eval_every_examples, loop.eval_every_epochs) / global_batch)
    )
    if cfg.trainer.max_steps is not None:
        steps = cfg.trainer.max_steps
        if steps % every:
            raise ConfigError(
                f"trainer.max_steps={steps} is not a multiple of the evaluation period ({every} steps at "
                f"global batch {global_batch}); set loop.eval_every_steps to a divisor of it"
            )
        return steps, every
    total = examples(loop.max_examples, loop.max_epochs)
    return every * -(-total // (every * global_batch)), every


def flatten(d: dict, prefix: str = "") -> dict:
    """Nested config dict -> {dotted.key: value}."""
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


# Keys that do not change what a run computes: how it is launched, resumed, shown and mirrored, and
# where the data set is read from (a moved data set does not stop a run from resuming).
NOT_COMPUTED = ("overwrite", "resume", "resume_fallback", "trainer.enable_progress_bar", "logger.",
                # how the step runs, not what it computes (a crashed compile may resume without it)
                "trainer.benchmark", *(f"trainer.{k}" for k in SPEED_KEYS),
                "callbacks.preemption.", "data.root", "data.system_dirs", "data.download",
                "data.num_workers", "data.pin_memory", "data.persistent_workers")  # fmt: skip


# Lightning's short names of its precisions, as Lightning itself rewrites them.
PRECISION_ALIASES = {"32": "32-true", "16": "16-mixed", "bf16": "bf16-mixed", "64": "64-true"}


def canonical_precision(value):
    return PRECISION_ALIASES.get(str(value), value)


def config_differences(stored: dict, current: dict) -> list[str]:
    """'key: stored there, current now' for every computed key that differs (flat dotted dicts).

    A key the stored config lacks was added to the schema later: compared at the schema's default.
    """
    from omegaconf import OmegaConf

    defaults = OmegaConf.structured(TrainConfig)
    added = {k: OmegaConf.select(defaults, k, throw_on_missing=False) for k in set(current) - set(stored)}
    stored = {**added, **stored}
    keys = sorted(k for k in set(stored) | set(current) if not k.startswith(NOT_COMPUTED))

    def differs(k) -> bool:
        a, b = stored.get(k), current.get(k)
        if k == "trainer.precision":
            # "auto" (a planned job) matches what it became; run.py compares the resolved value.
            return "auto" not in (a, b) and canonical_precision(a) != canonical_precision(b)
        return a != b

    return [f"{k}: {stored.get(k)!r} there, {current.get(k)!r} now" for k in keys if differs(k)]


def differences_from_run(run_dir, current: dict) -> list[str]:
    """config_differences between the config.yaml a run folder holds and `current` (flat dotted keys)."""
    import yaml

    return config_differences(flatten(yaml.safe_load((run_dir / "config.yaml").read_text())), current)


def tasks_per_node(devices) -> int:
    """`${tasks_per_node:${trainer.devices}}` in conf/hydra/launcher/slurm.yaml: one SLURM task per
    device, so the device count must be a number (resolved when the sweep is submitted)."""
    if isinstance(devices, int) and devices > 0:
        return devices
    if isinstance(devices, str) and devices.isdigit() and int(devices) > 0:
        return int(devices)
    raise ConfigError(
        f"hydra/launcher=slurm starts one SLURM task per GPU and needs trainer.devices=<GPUs per node> "
        f"(a number), not {devices!r}; e.g. hydra/launcher=slurm trainer.devices=8"
    )


def register() -> None:
    from omegaconf import OmegaConf

    ConfigStore.instance().store(name="train_schema", node=TrainConfig)
    if not OmegaConf.has_resolver("tasks_per_node"):
        OmegaConf.register_new_resolver("tasks_per_node", tasks_per_node)
        OmegaConf.register_new_resolver("cpus_per_task", lambda workers: max(1, int(workers)))


register()
