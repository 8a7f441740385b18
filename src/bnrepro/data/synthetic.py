"""data=synthetic: random images and labels made on the training device (smoke tests, throughput).

Nothing to learn and nothing to read: a run measures the training step alone, without decoding.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from omegaconf import MISSING

from bnrepro.config.schema import schema
from bnrepro.data.tensors import TensorDataConfig, TensorDataModule


@schema("data", "synthetic_schema")
@dataclass
class SyntheticDataConfig(TensorDataConfig):
    _target_: str = "bnrepro.data.synthetic.SyntheticDataModule"
    image_size: int = MISSING


class SyntheticDataModule(TensorDataModule):
    def __init__(self, *, image_size: int, **kwargs):
        super().__init__(**kwargs)  # num_train_examples / num_val_examples: how many examples are made
        self.image_size = image_size
        self.input_shape = (3, image_size, image_size)

    def prepare_data(self) -> None:
        pass

    def load(self, device):
        gen = torch.Generator(device=device).manual_seed(self.seed)
        out = []
        for n in (self.num_train_examples, self.num_val_examples):
            out.append(torch.randn(n, *self.input_shape, device=device, generator=gen))
            out.append(torch.randint(0, self.num_classes, (n,), device=device, generator=gen))
        return tuple(out)
