"""Scale and speed: multirun + DDP, the SLURM launcher config, sync BN, the fast paths' resolution,
and CUDA-graph steps (their bookkeeping, emulated on the CPU)."""

from __future__ import annotations

import json
import sys
from functools import partial

import lightning as L
import pytest
import timm
import torch
import yaml
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from omegaconf.errors import InterpolationResolutionError
from test_train import assert_two_process_ddp_run

import bnrepro.models  # noqa: F401
from bnrepro.callbacks.divergence import TrainingDiverged
from bnrepro.config import ConfigError
from bnrepro.data.device_loader import StepChunkSampler, device_loader
from bnrepro.lit.multistep import MultiStepClassifier
from bnrepro.lit.schedules import Constant, ExponentialDecay
from bnrepro.run import train
from bnrepro.speed import resolve_speed, trainer_args
from conftest import CONF, ROOT, cli, compose_train, fast_overrides


def compose_with_hydra(*overrides: str):
    with initialize_config_dir(CONF, version_base="1.3"):
        return compose("train", overrides=list(overrides), return_hydra_config=True)


def test_slurm_launcher_takes_nodes_and_tasks_from_the_trainer():
    cfg = compose_with_hydra("hydra/launcher=slurm", "model=bn_x30", "trainer=ddp", "trainer.devices=8",
                             "trainer.num_nodes=2", "hydra.launcher.partition=gpu")  # fmt: skip
    launcher = instantiate(cfg.hydra.launcher)  # what `-m hydra/launcher=slurm` builds (no submission)
    assert type(launcher).__name__ == "SlurmLauncher"
    params = launcher.params
    assert (params["nodes"], params["tasks_per_node"], params["gpus_per_node"]) == (2, 8, 8)
    assert params["partition"] == "gpu" and params["max_num_timeout"] > 0
    assert params["cpus_per_task"] == cfg.data.num_workers


def test_slurm_launcher_refuses_a_device_count_it_cannot_turn_into_tasks():
    cfg = compose_with_hydra("hydra/launcher=slurm", "trainer=ddp")  # trainer.devices=auto
    with pytest.raises(InterpolationResolutionError, match=r"needs trainer.devices=<GPUs per node>"):
        instantiate(cfg.hydra.launcher)


def test_a_two_job_multirun_with_two_process_ddp_leaves_exactly_two_run_folders(mnist_root, tmp_path):
    """Lightning re-runs the command line for rank 1; in a multirun that was the whole sweep (4 folders).
    experiment=mnist_figure1 is a 2-job multirun set by its config file (hydra.mode: MULTIRUN), as `-m`."""
    runs = tmp_path / "runs"
    r = cli("-m", "experiment=mnist_figure1", *fast_overrides(mnist_root, runs), "trainer.devices=2",
            "trainer.strategy=ddp", "data.num_val_examples=99", timeout=400)  # fmt: skip
    assert r.returncode == 0, r.stderr[-3000:]
    task = runs / "mnist_figure1"
    folders = sorted(p.name for p in task.iterdir() if p.is_dir() and p.name != ".hydra")
    assert folders == ["mnist_mlp-mnist-seed0", "mnist_mlp_bn-mnist-seed0"]
    assert (
        len(list((task / ".hydra").glob("multirun-*.yaml"))) == 1
    )  # the sweep's record, not beside the runs
    assert [p.name for p in runs.iterdir()] == ["mnist_figure1"]  # no second sweep folder
    # Each job is a complete 2-process run: global batches, LR scaling, every test image once (50 + 49).
    assert_two_process_ddp_run(task / "mnist_mlp_bn-mnist-seed0", mnist_root, num_val=99)
    for name in folders:
        s = json.loads((task / name / "summary.json").read_text())
        assert s["status"] == "finished" and s["world_size"] == 2 and s["steps"] == 20
        assert s["examples_trained"] == 20 * 120 and s["val_examples"] == 99
        assert len(list((task / name / ".hydra").iterdir())) == 1  # one launch record per job
        stored = yaml.safe_load((task / name / "config.yaml").read_text())
        assert (
            stored["trainer"]["precision"],
            stored["speed"]["channels_last"],
            stored["speed"]["cuda_graphs"],
        ) == (
            "32-true",
            False,
            False,
        )


def test_sync_batchnorm_under_cpu_ddp_is_refused_before_any_process_starts(mnist_root, tmp_path):
    cfg = compose_train("model=mnist_mlp_bn", *fast_overrides(mnist_root, tmp_path), "trainer.devices=2",
                        "trainer.strategy=ddp", "trainer.sync_batchnorm=true")  # fmt: skip
    with pytest.raises(ConfigError, match=r"trainer.sync_batchnorm=true needs CUDA devices"):
        train(cfg, tmp_path / "r")
    assert not (tmp_path / "r").exists()


def placed(device: str, world_size: int = 1, precision: str = "32-true") -> dict:
    """resolve_speed's arguments for a run placed on `world_size` devices of type `device` (one node)."""
    return dict(cuda=device == "cuda", world_size=world_size, num_nodes=1, precision=precision)


@pytest.fixture
def cuda_present(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)


def test_auto_fast_paths_on_a_gpu_are_bf16_channels_last_fused_compiled_for_bn_inception(cuda_present):
    cfg = compose_train("model=bn_x30")
    assert trainer_args(cfg, convolutional=True) == {"precision": "bf16-mixed", "benchmark": True}
    s = resolve_speed(cfg, **placed("cuda", precision="bf16-mixed"), data_on_device=False)
    assert (s.channels_last, s.fused_optimizer, s.compile, s.cuda_graphs) == (True, True, True, False)


def test_auto_fast_paths_on_a_gpu_are_float32_and_cuda_graphs_for_the_mnist_mlp(cuda_present):
    cfg = compose_train("model=mnist_mlp_bn")
    assert trainer_args(cfg, convolutional=False)["precision"] == "32-true"
    s = resolve_speed(cfg, **placed("cuda"), data_on_device=True)
    assert (s.cuda_graphs, s.compile, s.fused_optimizer) == (True, False, True)
    # Under DDP the graphs are off (the all-reduce is inside the step); compile takes over.
    s = resolve_speed(cfg, **placed("cuda", world_size=2), data_on_device=True)
    assert (s.cuda_graphs, s.compile) == (False, True)


def test_the_mnist_mlp_trains_on_one_thread_unless_asked_and_the_count_is_recorded(
    mnist_root, tmp_path, monkeypatch
):
    """speed.num_threads auto: 1 for the MLP (a second thread only slows it down), torch's default for a
    convolutional net; the run's count in summary.json and config.yaml; the caller's count restored."""
    monkeypatch.setattr(torch, "get_num_threads", lambda: 2)  # the caller's count, as on 2 cores
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    assert (
        resolve_speed(compose_train("model=bn_x30"), **placed("cpu"), data_on_device=False).num_threads == 2
    )
    # Two DDP ranks on the node share its cores, as Lightning would share them.
    assert (
        resolve_speed(
            compose_train("model=bn_x30"), **placed("cpu", world_size=2), data_on_device=False
        ).num_threads
        == 1
    )
    monkeypatch.setenv("OMP_NUM_THREADS", "2")  # a budget the caller set (reproduce: a job's share): kept
    assert (
        resolve_speed(
            compose_train("model=bn_x30"), **placed("cpu", world_size=2), data_on_device=False
        ).num_threads
        == 2
    )
    asked = compose_train("model=mnist_mlp", "speed.num_threads=3")
    assert resolve_speed(asked, **placed("cpu"), data_on_device=False, convolutional=False).num_threads == 3
    monkeypatch.undo()
    before = torch.get_num_threads()
    s = train(compose_train("model=mnist_mlp", *fast_overrides(mnist_root, tmp_path), "run_name=r", "speed.num_threads=2"),
              tmp_path / "r")  # fmt: skip
    assert s["speed"]["num_threads"] == 2 and s["hardware"].endswith("torch threads 2")
    assert torch.get_num_threads() == before
    s = train(
        compose_train("model=mnist_mlp", *fast_overrides(mnist_root, tmp_path), "run_name=a"), tmp_path / "a"
    )
    assert s["speed"]["num_threads"] == 1 and s["hardware"].endswith("torch threads 1")
    assert yaml.safe_load((tmp_path / "a" / "config.yaml").read_text())["speed"]["num_threads"] == 1


def test_everything_is_off_on_the_cpu_and_cuda_graphs_cannot_be_forced_there():
    cfg = compose_train("model=bn_x30")
    assert trainer_args(cfg, convolutional=True) == {"precision": "32-true", "benchmark": False}
    s = resolve_speed(cfg, **placed("cpu"), data_on_device=False)
    assert not (s.channels_last or s.fused_optimizer or s.compile or s.cuda_graphs or s.cudnn_benchmark)
    with pytest.raises(ConfigError, match=r"speed.cuda_graphs=true needs a CUDA device.*data held on"):
        resolve_speed(
            compose_train("model=bn_x30", "speed.cuda_graphs=true"), **placed("cpu"), data_on_device=False
        )


# At batch 30: the LR halves every 20 steps.
LR_HALVES_AT_20 = ExponentialDecay(gamma=0.5, decay_every_epochs=1.0, speedup=1.0, epoch_examples=600,
                                   epoch_scale=1.0, staircase=True)  # fmt: skip


def train_mlp(cuda_graphs, steps=40, chunk=10, schedule=None, device="cpu", **kwargs):
    """The MNIST MLP trained for `steps` SGD steps in chunks of `chunk` (one Lightning batch each)."""
    gen = torch.Generator().manual_seed(0)
    x = (torch.rand(600, 1, 28, 28, generator=gen) > 0.5).float().to(device)
    y = torch.randint(0, 10, (600,), generator=gen).to(device)
    net = timm.create_model("mnist_mlp", norm="batchnorm", act_layer="sigmoid", init_seed=0)
    opt = partial(torch.optim.SGD, lr=0.5, momentum=0.9, weight_decay=0.0)
    options = dict(lr_rule="linear", aux_loss_weight=0.3, decay_all_params=False, fused_optimizer=False,
                   channels_last=False)  # what the config would pass  # fmt: skip
    module = MultiStepClassifier(net, 10, 30, opt, schedule or Constant(), reference_batch=30,
                                 cuda_graphs=cuda_graphs, **{**options, **kwargs})  # fmt: skip
    sampler = StepChunkSampler(600, 30, steps_per_epoch=steps, steps_per_batch=chunk)
    trainer = L.Trainer(accelerator=device, devices=1, max_steps=steps, max_epochs=1, logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        limit_val_batches=0)  # fmt: skip
    trainer.fit(module, train_dataloaders=device_loader((x, y), sampler))
    return trainer, module


def test_graphed_steps_train_exactly_like_eager_steps_and_count_every_step():
    """The graph path's bookkeeping (static inputs, in-place zeroed grads, Lightning's step counter, the
    scheduler) on the CPU: same weights, same BN statistics, same global step as the eager path."""
    eager_trainer, eager = train_mlp(False, schedule=LR_HALVES_AT_20)
    graph_trainer, graphed = train_mlp("emulate", schedule=LR_HALVES_AT_20)
    assert graph_trainer.global_step == eager_trainer.global_step == 40
    # Chunk 1 warms up eagerly; chunks 2-4 replay (re-captured when the LR halves at step 20).
    assert graphed.graphed.replays == 3
    assert graphed.lr_schedulers().last_epoch == eager.lr_schedulers().last_epoch == 40
    for (name, a), b in zip(eager.state_dict().items(), graphed.state_dict().values()):
        assert torch.equal(a, b), name


def test_fused_optimizer_and_channels_last_train_the_same_network():
    _, plain = train_mlp(False, steps=20)
    _, fast = train_mlp(False, steps=20, fused_optimizer=True, channels_last=True)
    for (name, a), b in zip(plain.state_dict().items(), fast.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5, msg=name)  # float rounding order only


def test_reproduce_submits_each_missing_run_as_a_one_job_slurm_multirun_into_the_same_folder():
    sys.path.insert(0, str(ROOT / "reproduce"))
    import reproduce as rp

    args = ["data=fashion_mnist", "trainer=ddp", "trainer.devices=4"]
    spec, overrides = rp.apply_arguments(rp.load_spec("figure3"), args)
    job, run_dir, _ = rp.planned_run(spec, rp.sweep_points(spec)[0], overrides)
    cmd = rp.job_command(job, "slurm", ("hydra.launcher.partition=gpu",))
    assert cmd[2:4] == ["-m", "hydra/launcher=slurm"]
    cfg = compose_with_hydra(*cmd[3:])  # what train.py composes for that command
    params = instantiate(cfg.hydra.launcher).params
    assert (params["tasks_per_node"], params["nodes"], params["partition"]) == (4, 1, "gpu")
    assert ROOT / cfg.hydra.sweep.dir / cfg.hydra.sweep.subdir == run_dir  # the folder reproduce checks


def test_adamw_or_a_forked_strategy_get_a_clear_answer_on_a_gpu(cuda_present):
    adamw = compose_train("model=mnist_mlp_bn", "optimizer=adamw")
    assert (
        resolve_speed(adamw, **placed("cuda"), data_on_device=True).cuda_graphs is False
    )  # its step cannot be captured
    with pytest.raises(ConfigError, match=r"cuda_graphs=true needs optimizer=sgd"):
        resolve_speed(compose_train("model=mnist_mlp_bn", "optimizer=adamw", "speed.cuda_graphs=true"),
                      **placed("cuda"), data_on_device=True)  # fmt: skip
    with pytest.raises(ConfigError, match=r"trainer.precision=auto .* trainer.strategy=ddp_fork"):
        trainer_args(compose_train("model=bn_x30", "trainer.strategy=ddp_fork"))


def test_a_resume_compares_the_precision_auto_became_and_not_how_the_step_runs():
    from bnrepro.config.resume import config_differences

    before_auto = {"trainer.precision": "32-true"}  # a config.yaml written before the fast paths existed
    assert config_differences(before_auto, {"trainer.precision": "auto", "trainer.compile": None}) == []
    assert config_differences({"trainer.precision": "bf16"}, {"trainer.precision": "bf16-mixed"}) == []
    # compile / channels_last / ... change how the step runs: a run whose compile crashed resumes without.
    assert config_differences({"speed.compile": True}, {"speed.compile": False}) == []
    # A run folder from before the `speed` node holds them under trainer: it still resumes.
    assert config_differences({"trainer.compile": True}, {"speed.compile": False}) == []
    # Run folders from before lit/multistep.py also hold the steps per batch as data.steps_per_batch.
    old = {"data.steps_per_batch": 100, "loop.steps_per_batch": 100}
    assert config_differences(old, {"loop.steps_per_batch": 100}) == []
    assert config_differences(old, {"loop.steps_per_batch": 10}) == [
        "loop.steps_per_batch: 100 there, 10 now"
    ]
    # Resolved on another machine: a bf16 run does not silently continue in float32.
    assert config_differences({"trainer.precision": "bf16-mixed"}, {"trainer.precision": "32-true"}) == [
        "trainer.precision: 'bf16-mixed' there, '32-true' now"
    ]


@pytest.mark.parametrize(
    ("script", "raised", "message"),
    [
        ("sys.exit(2)", ConfigError, r"the job r was refused at start-up \(its message is above\)"),
        ("write('diverged'); sys.exit(3)", TrainingDiverged, r"loss became nan"),
        ("write('diverged')", TrainingDiverged, r"loss became nan"),  # rank 0 killed after writing it
        ("sys.exit(1)", RuntimeError, r"(?s)the job r \(.*\) exited with status 1"),
    ],
)
def test_a_multirun_ddp_job_in_its_own_process_is_judged_by_its_summary_then_its_exit_status(
    monkeypatch, tmp_path, script, raised, message
):
    import bnrepro.launching as launching

    run_dir = tmp_path / "r"
    run_dir.mkdir()
    write = (f"def write(status): open({str(run_dir / 'summary.json')!r}, 'w').write("
             "'{\"status\": \"%s\", \"error\": \"loss became nan\", \"diverged_at_step\": 7}' % status)")  # fmt: skip
    monkeypatch.setattr(
        launching, "job_command", lambda d: [sys.executable, "-c", f"import sys\n{write}\n{script}"]
    )
    monkeypatch.setattr(launching, "get_original_cwd", lambda: str(tmp_path))
    with pytest.raises(raised, match=message):
        launching.run_job_in_own_process(run_dir)


def test_a_finished_job_in_its_own_process_returns_its_summary(monkeypatch, tmp_path):
    import bnrepro.launching as launching

    (tmp_path / "summary.json").write_text('{"status": "old"}')  # from before the launch: not the answer
    child = f"open({str(tmp_path / 'summary.json')!r}, 'w').write('{{\"status\": \"finished\"}}')"
    monkeypatch.setattr(launching, "job_command", lambda d: [sys.executable, "-c", child])
    monkeypatch.setattr(launching, "get_original_cwd", lambda: str(tmp_path))
    assert launching.run_job_in_own_process(tmp_path) == {"status": "finished"}


@pytest.mark.slow  # end to end (25 s): the same mapping is tested in-process above
def test_a_multirun_ddp_job_refused_at_start_up_stops_the_sweep_with_its_message(mnist_root, tmp_path):
    r = cli("-m", "experiment=mnist_figure1", *fast_overrides(mnist_root, tmp_path / "runs"), "trainer.devices=2",
            "trainer.strategy=ddp", f"data.root={tmp_path / 'nowhere'}")  # fmt: skip
    assert r.returncode == 2
    assert "no data found" in r.stderr and "was refused at start-up (its message is above)" in r.stderr
    assert not list((tmp_path / "runs").glob("**/summary.json"))


def test_launcher_settings_without_the_slurm_launcher_are_refused(capsys):
    sys.path.insert(0, str(ROOT / "reproduce"))
    import reproduce as rp

    with pytest.raises(SystemExit, match=r"hydra.launcher.partition=gpu needs --launcher slurm"):
        rp.main(["figure3", "data=fashion_mnist", "hydra.launcher.partition=gpu"])
