"""Alg. 2: population statistics are the average of mini-batch means and m/(m-1) x the average variance;
evaluating with them during training (eval_bn=population) leaves training unchanged."""

from __future__ import annotations

import copy

import lightning as L
import pytest
import torch
from torch import nn

from bnrepro.callbacks.population import recompute_population_statistics
from bnrepro.data.mnist import MNISTDataModule
from bnrepro.results.runs import load_run
from bnrepro.run import build_callbacks
from conftest import compose_train, fast_overrides


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


class BNBuffers(L.Callback):
    """Records every BN buffer during each evaluation (`during`) and once it is over (`after`)."""

    def __init__(self):
        self.during, self.after = [], []

    @staticmethod
    def buffers(pl_module) -> dict:
        return {
            k: v.clone() for k, v in pl_module.net.state_dict().items() if "running" in k or "batches" in k
        }

    def on_validation_epoch_end(self, trainer, pl_module):
        self.during.append(self.buffers(pl_module))

    def on_validation_end(self, trainer, pl_module):  # after every callback of the run (appended last)
        self.after.append(self.buffers(pl_module))


def train_with(eval_bn: str, root, tmp_path, monkeypatch) -> tuple[dict, BNBuffers]:
    """40 steps of the BN MLP on the tiny set, an evaluation every 10, BN evaluated as `eval_bn` says."""
    from bnrepro import run

    recorder = BNBuffers()
    monkeypatch.setattr(run, "build_callbacks", lambda *a: [*build_callbacks(*a), recorder])
    cfg = compose_train("model=mnist_mlp_bn", *fast_overrides(root, tmp_path, steps=40, every=10),
                        f"run_name={eval_bn}", f"callbacks.population_stats.eval_bn={eval_bn}",
                        "callbacks.population_stats.eval_bn_batches=3")  # fmt: skip
    summary = run.train(cfg, tmp_path / eval_bn)
    assert summary["status"] == "finished" and summary["eval_bn"] == eval_bn
    return {"run": load_run(tmp_path / eval_bn), "ckpt": torch.load(tmp_path / eval_bn / "checkpoints" /
            "last.ckpt", weights_only=False)}, recorder  # fmt: skip


@pytest.mark.parametrize("noisy_inputs", [False, True])
def test_evaluating_with_population_statistics_leaves_training_unchanged(
    noisy_inputs, mnist_root, tmp_path, monkeypatch
):
    """eval_bn=population evaluates another network (Alg. 2's) but trains the same one, to the bit: the
    same training losses, weights, moving averages and optimizer state, and after every evaluation the
    moving averages are back in place. `noisy_inputs`: the data module adds noise from torch's global
    generator to every batch after the transfer (as a data set's jitter would), so Alg. 2's own batches
    draw from it too; training only stays the same if the generator is put back after them."""
    if noisy_inputs:
        noisy = lambda self, batch, i: (batch[0] + 0.1 * torch.randn_like(batch[0]), batch[1])  # noqa: E731
        monkeypatch.setattr(MNISTDataModule, "on_after_batch_transfer", noisy, raising=False)
    moving, moving_bufs = train_with("moving", mnist_root, tmp_path, monkeypatch)
    population, population_bufs = train_with("population", mnist_root, tmp_path, monkeypatch)
    curve = lambda r, key: r["run"].curve(key)[1].tolist()  # noqa: E731
    assert len(curve(moving, "train/loss")) == 4
    assert curve(moving, "train/loss") == curve(population, "train/loss")
    a, b = moving["ckpt"], population["ckpt"]
    assert a["state_dict"].keys() == b["state_dict"].keys()
    for key in a["state_dict"]:  # weights and BN buffers
        assert torch.equal(a["state_dict"][key], b["state_dict"][key]), key
    for s, t in zip(a["optimizer_states"][0]["state"].values(), b["optimizer_states"][0]["state"].values()):
        assert all(torch.equal(s[k], t[k]) for k in s)
    assert len(moving_bufs.after) == len(population_bufs.after) == 4
    for m, p in zip(moving_bufs.after, population_bufs.after):  # after each evaluation: the moving averages
        assert all(torch.equal(m[k], p[k]) for k in m)
    for m, p in zip(moving_bufs.during, population_bufs.during):  # during it: Alg. 2's statistics
        assert not torch.equal(m["blocks.2.norm.running_mean"], p["blocks.2.norm.running_mean"])
    # The option is applied: the evaluated network differs, in accuracy, loss and the percentiles it shows.
    assert curve(moving, "val/acc") != curve(population, "val/acc")
    for key in ("val/loss", "act/p50"):
        assert all(x != y for x, y in zip(curve(moving, key), curve(population, key))), key


def test_population_evaluation_uses_the_batches_asked_for(mnist_root, tmp_path, monkeypatch):
    """eval_bn_batches=3: the statistics during an evaluation are Alg. 2's over the stream's first 3
    mini-batches, as recompute_population_statistics gives them for the weights evaluated."""
    from bnrepro.callbacks.population import PopulationStatistics, _train_inputs

    seen = []
    original = PopulationStatistics.on_validation_start

    def spy(self, trainer, pl_module):
        original(self, trainer, pl_module)
        net = copy.deepcopy(pl_module.net)
        recompute_population_statistics(net, _train_inputs(trainer.datamodule, pl_module), 3)
        seen.append((BNBuffers.buffers(pl_module), {k: v for k, v in net.state_dict().items()}))

    monkeypatch.setattr(PopulationStatistics, "on_validation_start", spy)
    train_with("population", mnist_root, tmp_path, monkeypatch)
    assert len(seen) == 4
    for during, expected in seen:
        for key in ("running_mean", "running_var"):
            for layer in range(3):
                k = f"blocks.{layer}.norm.{key}"
                assert torch.equal(during[k], expected[k]), k


def test_an_unknown_eval_bn_is_refused_naming_the_key():
    from bnrepro.config import ConfigError
    from bnrepro.config.checks import validate

    with pytest.raises(ConfigError, match="callbacks.population_stats.eval_bn='averages' is not one of"):
        validate(compose_train("callbacks.population_stats.eval_bn=averages"))
    with pytest.raises(ConfigError, match="callbacks.population_stats.eval_bn_batches=0 must be positive"):
        validate(compose_train("callbacks.population_stats.eval_bn_batches=0"))
    node = compose_train("model=mnist_mlp_bn").callbacks.population_stats
    assert (node.eval_bn, node.eval_bn_batches) == ("population", node.num_batches)
