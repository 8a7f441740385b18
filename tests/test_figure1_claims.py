"""Figure 1's two claims, and BN's band being no jitterier, decided robustly on hand-made curves: each
decision holds where the curves say so and fails where they do not; the table, the test-set size and
several seeds."""

from __future__ import annotations

import csv
import json
import zlib
from pathlib import Path

import numpy as np
import pytest

from bnrepro.results import mnist_figure1
from bnrepro.results.mnist_figure1 import render
from bnrepro.results.runs import load_run

STEPS = np.arange(500, 50_001, 500)


def write(
    path: Path,
    model: str,
    acc,
    pct,
    seed: int = 0,
    val_examples: int | None = 10_000,
    noise: float = 0.0,
    eval_bn: str | None = None,
):
    """A run folder with val/acc = acc(step) and percentiles pct(step) -> (p15, p50, p85), plus noise."""
    rng = np.random.default_rng([zlib.crc32(model.encode()), seed])  # the same noise in every process
    path.mkdir(parents=True)
    with open(path / "metrics.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["act/p15", "act/p50", "act/p85", "step", "val/acc"])
        for s in STEPS:
            w.writerow([*pct(s), s, acc(s) + noise * rng.standard_normal()])
    summary = {"status": "finished", "model": model, "data": "mnist", "seed": seed, "max_steps": 50_000,
               "best_acc": float(max(acc(s) for s in STEPS)), "best_step": 50_000, "git_sha": "abc",
               "hardware": "test CPU", "world_size": 1, "global_batch": 60, "val_examples": val_examples,
               "finished_at": f"2026-01-01T00:00:0{seed}+00:00"}  # fmt: skip
    if eval_bn is not None:  # runs from before callbacks.population_stats.eval_bn lack it
        summary["eval_bn"] = eval_bn
    (path / "summary.json").write_text(json.dumps(summary))
    return load_run(path)


def steady(s):
    return (-1.0, 0.0, 1.0)


def claims(tmp_path: Path, base_acc, bn_acc, base_pct=steady, bn_pct=steady, seeds=(0,), **kw) -> dict:
    """Renders two nets (and seeds) and returns {claim number: its line}."""
    runs = [write(tmp_path / f"{m}-{k}", m, acc, pct, seed=k, **kw)
            for m, acc, pct in (("mnist_mlp", base_acc, base_pct), ("mnist_mlp_bn", bn_acc, bn_pct))
            for k in seeds]  # fmt: skip
    _, md = render(runs, out_dir=tmp_path / "results", command="x")
    text = md.read_text()
    lines = [line for line in text.splitlines() if line.startswith("- ") and "->" in line]
    keys = {"trains faster": "1a", "ends higher": "1b", "input steady": "2", "no jitterier": "3"}
    return {k: line for line in lines for phrase, k in keys.items() if phrase in line} | {"text": text}


def rising(start: float, end: float):
    return lambda s: start + (end - start) * s / 50_000


def verdict(line: str) -> str:
    return line.rsplit("->", 1)[1].strip().rstrip(".")


def test_all_three_decisions_hold_on_curves_that_show_them(tmp_path):
    base = lambda s: 0.5 + 0.35 * (1 - np.exp(-s / 15_000))  # noqa: E731
    bn = lambda s: 0.6 + 0.3 * (1 - np.exp(-s / 3_000))  # noqa: E731
    drifting = lambda s: (-1 - s / 20_000, -s / 20_000, 1 - s / 20_000)  # noqa: E731
    c = claims(tmp_path, base, bn, base_pct=drifting, noise=0.005)
    assert [verdict(c[k]) for k in ("1a", "1b", "2")] == ["holds"] * 3


def test_one_lucky_evaluation_does_not_make_bn_faster(tmp_path):
    """BN is behind at every evaluation of the first fifth except the one at 10k steps."""
    bn = lambda s: 0.75 if s == 10_000 else 0.6  # noqa: E731
    c = claims(tmp_path, lambda s: 0.7, bn)
    assert verdict(c["1a"]) == "does NOT hold"


def test_bn_ahead_early_but_behind_at_the_end_fails_the_second_part(tmp_path):
    c = claims(tmp_path, rising(0.5, 0.9), rising(0.7, 0.85), noise=0.003)
    assert verdict(c["1a"]) == "holds" and verdict(c["1b"]) == "does NOT hold"


def test_the_baselines_collapsed_start_does_not_count_as_movement(tmp_path):
    """Without BN the N(0, 0.05^2) init puts every input near 0 at first; the percentiles then spread out
    and stay. That spreading is not the baseline's distribution moving during training; BN's drift is."""
    collapsed = lambda s: (0.0, 0.0, 0.0) if s <= 2_500 else (-1.0, 0.0, 1.0)  # noqa: E731
    drifting = lambda s: (-1 + s / 100_000, s / 100_000, 1 + s / 100_000)  # noqa: E731
    c = claims(tmp_path, rising(0.5, 0.9), rising(0.7, 0.95), base_pct=collapsed, bn_pct=drifting)
    assert verdict(c["2"]) == "does NOT hold"


def test_the_table_starts_where_the_effect_is_largest(tmp_path):
    c = claims(tmp_path, rising(0.5, 0.9), rising(0.7, 0.95))
    assert "| model | 500 | 1k | 2k | 5k | 10k | 20k | 50k | best (step) |" in c["text"]
    assert (
        "| Without BN (mnist_mlp) | 0.5040 | 0.5080 | 0.5160 | 0.5400 | 0.5800 | 0.6600 | 0.9000 |"
        in c["text"]
    )


def test_the_test_set_size_comes_from_the_runs(tmp_path):
    c = claims(tmp_path, rising(0.5, 0.9), rising(0.7, 0.95), val_examples=1_000)
    assert "1,000 test images" in c["text"] and "10k" not in c["text"].split("|")[0]


def test_several_seeds_give_mean_and_spread_and_bands(tmp_path, monkeypatch):
    figures = []
    monkeypatch.setattr(mnist_figure1.plt, "close", figures.append)
    c = claims(tmp_path, rising(0.5, 0.9), rising(0.7, 0.95), seeds=(0, 1, 2), noise=0.01)
    text = c["text"]
    assert "mean ± sample standard deviation over 3 seeds" in text
    row = next(line for line in text.splitlines() if line.startswith("| With BN"))
    assert row.count(" ± ") >= 7
    ax = figures[0].axes[0]
    assert len(ax.collections) >= 2  # a band per net


def jittery(amplitude: float, drift: float = 0.0):
    """Percentiles that drift linearly and go up and down by `amplitude` from one evaluation to the next."""
    return lambda s: tuple(v + drift * s / 50_000 + amplitude * (-1) ** (s // 500) for v in (-1.0, 0.0, 1.0))


def jitter_number(line: str, which: int) -> float:
    return float(line.split("jitter ", 1)[1].split(" (")[0].split(" vs ")[which])


def test_a_jittery_bn_band_fails_the_third_claim(tmp_path):
    """BN's percentiles hop by 0.05 at every evaluation, the baseline's by 0.01 around a large drift: the
    drift is taken out, the hops are not, so BN's band is jitterier."""
    c = claims(tmp_path, rising(0.5, 0.9), rising(0.7, 0.95), base_pct=jittery(0.01, drift=2.0),
               bn_pct=jittery(0.05))  # fmt: skip
    assert verdict(c["3"]) == "does NOT hold"
    assert jitter_number(c["3"], 0) > jitter_number(c["3"], 1) > 0


def test_a_smooth_bn_band_holds_the_third_claim_however_far_the_baseline_drifts(tmp_path):
    c = claims(tmp_path, rising(0.5, 0.9), rising(0.7, 0.95), base_pct=jittery(0.02, drift=5.0),
               bn_pct=jittery(0.01), eval_bn="population")  # fmt: skip
    assert verdict(c["3"]) == "holds"
    # a linear drift leaves no residual: the jitter is the hops' alone (4 decimals shown)
    assert jitter_number(c["3"], 1) == pytest.approx(2 * jitter_number(c["3"], 0), rel=0.02)
    assert "Alg. 2's population statistics" in c["text"] and "noisier" not in c["text"]


def test_runs_without_eval_bn_were_evaluated_with_moving_averages(tmp_path):
    c = claims(tmp_path, rising(0.5, 0.9), rising(0.7, 0.95))
    assert "with its moving-average statistics (momentum 0.1)" in c["text"]


def test_the_percentile_panels_say_in_words_what_they_show(tmp_path, monkeypatch):
    """(b) and (c): the axis names the sigmoid in words, not the module path the callback records; a
    legend tells the 15th, 50th and 85th percentiles apart and explains the shading and the bands."""
    figures = []
    monkeypatch.setattr(mnist_figure1.plt, "close", figures.append)
    runs = [write(tmp_path / f"{m}-{k}", m, rising(0.5, 0.9), steady, seed=k)
            for m in ("mnist_mlp", "mnist_mlp_bn") for k in (0, 1)]  # fmt: skip
    for r in runs:
        r.summary["percentile_unit"] = "blocks.2.act[0]"  # callbacks/percentiles.py: module[unit]
    render(runs, out_dir=tmp_path / "results", command="x")
    a, b, c = figures[0].axes
    for ax in (b, c):
        assert ax.get_ylabel() == "input to one sigmoid of hidden layer 3"
        legend = ax.get_legend()
        assert [t.get_text() for t in legend.get_texts()] == [
            "85th percentile", "50th percentile", "15th percentile", "first tenth: not in claim 2"]  # fmt: skip
        assert legend.get_title().get_text() == "bands: ± 1 std over seeds"
        assert len({line.get_linestyle() for line in ax.get_lines()}) == 3  # three lines told apart
    assert "windows of claims 1a, 1b" in [t.get_text() for t in a.get_legend().get_texts()]
    assert mnist_figure1.sigmoid_label(None) == "input to one sigmoid of the last hidden layer"
