"""Base of the data modules whose whole data set lives as tensors on the training device (MNIST, synthetic).

Batches are index tensors applied to those tensors (see device_loader). A Lightning epoch is one
evaluation period of the run's schedule, after which the validation set is evaluated.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from omegaconf import MISSING

from bnrepro.config.schema import DataConfig, schema
from bnrepro.data.device_loader import StepStreamDataModule, device_loader


@schema("data", "tensor_schema")
@dataclass
class TensorDataConfig(DataConfig):
    """Data sets held whole as tensors (TensorDataModule). As a schema of its own (tensor_schema), a YAML
    names its class in `_target_`: for a new in-memory data set that takes no other arguments."""

    device_resident: bool = True  # keep the whole set on the training device
    # How many validation examples: made (synthetic) or the first this many test images (MNIST).
    num_val_examples: int = MISSING


class TensorDataModule(StepStreamDataModule):
    input_shape: tuple[int, ...]  # one example, as the network receives it
    transform = None  # applied to every batch of inputs on the device, after indexing
    can_chunk_steps = True  # a [K, B] index tensor is one gather

    def __init__(self, *, device_resident: bool, num_val_examples: int, **kwargs):
        super().__init__(**kwargs)  # name, sizes, batch sizes, shuffling, seed
        self.device_resident = device_resident
        self.num_val_examples = num_val_examples

    @classmethod
    def holds_on_device(cls, data_cfg) -> bool:
        return data_cfg.device_resident

    def load(self, device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """(train_x, train_y, val_x, val_y) on `device`."""
        raise NotImplementedError

    def setup(self, stage: str | None = None) -> None:
        device = self.trainer.strategy.root_device if (self.trainer and self.device_resident) else "cpu"
        self.train_x, self.train_y, self.val_x, self.val_y = self.load(device)

    def train_dataloader(self, start_step: int | None = None):
        sampler = self.train_sampler(len(self.train_y), start_step=start_step)
        return device_loader((self.train_x, self.train_y), sampler, self.transform)

    def val_dataloader(self):
        return device_loader((self.val_x, self.val_y), self.val_sampler(len(self.val_y)), self.transform)
