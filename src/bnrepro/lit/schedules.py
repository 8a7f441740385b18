"""LR schedules as a factor of the initial LR after a number of training examples seen (the lr_schedule
group builds one). Counted in examples, not steps, so a schedule means the same at any batch size or
device count; the LightningModule turns it into a per-step LambdaLR for its global batch."""

from __future__ import annotations

import math


class Constant:
    """One fixed learning rate (the MNIST experiment)."""

    def __call__(self, examples: int) -> float:
        return 1.0


class ExponentialDecay:
    """gamma ** (examples / decay_examples), floored when staircase, with decay_examples =
    decay_every_epochs x epoch_examples x epoch_scale / speedup (GoogLeNet: x0.96 every 8 epochs; the
    BN variants 6x faster, Sec. 4.2.1)."""

    def __init__(self, gamma: float, decay_every_epochs: float, speedup: float, epoch_examples: int,
                 epoch_scale: float, staircase: bool):  # fmt: skip
        self.gamma, self.staircase = gamma, staircase
        self.decay_examples = decay_every_epochs * (epoch_examples * epoch_scale) / speedup

    def __call__(self, examples: int) -> float:
        periods = examples / self.decay_examples
        return self.gamma ** (math.floor(periods) if self.staircase else periods)
