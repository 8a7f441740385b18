"""An unreadable image: ImageBatchLoader takes the worker's marker off the stream, so every consumer sees
only (images, labels); in the Trainer's loops StopOnUnreadableImage stops the run, elsewhere it raises.

The 2-process DDP case is in test_imagenet_data.py (test_an_unreadable_image_under_ddp_stops_every_rank_...),
the evaluation's in test_eval.py.
"""

from __future__ import annotations

import lightning as L
import pytest
import torch
import torch.nn.functional as F
from test_imagenet_data import CLASSES, imagenet_overrides, write_imagenet

from bnrepro.callbacks.data_errors import StopOnUnreadableImage
from bnrepro.data.image_batches import ImageBatchLoader
from bnrepro.data.images import ImageDataError
from conftest import build_data, compose_train


def _damaged(tmp_path, split: str, **overrides):
    """A tiny ImageNet folder with one truncated image in `split`, and its data module (batches of 4 train
    images, 3 steps a pass and a Lightning epoch; val: 4 images in batches of 3 and 1)."""
    root = write_imagenet(tmp_path / "imagenet")
    bad = sorted((root / split / CLASSES[1]).iterdir())[1]
    bad.write_bytes(bad.read_bytes()[:200])
    extra = [f"data.{k}={v}" for k, v in overrides.items()]
    cfg = compose_train(*imagenet_overrides(root, tmp_path / "runs"), "data.num_train_examples=12", *extra)
    return bad, build_data(cfg, eval_every_steps=3)


def _is_pair(batch) -> bool:
    return (
        isinstance(batch, (tuple, list))
        and len(batch) == 2
        and all(isinstance(t, torch.Tensor) for t in batch)
        and len(batch[1]) > 0
        and batch[0].shape[0] == len(batch[1])
    )


class Spy(L.LightningModule):
    """Records every batch its steps are given."""

    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(3, 2)
        self.seen: list[tuple[str, object]] = []

    def training_step(self, batch, batch_idx):
        self.seen.append(("train", batch))
        x, y = batch
        return F.cross_entropy(self.lin(x.mean(dim=(2, 3))), y)

    def validation_step(self, batch, batch_idx):
        self.seen.append(("val", batch))

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def _fit(dm, callbacks, max_steps: int = 6) -> tuple[L.Trainer, Spy]:
    trainer = L.Trainer(
        accelerator="cpu", devices=1, max_steps=max_steps, callbacks=callbacks, logger=False,
        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
        num_sanity_val_steps=0, use_distributed_sampler=False,  # the project's default (config/schema.py)
    )  # fmt: skip
    spy = Spy()
    trainer.fit(spy, datamodule=dm)
    return trainer, spy


def test_a_plain_loop_gets_pairs_then_the_error_naming_the_file(tmp_path):
    """Outside a Trainer (Alg. 2's passes, the benchmark): pairs, then ImageDataError at the bad batch."""
    bad, dm = _damaged(tmp_path, "train")
    dm.prepare_data()
    dm.setup()
    loader = dm.train_dataloader()
    assert isinstance(loader, ImageBatchLoader) and len(loader) == len(loader.sampler) == 3
    seen = []
    with pytest.raises(ImageDataError, match=str(bad)):
        for _ in range(4):  # 3 batches a pass of 12 images: the bad one is read in the first pass
            seen.extend(loader)  # each iteration reads the next evaluation period
    assert len(seen) < 3 and all(_is_pair(b) for b in seen)
    assert loader.unreadable is None  # raised, not collected

    val_bad, val_dm = _damaged(tmp_path / "v", "val")
    val_dm.prepare_data()
    val_dm.setup()
    with pytest.raises(ImageDataError, match=str(val_bad)):
        list(val_dm.val_dataloader())


def test_a_training_batch_stops_the_trainer_before_its_step_with_persistent_workers(tmp_path):
    bad, dm = _damaged(tmp_path, "train", persistent_workers=True)  # one worker
    with pytest.raises(ImageDataError, match=str(bad)):
        _fit(dm, [StopOnUnreadableImage()])
    trainer = dm.trainer
    loader = trainer.train_dataloader
    assert loader.persistent_workers and str(bad) in loader.unreadable  # collected, then raised
    train = [b for stage, b in trainer.lightning_module.seen if stage == "train"]
    # The bad batch is in the first pass (3 steps); the empty one in its place never reached a step.
    assert len(train) == trainer.global_step < 3 and all(
        _is_pair(b) for _, b in trainer.lightning_module.seen
    )


def test_a_validation_batch_stops_the_trainer_at_the_epoch_end(tmp_path):
    bad, dm = _damaged(tmp_path, "val", num_workers=0)
    with pytest.raises(ImageDataError, match=str(bad)):
        _fit(dm, [StopOnUnreadableImage()])
    trainer = dm.trainer
    assert str(bad) in trainer.val_dataloaders.unreadable
    seen = trainer.lightning_module.seen
    train = [b for stage, b in seen if stage == "train"]
    val = [b for stage, b in seen if stage == "val"]
    assert len(train) == 3  # the first evaluation period, then its evaluation stopped the run
    assert [len(b[1]) for b in val] == [3]  # the bad file is the set's last: the batch of 1 was dropped
    assert all(_is_pair(b) for _, b in seen)


def test_without_the_callback_the_trainers_loader_raises_at_once(tmp_path):
    """Errors are only held back for a callback that will stop every rank; with none, the loader raises."""
    bad, dm = _damaged(tmp_path, "train", num_workers=0)
    with pytest.raises(ImageDataError, match=str(bad)):
        _fit(dm, [])
    assert dm.trainer.train_dataloader.unreadable is None
    assert all(_is_pair(b) for _, b in dm.trainer.lightning_module.seen)


def test_a_clean_fit_over_persistent_workers_reads_every_batch(tmp_path):
    root = write_imagenet(tmp_path / "imagenet")
    overrides = [*imagenet_overrides(root, tmp_path / "runs"), "data.num_train_examples=12"]
    cfg = compose_train(*overrides, "data.persistent_workers=true")
    dm = build_data(cfg, eval_every_steps=3)
    trainer, spy = _fit(dm, [StopOnUnreadableImage()])
    assert trainer.global_step == 6 and trainer.train_dataloader.persistent_workers
    train = [b for stage, b in spy.seen if stage == "train"]
    val = [b for stage, b in spy.seen if stage == "val"]
    assert len(train) == 6 and all(_is_pair(b) and len(b[1]) == 4 for b in train)
    assert sorted(len(b[1]) for b in val) == [1, 1, 3, 3]  # two evaluations of 4 images
