"""A newcomer's first commands: `just --list` readable, a sweep's multirun.yaml out of the run folders,
a GPU run asked for on a machine without one refused saying so."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from conftest import ROOT, fast_overrides, train_main


@pytest.mark.skipif(shutil.which("just") is None, reason="`just` is not installed")
def test_just_list_shows_one_doc_line_per_recipe():
    out = subprocess.run(["just", "--list"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    docs = {line.split()[0]: line.split("#", 1)[1].strip() for line in out.splitlines()[1:] if "#" in line}
    assert docs["bench"].startswith("benchmarks")  # not the last line of a longer comment
    assert len(docs) == len(out.splitlines()) - 1  # every recipe has its one-line doc


def test_a_sweeps_multirun_yaml_is_not_among_the_run_folders(mnist_root, tmp_path, capsys):
    runs = tmp_path / "runs"
    status = train_main("-m", "model=mnist_mlp_bn", "seed=0,1", *fast_overrides(mnist_root, runs, steps=2, every=2),
                        "callbacks.population_stats.num_batches=1")  # fmt: skip
    assert status == 0, capsys.readouterr().err[-3000:]
    task = runs / "mnist"
    assert sorted(p.name for p in task.iterdir()) == [
        ".hydra",
        "mnist_mlp_bn-mnist-seed0",
        "mnist_mlp_bn-mnist-seed1",
    ]
    (record,) = (task / ".hydra").glob("multirun-*.yaml")
    assert "seed=0,1" in record.read_text()


def test_several_devices_without_a_gpu_say_that_no_gpu_was_found(mnist_root, tmp_path, capsys):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    overrides = [o for o in fast_overrides(mnist_root, tmp_path / "runs") if o != "trainer.accelerator=cpu"]
    assert train_main("model=mnist_mlp_bn", *overrides, "trainer.devices=8") == 2
    err = capsys.readouterr().err
    assert "trainer.devices=8: no GPU was found here" in err and "trainer.accelerator=cpu" in err
    assert not (tmp_path / "runs").exists()


def test_the_readmes_smoke_test_composes_and_is_small():
    """The README's smoke test stays one on a CPU: small images, few steps (it ran 22-52 s a step at 224 px)."""
    import shlex

    from conftest import compose_train

    (line,) = [
        x for x in (ROOT / "README.md").read_text().splitlines() if x.endswith("(< 1 min on 2 CPU cores)")
    ]
    args = shlex.split(line.split("#")[0])[2:]  # after `python src/train.py`
    cfg = compose_train(*args)
    assert cfg.data.name == "synthetic" and cfg.data.image_size <= 32 and cfg.trainer.max_steps <= 20
