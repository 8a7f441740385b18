"""BN-Inception against the paper's table (Figure 5) and timm's model interface."""

from __future__ import annotations

import copy
import hashlib
import math

import pytest
import timm
import torch
from timm.layers import create_pool2d
from torch import nn

import bnrepro.models  # noqa: F401  (registers bn_inception with timm)
from bnrepro.models.bn_inception import CHANNEL_PLANS, FIGURE5, HalvingMaxPool, InceptionModule

# Output of every layer at 224x224 input, column-literal plan (docs/paper.md Sec. 3: 3c and 4e halve the grid,
# 4c/4d sum to 608 and 4e to 1056 as the columns say).
TABLE = {
    "stem.conv1": (64, 112), "stem.pool1": (64, 56), "stem.conv2_reduce": (64, 56), "stem.conv2": (192, 56),
    "stem.pool2": (192, 28),
    "blocks.inception_3a": (256, 28), "blocks.inception_3b": (320, 28), "blocks.inception_3c": (576, 14),
    "blocks.inception_4a": (576, 14), "blocks.inception_4b": (576, 14), "blocks.inception_4c": (608, 14),
    "blocks.inception_4d": (608, 14), "blocks.inception_4e": (1056, 7),
    "blocks.inception_5a": (1024, 7), "blocks.inception_5b": (1024, 7),
    "global_pool": (1024, None), "fc": (1000, None),
}  # fmt: skip


def output_shapes(net: nn.Module, size: int = 224) -> dict[str, tuple[int, ...]]:
    shapes = {}
    hooks = [m.register_forward_hook(lambda m, i, o, n=n: shapes.__setitem__(n, tuple(o.shape[1:])))
             for n, m in net.named_modules() if n in TABLE]  # fmt: skip
    with torch.no_grad():
        net.eval()(torch.zeros(1, 3, size, size))
    for h in hooks:
        h.remove()
    return shapes


@pytest.fixture(scope="module")
def literal_net():
    return timm.create_model("bn_inception")


def test_every_layer_matches_the_table(literal_net):
    shapes = output_shapes(literal_net)
    for name, (channels, grid) in TABLE.items():
        assert shapes[name] == ((channels, grid, grid) if grid else (channels,)), name


def test_the_table_rows_are_the_papers_columns():
    assert [r.name for r in FIGURE5] == ["3a", "3b", "3c", "4a", "4b", "4c", "4d", "4e", "5a", "5b"]
    row = {r.name: r for r in FIGURE5}
    assert tuple(row["4d"])[2:] == (96, 128, 192, 160, 192, "avg", 128)
    assert row["3c"].stride == row["4e"].stride == 2 and row["3c"].proj == row["4e"].proj == 0


def test_parameter_count_and_multiply_adds_of_the_literal_plan(literal_net):
    from torch.utils.flop_counter import FlopCounterMode

    params = sum(p.numel() for p in literal_net.parameters())
    assert params == pytest.approx(11.3e6, rel=0.01)  # docs/paper.md Sec. 3 (the paper's 13.6M: see README)
    with FlopCounterMode(display=False) as counter:
        literal_net.eval()(torch.zeros(1, 3, 224, 224))
    assert counter.get_total_flops() / 2 == pytest.approx(2.0e9, rel=0.05)  # multiply-adds


def test_slim_plan_gives_the_printed_576_and_1024():
    shapes = output_shapes(timm.create_model("bn_inception", channel_plan="slim"))
    assert shapes["blocks.inception_4c"][0] == shapes["blocks.inception_4d"][0] == 576
    assert shapes["blocks.inception_4e"] == (1024, 7, 7)


def test_norm_and_activation_switch_the_whole_net():
    def kinds(net):
        return {type(m) for m in net.modules()}

    bn = timm.create_model("bn_inception", norm="batchnorm", act_layer="relu")
    plain = timm.create_model("bn_inception", norm="none", act_layer="relu")
    sig = timm.create_model("bn_inception", norm="batchnorm", act_layer="sigmoid")
    assert nn.BatchNorm2d in kinds(bn) and nn.BatchNorm2d not in kinds(plain)
    convs = [m for m in bn.modules() if isinstance(m, nn.Conv2d)]
    assert all(m.bias is None for m in convs)  # BN's beta replaces the bias (Sec. 3)
    assert all(m.bias is not None for m in plain.modules() if isinstance(m, nn.Conv2d))
    n_act = sum(type(m).__name__ == "ReLU" for m in bn.modules())
    assert n_act == sum(type(m).__name__ == "Sigmoid" for m in sig.modules())  # timm's or torch's class
    assert not any(type(m).__name__ == "ReLU" for m in sig.modules())
    assert n_act == len(convs)  # one nonlinearity per conv, right after its BN


def test_lrn_dropout_and_separable_stem_are_options():
    net = timm.create_model("bn_inception", norm="none", lrn=True, drop_rate=0.4, stem="separable")
    assert sum(isinstance(m, nn.LocalResponseNorm) for m in net.modules()) == 2  # GoogLeNet's two places
    assert net.head_drop.p == 0.4
    depthwise = net.stem.conv1.conv[0]
    assert depthwise.groups == 3 and depthwise.out_channels == 24  # depth multiplier 8
    assert output_shapes(net)["stem.conv1"] == (64, 112, 112)
    assert not any(isinstance(m, nn.LocalResponseNorm) for m in timm.create_model("bn_inception").modules())


def test_auxiliary_heads_in_training_only():
    net = timm.create_model("bn_inception", num_classes=10, aux_logits=True).train()
    out = net(torch.randn(2, 3, 224, 224))
    assert isinstance(out, tuple) and [o.shape for o in out] == [(2, 10)] * 3
    assert net.eval()(torch.randn(2, 3, 224, 224)).shape == (2, 10)


def test_timm_interface():
    net = timm.create_model("bn_inception", num_classes=10).eval()
    x = torch.randn(2, 3, 224, 224)
    feats = net.forward_features(x)
    assert feats.shape == (2, 1024, 7, 7)
    assert net.forward_head(feats, pre_logits=True).shape == (2, 1024)
    assert torch.equal(net.forward_head(feats), net(x))
    net.reset_classifier(5)
    assert net(x).shape == (2, 5) and net.get_classifier().out_features == 5
    cfg = timm.data.resolve_data_config({}, model=net)
    assert cfg["input_size"] == (3, 224, 224) and cfg["crop_pct"] == 0.875
    features = timm.create_model("bn_inception", features_only=True)
    assert features.feature_info.channels() == [64, 192, 320, 608, 1024]
    assert features.feature_info.reduction() == [2, 4, 8, 16, 32]


def test_init_is_the_same_draw_with_and_without_bn():
    bn = timm.create_model("bn_inception", norm="batchnorm", init_seed=3)
    plain = timm.create_model("bn_inception", norm="none", init_seed=3)
    w_bn = [m.weight for m in bn.modules() if isinstance(m, nn.Conv2d)]
    w_plain = [m.weight for m in plain.modules() if isinstance(m, nn.Conv2d)]
    assert all(torch.equal(a, b) for a, b in zip(w_bn, w_plain))
    other = timm.create_model("bn_inception", norm="batchnorm", init_seed=4)
    assert not torch.equal(w_bn[0], next(m.weight for m in other.modules() if isinstance(m, nn.Conv2d)))


# --- any input size (the stride-2 modules' pool) -------------------------------------------------------

# Logits of timm.create_model("bn_inception", init_seed=0) in float64 on torch.randn(1, 3, 224, 224) from
# seed 0, computed with the code before any input size ran (commit 58fa914): the first 5. Their last bits
# depend on the CPU's float64 kernels (the thread count and the vector unit change the summation order:
# 0x1.47fa9e3ac6305p-2 with 1 thread and ...62ffp-2 with 2 on one machine), so they are compared to 1e-12
# relative -- any change to the network moves them by far more.
BEFORE_224_FIRST = ("0x1.47fa9e3ac6302p-2", "-0x1.3a1015891f145p-1", "-0x1.455c73095ab6ap+0",
                    "0x1.f468800afe2fdp-2", "-0x1.6f34d585b36b6p-2")  # fmt: skip


def test_224_logits_are_the_ones_before_any_size_ran():
    net = timm.create_model("bn_inception", init_seed=0).eval().double()
    x = torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    with torch.no_grad():
        logits = net(x)
    before = torch.tensor([float.fromhex(v) for v in BEFORE_224_FIRST], dtype=torch.float64)
    torch.testing.assert_close(logits[0, :5], before, rtol=1e-12, atol=0)


def caffe_pooled(net: nn.Module) -> nn.Module:
    """A copy of `net` whose stride-2 modules pool as before (Caffe's 3x3/2 ceil-mode pool, no padding)."""
    ref = copy.deepcopy(net)
    for m in ref.modules():
        if isinstance(m, InceptionModule) and isinstance(m.branch_pool, HalvingMaxPool):
            m.branch_pool = nn.MaxPool2d(3, 2, ceil_mode=True)
    return ref


@pytest.mark.parametrize("size", [64, 96, 160, 224, 256])
def test_sizes_that_ran_before_give_the_same_output_to_the_bit(literal_net, size):
    x = torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(size))
    with torch.no_grad():
        assert torch.equal(literal_net.eval()(x), caffe_pooled(literal_net).eval()(x))


def test_the_pool_halves_like_the_convs_and_pads_as_tf_same():
    pool, same = HalvingMaxPool(), create_pool2d("max", 3, 2, padding="same")  # timm's MaxPool2dSame
    conv = nn.Conv2d(1, 1, 3, 2, padding=1)  # the modules' stride-2 convs
    for h, w in [(28, 28), (14, 14), (15, 15), (7, 8), (30, 19), (1, 2)]:
        x = torch.randn(2, 4, h, w)
        assert pool(x).shape[-2:] == conv(x[:, :1]).shape[-2:] == (math.ceil(h / 2), math.ceil(w / 2))
        assert torch.equal(pool(x), same(x))  # TF's "SAME", which timm's pool pads a copy of x for
        if h % 2 == 0 and w % 2 == 0:
            assert torch.equal(pool(x), nn.MaxPool2d(3, 2, ceil_mode=True)(x))  # Caffe's, as before


def thin_plan():
    """Figure 5's rows with every module's channels / 16: the same grids, a tenth of the time."""
    widths = ("n1x1", "n3x3red", "n3x3", "ndbl3x3red", "ndbl3x3", "proj")
    return tuple(r._replace(**{f: getattr(r, f) // 16 for f in widths}) for r in FIGURE5)


def expected_grid(side: int) -> int:
    """The last feature map's side: conv1 (7x7/2, padding 3), the stem's two ceil-mode 3x3/2 pools, 3c, 4e."""
    side = math.ceil(side / 2)
    for _ in range(2):
        side = math.ceil((side - 1) / 2)
    return math.ceil(math.ceil(side / 2) / 2)


@pytest.fixture
def one_thread():
    """Forty small forward passes of new shapes: one thread is ~15x faster than two on a busy 2-core CPU."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_every_input_size_from_64_to_512_runs(monkeypatch, one_thread):
    # Before: 113 of the 449 sizes 64..512 ran; an odd grid at 3c or 4e failed at the concat.
    monkeypatch.setitem(CHANNEL_PLANS, "thin", thin_plan())
    net = timm.create_model("bn_inception", num_classes=10, channel_plan="thin").eval()
    squares = [(s, s) for s in [*range(64, 513, 11), 224, 240, 299, 331, 512]]
    for h, w in squares + [(240, 320), (299, 224), (331, 500), (65, 97)]:
        with torch.no_grad():
            feats = net.forward_features(torch.randn(1, 3, h, w))
            logits = net.forward_head(feats)
        assert feats.shape[-2:] == (expected_grid(h), expected_grid(w)), (h, w)
        assert logits.shape == (1, 10) and torch.isfinite(logits).all(), (h, w)


# --- timm's model contract (the checks of timm's tests/test_models.py, on this model) ---------------


def test_backward_reaches_every_parameter_including_the_aux_heads():
    net = timm.create_model("bn_inception", num_classes=42, aux_logits=True).train()
    out = torch.cat(net(torch.randn(2, 3, 128, 128)))
    out.mean().backward()
    assert out.shape == (6, 42) and torch.isfinite(out).all()
    assert [n for n, p in net.named_parameters() if p.grad is None] == []


def test_reset_classifier_0_and_no_pool_give_the_pooled_and_the_unpooled_features():
    net = timm.create_model("bn_inception", num_classes=10).eval()
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        feats = net.forward_features(x)
        net.reset_classifier(0)  # no classifier, the pool kept
        assert net.num_classes == 0 and torch.equal(net(x), net.forward_head(feats, pre_logits=True))
        assert net(x).shape == (1, net.head_hidden_size) == (1, 1024)
        net.reset_classifier(0, "")  # no pool either: the last feature map, as every timm model
        assert torch.equal(net(x), feats) and feats.shape[-2:] == net.pretrained_cfg["pool_size"]
        net.reset_classifier(5, "max")
        assert net(x).shape == (1, 5) and net.global_pool.pool_type == "max"
        built = timm.create_model("bn_inception", num_classes=0, global_pool="").eval()
        assert built(x).shape == (1, 1024, 7, 7)


def test_the_classifier_takes_the_pooled_width_of_catavgmax():
    net = timm.create_model("bn_inception", num_classes=10, global_pool="catavgmax").eval()
    x = torch.randn(1, 3, 128, 128)
    with torch.no_grad():
        feats = net.forward_features(x)
        pooled = net.forward_head(feats, pre_logits=True)
        assert net.fc.in_features == net.head_hidden_size == 2048 and pooled.shape == (1, 2048)
        assert torch.equal(pooled, torch.cat([feats.mean((2, 3)), feats.amax((2, 3))], 1))
        assert net(x).shape == (1, 10)
        net.reset_classifier(3)  # keeps catavgmax
        assert net.fc.in_features == 2048 and net(x).shape == (1, 3)


def test_reset_classifier_resizes_the_aux_heads_too():
    net = timm.create_model("bn_inception", num_classes=10, aux_logits=True).double()
    net.reset_classifier(5)
    out = net.train()(torch.randn(2, 3, 128, 128, dtype=torch.float64))
    assert [o.shape for o in out] == [(2, 5)] * 3  # in the net's dtype


def test_torchscript_gives_the_eager_logits():
    with timm.set_scriptable(True):
        net = timm.create_model("bn_inception", num_classes=10, aux_logits=True).eval()
    scripted = torch.jit.script(net)
    for size in (112, 120):  # an odd grid at 4e's input (7), at 3c's (15)
        x = torch.randn(2, 3, size, size)
        with torch.no_grad():
            assert torch.allclose(scripted(x), net(x), rtol=1e-5, atol=1e-6), size
    assert scripted.train()(x).shape == (2, 10)  # scripted: the logits only, even with aux heads


# (tap, channels, reduction, side at 224): the last layer at each grid size, as feature_info lists them.
TAPS = [("stem.conv1", 64, 2, 112), ("stem.conv2", 192, 4, 56), ("blocks.inception_3b", 320, 8, 28),
        ("blocks.inception_4d", 608, 16, 14), ("blocks.inception_5b", 1024, 32, 7)]  # fmt: skip


def test_forward_intermediates_returns_the_feature_info_taps(literal_net):
    net, x = literal_net.eval(), torch.randn(1, 3, 224, 224)
    assert [(i["module"], i["num_chs"], i["reduction"]) for i in net.feature_info] == [t[:3] for t in TAPS]
    with torch.no_grad():
        final, inter = net.forward_intermediates(x)
        assert [tuple(o.shape) for o in inter] == [(1, c, s, s) for _, c, _, s in TAPS]
        assert torch.equal(final, net.forward_features(x)) and torch.equal(inter[-1], final)
        shapes = output_shapes(net)  # the same tensors the layers of Figure 5 output
        assert all(shapes[name] == tuple(o.shape[1:]) for (name, *_), o in zip(TAPS, inter))
        small = torch.randn(1, 3, 64, 64)
        last2 = net.forward_intermediates(small, indices=2, intermediates_only=True)
        assert [o.shape[1] for o in last2] == [608, 1024]
        picked = net.forward_intermediates(small, indices=[-1, 0], intermediates_only=True)
        assert [o.shape[1] for o in picked] == [64, 1024]  # in the network's order
        early, (tap,) = net.forward_intermediates(x, indices=[2], stop_early=True)
        assert torch.equal(early, tap) and torch.equal(tap, inter[2])  # 3b's output; nothing after it ran
    for bad in (0, 6, [5], [-6]):
        with pytest.raises(ValueError, match="feature indices"):
            net.forward_intermediates(x, indices=bad)
    with pytest.raises(ValueError, match="NCHW"):
        net.forward_intermediates(x, output_fmt="NHWC")


def test_every_features_only_class_gives_the_same_taps():
    x = torch.randn(1, 3, 96, 96)
    outs = {}
    for cls in ("list", "hook", "getter", "fx"):
        net = timm.create_model("bn_inception", features_only=True, feature_cls=cls).eval()
        with torch.no_grad():
            outs[cls] = net(x)
        assert net.feature_info.channels() == [c for _, c, _, _ in TAPS], cls
        assert net.feature_info.reduction() == [r for _, _, r, _ in TAPS], cls
    for cls, out in outs.items():
        assert [tuple(o.shape) for o in out] == [(1, c, 96 // r, 96 // r) for _, c, r, _ in TAPS], cls
        assert all(torch.equal(a, b) for a, b in zip(out, outs["list"])), cls


def test_prune_intermediate_layers_keeps_the_taps_asked_for():
    net = timm.create_model("bn_inception", aux_logits=True).eval()
    x = torch.randn(1, 3, 128, 128)
    with torch.no_grad():
        _, want = net.forward_intermediates(x)
        assert net.prune_intermediate_layers([0, 1, 2]) == [0, 1, 2]
        assert all(isinstance(b, nn.Identity) for n, b in net.blocks.named_children() if n > "inception_3b")
        assert len(net.aux) == 0 and not net.aux_logits and net.num_features == 320
        got = net.forward_intermediates(x, indices=[0, 1, 2], intermediates_only=True)
        assert len(got) == 3 and all(torch.equal(a, b) for a, b in zip(got, want))
        assert net(x).shape == (1, 320, 16, 16)  # no head: the kept part's last map


def test_rgb_to_bgr_reverses_the_input_in_every_path():
    """The Caffe weights' switch: the same net fed the channels reversed, by forward and by the feature APIs."""
    bgr, plain = (timm.create_model("bn_inception", rgb_to_bgr=flag).eval() for flag in (True, False))
    feats_bgr, feats_plain = (timm.create_model("bn_inception", features_only=True, rgb_to_bgr=flag).eval()
                              for flag in (True, False))  # fmt: skip
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(bgr(x), plain(x.flip(1))) and not torch.allclose(bgr(x), plain(x))
        final, inter = bgr.forward_intermediates(x)
        assert torch.equal(final, plain.forward_features(x.flip(1)))
        assert all(torch.equal(a, b) for a, b in zip(inter, plain.forward_intermediates(x.flip(1))[1]))
        assert all(torch.equal(a, b) for a, b in zip(feats_bgr(x), feats_plain(x.flip(1))))


# --- width: Figure 5 with every channel count scaled ----------------------------------------------------

# sha256 of the state dict's "key:shape" list and of its float32 values, by the code before `width` and
# device/dtype existed (commit 023be7c): width 1.0 is that network, key for key and bit for bit. (The
# 224 logits: test_224_logits_are_the_ones_before_any_size_ran.)
BEFORE_WIDTH = {
    "default": ("57ed7cdf537e667da0cc9f553e7e91fea1018e97f02f3fe786a0d19bcb30fb97",
                "4e0af66a554cd5fdc8e76ac6dedc58030c004c3978887724d4a41eda0ff6e24c"),
    "inception_with_every_option": ("3a55052a47fae89ac84ff5372f51298d7c0471afc87d0c753d9554d6d5c32f1d",
                                    "74d7b5468d2ca02a372ae132ea4dee566f7b4d2c0fe8f7600b7f93c0714a75b3"),
}  # fmt: skip
EVERY_OPTION = dict(norm="none", lrn=True, stem="separable", aux_logits=True, drop_rate=0.4)


@pytest.mark.parametrize("name", BEFORE_WIDTH)
def test_width_1_is_the_network_before_width_existed(name):
    kwargs = EVERY_OPTION if name != "default" else {}
    sd = timm.create_model("bn_inception", width=1.0, **kwargs).state_dict()
    keys = hashlib.sha256(";".join(f"{k}:{tuple(v.shape)}" for k, v in sd.items()).encode()).hexdigest()
    values = hashlib.sha256(b"".join(v.numpy().tobytes() for v in sd.values())).hexdigest()
    assert (keys, values) == BEFORE_WIDTH[name]


def test_width_scales_every_channel_and_keeps_the_structure(one_thread):
    """Same layers in the same order with the same kernels, strides and pools; only the channels change."""
    full, narrow = (timm.create_model("bn_inception", width=w, **EVERY_OPTION) for w in (1.0, 0.25))
    pairs = list(zip(full.named_modules(), narrow.named_modules(), strict=True))
    for (name, a), (name_b, b) in pairs:
        assert name == name_b and type(a) is type(b), name
        if isinstance(a, (nn.MaxPool2d, nn.AvgPool2d, nn.LocalResponseNorm, nn.Dropout)):
            assert repr(a) == repr(b), name
    convs = [(n, a, b) for (n, a), (_, b) in pairs if isinstance(a, nn.Conv2d)]
    depthwise = narrow.stem.conv1.conv[0]
    assert (depthwise.groups, depthwise.out_channels) == (3, 3 * 2)  # depth multiplier round(8 x 0.25)
    for name, a, b in convs:
        assert (a.kernel_size, a.stride, a.padding) == (b.kernel_size, b.stride, b.padding), name
        if b is not depthwise:
            assert b.out_channels == max(8, a.out_channels // 4), (
                name
            )  # Figure 5's counts are multiples of 32
    assert narrow.num_features == 256 and narrow.aux["inception_4a"].fc1.out_features == 256


def test_width_one_eighth_with_divisor_4_is_every_count_exactly_an_eighth(one_thread):
    """The 2-core proxy's net (width 0.125, channel_divisor 4): every conv of Figure 5 has exactly an eighth
    of its channels; timm's divisor 8 would round the eighths 4, 12, 20, 28, 44 up and bend the table."""
    full = timm.create_model("bn_inception", **EVERY_OPTION)
    eighth, rounded = (
        timm.create_model("bn_inception", width=0.125, channel_divisor=d, **EVERY_OPTION) for d in (4, 8)
    )
    depthwise = ("stem.conv1.conv.0",)  # its channels follow the depth multiplier, round(8 x width) = 1
    outs = {n: [m.out_channels for k, m in net.named_modules() if isinstance(m, nn.Conv2d) and k not in depthwise]
            for n, net in (("full", full), ("eighth", eighth), ("rounded", rounded))}  # fmt: skip
    assert outs["eighth"] == [c // 8 for c in outs["full"]] and min(outs["eighth"]) == 4
    assert outs["rounded"] != outs["eighth"] and min(outs["rounded"]) == 8
    assert eighth.num_features == 128 and rounded.num_features != 128
    with pytest.raises(ValueError, match="channel_divisor=0"):
        timm.create_model("bn_inception", width=0.125, channel_divisor=0)


@pytest.mark.parametrize("size, grid", [(64, 2), (96, 3)])
def test_a_narrow_net_runs_at_64_and_96_px_with_timms_interface(size, grid, one_thread):
    net = timm.create_model("bn_inception", width=0.25, num_classes=10).eval()
    x = torch.randn(2, 3, size, size)
    with torch.no_grad():
        feats = net.forward_features(x)
        assert feats.shape == (2, net.num_features, grid, grid) == (2, 256, grid, grid)  # last grid >= 2x2
        assert net.forward_head(feats, pre_logits=True).shape == (2, 256)
        assert torch.equal(net.forward_head(feats), net(x))
        net.reset_classifier(5)
        assert net(x).shape == (2, 5)
        features = timm.create_model("bn_inception", width=0.25, features_only=True).eval()
        maps = features(x)
    assert features.feature_info.channels() == [16, 48, 80, 152, 256]
    assert [o.shape[-1] for o in maps] == [size // r for r in (2, 4, 8, 16)] + [grid]


def test_width_must_be_positive():
    with pytest.raises(ValueError, match="width=0"):
        timm.create_model("bn_inception", width=0)
