"""The public BN-Inception weights (Xiong's Caffe model as ported by Cadene's `pretrainedmodels`) in our net.

The port's layers carry Caffe's names (`inception_3a_double_3x3_1`, its BN `..._bn`); the key map below
is built from the net it loads into (timm's checkpoint-filter convention, `convert_state_dict(sd, net)`),
so a module without a 1x1 branch or a pool projection (3c, 4e) has no entry for it. The port's convs keep
a bias in front of BN; ours drop it (Sec. 3), so the bias is folded into the BN statistics: BN(conv(x) + b)
with mean mu equals BN(conv(x)) with mean mu - b. The architectures match as they stand (ceil-mode pools, avg pools counting the padding, no LRN,
column-literal channels); only the port's fixed 7x7 final pool is our global average pool, the same at 224.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Mapping
from pathlib import Path

import timm
import torch
from torch import nn

# This file sits below models/bn_inception.py (which reads and maps the weights for its caffe_in1k tag)
# and imports nothing of it: load_caffe_port reaches the net through timm's registry, filled when the
# package bnrepro.models, which Python imports before this module, imported bn_inception.

# The weights' URL, also timm's bn_inception.caffe_in1k's.
WEIGHTS_URL = "http://data.lip6.fr/cadene/pretrainedmodels/bn_inception-52deb4733.pth"
CAFFE_MEAN_BGR = (104, 117, 128)  # Caffe's input: BGR in 0-255 minus this mean, no scaling
# The constructor arguments that rebuild the port: the table's channels (4c/4d pool projections of 128,
# 4e 1056 wide), plain 7x7 stem, no LRN, no aux heads (the port has none of these), no dropout.
PORT_KWARGS = dict(norm="batchnorm", act_layer="relu", num_classes=1000, channel_plan="literal",
                   stem="plain", lrn=False, aux_logits=False, drop_rate=0.0, global_pool="avg")  # fmt: skip
# The port's input (pretrainedmodels' pretrained_settings): BGR in 0-255, minus a per-channel mean in
# BGR order, no division; evaluated as a 224 centre crop of a 256 resize. timm's bn_inception.caffe_in1k
# expresses the same for timm's RGB transforms (its pretrained_cfg, and a net that reverses the channels).
PREPROCESS = dict(input_space="BGR", input_range=255, mean=list(CAFFE_MEAN_BGR), std=[1, 1, 1],
                  image_size=224, resize_size=256)  # fmt: skip

BN_TENSORS = ("weight", "bias", "running_mean", "running_var")


class KeyMapError(ValueError):
    """The state dict's keys are not the port's: a key we do not map, or a port key that is absent."""


class WeightsNotFoundError(FileNotFoundError):
    """The weights file named by the caller does not exist."""


class WeightsLoadError(RuntimeError):
    """The weights could not be downloaded, or the file is not a readable state dict (truncated, corrupt)."""


def _how_to_get() -> str:
    return (
        f"Download {WEIGHTS_URL} by hand and pass weights_path=<file> "
        "(src/eval.py weights=caffe_port weights_path=<file>, or load_caffe_port('<file>'); with timm: "
        "timm.create_model('bn_inception.caffe_in1k', pretrained=True, "
        "pretrained_cfg_overlay=dict(file='<file>')))."
    )


# Our conv -> norm -> act layers' paths (models/bn_inception.py) -> the port's layer names.
STEM_NAMES = {
    "stem.conv1": "conv1_7x7_s2",
    "stem.conv2_reduce": "conv2_3x3_reduce",
    "stem.conv2": "conv2_3x3",
}
BRANCH_NAMES = {
    "branch1x1": "1x1",
    "branch3x3.0": "3x3_reduce",
    "branch3x3.1": "3x3",
    "branch3x3dbl.0": "double_3x3_reduce",
    "branch3x3dbl.1": "double_3x3_1",
    "branch3x3dbl.2": "double_3x3_2",
    "branch_pool.1": "pool_proj",  # branch_pool.0 is the pool itself
}


def layer_map(net: nn.Module) -> dict[str, str]:
    """Port layer name (conv; its BN is the same name + `_bn`) -> the module path of `net`'s conv-norm-act.

    Raises KeyMapError for a conv layer the port has no counterpart of (auxiliary heads, a separable stem).
    """
    layers = {}
    for path, m in net.named_modules():
        if {name for name, _ in m.named_children()} != {"conv", "norm", "act"}:
            continue
        block, _, branch = path.removeprefix("blocks.").partition(".")  # inception_3a, branch3x3.0
        in_block = path.startswith("blocks.") and branch in BRANCH_NAMES
        port = STEM_NAMES.get(path) or (f"{block}_{BRANCH_NAMES[branch]}" if in_block else None)
        if port is None or not isinstance(m.conv, nn.Conv2d):
            raise KeyMapError(f"{path}: the Caffe port has no such layer (build the net with {PORT_KWARGS})")
        layers[port] = path
    return layers


def convert_state_dict(port_sd: Mapping[str, torch.Tensor], net: nn.Module) -> dict[str, torch.Tensor]:
    """The port's state dict in `net`'s names, conv biases folded into BN's running mean (timm's
    `pretrained_filter_fn`). A state dict already in the net's names (it has `fc.weight`) passes as it is.

    Raises KeyMapError naming every port key that the map does not use and every port key it misses.
    """
    if "fc.weight" in port_sd and "last_linear.weight" not in port_sd:
        return dict(port_sd)
    out, wanted, optional, ports = {}, set(), set(), layer_map(net)
    for port in ports:
        wanted |= {f"{port}.weight", f"{port}.bias"} | {f"{port}_bn.{t}" for t in BN_TENSORS}
        optional.add(f"{port}_bn.num_batches_tracked")  # absent from the 2017 file, present in a fresh port
    wanted |= {"last_linear.weight", "last_linear.bias"}
    unused = sorted(set(port_sd) - wanted - optional)
    missing = sorted(wanted - set(port_sd))
    if unused or missing:
        raise KeyMapError(
            "not the BN-Inception Caffe port's state dict:"
            + (f" unmapped key(s) {', '.join(unused)};" if unused else "")
            + (f" missing key(s) {', '.join(missing)}" if missing else "")
        )
    for port, ours in ports.items():
        bn = f"{port}_bn"
        out[f"{ours}.conv.weight"] = port_sd[f"{port}.weight"]
        out[f"{ours}.norm.weight"] = port_sd[f"{bn}.weight"]
        out[f"{ours}.norm.bias"] = port_sd[f"{bn}.bias"]
        out[f"{ours}.norm.running_mean"] = port_sd[f"{bn}.running_mean"] - port_sd[f"{port}.bias"]  # the fold
        out[f"{ours}.norm.running_var"] = port_sd[f"{bn}.running_var"]
        out[f"{ours}.norm.num_batches_tracked"] = port_sd.get(
            f"{bn}.num_batches_tracked", torch.tensor(0, dtype=torch.long)
        )
    out["fc.weight"], out["fc.bias"] = port_sd["last_linear.weight"], port_sd["last_linear.bias"]
    return out


def read_state_dict(source: str | os.PathLike | None, map_location="cpu") -> Mapping[str, torch.Tensor]:
    """The port's state dict from a local file, a URL, or None for WEIGHTS_URL (cached by torch.hub).

    Raises WeightsNotFoundError / WeightsLoadError saying how to get the file when it cannot.
    """
    # weights_only: the tensors and a dict, nothing executable (it also reads the 2017 legacy format).
    if source is None or str(source).startswith(("http://", "https://")):
        url = str(source or WEIGHTS_URL)
        cached = Path(torch.hub.get_dir(), "checkpoints", os.path.basename(url))
        try:
            return torch.hub.load_state_dict_from_url(url, map_location=map_location, weights_only=True)
        except OSError as e:  # urllib's URLError / HTTPError: offline, host down, 404
            raise WeightsLoadError(f"could not download {url} ({e}). {_how_to_get()}") from e
        except Exception as e:  # torch.load raises many types for bad bytes
            raise WeightsLoadError(
                f"{cached}: unreadable ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}); "
                f"delete it to download again. {_how_to_get()}"
            ) from e
    path = Path(source)
    if not path.is_file():
        raise WeightsNotFoundError(f"no weights file {path}. {_how_to_get()}")
    try:
        sd = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # truncated zip, truncated legacy pickle, not a torch file: many exception types
        raise WeightsLoadError(
            f"{path}: not a readable PyTorch state dict, truncated or corrupt "
            f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}). {_how_to_get()}"
        ) from e
    if not isinstance(sd, Mapping):
        raise WeightsLoadError(f"{path}: holds a {type(sd).__name__}, not a state dict. {_how_to_get()}")
    return sd


def load_caffe_port(source: str | os.PathLike | None = None, map_location="cpu") -> tuple[nn.Module, dict]:
    """Our BN-Inception with the public weights, in eval mode, and the preprocessing they expect.

    `source`: a local .pth file, a URL, or None for the port's URL (cached by torch.hub). The net takes
    the port's own input (BGR, `caffe_preprocess`), as src/eval.py feeds it; its pretrained_cfg says so
    (mean in BGR order). For timm's RGB transforms use timm.create_model("bn_inception.caffe_in1k",
    pretrained=True), the same weights behind a channel reversal.
    """
    net = timm.create_model(
        "bn_inception.caffe_in1k",
        pretrained=True,
        rgb_to_bgr=False,
        **PORT_KWARGS,
        pretrained_cfg_overlay=dict(state_dict=read_state_dict(source, map_location)),
    )  # mapped by convert_state_dict, then loaded strictly: every key, every shape
    return net.eval(), copy.deepcopy(PREPROCESS)


def caffe_preprocess(x_rgb01: torch.Tensor) -> torch.Tensor:
    """RGB floats in [0, 1], channels at dim -3 (after the crop, no normalisation) -> the port's input."""
    mean = torch.tensor(PREPROCESS["mean"], dtype=x_rgb01.dtype, device=x_rgb01.device).view(3, 1, 1)
    return x_rgb01.flip(-3) * 255.0 - mean  # flip: RGB -> BGR; the mean is listed in BGR order
