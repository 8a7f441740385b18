"""What a run prints: none of the known, harmless library messages, and plain progress lines (no tqdm
carriage returns) when stdout is not a terminal; train.log holds what the logging gathered."""

from __future__ import annotations

import logging
import warnings

from bnrepro.callbacks.progress import progress_bar
from bnrepro.console import progress, quiet_known_noise
from conftest import cli, fast_overrides

SILENCED = (
    "litlogger",  # Lightning's tip
    "GPU available: False",
    "TPU available",
    "anonymous setting has no effect",  # W&B
    "LeafSpec",  # the _pytree deprecation
    "weights_only",
    "pin_memory",
    "sync_dist",
)


def test_a_run_prints_none_of_the_silenced_messages_and_no_carriage_returns(mnist_root, tmp_path):
    runs = tmp_path / "runs"
    overrides = [o for o in fast_overrides(mnist_root, runs) if o != "logger=csv"]
    # W&B offline (the default logger without a key) and the progress bar on, as a user's run has them.
    r = cli("model=mnist_mlp_bn", *overrides, "trainer.enable_progress_bar=true", "data.num_train_examples=240",
            env={"WANDB_MODE": "offline", "WANDB_API_KEY": None})  # fmt: skip
    assert r.returncode == 0, r.stderr
    printed = r.stdout + r.stderr
    assert not [m for m in SILENCED if m in printed], printed
    assert "\r" not in printed  # stdout is a pipe here: lines, not tqdm's redraws
    assert "[mnist_mlp_bn] step 20/20" in r.stdout  # the line per evaluation is still there
    log = (runs / "mnist" / "mnist_mlp_bn-mnist-seed0" / "train.log").read_text()
    assert "`Trainer.fit` stopped: `max_steps=20` reached." in log  # Lightning's lines reach train.log


def test_the_filters_name_messages_not_categories():
    quiet_known_noise()
    quiet_known_noise()  # idempotent
    assert sum(type(f).__name__ == "_DropSilentInfo" for f in logging.getLogger(
        "lightning.pytorch.utilities.rank_zero").filters) == 1  # fmt: skip
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")  # whatever pytest's configuration says: only ours on top
        quiet_known_noise()
        warnings.warn("a deprecation of the user's own", DeprecationWarning, stacklevel=1)
        warnings.warn(
            "`isinstance(treespec, LeafSpec)` is deprecated, use ...", DeprecationWarning, stacklevel=1
        )
    assert [str(w.message) for w in caught] == ["a deprecation of the user's own"]


def test_progress_prints_plain_lines_only_for_a_long_loop(capsys, monkeypatch):
    clock = iter(range(0, 1000, 4))  # every item "takes" 4 s
    monkeypatch.setattr("bnrepro.console.time.monotonic", lambda: next(clock))
    assert list(progress(range(6), 6, "Alg. 2", every_s=10.0)) == list(range(6))
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("Alg. 2: 3/6 (12 s)") and lines[-1].startswith("Alg. 2: 6 done in")
    assert list(progress(range(3), 3, "quick", every_s=1e9)) == [0, 1, 2]
    assert capsys.readouterr().out == ""  # a quick loop says nothing


def test_progress_bar_is_tqdm_on_a_terminal_and_lines_otherwise(monkeypatch):
    from lightning.pytorch.callbacks import TQDMProgressBar

    from bnrepro.callbacks.progress import LineProgress

    assert progress_bar(False) == []  # trainer.enable_progress_bar=false: Lightning refuses any bar
    monkeypatch.setattr("sys.stdout.isatty", lambda: True)
    assert isinstance(progress_bar(True)[0], TQDMProgressBar)
    monkeypatch.setattr("sys.stdout.isatty", lambda: False)
    assert isinstance(progress_bar(True)[0], LineProgress)
