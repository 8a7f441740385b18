"""Benchmarks (scripts, not tests): `just bench` (inception + pipeline), `just bench mnist`."""

from __future__ import annotations

from pathlib import Path

import torch

CONF_DIR = Path(__file__).resolve().parents[3] / "conf"  # the repository's conf/ (editable install)


def compose_train(*overrides: str):
    """conf/train.yaml composed with `overrides`, as `python src/train.py` would."""
    from hydra import compose, initialize_config_dir

    import bnrepro.config  # noqa: F401  (the schema)

    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        return compose("train", overrides=list(overrides))


def sync(device: torch.device) -> None:
    """Waits for the device's queued work, so a wall clock read next measures it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
