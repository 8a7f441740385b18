"""Ghost BN (model.net.bn_group): a batch of 64 with groups of 32 is two batch-32 BN passes -- outputs,
gradients and the running statistics -- and evaluation and Alg. 2 see the groups as mini-batches."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from bnrepro.callbacks.population import recompute_population_statistics
from bnrepro.config import ConfigError
from bnrepro.config.checks import validate
from bnrepro.models.ghost_bn import GhostBatchNorm1d, GhostBatchNorm2d
from conftest import compose_train


def pair(dim: int, momentum=0.1):
    torch.manual_seed(0)
    plain = (nn.BatchNorm1d if dim == 1 else nn.BatchNorm2d)(6, momentum=momentum).double()
    with torch.no_grad():  # gamma and beta other than 1 and 0, so the affine part is checked too
        plain.weight.uniform_(0.5, 1.5)
        plain.bias.uniform_(-0.5, 0.5)
    ghost = (GhostBatchNorm1d if dim == 1 else GhostBatchNorm2d)(6, group=32, momentum=momentum).double()
    ghost.load_state_dict(plain.state_dict())
    return plain, ghost


@pytest.mark.parametrize("shape", [(64, 6), (64, 6, 5, 7)], ids=["fc", "conv"])
def test_a_batch_of_64_in_groups_of_32_is_two_batch_32_passes(shape):
    plain, ghost = pair(len(shape) - 1)
    x = torch.randn(*shape, dtype=torch.float64) * 3 + 1
    xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
    upstream = torch.randn(*shape, dtype=torch.float64)
    y_ghost = ghost(xa)
    y_plain = torch.cat([plain(xb[:32]), plain(xb[32:])])  # two consecutive BN steps
    (y_ghost * upstream).sum().backward()
    (y_plain * upstream).sum().backward()
    assert torch.allclose(y_ghost, y_plain, atol=1e-6, rtol=0)
    assert torch.allclose(xa.grad, xb.grad, atol=1e-6, rtol=0)
    for p_ghost, p_plain in ((ghost.weight, plain.weight), (ghost.bias, plain.bias)):
        assert torch.allclose(p_ghost.grad, p_plain.grad, atol=1e-6, rtol=0)
    # The moving averages as the two consecutive batch-32 steps left them (momentum 0.1).
    for name in ("running_mean", "running_var", "num_batches_tracked"):
        assert torch.allclose(getattr(ghost, name).double(), getattr(plain, name).double(), atol=1e-12), name


def test_one_batch_in_one_group_is_plain_bn_and_evaluation_uses_the_running_statistics():
    plain, ghost = pair(2)
    x = torch.randn(32, 6, 3, 3, dtype=torch.float64)
    assert torch.equal(ghost(x), plain(x))  # <= group: one statistic, torch's own kernel
    ghost.eval(), plain.eval()
    x = torch.randn(64, 6, 3, 3, dtype=torch.float64)
    assert torch.equal(ghost(x), plain(x))


def test_alg2_cumulative_average_counts_each_group_as_a_mini_batch():
    """momentum=None (Alg. 2, callbacks/population.py): the population statistics of four batch-32
    passes, whether they come as two batches of 64 in groups of 32 or as four batches of 32."""
    plain, ghost = pair(2, momentum=None)
    net_plain, net_ghost = nn.Sequential(plain), nn.Sequential(copy.deepcopy(ghost))
    torch.manual_seed(1)
    data = [torch.randn(64, 6, 4, 4, dtype=torch.float64) * 2 + 0.5 for _ in range(2)]
    recompute_population_statistics(net_ghost, iter(data), num_batches=2)
    recompute_population_statistics(
        net_plain, iter([d[h : h + 32] for d in data for h in (0, 32)]), num_batches=4
    )
    g, p = net_ghost[0], net_plain[0]
    assert torch.allclose(g.running_mean, p.running_mean, atol=1e-12)
    assert torch.allclose(g.running_var, p.running_var, atol=1e-12)


def test_a_batch_that_does_not_split_into_groups_is_refused():
    _, ghost = pair(1)
    with pytest.raises(ValueError, match=r"does not split into BN groups of 32 \(model.net.bn_group\)"):
        ghost(torch.randn(48, 6, dtype=torch.float64))


def test_the_bn_variants_normalize_over_32_and_the_config_refuses_what_cannot_work():
    cfg = compose_train("model=bn_x30")
    assert cfg.model.net.bn_group == 32 and cfg.data.batch_size == 32
    validate(compose_train("model=bn_x30", "data.batch_size=256"))  # 8 groups of 32
    with pytest.raises(ConfigError, match=r"model.net.bn_group=32 does not divide data.batch_size=48"):
        validate(compose_train("model=bn_x30", "data.batch_size=48"))
    with pytest.raises(ConfigError, match="trainer.sync_batchnorm=true .* choose one"):
        validate(compose_train("model=bn_x30", "trainer.sync_batchnorm=true"))
    validate(compose_train("model=bn_x30", "trainer.sync_batchnorm=true", "model.net.bn_group=null"))
    assert "bn_group" not in compose_train("model=inception").model.net  # no BN, no groups
