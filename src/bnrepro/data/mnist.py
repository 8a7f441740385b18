"""MNIST and Fashion-MNIST (Sec. 4.1), held whole on the training device.

Where the data comes from, in order:
  1. torchvision's folder layout under `data.root` (<root>/MNIST/raw/*-ubyte), e.g. from an earlier run;
  2. gzipped IDX files in `data.system_dirs` (Debian's `dataset-fashion-mnist` installs Fashion-MNIST
     in /usr/share/datasets/fashion-mnist), decompressed into (1);
  3. torchvision's download into (1), when `data.download` is true.
When none works, DatasetNotFoundError says where it looked and what to do.
"""

from __future__ import annotations

import gzip
import os
import shutil
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
        return raw
    for d in system_dirs:
        if _copy_from_system_dir(raw, Path(d)):
            return raw
    reason = "download disabled (data.download=false)"
    if download:
        try:
            TORCHVISION_CLASSES[name](str(root), train=True, download=True)
            TORCHVISION_CLASSES[name](str(root), train=False, download=True)
            return raw
        except Exception as e:  # torchvision raises RuntimeError/URLError when offline
            reason = f"download failed: {type(e).__name__}: {e}".strip()
    looked = [str(raw.resolve())] + [str(Path(d)) for d in system_dirs]
    hint = " or `apt-get install dataset-fashion-mnist`" if name == "fashion_mnist" else ""
    raise DatasetNotFoundError(
        f"{name}: no data found. Looked for {', '.join(IDX_FILES)} in {' and '.join(looked)} "
        f"(gzipped in the system folders); {reason}. To fix: run once with internet access "
        f"(data.download=true), or put the IDX files in {raw.resolve()}{hint}, or set data.root=<folder>."
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
