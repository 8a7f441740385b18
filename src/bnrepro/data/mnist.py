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
import math
import os
import shutil
from pathlib import Path

import lightning as L
from torchvision import datasets

from bnrepro.data.device_loader import ShardSliceSampler, StepChunkSampler, device_loader

TORCHVISION_CLASSES = {"mnist": datasets.MNIST, "fashion_mnist": datasets.FashionMNIST}
IDX_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)


class DatasetNotFoundError(FileNotFoundError):
    pass


def _raw_dir(name: str, root: str | Path) -> Path:
    return Path(root) / TORCHVISION_CLASSES[name].__name__ / "raw"


def _copy_from_system_dir(raw: Path, system_dir: Path) -> bool:
    """Decompresses the four *.gz IDX files of `system_dir` into `raw`; False if any is missing."""
    sources = [system_dir / f"{f}.gz" for f in IDX_FILES]
    if not all(s.is_file() for s in sources):
        return False
    raw.mkdir(parents=True, exist_ok=True)
    for src, name in zip(sources, IDX_FILES):
        tmp = raw / f".{name}.partial"
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


class MNISTDataModule(L.LightningDataModule):
    """The whole train and test sets as tensors on the training device.

    Batches are index tensors applied to those tensors (see device_loader). A Lightning epoch is one
    evaluation period of `eval_every_steps` optimizer steps, after which the test set is evaluated.
    """

    input_shape = (1, 28, 28)  # one example, as the network receives it

    def __init__(
        self,
        name: str,
        root: str = "data",
        system_dirs=(),
        download: bool = True,
        batch_size: int = 60,
        eval_batch_size: int = 10000,
        binarize_threshold: float | None = 0.5,
        device_resident: bool = True,
        eval_every_steps: int = 500,
        steps_per_batch: int = 1,
        seed: int = 0,
    ):
        super().__init__()
        if name not in TORCHVISION_CLASSES:
            raise ValueError(f"data.name={name!r}: expected one of {', '.join(TORCHVISION_CLASSES)}")
        self.name, self.root, self.system_dirs, self.download = name, root, list(system_dirs), download
        self.batch_size, self.eval_batch_size = batch_size, eval_batch_size
        self.binarize_threshold, self.device_resident = binarize_threshold, device_resident
        self.eval_every_steps, self.max_steps_per_batch = eval_every_steps, steps_per_batch
        self.seed = seed
        self.steps_per_batch = 1

    def prepare_data(self) -> None:  # once per node, before processes read
        prepare(self.name, self.root, self.system_dirs, self.download)

    def setup(self, stage: str | None = None) -> None:
        world = self.trainer.world_size if self.trainer else 1
        self.rank = self.trainer.global_rank if self.trainer else 0
        self.world_size = world
        # Several steps per Lightning batch only on one device: DDP's gradient all-reduce runs once per
        # forward of the wrapped module, so there every step must be its own Lightning batch. Dividing
        # the evaluation period also divides trainer.max_steps (config.validate requires a multiple).
        k = self.max_steps_per_batch if world == 1 else 1
        self.steps_per_batch = math.gcd(k, self.eval_every_steps)
        device = self.trainer.strategy.root_device if (self.trainer and self.device_resident) else "cpu"
        self.train_x, self.train_y = (
            t.to(device) for t in load_tensors(self.name, self.root, True, self.binarize_threshold)
        )
        self.test_x, self.test_y = (
            t.to(device) for t in load_tensors(self.name, self.root, False, self.binarize_threshold)
        )

    def train_dataloader(self):
        sampler = StepChunkSampler(
            len(self.train_y), self.batch_size, self.eval_every_steps, self.steps_per_batch,
            seed=self.seed, rank=self.rank, world_size=self.world_size,
        )  # fmt: skip
        return device_loader((self.train_x, self.train_y), sampler)

    def val_dataloader(self):
        sampler = ShardSliceSampler(len(self.test_y), self.eval_batch_size, self.rank, self.world_size)
        return device_loader((self.test_x, self.test_y), sampler)
