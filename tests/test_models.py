"""The Sec. 4.1 network: shapes, BN placement, dropped bias, identical init with and without BN."""

from __future__ import annotations

import pytest
import timm
import torch
from torch import nn

import bnrepro.models  # noqa: F401


def test_timm_builds_the_784_100_100_100_10_mlp():
    net = timm.create_model("mnist_mlp", norm="batchnorm", act_layer="sigmoid")
    assert [b.fc.weight.shape for b in net.blocks] == [(100, 784), (100, 100), (100, 100)]
    assert net.head.weight.shape == (10, 100)
    x = torch.rand(7, 1, 28, 28)
    assert net(x).shape == (7, 10)
    assert net.forward_features(x).shape == (7, 100)
    net.reset_classifier(3)
    assert net(x).shape == (7, 3)


def test_bn_sits_before_each_sigmoid_and_replaces_the_bias():
    net = timm.create_model("mnist_mlp", norm="batchnorm")
    for block in net.blocks:
        assert block.fc.bias is None
        assert isinstance(block.norm, nn.BatchNorm1d) and block.norm.eps == 1e-5
        assert torch.equal(block.norm.weight, torch.ones(100)) and torch.equal(
            block.norm.bias, torch.zeros(100)
        )
        assert "Sigmoid" in type(block.act).__name__
    base = timm.create_model("mnist_mlp", norm="none")
    assert all(b.fc.bias is not None and isinstance(b.norm, nn.Identity) for b in base.blocks)


def test_same_seed_gives_the_same_weights_with_and_without_bn():
    base = timm.create_model("mnist_mlp", norm="none", init_seed=3, init_std=0.05)
    bn = timm.create_model("mnist_mlp", norm="batchnorm", init_seed=3, init_std=0.05)
    for a, b in zip(base.blocks, bn.blocks):
        assert torch.equal(a.fc.weight, b.fc.weight)
    assert torch.equal(base.head.weight, bn.head.weight)
    assert abs(base.blocks[0].fc.weight.std().item() - 0.05) < 0.002  # N(0, init_std)
    other = timm.create_model("mnist_mlp", norm="none", init_seed=4)
    assert not torch.equal(base.blocks[0].fc.weight, other.blocks[0].fc.weight)


def test_unknown_norm_or_activation_is_refused():
    with pytest.raises(ValueError, match="unknown norm"):
        timm.create_model("mnist_mlp", norm="groupnorm")
