"""docs/design.md "Adding a data set", run as written: the documented module and YAML train a run, and the
new schema refuses a misspelled key at composition. The code blocks are read from the doc itself, so the
doc cannot drift from what works."""

from __future__ import annotations

import importlib
import json
import re
import sys

import numpy as np
import pytest
from hydra.errors import ConfigCompositionException

from bnrepro.run import train
from conftest import ROOT, compose_train


def documented_blocks() -> tuple[str, str]:
    """The python and yaml code blocks of the section, in that order."""
    text = (ROOT / "docs" / "design.md").read_text()
    section = text.split("## Adding a data set", 1)[1].split("\n## ", 1)[0]
    python = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    yaml = re.search(r"```yaml\n(.*?)```", section, re.S).group(1)
    return python, yaml


@pytest.fixture
def npz_data_set(tmp_path, monkeypatch):
    """The documented module placed as bnrepro.data.npz, the YAML in a config folder Hydra searches,
    and an .npz file of a learnable toy set (the label is which row is bright)."""
    python, yaml = documented_blocks()
    assert python.startswith("# src/bnrepro/data/npz.py") and "conf/data/my_npz.yaml" in yaml
    package = tmp_path / "pkg" / "bnrepro" / "data"
    package.mkdir(parents=True)
    (package / "npz.py").write_text(python)
    import bnrepro.data

    monkeypatch.setattr(bnrepro.data, "__path__", [*bnrepro.data.__path__, str(package)])
    monkeypatch.delitem(sys.modules, "bnrepro.data.npz", raising=False)
    importlib.import_module("bnrepro.data.npz")  # what importing bnrepro.data does for a file in src/
    (tmp_path / "conf" / "data").mkdir(parents=True)
    (tmp_path / "conf" / "data" / "my_npz.yaml").write_text(yaml)

    rng = np.random.default_rng(0)
    arrays = {}
    for split, n in (("train", 240), ("test", 60)):
        y = rng.integers(0, 4, n)
        x = rng.random((n, 1, 8, 8), dtype=np.float32) * 0.2
        x[np.arange(n), 0, 2 * y] = 1.0
        arrays[f"x_{split}"], arrays[f"y_{split}"] = x, y.astype(np.int64)
    np.savez(tmp_path / "my.npz", **arrays)
    return tmp_path


def npz_overrides(root, *extra: str) -> list[str]:
    return [f"hydra.searchpath=[file://{root / 'conf'}]", "model=mnist_mlp_bn", "data=my_npz",
            f"data.path={root / 'my.npz'}", "data.num_classes=4", "data.num_train_examples=240",
            "data.num_val_examples=60", "data.batch_size=20", "data.eval_batch_size=60",
            "model.net.in_features=64", "model.net.num_classes=4", "trainer.max_steps=40",
            "loop.eval_every_steps=20", "trainer.accelerator=cpu", "trainer.enable_progress_bar=false",
            "logger=csv", f"runs_root={root / 'runs'}", *extra]  # fmt: skip


def test_the_documented_data_set_trains(npz_data_set):
    cfg = compose_train(*npz_overrides(npz_data_set))
    assert cfg.data._target_ == "bnrepro.data.npz.NpzDataModule"
    run_dir = npz_data_set / "runs" / "r"
    summary = train(cfg, run_dir)
    assert summary["status"] == "finished" and summary["data"] == "my_npz"
    assert json.loads((run_dir / "summary.json").read_text())["steps"] == 40
    assert summary["best_acc"] > 0.5  # 4 classes: learned, not chance


def test_the_documented_data_set_plans_a_run_of_any_length(npz_data_set):
    """Issue 22: the example with trainer.max_steps=50 and the model's own evaluation period (500 steps)
    is one short period, evaluated at its end."""
    from bnrepro.config.checks import validate
    from bnrepro.plan import plan

    short = [o for o in npz_overrides(npz_data_set) if not o.startswith(("trainer.max_steps", "loop.eval"))]
    cfg = compose_train(*short, "trainer.max_steps=50")
    validate(cfg)
    run = plan(cfg, npz_data_set / "runs" / "r")
    assert run.loop.eval_every == 500 and run.loop.eval_steps == (50,) and 50 % run.steps_per_batch == 0


def test_the_documented_schema_refuses_a_misspelled_key(npz_data_set):
    with pytest.raises(ConfigCompositionException) as e:
        compose_train(*npz_overrides(npz_data_set, "data.pth=x.npz"))
    assert "pth" in str(e.value.__cause__ or e.value)


def test_the_documented_data_set_refuses_a_file_of_another_size(npz_data_set):
    from bnrepro.config import ConfigError

    cfg = compose_train(*npz_overrides(npz_data_set, "data.num_train_examples=50000"))
    with pytest.raises(
        ConfigError, match=r"holds 240 training and 60 test examples, but data.num_train_examples=50000"
    ):
        train(cfg, npz_data_set / "runs" / "r")
    assert not (npz_data_set / "runs" / "r").exists()  # refused before the run folder was made
