"""BN-Inception, the ImageNet network of the paper (Sec. 4.2, appendix table, Figure 5).

GoogLeNet with each 5x5 conv replaced by two stacked 3x3 convs ("double 3x3"), three 28x28 modules,
no pooling layers between modules (modules 3c and 4e reduce the grid with stride-2 convs and a max
pool), and no fully connected layer but the classifier. `FIGURE5` below is the paper's table, one row
per module, columns in the paper's order; output shapes at 224x224 input are in the comments.

Norm and activation come in as factories (models/layers.py): `norm="batchnorm"` puts BN between every
conv and its nonlinearity with the conv bias dropped (Sec. 3), `norm="none"` is the Inception baseline;
`act_layer` is ReLU or sigmoid for the whole net. The other switches of Sec. 4.2.1 (LRN, dropout) and
the open points of docs/paper.md Sec. 3 (channel plan, separable stem, auxiliary heads) are constructor
arguments set by the variant's config.

Any input size runs (64 and up, as timm's and torchvision's nets; 240, 299, 331 included): the stride-2
modules pool to the grid of their convs (`HalvingMaxPool`), to the bit as Caffe's pool wherever that one
ran (224x224 included). The net has timm's whole model interface (forward_features / forward_head,
reset_classifier, features_only, forward_intermediates, TorchScript, torch.fx, device/dtype at
construction); the published Caffe weights are its pretrained tag `bn_inception.caffe_in1k`
(models/caffe_port.py).

`width` scales every channel count of Figure 5, stem included, and keeps its structure (module kinds,
strides, branch order, pooling): a narrow net for small proxies (docs/paper.md Sec. 3). Width 1.0 is
the table itself, to the bit.
"""

# No `from __future__ import annotations` here: torch.fx copies forward's annotations into the code it
# generates, and a string annotation ("torch.Tensor") comes out as a name TorchScript cannot resolve
# (timm's test_model_forward_fx_torchscript: "Unknown type name '_torch_Tensor_'").
import dataclasses
import functools
import math
from collections import OrderedDict
from collections.abc import Callable
from typing import NamedTuple

import torch
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.layers import create_classifier, get_device_dtype, make_divisible, register_notrace_module
from timm.models import build_model_with_cfg, generate_default_cfgs, register_model, resolve_pretrained_cfg
from torch import nn
from torch.nn import functional as F

from bnrepro.models.caffe_port import CAFFE_MEAN_BGR, WEIGHTS_URL, convert_state_dict, read_state_dict
from bnrepro.models.layers import make_act_layer, make_norm_layer


class Row(NamedTuple):
    """One inception module of Figure 5; a 0 in `n1x1` / `proj` means the branch is absent."""

    name: str
    stride: int  # 2 for 3c and 4e: last conv of each conv branch and the pool have stride 2
    n1x1: int
    n3x3red: int
    n3x3: int
    ndbl3x3red: int
    ndbl3x3: int
    pool: str  # "avg" | "max", 3x3
    proj: int  # 1x1 projection after the pool; 0 = pass-through

    def out_channels(self, in_channels: int) -> int:
        return self.n1x1 + self.n3x3 + self.ndbl3x3 + (self.proj or in_channels)

    def scaled(self, round_chs: Callable[[int], int]) -> "Row":
        """This row with every channel count passed through `round_chs` (the net's `scale_channels` at its
        width and divisor); an absent branch stays absent."""
        return self._replace(**{f: round_chs(getattr(self, f)) for f in CHANNEL_FIELDS})


CHANNEL_FIELDS = ("n1x1", "n3x3red", "n3x3", "ndbl3x3red", "ndbl3x3", "proj")


def scale_channels(channels: int, width: float, divisor: int) -> int:
    """A channel count at `width`: timm's rule for width multipliers (EfficientNet's, MobileNet's): the nearest
    multiple of `divisor` (8 as timm's), at least `divisor`, and never more than 10% below channels x width;
    0 (no branch) stays 0. Every count in Figure 5 is a multiple of 32, so width 1.0 leaves the table as
    printed, width 0.25 is every count's exact quarter, and width 0.125 its exact eighth with divisor 4
    (with 8, the eighths 4, 12, 20, 28, 44 would round up to 8, 16, 24, 32, 48 and bend the proportions)."""
    return make_divisible(channels * width, divisor) if channels else 0


# Figure 5, column-literal. Output at 224x224 input (channels as the columns sum, see docs/paper.md Sec. 3).
FIGURE5 = (
    #   name  s  #1x1 #3x3r #3x3 dbl-r  dbl  pool  proj
    Row("3a", 1,   64,   64,  64,   64,  96, "avg",  32),  # 28x28x256
    Row("3b", 1,   64,   64,  96,   64,  96, "avg",  64),  # 28x28x320
    Row("3c", 2,    0,  128, 160,   64,  96, "max",   0),  # 14x14x576 (table prints the input size 28x28)
    Row("4a", 1,  224,   64,  96,   96, 128, "avg", 128),  # 14x14x576
    Row("4b", 1,  192,   96, 128,   96, 128, "avg", 128),  # 14x14x576
    Row("4c", 1,  160,  128, 160,  128, 160, "avg", 128),  # 14x14x608 (table prints 576)
    Row("4d", 1,   96,  128, 192,  160, 192, "avg", 128),  # 14x14x608 (table prints 576)
    Row("4e", 2,    0,  128, 192,  192, 256, "max",   0),  # 7x7x1056  (table prints 14x14x1024)
    Row("5a", 1,  352,  192, 320,  160, 224, "avg", 128),  # 7x7x1024
    Row("5b", 1,  352,  192, 320,  192, 224, "max", 128),  # 7x7x1024
)  # fmt: skip

# TF-slim's inception_v2 projects 4c and 4d's pool branch to 96, so they output the printed 576 and 4e 1024.
CHANNEL_PLANS = {
    "literal": FIGURE5,
    "slim": tuple(r._replace(proj=96) if r.name in ("4c", "4d") else r for r in FIGURE5),
}
AUX_AFTER = ("4a", "4d")  # GoogLeNet's auxiliary classifiers sit on the outputs of 4a and 4d
STEM = (64, 64, 192)  # Figure 5's first rows: conv 7x7/2 (64), then conv 3x3/1 as 1x1 64 -> 3x3 192


class ConvNormAct(nn.Sequential):
    """conv -> norm -> act; the conv has a bias only without norm (BN's beta replaces it, Sec. 3).

    `depth_multiplier` makes the conv separable: a depthwise conv with that many filters per input
    channel, then a 1x1 pointwise conv (the paper's first layer, Sec. 4.2: "depth multiplier 8").
    """

    def __init__(
        self, cin, cout, kernel, stride=1, norm_layer=None, act_layer=nn.ReLU, depth_multiplier=None, **dd
    ):
        pad, bias = kernel // 2, norm_layer is None
        if depth_multiplier:
            mid = cin * depth_multiplier
            conv = nn.Sequential(
                nn.Conv2d(cin, mid, kernel, stride, pad, groups=cin, bias=False, **dd),  # depthwise
                nn.Conv2d(mid, cout, 1, bias=bias, **dd),  # pointwise
            )
        else:
            conv = nn.Conv2d(cin, cout, kernel, stride, pad, bias=bias, **dd)
        super().__init__(OrderedDict(
            conv=conv, norm=norm_layer(cout, **dd) if norm_layer else nn.Identity(), act=act_layer(),
        ))  # fmt: skip


@register_notrace_module  # a leaf for torch.fx (its padding depends on the input's shape)
class HalvingMaxPool(nn.Module):
    """3x3/2 max pool of the stride-2 modules (3c, 4e): a ceil(H/2) x ceil(W/2) grid, as their convs give.

    The convs beside it (3x3/2, padding 1) give ceil(H/2). Caffe's pool (ceil mode, no padding), which
    the published weights were trained with, gives ceil((H-1)/2): the same at an even H (28 -> 14 and
    14 -> 7 at a 224 input) but one short at an odd H, where the concat failed (e.g. 240, 299, 331).
    This pool pads as TF's "SAME" does (TF-slim's inception_v2 pads every layer so): nothing at an even
    H, so the windows and every output there are Caffe's to the bit; one row (column) on each side at an
    odd H (W), which the max ignores, so the windows are centred on the convs' taps. It computes timm's
    MaxPool2dSame(3, 2) without that layer's padded copy of the input.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pad = [x.shape[-2] % 2, x.shape[-1] % 2]  # 0 for an even side, 1 for an odd one
        return F.max_pool2d(x, [3, 3], [2, 2], pad, [1, 1], True)  # ceil mode: the last window on the edge


def _pool(kind: str, stride: int) -> nn.Module:
    # Stride 2 (3c, 4e): the grid halves as printed (28 -> 14 -> 7) and as the convs beside it, at any size.
    # Average pools count the zero padding (Caffe's convention, which the public BN-Inception weights use).
    if stride == 2:
        return HalvingMaxPool()
    if kind == "max":
        return nn.MaxPool2d(3, 1, padding=1, ceil_mode=True)
    return nn.AvgPool2d(3, 1, padding=1, ceil_mode=True, count_include_pad=True)


class ReverseChannels(nn.Module):
    """RGB -> BGR (or back): the channel order reversed, for weights trained on BGR input (Caffe's)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flip(1)


class InceptionModule(nn.Module):
    """Four parallel branches, concatenated along channels: 1x1 | 1x1 -> 3x3 | 1x1 -> 3x3 -> 3x3 | pool -> 1x1."""

    def __init__(self, cin: int, row: Row, norm_layer, act_layer, **dd):
        super().__init__()
        s = row.stride

        def cna(i, o, k, stride=1):
            return ConvNormAct(i, o, k, stride, norm_layer, act_layer, **dd)

        self.branch1x1 = cna(cin, row.n1x1, 1) if row.n1x1 else None
        self.branch3x3 = nn.Sequential(cna(cin, row.n3x3red, 1), cna(row.n3x3red, row.n3x3, 3, s))
        self.branch3x3dbl = nn.Sequential(
            cna(cin, row.ndbl3x3red, 1),
            cna(row.ndbl3x3red, row.ndbl3x3, 3),
            cna(row.ndbl3x3, row.ndbl3x3, 3, s),
        )
        pool = _pool(row.pool, s)
        self.branch_pool = nn.Sequential(pool, cna(cin, row.proj, 1)) if row.proj else pool
        self.out_channels = row.out_channels(cin)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        branches: list[torch.Tensor] = []  # a loop, not a comprehension with `if`: TorchScript takes it
        if self.branch1x1 is not None:  # 3c and 4e have no 1x1 branch
            branches.append(self.branch1x1(x))
        branches += [self.branch3x3(x), self.branch3x3dbl(x), self.branch_pool(x)]
        return torch.cat(branches, dim=1)


class AuxHead(nn.Module):
    """GoogLeNet's auxiliary classifier: 5x5/3 avg pool -> 1x1 conv 128 -> fc 1024 -> dropout (0.7) -> fc.

    Its widths (128, 1024) scale as every other channel count of the net (`round_chs`)."""

    def __init__(self, cin: int, num_classes: int, norm_layer, act_layer, drop_rate, round_chs, **dd):
        super().__init__()
        conv, hidden = round_chs(128), round_chs(1024)
        self.pool = nn.AdaptiveAvgPool2d(4)  # = 5x5/3 average pool on the 14x14 grid, any input size
        self.conv = ConvNormAct(cin, conv, 1, 1, norm_layer, act_layer, **dd)
        self.fc1 = nn.Linear(conv * 4 * 4, hidden, **dd)
        self.act = act_layer()
        self.drop = nn.Dropout(drop_rate)
        self.fc2 = nn.Linear(hidden, num_classes, **dd) if num_classes else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(self.pool(x)).flatten(1)
        return self.fc2(self.drop(self.act(self.fc1(x))))


def _take_indices(n: int, indices: int | list[int] | None) -> tuple[list[int], int]:
    """timm's feature indices: None all n, an int k the last k, a sequence those (negative from the end)."""
    if indices is None:
        indices = n
    if isinstance(indices, int):
        take = list(range(n - indices, n)) if 0 < indices <= n else []
    else:
        take = [i + n if i < 0 else i for i in indices]
    if not take or not all(0 <= i < n for i in take):
        raise ValueError(f"feature indices {indices!r}: expected 1..{n} or indices in -{n}..{n - 1}")
    return take, max(take)


class BNInception(nn.Module):
    """BN-Inception with timm's interface: forward_features -> [B, 1024, 7, 7], forward_head -> logits.

    In training mode with `aux_logits=True`, forward returns (logits, aux_4a, aux_4d) (not under
    TorchScript, which returns the logits only). `global_pool` is any of timm's (avg, max, avgmax,
    catavgmax, ...; "" with num_classes=0: forward returns the last feature map). `rgb_to_bgr` reverses
    the input's channels first: RGB images (timm's transforms) for BGR weights (the Caffe model's).
    `width` scales every channel count (`scale_channels`, to multiples of `channel_divisor`; the separable
    stem's depth multiplier becomes round(8 x width), at least 1, so the depthwise conv's channels stay a
    multiple of its input's).
    `device` / `dtype`: where the parameters are made (timm's factory arguments; torch.device("meta")
    builds the structure without memory).
    """

    def __init__(
        self,
        num_classes: int = 1000,
        in_chans: int = 3,
        norm: str = "batchnorm",
        act_layer: str = "relu",
        bn_group: int | None = None,
        channel_plan: str = "literal",
        stem: str = "plain",
        lrn: bool = False,
        drop_rate: float = 0.0,
        aux_logits: bool = False,
        aux_drop_rate: float = 0.7,
        global_pool: str = "avg",
        init_scale: float = 1.0,
        init_seed: int = 0,
        rgb_to_bgr: bool = False,
        width: float = 1.0,
        channel_divisor: int = 8,
        device=None,
        dtype=None,
    ):
        super().__init__()
        if channel_plan not in CHANNEL_PLANS:
            raise ValueError(f"channel_plan={channel_plan!r}: expected one of {', '.join(CHANNEL_PLANS)}")
        if stem not in ("plain", "separable"):
            raise ValueError(f"stem={stem!r}: expected plain or separable")
        if not width > 0:
            raise ValueError(f"width={width!r}: expected a positive multiplier of Figure 5's channels (1.0)")
        dd = dict(device=device, dtype=dtype)
        if not (isinstance(channel_divisor, int) and channel_divisor >= 1):
            raise ValueError(f"channel_divisor={channel_divisor!r}: expected a whole number >= 1 (timm's 8)")
        round_chs = functools.partial(scale_channels, width=width, divisor=channel_divisor)
        c1, c2_reduce, c2 = (round_chs(c) for c in STEM)
        norm_layer, act = make_norm_layer(norm, dim=2, bn_group=bn_group), make_act_layer(act_layer)
        self.num_classes, self.drop_rate, self.aux_logits = num_classes, drop_rate, aux_logits
        self.in_chans = in_chans

        def lrn_layer():  # GoogLeNet's LRN: 5 channels, alpha 1e-4, beta 0.75
            return nn.LocalResponseNorm(5, alpha=1e-4, beta=0.75) if lrn else nn.Identity()

        # RGB -> BGR for the Caffe weights, else nothing. Registered first as it runs first: timm's
        # FeatureListNet runs the modules in the order they are registered.
        self.to_bgr = ReverseChannels() if rgb_to_bgr else nn.Identity()
        depth_multiplier = max(1, round(8 * width)) if stem == "separable" else None
        self.stem = nn.Sequential(OrderedDict(
            conv1=ConvNormAct(in_chans, c1, 7, 2, norm_layer, act,      # 112x112x64
                              depth_multiplier=depth_multiplier, **dd),
            pool1=nn.MaxPool2d(3, 2, ceil_mode=True),                   # 56x56x64
            lrn1=lrn_layer(),                                           # GoogLeNet: LRN after the first pool
            conv2_reduce=ConvNormAct(c1, c2_reduce, 1, 1, norm_layer, act, **dd),  # 56x56x64
            conv2=ConvNormAct(c2_reduce, c2, 3, 1, norm_layer, act, **dd),         # 56x56x192
            lrn2=lrn_layer(),                                           # ... and after the second conv
            pool2=nn.MaxPool2d(3, 2, ceil_mode=True),                   # 28x28x192
        ))  # fmt: skip
        blocks, cin, reduction = [], c2, 8  # the stem leaves a 28x28 grid: 8x smaller than the input
        # timm's features_only taps: the last layer at each grid size (reductions 2, 4, 8, 16, 32).
        self.feature_info = [
            dict(num_chs=c1, reduction=2, module="stem.conv1"),
            dict(num_chs=c2, reduction=4, module="stem.conv2"),
        ]
        aux = {}
        plan = [row.scaled(round_chs) for row in CHANNEL_PLANS[channel_plan]]
        for i, row in enumerate(plan):
            block = InceptionModule(cin, row, norm_layer, act, **dd)
            name, cin, reduction = f"inception_{row.name}", block.out_channels, reduction * row.stride
            blocks.append((name, block))
            if aux_logits and row.name in AUX_AFTER:
                aux[name] = AuxHead(cin, num_classes, norm_layer, act, aux_drop_rate, round_chs, **dd)
            if i + 1 == len(plan) or plan[i + 1].stride == 2:
                self.feature_info.append(dict(num_chs=cin, reduction=reduction, module=f"blocks.{name}"))
        self.blocks = nn.Sequential(OrderedDict(blocks))
        self.aux = nn.ModuleDict(aux)  # after the blocks: timm's feature extraction walks modules in order
        self.num_features = cin  # 1024 (literal and slim plans, width 1.0)
        # avg: the paper's 7x7/1 average pool at 224. Dropout: Inception 40% (GoogLeNet), BN variants none
        # (Sec. 4.2.1). The classifier takes the pooled width (2 x 1024 for catavgmax).
        self.global_pool, self.head_drop, self.fc = create_classifier(
            cin, num_classes, pool_type=global_pool, drop_rate=drop_rate, **dd
        )
        self.head_hidden_size = cin * self.global_pool.feat_mult()
        self.init_weights(init_scale, init_seed)

    @torch.no_grad()
    def init_weights(self, scale: float = 1.0, seed: int = 0) -> None:
        """CHOICE (the paper gives no init): He-normal convs (fan-in), N(0, 0.01) classifiers, zero biases.

        A private generator makes the draw the same for every variant of one seed, with or without BN
        (dropping conv biases would otherwise shift a shared RNG). `scale` multiplies the conv std (the
        Figure 4 ensemble's "larger initial weights").
        """
        gen = torch.Generator().manual_seed(seed)

        def draw(weight: torch.Tensor, std: float) -> None:
            # Drawn in float32 on the CPU generator, then copied: the same weights on any device and
            # dtype (a meta tensor has no values to fill).
            if not weight.is_meta:
                weight.copy_(torch.empty(weight.shape).normal_(0.0, std, generator=gen))

        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                fan_in = m.in_channels // m.groups * m.kernel_size[0] * m.kernel_size[1]
                draw(m.weight, scale * math.sqrt(2.0 / fan_in))
            elif isinstance(m, nn.Linear):
                draw(m.weight, 0.01)
            if isinstance(m, (nn.Conv2d, nn.Linear)) and m.bias is not None:
                m.bias.zero_()

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(self.stem(self.to_bgr(x)))

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.head_drop(self.global_pool(x))
        return x if pre_logits else self.fc(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.aux_logits and self.training and not torch.jit.is_scripting():
            return self._forward_with_aux(x)
        return self.forward_head(self.forward_features(x))

    @torch.jit.unused
    def _forward_with_aux(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        x, aux = self.stem(self.to_bgr(x)), []
        for name, block in self.blocks.named_children():
            x = block(x)
            if name in self.aux:
                aux.append(self.aux[name](x))
        return (self.forward_head(x), *aux)

    def _feature_layers(self) -> list[tuple[str, nn.Module]]:
        """The layers forward_features runs, in order, by the names `feature_info` taps them under."""
        layers = [("to_bgr", self.to_bgr)]
        for part in ("stem", "blocks"):
            layers += [(f"{part}.{name}", layer) for name, layer in getattr(self, part).named_children()]
        return layers

    def forward_intermediates(
        self,
        x: torch.Tensor,
        indices: int | list[int] | None = None,
        norm: bool = False,
        stop_early: bool = False,
        output_fmt: str = "NCHW",
        intermediates_only: bool = False,
    ) -> list[torch.Tensor] | tuple[torch.Tensor, list[torch.Tensor]]:
        """timm's feature API: the outputs of the `feature_info` taps, and the final features.

        Args:
            indices: the last n taps if an int, those listed if a sequence (negative from the end), all
                five if None. Taps 0-1 are stem.conv1 and stem.conv2 (reductions 2, 4), taps 2-4 the
                last module at each grid (3b, 4d, 5b; reductions 8, 16, 32).
            norm: unused (no final norm layer).
            stop_early: stop after the last tap asked for (the returned features are then its output).
            output_fmt: NCHW only.
            intermediates_only: return only the list of tap outputs.

        Auxiliary heads are not run.
        """
        if output_fmt != "NCHW":
            raise ValueError(f"output_fmt={output_fmt!r}: bn_inception gives NCHW features only")
        take, last = _take_indices(len(self.feature_info), indices)
        taps = {self.feature_info[i]["module"] for i in take}
        intermediates = []
        for name, layer in self._feature_layers():
            x = layer(x)
            if name in taps:
                intermediates.append(x)
            if stop_early and name == self.feature_info[last]["module"]:
                break
        return intermediates if intermediates_only else (x, intermediates)

    def prune_intermediate_layers(
        self, indices: int | list[int] = 1, prune_norm: bool = False, prune_head: bool = True
    ) -> list[int]:
        """Drop the layers after the last tap of `indices` (and the head); returns the taps kept."""
        take, last = _take_indices(len(self.feature_info), indices)
        layers = [name for name, _ in self._feature_layers()]
        for name in layers[layers.index(self.feature_info[last]["module"]) + 1 :]:
            self.set_submodule(name, nn.Identity())
        pruned_end = last < len(self.feature_info) - 1
        if pruned_end:
            self.num_features = self.feature_info[last]["num_chs"]
        if prune_head or pruned_end:  # a head sized for the last module goes with it; the aux heads too
            self.aux, self.aux_logits = nn.ModuleDict(), False
            self.reset_classifier(0, "")
        return take

    @torch.jit.ignore
    def get_classifier(self) -> nn.Module:
        return self.fc

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        """A new classifier for `num_classes` (0: none); `global_pool` None keeps the pool, "" removes it."""
        dd = get_device_dtype(self)  # the new layers where (and in the dtype) the net's are
        self.num_classes = num_classes
        if global_pool is None:
            global_pool = self.global_pool.pool_type
        self.global_pool, self.fc = create_classifier(
            self.num_features, num_classes, pool_type=global_pool, **dd
        )
        self.head_hidden_size = self.num_features * self.global_pool.feat_mult()
        new = [self.global_pool, self.fc]
        for head in self.aux.values():
            head.fc2 = nn.Linear(head.fc1.out_features, num_classes, **dd) if num_classes else nn.Identity()
            new.append(head.fc2)
        for m in new:
            m.train(self.training)  # a new layer is in the net's mode (timm's contract)


# The published weights: Xiong's Caffe BN-Inception as ported by Cadene's pretrainedmodels, which
# models/caffe_port.py maps onto this net. Caffe's input: BGR in 0-255 minus a per-channel mean, no scaling.
_CFG = dict(num_classes=1000, input_size=(3, 224, 224), pool_size=(7, 7), crop_pct=0.875,  # 224 / 256
            interpolation="bilinear", first_conv="stem.conv1.conv", classifier="fc")  # fmt: skip
default_cfgs = generate_default_cfgs({
    # The Caffe weights behind timm's transforms: ToTensor's [0, 1] RGB, then (x - mean) / std with the
    # RGB means / 255 and std 1/255 gives RGB in 0-255 minus the mean; the net's first layer (to_bgr,
    # rgb_to_bgr=True by default under this tag) makes it BGR. 73.5% / 91.6% top-1 / top-5, single crop.
    "bn_inception.caffe_in1k": dict(
        **_CFG, url=WEIGHTS_URL,
        mean=tuple(m / 255 for m in reversed(CAFFE_MEAN_BGR)), std=(1 / 255,) * 3,
        origin_url="https://github.com/Cadene/pretrained-models.pytorch",
        notes=("Caffe weights: BGR 0-255 minus a mean; rgb_to_bgr reverses timm's RGB input",),
    ),
    # The default (*: timm would make the tag with weights the default): this project's own nets (no
    # weights: src/train.py trains them), fed as they are trained.
    "bn_inception.untrained*": dict(**_CFG, mean=IMAGENET_DEFAULT_MEAN, std=IMAGENET_DEFAULT_STD),
})  # fmt: skip


def _no_weights(cfg) -> RuntimeError:
    return RuntimeError(
        f"bn_inception.{cfg.tag} has no weights (this project trains its own: src/train.py). The published "
        f"BN-Inception weights (the Caffe model, Cadene's port) are bn_inception.caffe_in1k: "
        f"timm.create_model('bn_inception.caffe_in1k', pretrained=True) downloads {WEIGHTS_URL}; "
        "offline, download it by hand and add pretrained_cfg_overlay=dict(file='<file>') (or evaluate it "
        "with src/eval.py weights=caffe_port weights_path=<file>)."
    )


@register_model
def bn_inception(pretrained: bool = False, **kwargs) -> BNInception:
    """timm entry point: `timm.create_model("bn_inception", norm="batchnorm", act_layer="relu")`.

    `timm.create_model("bn_inception.caffe_in1k", pretrained=True)` is the published Caffe model, read
    and mapped by models/caffe_port.py (from its URL, or `pretrained_cfg_overlay=dict(file=<.pth>)`),
    taking timm's RGB input. With `rgb_to_bgr=False` it takes the port's BGR input instead (as
    caffe_port.caffe_preprocess makes it), and its pretrained_cfg lists the mean in BGR order.
    """
    cfg = resolve_pretrained_cfg("bn_inception", kwargs.pop("pretrained_cfg", None),
                                 kwargs.pop("pretrained_cfg_overlay", None))  # fmt: skip
    if cfg.tag == "caffe_in1k":
        kwargs.setdefault("rgb_to_bgr", True)
        if not kwargs["rgb_to_bgr"]:
            cfg = dataclasses.replace(cfg, mean=cfg.mean[::-1], notes=("BGR input: mean in B, G, R order",))
    if pretrained and not (cfg.url or cfg.file or cfg.state_dict):  # a file of our own keys loads as in timm
        raise _no_weights(cfg)
    caffe = pretrained and cfg.tag == "caffe_in1k"
    if caffe and not cfg.state_dict:  # read here, not by timm: caffe_port's errors say how to get the file
        cfg = dataclasses.replace(cfg, state_dict=read_state_dict(cfg.file or cfg.url))
    # The port's keys mapped onto the net timm built (caffe_port.convert_state_dict), before timm's
    # strict load (and its adaptation of the first conv to another in_chans).
    net = build_model_with_cfg(BNInception, "bn_inception", pretrained, pretrained_cfg=cfg,
                               pretrained_filter_fn=convert_state_dict if caffe else None,
                               feature_cfg=dict(flatten_sequential=True), **kwargs)  # fmt: skip
    net.pretrained_cfg.pop("state_dict", None)  # the weights, loaded: not kept in the cfg
    return net
