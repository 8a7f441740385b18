"""Inception's base-LR grid on the Figure 3 proxy (results/figure3_lr_grid) and the plateau criterion,
from runs the tests write by hand: the rule picks the best end-of-run mean, its tie-break the smaller LR,
the plateau check can fail, and the spec composes into its four runs; and the shared provenance frame of
both LR results (the grid's and lr_stability's)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from test_figures import _load
from test_lr_stability import lr_run, planned, sweep

from bnrepro.results import figure3_lr_grid, lr_stability
from bnrepro.results.plateau import end_of_run, plateau, plateau_cell


def grid(root, curves: dict[float, list[float]], diverged=()):
    """Inception at each base LR (x1), its evaluations every 100 steps as given; a base LR in `diverged`
    diverges 10 steps after its last evaluation."""
    runs = []
    for lr, acc in curves.items():
        end = 100 * len(acc)
        runs.append(lr_run(root, "inception", 1, lambda s, a=acc: a[s // 100 - 1], base=lr,
                           steps=range(100, end + 1, 100), task="fashion_figure3_lr_grid",
                           name=f"inception-lr{lr}-seed0", status="diverged" if lr in diverged else "finished",
                           diverged_at=end + 10 if lr in diverged else None))  # fmt: skip
    return runs


FLAT = [0.5, 0.6, 0.7, 0.75, 0.78, 0.79, 0.80, 0.80, 0.80, 0.80]


def test_grid_chooses_the_best_end_of_run_mean(tmp_path):
    runs = grid(tmp_path, {0.0015: [a - 0.10 for a in FLAT], 0.005: FLAT, 0.015: [a - 0.05 for a in FLAT],
                           0.05: [0.3, 0.4, 0.9]}, diverged={0.05})  # fmt: skip
    rows = figure3_lr_grid.grid_rows(runs)
    chosen, top, within = figure3_lr_grid.choose(rows)
    assert chosen.lr == top.lr == 0.005 and within == [top]  # 0.05 has the highest max but diverged
    md, js = figure3_lr_grid.render(runs, tmp_path / "results", command="just reproduce figure3_lr_grid")
    decided = json.loads(js.read_text())  # what `just proxy` reads
    assert decided["chosen_base_lr"] == 0.005 and decided["base_lrs"]["0.05"]["diverged"] is True
    assert decided["base_lrs"]["0.005"] == {"end_mean": 0.8, "end_se": 0.0, "end_n": 2, "plateau": True,
                                            "diverged": False}  # fmt: skip
    text = md.read_text()
    assert (
        "| 0.005 **(chosen)** | 80.0% at 700 | 80.0% | 80.0% ± 0.00 pt (2) | yes (change +0.0 pt) | no |"
        in text
    )
    assert "| 0.05 | 90.0% at 300 | n/a (diverged) | " in text and "| yes, at 310 |" in text
    assert "  base: 0.005\n" in text and "NOT ImageNet" in text and "(the best itself)" in text


def test_grid_tie_break_takes_the_smaller_lr_within_one_se(tmp_path):
    """0.015 ends highest (0.80, 0.82: mean 0.81, SE 0.01); 0.005 ends at 0.805, within one SE: chosen.
    0.0015 ends at 0.79, more than one SE below."""
    noisy = FLAT[:8] + [0.80, 0.82]
    runs = grid(tmp_path, {0.0015: FLAT[:8] + [0.79, 0.79], 0.005: FLAT[:8] + [0.80, 0.81], 0.015: noisy})
    chosen, top, within = figure3_lr_grid.choose(figure3_lr_grid.grid_rows(runs))
    assert top.lr == 0.015 and top.end.mean == pytest.approx(0.81) and top.end.se == pytest.approx(0.01)
    assert [r.lr for r in within] == [0.005, 0.015] and chosen.lr == 0.005
    md, js = figure3_lr_grid.render(runs, tmp_path / "results", command="c")
    assert "**Chosen: base LR 0.005** (the smallest of those)." in md.read_text()
    assert json.loads(js.read_text())["chosen_base_lr"] == 0.005


def test_grid_warns_when_the_chosen_run_is_still_rising(tmp_path):
    runs = grid(tmp_path, {0.005: [0.1 * k for k in range(1, 11)]})
    md, _ = figure3_lr_grid.render(runs, tmp_path / "results", command="c")
    assert "| no (change +20.0 pt) |" in md.read_text() and "has not reached its plateau" in md.read_text()


def test_grid_where_every_run_diverged_writes_a_null_choice(tmp_path):
    runs = grid(tmp_path, {0.015: [0.3, 0.4], 0.05: [0.3]}, diverged={0.015, 0.05})
    md, js = figure3_lr_grid.render(runs, tmp_path / "results", command="c")
    assert json.loads(js.read_text())["chosen_base_lr"] is None
    assert "**No base LR can be chosen" in md.read_text()


def test_the_plateau_criterion_can_fail():
    assert plateau(FLAT) == (True, pytest.approx(0.0))
    rising = [0.5, 0.6, 0.7, 0.72, 0.74, 0.76, 0.78, 0.80, 0.82, 0.84]  # last fifth 0.83, the one before 0.79
    reached, change = plateau(rising)
    assert not reached and change == pytest.approx(0.04) and plateau_cell(rising) == "no (change +4.0 pt)"
    assert plateau([0.8, 0.9, 0.6, 0.5]) == (True, pytest.approx(-0.1))  # falling: past its peak
    assert plateau([0.80, 0.8094])[0] and not plateau([0.80, 0.8096])[0]  # +0.9 and +1.0 as printed
    assert plateau_cell([0.5]) == "n/a (fewer than 2 evaluations)"
    end = end_of_run(list(range(11)))  # 11 evaluations: the last fifth is 3 of them
    assert (end.mean, end.n) == (9.0, 3) and end.se == pytest.approx(np.std([8, 9, 10], ddof=1) / np.sqrt(3))


@pytest.mark.parametrize("experiment", ["fashion_figure3_lr_grid", "fashion_figure3_lr_grid_cpu"])
def test_grid_spec_composes_four_base_lrs_of_inception(experiment):
    plans = planned("figure3_lr_grid", experiment)
    assert len({d for _, d, _ in plans}) == 4
    assert [c["optimizer.lr"] for _, _, c in plans] == [0.0015, 0.005, 0.015, 0.05]
    assert {c["model.name"] for _, _, c in plans} == {"inception"}
    assert plans[1][2]["run_name"] == "inception-lr0.005-seed0" and plans[1][2]["task"] == experiment
    logs = [_load("reproduce").job_log(d) for _, d, _ in plans]  # each job's output, beside its folder
    assert len(set(logs)) == 4 and logs[1].name == "inception-lr0.005-seed0.log"


def test_both_files_carry_the_shared_provenance_and_no_absolute_path(tmp_path, monkeypatch):
    """The frame of results/*.md and the figure footer (page.py): bold warnings for a dirty tree, the
    commits, and the run folders relative to the runs folder."""
    from test_result_provenance import ABSOLUTE

    from bnrepro.results import page as page_module

    monkeypatch.setattr(page_module, "git_sha", lambda *a, **k: "a" * 40 + "-dirty")
    root, out = tmp_path / "runs", tmp_path / "results"
    stability = sweep(root / "fashion_lr_stability", {"inception": 5, "bn_baseline": 100})
    lr_grid = grid(root / "fashion_figure3_lr_grid", {0.005: FLAT, 0.015: FLAT})
    for r in stability + lr_grid:
        r.summary["command"] = (
            f"python {tmp_path}/checkout/src/train.py runs_root={root} model={r.summary['model']}"
        )
    command = f"just tables --runs-root {root}"
    files = lr_stability.render(stability, out, command) + figure3_lr_grid.render(lr_grid, out, command)
    for path in files:
        text = path.read_text(errors="replace")
        assert str(tmp_path) not in text, path.name
    for name in ("lr_stability.md", "figure3_lr_grid.md"):
        text = (out / name).read_text()
        assert not ABSOLUTE.findall(text) and "$runs_root/fashion_" in text and "python src/train.py" in text
        assert text.splitlines()[2].startswith("**Warning: rendered from a tree with uncommitted changes")
        assert "runs trained at: abc123" in text


def test_a_change_of_one_point_is_judged_as_it_prints_whatever_its_last_bit():
    """0.57 - 0.56 is 0.009999999999999898 and 0.81 - 0.80 is 0.010000000000000009: both print `+1.0`, and
    a change of one point is not below one point, so neither run has reached its plateau."""
    below, above = 0.57 - 0.56, 0.81 - 0.80
    assert below < 0.01 < above  # the float rounding the rule must not depend on
    assert plateau([0.56, 0.57]) == (False, below) and plateau([0.80, 0.81]) == (False, above)
    assert plateau_cell([0.56, 0.57]) == plateau_cell([0.80, 0.81]) == "no (change +1.0 pt)"
