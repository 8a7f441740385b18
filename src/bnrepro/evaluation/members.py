"""The networks an evaluation averages: rebuilt from run checkpoints, or the published Caffe port.

A run's network is rebuilt from the run's own resolved config (<run_dir>/config.yaml, written by
train) with the same models.build_net that trained it, then given the checkpoint's weights: a Lightning
checkpoint of ClassifierModule, whose state dict keys carry the module's `net.` prefix. Its input
normalisation is the run's data.mean/std, so an ensemble may mix runs that normalised differently.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import yaml
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException
from torch import nn
from torchvision.transforms import v2

from bnrepro import safe_load
from bnrepro.data.images import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from bnrepro.errors import ConfigError, ReproError


class CheckpointError(ReproError, ValueError):
    """A checkpoint or run folder that cannot be evaluated; the message names the file."""


@dataclass
class Member:
    net: nn.Module
    preprocess: nn.Module  # float RGB in [0, 1], [N, 3, H, W] -> the network's input
    source: str  # what the eval.json lists under "checkpoints"
    model: str  # the model's name: the run's model.name, or "bn_inception (caffe port)"
    data: dict | None = None  # the run's `data` node (config.yaml): what it is evaluated on by default
    seed: int = 0  # the run's seed: a made data set (synthetic) is the run's own only with it

    @property
    def num_classes(self) -> int:
        # timm-style nets say it; otherwise (a port without the attribute) the last linear layer's width.
        if hasattr(self.net, "num_classes"):
            return int(self.net.num_classes)
        return [m for m in self.net.modules() if isinstance(m, nn.Linear)][-1].out_features


# eval_transform's Normalize step, applied on the device to the batch of crops.
Normalize = v2.Normalize


class CaffePreprocess(nn.Module):
    """The Caffe port's own preprocessing (RGB [0, 1] -> BGR 0-255 minus its mean), as a module."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        from bnrepro.models.caffe_port import caffe_preprocess

        return caffe_preprocess(x)


def run_dir_of(ckpt: Path) -> Path:
    """The run folder of a checkpoint: <run_dir>/checkpoints/<name>.ckpt (or a checkpoint beside config.yaml)."""
    return ckpt.parent.parent if ckpt.parent.name == "checkpoints" else ckpt.parent


def load_run_config(ckpt: Path):
    run_dir = run_dir_of(ckpt)
    path = run_dir / "config.yaml"
    if not path.is_file():
        raise CheckpointError(
            f"{path}: no such file. The network of {ckpt} is rebuilt from its run's resolved config; "
            f"expected the layout <run_dir>/config.yaml beside <run_dir>/checkpoints/{ckpt.name}."
        )
    try:
        return OmegaConf.create(yaml.safe_load(path.read_text()))
    except (yaml.YAMLError, ValueError) as e:
        raise CheckpointError(f"{path}: not a readable run config ({e})") from e


def load_state_dict(ckpt: Path) -> dict[str, torch.Tensor]:
    """The network's weights of a ClassifierModule checkpoint, without the `net.` prefix."""
    if not ckpt.is_file():
        raise CheckpointError(f"{ckpt}: no such checkpoint")
    try:
        state = safe_load.load(ckpt)  # weights only: a hostile pickle is refused before its code runs
    except ValueError as e:  # safe_load's errors name the file
        raise CheckpointError(str(e)) from None
    except OSError as e:  # unreadable (permissions, a folder)
        raise CheckpointError(f"{ckpt}: cannot read the checkpoint ({e})") from e
    if not isinstance(state, dict) or "state_dict" not in state:
        raise CheckpointError(f"{ckpt}: not a Lightning checkpoint (no 'state_dict')")
    weights = {k[len("net.") :]: v for k, v in state["state_dict"].items() if k.startswith("net.")}
    if not weights:
        raise CheckpointError(
            f"{ckpt}: its state_dict has no `net.` weights (not a ClassifierModule checkpoint)"
        )
    return weights


def net_config(cfg):
    """The run's `model.net` node; runs made before it existed stored model.arch / norm / kwargs."""
    if "net" in cfg.model:
        return cfg.model.net
    return OmegaConf.create({"_target_": "timm.create_model", "model_name": cfg.model.arch,
                             "norm": cfg.model.norm, "act_layer": cfg.activation.name, "init_seed": cfg.seed,
                             **cfg.model.kwargs})  # fmt: skip


def load_run_member(ckpt: str | Path) -> Member:
    from bnrepro.models import build_net  # imports timm and registers the project's networks

    ckpt = Path(ckpt)
    weights = load_state_dict(ckpt)  # first: a missing checkpoint is the likelier mistake
    cfg = load_run_config(ckpt)
    try:
        net = build_net(net_config(cfg))
        model = str(cfg.model.name)
    except (ConfigError, OmegaConfBaseException) as e:  # omegaconf's errors name a key the config lacks
        raise CheckpointError(f"{run_dir_of(ckpt) / 'config.yaml'}: cannot rebuild the network: {e}") from e
    try:
        net.load_state_dict(weights)
    except RuntimeError as e:  # missing / unexpected keys or shapes: names them
        raise CheckpointError(f"{ckpt}: weights do not fit the network of its run's config.yaml: {e}") from e
    mean = OmegaConf.select(cfg, "data.mean", default=list(IMAGENET_DEFAULT_MEAN))
    std = OmegaConf.select(cfg, "data.std", default=list(IMAGENET_DEFAULT_STD))
    data = OmegaConf.to_container(cfg.data) if isinstance(cfg.get("data"), DictConfig) else None
    return Member(net.eval(), Normalize(mean, std), str(ckpt), model, data, int(cfg.get("seed") or 0))


def load_caffe_member(weights_path: str | None) -> Member:
    """The published BN-Inception weights (models/caffe_port.py); `weights_path` a local .pth or None."""
    try:
        from bnrepro.models.caffe_port import load_caffe_port
    except ImportError as e:
        raise CheckpointError(
            f"weights=caffe_port needs bnrepro.models.caffe_port, which is missing: {e}"
        ) from e
    try:
        net, _ = load_caffe_port(weights_path)  # its preprocess dict is what caffe_preprocess applies
    except (OSError, RuntimeError, ValueError) as e:  # a missing, unreadable or mismatched weights file
        raise CheckpointError(f"weights=caffe_port from {weights_path or 'its default source'}: {e}") from e
    return Member(
        net.eval(), CaffePreprocess(), f"caffe_port:{weights_path or 'default'}", "bn_inception (caffe port)"
    )


def load_members(cfg) -> list[Member]:
    if cfg.weights == "caffe_port":
        return [load_caffe_member(cfg.weights_path)]
    paths = [cfg.ckpt] if cfg.ckpt else list(cfg.eval.ensemble)
    members = [load_run_member(p) for p in paths]
    classes = {m.num_classes for m in members}
    if len(classes) > 1:
        raise CheckpointError(
            "ensemble members predict different numbers of classes: "
            + ", ".join(f"{m.source} {m.num_classes}" for m in members)
        )
    return members
