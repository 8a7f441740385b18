"""The public-weights key map against the port itself: pretrainedmodels' BNInception with random weights."""

from __future__ import annotations

import re

import pytest
import timm
import torch
from pretrainedmodels.models.bninception import BNInception  # test-only dependency (pyproject's dev extra)
from torch import nn

from bnrepro.models.bn_inception import ReverseChannels
from bnrepro.models.caffe_port import (
    PORT_KWARGS,
    WEIGHTS_URL,
    KeyMapError,
    WeightsLoadError,
    WeightsNotFoundError,
    caffe_preprocess,
    convert_state_dict,
    load_caffe_port,
)


@pytest.fixture(scope="module")
def port() -> nn.Module:
    """The port in float64 with random weights, conv biases and BN statistics, at a scale that keeps signal.

    One train-mode pass with momentum 1 sets each BN's running statistics to a batch's (so the logits are
    neither 0 nor inf after 40 layers); then they are jittered. They include the conv biases, so an
    unfolded bias would show.
    """
    gen = torch.Generator().manual_seed(0)
    ref = BNInception(num_classes=1000)
    bns = [m for m in ref.modules() if isinstance(m, nn.BatchNorm2d)]
    with torch.no_grad():
        for m in ref.modules():
            if isinstance(m, nn.Conv2d):
                fan_in = m.weight[0].numel()
                m.weight.normal_(0.0, (2.0 / fan_in) ** 0.5, generator=gen)
                m.bias.normal_(0.0, 0.5, generator=gen)
        for m in bns:
            m.weight.uniform_(0.5, 1.5, generator=gen)
            m.bias.normal_(0.0, 0.2, generator=gen)
            m.momentum = 1.0
        ref.train()(torch.randn(2, 3, 224, 224, generator=gen))
        for m in bns:
            m.running_mean.add_(0.1 * m.running_var.sqrt() * torch.randn(m.num_features, generator=gen))
            m.running_var.mul_(torch.empty(m.num_features).uniform_(0.7, 1.4, generator=gen))
    return ref.double().eval()  # float64 from here: the comparison sees the map, not rounding


def test_converted_weights_give_the_ports_logits(port):
    ours = timm.create_model("bn_inception", **PORT_KWARGS).double()
    ours.load_state_dict(convert_state_dict(port.state_dict(), ours))
    x = torch.randn(2, 3, 224, 224, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        want, got = port(x.clone()), ours.eval()(x)
    assert want.std() > 0.1  # a live network, not constant logits
    assert (got - want).abs().max() < 1e-6


def test_load_from_a_file(port, tmp_path):
    path = tmp_path / "bn_inception.pth"
    torch.save({k: v.float() if v.is_floating_point() else v for k, v in port.state_dict().items()}, path)
    net, pre = load_caffe_port(str(path))
    assert not net.training
    assert pre == dict(input_space="BGR", input_range=255, mean=[104, 117, 128], std=[1, 1, 1],
                       image_size=224, resize_size=256)  # fmt: skip
    bn, conv = port.inception_4e_3x3_bn, port.inception_4e_3x3
    assert torch.allclose(net.blocks.inception_4e.branch3x3[1].norm.running_mean.double(),
                          bn.running_mean - conv.bias, atol=1e-6)  # fmt: skip


def test_an_unmapped_or_missing_key_is_named(port):
    sd, ours = dict(port.state_dict()), timm.create_model("bn_inception", **PORT_KWARGS)
    with pytest.raises(KeyMapError, match="unmapped key.*inception_9z_1x1.weight"):
        convert_state_dict({**sd, "inception_9z_1x1.weight": torch.zeros(1)}, ours)
    del sd["inception_4e_3x3_bn.running_var"]
    with pytest.raises(KeyMapError, match="missing key.*inception_4e_3x3_bn.running_var"):
        convert_state_dict(sd, ours)
    with pytest.raises(KeyMapError, match=r"aux\..*no such layer"):  # a layer the port never had
        convert_state_dict(port.state_dict(), timm.create_model("bn_inception", aux_logits=True))


def test_a_missing_or_truncated_file_is_named(tmp_path):
    with pytest.raises(WeightsNotFoundError, match=f"nope.pth.*{re.escape(WEIGHTS_URL)}.*weights_path"):
        load_caffe_port(tmp_path / "nope.pth")
    path = tmp_path / "cut.pth"
    torch.save({"conv1_7x7_s2.weight": torch.zeros(64, 3, 7, 7)}, path)
    path.write_bytes(path.read_bytes()[:5000])
    with pytest.raises(WeightsLoadError, match=f"{re.escape(str(path))}.*truncated or corrupt.*weights_path"):
        load_caffe_port(path)


def test_an_offline_download_names_the_url(monkeypatch):
    import urllib.error

    def offline(url, **kwargs):
        raise urllib.error.URLError("Temporary failure in name resolution")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", offline)
    with pytest.raises(WeightsLoadError, match=f"could not download {re.escape(WEIGHTS_URL)}.*weights_path"):
        load_caffe_port()


def test_preprocess_is_bgr_0_255_minus_the_bgr_mean():
    rgb = torch.tensor([1.0, 0.5, 0.0]).view(1, 3, 1, 1).expand(2, 3, 4, 4)
    out = caffe_preprocess(rgb)
    assert out.shape == (2, 3, 4, 4)
    assert torch.allclose(out[0, :, 0, 0], torch.tensor([0.0 - 104, 127.5 - 117, 255.0 - 128]))


@pytest.fixture
def port_file(port, tmp_path):
    """The random-weight port saved as the published file is: a float32 state dict in the port's names."""
    path = tmp_path / "bn_inception.pth"
    torch.save({k: v.float() if v.is_floating_point() else v for k, v in port.state_dict().items()}, path)
    return path


def test_timm_transforms_feed_the_caffe_weights_as_src_eval_does(port_file, tmp_path):
    """timm's path (its pretrained tag, resolve_data_config, create_transform on a PIL image) and
    src/eval.py's single crop (decode, 256 -> centre 224, caffe_preprocess) give the same logits."""
    from PIL import Image

    from bnrepro.data.images import load_rgb
    from bnrepro.evaluation.crops import crop_transform, to_unit_float
    from bnrepro.evaluation.members import load_caffe_member

    gen = torch.Generator().manual_seed(2)
    pixels = torch.randint(0, 256, (256, 320, 3), dtype=torch.uint8, generator=gen)  # shorter side 256:
    image = tmp_path / "image.png"  # both pipelines' resize (PIL's, torchvision's) is then the identity
    Image.fromarray(pixels.numpy()).save(image)

    net = timm.create_model("bn_inception.caffe_in1k", pretrained=True,
                            pretrained_cfg_overlay=dict(file=str(port_file))).eval()  # fmt: skip
    cfg = timm.data.resolve_data_config({}, model=net)
    assert cfg["input_size"] == (3, 224, 224) and cfg["crop_pct"] == 0.875  # 256 -> centre 224
    assert [round(m * 255, 6) for m in cfg["mean"]] == [128, 117, 104]  # RGB order; BGR's [104, 117, 128]
    assert [round(s * 255, 6) for s in cfg["std"]] == [1, 1, 1]  # 0-255, no scaling
    with Image.open(image) as pil:
        x_timm = timm.data.create_transform(**cfg)(pil.convert("RGB")).unsqueeze(0)

    member = load_caffe_member(str(port_file))  # src/eval.py weights=caffe_port weights_path=<file>
    x_eval = member.preprocess(to_unit_float(crop_transform(1, 224, 256)(load_rgb(image))))
    assert torch.allclose(x_timm.flip(1), x_eval, atol=2e-5)  # BGR 0-255 minus the mean, both
    with torch.no_grad():
        want, got = member.net(x_eval), net(x_timm)
        unreversed = member.net(x_timm)  # the same weights fed RGB: what the reversal is for
    assert want.std() > 0.1
    assert torch.allclose(got, want, rtol=1e-5, atol=1e-6 * want.abs().max())  # float32 rounding only
    assert not torch.allclose(unreversed, want, rtol=1e-2, atol=1e-2 * want.abs().max())


def test_every_caffe_net_says_its_input_in_pretrained_cfg(port_file):
    timm_net = timm.create_model("bn_inception.caffe_in1k", pretrained=True,
                                 pretrained_cfg_overlay=dict(file=str(port_file)))  # fmt: skip
    eval_net, pre = load_caffe_port(port_file)  # the net src/eval.py feeds with caffe_preprocess
    for net, order in ((timm_net, [128, 117, 104]), (eval_net, pre["mean"])):  # RGB | BGR
        assert [round(m * 255, 6) for m in net.pretrained_cfg["mean"]] == order
        assert "state_dict" not in net.pretrained_cfg  # the weights are not kept in the cfg
    assert "BGR" in eval_net.pretrained_cfg["notes"][0] and pre["input_space"] == "BGR"
    assert isinstance(timm_net.to_bgr, ReverseChannels) and isinstance(eval_net.to_bgr, nn.Identity)
    same = zip(timm_net.state_dict().items(), eval_net.state_dict().items())
    assert all(ka == kb and torch.equal(a, b) for (ka, a), (kb, b) in same)  # one set of weights
    untrained = timm.create_model("bn_inception")  # this project's nets keep timm's ImageNet mean / std
    assert untrained.pretrained_cfg["mean"] == timm.data.IMAGENET_DEFAULT_MEAN


def test_the_caffe_weights_fine_tune_with_a_new_classifier(port_file):
    net = timm.create_model("bn_inception.caffe_in1k", pretrained=True, num_classes=10,
                            pretrained_cfg_overlay=dict(file=str(port_file)))  # fmt: skip
    eval_net, _ = load_caffe_port(port_file)
    assert net.fc.out_features == 10  # timm's loader dropped the 1000-class fc, kept the rest
    assert torch.equal(net.stem.conv1.conv.weight, eval_net.stem.conv1.conv.weight)
    assert torch.equal(net.blocks.inception_5b.branch_pool[1].norm.running_mean,
                       eval_net.blocks.inception_5b.branch_pool[1].norm.running_mean)  # fmt: skip


def test_pretrained_says_how_to_load_the_published_weights(monkeypatch, tmp_path):
    how = rf"{re.escape(WEIGHTS_URL)}.*pretrained_cfg_overlay=dict\(file=.*weights_path"
    with pytest.raises(RuntimeError, match=rf"untrained has no weights.*bn_inception\.caffe_in1k.*{how}"):
        timm.create_model("bn_inception", pretrained=True)
    import urllib.error

    def offline(url, **kwargs):
        raise urllib.error.URLError("Temporary failure in name resolution")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", offline)
    with pytest.raises(WeightsLoadError, match=rf"could not download {re.escape(WEIGHTS_URL)}.*by hand.*"
                       r"pretrained_cfg_overlay=dict\(file="):  # fmt: skip
        timm.create_model("bn_inception.caffe_in1k", pretrained=True)
    with pytest.raises(WeightsNotFoundError, match="nope.pth"):
        timm.create_model("bn_inception.caffe_in1k", pretrained=True,
                          pretrained_cfg_overlay=dict(file=str(tmp_path / "nope.pth")))  # fmt: skip
