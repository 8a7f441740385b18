"""Base of the data modules whose whole data set lives as tensors on the training device (MNIST, synthetic).

Batches are index tensors applied to those tensors (see device_loader). A Lightning epoch is one
evaluation period of `eval_every_steps` optimizer steps, after which the validation set is evaluated.
"""

from __future__ import annotations

import math

import lightning as L
import torch

from bnrepro.data.device_loader import ShardSliceSampler, StepChunkSampler, device_loader


class TensorDataModule(L.LightningDataModule):
    input_shape: tuple[int, ...]  # one example, as the network receives it

    def __init__(
        self,
        batch_size: int,
        eval_batch_size: int,
        eval_every_steps: int = 500,
        steps_per_batch: int = 1,
        device_resident: bool = True,
        shuffle: str = "thorough",
        shard_size: int = 1024,
        seed: int = 0,
    ):
        super().__init__()
        self.batch_size, self.eval_batch_size = batch_size, eval_batch_size
        self.eval_every_steps, self.max_steps_per_batch = eval_every_steps, steps_per_batch
        self.device_resident, self.shuffle, self.shard_size, self.seed = (
            device_resident,
            shuffle,
            shard_size,
            seed,
        )
        self.steps_per_batch = 1

    def load(self, device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """(train_x, train_y, val_x, val_y) on `device`."""
        raise NotImplementedError

    def setup(self, stage: str | None = None) -> None:
        world = self.trainer.world_size if self.trainer else 1
        self.rank = self.trainer.global_rank if self.trainer else 0
        self.world_size = world
        # Several steps per Lightning batch only on one device: DDP's gradient all-reduce runs once per
        # forward of the wrapped module, so there every step must be its own Lightning batch. Dividing
        # the evaluation period also divides the number of steps (a whole number of periods).
        k = self.max_steps_per_batch if world == 1 else 1
        self.steps_per_batch = math.gcd(k, self.eval_every_steps)
        device = self.trainer.strategy.root_device if (self.trainer and self.device_resident) else "cpu"
        self.train_x, self.train_y, self.val_x, self.val_y = self.load(device)

    def train_dataloader(self):
        sampler = StepChunkSampler(
            len(self.train_y), self.batch_size, self.eval_every_steps, self.steps_per_batch, seed=self.seed,
            rank=self.rank, world_size=self.world_size, shuffle=self.shuffle, shard_size=self.shard_size,
        )  # fmt: skip
        return device_loader((self.train_x, self.train_y), sampler)

    def val_dataloader(self):
        sampler = ShardSliceSampler(len(self.val_y), self.eval_batch_size, self.rank, self.world_size)
        return device_loader((self.val_x, self.val_y), sampler)
