"""Data modules, one per data source, built from the `data` config group (see build_datamodule)."""

from __future__ import annotations

from omegaconf import OmegaConf

TENSOR_SETS = ("mnist", "fashion_mnist", "synthetic")  # held whole on the training device
IMAGE_FOLDER_SETS = ("imagenet", "imagenette")  # decoded by DataLoader workers


def build_datamodule(cfg, eval_every_steps: int):
    """The data module of `cfg.data.name`; `eval_every_steps` is one Lightning epoch (evaluation period)."""
    d = cfg.data
    common = dict(batch_size=d.batch_size, eval_batch_size=d.eval_batch_size, eval_every_steps=eval_every_steps,
                  shuffle=d.shuffle, shard_size=d.shard_size, seed=cfg.seed)  # fmt: skip
    if d.name in TENSOR_SETS:
        common.update(steps_per_batch=cfg.loop.steps_per_batch, device_resident=d.device_resident)
    if d.name in ("mnist", "fashion_mnist"):
        from bnrepro.data.mnist import MNISTDataModule

        return MNISTDataModule(
            name=d.name, root=d.root, system_dirs=list(d.system_dirs), download=d.download,
            binarize_threshold=d.binarize_threshold, num_val_examples=d.num_val_examples, to_images=d.to_images, image_size=d.image_size,
            mean=list(d.mean), std=list(d.std), **common,
        )  # fmt: skip
    if d.name == "synthetic":
        from bnrepro.data.synthetic import SyntheticDataModule

        return SyntheticDataModule(
            num_classes=d.num_classes, num_train_examples=d.num_train_examples,
            num_val_examples=d.num_val_examples, image_size=d.image_size, **common,
        )  # fmt: skip
    from bnrepro.data.imagenet import ImageFolderDataModule

    return ImageFolderDataModule(
        name=d.name, root=d.root, download=d.download, variant=d.variant, num_classes=d.num_classes,
        num_train_examples=d.num_train_examples,
        image_size=d.image_size, resize_size=d.resize_size, mean=list(d.mean), std=list(d.std),
        augment=OmegaConf.to_container(cfg.augment, resolve=True), num_workers=d.num_workers,
        pin_memory=d.pin_memory, persistent_workers=d.persistent_workers, **common,
    )  # fmt: skip
