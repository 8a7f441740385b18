"""`just reproduce mnist`: trains only what is missing, then renders; `just tables` never trains.

reproduce.py's main runs in this process; the jobs it launches are its own processes (src/train.py),
as they are for the user."""

from __future__ import annotations

import sys
from types import SimpleNamespace

import pytest

from bnrepro.variants import FIGURE3
from conftest import ROOT


@pytest.fixture
def reproduce(capsys, monkeypatch):
    """`python reproduce/reproduce.py *args`: its exit status, stdout and stderr (sys.exit's message too)."""
    monkeypatch.syspath_prepend(str(ROOT / "reproduce"))
    monkeypatch.chdir(ROOT)
    import reproduce as rp

    def run(*args: str) -> SimpleNamespace:
        try:
            rp.main(list(args))
            code = 0
        except SystemExit as e:
            code = e.code
        out, err = capsys.readouterr()
        if isinstance(code, str):  # sys.exit("error: ..."): printed to stderr, status 1
            code, err = 1, err + code
        return SimpleNamespace(returncode=code or 0, stdout=out, stderr=err)

    return run


def test_reproduce_runs_the_missing_runs_once_then_only_renders(mnist_root, tmp_path, reproduce):
    """Its pool launches the two missing runs; a second call trains nothing, and refuses to overwrite a
    finished run of another configuration; --render-only renders from the run folders."""
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

    # A finished run of another configuration in the way is reported, not overwritten.
    summaries = {p: p.read_text() for p in runs.glob("**/summary.json")}
    other = reproduce("mnist", *overrides, "optimizer.lr=0.05", "--results", str(results))
    assert other.returncode != 0 and "holds a finished run with another configuration" in other.stderr
    assert "optimizer.lr: 0.1 there, 0.05 now" in other.stderr and "launch:" not in other.stdout
    assert {p: p.read_text() for p in runs.glob("**/summary.json")} == summaries

    (results / "mnist_figure1.md").unlink()
    tables = reproduce("--render-only", "mnist", "--runs-root", str(runs), "--results", str(results))
    assert tables.returncode == 0 and (results / "mnist_figure1.md").is_file()
    assert "launch:" not in tables.stdout


def test_figure3_proxy_end_to_end_and_the_same_table_from_wandb_offline(mnist_root, tmp_path, reproduce):
    """`just reproduce figure3 data=fashion_mnist` for a few CPU steps: runs logged to W&B offline by
    the real training code; `just tables` then gives the same table from the run folders and from the
    .wandb logs read by `wandb leet inspect --json`."""
    runs, results = tmp_path / "runs", tmp_path / "results"
    tiny = [f"data.root={mnist_root}", "data.download=false", f"runs_root={runs}", "trainer.max_steps=4",
            "loop.eval_every_steps=2", "data.image_size=32", "data.batch_size=8", "data.eval_batch_size=50",
            "callbacks.population_stats.num_batches=2", "trainer.accelerator=cpu", "logger.wandb.mode=offline"]  # fmt: skip
    two = "model=inception,bn_x30"  # two of the variants keep the test short; the others are "missing"
    first = reproduce("figure3", "data=fashion_mnist", two, *tiny, "--results", str(results))
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    assert first.stdout.count("launch:") == 2 and "experiment=fashion_figure3" in first.stdout
    text = (results / "figure3.md").read_text()
    assert "NOT ImageNet" in text and "2 runs" in text and "just reproduce figure3 data=fashion_mnist" in text
    assert len(list(runs.glob("fashion_figure3/*/wandb/offline-run-*/*.wandb"))) == 2

    def table(source: str) -> str:
        out = tmp_path / source
        r = reproduce("--render-only", "figure3", "data=fashion_mnist", two, f"source={source}",
                      "--runs-root", str(runs), "--results", str(out))  # fmt: skip
        assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
        md = (out / "figure3.md").read_text()
        assert f"source: {'W&B offline' if source != 'local' else 'local run folders'}" in md
        return md[md.index("| model |") : md.index("Provenance:")]

    local = table("local")
    assert local == table("wandb_offline")
    assert (
        # steps, max, final and Alg. 2 accuracy of the variants not run
        local.count("| missing | missing | 0 |") == len(FIGURE3) - 2
        and "| Inception | missing" not in local
        and "| BN-x30 | missing" not in local
    )


def test_a_failed_job_shows_the_end_of_its_log_and_a_diverged_one_is_a_result(tmp_path, capsys, monkeypatch):
    """Three jobs at once: one prints 30 lines and fails, one diverges (exit 3), one finishes. The run
    goes on to the end, then names the failed job with its last 15 lines on the console."""
    monkeypatch.syspath_prepend(str(ROOT / "reproduce"))
    import reproduce as rp

    scripts = {"bad": "for i in range(30): print(f'line {i}')\nraise SystemExit(1)",
               "diverged": "raise SystemExit(3)", "good": "print('[progress] done')"}  # fmt: skip
    monkeypatch.setattr(rp, "job_command", lambda job, *a: [sys.executable, "-c", scripts[job[0]]])
    jobs = [([name], tmp_path / "runs" / name) for name in scripts]
    with pytest.raises(SystemExit, match=r"these jobs failed: \S*bad \(exit 1, output in \S*bad\.log\)$"):
        rp.run_jobs(jobs, parallel=3)
    out = capsys.readouterr().out
    assert out.count("launch:") == 3 and "[progress] done" in out  # progress lines are echoed
    failed = out[out.index("failed:") :]
    assert "(exit 1); the last 15 lines of" in failed and "bad.log" in failed
    assert all(f"  | line {i}\n" in failed for i in range(15, 30)) and "line 14\n" not in failed
    assert "diverged" not in failed and "good" not in failed
    assert (tmp_path / "runs" / "bad.log").read_text().count("line ") == 30  # the whole output is kept
