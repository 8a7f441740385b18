"""Mini-batches of image files decoded in DataLoader workers, and what happens to an unreadable one.

A worker decodes and transforms a whole mini-batch (BatchedImages, indexed by the sampler's list of
indices). It must not raise on an unreadable file: under DDP that rank would stop while the others wait
forever in the next collective (the gradient all-reduce). So it returns an UnreadableImage marker, and
ImageBatchLoader, in the main process, takes the marker off the stream:

- in a plain loop (Alg. 2's passes, the benchmark, a test) it raises ImageDataError at once;
- in the loops of the Trainer it was made for, when that Trainer carries a CollectsUnreadableImages
  callback (StopOnUnreadableImage, callbacks/data_errors.py; run.py and evaluation/evaluate.py add
  it), it keeps the message in
  `unreadable` and the callback stops every rank together with it. In place of a training batch it
  yields an empty one, so every rank still runs the same number of steps (the callback stops the run
  before that step); an evaluation batch is dropped (the ranks' shards may differ by a batch anyway).

So the code that consumes batches (the LightningModules, the other callbacks, Alg. 2's passes) only
ever sees (images, labels).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch.utils.data import DataLoader, Dataset

from bnrepro.data.images import ImageDataError


@dataclass(frozen=True)
class UnreadableImage:
    """What a worker returns for a mini-batch holding an unreadable image (only ImageBatchLoader sees it)."""

    message: str  # ImageDataError's, naming the file


class BatchedImages(Dataset):
    """Indexed by a list of indices (one mini-batch, chosen by the sampler); returns stacked tensors."""

    def __init__(self, dataset: Dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, indices: list[int]):
        try:
            images, labels = zip(*(self.dataset[i] for i in indices))
        except ImageDataError as e:
            return UnreadableImage(str(e))
        return torch.stack(images), torch.tensor(labels)


class CollectsUnreadableImages:
    """The mark of a Trainer callback that takes unreadable images over from ImageBatchLoader (callbacks/
    data_errors.py's StopOnUnreadableImage). Defined here, below the callbacks, so the loader can ask
    whether its Trainer carries one without importing them."""


def image_loaders(loaders) -> list[ImageBatchLoader]:
    """The ImageBatchLoaders among a Trainer's train_dataloader or val_dataloaders (one or a list)."""
    loaders = loaders if isinstance(loaders, (list, tuple)) else [loaders]
    return [dl for dl in loaders if isinstance(dl, ImageBatchLoader)]


class ImageBatchLoader(DataLoader):
    """A DataLoader of `images` (a data set of (image, label)) in the mini-batches its sampler lists.

    `trainer`: the Trainer the loader is made for (None outside one); errors are collected instead of
    raised only while that Trainer's own loops iterate this very loader and a CollectsUnreadableImages
    callback is among its callbacks. `lockstep`: every rank must get the same number of batches (training: one
    per optimizer step), so an unreadable batch becomes an empty one instead of being dropped.
    `unreadable`: the first unreadable image's message of the current pass, when collected.
    `batches`: how a worker makes a mini-batch of `images` (default BatchedImages; data/prepared.py
    seeds its distortions per batch).
    """

    def __init__(self, images: Dataset, *, sampler, lockstep: bool, trainer=None, batches=None, **kwargs):
        batches = batches if batches is not None else BatchedImages(images)
        super().__init__(batches, sampler=sampler, batch_size=None, **kwargs)
        self.lockstep, self.trainer = lockstep, trainer
        self.unreadable: str | None = None

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        self.unreadable = None
        for batch in super().__iter__():
            if not isinstance(batch, UnreadableImage):
                yield batch
            elif not self._collected():
                raise ImageDataError(batch.message)
            else:
                self.unreadable = self.unreadable or batch.message
                if self.lockstep:
                    yield torch.empty(0), torch.empty(0, dtype=torch.long)

    def _collected(self) -> bool:
        """Whether the Trainer's own loops iterate this loader and it carries the callback that collects."""
        trainer = self.trainer
        if trainer is None:
            return False
        loops = (*image_loaders(trainer.train_dataloader), *image_loaders(trainer.val_dataloaders))
        return any(dl is self for dl in loops) and any(
            isinstance(c, CollectsUnreadableImages) for c in trainer.callbacks
        )
