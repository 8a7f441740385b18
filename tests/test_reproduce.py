"""`just reproduce mnist`: trains only what is missing, then renders; `just tables` never trains."""

from __future__ import annotations

import os
import subprocess
import sys

from conftest import ROOT


def reproduce(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.run([sys.executable, str(ROOT / "reproduce" / "reproduce.py"), *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)  # fmt: skip


def test_reproduce_runs_the_missing_runs_once_then_only_renders(mnist_root, tmp_path):
    runs, results = tmp_path / "runs", tmp_path / "results"
    overrides = [f"data.root={mnist_root}", "data.download=false", f"runs_root={runs}", "trainer.max_steps=20",
                 "loop.eval_every_steps=10", "trainer.accelerator=cpu", "logger=csv"]  # fmt: skip
    first = reproduce("mnist", *overrides, "--results", str(results))
    assert first.returncode == 0, first.stdout[-2000:] + first.stderr[-2000:]
    assert first.stdout.count("launch:") == 2
    md = (results / "mnist_figure1.md").read_text()
    assert "**Data: MNIST**" in md and "just reproduce mnist data.root=" in md
    assert (results / "mnist_figure1.png").stat().st_size > 10_000
    mtimes = {p: p.stat().st_mtime for p in runs.glob("**/summary.json")}
    assert len(mtimes) == 2

    again = reproduce("mnist", *overrides, "--results", str(results))
    assert again.returncode == 0 and "launch:" not in again.stdout  # both runs are finished: nothing trains
    assert {p: p.stat().st_mtime for p in runs.glob("**/summary.json")} == mtimes

    (results / "mnist_figure1.md").unlink()
    tables = reproduce("--render-only", "mnist", "--runs-root", str(runs), "--results", str(results))
    assert tables.returncode == 0 and (results / "mnist_figure1.md").is_file()
    assert "launch:" not in tables.stdout


def test_a_run_of_another_configuration_in_the_way_is_reported_not_overwritten(mnist_root, tmp_path):
    runs = tmp_path / "runs"
    base = [f"data.root={mnist_root}", "data.download=false", f"runs_root={runs}", "loop.eval_every_steps=10",
            "trainer.accelerator=cpu", "logger=csv", "--results", str(tmp_path / "results")]  # fmt: skip
    assert reproduce("mnist", *base, "trainer.max_steps=10").returncode == 0
    summaries = {p: p.read_text() for p in runs.glob("**/summary.json")}
    r = reproduce("mnist", *base, "trainer.max_steps=10", "optimizer.lr=0.05")
    assert r.returncode != 0 and "holds a finished run with another configuration" in r.stderr
    assert "optimizer.lr: 0.1 there, 0.05 now" in r.stderr
    assert {p: p.read_text() for p in runs.glob("**/summary.json")} == summaries  # nothing overwritten
