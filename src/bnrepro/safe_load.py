"""The one way the project reads a checkpoint or weights file: torch.load with `weights_only=True`.

A run folder may sit on a shared file system, and a .ckpt is a pickle: unpickled without restriction
it runs whatever code its author put in it. torch's weights-only unpickler rebuilds only tensors, plain
containers and numbers, plus the globals allow-listed here -- refusing the file otherwise, before any
of its code runs. `weights_only=True` is passed explicitly, so TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD (which
only changes torch.load's default) cannot turn it off.

What the project's checkpoints hold was checked by loading every kind with nothing allow-listed
(tests/test_safe_load.py): Lightning's own entries, the model's and optimizer's state dicts, the LR
schedule's state, and the callbacks' states, which store tensors (RNG states, percentiles) and plain
values (best score, step, paths as strings). Nothing more is needed, so the allow-list is empty: a type
a future checkpoint needs is added here, by name, with the reason.
"""

from __future__ import annotations

from pathlib import Path

import torch

ALLOWED_GLOBALS: list = []  # classes / functions beyond torch's own weights-only set (none needed)


class UnsafeCheckpointError(ValueError):
    """A checkpoint that asks to run or build something outside the allow-list; it was not loaded."""


class UnreadableCheckpointError(ValueError):
    """A file torch cannot read as a checkpoint (truncated, not a torch file, a text file)."""


def load(path: str | Path, map_location="cpu"):
    """torch.load(path) restricted to tensors, plain containers and ALLOWED_GLOBALS. Raises
    UnsafeCheckpointError or UnreadableCheckpointError, each naming the file; never runs its code."""
    try:
        with torch.serialization.safe_globals(ALLOWED_GLOBALS):
            return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # truncated zip, garbage, a text file (KeyError), a refused global: many types
        text = str(e)
        if "Weights only load failed" in text or "Unsupported global" in text:
            # torch's message explains weights_only at length; its first "GLOBAL ..." line says what.
            what = next((ln.strip() for ln in text.splitlines() if "GLOBAL" in ln), text.splitlines()[0])
            raise UnsafeCheckpointError(
                f"{path} was refused: it is not a plain checkpoint ({what[:200]}); a pickle like it can run "
                f"code when loaded, so nothing of it was loaded. Checkpoints of this project hold only "
                f"tensors and plain values. Use a checkpoint written by a run, or delete this file."
            ) from None
        raise UnreadableCheckpointError(
            f"{path} is not a readable checkpoint ({type(e).__name__}: {text[:200]})"
        ) from e
