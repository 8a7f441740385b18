"""No code runs from a file in a run folder: every place that loads a checkpoint or weights refuses a
hostile pickle (one whose unpickling would create a file) with exit status 2 naming the file, and the
file is never created. And the project's own checkpoints load with nothing allow-listed."""

from __future__ import annotations

import pickle

import pytest
import torch

from bnrepro import safe_load
from bnrepro.checkpointing import AtomicCheckpointIO, ResumeError
from conftest import files, train_main


class Hostile:
    """Unpickling calls open(marker, "w"): the file appears if the pickle's code ran."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def write_hostile(path, marker, kind: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"global_step": Hostile(marker), "state_dict": {}}
    if kind == "torch.save":  # a zip like a real checkpoint
        torch.save(payload, path)
    else:  # a bare pickle (torch.load reads the legacy format too)
        path.write_bytes(pickle.dumps(payload))


KINDS = ["torch.save", "pickle"]


def test_the_projects_checkpoints_load_with_nothing_allow_listed(partial_run):
    _, run_dir = partial_run
    assert safe_load.ALLOWED_GLOBALS == []
    for path in sorted((run_dir / "checkpoints").glob("*.ckpt")):
        assert safe_load.load(path)["global_step"] == 10, path


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("where", ["last.ckpt", "resume=<path>"])
def test_a_hostile_checkpoint_is_refused_on_resume_without_running(
    where, kind, partial_run, tmp_path, capsys
):
    overrides, run_dir = partial_run
    marker = tmp_path / "pwned"
    if where == "last.ckpt":
        bad = run_dir / "checkpoints" / "last.ckpt"
        extra = []
    else:
        bad = tmp_path / "elsewhere" / "given.ckpt"
        extra = [f"resume={bad}"]
    write_hostile(bad, marker, kind)
    kept = files(run_dir)
    status = train_main(*overrides, *extra)
    err = capsys.readouterr().err
    assert not marker.exists(), "the checkpoint's code ran"
    assert status == 2 and f"{bad} was refused" in err and "Traceback" not in err, err[-2000:]
    assert files(run_dir) == kept


def test_lightnings_own_resume_load_is_weights_only_whatever_the_environment(tmp_path, monkeypatch):
    # TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD makes torch.load(weights_only=None) -- what Lightning passes on
    # trainer.fit(ckpt_path=...) -- unpickle anything; the run's CheckpointIO plugin must not follow it.
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    marker, bad = tmp_path / "pwned", tmp_path / "last.ckpt"
    write_hostile(bad, marker, "torch.save")
    with pytest.raises(ResumeError, match=f"{bad} was refused"):
        AtomicCheckpointIO().load_checkpoint(bad)
    assert not marker.exists(), "the checkpoint's code ran"


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("option", ["ckpt", "eval.ensemble", "weights_path"])
def test_eval_refuses_a_hostile_checkpoint_or_weights_file(option, kind, tmp_path, capsys):
    marker, bad = tmp_path / "pwned", tmp_path / "run" / "checkpoints" / "best.ckpt"
    write_hostile(bad, marker, kind)
    given = {"ckpt": [f"ckpt={bad}"], "eval.ensemble": [f"eval.ensemble=[{bad}]"],
             "weights_path": ["weights=caffe_port", f"weights_path={bad}"]}[option]  # fmt: skip
    status = train_main(*given, "data=imagenet", f"data.root={tmp_path / 'none'}", f"out={tmp_path / 'out'}",
                        script="eval.py")  # fmt: skip
    err = capsys.readouterr().err
    assert not marker.exists(), "the file's code ran"
    assert status == 2 and str(bad) in err and "Traceback" not in err, err[-2000:]
    assert not (tmp_path / "out" / "eval.json").exists()


def test_eval_names_a_text_file_given_as_the_checkpoint(tmp_path, capsys):
    text = tmp_path / "notes.ckpt"
    text.write_text("hello\nthis is not a checkpoint\n")
    status = train_main(f"ckpt={text}", "data=imagenet", f"data.root={tmp_path / 'none'}",
                        f"out={tmp_path / 'out'}", script="eval.py")  # fmt: skip
    err = capsys.readouterr().err
    assert status == 2 and f"{text} is not a readable checkpoint" in err and "Traceback" not in err, err[
        -2000:
    ]


def test_eval_names_the_missing_data_set_of_a_data_key(tmp_path, capsys):
    # Without data=<name> the eval config's `data` is null (the run's own data set is used); a data.<key>
    # override then has nothing to set. Refused before Hydra composes, naming the key and the fix.
    status = train_main("ckpt=/nowhere/best.ckpt", f"data.root={tmp_path}", script="eval.py")
    err = capsys.readouterr().err
    assert status == 2 and "data.root=... needs the data set it belongs to: add data=<name>" in err, err
    assert "Traceback" not in err
