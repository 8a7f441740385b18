"""Bad input is a clean refusal: exit status 2, a message naming the key or file and what to do, no
traceback, and nothing written. Through src/train.py's main (Hydra's included) in this process; the
command itself runs in test_train.py's one command-line smoke test."""

from __future__ import annotations

import errno
import json
from pathlib import Path

import pytest
import torch

from bnrepro.run import train
from bnrepro.runlock import RunFolderNotWritable
from conftest import compose_train, fast_overrides, files, train_main

REFUSED = {
    "trainer.devices=0": "trainer.devices=0 must be a positive number of devices",
    "trainer.devices=[]": "trainer.devices=[] names no device",
    "trainer.num_nodes=0": "trainer.num_nodes=0 must be a positive number of machines",
    "trainer.strategy=bogus": "Lightning refuses these trainer settings (trainer.accelerator=cpu, "
    "trainer.devices=1, trainer.num_nodes=1, trainer.strategy=bogus",
    "seed=-1": "seed=-1 must lie in [0, 2**32 - 1]",
    "optimizer.lr=inf": "optimizer.lr=inf must be a finite number",
    "callbacks.percentiles.quantiles=[0.15,nan]": "callbacks.percentiles.quantiles[1]=nan must be a finite",
    # Hydra's composition errors: its own message naming the key, and the status of bad input
    "optimizer.lrr=0.1": "Key 'lrr' not in 'SGDConfig'",
    "optimizer.lr=fast": "could not be converted to Float\n    full_key: optimizer.lr",
    "model=resnet": "Could not find 'model/resnet'",
    # appended keys (Hydra's hint for the misspelled one above), checked against the component
    "+optimizer.lrr=0.1": "optimizer.lrr=0.1 is not a setting: torch.optim.SGD takes no argument 'lrr'",
    "+foo=1": "foo=1 is not a setting: TrainConfig has no key 'foo'",
    "+trainer.gradient_clip_vall=1": "trainer.gradient_clip_vall=1 is not a setting: lightning.Trainer takes no",
    "+trainer.max_epochs=3": "lightning.Trainer's 'max_epochs' is set by the project itself",
    "+data.shufle=shard": "data.shufle=shard is not a setting: bnrepro.data.mnist.MNISTDataModule takes no",
}


@pytest.mark.parametrize("override", REFUSED)
def test_bad_input_exits_2_with_the_key_named_and_leaves_no_folder(override, mnist_root, tmp_path, capsys):
    runs = tmp_path / "runs"
    status = train_main("model=mnist_mlp_bn", *fast_overrides(mnist_root, runs), override)
    err = capsys.readouterr().err
    assert status == 2, err[-2000:]
    assert REFUSED[override] in err and "Traceback" not in err
    assert not runs.exists()


def test_eval_refuses_a_misspelled_key_with_the_status_of_bad_input(tmp_path, capsys):
    assert train_main("eval.crop=1", f"out={tmp_path / 'out'}", script="eval.py") == 2
    assert "Key 'crop' not in 'EvalOptions'" in capsys.readouterr().err


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a GPU")
def test_a_gpu_run_without_a_gpu_says_so(mnist_root, tmp_path, capsys):
    runs = tmp_path / "runs"
    assert train_main("model=mnist_mlp_bn", *fast_overrides(mnist_root, runs), "trainer.accelerator=gpu") == 2
    assert "error: trainer.accelerator=gpu, but no CUDA GPU is visible here" in capsys.readouterr().err
    assert not runs.exists()


def test_a_runs_folder_that_cannot_be_written_is_named(mnist_root, capsys):
    # /sys refuses new folders even to root (a chmod would not stop root): a real EPERM from the kernel.
    status = train_main("model=mnist_mlp_bn", *fast_overrides(mnist_root, "/sys/fs/bnrepro-runs"))
    err = capsys.readouterr().err
    assert status == 2 and "error: cannot write in /sys/fs/bnrepro-runs" in err and "runs_root=" in err, err


def test_a_run_folder_that_cannot_be_written_is_named(partial_run, monkeypatch):
    overrides, run_dir = partial_run
    kept = files(run_dir)

    def read_only(path, flags, *args):
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr("bnrepro.runlock.os.open", read_only)  # where the launch first writes
    with pytest.raises(RunFolderNotWritable, match=f"cannot write in {run_dir} \\(Permission denied\\)"):
        train(compose_train(*overrides), run_dir)
    assert files(run_dir) == kept


@pytest.mark.parametrize(
    "name, damage, message",
    [("config.yaml", b"model:\n  name: [unclosed\n", "config.yaml is not a readable config (while parsing"),
     ("config.yaml", b"", "config.yaml is not a readable config (a NoneType, not a mapping of keys)"),
     ("summary.json", b'{"status": "prempt', "summary.json is damaged (JSONDecodeError")],
)  # fmt: skip
def test_a_damaged_file_of_the_run_folder_is_named(name, damage, message, partial_run, capsys):
    overrides, run_dir = partial_run
    (run_dir / name).write_bytes(damage)
    kept = files(run_dir)
    assert train_main(*overrides) == 2
    err = capsys.readouterr().err
    assert f"error: {run_dir / name}" in err and message in err and "Nothing was changed" in err, err
    assert files(run_dir) == kept


def test_a_full_disk_is_reported_as_such_and_leaves_no_partial_file(partial_run, monkeypatch, capsys):
    overrides, run_dir = partial_run
    real = Path.write_bytes  # what provenance's atomic writers write with

    def full(self, *args, **kwargs):  # the file is created, then its write fails: a full disk
        if self.name.startswith(".summary.json"):
            self.touch()
            raise OSError(errno.ENOSPC, "No space left on device", str(self))
        return real(self, *args, **kwargs)

    monkeypatch.setattr(Path, "write_bytes", full)
    assert train_main(*overrides) == 4
    err = capsys.readouterr().err
    assert f"error: out of disk space writing {run_dir / 'summary.json'} (No space left on device)" in err
    assert "relaunch the same command to resume" in err and "Traceback" not in err
    assert not [p.name for p in run_dir.rglob("*") if "partial" in p.name or p.name == ".lock"]
    monkeypatch.setattr(Path, "write_bytes", real)  # space again: the relaunch finishes the run
    assert train_main(*overrides) == 0
    assert json.loads((run_dir / "summary.json").read_text())["status"] == "finished"


@pytest.mark.parametrize("multirun", [False, True])
@pytest.mark.parametrize("name", ["../../x", "a/../../../x", ".."])
def test_a_run_name_that_would_leave_runs_root_is_refused(name, multirun, mnist_root, tmp_path, capsys):
    runs = tmp_path / "runs"
    before = set(tmp_path.iterdir())
    args = ["-m"] if multirun else []
    status = train_main(*args, "model=mnist_mlp_bn", *fast_overrides(mnist_root, runs), f"run_name={name}")
    err = capsys.readouterr().err
    assert status == 2 and f"error: run_name={name} is not a plain folder name" in err, err[-2000:]
    assert "letters, digits and . _ - + = , @" in err and "Traceback" not in err
    assert set(tmp_path.iterdir()) - before <= {runs}  # nothing outside runs_root
    if not multirun:  # (a sweep's jobs are refused after Hydra made their folders: only outside ones go)
        assert not runs.exists()


@pytest.mark.parametrize("where", ["runs_root", "under runs_root"])
def test_a_runs_root_that_is_a_file_is_named(where, mnist_root, tmp_path, capsys):
    file = tmp_path / "runs"
    file.write_text("not a folder")
    runs = file if where == "runs_root" else file / "deeper"
    status = train_main("model=mnist_mlp_bn", *fast_overrides(mnist_root, runs))
    err = capsys.readouterr().err
    assert status == 2 and f"error: {file} is a file, not a folder" in err and "runs_root=" in err, err[
        -2000:
    ]
    assert "Traceback" not in err and file.read_text() == "not a folder"


@pytest.mark.parametrize("free, reason", [(0, "No space left on device"), (2**40, "a quota?")])
def test_a_full_disk_during_a_checkpoint_write_exits_4_naming_the_checkpoint(free, reason, partial_run,
                                                                             monkeypatch, capsys):  # fmt: skip
    import os
    import types

    overrides, run_dir = partial_run
    real_save = torch.save

    def full(obj, f, *args, **kwargs):  # what torch.save does on a full disk: a RuntimeError, no errno
        Path(f).write_bytes(b"PK\x03\x04 torn")
        raise RuntimeError("[enforce fail at inline_container.cc:664] . PytorchStreamWriter failed writing "
                           "file data/3: file write failed")  # fmt: skip

    monkeypatch.setattr(torch, "save", full)
    monkeypatch.setattr(os, "statvfs", lambda p: types.SimpleNamespace(f_bavail=free // 4096, f_frsize=4096))
    assert train_main(*overrides) == 4
    err = capsys.readouterr().err
    assert f"error: out of disk space writing {run_dir / 'checkpoints'}/" in err and reason in err, err[
        -2000:
    ]
    assert "Traceback" not in err and not [p.name for p in run_dir.rglob("*") if "partial" in p.name]
    monkeypatch.setattr(torch, "save", real_save)  # space again: the relaunch finishes the run
    assert train_main(*overrides) == 0


def test_an_appended_key_the_component_takes_is_kept():
    from bnrepro.config.checks import validate

    cfg = compose_train("+trainer.gradient_clip_val=0.5", "+optimizer.maximize=false")
    validate(cfg)  # no ConfigError: Lightning and torch.optim.SGD take these arguments
    assert cfg.trainer.gradient_clip_val == 0.5 and cfg.optimizer.maximize is False
