"""Figures 2, 3 and 4 from runs the tests write by hand: steps-to-target, max, never / diverged / missing,
seeds, the committed golden table, and the same table from a local run folder and its W&B offline run."""

from __future__ import annotations

import csv
import json
import math
import os
from pathlib import Path

import numpy as np
import pytest

from bnrepro import variants
from bnrepro.results import figure2, figure3, figure4
from bnrepro.results.runs import best, load_run, steps_to
from bnrepro.results.sources import read_runs, read_wandb_offline
from bnrepro.variants import FIGURE3

GOLDEN = Path(__file__).parent / "golden"


def curve_rows(acc, steps, global_batch):
    """metrics.csv rows as the training run logs them: train rows, then val rows with paper_step."""
    rows = []
    for s in steps:
        rows.append({"step": s, "train/loss": 1.0})
        rows.append({"step": s, "paper_step": s * global_batch / 32, "val/acc": acc(s), "val/acc_top5": 1.0})
    return rows


def write_run(path: Path, model: str, acc, steps=range(100, 1001, 100), status="finished", seed=0,
              global_batch=64, diverged_at=None, data="fashion_mnist"):  # fmt: skip
    path.mkdir(parents=True)
    rows = curve_rows(acc, steps, global_batch)
    keys = sorted({k for r in rows for k in r})
    with open(path / "metrics.csv", "w", newline="") as f:
        w = csv.DictWriter(f, keys)
        w.writeheader()
        w.writerows(rows)
    summary = {"status": status, "model": model, "data": data, "seed": seed, "task": "fashion_figure3",
               "global_batch": global_batch, "world_size": 1, "hardware": "test CPU", "git_sha": "abc123",
               "diverged_at_step": diverged_at, "finished_at": f"2026-01-01T00:00:0{seed}+00:00"}  # fmt: skip
    (path / "summary.json").write_text(json.dumps(summary))
    return load_run(path), rows, summary


def hand_made_runs(root: Path):
    """Inception peaks at 0.80 (step 1000); BN-x5 gets there at 300; BN-x30 at 200 then diverges at 500;
    BN-x5-Sigmoid never does; Inception-Sigmoid stays at chance (10 classes); BN-Baseline has no run."""
    runs = [
        write_run(root / "inception", "inception", lambda s: 0.80 * s / 1000),
        write_run(root / "bn_x5", "bn_x5", lambda s: min(0.85, 0.30 + s / 600)),
        write_run(root / "bn_x30", "bn_x30", lambda s: 0.5 + s / 1000, steps=range(100, 501, 100),
                  status="diverged", diverged_at=520),
        write_run(root / "bn_x5_sigmoid", "bn_x5_sigmoid", lambda s: 0.6 + s / 10_000),
        write_run(root / "inception_sigmoid", "inception_sigmoid", lambda s: 0.1),
    ]  # fmt: skip
    return [r for r, _, _ in runs], runs


def test_steps_to_target_and_max_on_hand_made_curves(tmp_path):
    run, _, _ = write_run(tmp_path / "r", "bn_x5", lambda s: [0.1, 0.5, 0.7, 0.7, 0.6][s // 100 - 1],
                          steps=range(100, 501, 100), global_batch=64)  # fmt: skip
    assert steps_to(run, 0.7) == 300 * 64 / 32  # first evaluation at or above, in paper steps
    assert steps_to(run, 0.5) == 400.0
    assert steps_to(run, 0.71) is None
    assert best(run) == (0.7, 600.0)  # the first time the max was reached


def test_figure3_table_matches_the_committed_golden_table(tmp_path):
    runs, _ = hand_made_runs(tmp_path / "runs")
    rows, target, origin = figure3.table_rows(figure3.by_model(runs), "inception")
    assert target == pytest.approx(0.80) and "Inception run's max" in origin
    table = "\n".join(figure3.markdown_table(rows, target)) + "\n"
    assert table == (GOLDEN / "figure3_table.md").read_text()
    by = {r.model: r for r in rows}
    assert by["bn_x5"].steps_mean == 600.0 and by["inception"].steps_mean == 2000.0
    assert figure3.steps_cell(by["bn_baseline"], target) == "missing"
    assert figure3.steps_cell(by["bn_x5_sigmoid"], target) == "never"
    assert by["bn_x30"].diverged == 1 and by["bn_x30"].diverged_at == 1040.0
    # plateau reached: the rising Inception curve has not, the flat BN-x5 one has (plateau.py's criterion)
    assert figure3.plateau_table_cell(by["inception"]) == "0 of 1 (+16.0 pt)"
    assert figure3.plateau_table_cell(by["bn_x5"]) == "1 of 1 (+0.0 pt)"

    md, out_csv = figure3.render(
        runs, tmp_path / "results", command="just reproduce figure3 data=fashion_mnist"
    )
    text = md.read_text()
    assert table in text and "NOT ImageNet" in text and "just reproduce figure3 data=fashion_mnist" in text
    assert "5 runs" in text and "abc123" in text and "test CPU" in text and "global batch 64" in text
    rows_csv = list(csv.DictReader(open(out_csv)))
    assert [r["model"] for r in rows_csv] == list(FIGURE3)
    assert rows_csv[1]["status"] == "missing" and rows_csv[2]["steps_to_target_mean"] == "600.0"


def test_a_target_given_as_a_number_and_no_inception_run(tmp_path):
    runs, _ = hand_made_runs(tmp_path / "runs")
    without = [r for r in runs if r.summary["model"] != "inception"]
    rows, target, origin = figure3.table_rows(figure3.by_model(without), "inception")
    assert target is None and "pass target=" in origin
    assert figure3.steps_cell(rows[2], target) == "n/a (no target)"
    rows, target, _ = figure3.table_rows(figure3.by_model(without), "0.62")
    assert target == 0.62 and rows[4].steps_mean == 200 * 2  # the sigmoid reaches 0.62 at step 200


def test_seeds_give_mean_and_spread_and_partial_success(tmp_path):
    runs = [write_run(tmp_path / "i", "inception", lambda s: 0.8 * s / 1000)[0]]
    runs += [write_run(tmp_path / f"s{k}", "bn_x5", lambda s, k=k: min(0.9, s / (400 + 100 * k)), seed=k)[0]
             for k in range(3)]  # fmt: skip
    runs.append(write_run(tmp_path / "s3", "bn_x5", lambda s: 0.5, seed=3)[0])
    runs.append(
        write_run(tmp_path / "s4", "bn_x5", lambda s: 0.5, seed=4, status="diverged", diverged_at=300)[0]
    )
    rows, target, _ = figure3.table_rows(figure3.by_model(runs), "inception")
    r = rows[2]
    # seeds reach 0.8 at steps 400, 400 (0.8 x 500 = 400), 480 -> 500 (evaluations every 100 steps)
    assert r.runs == 5 and r.reached == 3 and r.never == 1 and r.diverged_early == 1
    assert r.steps_mean == pytest.approx(np.mean([800, 800, 1000]))
    assert r.steps_std == pytest.approx(np.std([800, 800, 1000], ddof=1))
    cell = figure3.steps_cell(r, target)
    assert "(mean of the 3 of 5 runs that reach it; 1 never, 1 diverged)" in cell and " ± " in cell


def test_figure2_plots_every_variant_with_markers(tmp_path):
    runs, _ = hand_made_runs(tmp_path / "runs")
    png, svg = figure2.render(runs, tmp_path / "results", command="just reproduce figure2")
    assert png.stat().st_size > 20_000 and svg.read_text().count("<svg") == 1
    assert "missing: BN-Baseline" in svg.read_text()


def test_a_wandb_offline_run_gives_the_same_table_as_its_local_folder(tmp_path, monkeypatch):
    """Real W&B offline runs, written by wandb with the same rows and summary, read back by `wandb leet`."""
    wandb = pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    runs, written = hand_made_runs(tmp_path / "runs")
    for run, rows, summary in written:
        w = wandb.init(project="t", dir=str(run.path), config={"model": summary["model"]})
        for row in rows:  # Lightning's WandbLogger logs `step` as trainer/global_step
            w.log({("trainer/global_step" if k == "step" else k): v for k, v in row.items()})
        w.summary["run_summary"] = summary  # what callbacks/summary.py writes
        w.finish()
    offline = read_runs("wandb_offline", tmp_path, "runs")
    assert sorted(r.summary["model"] for r in offline) == sorted(r.summary["model"] for r in runs)
    one = read_wandb_offline(next((tmp_path / "runs/bn_x5/wandb").glob("offline-run-*")))
    local = load_run(tmp_path / "runs/bn_x5")
    for key in ("step", "paper_step", "val/acc"):
        np.testing.assert_array_equal(one.curve(key)[1], local.curve(key)[1])

    def table(rs):
        rows, target, _ = figure3.table_rows(figure3.by_model(rs), "inception")
        return figure3.markdown_table(rows, target)

    assert table(offline) == table(runs)


def test_wandb_api_source_shares_the_offline_parsing(tmp_path):
    """The online path only fetches (scan_history, summary); the rows go through the same wandb_run."""
    from bnrepro.results import sources

    _, written = hand_made_runs(tmp_path / "runs")

    class FakeRun:
        def __init__(self, rows, summary):
            self.url, self.summary = f"https://wandb.ai/e/p/runs/{summary['model']}", {"run_summary": summary}
            self._history = [{("trainer/global_step" if k == "step" else k): v for k, v in r.items()}
                             | {"_step": i, "_runtime": 1.0} for i, r in enumerate(rows)]  # fmt: skip

        def scan_history(self):
            return iter(self._history)

    class FakeApi:
        def runs(self, path, filters):
            assert path == "e/p" and filters == {"summary_metrics.run_summary.task": "fashion_figure3"}
            return [FakeRun(rows, summary) for _, rows, summary in written]

    api_runs = sources.wandb_api_runs("e", "p", "fashion_figure3", api=FakeApi())
    local = [r for r, _, _ in written]
    a = figure3.table_rows(figure3.by_model(api_runs), "inception")
    b = figure3.table_rows(figure3.by_model(local), "inception")
    assert figure3.markdown_table(a[0], a[1]) == figure3.markdown_table(b[0], b[1])


def test_unknown_source_and_missing_project_are_clear_errors(tmp_path):
    from bnrepro.results.sources import SourceError

    with pytest.raises(SourceError, match="expected one of local, wandb_offline, wandb"):
        read_runs("s3", tmp_path, "x")
    with pytest.raises(SourceError, match="project="):
        read_runs("wandb", tmp_path, "x")


def test_figure4_table_from_evaluation_records(tmp_path):
    base = {"data": "imagenet", "num_images": 50_000, "world_size": 8, "hardware": "8x H100", "git_sha": "abc",
            "checkpoints": ["runs/x/best.ckpt"], "model": "bn_x30"}  # fmt: skip
    evals = [
        {**base, "weights": "run", "members": 1, "crops": 1, "protocol": "single crop", "top1_err": 0.252,
         "top5_err": 0.0782, "finished_at": "1"},
        {**base, "weights": "run", "members": 6, "crops": 144, "protocol": "144 crops", "top1_err": 0.201,
         "top5_err": 0.049, "finished_at": "2"},
        {**base, "weights": "caffe_port", "members": 1, "crops": 1, "protocol": "single crop", "top1_err": 0.3,
         "top5_err": 0.1, "finished_at": "3"},
        {**base, "weights": "caffe_port", "members": 1, "crops": 1, "protocol": "single crop", "top1_err": 0.265,
         "top5_err": 0.084, "finished_at": "4"},  # newer: replaces the row above
    ]  # fmt: skip
    (md,) = figure4.render(evals, tmp_path, command="just tables figure4")
    text = md.read_text()
    assert "| bn_x30 | single crop | imagenet | 50000 | 25.20% | 7.82% |" in text
    assert "| ensemble of 6 bn_x30 | 144 crops | imagenet | 50000 | 20.10% | 4.90% |" in text
    assert "26.50% | 8.40%" in text and "30.00%" not in text
    assert "| BN-Inception | 144 crops | 21.99% | 5.82% |" in text  # the paper's rows beside


def test_fashion_images_view_resizes_replicates_and_normalises():
    import torch

    from bnrepro.data.mnist import GreyToImages

    t = GreyToImages(64, mean=[0.5] * 3, std=[0.25] * 3)
    x = torch.rand(2, 5, 1, 28, 28)  # a chunk of 2 steps x 5 images
    y = t(x)
    assert y.shape == (2, 5, 3, 64, 64)
    assert torch.equal(y[:, :, 0], y[:, :, 2])  # grey replicated
    flat = torch.full((1, 1, 28, 28), 0.75)
    assert torch.allclose(t(flat), torch.ones(1, 3, 64, 64))  # (0.75 - 0.5) / 0.25
    assert not math.isnan(float(y.mean()))


def test_fashion_figure3_composes_into_the_proxy(tmp_path):
    from bnrepro.config.loop import resolve_loop
    from conftest import compose_train

    inc = compose_train("experiment=fashion_figure3", "model=inception")
    x30 = compose_train("experiment=fashion_figure3", "model=bn_x30")
    cpu = compose_train("experiment=fashion_figure3_cpu", "model=bn_x30")
    assert inc.task == x30.task == "fashion_figure3" and inc.data.to_images and inc.augment.name == "none"
    assert (inc.data.image_size, inc.data.batch_size, inc.loop.epoch_scale) == (64, 32, 1.0)
    # Every variant the same length: 1.2 epochs of 60k at the paper's batch of 32, in whole evaluation
    # periods of 0.1 epochs (188 steps): the lengths of the committed results/figure3.md runs.
    loops = [resolve_loop(cfg, 32) for cfg in (inc, x30, cpu)]
    assert loops[0] == loops[1] and (loops[0].max_steps, loops[0].eval_every) == (2256, 188)
    # The multipliers apply to the base LR tuned for Inception on the proxy (results/figure3_lr_grid.md).
    assert (inc.optimizer.lr, x30.optimizer.lr) == (
        0.005,
        0.15,
    ) and x30.lr_schedule.decay_every_epochs == 0.128
    # The 2-core scale differs only in input size, test images and memory layout.
    assert (cpu.data.image_size, cpu.data.num_val_examples, cpu.task) == (32, 2000, "fashion_figure3_cpu")
    assert loops[2] == loops[0] and cpu.optimizer.lr == 0.15


def _load(name: str):
    import importlib.util
    import sys

    from conftest import ROOT

    sys.path.insert(0, str(ROOT / "reproduce"))
    spec = importlib.util.spec_from_file_location(name, ROOT / "reproduce" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_tables_use_only_the_sweeps_own_runs_and_prefer_a_whole_data_set(tmp_path):
    """A smoke run under another run_name, and a newer lone run on another data set, stay out."""
    reproduce = _load("reproduce")
    root = tmp_path / "runs"
    for model in FIGURE3:
        run, _, summary = write_run(
            root / "fashion_figure3" / f"{model}-fashion_mnist-seed0", model, lambda s: s / 1000
        )
        summary.update(run_name=f"{model}-fashion_mnist-seed0")
        (run.path / "summary.json").write_text(json.dumps(summary))
    smoke, _, summary = write_run(root / "fashion_figure3" / "smoke", "bn_x30", lambda s: 0.99)
    (smoke.path / "summary.json").write_text(
        json.dumps({**summary, "run_name": "smoke", "finished_at": "2027"})
    )
    lone, _, summary = write_run(root / "imagenette_figure3" / "bn_x5-imagenette-seed0", "bn_x5", lambda s: 0.5,
                                 data="imagenette")  # fmt: skip
    summary.update(run_name="bn_x5-imagenette-seed0", task="imagenette_figure3", finished_at="2027")
    (lone.path / "summary.json").write_text(json.dumps(summary))

    reproduce.render_only("figure3", [], root, tmp_path / "results")
    text = (tmp_path / "results" / "figure3.md").read_text()
    assert "NOT ImageNet" in text and "| missing |" not in text and f"{len(FIGURE3)} runs" in text
    assert "99.0%" not in text  # the smoke run's accuracy
    assert (tmp_path / "results" / "figure2.png").is_file()  # figure3's spec renders Figure 2 too


def test_an_evaluation_is_stale_when_its_checkpoints_change(tmp_path):
    evaluations = _load("evaluations")
    a, b = tmp_path / "a.ckpt", tmp_path / "b.ckpt"
    a.write_bytes(b"x")
    b.write_bytes(b"x")
    record = tmp_path / "eval.json"
    record.write_text(json.dumps({"checkpoints": [str(a)], "crops": 1}))
    os.utime(a, (0, 0))
    assert evaluations.current(record, [str(a)], 1)
    assert not evaluations.current(record, [str(a)], 144)  # another protocol
    assert not evaluations.current(record, [str(b)], 1)  # other networks
    os.utime(a, (record.stat().st_mtime + 10,) * 2)  # retrained after the evaluation
    assert not evaluations.current(record, [str(a)], 1)


def test_tables_find_figure1_runs_made_on_the_offline_stand_in(tmp_path):
    """`just reproduce mnist data=fashion_mnist` runs are rendered by a plain `just tables mnist`."""
    from test_results import write_run as write_mnist_run

    reproduce = _load("reproduce")
    for model in ("mnist_mlp", "mnist_mlp_bn"):
        name = f"{model}-fashion_mnist-seed0"
        run = write_mnist_run(tmp_path / "runs" / "mnist_figure1" / name, model, lambda s: 0.5, lambda s: 0.0)
        summary = {**run.summary, "task": "mnist_figure1", "run_name": name, "seed": 0}
        (run.path / "summary.json").write_text(json.dumps(summary))
    reproduce.render_only("mnist", [], tmp_path / "runs", tmp_path / "results")
    assert "Fashion-MNIST" in (tmp_path / "results" / "mnist_figure1.md").read_text()


def test_wandb_failures_are_source_errors_that_say_what_to_do(tmp_path, monkeypatch):
    from bnrepro.results import sources

    class DownApi:
        def runs(self, path, filters):
            raise ConnectionError("no route to host")

    with pytest.raises(sources.SourceError, match=r"W&B project 'e/p': ConnectionError.*wandb login"):
        sources.wandb_api_runs("e", "p", "t", api=DownApi())
    (tmp_path / "run-x").mkdir()
    with pytest.raises(sources.SourceError, match="wandb leet inspect --json .* failed"):
        sources.read_wandb_offline(tmp_path / "run-x")  # a folder without a .wandb log


def seeded_runs(root: Path):
    """Three Inception seeds, all at 0.80 by step 1000 (paper step 2000); BN-x5: seed 0 reaches 0.80 at
    step 400, seed 1 at 600, seed 2 plateaus at 0.75 and never does; BN-x30: seed 0 reaches it at 400,
    seed 1 diverges at 0.5 first; BN-x5-Sigmoid: two seeds, neither reaches it."""
    runs = [write_run(root / f"i{k}", "inception", lambda s: 0.8 * s / 1000, seed=k)[0] for k in range(3)]
    for k, (top, slope) in enumerate(((0.90, 500), (0.88, 750), (0.75, 500))):
        runs.append(write_run(root / f"x5-{k}", "bn_x5", lambda s, t=top, e=slope: min(t, s / e), seed=k)[0])
    runs.append(write_run(root / "x30-0", "bn_x30", lambda s: min(0.9, s / 500), seed=0)[0])
    runs.append(write_run(root / "x30-1", "bn_x30", lambda s: 0.5, steps=range(100, 301, 100), seed=1,
                          status="diverged", diverged_at=320)[0])  # fmt: skip
    runs += [write_run(root / f"sig{k}", "bn_x5_sigmoid", lambda s: 0.7, seed=k)[0] for k in range(2)]
    return runs


def test_figure3_speedup_and_max_difference_vs_inception_over_seeds(tmp_path):
    rows, target, _ = figure3.table_rows(figure3.by_model(seeded_runs(tmp_path)), "inception")
    by = {r.model: r for r in rows}
    x5, ref = by["bn_x5"], by["inception"]
    assert target == pytest.approx(0.8) and ref.steps_mean == 2000.0 and ref.max_mean == pytest.approx(0.8)
    # speed-up per run that reaches 0.80: Inception's mean steps / the run's (paper steps 800 and 1200)
    ratios = [2000 / 800, 2000 / 1200]
    assert (x5.speedup_mean, x5.speedup_std, x5.speedup_n) == (
        pytest.approx(np.mean(ratios)), pytest.approx(np.std(ratios, ddof=1)), 2)  # fmt: skip
    diffs = [0.90 - 0.8, 0.88 - 0.8, 0.75 - 0.8]  # every run's max minus Inception's mean max
    assert (x5.max_diff_mean, x5.max_diff_std, x5.max_diff_n) == (
        pytest.approx(np.mean(diffs)), pytest.approx(np.std(diffs, ddof=1)), 3)  # fmt: skip
    assert x5.not_reached == ["seed 2 never"]

    table = figure3.markdown_table(rows, target)
    assert "| speed-up vs Inception | paper: speed-up |" in table[0]
    assert "| max vs Inception's (points) | paper: max vs Inception's |" in table[0]
    line = {r.split(" | ")[0].strip("| "): r for r in table[2:]}
    assert "| 2.1x ± 0.6x (n=2: 2 of 3 reached; seed 2 never) | 14.8x |" in line["BN-x5"]
    assert "| +4.3 ± 8.1 (n=3) | +0.8 |" in line["BN-x5"]
    assert "| 2.5x (n=1: 1 of 2 reached; seed 1 diverged) | 11.5x |" in line["BN-x30"]
    assert "| never (0 of 2 reached; seed 0 never, seed 1 never) | never |" in line["BN-x5-Sigmoid"]
    assert "| 1.0x ± 0.0x (reference; n=3) | 1.0x (reference) |" in line["Inception"]
    assert "| +0.0 ± 0.0 (reference; n=3) | +0.0 (reference) |" in line["Inception"]
    assert "| missing | 2.3x |" in line["BN-Baseline"] and "| missing | +0.5 |" in line["BN-Baseline"]
    assert "| missing | never |" in line["Inception-Sigmoid"]
    assert "| missing | never better than 0.1% |" in line["Inception-Sigmoid"]


def test_figure3_paper_columns_come_from_the_variants_table(monkeypatch):
    """31.0e6 / 13.3e6 = 2.3x, / 2.1e6 = 14.8x, / 2.7e6 = 11.5x; 72.7 - 72.2 = +0.5 points, and so on."""
    speedups = {m: figure3.paper_speedup(m) for m in FIGURE3}
    assert speedups == {"inception": 1.0, "bn_baseline": pytest.approx(31.0 / 13.3), "bn_x5": pytest.approx(31.0 / 2.1),
                        "bn_x30": pytest.approx(31.0 / 2.7), "bn_x5_sigmoid": "never", "inception_sigmoid": "never"}  # fmt: skip
    assert [figure3.paper_speedup_cell(m) for m in FIGURE3] == [
        "1.0x (reference)", "2.3x", "14.8x", "11.5x", "never", "never"]  # fmt: skip
    assert [figure3.paper_max_diff_cell(m) for m in FIGURE3] == [
        "+0.0 (reference)", "+0.5", "+0.8", "+2.6", "-2.4", "never better than 0.1%"]  # fmt: skip
    # From the entries, not written twice: a changed entry changes the columns.
    monkeypatch.setitem(FIGURE3, "bn_x5", variants.Variant("BN-x5", paper_max=0.742, paper_steps=3.1e6))
    assert figure3.paper_speedup_cell("bn_x5") == "10.0x" and figure3.paper_max_diff_cell("bn_x5") == "+2.0"
    monkeypatch.setitem(
        FIGURE3, "inception", variants.Variant("Inception", paper_max=0.732, paper_steps=62.0e6)
    )
    assert figure3.paper_speedup_cell("bn_x5") == "20.0x" and figure3.paper_max_diff_cell("bn_x5") == "+1.0"
    monkeypatch.setitem(FIGURE3, "bn_x5", variants.Variant("BN-x5"))  # not in the paper
    assert figure3.paper_speedup_cell("bn_x5") == "n/a" and figure3.paper_max_diff_cell("bn_x5") == "n/a"


def test_figure3_file_defines_the_spread_and_n_and_its_csv_matches(tmp_path):
    runs = seeded_runs(tmp_path / "runs")
    md, out_csv = figure3.render(runs, tmp_path / "results", command="x")
    text = md.read_text()
    assert "`±`: mean ± sample standard deviation (ddof=1) over the runs of the row" in text
    assert "x for speed-ups" in text and "`n=`, how many runs it is over" in text
    assert "the Inception row's mean steps to it divided by the run's steps" in text
    assert "Inception's 31.00e6 steps / the variant's" in text and "its max minus 72.2%" in text
    rows = {r["model"]: r for r in csv.DictReader(open(out_csv))}
    x5 = rows["bn_x5"]
    assert float(x5["speedup_mean"]) == pytest.approx(np.mean([2.5, 2000 / 1200])) and x5["speedup_n"] == "2"
    assert float(x5["speedup_std"]) == pytest.approx(np.std([2.5, 2000 / 1200], ddof=1))
    assert float(x5["max_vs_inception_points_mean"]) == pytest.approx(100 * np.mean([0.10, 0.08, -0.05]))
    assert x5["max_vs_inception_n"] == "3" and x5["not_reached"] == "seed 2 never"
    assert (
        float(x5["paper_speedup"]) == pytest.approx(31.0 / 2.1)
        and x5["paper_max_vs_inception_points"] == "0.8"
    )
    assert rows["bn_x30"]["not_reached"] == "seed 1 diverged"
    assert rows["inception_sigmoid"]["paper_speedup"] == "never"
    assert rows["inception_sigmoid"]["paper_max_vs_inception_points"] == "never better than 0.1%"
    assert rows["inception_sigmoid"]["paper_max_acc"] == "at most 0.001"
    # the table's cells are these numbers
    assert f"| {float(x5['speedup_mean']):.1f}x ± {float(x5['speedup_std']):.1f}x (n=2" in text


def test_figure2_draws_each_variant_in_its_colour_and_line_style(tmp_path, monkeypatch):
    """Inception-Sigmoid included: grey and dotted, from its entry of variants.py."""
    figures = []
    monkeypatch.setattr(figure2.plt, "close", figures.append)
    runs, _ = hand_made_runs(tmp_path / "runs")
    figure2.render(runs, tmp_path / "results", command="x")
    (ax,) = figures[0].axes
    curves = {line.get_label(): line for line in ax.lines if not line.get_label().startswith("_")}
    assert FIGURE3["inception_sigmoid"].color == "tab:gray" and FIGURE3["inception_sigmoid"].line == ":"
    for model in {r.summary["model"] for r in runs}:
        v = FIGURE3[model]
        assert (curves[v.label].get_color(), curves[v.label].get_linestyle()) == (v.color, v.line), model
