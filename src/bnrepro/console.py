"""What a run prints: the known, harmless messages of the libraries silenced, and progress that reads
well both on a terminal and in a redirected log.

`quiet_known_noise()` is called once by the package (bnrepro/__init__.py). Each filter names one message
and why it says nothing a user can act on; everything else still prints. `progress_bar(enabled)` is the
trainer's progress callback: Lightning's tqdm bar on a terminal, a plain line every `every_s` seconds
otherwise (a tqdm bar in a file is one long line of carriage returns). `progress(...)` does the same for
the project's own long loops (Alg. 2's pass, the 144-crop evaluation, `just prepare`).
"""

from __future__ import annotations

import logging
import re
import sys
import time
import warnings
from collections.abc import Iterable, Iterator

# Lightning's rank-zero info lines that hold no information for the run (logged through this logger).
_LIGHTNING_INFO = logging.getLogger("lightning.pytorch.utilities.rank_zero")
_SILENT_INFO = re.compile(
    r"💡 Tip: For seamless cloud logging"  # an advertisement for litlogger, printed by every Trainer
    r"|GPU available: False, used: False"  # no GPU and none asked for: the CPU run the user chose
    r"|(TPU|HPU) available: False"  # accelerators this project never uses
)

# Python warnings that are known and harmless here, each by its own message (never a whole category).
_SILENT_WARNINGS = (
    # Lightning 2.6's own use of a torch.utils._pytree API that torch deprecated; nothing of ours.
    r"`isinstance\(treespec, LeafSpec\)` is deprecated",
    # Lightning 2.6's all_gather (the percentiles gather across ranks) calls a torch function torch
    # deprecated; printed once per rank of a DDP run.
    r"torch\.distributed\.nn\.functional\.all_gather is deprecated",
    # A relaunch resumes into its own run folder on purpose; Lightning warns that it holds checkpoints.
    r"Checkpoint directory .* exists and is not empty",
    # Resuming mid-period is exact here: the step-stream sampler resumes at its step (data/device_loader.py,
    # tests/test_resume.py), which Lightning cannot see.
    r"You're resuming from a checkpoint that ended before the epoch ended",
    # Lightning's note on the DataLoader worker count: our loaders are index tensors on the device
    # (data/device_loader.py) or ImageBatchLoader, whose workers data.num_workers sets deliberately.
    r"The '\w+_dataloader' does not have many workers",
)


class _DropSilentInfo(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not _SILENT_INFO.match(record.getMessage())


def quiet_known_noise() -> None:
    """Installs the filters above (idempotent: a filter already there is not added twice)."""
    if not any(isinstance(f, _DropSilentInfo) for f in _LIGHTNING_INFO.filters):
        _LIGHTNING_INFO.addFilter(_DropSilentInfo())
    for message in _SILENT_WARNINGS:
        warnings.filterwarnings("ignore", message=message)


def on_terminal() -> bool:
    """Whether stdout is a terminal (tqdm's carriage returns redraw a line) rather than a file or pipe."""
    return sys.stdout.isatty()


def progress(items: Iterable, total: int | None, what: str, every_s: float = 10.0) -> Iterator:
    """Yields `items`, printing `<what>: i/total` every `every_s` seconds (the first after `every_s`, so a
    quick loop prints nothing) and once at the end if anything was printed. Plain lines on a terminal
    too: these loops run inside Lightning's own bar, which a second tqdm bar would break."""
    from lightning.fabric.utilities.rank_zero import rank_zero_only

    if rank_zero_only.rank != 0:  # every rank runs the loop; one prints
        yield from items
        return
    start = last = time.monotonic()
    i = 0
    for i, item in enumerate(items, 1):
        yield item
        now = time.monotonic()
        if now - last >= every_s:
            last = now
            print(f"{what}: {i}/{total if total is not None else '?'} ({now - start:.0f} s)", flush=True)
    if last != start:
        print(f"{what}: {i} done in {time.monotonic() - start:.0f} s", flush=True)
