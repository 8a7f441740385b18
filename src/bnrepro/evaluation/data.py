"""The validation images of an ImageNet-layout folder, cropped by a protocol, one disjoint shard per rank.

The folder is found and scanned by the training code's own helpers (data/imagenet.py, data/images.py):
<root>/val/<wnid>/* for data=imagenet, <root>/imagenette2-320/val/<wnid>/* for data=imagenette, or the
val chunks of a prepared set (data=imagenet_prepared data.prepared=<folder or URL>; stored with the
shorter side 352, the 144-crop protocol's largest scale). Only val/ is read, so an ImageNet copy
without train/ can be evaluated.

Each rank reads a contiguous shard (ShardSliceSampler, the same sampler training evaluates with): shard
sizes differ by at most one and nothing is padded, unlike Lightning's DistributedSampler, which repeats
images to even the shards out and would count them twice.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from torch.utils.data import Dataset

from bnrepro.data.device_loader import StepStreamDataModule
from bnrepro.data.image_batches import ImageBatchLoader
from bnrepro.data.imagenet import ImageFolderDataModule
from bnrepro.data.images import ImageDataError, ImageFolderDataset, scan_class_folders
from bnrepro.data.prepared import PreparedDataModule, PreparedImages, read_marker


def class_indices(classes: list[str], num_classes: int, val_dir: Path) -> list[int]:
    """The network's output index of each class folder (sorted, as scan_class_folders numbers them).

    Same count: the folder's order, as in training. A 1000-class network on a subset of ImageNet's
    classes (Imagenette's 10 wnids): their indices among ImageNet's 1000 sorted wnids, so a net trained
    on ImageNet (or the Caffe port) can be evaluated on Imagenette.
    """
    if len(classes) == num_classes:
        return list(range(num_classes))
    if num_classes == 1000:
        from timm.data import ImageNetInfo

        index = {wnid: i for i, wnid in enumerate(ImageNetInfo().label_names())}  # the sorted wnids
        if all(c in index for c in classes):
            return [index[c] for c in classes]
    raise ImageDataError(
        f"{val_dir} holds {len(classes)} class folders but the network predicts {num_classes} classes; "
        f"evaluate on the data set it was trained on (data=imagenet | imagenette, data.root=...)."
    )


def val_dataset(
    data: ImageFolderDataModule, num_classes: int, transform: Callable, limit: int | None
) -> Dataset:
    """The first `limit` (None: all) validation images of the data set, (transform(image), label) each:
    from its val/ folder, or from a prepared set's val chunks (data=imagenet_prepared, a folder or URL)."""
    if isinstance(data, PreparedDataModule):
        info = read_marker(data.prepared)
        labels = class_indices(info["classes"], num_classes, Path(f"{data.prepared}/val"))
        count = min(limit or info["images"]["val"], info["images"]["val"])
        return PreparedImages(f"{data.prepared}/val", count, transform, data.cache_dir, data.max_cache_size,
                              labels=labels)  # fmt: skip
    _, samples = val_samples(data, num_classes)
    return ImageFolderDataset(samples[:limit] if limit else samples, transform)


def val_samples(data: ImageFolderDataModule, num_classes: int) -> tuple[Path, list[tuple[str, int]]]:
    """(val folder, [(image path, label)]) of the data set; raises ImageDataError naming the folder."""
    val_dir = data.data_dir / "val"
    if not val_dir.is_dir():
        data.fetch()  # downloads Imagenette (train and val) as training would; ImageNet: nothing
    classes, samples = scan_class_folders(val_dir)
    labels = class_indices(classes, num_classes, val_dir)
    return val_dir, [(path, labels[y]) for path, y in samples]


class EvalDataModule(StepStreamDataModule):
    """Batches of `images_per_batch` images, each [crops, 3, H, W] uint8; this rank's shard only."""

    def __init__(
        self,
        dataset: Dataset,
        images_per_batch: int,
        num_workers: int = 8,
        pin_memory: bool = True,
    ):
        # Evaluation only: the training stream's settings (shuffling, epoch) mean nothing here.
        super().__init__(name="val", num_classes=0, num_train_examples=0, batch_size=images_per_batch,
                         eval_batch_size=images_per_batch, shuffle="thorough", shard_size=1, seed=0)  # fmt: skip
        self.dataset = dataset
        self.num_workers, self.pin_memory = num_workers, pin_memory

    def val_dataloader(self) -> ImageBatchLoader:
        dataset = self.dataset
        sampler = self.val_sampler(len(dataset), as_list=True)  # rank and world size from the trainer
        # A worker decodes and crops a whole batch; an unreadable image stops every rank together
        # (StopOnUnreadableImage, which evaluate.py's Trainer carries).
        return ImageBatchLoader(dataset, sampler=sampler, lockstep=False, trainer=self.trainer,
                                num_workers=self.num_workers, pin_memory=self.pin_memory)  # fmt: skip
