"""Benchmarks (scripts, not tests): `just bench` (inception + pipeline), `just bench mnist`."""

from __future__ import annotations

import torch


def sync(device: torch.device) -> None:
    """Waits for the device's queued work, so a wall clock read next measures it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
