"""ImageNet (ILSVRC-2012) and its single-GPU proxy Imagenette, read from class folders by DataLoader workers.

    <root>/train/<wnid>/*.JPEG   and   <root>/val/<wnid>/*.JPEG     (data=imagenet, data.root=<root>)
    <root>/imagenette2-320/{train,val}/<wnid>/*.JPEG                (data=imagenette; downloaded if missing)

Training batches follow the same step stream as every other data set (data/device_loader.py): the
sampler yields one global step's indices for this rank, a worker decodes and distorts the whole
mini-batch (data/images.py, data/image_batches.py), and one Lightning epoch is one evaluation period.
Evaluation is the single-crop protocol (shorter side 256, centre 224); each rank reads a disjoint shard
of val.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path

from omegaconf import MISSING
from torchvision import datasets

from bnrepro.config.schema import AugmentConfig, DataConfig, schema
from bnrepro.data.device_loader import StepStreamDataModule, own_generator
from bnrepro.data.image_batches import ImageBatchLoader
from bnrepro.data.images import (
    ImageDataError,
    ImageFolderDataset,
    eval_transform,
    scan_class_folders,
    train_transform,
)

IMAGENETTE_FOLDERS = {"full": "imagenette2", "320px": "imagenette2-320", "160px": "imagenette2-160"}


@schema("data", "image_folder_schema")
@dataclass
class ImageFolderDataConfig(DataConfig):
    """Class-folder image sets decoded by DataLoader workers (ImageFolderDataModule)."""

    _target_: str = "bnrepro.data.imagenet.ImageFolderDataModule"
    root: str = MISSING  # holds train/<class>/ and val/<class>/
    image_size: int = 224  # training crop and evaluation centre crop
    resize_size: int = 256  # evaluation: shorter side resized to this, then the centre crop
    mean: list[float] = field(default_factory=lambda: [0.485, 0.456, 0.406])  # timm's ImageNet mean/std
    std: list[float] = field(default_factory=lambda: [0.229, 0.224, 0.225])
    # The `augment` group (full | reduced | none), chosen by the variant: one group, any image data set.
    augment: AugmentConfig = "${augment}"  # type: ignore[assignment]
    num_workers: int = 8  # decoding processes per device
    pin_memory: bool = True
    persistent_workers: bool = True  # keep workers between evaluation periods


class ImageFolderDataModule(StepStreamDataModule):
    """ImageNet-layout class folders under `root` (data=imagenet)."""

    def __init__(self, *, root: str, image_size: int, resize_size: int, mean, std, augment: dict,
                 num_workers: int, pin_memory: bool, persistent_workers: bool, **kwargs):  # fmt: skip
        super().__init__(**kwargs)  # name, sizes, batch sizes, shuffling, seed
        self.root = Path(root)
        self.image_size, self.resize_size = image_size, resize_size
        self.input_shape = (3, image_size, image_size)
        self.eval_tf = eval_transform(image_size, resize_size, mean, std)
        self.train_tf = self.eval_tf if augment["name"] == "none" else train_transform(  # none: the eval crop
            image_size, tuple(augment["crop_scale"]), tuple(augment["crop_ratio"]), augment["hflip"],
            color_jitter=augment["color_jitter"], mean=mean, std=std,
        )  # fmt: skip
        self.loader_kwargs = dict(
            num_workers=num_workers,
            pin_memory=pin_memory,
            persistent_workers=persistent_workers and num_workers > 0,
        )

    @property
    def data_dir(self) -> Path:
        """The folder holding train/ and val/."""
        return self.root

    def fetch(self) -> None:
        """Downloads the set when it is missing and can be downloaded (ImageNet cannot: it needs a login)."""

    def prepare_data(self) -> None:
        """Checks both splits (downloads first where the set can be); raises ImageDataError naming the path."""
        self.fetch()
        self._scan()

    def _scan(self):
        if getattr(self, "_scanned", None) is not None:  # ~1.3M files: list them once per process
            return self._scanned
        train_classes, train = scan_class_folders(self.data_dir / "train")
        val_classes, val = scan_class_folders(self.data_dir / "val")
        if train_classes != val_classes:
            missing = sorted(set(train_classes) ^ set(val_classes))[:5]
            raise ImageDataError(
                f"{self.data_dir}: train/ and val/ have different class folders (e.g. {', '.join(missing)}); "
                f"val/ must be sorted into the same <wnid> folders as train/ (see docs/data.md, ImageNet)."
            )
        if len(train_classes) != self.num_classes:
            raise ImageDataError(
                f"{self.data_dir / 'train'} holds {len(train_classes)} class folders but data.num_classes="
                f"{self.num_classes}; set data.num_classes={len(train_classes)} or fix the folder."
            )
        if len(train) != self.num_train_examples:
            warnings.warn(
                f"{self.data_dir / 'train'} holds {len(train)} images but data.num_train_examples="
                f"{self.num_train_examples}, the epoch that LR decay and lengths in epochs count; set "
                f"data.num_train_examples={len(train)} if this is the set you mean to train on",
                stacklevel=2,
            )
        self._scanned = train, val
        return self._scanned

    def setup(self, stage: str | None = None) -> None:
        train, val = self._scan()
        self.train_set = ImageFolderDataset(train, self.train_tf)
        self.val_set = ImageFolderDataset(val, self.eval_tf)

    def train_dataloader(self, start_step: int | None = None):
        sampler = self.train_sampler(len(self.train_set), as_list=True, start_step=start_step)
        return ImageBatchLoader(
            self.train_set, sampler=sampler, lockstep=True, trainer=self.trainer, generator=own_generator(),
            **self.loader_kwargs,
        )  # fmt: skip

    def val_dataloader(self):
        sampler = self.val_sampler(len(self.val_set), as_list=True)
        return ImageBatchLoader(
            self.val_set, sampler=sampler, lockstep=False, trainer=self.trainer, generator=own_generator(),
            **self.loader_kwargs,
        )  # fmt: skip


@schema("data", "imagenette_schema")
@dataclass
class ImagenetteDataConfig(ImageFolderDataConfig):
    _target_: str = "bnrepro.data.imagenet.ImagenetteDataModule"
    download: bool = True  # torchvision's Imagenette download when the folder is missing
    variant: str = MISSING  # torchvision's Imagenette sizes: full | 320px | 160px


class ImagenetteDataModule(ImageFolderDataModule):
    """Imagenette through torchvision (data=imagenette): <root>/imagenette2-<size>/, downloaded if missing."""

    def __init__(self, *, download: bool, variant: str, **kwargs):
        if variant not in IMAGENETTE_FOLDERS:
            raise ImageDataError(
                f"data.variant={variant!r}: Imagenette comes as {', '.join(IMAGENETTE_FOLDERS)}"
            )
        super().__init__(**kwargs)
        self.download, self.variant = download, variant

    @property
    def data_dir(self) -> Path:
        return self.root / IMAGENETTE_FOLDERS[self.variant]

    def fetch(self) -> None:
        if not self.download or (self.data_dir / "val").is_dir():
            return
        try:
            for split in ("train", "val"):
                datasets.Imagenette(str(self.root), split=split, size=self.variant, download=True)
        except Exception as e:  # offline: URLError / RuntimeError
            raise ImageDataError(
                f"{self.data_dir}: Imagenette is not there and the download failed ({type(e).__name__}: "
                f"{e}). Run once with internet access, or set data.root to a folder holding "
                f"{IMAGENETTE_FOLDERS[self.variant]}/."
            ) from e
