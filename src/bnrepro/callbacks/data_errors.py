"""An unreadable image stops the run on every rank at once, with the file's path.

Within the Trainer's loops, ImageBatchLoader (data/image_batches.py) keeps an unreadable image's message
in `loader.unreadable` instead of raising (it sees this callback by its mark, CollectsUnreadableImages),
and this callback alone turns it into ImageDataError. Under
DDP the ranks first agree that some rank holds one and fetch its message, so all raise together rather
than the healthy ranks waiting in a collective the failed one never reaches. In training that is one
all-reduced flag at the start of every batch, before any rank enters the step's gradient all-reduce
(every rank runs the same number of batches: the loader yields an empty one in place of a bad one,
which never gets past this hook). Lightning fetches a batch ahead, so the run stops at the bad batch's
step or the one before, never after it. Validation shards may differ by one batch between ranks, so
there the loader drops a bad batch and the ranks agree once, at the end of the validation epoch.
"""

from __future__ import annotations

import lightning as L
import torch

from bnrepro.data.image_batches import CollectsUnreadableImages, image_loaders
from bnrepro.data.images import ImageDataError


def _agree(trainer, message: str | None) -> str | None:
    """The message of some rank that has one (None if no rank has), identical on every rank."""
    if trainer.world_size == 1 or not trainer.strategy.reduce_boolean_decision(
        message is not None, all=False
    ):
        return message
    messages = [None] * trainer.world_size
    torch.distributed.all_gather_object(messages, message)
    return next(m for m in messages if m is not None)


def _stop_on_any(trainer, loaders) -> None:
    # Every rank holds the same kinds of loader, so all take part in each agreement or none does
    # (data sets read from tensors cost no collective).
    for loader in image_loaders(loaders):
        message = _agree(trainer, loader.unreadable)
        if message is not None:
            raise ImageDataError(message)


class StopOnUnreadableImage(CollectsUnreadableImages, L.Callback):
    """Raises ImageDataError on every rank together once any rank's loader holds an unreadable image."""

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        _stop_on_any(trainer, trainer.train_dataloader)

    def on_validation_epoch_end(self, trainer, pl_module):
        _stop_on_any(trainer, trainer.val_dataloaders)
