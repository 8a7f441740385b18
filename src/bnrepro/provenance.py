"""Where a number came from: code version, library versions, hardware. Recorded in every run and table."""

from __future__ import annotations

import json
import os
import platform
import subprocess
from importlib import metadata
from pathlib import Path

import torch

PACKAGES = ("torch", "torchvision", "lightning", "hydra-core", "torchmetrics", "timm", "wandb")


def git_sha(cwd: str | Path | None = None) -> str:
    """HEAD's SHA, '-dirty' when tracked source differs from it; 'unknown' outside a git checkout.

    results/ is left out of the dirty check: re-rendering tables does not change what code ran.
    """
    cwd = cwd or Path(__file__).resolve().parent
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, check=True
        )
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "-uno", "--", ":(top)", ":(top,exclude)results"],
            cwd=cwd,
            capture_output=True,
            text=True,
        )
        return sha.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for p in PACKAGES:
        try:
            out[p] = metadata.version(p)
        except metadata.PackageNotFoundError:
            out[p] = "not installed"
    return out


def hardware(device: torch.device | str | None = None) -> str:
    device = torch.device(device or "cpu")
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)} (CUDA {torch.version.cuda})"
    return f"CPU: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch threads {torch.get_num_threads()}"


def write_text_atomic(path: Path, text: str) -> None:
    """Writes through a temporary file and a rename, so a reader never sees half a file; a failed write
    (a full disk) leaves the previous file and no temporary one."""
    write_bytes_atomic(path, text.encode())


def write_bytes_atomic(path: Path, data: bytes) -> None:
    """write_text_atomic for bytes (metrics.csv keeps the csv module's CRLF rows as they are)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.partial")
    try:
        tmp.write_bytes(data)
        os.replace(tmp, path)
    except OSError as e:
        if e.filename == str(tmp):
            e.filename = str(path)  # the file being written, for the message
        raise
    finally:
        tmp.unlink(missing_ok=True)


def write_json_atomic(path: Path, obj) -> None:
    write_text_atomic(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")
