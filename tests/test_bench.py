"""The benchmark script runs in a tiny mode (its numbers are quoted from full runs, not asserted here)."""

from __future__ import annotations

import pytest
import torch

from bnrepro.bench.mnist import main


def test_bench_mnist_tiny_mode_reports_both_loops():
    result = main(["--steps", "20", "--repeats", "1", "--steps-per-batch", "10"])
    assert result["steps"] == 20 and result["steps_per_batch"] == 10
    assert 0 < result["plain_ms_per_step"] < 1000 and 0 < result["lightning_ms_per_step"] < 1000


@pytest.mark.slow  # two reproduce jobs and the peer in processes (~35 s): `pytest -m slow` runs it
def test_bench_mnist_end_to_end_times_the_plain_peer_and_the_project_training_the_same_curves(
    mnist_root, tmp_path
):
    """The peer and `reproduce.py mnist`, 20 steps each on the tiny set: both timed, and the peer trained
    what the project trained (same data, init, index stream and update: the same curves)."""
    from bnrepro.bench.mnist_e2e import main as e2e

    result = e2e(["--steps", "20", "--eval-every", "10", "--data", "mnist", "--data-root", str(mnist_root),
                  "--keep", str(tmp_path / "e2e")])  # fmt: skip
    assert result["peer_wall_s"][0] > 0 and result["project_wall_s"][0] > 0 and result["ratio"] > 0
    assert (
        set(result["project_per_run_s"][0])
        == set(result["peer_per_run_s"][0])
        == {"mnist_mlp", "mnist_mlp_bn"}
    )
    for net, differences in result["max_curve_difference"].items():
        assert differences["step"] == 0 and differences["val/acc"] == 0, (net, differences)
        assert max(differences.values()) < 1e-5, (net, differences)


@pytest.mark.slow  # four BN-Inception loops and a profiler trace (~15 s); the MNIST tiny mode stays fast
def test_bench_inception_tiny_mode_reports_both_loops():
    from bnrepro.bench.inception import main as inception

    result = inception(["--tiny", "--device", "cpu", "--profile"])
    assert result["batch"] == 8 and result["image_size"] == 64 and result["hardware"].startswith("CPU")
    assert set(result["modes"]) == {"fp32/bn_group=4", "fp32/bn_group=none"}  # ghost BN on and off
    for row in result["modes"].values():
        assert row["plain_images_per_s"] > 0 and row["lightning_images_per_s"] > 0
        ratio = row["lightning_images_per_s"] / row["plain_images_per_s"]
        assert row["lightning_over_plain"] == pytest.approx(ratio, rel=0.1)  # the printed values are rounded
        shares = row["profile_percent"]
        assert sum(shares.values()) == pytest.approx(100, abs=1) and shares["convolution"] > 10


def test_profile_categories_name_the_kernels_that_matter():
    from bnrepro.bench.inception import categorise

    assert categorise("aten::cudnn_convolution") == "convolution"
    assert categorise("aten::native_batch_norm") == "batch norm"
    assert categorise("aten::var_mean") == "batch norm"  # ghost BN's statistics
    assert categorise("aten::relu_") == "elementwise"
    assert categorise("aten::max_pool2d_with_indices") == "pooling"
    assert categorise("aten::embedding") == "other"


def test_bench_inception_refuses_a_run_without_warm_up_steps(capsys):
    from bnrepro.bench.inception import main as inception

    with pytest.raises(SystemExit):
        inception(["--device", "cpu", "--warmup", "0"])
    assert "--warmup and --steps must be at least 1" in capsys.readouterr().err


def test_bench_cpu_width_times_every_variant_of_a_narrow_net():
    from bnrepro.bench.cpu_width import VARIANTS
    from bnrepro.bench.cpu_width import main as cpu_width

    threads = torch.get_num_threads()
    try:
        result = cpu_width(["--widths", "0.25", "--batch", "4", "--steps", "1", "--warmup", "0"])
    finally:
        torch.set_num_threads(threads)  # the bench sets one thread for its process
    assert list(result["ms_per_step"]) == [0.25] and result["threads"] == 1
    assert set(result["ms_per_step"][0.25]) == {v[0] for v in VARIANTS}
    assert all(0 < ms < 60_000 for ms in result["ms_per_step"][0.25].values())
