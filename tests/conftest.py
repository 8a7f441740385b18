"""Shared fixtures: tiny IDX data sets written by the tests, and Hydra composition of the real configs."""

from __future__ import annotations

import gzip
import os
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hydra import compose, initialize_config_dir

import bnrepro.registry  # noqa: F401  (registers the schema)

ROOT = Path(__file__).resolve().parent.parent
CONF = str(ROOT / "conf")
os.environ.setdefault("WANDB_MODE", "offline")  # tests never talk to a W&B server
os.environ.setdefault("WANDB_SILENT", "true")


def write_idx(path: Path, array: np.ndarray, compress: bool = False) -> None:
    """IDX format as MNIST ships it: magic (0, 0, dtype 0x08=uint8, ndim), big-endian sizes, data."""
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    data = header + array.astype(np.uint8).tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    if compress:
        with gzip.open(path, "wb") as f:
            f.write(data)
    else:
        path.write_bytes(data)


def make_idx_set(folder: Path, n_train: int = 240, n_test: int = 100, compress: bool = False, seed: int = 0):
    """Four IDX files of a learnable toy set: the label is which image row holds the bright pixels."""
    rng = np.random.default_rng(seed)
    suffix = ".gz" if compress else ""
    arrays = {}
    for split, n in (("train", n_train), ("t10k", n_test)):
        labels = rng.integers(0, 10, n).astype(np.uint8)
        images = rng.integers(0, 100, (n, 28, 28)).astype(np.uint8)
        for i, lab in enumerate(labels):
            images[i, 2 * lab + 4] = 250
        write_idx(folder / f"{split}-images-idx3-ubyte{suffix}", images, compress)
        write_idx(folder / f"{split}-labels-idx1-ubyte{suffix}", labels, compress)
        arrays[split] = (images, labels)
    return arrays


@pytest.fixture
def mnist_root(tmp_path) -> Path:
    """A data.root holding a tiny MNIST in torchvision's layout (<root>/MNIST/raw)."""
    root = tmp_path / "data"
    make_idx_set(root / "MNIST" / "raw")
    make_idx_set(root / "FashionMNIST" / "raw", seed=1)
    return root


def compose_train(*overrides: str):
    with initialize_config_dir(CONF, version_base="1.3"):
        return compose("train", overrides=list(overrides))


def build_data(cfg, eval_every_steps: int):
    """The data module of a composed config, as run.py builds it (instantiate + the evaluation period)."""
    from bnrepro.config.build import build

    return build(cfg.data, "data", seed=cfg.seed, eval_every_steps=eval_every_steps)


def fast_overrides(root: Path, runs: Path, steps: int = 20, every: int = 10) -> list[str]:
    """A short CPU run on the tiny data set: `steps` SGD steps, evaluation every `every`."""
    return [
        f"data.root={root}",
        "data.download=false",
        f"runs_root={runs}",
        f"trainer.max_steps={steps}",
        f"loop.eval_every_steps={every}",
        "trainer.accelerator=cpu",
        "trainer.enable_progress_bar=false",
        "logger=csv",
    ]


@pytest.fixture
def partial_run(mnist_root, tmp_path):
    """A run preempted at step 10 of 20: (its overrides, its folder)."""
    from bnrepro.run import train

    overrides = ["model=mnist_mlp_bn", *fast_overrides(mnist_root, tmp_path / "runs"), "run_name=r"]
    run_dir = tmp_path / "runs" / "mnist" / "r"
    assert train(compose_train(*overrides, "testing.stop_at_step=10"), run_dir)["status"] == "preempted"
    return overrides, run_dir


def files(run_dir) -> dict:
    """Every file of a run folder and its bytes."""
    return {str(p.relative_to(run_dir)): p.read_bytes() for p in run_dir.rglob("*") if p.is_file()}


def cli(*args: str, env: dict | None = None, timeout: int = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}
    env = {k: v for k, v in env.items() if v is not None}  # None: unset the variable
    return subprocess.run([sys.executable, str(ROOT / "src" / "train.py"), *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)  # fmt: skip


def train_main(*args: str, script: str = "train.py") -> int:
    """`python src/train.py *args` (or src/eval.py) in this process, Hydra's main included: its exit
    status; its stdout and stderr are the test's (capsys). cli() runs the real command in a new process,
    for the tests where the process itself is what is tested."""
    import importlib.util

    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig

    path = ROOT / "src" / script
    spec = importlib.util.spec_from_file_location(f"{path.stem}_script", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    argv = sys.argv
    sys.argv = [str(path), *args]
    try:
        module.command()  # the script's own `if __name__ == "__main__":` body
        return 0
    except SystemExit as e:
        return e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    finally:
        sys.argv = argv
        GlobalHydra.instance().clear()
        # Hydra leaves the last job's config set: a later compose + train() in this process would take
        # itself for a Hydra launch (a .hydra/ record, a multirun's own-process DDP jobs).
        HydraConfig.instance().cfg = None
