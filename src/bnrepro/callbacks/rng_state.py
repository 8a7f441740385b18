"""The random number generators' states in every checkpoint (Lightning does not save them).

Dropout and the random-resized crops draw from these generators; restoring them makes a resumed run
draw what the uninterrupted run would have drawn. The data order does not depend on them (samplers use
their own seeded generators) and the loaders do not draw from them either (data/device_loader.py).
"""

from __future__ import annotations

import random

import lightning as L
import numpy as np
import torch


def capture() -> dict:
    state = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": (state[0], torch.from_numpy(state[1].copy()), *state[2:]),
        "python": random.getstate(),
    }


def restore(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    device = torch.cuda.current_device() if torch.cuda.is_available() else None
    if device is not None and device < len(
        state["cuda"]
    ):  # this process's GPU only: another node may have fewer
        torch.cuda.set_rng_state(state["cuda"][device])
    name, keys, *rest = state["numpy"]
    np.random.set_state((name, keys.numpy(), *rest))
    random.setstate(state["python"])


class RNGState(L.Callback):
    """Saves the generators' states with each checkpoint; restores them when training resumes."""

    def __init__(self):
        self._loaded: dict | None = None

    def state_dict(self) -> dict:
        return capture()

    def load_state_dict(self, state_dict: dict) -> None:
        self._loaded = state_dict

    def on_train_start(self, trainer, pl_module):
        # Here, not at load time: whatever Lightning sets up between the two has drawn nothing in the
        # uninterrupted run's timeline either, so the first resumed step sees the saved state.
        if self._loaded is not None:
            restore(self._loaded)
            self._loaded = None
