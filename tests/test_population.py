"""Alg. 2: population statistics are the average of mini-batch means and m/(m-1) x the average variance."""

from __future__ import annotations

import torch
from torch import nn

from bnrepro.callbacks.population import recompute_population_statistics


def test_population_statistics_follow_algorithm_2_exactly():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3, bias=False), nn.BatchNorm2d(4), nn.ReLU(), nn.Dropout(0.5))
    batches = [torch.randn(5, 3, 8, 8) * (i + 1) + i for i in range(4)]  # batch statistics differ a lot
    net.train()
    for x in batches:  # moving averages (momentum 0.1) from training, to be replaced
        net(x)
    used = recompute_population_statistics(net, iter(batches + batches), num_batches=4)
    assert used == 4
    with torch.no_grad():
        z = [net[0](x) for x in batches]  # the BN layer's inputs
    m = z[0].numel() // z[0].shape[1]  # effective batch of a conv BN: batch x H x W
    mean = torch.stack([t.mean((0, 2, 3)) for t in z]).mean(0)
    var = torch.stack([t.var((0, 2, 3), unbiased=False) for t in z]).mean(0) * m / (m - 1)
    bn = net[1]
    torch.testing.assert_close(bn.running_mean, mean, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(bn.running_var, var, rtol=1e-5, atol=1e-6)
    assert bn.momentum == 0.1 and net.training  # momentum and mode restored


def test_dropout_is_off_and_the_mode_is_restored():
    net = nn.Sequential(nn.Linear(3, 3), nn.Dropout(0.9), nn.BatchNorm1d(3))
    x = torch.randn(16, 3)
    net.train()
    recompute_population_statistics(net, [x], num_batches=1)
    assert net.training and net[1].training
    with torch.no_grad():
        expected = net[0](x).mean(0)  # without dropout's zeros and 10x scaling
    torch.testing.assert_close(net[2].running_mean, expected)
