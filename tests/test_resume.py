"""Runs that survive: a resumed run equals the uninterrupted one, preemption saves and exits cleanly,
and bad resume requests are clear errors that change nothing."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import warnings

import pytest
import torch
from hydra.errors import HydraException
from test_train import synthetic_overrides

from bnrepro.checkpointing import ResumeError, checkpoint_step
from bnrepro.lit.classifier import ClassifierModule
from bnrepro.lit.multistep import MultiStepClassifier
from bnrepro.loggers import MetricsFileError, rows_up_to
from bnrepro.run import train
from conftest import ROOT, cli, compose_train, fast_overrides, train_main


@pytest.fixture
def step_losses(monkeypatch):
    """Every optimizer step's training loss, in order, across all train() calls of the test."""
    losses: list[float] = []
    for cls in (ClassifierModule, MultiStepClassifier):  # one step per batch, or K (their losses)
        original = cls.training_step

        def recording(self, batch, batch_idx, original=original):
            out = original(self, batch, batch_idx)
            losses.extend(out.detach().reshape(-1).tolist())
            return out

        monkeypatch.setattr(cls, "training_step", recording)
    return losses


def weights(run_dir):
    return torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)[
        "state_dict"
    ]


def written(run_dir) -> dict:
    """The run's files and their bytes, Hydra's log aside (each launch appends to it); each launch's
    .hydra/<time>/ record is included, so a new launch may add one but not change an earlier one."""
    return {str(p.relative_to(run_dir)): p.read_bytes() for p in run_dir.rglob("*")
            if p.is_file() and p.name != "train.log"}  # fmt: skip


def assert_same_run(straight, resumed):
    a, b = weights(straight), weights(resumed)
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    rows = [(straight / "metrics.csv").read_text(), (resumed / "metrics.csv").read_text()]
    assert rows[0] == rows[1]


CASES = {
    # the MNIST MLP (device-resident tensors, several steps per Lightning batch)
    "mnist_mlp_bn": lambda root, runs: [
        "model=mnist_mlp_bn",
        *fast_overrides(root, runs),
        "loop.steps_per_batch=2",
    ],
    # a tiny BN-Inception with dropout and LRN (Inception's row) on synthetic 32x32 images
    "inception": lambda root, runs: ["model=inception", *synthetic_overrides(runs, steps=8, every=4)],
}


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("stop", ["mid_period", "period_end"])
def test_resume_equals_uninterrupted(case, stop, mnist_root, tmp_path, step_losses):
    overrides = CASES[case](mnist_root, tmp_path / "runs")
    straight_cfg = compose_train(*overrides, "run_name=straight")
    n = straight_cfg.trainer.max_steps
    every = straight_cfg.loop.eval_every_steps
    k = every + (2 if stop == "mid_period" else 0)  # inside the second evaluation period, or at its start
    straight = train(straight_cfg, tmp_path / "runs" / straight_cfg.task / "straight")
    reference = list(step_losses)
    step_losses.clear()

    run_dir = tmp_path / "runs" / straight_cfg.task / "resumed"
    first = compose_train(*overrides, "run_name=resumed", f"testing.stop_at_step={k}")
    stopped = train(first, run_dir)
    assert stopped["status"] == "preempted" and stopped["steps"] == k
    assert len(step_losses) == k
    again = train(compose_train(*overrides, "run_name=resumed"), run_dir)  # the same command, relaunched
    assert again["status"] == "finished" and again["steps"] == n and again["resumed_at_steps"] == [k]
    assert step_losses == reference  # every step's loss, bit for bit
    assert again["evaluations"] == straight["evaluations"] and again["best_acc"] == straight["best_acc"]
    assert_same_run(run_dir.parent / "straight", run_dir)
    assert not list(run_dir.glob("**/*.partial"))


def test_a_run_on_an_uneven_schedule_resumed_at_every_kind_of_stop_equals_the_uninterrupted_one(
    mnist_root, tmp_path, step_losses
):
    """Dense early evaluation (every 2 steps to 6), the regular period 10, a short last period (26): the
    periods are 2, 2, 2, 4, 10, 6 steps long. One run folder preempted four times -- at the end of a
    short period followed by a longer one (6), mid-period (14), at the end of a period followed by a
    shorter one (20), inside the short last period (22) -- trains what the uninterrupted run trained,
    evaluated at exactly the planned steps; 2 steps per Lightning batch divide every period."""
    from bnrepro.results.runs import load_run

    overrides = ["model=mnist_mlp_bn", *fast_overrides(mnist_root, tmp_path / "runs", steps=26, every=10),
                 "loop.early_eval_every_steps=2", "loop.early_eval_until_steps=6", "loop.steps_per_batch=2"]  # fmt: skip
    straight = train(compose_train(*overrides, "run_name=straight"), tmp_path / "runs" / "mnist" / "straight")
    planned = [2, 4, 6, 10, 20, 26]
    assert straight["eval_steps"] == planned and straight["steps_per_batch"] == 2
    assert list(load_run(tmp_path / "runs" / "mnist" / "straight").curve("val/acc")[0]) == planned
    reference = list(step_losses)
    step_losses.clear()

    run_dir = tmp_path / "runs" / "mnist" / "resumed"
    stops = [6, 14, 20, 22]
    for stop in stops:
        stopped = train(
            compose_train(*overrides, "run_name=resumed", f"testing.stop_at_step={stop}"), run_dir
        )
        assert stopped["status"] == "preempted" and stopped["steps"] == stop
    again = train(compose_train(*overrides, "run_name=resumed"), run_dir)
    assert again["status"] == "finished" and again["steps"] == 26 and again["resumed_at_steps"] == stops
    assert step_losses == reference  # every step's loss, bit for bit
    assert again["evaluations"] == straight["evaluations"] == len(planned)
    assert_same_run(run_dir.parent / "straight", run_dir)


def test_a_checkpoint_of_the_other_way_of_stepping_resumes_at_its_step(tmp_path, step_losses):
    """A partial ImageNet-variant run saved by the K-steps module (manual optimization, as every variant
    trained before they moved to Lightning's automatic optimization) resumes at its step, bit for bit."""
    from bnrepro.plan import RunPlan

    overrides = ["model=inception", *synthetic_overrides(tmp_path / "runs", steps=8, every=4)]
    straight_cfg = compose_train(*overrides, "run_name=straight")
    train(straight_cfg, tmp_path / "runs" / straight_cfg.task / "straight")
    reference = list(step_losses)
    step_losses.clear()
    run_dir = tmp_path / "runs" / straight_cfg.task / "resumed"
    with pytest.MonkeyPatch.context() as m:  # the first leg as before: manual optimization, a step per batch
        m.setattr(RunPlan, "multistep", property(lambda self: True))  # MultiStepClassifier, chunks of 1
        first = train(compose_train(*overrides, "run_name=resumed", "testing.stop_at_step=6"), run_dir)
    assert first["status"] == "preempted" and first["steps"] == 6
    again = train(compose_train(*overrides, "run_name=resumed"), run_dir)
    assert again["status"] == "finished" and again["steps"] == 8 and again["resumed_at_steps"] == [6]
    assert step_losses == reference
    assert_same_run(run_dir.parent / "straight", run_dir)


def test_resume_requested_with_nothing_to_resume_is_an_error(mnist_root, tmp_path, capsys):
    cfg = compose_train("model=mnist_mlp_bn", *fast_overrides(mnist_root, tmp_path / "runs"), "resume=true")
    with pytest.raises(ResumeError, match="resume=true but .* holds no checkpoint"):
        train(cfg, tmp_path / "runs" / "r")
    status = train_main("model=mnist_mlp_bn", *fast_overrides(mnist_root, tmp_path / "runs"),
                        "resume=/nowhere/last.ckpt")  # fmt: skip
    assert status == 2 and "resume=/nowhere/last.ckpt: no such checkpoint file" in capsys.readouterr().err


def test_a_truncated_checkpoint_is_named_and_the_fallback_resumes_from_the_previous_one(
    mnist_root, tmp_path, capsys
):
    overrides = ["model=mnist_mlp_bn", *fast_overrides(mnist_root, tmp_path / "runs", steps=30), "run_name=r",
                 "loop.steps_per_batch=1"]  # fmt: skip
    cfg = compose_train(*overrides, "testing.stop_at_step=25")
    run_dir = tmp_path / "runs" / cfg.task / "r"
    assert train(cfg, run_dir)["status"] == "preempted"
    last = run_dir / "checkpoints" / "last.ckpt"
    best_step = checkpoint_step(run_dir / "checkpoints" / "best.ckpt")  # an evaluation: 10 or 20

    kept = written(run_dir)
    # Relaunches of the partial run with bad input: refused, nothing changed. A misspelled key and a
    # wrong type fail at composition (before Hydra writes anything); a missing data root after it.
    with pytest.raises(HydraException, match="Could not override 'optimizer.lrr'"):
        compose_train(*overrides, "optimizer.lrr=0.1")
    with pytest.raises(HydraException, match="optimizer.lr"):
        compose_train(*overrides, "optimizer.lr=fast")
    status, err = train_main(*overrides, f"data.root={tmp_path / 'nowhere'}"), capsys.readouterr().err
    assert status == 2 and "mnist: no data found" in err, err[-1500:]
    after = written(run_dir)
    assert {k: v for k, v in after.items() if k in kept} == kept  # nothing written before has changed
    assert all(k.startswith(".hydra") for k in set(after) - set(kept))  # only Hydra's launch records

    last.write_bytes(last.read_bytes()[:1000])  # truncated, as a full disk would leave it
    kept = written(run_dir)
    status, err = train_main(*overrides), capsys.readouterr().err
    assert status == 2 and f"{last} is not a readable checkpoint" in err, err[-1500:]
    assert "resume_fallback=true" in err
    # The fallback is asked for but another check fails: still nothing is renamed or trimmed.
    status = train_main(*overrides, "resume_fallback=true", f"data.root={tmp_path / 'nowhere'}")
    assert status == 2 and "mnist: no data found" in capsys.readouterr().err
    after = written(run_dir)
    assert {k: v for k, v in after.items() if k in kept} == kept and last.stat().st_size == 1000

    summary = train(compose_train(*overrides, "resume_fallback=true"), run_dir)
    assert summary["status"] == "finished" and summary["resumed_at_steps"] == [best_step]
    assert (run_dir / "checkpoints" / "last.ckpt.corrupt").stat().st_size == 1000  # set aside, not lost


def test_a_stop_asked_at_the_last_step_lets_the_run_finish_with_alg2(mnist_root, tmp_path):
    overrides = ["model=mnist_mlp_bn", *fast_overrides(mnist_root, tmp_path / "runs"), "run_name=r"]
    cfg = compose_train(*overrides, f"testing.stop_at_step={20}")  # = trainer.max_steps
    summary = train(cfg, tmp_path / "runs" / cfg.task / "r")
    assert summary["status"] == "finished" and summary["population_acc"] is not None


def test_a_partial_run_of_another_configuration_is_not_resumed(mnist_root, tmp_path):
    overrides = ["model=mnist_mlp_bn", *fast_overrides(mnist_root, tmp_path / "runs"), "run_name=r"]
    cfg = compose_train(*overrides, "testing.stop_at_step=10")
    run_dir = tmp_path / "runs" / cfg.task / "r"
    train(cfg, run_dir)
    with pytest.raises(ResumeError, match=r"another configuration \(optimizer.lr: 0.1 there, 0.05 now\)"):
        train(compose_train(*overrides, "optimizer.lr=0.05"), run_dir)
    with pytest.raises(ResumeError, match="resume=false"):
        train(compose_train(*overrides, "resume=false"), run_dir)


def test_sigterm_saves_exits_cleanly_and_the_relaunch_finishes_the_same_run(mnist_root, tmp_path):
    """A real SIGTERM to a training process (src/train.py); the same command relaunched continues in the
    same folder. The reference and the relaunch run in this process: only the signal needs a process."""
    runs = tmp_path / "runs"
    args = ["model=mnist_mlp_bn", *fast_overrides(mnist_root, runs, steps=1000, every=100), "run_name=r",
            "loop.steps_per_batch=1"]  # fmt: skip
    assert train_main(*args[:-2], "run_name=straight", "loop.steps_per_batch=1") == 0  # the reference
    run_dir = runs / "mnist" / "r"
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, str(ROOT / "src" / "train.py"), *args], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)  # fmt: skip
    deadline = time.time() + 600  # the start-up alone: a minute and more on a loaded machine
    while (
        proc.poll() is None
        and not (run_dir / "checkpoints" / "last.ckpt").is_file()
        and time.time() < deadline
    ):
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0, out[-3000:]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "preempted" and 0 < summary["steps"] < 1000, out[-2000:]
    assert f"saved at step {summary['steps']}; relaunch the same command to resume" in out
    assert (
        checkpoint_step(run_dir / "checkpoints" / "last.ckpt") == summary["steps"]
    )  # saved where it stopped

    stopped_at = summary["steps"]
    assert train_main(*args) == 0  # the same command again, in this process
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["resumed_at_steps"] == [stopped_at]
    assert summary["status"] == "finished" and summary["steps"] == 1000
    assert_same_run(runs / "mnist" / "straight", run_dir)
    assert not [p for p in run_dir.rglob("*") if "partial" in p.name]


def test_a_resumed_run_continues_its_wandb_run(mnist_root, tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    overrides = ["model=mnist_mlp_bn", *fast_overrides(mnist_root, tmp_path / "runs"), "run_name=r", "logger=wandb",
                 "loop.steps_per_batch=1"]  # fmt: skip
    run_dir = tmp_path / "runs" / "mnist" / "r"
    train(compose_train(*overrides, "testing.stop_at_step=12"), run_dir)
    train(compose_train(*overrides), run_dir)
    folders = [p.name for p in (run_dir / "wandb").glob("offline-run-*")]
    run_id = (run_dir / "wandb_id").read_text()
    assert len(folders) == 2 and all(run_id in f for f in folders), folders  # two launches, one W&B run id


@pytest.mark.slow
def test_an_unreachable_wandb_server_falls_back_to_offline_and_the_run_completes(mnist_root, tmp_path):
    env = {"WANDB_API_KEY": "0" * 40, "WANDB_BASE_URL": "http://127.0.0.1:9", "WANDB_INIT_TIMEOUT": "10",
           "WANDB_MODE": None}  # fmt: skip
    r = cli("model=mnist_mlp_bn", *fast_overrides(mnist_root, tmp_path / "runs"), "run_name=w", "logger=wandb",
            "logger.wandb.mode=online", env=env)  # fmt: skip
    assert r.returncode == 0, r.stderr[-2000:]
    assert "W&B online failed" in r.stderr and "logging offline" in r.stderr
    run_dir = tmp_path / "runs" / "mnist" / "w"
    assert json.loads((run_dir / "summary.json").read_text())["status"] == "finished"
    assert list((run_dir / "wandb").glob("offline-run-*"))


def test_a_sigterm_after_the_periods_checkpoint_is_reported_as_saved_there(
    mnist_root, tmp_path, monkeypatch, capsys
):
    """Lightning checks for SIGTERM after the checkpoint callbacks: a signal that lands after the period's
    last.ckpt was written stops the run at a step that checkpoint holds (found under load by a real
    SIGTERM above). Simulated in-process: a callback after the checkpoints asks for the stop."""
    import lightning as L

    import bnrepro.run as run
    from bnrepro.lightning_compat import request_stop

    class LateSigterm(L.Callback):
        def on_validation_end(self, trainer, pl_module):
            if trainer.global_step == 10:
                request_stop(trainer)

    build = run.build_callbacks
    monkeypatch.setattr(run, "build_callbacks", lambda *a: [*build(*a), LateSigterm()])
    run_dir = tmp_path / "runs" / "r"
    train(compose_train("model=mnist_mlp_bn", *fast_overrides(mnist_root, tmp_path / "runs"), "run_name=r",
                        "loop.steps_per_batch=1"), run_dir)  # fmt: skip
    assert json.loads((run_dir / "summary.json").read_text())["steps"] == 10
    assert checkpoint_step(run_dir / "checkpoints" / "last.ckpt") == 10
    assert f"{run_dir} saved at step 10; relaunch the same command to resume" in capsys.readouterr().out


def test_a_torn_last_row_of_metrics_csv_is_dropped_and_other_damage_is_refused(mnist_root, tmp_path):
    """A kill while Lightning appends a row leaves a last line without its newline; the resumed run's next
    row must not be glued to it."""
    overrides = CASES["mnist_mlp_bn"](mnist_root, tmp_path / "runs")
    straight = tmp_path / "runs" / "mnist" / "straight"
    train(compose_train(*overrides, "run_name=straight"), straight)
    run_dir = tmp_path / "runs" / "mnist" / "r"
    train(compose_train(*overrides, "run_name=r", "testing.stop_at_step=10"), run_dir)
    metrics = run_dir / "metrics.csv"
    good = metrics.read_bytes()
    header, row = good.decode().splitlines()[:2]

    metrics.write_bytes(good + ",".join(row.split(",")[:-1]).encode() + b"\r\n")  # a field too few
    kept = written(run_dir)
    with pytest.raises(
        MetricsFileError, match=f"{metrics}, line 3 .* has {len(header.split(',')) - 1} fields"
    ):
        train(compose_train(*overrides, "run_name=r"), run_dir)
    assert written(run_dir) == kept

    metrics.write_bytes(good + b"2")  # killed while writing the row of step 20: "2" of "20,..."
    assert train(compose_train(*overrides, "run_name=r"), run_dir)["status"] == "finished"
    assert metrics.read_bytes() == (straight / "metrics.csv").read_bytes()


def test_rows_up_to_keeps_complete_rows_and_drops_a_torn_tail():
    text = b"step,val/acc\r\n10,0.5\r\n20,0.6\r\n"
    assert rows_up_to(text, 20) == text  # unchanged, byte for byte
    assert rows_up_to(text, 10) == b"step,val/acc\r\n10,0.5\r\n"
    assert rows_up_to(text + b"30,0.", 20) == text  # torn after the step
    assert rows_up_to(text + b"3", 20) == text  # torn inside the step: "3" is not step 3
    assert rows_up_to(b"step,val/a", 0) == b""  # not even the header whole
    with pytest.raises(MetricsFileError, match="line 3 \\('x,0.6'\\): step 'x' is not a number"):
        rows_up_to(text.replace(b"20,", b"x,"), 20)


def test_without_config_yaml_a_resume_is_checked_against_the_checkpoints_copy(mnist_root, tmp_path):
    overrides = ["model=mnist_mlp_bn", *fast_overrides(mnist_root, tmp_path / "runs"), "run_name=r"]
    run_dir = tmp_path / "runs" / "mnist" / "r"
    train(compose_train(*overrides, "testing.stop_at_step=10"), run_dir)
    (run_dir / "config.yaml").unlink()
    kept = written(run_dir)
    with pytest.raises(
        ResumeError, match=r"optimizer.lr: 0.1 there, 0.05 now\).*last.ckpt: config.yaml is missing"
    ):
        train(compose_train(*overrides, "optimizer.lr=0.05"), run_dir)
    assert written(run_dir) == kept
    assert train(compose_train(*overrides), run_dir)["status"] == "finished"  # its own config: resumed
    assert (run_dir / "config.yaml").is_file()  # written again


def test_a_runs_folder_copied_elsewhere_resumes_there(partial_run, tmp_path):
    overrides, run_dir = partial_run
    elsewhere = tmp_path / "elsewhere"
    shutil.copytree(tmp_path / "runs", elsewhere, symlinks=True)  # cp -a runs /elsewhere
    moved = [o for o in overrides if not o.startswith("runs_root=")] + [f"runs_root={elsewhere}"]
    summary = train(compose_train(*moved), elsewhere / "mnist" / "r")
    assert summary["status"] == "finished" and summary["resumed_at_steps"] == [10]


def test_a_resume_at_a_period_end_warns_of_nothing_and_keeps_the_best_checkpoints_state(partial_run):
    """The fixture stopped at step 10, its evaluation's end: Lightning ends that period again on resume."""
    from lightning.pytorch.callbacks.model_checkpoint import warning_cache

    overrides, run_dir = partial_run
    warning_cache.clear()  # Lightning warns once per process
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert train(compose_train(*overrides), run_dir)["status"] == "finished"
    assert not [w for w in caught if "could not find the monitored key" in str(w.message)]
    state = torch.load(run_dir / "checkpoints" / "best.ckpt", map_location="cpu", weights_only=False)[
        "callbacks"
    ]
    best = next(v for k, v in state.items() if k.startswith("ModelCheckpoint{'monitor': 'val/acc'"))
    assert best["best_model_path"].endswith("best.ckpt")  # Lightning's own key: older checkpoints restore


def test_a_failed_wandb_online_attempt_leaves_only_the_offline_run(tmp_path, monkeypatch):
    from lightning.pytorch.loggers import WandbLogger

    from bnrepro.loggers import wandb_logger

    def unreachable(self):  # what wandb.init does when the server cannot be reached: a folder, then an error
        (tmp_path / "wandb" / "run-20260101_000000-abcd1234" / "files").mkdir(parents=True)
        raise ConnectionError("cannot reach W&B")

    monkeypatch.setattr(WandbLogger, "experiment", property(unreachable))
    (tmp_path / "wandb" / "run-20250101_000000-earlier1").mkdir(parents=True)  # an earlier launch's: kept
    with pytest.warns(
        UserWarning, match="W&B online failed .ConnectionError: cannot reach W&B.; logging offline"
    ):
        wandb_logger(mode="online", project="p", entity=None, group=None, tags=[], run_dir=tmp_path, name="r",
                     run_config={})  # fmt: skip
    assert [p.name for p in (tmp_path / "wandb").iterdir()] == ["run-20250101_000000-earlier1"]


@pytest.mark.parametrize("also", ["", "config.yaml deleted", "resume_fallback"])
def test_a_copied_run_keeps_its_best_checkpoint(also, partial_run, tmp_path):
    """best.ckpt stays the best so far, and no best-v1.ckpt appears, in a run folder resumed elsewhere."""
    overrides, run_dir = partial_run
    elsewhere = tmp_path / "elsewhere"
    shutil.copytree(tmp_path / "runs", elsewhere)
    moved = [o for o in overrides if not o.startswith("runs_root=")] + [f"runs_root={elsewhere}"]
    there = elsewhere / "mnist" / "r"
    if also == "config.yaml deleted":
        (there / "config.yaml").unlink()
    if also == "resume_fallback":
        (there / "checkpoints" / "last.ckpt").write_bytes(b"torn")
        moved.append("resume_fallback=true")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        summary = train(compose_train(*moved), there)
    assert summary["status"] == "finished" and summary["resumed_at_steps"] == [10]
    assert not [str(w.message) for w in caught if "dirpath has changed" in str(w.message)]
    names = sorted(p.name for p in (there / "checkpoints").glob("*.ckpt"))
    assert names == ["best.ckpt", "last.ckpt", "population.ckpt"], names
    assert checkpoint_step(there / "checkpoints" / "best.ckpt") == summary["best_step"]


def test_ctrl_c_saves_records_a_stop_and_the_relaunch_continues(mnist_root, tmp_path, monkeypatch, capsys):
    """SIGINT during training (Ctrl-C) stops at the step's end like SIGTERM: last.ckpt saved, exit 0,
    summary.json not `failed`, and the relaunch of the same command finishes the run."""
    overrides = ["model=mnist_mlp_bn", *fast_overrides(mnist_root, tmp_path / "runs"), "run_name=r",
                 "loop.steps_per_batch=1"]  # fmt: skip
    run_dir = tmp_path / "runs" / "mnist" / "r"
    original = ClassifierModule.training_step

    def interrupted(self, batch, batch_idx):
        if self.trainer.global_step == 14:
            os.kill(os.getpid(), signal.SIGINT)  # what a terminal's Ctrl-C sends
        return original(self, batch, batch_idx)

    monkeypatch.setattr(ClassifierModule, "training_step", interrupted)
    assert train_main(*overrides) == 0
    out = capsys.readouterr()
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "preempted" and summary["steps"] == 15, summary
    assert checkpoint_step(run_dir / "checkpoints" / "last.ckpt") == 15
    assert "relaunch the same command to resume" in out.out + out.err and "Traceback" not in out.err
    monkeypatch.setattr(ClassifierModule, "training_step", original)
    assert train_main(*overrides) == 0
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "finished" and summary["resumed_at_steps"] == [15]


@pytest.mark.parametrize("at", ["a period's end", "the run's end"])
def test_a_torn_row_at_the_checkpoints_own_step_is_written_again(at, mnist_root, tmp_path):
    """A kill while the last row is written, with the checkpoint of that step on disk: at a period's
    end (the row of step 10), or at the run's end (Alg. 2's row, after last.ckpt; summary.json not
    yet written). The resumed run's metrics.csv equals the uninterrupted one's."""
    overrides = CASES["mnist_mlp_bn"](mnist_root, tmp_path / "runs")
    straight = tmp_path / "runs" / "mnist" / "straight"
    train(compose_train(*overrides, "run_name=straight"), straight)
    run_dir = tmp_path / "runs" / "mnist" / "r"
    stop = ["testing.stop_at_step=10"] if at == "a period's end" else []
    train(compose_train(*overrides, "run_name=r", *stop), run_dir)
    if not stop:
        (run_dir / "summary.json").unlink()
    metrics = run_dir / "metrics.csv"
    good = metrics.read_bytes()
    metrics.write_bytes(good[: good.rstrip(b"\r\n").rfind(b"\n") + 1] + good.splitlines()[-1][:1])
    assert train(compose_train(*overrides, "run_name=r"), run_dir)["status"] == "finished"
    assert metrics.read_bytes() == (straight / "metrics.csv").read_bytes()


def test_a_kill_during_the_end_of_run_work_is_redone_by_the_relaunch(mnist_root, tmp_path, monkeypatch):
    """Killed after the last evaluation, during Alg. 2: the relaunch must not end `finished` without Alg.
    2's result and its row (last.ckpt at the last step is written after that work)."""
    from bnrepro.callbacks.population import PopulationStatistics

    overrides = CASES["mnist_mlp_bn"](mnist_root, tmp_path / "runs")
    straight = tmp_path / "runs" / "mnist" / "straight"
    train(compose_train(*overrides, "run_name=straight"), straight)
    run_dir = tmp_path / "runs" / "mnist" / "r"

    def killed(self, trainer, pl_module):
        raise RuntimeError("killed during Alg. 2")

    with monkeypatch.context() as patch:
        patch.setattr(PopulationStatistics, "evaluate", killed)
        with pytest.raises(RuntimeError, match="killed during Alg. 2"):
            train(compose_train(*overrides, "run_name=r"), run_dir)
    summary = train(compose_train(*overrides, "run_name=r"), run_dir)
    assert summary["status"] == "finished" and summary["resumed_at_steps"] == [10]
    assert summary["population_acc"] == json.loads((straight / "summary.json").read_text())["population_acc"]
    assert (run_dir / "metrics.csv").read_bytes() == (straight / "metrics.csv").read_bytes()


def test_a_kill_after_the_last_checkpoint_keeps_alg2s_result(mnist_root, tmp_path):
    """Killed after the final last.ckpt (written after Alg. 2) but before summary.json: the relaunch trains
    nothing, so Alg. 2 does not run again; its result comes from the checkpoint, not lost."""
    overrides = CASES["mnist_mlp_bn"](mnist_root, tmp_path / "runs")
    run_dir = tmp_path / "runs" / "mnist" / "r"
    first = train(compose_train(*overrides, "run_name=r"), run_dir)
    (run_dir / "summary.json").unlink()  # the state of that kill: everything written but the summary
    summary = train(compose_train(*overrides, "run_name=r"), run_dir)
    assert summary["status"] == "finished" and summary["steps"] == first["steps"]
    assert first["population_acc"] is not None
    assert summary["population_acc"] == first["population_acc"]


def test_a_relaunch_refuses_a_metrics_csv_that_lost_rows(mnist_root, tmp_path, capsys):
    """The state a kill during Lightning's end-of-run rewrite of metrics.csv (opened with "w") left: an
    empty file, no summary.json. The relaunch used to end `finished` with the curves gone."""
    overrides = [*CASES["mnist_mlp_bn"](mnist_root, tmp_path / "runs"), "run_name=r"]
    run_dir = tmp_path / "runs" / "mnist" / "r"
    train(compose_train(*overrides), run_dir)
    (run_dir / "summary.json").unlink()
    (run_dir / "metrics.csv").write_bytes(b"")
    kept = written(run_dir)
    assert train_main(*overrides) == 2
    err = capsys.readouterr().err
    assert f"error: {run_dir / 'metrics.csv'} holds rows for 1 of the 2 evaluations" in err, err[-2000:]
    assert "rows were lost" in err and "Traceback" not in err
    assert written(run_dir) == kept
