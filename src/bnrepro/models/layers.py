"""The one norm-layer factory and the one activation factory every variant goes through.

Variants are configs, not code: `model.norm` switches BN on or off and `activation.name` picks ReLU or
sigmoid for a whole network, with no per-variant branches in the model files.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

from timm.layers import get_act_layer, get_norm_layer
from torch import nn

from bnrepro.models.ghost_bn import GhostBatchNorm1d, GhostBatchNorm2d

NORMS = ("batchnorm", "none")


def make_norm_layer(name: str, dim: int, bn_group: int | None = None) -> Callable[[int], nn.Module] | None:
    """Norm layer class for `dim`-d features (1: fully connected, 2: conv maps), None for no norm.

    BatchNorm keeps PyTorch's defaults, the project's CHOICE for what the paper leaves open
    (docs/paper.md Sec. 1): eps 1e-5, gamma=1, beta=0, momentum 0.1 for the running averages.
    `bn_group`: examples per BN statistic in training (ghost BN, models/ghost_bn.py); None: the whole
    per-device batch.
    """
    if name == "none":
        return None
    if name == "batchnorm" and bn_group is not None:
        if bn_group < 1:
            raise ValueError(f"bn_group={bn_group} must be a positive number of examples (or null)")
        return partial(GhostBatchNorm1d if dim == 1 else GhostBatchNorm2d, group=bn_group)
    if name == "batchnorm":
        return get_norm_layer("batchnorm1d" if dim == 1 else "batchnorm2d")
    raise ValueError(f"unknown norm {name!r}; expected one of {', '.join(NORMS)}")


def make_act_layer(name: str) -> type[nn.Module]:
    """Activation class from timm's registry by name (sigmoid, relu, ...)."""
    act = get_act_layer(name)
    if act is None:
        raise ValueError(f"unknown activation {name!r}")
    return act
