"""MNIST and Fashion-MNIST (Sec. 4.1), held whole on the training device.

Where the data comes from, in order:
  1. torchvision's folder layout under `data.root` (<root>/MNIST/raw/*-ubyte), e.g. from an earlier run;
  2. gzipped IDX files in `data.system_dirs` (Debian's `dataset-fashion-mnist` installs Fashion-MNIST
     in /usr/share/datasets/fashion-mnist), decompressed into (1);
  3. torchvision's download into (1), when `data.download` is true.
When none works, DatasetNotFoundError says where it looked and what to do; a file that is there but
not an IDX file of the right size is refused naming it (DatasetDamagedError), before any run folder is made.
"""

from __future__ import annotations

import contextlib
import gzip
import math
import os
import shutil
import struct
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from omegaconf import MISSING
from torchvision import datasets

from bnrepro.config.schema import schema
from bnrepro.data.tensors import TensorDataConfig, TensorDataModule
from bnrepro.errors import ReproError

TORCHVISION_CLASSES = {"mnist": datasets.MNIST, "fashion_mnist": datasets.FashionMNIST}
IDX_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)


class DatasetNotFoundError(ReproError, FileNotFoundError):
    """The data set is not under data.root and cannot be downloaded; the message says where to put it."""


class DatasetDamagedError(DatasetNotFoundError):
    """A file of the data set is there but unreadable: refused like a missing set (exit status 2)."""


def _raw_dir(name: str, root: str | Path) -> Path:
    return Path(root) / TORCHVISION_CLASSES[name].__name__ / "raw"


def _copy_from_system_dir(raw: Path, system_dir: Path) -> bool:
    """Decompresses the four *.gz IDX files of `system_dir` into `raw`; False if any is missing."""
    sources = [system_dir / f"{f}.gz" for f in IDX_FILES]
    if not all(s.is_file() for s in sources):
        return False
    raw.mkdir(parents=True, exist_ok=True)
    for src, name in zip(sources, IDX_FILES):
        tmp = raw / f".{name}.{os.getpid()}.partial"  # own name: parallel jobs may prepare the same set
        with gzip.open(src, "rb") as fin, open(tmp, "wb") as fout:
            shutil.copyfileobj(fin, fout)
        os.replace(tmp, raw / name)  # atomic: a crash never leaves a truncated file behind
    return True


def prepare(name: str, root: str | Path, system_dirs=(), download: bool = True) -> Path:
    """Makes sure torchvision can read the set from `root`; returns the raw folder or raises."""
    raw = _raw_dir(name, root)
    if all((raw / f).is_file() for f in IDX_FILES):
        check_idx_files(raw)
        return raw
    for d in system_dirs:
        if _copy_from_system_dir(raw, Path(d)):
            check_idx_files(raw)
            return raw
    reason = "download disabled (data.download=false)"
    if download:
        made = [p for p in (raw, *raw.parents) if not p.exists()]  # torchvision creates <root>/<Set>/raw
        try:
            TORCHVISION_CLASSES[name](str(root), train=True, download=True)
            TORCHVISION_CLASSES[name](str(root), train=False, download=True)
            check_idx_files(raw)
            return raw
        except Exception as e:  # torchvision raises RuntimeError (URLError inside) offline
            reason = f"the download failed ({_last_line(e)})"
        for folder in made:  # offline: no empty <root>/MNIST/raw left behind
            with contextlib.suppress(OSError):
                folder.rmdir()
    raise DatasetNotFoundError(_not_found(name, raw, [Path(d) for d in system_dirs], reason))


def _last_line(e: BaseException) -> str:
    """torchvision's download error in one line: its message lists every mirror tried, each with the
    same network error; the last line is that error (e.g. `<urlopen error [Errno -3] ...>`)."""
    lines = [line.strip() for line in str(e).splitlines() if line.strip()]
    return f"{type(e).__name__}: {lines[-1] if lines else ''}".rstrip(": ")


def _not_found(name: str, raw: Path, system_dirs: list[Path], reason: str) -> str:
    """One message: what is missing, why, and what to do, for MNIST and Fashion-MNIST alike."""
    where = str(raw.resolve())
    if system_dirs:  # only Fashion-MNIST has one (Debian's package); MNIST has no system folder
        where += " or (gzipped) in " + " or ".join(str(d) for d in system_dirs)
    fixes = [
        "run once with internet access (data.download=true)",
        f"put the four IDX files, uncompressed, in {raw.resolve()} (or set data.root=<folder> to the "
        f"folder holding {raw.parent.name}/raw)",
    ]
    if name == "fashion_mnist":
        fixes.append("`apt-get install dataset-fashion-mnist`")
    else:
        fixes.append("train on Fashion-MNIST instead, which works offline: data=fashion_mnist "
                     "(`apt-get install dataset-fashion-mnist`)")  # fmt: skip
    return (
        f"{name}: no data found and {reason}. Looked for {raw.parent.name}'s {', '.join(IDX_FILES)} in "
        f"{where}. To fix: {'; or '.join(fixes)}."
    )


# IDX headers (big-endian): magic 0x00000803 = uint8, 3 dimensions (N, 28, 28); 0x00000801 = uint8, 1 (N).
_IDX_SHAPE = {"images": (0x803, (28, 28)), "labels": (0x801, ())}


def check_idx_files(raw: Path) -> None:
    """Refuses, naming the file, an IDX file torchvision would fail on with a bare AssertionError: a
    wrong header, a size that does not match it, or images and labels of different counts. Reads only
    the headers."""
    counts = {}
    for file in IDX_FILES:
        path = raw / file
        kind = "images" if "images" in file else "labels"
        magic, dims = _IDX_SHAPE[kind]
        head_size = 4 * (2 + len(dims))
        with open(path, "rb") as f:
            head = f.read(head_size)
        problem = None
        if len(head) < head_size or struct.unpack(">I", head[:4])[0] != magic:
            problem = f"not an MNIST IDX {kind} file (its first bytes are not the header 0x{magic:08x})"
        else:
            n, *shape = struct.unpack(f">{1 + len(dims)}I", head[4:])
            expected = head_size + n * math.prod(dims)
            size = path.stat().st_size
            if tuple(shape) != dims:
                problem = f"its header declares {kind} of shape {tuple(shape)}, not {dims}"
            elif size != expected:
                problem = f"its header declares {n} {kind} ({expected} bytes) but the file has {size} bytes"
            counts[file] = n
        if problem:
            raise DatasetDamagedError(
                f"{path}: {problem}. Delete it (the next run fetches it again) or replace it with the "
                f"data set's own file."
            )
    for split in ("train", "t10k"):
        images, labels = counts[f"{split}-images-idx3-ubyte"], counts[f"{split}-labels-idx1-ubyte"]
        if images != labels:
            raise DatasetDamagedError(
                f"{raw}: {split}-images-idx3-ubyte holds {images} images but {split}-labels-idx1-ubyte "
                f"{labels} labels. Replace both files with the data set's own."
            )


def load_tensors(name: str, root: str | Path, train: bool, binarize_threshold: float | None):
    """Images as float [N, 1, 28, 28] in [0, 1] (binarized if a threshold is given), labels int64 [N]."""
    ds = TORCHVISION_CLASSES[name](str(root), train=train, download=False)
    x = ds.data.unsqueeze(1).float().div_(255.0)
    if binarize_threshold is not None:
        x = (x > binarize_threshold).float()  # Sec. 4.1 "28x28 binary image as input"
    return x, ds.targets.long()


class GreyToImages:
    """[..., 1, 28, 28] grey batches -> [..., 3, S, S] normalised images for an ImageNet network.

    Bilinear resize, the grey channel repeated to RGB, then (x - mean) / std per channel: Fashion-MNIST
    as a small ImageNet-style data set (experiment=fashion_figure3). Done per batch on the device, so
    the stored set stays 28x28 (188 MB, not 60000 x 3 x S x S).
    """

    def __init__(self, size: int, mean, std):
        self.size = size
        self.mean = torch.tensor(mean, dtype=torch.float32).view(-1, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(-1, 1, 1)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        lead = x.shape[:-3]
        x = F.interpolate(x.reshape(-1, *x.shape[-3:]), size=(self.size, self.size), mode="bilinear")
        if self.mean.device != x.device:  # once: a host-to-device copy per batch would block every step
            self.mean, self.std = self.mean.to(x.device), self.std.to(x.device)
        x = (x.expand(-1, len(self.mean), -1, -1) - self.mean) / self.std
        return x.reshape(*lead, *x.shape[1:])


@schema("data", "mnist_schema")
@dataclass
class MNISTDataConfig(TensorDataConfig):
    _target_: str = "bnrepro.data.mnist.MNISTDataModule"
    root: str = "data"  # where torchvision's <root>/MNIST (or FashionMNIST) folder lives
    download: bool = True  # try torchvision's download when no local copy is found
    # Extra read-only folders searched for the gzipped IDX files (Debian's dataset-fashion-mnist).
    system_dirs: list[str] = field(default_factory=list)
    binarize_threshold: float | None = MISSING  # pixel/255 > threshold; null = grey levels
    # false = the 28x28 one-channel tensors as stored (the MLPs of Sec. 4.1); true = images for an
    # ImageNet network: resized to image_size, grey replicated to len(mean) channels, normalised by
    # mean/std, made on the device per batch (experiment=fashion_figure3).
    to_images: bool = False
    image_size: int = 64
    mean: list[float] = field(default_factory=lambda: [0.5])
    std: list[float] = field(default_factory=lambda: [0.5])


class MNISTDataModule(TensorDataModule):
    """MNIST / Fashion-MNIST, the whole train and test sets as tensors on the training device."""

    input_shape = (1, 28, 28)

    def __init__(self, *, root: str, system_dirs, download: bool, binarize_threshold: float | None,
                 to_images: bool, image_size: int, mean, std, **kwargs):  # fmt: skip
        super().__init__(**kwargs)  # name (mnist | fashion_mnist), sizes, batch sizes, shuffling, seed
        name = self.name
        if to_images:
            self.transform = GreyToImages(image_size, mean, std)
            self.input_shape = (len(mean), image_size, image_size)
        if name not in TORCHVISION_CLASSES:
            raise ValueError(f"data.name={name!r}: expected one of {', '.join(TORCHVISION_CLASSES)}")
        self.root, self.system_dirs, self.download = root, list(system_dirs), download
        self.binarize_threshold = binarize_threshold

    def prepare_data(self) -> None:  # once per node, before processes read
        prepare(self.name, self.root, self.system_dirs, self.download)

    def load(self, device):
        train = load_tensors(self.name, self.root, True, self.binarize_threshold)
        if len(train[1]) != self.num_train_examples:  # as the ImageNet loader does (data/imagenet.py)
            warnings.warn(
                f"{_raw_dir(self.name, self.root)} holds {len(train[1])} training examples but "
                f"data.num_train_examples={self.num_train_examples} (MNIST and Fashion-MNIST have 60,000), "
                f"the epoch that LR decay and lengths in epochs count; set data.num_train_examples="
                f"{len(train[1])} if this is the set you mean to train on",
                stacklevel=2,
            )
        test = load_tensors(self.name, self.root, False, self.binarize_threshold)
        test = tuple(t[: self.num_val_examples] for t in test)  # the first N test images (default: all)
        return tuple(t.to(device) for t in (*train, *test))
