"""The ImageNet variants of Figures 2 and 3 are one list (src/bnrepro/variants.py): the experiments sweep
it, `just reproduce` plans its runs, the Figure 3 table and the Figure 2 plot show it. A new variant is
its conf/model/<name>.yaml plus one entry there."""

from __future__ import annotations

import csv
import re
import shutil
import sys

import pytest
from hydra import compose, initialize_config_dir
from test_figures import hand_made_runs, write_run

from bnrepro import variants
from bnrepro.results import figure2, figure3
from conftest import ROOT

EXPERIMENTS = ["imagenet_figure3", "imagenette_figure3", "fashion_figure3"]


def swept_models(conf, experiment: str) -> list[str]:
    with initialize_config_dir(str(conf), version_base="1.3"):
        cfg = compose("train", overrides=[f"experiment={experiment}"], return_hydra_config=True)
    return cfg.hydra.sweeper.params.model.split(",")


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_each_figure3_experiment_sweeps_the_table(experiment):
    assert swept_models(ROOT / "conf", experiment) == list(variants.FIGURE3)


def test_no_other_file_lists_the_variants():
    """Configs, specs and results code name at most two of the variants (a model file names its parent,
    Figure 4 names BN-x30); only variants.py lists them."""
    names = re.compile(r"\b(" + "|".join(variants.FIGURE3) + r")\b")
    files = [
        p for d in ("conf", "reproduce", "src") for p in (ROOT / d).rglob("*") if p.suffix in (".py", ".yaml")
    ]
    listing = [p.relative_to(ROOT).as_posix() for p in files if len(set(names.findall(p.read_text()))) >= 3]
    assert listing == ["src/bnrepro/variants.py"]


def test_a_new_variant_is_its_model_file_and_one_entry_of_the_table(tmp_path, monkeypatch):
    conf = tmp_path / "conf"
    shutil.copytree(ROOT / "conf", conf)
    (conf / "model" / "bn_x5_slow_decay.yaml").write_text(
        "# @package _global_\ndefaults:\n  - bn_x5\n  - _self_\n\nmodel:\n  name: bn_x5_slow_decay\n\n"
        "lr_schedule:\n  speedup: 1\n"
    )
    # The one edit: an entry of the table (no colour, not in the paper).
    monkeypatch.setitem(variants.FIGURE3, "bn_x5_slow_decay", variants.Variant("BN-x5-SlowDecay"))

    # Every Figure 3 experiment sweeps it ...
    for experiment in EXPERIMENTS:
        assert swept_models(conf, experiment)[-1] == "bn_x5_slow_decay"

    # ... so `just reproduce figure3` plans its run, in the folder `python src/train.py` would use ...
    sys.path.insert(0, str(ROOT / "reproduce"))
    import reproduce as rp

    monkeypatch.setattr(rp, "CONF", conf)
    spec, overrides = rp.apply_arguments(
        rp.load_spec("figure3"), ["data=fashion_mnist", f"runs_root={tmp_path}"]
    )
    points = rp.sweep_points(spec)
    assert points[-1] == ["model=bn_x5_slow_decay"] and len(points) == len(variants.FIGURE3)
    job, run_dir, config = rp.planned_run(spec, points[-1], overrides)
    assert run_dir == tmp_path / "fashion_figure3" / "bn_x5_slow_decay-fashion_mnist-seed0"
    assert config["model.name"] == "bn_x5_slow_decay" and config["lr_schedule.speedup"] == 1

    # ... and the table has its row (the paper's columns n/a), the plot its curve.
    runs, _ = hand_made_runs(tmp_path / "runs")
    runs.append(write_run(tmp_path / "runs" / "slow", "bn_x5_slow_decay", lambda s: min(0.82, s / 1000))[0])
    md, out_csv = figure3.render(runs, tmp_path / "results", command="test")
    assert (
        # steps to 80% (Inception's max) and to 76% (its plateau mean): both first at step 800 (paper 1,600)
        "| BN-x5-SlowDecay | 1,600 | 1.2x (n=1) | n/a | 1,600 | 1.2x (n=1) | 82.0% at 1,800 | +2.0 (n=1) | n/a | 0 of 1 (+7.0 pt) | "
        "82.0% | n/a (not recorded) | 1 | n/a | n/a |" in md.read_text()
    )
    rows = list(csv.DictReader(open(out_csv)))
    assert [r["model"] for r in rows][-1] == "bn_x5_slow_decay" and rows[-1]["paper_max_acc"] == "n/a"
    _, svg = figure2.render(runs, tmp_path / "results", command="test")
    assert "BN-x5-SlowDecay" in svg.read_text()
