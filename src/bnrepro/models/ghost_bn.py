"""Batch normalization over groups of a fixed size ("ghost" BN): the paper's statistics at any batch size.

The paper normalizes over its mini-batches of 32 (Sec. 3, Sec. 4.2). A device batch of 256 normalized
as one would be another regularizer and another network at every step, so with `group=32` the batch is
split into 8 consecutive groups of 32 examples, each normalized with its own mean and biased variance:
the same outputs and gradients as 8 separate batch-32 BN passes.

The running statistics are updated as those 8 consecutive batch-32 BN steps would update them (each
group's mean and unbiased variance, in order), in one closed-form step: with momentum m,
running <- (1 - m)^G running + sum_i m (1 - m)^(G - 1 - i) stat_i; with momentum None (Alg. 2's
cumulative average, callbacks/population.py) each group counts as one mini-batch. Evaluation uses the
running statistics, as plain BN does. A batch of at most `group` examples is one group (plain BN).
"""

from __future__ import annotations

import torch
from torch import nn


class _GhostBatchNorm:
    """Mixin over nn.BatchNorm1d / 2d: `group` examples per statistic in training mode."""

    def __init__(self, num_features: int, group: int, **kwargs):
        super().__init__(num_features, **kwargs)  # the BatchNorm class's own arguments (eps, momentum, ...)
        self.group = group

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, group={self.group}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = x.shape[0]
        if not self.training or n <= self.group:
            return super().forward(x)  # one group: plain BN
        if n % self.group:
            raise ValueError(
                f"a batch of {n} examples does not split into BN groups of {self.group} (model.net.bn_group): "
                f"choose a per-device data.batch_size that is a multiple of it"
            )
        groups = n // self.group
        xg = x.reshape(groups, self.group, *x.shape[1:])  # [G, g, C, ...]
        dims = (1, *range(3, xg.dim()))  # a group's examples and positions: a statistic per (group, channel)
        var, mean = torch.var_mean(xg, dim=dims, unbiased=False, keepdim=True)
        y = (xg - mean) * torch.rsqrt(var + self.eps)
        if self.affine:
            shape = (1, 1, -1, *([1] * (xg.dim() - 3)))
            y = y * self.weight.view(shape) + self.bias.view(shape)
        if self.track_running_stats:
            count = xg[0].numel() // xg.shape[2]  # values per statistic: g x H x W
            self._update_running(mean.flatten(1), var.flatten(1) * count / max(count - 1, 1), groups)
        return y.reshape(x.shape)

    @torch.no_grad()
    def _update_running(self, means: torch.Tensor, variances: torch.Tensor, groups: int) -> None:
        """G consecutive BN steps' updates of the running mean and (unbiased) variance, at once."""
        seen = self.num_batches_tracked
        m = self.momentum
        if m is None:  # cumulative average over every group seen (Alg. 2)
            total = seen.to(means.dtype)
            self.running_mean.mul_(total).add_(means.sum(0)).div_(total + groups)
            self.running_var.mul_(total).add_(variances.sum(0)).div_(total + groups)
        else:
            steps = torch.arange(groups - 1, -1, -1, dtype=means.dtype, device=means.device)
            weights = m * (1 - m) ** steps  # group i's weight after the later groups' decays
            keep = (1 - m) ** groups
            self.running_mean.mul_(keep).add_(weights @ means.detach())
            self.running_var.mul_(keep).add_(weights @ variances.detach())
        seen.add_(groups)


class GhostBatchNorm1d(_GhostBatchNorm, nn.BatchNorm1d):
    """Fully connected features [N, C]."""


class GhostBatchNorm2d(_GhostBatchNorm, nn.BatchNorm2d):
    """Conv feature maps [N, C, H, W]."""
