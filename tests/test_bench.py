"""The benchmark script runs in a tiny mode (its numbers are quoted from full runs, not asserted here)."""

from __future__ import annotations

from bnrepro.bench.mnist import main


def test_bench_mnist_tiny_mode_reports_both_loops():
    result = main(["--steps", "20", "--repeats", "1", "--steps-per-batch", "10"])
    assert result["steps"] == 20 and result["steps_per_batch"] == 10
    assert 0 < result["plain_ms_per_step"] < 1000 and 0 < result["lightning_ms_per_step"] < 1000
