"""The configuration schema: Hydra structured configs, registered in the ConfigStore by `register()`.

Each component of a run is a node with a `_target_` that `hydra.utils.instantiate` builds (data module,
network, optimizer as a `_partial_`, LR schedule, callbacks, loggers). A group with several kinds of
component (data, optimizer, lr_schedule) has one schema per kind, extending the group's base schema and
registered with @schema; its YAML files start with `defaults: [<kind>_schema]` (Hydra's "config groups
with a schema" pattern). A data module's schema sits beside its class (data/mnist.py, ...), so a new
data set is one file there plus one YAML.
So a misspelled key, a wrong type or an unknown choice fails at composition -- before any data is read
or a DDP process is spawned -- with OmegaConf's message naming the key (e.g. `Key 'lrr' not in
'SGDConfig' ... full_key: optimizer.lrr`). Checks a type cannot express live in config/checks.py.

Who owns a default (docs/design.md, "Who owns which default"): a value that is the same for every file
of a group lives here, in the group's schema; a value that depends on the choice (MNIST's 60 examples
per batch, ImageNet's 32) lives in that choice's YAML and is MISSING here. Never both: a test
(tests/test_config.py) fails when a YAML repeats a schema default. The components' constructors have
no defaults for what the config passes them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING


def schema(group: str, name: str):
    """Class decorator: registers a config dataclass in Hydra's ConfigStore as <group>/<name>, the name a
    YAML file of that group puts first in its defaults list (e.g. `defaults: [sgd_schema]`)."""

    def register(cls):
        ConfigStore.instance().store(group=group, name=name, node=cls)
        return cls

    return register


# --- the network (model group: one file per paper variant, package _global_) -------------------------


@dataclass
class ModelConfig:
    name: str = MISSING  # the variant's name, used in run names and tables
    # The network: `_target_: timm.create_model` with `model_name` (bn_inception, mnist_mlp) and that
    # architecture's own arguments (norm, act_layer, sizes, init). Free-form because each architecture
    # takes other arguments; checked by building the net at start-up (an unknown argument is refused
    # there, naming model.net).
    net: dict[str, Any] = field(default_factory=dict)
    aux_loss_weight: float = 0.3  # weight of each auxiliary head's loss, when the net has them (GoogLeNet)
    # false: weight decay on conv/fc weights only, not on biases and BN's gamma/beta (timm's
    # param_groups_weight_decay; Caffe's GoogLeNet also exempts biases). true: on every parameter.
    decay_all_params: bool = False


@dataclass
class ActivationConfig:
    name: str = MISSING  # a timm activation name (sigmoid | relu), passed to the net as act_layer


# --- the optimizer (a torch.optim class, built as a partial: the module adds params and the scaled LR) --


@dataclass
class OptimizerConfig:
    _target_: str = MISSING
    _partial_: bool = True  # the LightningModule calls it with the parameter groups and the scaled LR
    lr: float = (
        MISSING  # base learning rate at global batch lr_scaling.reference_batch (lr_multiplier sets it)
    )
    weight_decay: float = 0.0


@schema("optimizer", "sgd_schema")
@dataclass
class SGDConfig(OptimizerConfig):
    _target_: str = "torch.optim.SGD"
    momentum: float = 0.0
    nesterov: bool = False


@schema("optimizer", "adamw_schema")
@dataclass
class AdamWConfig(OptimizerConfig):
    _target_: str = "torch.optim.AdamW"
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])


@dataclass
class LRScalingConfig:
    """How `optimizer.lr` follows the global batch (timm's lr_base / lr_base_size / lr_base_scale)."""

    reference_batch: int = 32  # global batch at which optimizer.lr is meant (docs/paper.md Sec. 4: 32)
    rule: str = "linear"  # linear: lr x global_batch / reference_batch | none: lr as given


@dataclass
class LRMultiplierConfig:
    """The ImageNet variants' initial LR: `base` x `factor`, written into optimizer.lr by the group."""

    factor: float = MISSING  # Sec. 4.2.1 "increase the learning rate": x1, x5, x30 (labels the run)
    # Inception's initial LR at global batch lr_scaling.reference_batch (Sec. 4.2.1: 0.0015, GoogLeNet's
    # tuned recipe). A proxy data set sets the base LR tuned for its own Inception run (fashion_figure3).
    base: float = 0.0015


# --- the LR schedule (bnrepro.lit.schedules: a factor of the initial LR per example seen) -------------


@dataclass
class LRScheduleConfig:
    _target_: str = MISSING


@schema("lr_schedule", "constant_schema")
@dataclass
class ConstantLRConfig(LRScheduleConfig):
    _target_: str = "bnrepro.lit.schedules.Constant"


@schema("lr_schedule", "exponential_schema")
@dataclass
class ExponentialLRConfig(LRScheduleConfig):
    """Decay counted in examples seen, so it does not depend on batch size or device count."""

    _target_: str = "bnrepro.lit.schedules.ExponentialDecay"
    gamma: float = MISSING  # multiply the LR by gamma ...
    decay_every_epochs: float = MISSING  # ... every this many epochs ...
    speedup: float = 1.0  # ... divided by this (Sec. 4.2.1: the BN variants decay 6x faster)
    epoch_examples: int = "${data.num_train_examples}"  # type: ignore[assignment]  # one epoch, in examples
    epoch_scale: float = "${loop.epoch_scale}"  # type: ignore[assignment]  # see LoopConfig.epoch_scale
    staircase: bool = True  # decay in steps (GoogLeNet), not continuously


# --- data: the base of every data module's schema; each kind's schema sits beside its class in data/ ----


@dataclass
class DataConfig:
    """What every data module takes (data/device_loader.py StepStreamDataModule) and the run reads; the
    run adds its `seed` (the data order's) when it builds the module."""

    _target_: str = MISSING
    name: str = MISSING  # the data set's name in run names, tables and summary.json
    num_classes: int = MISSING
    # Examples in one epoch of the training set: the unit of lengths in epochs and of LR decay.
    num_train_examples: int = MISSING
    batch_size: int = MISSING  # per device; global batch = devices x batch_size
    eval_batch_size: int = MISSING
    # Sec. 4.2.1 "shuffle training examples more thoroughly". thorough: a fresh permutation of the whole
    # set every epoch. shard: one fixed permutation cut into shards of shard_size examples, each read in
    # its fixed order, the shards visited in a new order every epoch -- the same mini-batches recur (the
    # paper's baseline had no within-shard shuffling, docs/paper.md Sec. 4).
    shuffle: str = "thorough"
    shard_size: int = 1024


@dataclass
class AugmentConfig:
    """Training-time distortions of image data (Sec. 4.2.1); evaluation is always resize + centre crop."""

    name: str = MISSING  # none | full | reduced: labels the choice
    crop_scale: list[float] = field(default_factory=lambda: [0.08, 1.0])  # random-resized crop: area range
    crop_ratio: list[float] = field(default_factory=lambda: [0.75, 4 / 3])  # ... and aspect ratio range
    hflip: bool = True
    color_jitter: float = 0.0  # brightness = contrast = saturation jitter strength (photometric)


# --- Lightning's trainer, and the training loop's lengths --------------------------------------------


@dataclass
class TrainerConfig:
    """The subset of lightning.Trainer arguments the project sets; passed through as keywords."""

    accelerator: str = MISSING
    devices: Any = MISSING  # int, "auto" or a list of device ids
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
    num_sanity_val_steps: int = 0
    # Fixed by the project; listed so that changing them gets a message (config/checks.py), not a crash:
    # run folders resume from their checkpoints, and the project's samplers shard by rank themselves.
    enable_checkpointing: bool = True
    use_distributed_sampler: bool = False
    sync_batchnorm: bool = False  # False = per-device batch statistics, as the paper's per-batch BN


@dataclass
class SpeedConfig:
    """The training step's fast paths, none a Lightning argument (speed.py resolves and applies them).
    null = auto: the fastest correct choice for the device, recorded in summary.json ("speed") and in
    config.yaml. See docs/benchmarks.md. (trainer.precision and trainer.benchmark are Lightning's own.)"""

    channels_last: bool | None = None  # NHWC weights and inputs (tensor cores); auto: on for CUDA
    fused_optimizer: bool | None = None  # one fused kernel for the optimizer step; auto: on for CUDA
    compile: bool | None = None  # torch.compile the network; auto: on for CUDA unless cuda_graphs
    compile_mode: str = "default"  # default | reduce-overhead | max-autotune (torch.compile's modes)
    # Capture the K optimizer steps of a Lightning batch (loop.steps_per_batch) as one CUDA graph and
    # replay it: the MNIST nets are launch-bound. auto: on for one CUDA device, float32, data held on
    # the device; true: required (an error where it cannot be used); false: off.
    cuda_graphs: bool | None = None
    # torch's intra-op threads in the training process. auto: 1 for a network without convolutions (the
    # MNIST MLPs: a 100-unit layer is too small to share between threads), else what Lightning would
    # choose: OMP_NUM_THREADS if set (`just reproduce` sets each parallel job's share of the cores), or
    # the cores shared by the node's DDP ranks.
    num_threads: int | None = None


# Where the fast paths were before they had a node of their own: an old override is refused naming the
# new key (entry.py), and an old run folder's config.yaml still resumes (config/resume.py).
MOVED_KEYS = {f"trainer.{k}": f"speed.{k}" for k in SpeedConfig.__dataclass_fields__}


@dataclass
class LoopConfig:
    """Training length and evaluation period: in optimizer steps, in examples seen, or in epochs.

    Steps (trainer.max_steps, eval_every_steps) win over examples, examples over epochs. Examples and
    epochs (x data.num_train_examples) do not change when the device count changes the global batch,
    and epochs give a proxy data set (data=imagenette) the same schedule relative to its size. The last
    step is always evaluated: a trainer.max_steps that is not a multiple of the period ends with a
    shorter period; a length in examples or epochs is rounded up to whole periods.
    """

    eval_every_steps: int | None = None
    eval_every_examples: int | None = None
    eval_every_epochs: float | None = None
    # Dense early evaluation, in steps (both or neither; null = off): also every `early_eval_every_steps`
    # steps up to step `early_eval_until_steps`, so that an early crossing of a target is measured
    # finely. The regular grid still runs from step 0: the evaluation steps are {N, 2N, ... <= M} and
    # {P, 2P, ...} (P the period above) and trainer.max_steps (config/loop.py).
    early_eval_every_steps: int | None = None
    early_eval_until_steps: int | None = None
    max_examples: int | None = None  # used when trainer.max_steps is null
    max_epochs: float | None = None  # used when trainer.max_steps and loop.max_examples are null
    # Multiplies every length given in epochs (max_epochs, eval_every_epochs and the LR decay interval
    # lr_schedule.decay_every_epochs). 1 = the paper's schedule; a proxy data set runs it compressed
    # (experiment=fashion_figure3: 0.01, Inception's 774 epochs become 7.7 and its LR decays every 0.08).
    epoch_scale: float = 1.0
    # Optimizer steps run inside one Lightning batch (lit/multistep.py). Lightning's per-batch work is of
    # the order of a whole MLP step (measured: 1.56x a plain loop at 1 step per batch), so small nets
    # amortise it over several steps. A step still means one SGD update on one mini-batch. Reduced
    # automatically to divide every evaluation period; 1 under DDP (whose gradient all-reduce expects one
    # backward per forward), with a gradient scaler (16-mixed) and for data read by workers.
    steps_per_batch: int = 1


# --- callbacks (each optional: null turns it off) ----------------------------------------------------


@dataclass
class PercentilesConfig:
    """Figure 1(b,c): percentiles of one unit's input to its activation over the test set."""

    _target_: str = "bnrepro.callbacks.percentiles.ActivationPercentiles"
    module: str = (
        MISSING  # dotted path of the activation module (in the LightningModule) whose input is tracked
    )
    unit: int = MISSING  # the fixed "typical" unit plotted in Figure 1(b,c)
    quantiles: list[float] = MISSING


@dataclass
class PopulationStatsConfig:
    """Alg. 2: recompute BN's mean/variance over training batches before the final evaluation, and
    optionally before every evaluation during training (callbacks/population.py)."""

    _target_: str = "bnrepro.callbacks.population.PopulationStatistics"
    num_batches: int = 100  # training mini-batches (per device) averaged; CHOICE, the paper gives none
    # What BN normalises with at each evaluation during training (docs/paper.md Sec. 1). moving: its
    # moving averages, as the paper monitors accuracy while training (Sec. 3.1). population: the
    # inference network of Alg. 2 -- population statistics recomputed over eval_bn_batches training
    # mini-batches (per device; the stream's first ones, the same every time) before each evaluation,
    # the moving averages restored after it, so training is unchanged to the bit.
    eval_bn: str = "moving"
    # CHOICE, the paper gives none: as many as the final Alg. 2 pass, which reads the same first batches,
    # so the last evaluation is of the network population.ckpt holds. Measured on the MNIST MLP
    # (docs/results.md, Figure 1): 100 batches put its percentiles within about 0.02 of a 1,000-batch
    # estimate, for 0.04 s of CPU per evaluation.
    eval_bn_batches: int = "${.num_batches}"  # type: ignore[assignment]


@dataclass
class DivergenceConfig:
    """A non-finite training loss stops the run on every rank: summary.json says diverged, exit status 3."""

    _target_: str = "bnrepro.callbacks.divergence.DivergenceStop"
    check_every_n_batches: int = 1  # Lightning batches between checks (one check costs a host sync)
    inject_nan_at_step: int | None = "${testing.inject_nan_at_step}"  # type: ignore[assignment]


@dataclass
class PreemptionConfig:
    """SIGTERM (a scheduler's kill, `scancel`) and SIGUSR1 (SLURM's warning before a time limit, with
    `#SBATCH --signal=SIGUSR1@90`) save checkpoints/last.ckpt at the end of the current step and exit
    cleanly; under SLURM, SIGUSR1 also requeues the job, which resumes from there."""

    _target_: str = "bnrepro.callbacks.preemption.Preemption"
    requeue: bool = True  # under SLURM, `scontrol requeue $SLURM_JOB_ID` after saving on SIGUSR1
    stop_at_step: int | None = "${testing.stop_at_step}"  # type: ignore[assignment]


@dataclass
class CallbacksConfig:
    """Optional callbacks. The run folder's own (summary.json, checkpoints, RNG state, unreadable-image
    stop) are always on: run.py adds them."""

    # In this order in the trainer, before the checkpoints (run.py): a diverged batch is never saved.
    divergence: DivergenceConfig | None = field(default_factory=DivergenceConfig)
    preemption: PreemptionConfig | None = field(default_factory=PreemptionConfig)
    population_stats: PopulationStatsConfig | None = field(default_factory=PopulationStatsConfig)
    percentiles: PercentilesConfig | None = None  # on for the MNIST nets (conf/model/mnist_mlp.yaml)


@dataclass
class WandbConfig:
    _target_: str = "bnrepro.loggers.wandb_logger"
    # auto: online when an API key is configured (WANDB_API_KEY or ~/.netrc), else offline.
    # Chosen before wandb.init, so wandb never prompts.
    mode: str = "auto"  # auto | online | offline | disabled
    project: str = "bn-inception-repro"
    entity: str | None = None
    group: str | None = None
    tags: list[str] = field(default_factory=list)


@dataclass
class LoggerConfig:
    # The run folder's metrics.csv is always written; these are mirrors of it (null: off).
    wandb: WandbConfig | None = None


@dataclass
class TestingConfig:
    """Switches for the project's own tests (tests/): they fake a failure at a chosen step."""

    inject_nan_at_step: int | None = None  # poison the weights so this step's loss is NaN (divergence)
    stop_at_step: int | None = None  # behave as if SIGTERM arrived at this step (preemption, resume)


@dataclass
class TrainConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    activation: ActivationConfig = field(default_factory=ActivationConfig)
    optimizer: OptimizerConfig = MISSING
    lr_scaling: LRScalingConfig = field(default_factory=LRScalingConfig)
    lr_multiplier: LRMultiplierConfig = field(default_factory=LRMultiplierConfig)
    lr_schedule: LRScheduleConfig = MISSING
    data: DataConfig = MISSING
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    speed: SpeedConfig = field(default_factory=SpeedConfig)
    loop: LoopConfig = field(default_factory=LoopConfig)
    callbacks: CallbacksConfig = field(default_factory=CallbacksConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    testing: TestingConfig = field(default_factory=TestingConfig)
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
