"""Rendering Figure 1 from run folders the test writes (no training): numbers, claims, provenance."""

from __future__ import annotations

import csv
import json

import numpy as np

from bnrepro.results.mnist_figure1 import render
from bnrepro.results.runs import load_run


def write_run(path, model, acc, p50, data="fashion_mnist"):
    path.mkdir(parents=True)
    steps = np.arange(500, 50_001, 500)
    with open(path / "metrics.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["act/p15", "act/p50", "act/p85", "step", "train/loss", "val/acc", "val/loss"])
        for s in steps:
            w.writerow([p50(s) - 1, p50(s), p50(s) + 1, s, 0.5, acc(s), 0.4])
    summary = {"status": "finished", "model": model, "data": data, "max_steps": 50_000, "best_acc": acc(50_000),
               "best_step": 50_000, "git_sha": "abc123", "hardware": "test CPU", "world_size": 1,
               "global_batch": 60, "finished_at": "2026-01-01T00:00:00+00:00"}  # fmt: skip
    (path / "summary.json").write_text(json.dumps(summary))
    return load_run(path)


def test_render_writes_figure_and_table_with_the_papers_claims(tmp_path):
    base = write_run(tmp_path / "runs/a", "mnist_mlp", lambda s: 0.5 + s / 200_000, lambda s: -s / 10_000)
    bn = write_run(tmp_path / "runs/b", "mnist_mlp_bn", lambda s: 0.7 + s / 500_000, lambda s: 0.1)
    png, md = render(
        [base, bn], out_dir=tmp_path / "results", command="just reproduce mnist data=fashion_mnist"
    )
    assert png.stat().st_size > 10_000
    text = md.read_text()
    assert "| Without BN (mnist_mlp) | 0.5025 | 0.5050 | 0.5100 | 0.5250 | 0.5500 | 0.6000 | 0.7500 |" in text
    assert "| With BN (mnist_mlp_bn) | 0.7010 | 0.7020 | 0.7040 | 0.7100 | 0.7200 | 0.7400 | 0.8000 |" in text
    assert "Fashion-MNIST" in text and "stands in for MNIST" in text
    # faster and higher at the end with BN; band drifts without, not with; no jitterier with BN
    assert text.count("-> holds") == 4
    assert "just reproduce mnist data=fashion_mnist" in text and "abc123" in text


def test_claims_are_reported_as_failing_when_the_curves_say_so(tmp_path):
    base = write_run(tmp_path / "a", "mnist_mlp", lambda s: 0.9, lambda s: 0.0, data="mnist")
    bn = write_run(tmp_path / "b", "mnist_mlp_bn", lambda s: 0.8, lambda s: s / 1000)
    _, md = render([base, bn], out_dir=tmp_path, command="x")
    text = md.read_text()
    assert text.count("does NOT hold") == 3 and "stands in" not in text


def test_short_runs_say_the_claim_cannot_be_checked_instead_of_failing_it(tmp_path):
    base = write_run(tmp_path / "a", "mnist_mlp", lambda s: 0.5, lambda s: 0.0, data="mnist")
    bn = write_run(tmp_path / "b", "mnist_mlp_bn", lambda s: 0.6, lambda s: 0.0, data="mnist")
    keep = base.metrics["step"] < 10_000  # as if both runs had stopped at 9.5k steps
    for run in (base, bn):
        run.metrics = {k: v[keep] for k, v in run.metrics.items()}
    _, md = render([base, bn], out_dir=tmp_path, command="x")
    text = md.read_text()
    assert "| n/a | n/a | n/a |" in text
    assert (
        "1b. BN ends higher -> cannot be checked: fewer than 2 evaluations there (the runs end at 9,500"
        in text
    )
