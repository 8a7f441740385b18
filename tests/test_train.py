"""Every model and experiment config runs a short fit end to end and leaves a complete run folder."""

from __future__ import annotations

import json

import numpy as np
import pytest
import yaml

from bnrepro.results.runs import load_run
from bnrepro.run import RunExistsError, train
from conftest import ROOT, cli, compose_train, fast_overrides, train_main

MODELS = sorted(p.stem for p in (ROOT / "conf" / "model").glob("*.yaml"))
MNIST_MODELS = [m for m in MODELS if m.startswith("mnist")]
IMAGENET_VARIANTS = [m for m in MODELS if m not in MNIST_MODELS]


def synthetic_overrides(runs, steps: int = 4, every: int = 2) -> list[str]:
    """A few CPU steps of an ImageNet variant on random 32x32 images (BN-Inception at reduced resolution)."""
    return [
        "data=synthetic", "data.image_size=32", "data.num_classes=10", "data.batch_size=4",
        "data.num_train_examples=32", "data.num_val_examples=16", "data.eval_batch_size=16",
        f"runs_root={runs}", f"trainer.max_steps={steps}", f"loop.eval_every_steps={every}",
        "trainer.accelerator=cpu", "trainer.enable_progress_bar=false", "logger=csv",
        "callbacks.population_stats.num_batches=2",
    ]  # fmt: skip


@pytest.mark.parametrize("model", MNIST_MODELS)
def test_model_config_trains_and_writes_its_run_folder(model, mnist_root, tmp_path):
    cfg = compose_train(f"model={model}", *fast_overrides(mnist_root, tmp_path / "runs"), "run_name=r")
    run_dir = tmp_path / "runs" / cfg.task / "r"
    summary = train(cfg, run_dir)
    assert summary["steps"] == 20 and summary["evaluations"] == 2
    on_disk = json.loads((run_dir / "summary.json").read_text())
    for key in (
        "final_acc",
        "best_acc",
        "steps",
        "data",
        "world_size",
        "global_batch",
        "versions",
        "git_sha",
    ):
        assert key in on_disk
    assert on_disk["global_batch"] == 60 and on_disk["world_size"] == 1 and on_disk["data"] == "mnist"
    assert yaml.safe_load((run_dir / "config.yaml").read_text())["model"]["name"] == model  # resolved config
    run = load_run(run_dir)
    steps, acc = run.curve("val/acc")
    assert list(steps) == [10, 20] and acc[-1] == pytest.approx(on_disk["final_acc"])
    for key in ("train/loss", "act/p15", "act/p50", "act/p85"):
        assert len(run.curve(key)[0]) == 2
    assert np.load(run_dir / "unit_percentiles.npz")["values"].shape == (2, 3, 100)
    assert (run_dir / "checkpoints" / "last.ckpt").is_file()


def test_a_finished_run_folder_is_not_overwritten(mnist_root, tmp_path):
    cfg = compose_train("model=mnist_mlp", *fast_overrides(mnist_root, tmp_path, steps=10), "run_name=r")
    run_dir = tmp_path / "r"
    train(cfg, run_dir)
    old = json.loads((run_dir / "summary.json").read_text())
    old["marker"] = "the first run"  # tells the files of the first run from those of a second
    (run_dir / "summary.json").write_text(json.dumps(old))
    (run_dir / "checkpoints" / "old-extra.ckpt").write_bytes(b"x")
    before = (run_dir / "summary.json").read_text()
    with pytest.raises(RunExistsError, match="overwrite=true"):
        train(cfg, run_dir)
    assert (run_dir / "summary.json").read_text() == before
    cfg.overwrite = True  # asked for: the old run's summary and checkpoints go, a new run takes the folder
    train(cfg, run_dir)
    assert "marker" not in json.loads((run_dir / "summary.json").read_text())
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == ["best.ckpt", "last.ckpt"]


def test_steps_per_batch_does_not_change_what_a_step_is(mnist_root, tmp_path):
    """10 SGD steps per Lightning batch (lit/multistep.py) or 1 (Lightning's automatic optimization): the
    same updates, so the same weights, BN statistics and curves, to the bit."""
    import torch

    finals, curves = [], []
    for k in (1, 10):
        cfg = compose_train("model=mnist_mlp_bn", *fast_overrides(mnist_root, tmp_path), f"loop.steps_per_batch={k}",
                            f"run_name=k{k}", "trainer.deterministic=true")  # fmt: skip
        summary = train(cfg, tmp_path / f"k{k}")
        assert summary["steps_per_batch"] == k and summary["steps"] == 20
        ckpt = torch.load(tmp_path / f"k{k}" / "checkpoints" / "last.ckpt", weights_only=False)
        assert ckpt["global_step"] == 20 and ckpt["lr_schedulers"][0]["last_epoch"] == 20
        finals.append(ckpt["state_dict"])
        run = load_run(tmp_path / f"k{k}")
        curves.append([list(run.curve(key)[1]) for key in ("val/acc", "val/loss", "act/p50")])
    for key in finals[0]:
        assert torch.equal(finals[0][key], finals[1][key]), key
    assert curves[0] == curves[1]


def test_experiment_figure1_trains_both_nets_as_a_multirun_each_its_own_wandb_run(
    mnist_root, tmp_path, monkeypatch
):
    monkeypatch.setenv("WANDB_MODE", "offline")
    overrides = [o for o in fast_overrides(mnist_root, tmp_path / "runs") if o != "logger=csv"]
    assert train_main("experiment=mnist_figure1", *overrides, "logger=wandb") == 0  # Hydra's multirun
    folders = sorted(p.parent for p in (tmp_path / "runs" / "mnist_figure1").glob("*/summary.json"))
    assert [f.name for f in folders] == ["mnist_mlp-mnist-seed0", "mnist_mlp_bn-mnist-seed0"]
    wandb_runs = [list((f / "wandb").glob("offline-run-*")) for f in folders]
    assert all(len(w) == 1 for w in wandb_runs), wandb_runs  # one process, two jobs: two W&B runs
    assert wandb_runs[0][0].name.split("-")[-1] != wandb_runs[1][0].name.split("-")[-1]


def test_bad_override_fails_at_start_with_the_key_named(tmp_path, capsys):
    """Through src/train.py's main in this process (test_refusals.py has the other refusals)."""
    assert train_main("activation.name=tanhh", f"runs_root={tmp_path}") == 2  # refused at the network
    err = capsys.readouterr().err
    assert "error: model.net=" in err and "'act_layer': 'tanhh'" in err, err[-2000:]
    assert not list(tmp_path.glob("**/summary.json"))


def test_missing_data_fails_before_training_with_what_to_do(tmp_path, capsys):
    status = train_main("data=fashion_mnist", f"data.root={tmp_path / 'none'}", "data.download=false",
                        "data.system_dirs=[]", f"runs_root={tmp_path}")  # fmt: skip
    err = capsys.readouterr().err
    assert status == 2, err[-2000:]
    assert "fashion_mnist: no data found" in err and str(tmp_path / "none") in err


def test_wandb_runs_offline_without_an_api_key_and_the_csv_is_still_written(mnist_root, tmp_path):
    """The command-line smoke test: `python src/train.py` as a user runs it, in a fresh process whose
    environment holds no W&B key, mode or netrc (W&B reads them once per process). Exit status 0 and a
    complete run folder; every other test calls the same main or train() in this process."""
    env = {
        "WANDB_API_KEY": None,
        "WANDB_MODE": None,
        "NETRC": str(tmp_path / "no-netrc"),
        "HOME": str(tmp_path),
    }
    overrides = [o for o in fast_overrides(mnist_root, tmp_path, steps=10) if o != "logger=csv"]
    r = cli("model=mnist_mlp", *overrides, "logger=wandb", "run_name=w", env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    run_dir = tmp_path / "mnist" / "w"
    assert list((run_dir / "wandb").glob("offline-run-*")), "W&B should have chosen offline mode"
    assert load_run(run_dir).finished and (run_dir / "metrics.csv").is_file()


@pytest.mark.slow  # the same single-run DDP path runs inside test_scaling's multirun + DDP test
def test_two_process_cpu_ddp_leaves_one_run_folder(mnist_root, tmp_path):
    r = cli("model=mnist_mlp_bn", *fast_overrides(mnist_root, tmp_path / "runs"), "trainer.devices=2",
            "trainer.strategy=ddp", "run_name=ddp")  # fmt: skip
    assert r.returncode == 0, r.stderr[-3000:]
    summaries = list((tmp_path / "runs").glob("**/summary.json"))
    assert [p.parent.name for p in summaries] == ["ddp"]
    assert_two_process_ddp_run(summaries[0].parent, mnist_root, num_val=100)


def assert_two_process_ddp_run(run_dir, mnist_root, num_val: int) -> None:
    """What a 2-process CPU DDP run of mnist_mlp_bn (fast_overrides: 20 steps of 60 per rank) leaves."""
    s = json.loads((run_dir / "summary.json").read_text())
    assert (
        s["status"] == "finished" and s["world_size"] == 2 and s["global_batch"] == 120 and s["steps"] == 20
    )
    base_lr = compose_train("model=mnist_mlp_bn").optimizer.lr
    assert s["lr"] == pytest.approx(2 * base_lr)  # linear scaling: global batch 120 / reference 60
    assert s["paper_equivalent_steps"] == 40 and s["diverged"] is False  # 20 steps x 120 / 60
    # Counted from the batches each rank saw, summed over ranks: 20 global batches of 2 x 60 trained,
    # every test image evaluated exactly once (the ranks' shards).
    assert s["examples_trained"] == 20 * 120 and s["val_examples"] == num_val
    assert s["strategy"] == "DDPStrategy" and s["sync_batchnorm"] is False and s["per_device_batch"] == 60
    assert s["speed"] == {"precision": "32-true", "cudnn_benchmark": False, "channels_last": False,
                          "fused_optimizer": False, "compile": False, "compile_mode": "default",
                          "cuda_graphs": False, "num_threads": 1}  # fmt: skip

    # The percentiles were gathered from both ranks' shards of the test set: they equal the quantiles
    # of the final weights over the whole (evaluated) set. Figure 1 evaluates the BN net with Alg. 2's
    # statistics (eval_bn: population), from the same batches as population.ckpt's.
    import timm
    import torch

    from bnrepro.data.mnist import load_tensors

    net = timm.create_model("mnist_mlp", norm="batchnorm").eval()
    state = torch.load(run_dir / "checkpoints" / "population.ckpt", weights_only=False)["state_dict"]
    net.load_state_dict({k.removeprefix("net."): v for k, v in state.items() if k.startswith("net.")})
    x, _ = load_tensors("mnist", mnist_root, train=False, binarize_threshold=0.5)
    with torch.no_grad():
        pre = net.blocks[2].norm(net.blocks[2].fc(net.blocks[1](net.blocks[0](x[:num_val].flatten(1)))))
    expected = torch.quantile(pre, torch.tensor([0.15, 0.5, 0.85]), dim=0)
    saved = np.load(run_dir / "unit_percentiles.npz")
    torch.testing.assert_close(torch.from_numpy(saved["values"][-1]), expected, rtol=1e-4, atol=1e-5)


def test_a_tracked_unit_outside_the_layer_is_refused_at_start(mnist_root, tmp_path):
    from bnrepro.config import ConfigError

    cfg = compose_train(
        "model=mnist_mlp", *fast_overrides(mnist_root, tmp_path), "callbacks.percentiles.unit=100"
    )
    with pytest.raises(
        ConfigError, match=r"callbacks\.percentiles\.unit=100 is out of range: blocks\.2\.act has 100"
    ):
        train(cfg, tmp_path / "r")


def test_a_tracked_module_that_does_not_exist_is_refused_at_start(mnist_root, tmp_path):
    from bnrepro.config import ConfigError

    cfg = compose_train(
        "model=mnist_mlp", *fast_overrides(mnist_root, tmp_path), "callbacks.percentiles.module=blocks.7.act"
    )
    with pytest.raises(ConfigError, match=r"callbacks\.percentiles\.module='blocks\.7\.act'"):
        train(cfg, tmp_path / "r")
    assert not (tmp_path / "r").exists()


def test_a_run_that_crashes_leaves_a_failed_summary_with_the_error(mnist_root, tmp_path, monkeypatch):
    from bnrepro.lit.multistep import MultiStepClassifier

    def boom(self, batch, batch_idx):
        raise RuntimeError("injected failure")

    monkeypatch.setattr(MultiStepClassifier, "training_step", boom)  # the MNIST nets' module
    cfg = compose_train("model=mnist_mlp", *fast_overrides(mnist_root, tmp_path), "run_name=r")
    with pytest.raises(RuntimeError, match="injected failure"):
        train(cfg, tmp_path / "r")
    s = json.loads((tmp_path / "r" / "summary.json").read_text())
    assert s["status"] == "failed" and s["error"] == "RuntimeError: injected failure" and s["steps"] == 0


@pytest.mark.parametrize("model", IMAGENET_VARIANTS)
def test_imagenet_variant_trains_a_few_steps_on_synthetic_data(model, tmp_path):
    import torch

    cfg = compose_train(f"model={model}", *synthetic_overrides(tmp_path), "run_name=r")
    s = train(cfg, tmp_path / "r")
    assert s["status"] == "finished" and s["steps"] == 4 and s["evaluations"] == 2
    assert s["global_batch"] == 4 and s["lr"] == pytest.approx(cfg.optimizer.lr * 4 / 32)  # linear scaling
    assert 0.0 <= s["final_acc_top5"] <= 1.0
    has_bn = cfg.model.net.norm == "batchnorm"
    # Alg. 2 is evaluated for the BN nets only, and its network is saved beside the moving-average one.
    assert ("population_acc" in s) == has_bn == (tmp_path / "r" / "checkpoints" / "population.ckpt").is_file()
    state = torch.load(tmp_path / "r" / "checkpoints" / "last.ckpt", weights_only=False)["state_dict"]
    assert any(k.endswith("running_var") for k in state) == has_bn
    assert all(torch.isfinite(v).all() for v in state.values() if v.is_floating_point())
    steps, paper = load_run(tmp_path / "r").curve("paper_step")
    assert list(steps) == [2, 4] and list(paper) == [0.25, 0.5]  # examples seen / 32: global batch 4


def test_population_statistics_use_the_batches_asked_for_across_evaluation_periods(tmp_path):
    cfg = compose_train("model=bn_x5", *synthetic_overrides(tmp_path), "run_name=r",
                        "callbacks.population_stats.num_batches=7")  # fmt: skip
    s = train(cfg, tmp_path / "r")  # an evaluation period is 2 batches: 7 needs 4 of them
    assert s["population_batches"] == 7


def test_weights_that_blow_up_on_a_finite_loss_never_reach_a_checkpoint(tmp_path):
    """Step 1's loss is finite but its update (LR 1e38; inf itself is refused at start-up) makes the
    weights inf; step 1 is evaluated next."""
    import torch

    from bnrepro.callbacks.divergence import TrainingDiverged

    cfg = compose_train("model=bn_x30", *synthetic_overrides(tmp_path, steps=4, every=1), "run_name=r",
                        "optimizer.lr=1e38")  # fmt: skip
    with pytest.raises(TrainingDiverged, match="weights became non-finite by step 1"):
        train(cfg, tmp_path / "r")
    assert json.loads((tmp_path / "r" / "summary.json").read_text())["diverged_at_step"] == 1
    for ckpt in (tmp_path / "r" / "checkpoints").glob("*.ckpt"):
        state = torch.load(ckpt, weights_only=False)["state_dict"]
        assert all(torch.isfinite(v).all() for v in state.values() if v.is_floating_point()), ckpt


def test_a_nan_at_step_k_stops_the_run_as_diverged_and_keeps_the_last_good_checkpoint(tmp_path):
    import torch

    from bnrepro.callbacks.divergence import TrainingDiverged

    cfg = compose_train("model=bn_x30", *synthetic_overrides(tmp_path, steps=8), "run_name=r",
                        "testing.inject_nan_at_step=5")  # fmt: skip
    with pytest.raises(TrainingDiverged, match="step 5"):
        train(cfg, tmp_path / "r")
    s = json.loads((tmp_path / "r" / "summary.json").read_text())
    assert (s["status"], s["diverged"], s["diverged_at_step"], s["steps"]) == ("diverged", True, 5, 5)
    ckpt = torch.load(tmp_path / "r" / "checkpoints" / "last.ckpt", weights_only=False)
    assert ckpt["global_step"] == 4  # the evaluation before the NaN
    assert all(torch.isfinite(v).all() for v in ckpt["state_dict"].values() if v.is_floating_point())


def test_a_huge_learning_rate_diverges_inside_a_chunk_of_steps(mnist_root, tmp_path):
    """MNIST runs 10 steps per Lightning batch here: the first non-finite step inside the chunk is named.
    (optimizer.lr=inf itself is refused at start-up.)"""
    from bnrepro.callbacks.divergence import TrainingDiverged

    cfg = compose_train(
        "model=mnist_mlp", *fast_overrides(mnist_root, tmp_path), "run_name=r", "optimizer.lr=1e38"
    )
    with pytest.raises(TrainingDiverged) as e:
        train(cfg, tmp_path / "r")
    assert e.value.step == 2  # step 1's loss is finite; its infinite update makes step 2's NaN
    s = json.loads((tmp_path / "r" / "summary.json").read_text())
    assert s["diverged"] is True and s["diverged_at_step"] == 2


def test_divergence_exits_with_its_own_status_and_a_sweep_goes_on(tmp_path, capsys):
    # One thread, as the command ran under cli()'s OMP_NUM_THREADS=1: two on a busy 2-core machine wait
    # on each other at every convolution.
    one = [*synthetic_overrides(tmp_path), "speed.num_threads=1"]
    status = train_main("model=bn_x30", *one, "run_name=single", "testing.inject_nan_at_step=3")
    err = capsys.readouterr().err
    assert status == 3, err[-3000:]
    assert "diverged: single" in err and "step 3" in err
    status = train_main("-m", "model=bn_x30", *one, "run_name=inj${testing.inject_nan_at_step}",
                        "testing.inject_nan_at_step=3,null")  # fmt: skip
    assert status == 0, capsys.readouterr().err[-3000:]
    status = {
        p.parent.name: json.loads(p.read_text())["status"]
        for p in tmp_path.glob("imagenet/inj*/summary.json")
    }
    assert status == {"inj3": "diverged", "injNone": "finished"}
