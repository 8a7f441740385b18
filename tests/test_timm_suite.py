"""timm's own model checks (tests/test_models.py of timm's sdist) on bn_inception, through timm's public API.

timm's suite runs every registered model through: default cfgs on the meta device with device/dtype
factory arguments, forward, backward, features_only, TorchScript, torch.fx, and fx then TorchScript.
These are the same checks, made fast: a narrow net (width 0.25) at timm's small test sizes where the
check does not depend on the width; the default-cfg checks on the full net, on the meta device
(structure only, no memory). timm's file itself passes too (`pytest tests/test_models.py -k bn_inception`
in timm's unpacked sdist, with a conftest.py that imports bnrepro.models before collection).
"""

from __future__ import annotations

import pytest
import timm
import torch
from timm.models import get_notrace_functions, get_notrace_modules
from torchvision.models.feature_extraction import create_feature_extractor, get_graph_node_names

import bnrepro.models  # noqa: F401  (registers bn_inception with timm)


@pytest.fixture(autouse=True)
def one_thread():
    """Small nets on a busy 2-core CPU: one thread is many times faster than two."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize("tag", ["bn_inception.untrained", "bn_inception.caffe_in1k"])
def test_default_cfgs_on_the_meta_device(tag):
    """timm's test_model_default_cfgs: device/dtype reach every tensor; the cfg's shapes are the net's."""
    with torch.device("meta"):
        net = timm.create_model(tag, device="meta", dtype=torch.float32).eval()
        with pytest.raises(TypeError):  # an unknown argument is refused, not ignored
            timm.create_model(tag, device="meta", not_a_model_arg=1)
    cfg, keys = net.pretrained_cfg, net.state_dict().keys()
    assert all(t.device.type == "meta" for t in [*net.parameters(), *net.buffers()])
    assert net.in_chans == cfg["input_size"][0] and f"{cfg['classifier']}.weight" in keys
    assert f"{cfg['first_conv']}.weight" in keys
    x = torch.randn(1, *cfg["input_size"], device="meta")
    feats = net.forward_features(x)
    assert feats.shape[1:] == (net.num_features, *cfg["pool_size"])
    assert net.forward_head(feats, pre_logits=True).shape == (1, net.head_hidden_size)
    assert net.to(torch.bfloat16)(x.to(torch.bfloat16)).dtype == torch.bfloat16  # dtype after a forward
    net.to(device="meta", dtype=torch.float64)
    for args in ((0,), (2,), (0, "")):
        net.reset_classifier(*args)  # the new head where, in the dtype and the mode, the net's are
        assert all(p.is_meta and p.dtype == torch.float64 for p in net.parameters()), args
        assert not any(m.training for m in net.modules()), args
    assert net(x.double()).shape[1:] == (net.num_features, *cfg["pool_size"])
    bare = timm.create_model(tag, num_classes=0, global_pool="", device="meta", dtype=torch.float32)
    assert bare(x).shape[1:] == (bare.num_features, *cfg["pool_size"])


def test_backward_reaches_every_parameter():
    net = timm.create_model("bn_inception", width=0.25, num_classes=42).train()
    out = net(torch.randn(2, 3, 64, 64))
    out.mean().backward()
    assert out.shape == (2, 42) and [n for n, p in net.named_parameters() if p.grad is None] == []


def fx_model(net):
    """timm's _create_fx_model: traced with timm's leaf modules and functions, the last node returned."""
    tracer = dict(leaf_modules=get_notrace_modules(), autowrap_functions=get_notrace_functions())
    train_nodes, eval_nodes = get_graph_node_names(net, tracer_kwargs=tracer)
    return create_feature_extractor(net, train_return_nodes=[train_nodes[-1]],
                                    eval_return_nodes=[eval_nodes[-1]], tracer_kwargs=tracer)  # fmt: skip


def test_fx_then_torchscript_gives_the_eager_logits():
    """timm's test_model_forward_fx and test_model_forward_fx_torchscript (which once failed: forward's
    string annotation, from `from __future__ import annotations`, became a name TorchScript lacks)."""
    with timm.set_scriptable(True):
        net = timm.create_model("bn_inception", width=0.25, num_classes=10).eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        want = net(x)
        traced = fx_model(net)
        assert torch.allclose(next(iter(traced(x).values())), want, rtol=1e-4, atol=1e-5)
        scripted = torch.jit.script(traced)
        assert torch.allclose(next(iter(scripted(x).values())), want, rtol=1e-4, atol=1e-5)
        assert torch.allclose(torch.jit.script(net)(x), want, rtol=1e-4, atol=1e-5)


def test_fx_backward_reaches_every_parameter():
    traced = fx_model(timm.create_model("bn_inception", width=0.25, num_classes=42).train())
    next(iter(traced(torch.randn(2, 3, 64, 64)).values())).mean().backward()
    assert [n for n, p in traced.named_parameters() if p.grad is None] == []


def test_features_only_matches_feature_info():
    net = timm.create_model("bn_inception", width=0.25, features_only=True).eval()
    with torch.no_grad():
        maps = net(torch.randn(1, 3, 96, 96))
    assert [m.shape[1] for m in maps] == net.feature_info.channels()
    assert [m.shape[-1] for m in maps] == [96 // r for r in net.feature_info.reduction()]
