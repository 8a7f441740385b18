"""Resolvers of conf/hydra/launcher/slurm.yaml: SLURM's task and CPU counts from the trainer's."""

from __future__ import annotations

from omegaconf import OmegaConf

from bnrepro.config.errors import ConfigError


def tasks_per_node(devices) -> int:
    """`${tasks_per_node:${trainer.devices}}`: one SLURM task per device, so the device count must be a
    number (resolved when the sweep is submitted)."""
    if isinstance(devices, int) and devices > 0:
        return devices
    if isinstance(devices, str) and devices.isdigit() and int(devices) > 0:
        return int(devices)
    raise ConfigError(
        f"hydra/launcher=slurm starts one SLURM task per GPU and needs trainer.devices=<GPUs per node> "
        f"(a number), not {devices!r}; e.g. hydra/launcher=slurm trainer.devices=8"
    )


def register_resolvers() -> None:
    if not OmegaConf.has_resolver("tasks_per_node"):
        OmegaConf.register_new_resolver("tasks_per_node", tasks_per_node)
        OmegaConf.register_new_resolver("cpus_per_task", lambda workers: max(1, int(workers)))
