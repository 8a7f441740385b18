"""Networks of the paper, registered with timm on import (timm.create_model("bn_inception", ...))."""

from __future__ import annotations

from bnrepro.models import bn_inception, mlp  # noqa: F401  (registers the entry points)


def build_net(net_cfg):
    """The network of a `model.net` config node (`_target_: timm.create_model` + the architecture's
    arguments); an argument the architecture refuses is a ConfigError naming model.net."""
    from omegaconf import OmegaConf

    from bnrepro.config.build import build

    # unknown arch, a keyword it does not take, a bad value: a ConfigError naming model.net's values
    return build(net_cfg, f"model.net={OmegaConf.to_container(net_cfg, resolve=True)}")
