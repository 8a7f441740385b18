"""Checks the schema's types cannot express, run right after composition; ConfigError names the key."""

from __future__ import annotations

import math

from omegaconf import OmegaConf

from bnrepro.config.appended import check_appended
from bnrepro.config.errors import ConfigError

CHOICES = {
    "lr_scaling.rule": ("linear", "none"),
    "data.shuffle": ("thorough", "shard"),
    "logger.wandb.mode": ("auto", "online", "offline", "disabled"),
    "speed.compile_mode": ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"),
    "callbacks.population_stats.eval_bn": ("moving", "population"),
}
# Checked where the chosen component has them (an SGD config has no betas, MNIST no resize_size).
POSITIVE = (
    "optimizer.lr",
    "lr_scaling.reference_batch",
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
    "loop.early_eval_every_steps",
    "loop.early_eval_until_steps",
    "loop.epoch_scale",
    "callbacks.population_stats.num_batches",
    "callbacks.population_stats.eval_bn_batches",
    "callbacks.divergence.check_every_n_batches",
)
NON_NEGATIVE = ("optimizer.momentum", "optimizer.weight_decay")
# (steps key, examples key, epochs key): each needs one of its keys set; the first set one wins.
LENGTHS = (
    ("trainer.max_steps", "loop.max_examples", "loop.max_epochs"),
    ("loop.eval_every_steps", "loop.eval_every_examples", "loop.eval_every_epochs"),
)
# Lightning options the project fixes, and why.
FIXED = {
    "trainer.enable_checkpointing": (
        True,
        "a run folder resumes, is reused and is evaluated from its checkpoints (last.ckpt, best.ckpt); "
        "to keep fewer files, delete checkpoints/ once the run has finished",
    ),
    "trainer.use_distributed_sampler": (
        False,
        "the data modules give each rank its own shard of the step stream already (data/device_loader.py); "
        "Lightning's DistributedSampler would shard the shards",
    ),
}


def _present(cfg, key: str):
    return OmegaConf.select(cfg, key, default=None)


def _numbers(node, key: str = ""):
    """(dotted key, value) of every float in a resolved config container, lists included."""
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _numbers(v, f"{key}.{k}" if key else str(k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _numbers(v, f"{key}[{i}]")
    elif isinstance(node, float):
        yield key, node


def check_finite(cfg) -> None:
    """inf and nan compose as floats; none is a setting (optimizer.lr=inf trained, then diverged)."""
    for key, value in _numbers(OmegaConf.to_container(cfg, resolve=True)):
        if not math.isfinite(value):
            raise ConfigError(f"{key}={value} must be a finite number")


def check_devices(cfg) -> None:
    """What Lightning would refuse while building the Trainer, with the key named here instead."""
    devices, nodes = cfg.trainer.devices, cfg.trainer.num_nodes
    if isinstance(devices, int) and not isinstance(devices, bool) and devices < 1 and devices != -1:
        raise ConfigError(
            f'trainer.devices={devices} must be a positive number of devices, -1 or "auto" (all)'
        )
    if OmegaConf.is_list(devices) and len(devices) == 0:
        raise ConfigError('trainer.devices=[] names no device: give a count, a list of device ids or "auto"')
    if nodes < 1:
        raise ConfigError(f"trainer.num_nodes={nodes} must be a positive number of machines")


def validate(cfg) -> None:
    check_appended(cfg)  # `+key=value` past the schema: taken only where the component takes it
    check_finite(cfg)
    if not 0 <= cfg.seed < 2**32:
        raise ConfigError(f"seed={cfg.seed} must lie in [0, 2**32 - 1] (numpy's and torch's seeds)")
    check_devices(cfg)
    for key, allowed in CHOICES.items():
        value = _present(cfg, key)
        if value is not None and value not in allowed:
            raise ConfigError(f"{key}={value!r} is not one of {', '.join(allowed)}")
    for key in POSITIVE:
        value = _present(cfg, key)
        if value is not None and not value > 0:
            raise ConfigError(f"{key}={value!r} must be positive")
    for key in NON_NEGATIVE:
        value = _present(cfg, key)
        if value is not None and value < 0:
            raise ConfigError(f"{key}={value!r} must be >= 0")
    for key, (allowed, why) in FIXED.items():
        if _present(cfg, key) != allowed:
            raise ConfigError(f"{key}={_present(cfg, key)} is not supported: {why}")
    for keys in LENGTHS:
        values = {k: _present(cfg, k) for k in keys}
        if all(v is None for v in values.values()):
            raise ConfigError(f"set {keys[0]}, {keys[1]} or {keys[2]}")
        for k, v in values.items():
            if v is not None and not v > 0:
                raise ConfigError(f"{k}={v!r} must be positive")
    early = {k: _present(cfg, k) for k in ("loop.early_eval_every_steps", "loop.early_eval_until_steps")}
    given = [k for k, v in early.items() if v is not None]
    if len(given) == 1:  # dense early evaluation is a pair: every N steps up to step M
        (missing,) = set(early) - set(given)
        raise ConfigError(
            f"{given[0]}={early[given[0]]} needs {missing} too (dense evaluation every N steps up to "
            f"step M): set it, or {given[0]}=null to turn dense evaluation off"
        )
    percentiles = cfg.callbacks.percentiles
    if percentiles is not None and not all(0.0 <= x <= 1.0 for x in percentiles.quantiles):
        raise ConfigError(f"callbacks.percentiles.quantiles={list(percentiles.quantiles)} must lie in [0, 1]")
    check_bn_group(cfg)
    scale = list(cfg.augment.crop_scale)
    if len(scale) != 2 or not 0 < scale[0] <= scale[1] <= 1:
        raise ConfigError(f"augment.crop_scale={scale} must be [low, high] with 0 < low <= high <= 1")


def check_bn_group(cfg) -> None:
    """model.net.bn_group (ghost BN, models/ghost_bn.py) must split the per-device batch into whole groups,
    and is another definition of the statistics than trainer.sync_batchnorm's (over all devices)."""
    group, batch = _present(cfg, "model.net.bn_group"), cfg.data.batch_size
    if _present(cfg, "model.net.norm") == "batchnorm" and min(batch, group or batch) < 2:
        # A layer with one value per channel (the MLP's, BN-Inception's 1x1 maps) cannot be normalised
        # over one example: torch refuses it at the first training step.
        key = "data.batch_size" if batch < 2 else "model.net.bn_group"
        raise ConfigError(
            f"{key}={_present(cfg, key)}: BN's statistics need at least 2 examples per batch (per BN group); "
            f"use 2 or more, or a network without BN"
        )
    if group is None or _present(cfg, "model.net.norm") == "none":
        return
    if batch > group and batch % group:
        raise ConfigError(
            f"model.net.bn_group={group} does not divide data.batch_size={batch} (per device): BN would "
            f"leave a partial group; choose a batch that is a multiple of {group}"
        )
    if cfg.trainer.sync_batchnorm:
        raise ConfigError(
            f"trainer.sync_batchnorm=true takes BN statistics over every device's batch, model.net.bn_group="
            f"{group} over groups of {group} examples on each device: choose one (model.net.bn_group=null "
            f"for synchronized BN)"
        )
