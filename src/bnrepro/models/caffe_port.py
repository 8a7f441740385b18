"""The public BN-Inception weights (Xiong's Caffe model as ported by Cadene's `pretrainedmodels`) in our net.

The port's layers carry Caffe's names (`inception_3a_double_3x3_1`, its BN `..._bn`); the key map below
is built from the same Figure 5 rows as the net, so a module without a 1x1 branch or a pool projection
(3c, 4e) has no entry for it. The port's convs keep a bias in front of BN; ours drop it (Sec. 3), so the
bias is folded into the BN statistics: BN(conv(x) + b) with mean mu equals BN(conv(x)) with mean mu - b.
The architectures match as they stand (ceil-mode pools, avg pools counting the padding, no LRN,
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

from bnrepro.models.bn_inception import CAFFE_MEAN_BGR, CAFFE_WEIGHTS_URL, FIGURE5

WEIGHTS_URL = CAFFE_WEIGHTS_URL  # also the url of timm's bn_inception.caffe_in1k
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


def layer_map() -> dict[str, str]:
    """Port layer name (conv; its BN is the same name + `_bn`) -> our ConvNormAct module path."""
    layers = {
        "conv1_7x7_s2": "stem.conv1",
        "conv2_3x3_reduce": "stem.conv2_reduce",
        "conv2_3x3": "stem.conv2",
    }
    for row in FIGURE5:
        port, ours = f"inception_{row.name}", f"blocks.inception_{row.name}"
        branches = {
            "1x1": "branch1x1" if row.n1x1 else None,
            "3x3_reduce": "branch3x3.0",
            "3x3": "branch3x3.1",
            "double_3x3_reduce": "branch3x3dbl.0",
            "double_3x3_1": "branch3x3dbl.1",
            "double_3x3_2": "branch3x3dbl.2",
            "pool_proj": "branch_pool.1" if row.proj else None,  # branch_pool.0 is the pool itself
        }
        layers.update({f"{port}_{k}": f"{ours}.{v}" for k, v in branches.items() if v})
    return layers


def convert_state_dict(port_sd: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The port's state dict in our names, conv biases folded into BN's running mean.

    Raises KeyMapError naming every port key that the map does not use and every port key it misses.
    """
    out, wanted, optional, ports = {}, set(), set(), layer_map()
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
    weights = convert_state_dict(read_state_dict(source, map_location))
    net = timm.create_model(
        "bn_inception.caffe_in1k",
        pretrained=True,
        rgb_to_bgr=False,
        **PORT_KWARGS,
        pretrained_cfg_overlay=dict(state_dict=weights),
    )  # strict: every key, every shape
    return net.eval(), copy.deepcopy(PREPROCESS)


def caffe_preprocess(x_rgb01: torch.Tensor) -> torch.Tensor:
    """RGB floats in [0, 1], channels at dim -3 (after the crop, no normalisation) -> the port's input."""
    mean = torch.tensor(PREPROCESS["mean"], dtype=x_rgb01.dtype, device=x_rgb01.device).view(3, 1, 1)
    return x_rgb01.flip(-3) * 255.0 - mean  # flip: RGB -> BGR; the mean is listed in BGR order
