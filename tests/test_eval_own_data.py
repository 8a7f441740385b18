"""src/eval.py on a run's own data set by default (read from its config.yaml): synthetic and
Fashion-MNIST checkpoints, single view; 144 crops only for image files; `data=` still picks another."""

from __future__ import annotations

import json

import pytest
from test_eval import tiny_run  # noqa: F401  (the fixture: a finished synthetic run, 7 classes)

from conftest import compose_train, fast_overrides, train_main

CPU = ["trainer.accelerator=cpu", "trainer.enable_progress_bar=false"]


@pytest.fixture(scope="module")
def fashion_run(tmp_path_factory):
    """A finished mnist_mlp_bn run on a tiny Fashion-MNIST (100 test images), and its data.root."""
    from bnrepro.run import train
    from conftest import make_idx_set

    tmp = tmp_path_factory.mktemp("fashion")
    make_idx_set(tmp / "data" / "FashionMNIST" / "raw", seed=1)
    make_idx_set(tmp / "data" / "MNIST" / "raw", seed=2)
    cfg = compose_train("model=mnist_mlp_bn", "data=fashion_mnist", "data.num_train_examples=240",
                        *fast_overrides(tmp / "data", tmp / "runs"), "run_name=f")  # fmt: skip
    run_dir = tmp / "runs" / "mnist" / "f"
    assert train(cfg, run_dir)["status"] == "finished"
    return run_dir, tmp / "data"


def test_a_synthetic_run_is_evaluated_on_its_own_validation_set(tiny_run, tmp_path):  # noqa: F811
    ckpt = tiny_run / "checkpoints" / "population.ckpt"
    assert train_main(f"ckpt={ckpt}", f"runs_root={tmp_path}", *CPU, script="eval.py") == 0
    record = json.loads(
        (tmp_path / "eval" / "synthetic" / "tiny-r-population-1crop" / "eval.json").read_text()
    )
    summary = json.loads((tiny_run / "summary.json").read_text())
    assert (record["data"], record["num_images"], record["data_root"]) == ("synthetic", 8, None)
    assert record["top1_acc"] == pytest.approx(summary["population_acc"])  # Alg. 2's net, the run's own set


def test_a_fashion_mnist_run_is_evaluated_on_fashion_mnist_and_an_override_picks_mnist(fashion_run, tmp_path):
    run_dir, root = fashion_run
    ckpt = run_dir / "checkpoints" / "population.ckpt"
    assert train_main(f"ckpt={ckpt}", f"runs_root={tmp_path}", *CPU, script="eval.py") == 0
    own = json.loads(
        (tmp_path / "eval" / "fashion_mnist" / "mnist-f-population-1crop" / "eval.json").read_text()
    )
    summary = json.loads((run_dir / "summary.json").read_text())
    assert (own["data"], own["num_images"], own["data_root"]) == ("fashion_mnist", 100, str(root))
    assert own["top1_acc"] == pytest.approx(summary["population_acc"])
    args = [f"ckpt={ckpt}", "data=mnist", f"data.root={root}", "data.download=false"]
    assert train_main(*args, f"runs_root={tmp_path}", *CPU, script="eval.py") == 0
    other = json.loads((tmp_path / "eval" / "mnist" / "mnist-f-population-1crop" / "eval.json").read_text())
    assert (other["data"], other["num_images"]) == ("mnist", 100)


def test_144_crops_of_a_tensor_data_set_are_refused_with_exit_2(fashion_run, tmp_path, capsys):
    run_dir, _ = fashion_run
    status = train_main(f"ckpt={run_dir / 'checkpoints' / 'best.ckpt'}", "eval.crops=144", f"runs_root={tmp_path}",
                        *CPU, script="eval.py")  # fmt: skip
    err = capsys.readouterr().err
    assert status == 2 and "eval.crops=144" in err and "eval.crops=1" in err and "Traceback" not in err
    assert not list(tmp_path.rglob("eval.json"))
