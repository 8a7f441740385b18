"""An unreadable image stops the run on every rank at once, with the file's path.

The DataLoader workers hand a bad batch over as a message instead of raising (data/imagenet.py), and
this callback turns it into ImageDataError. Under DDP the ranks first agree that some rank holds one
(one all-reduced flag per training batch; every rank runs the same number of training batches) and
fetch its message, so all raise together rather than the healthy ranks waiting in the gradient
all-reduce. Validation shards may differ by one batch between ranks, so there a bad batch is only
recorded (the module skips it) and the ranks agree once, at the end of the validation epoch.
"""

from __future__ import annotations

import lightning as L
import torch

from bnrepro.data.imagenet import batch_error
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


class StopOnUnreadableImage(L.Callback):
    def __init__(self):
        self.val_error: str | None = None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        message = _agree(trainer, batch_error(batch))
        if message is not None:
            raise ImageDataError(message)

    def on_validation_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0):
        self.val_error = self.val_error or batch_error(batch)

    def on_validation_epoch_end(self, trainer, pl_module):
        message, self.val_error = _agree(trainer, self.val_error), None
        if message is not None:
            raise ImageDataError(message)
