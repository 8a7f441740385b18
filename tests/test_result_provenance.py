"""Every rendered file can be re-derived: it names the commit its runs were trained at and the one it was
rendered at, warns in bold at the top when the two differ or a tree was dirty, and holds no absolute path
of the machine (paths are relative to the repository or to the runs folder)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from test_figures import hand_made_runs
from test_results import write_run as write_mnist_run

from bnrepro.results import figure2, figure3, figure4, mnist_figure1
from bnrepro.results import page as page_module

A, B = "a" * 40, "b" * 40
# An absolute path of this machine: a slash at the start of a word, then a top-level folder.
ABSOLUTE = re.compile(r"(?<![\w.:/<-])/(?:tmp|home|work|root|usr|var|mnt|data|opt|private)\b")


@pytest.fixture
def rendered_at(monkeypatch):
    """Sets the commit the renderers see (page.git_sha), as a clean or a dirty tree would give it."""

    def at(sha: str) -> None:
        monkeypatch.setattr(page_module, "git_sha", lambda *a, **k: sha, raising=False)

    at(A)
    return at


def figure3_runs(root: Path, sha: str, checkout: Path):
    runs, _ = hand_made_runs(root / "fashion_figure3")
    for r in runs:
        r.summary["git_sha"] = sha
        r.summary["command"] = (
            f"python {checkout}/src/train.py experiment=fashion_figure3 data.root={checkout.parent}/data "
            f"runs_root={root} model={r.summary['model']}"
        )
    return runs


def mnist_runs(root: Path, sha: str):
    out = []
    for model in ("mnist_mlp", "mnist_mlp_bn"):
        run = write_mnist_run(
            root / "mnist_figure1" / f"{model}-mnist-seed0", model, lambda s: 0.5, lambda s: 0.0
        )
        run.summary.update(git_sha=sha, task="mnist_figure1", command=f"python {root.parent}/src/train.py x")
        out.append(run)
    return out


def evaluations(root: Path, sha: str):
    run_dir = root / "imagenet_figure3" / "bn_x30-imagenet-seed0"
    (run_dir / "checkpoints").mkdir(parents=True)
    summary = {
        "data": "imagenet",
        "git_sha": sha,
        "hardware": "test GPU",
        "world_size": 1,
        "global_batch": 32,
    }
    (run_dir / "summary.json").write_text(json.dumps(summary))
    record = {"data": "imagenet", "num_images": 50_000, "world_size": 1, "hardware": "test GPU", "git_sha": sha,
              "checkpoints": [str(run_dir / "checkpoints" / "best.ckpt")], "model": "bn_x30", "weights": "run",
              "members": 1, "crops": 1, "protocol": "single crop", "top1_err": 0.25, "top5_err": 0.08,
              "finished_at": "1", "path": str(root / "eval" / "imagenet" / "single_crop"),
              "command": f"python {root.parent}/src/eval.py ckpt={run_dir}/checkpoints/best.ckpt"}  # fmt: skip
    return [record]


def render_all(tmp_path: Path, sha: str) -> list[Path]:
    root, out = tmp_path / "runs", tmp_path / "results"
    f3 = figure3_runs(root, sha, tmp_path / "checkout")
    command = f"just tables figure3 --runs-root {root}"
    spec = {"source": f"local run folders under {root}"}
    files = figure3.render(f3, out, command, spec) + figure2.render(f3, out, command, spec)
    files += mnist_figure1.render(mnist_runs(root, sha), out, f"just tables mnist --runs-root {root}")
    files += figure4.render(evaluations(root, sha), out, f"just tables figure4 --runs-root {root}")
    return files


def test_rendered_files_hold_no_absolute_path(tmp_path, rendered_at):
    files = render_all(tmp_path, A)
    assert {p.name for p in files} >= {
        "figure3.md",
        "figure3.csv",
        "figure2.svg",
        "mnist_figure1.md",
        "figure4.md",
    }
    for path in files:
        text = path.read_text(errors="replace")
        for prefix in {str(tmp_path), str(tmp_path.resolve()), str(Path.cwd())}:
            assert prefix not in text, f"{path.name} names {prefix}"
        if path.suffix in (".md", ".csv"):
            assert not ABSOLUTE.findall(text), f"{path.name}: {ABSOLUTE.findall(text)}"
    text = (tmp_path / "results" / "figure3.md").read_text()
    # The training checkout's script relative to it; runs relative to the runs folder they were read from.
    assert "`python src/train.py experiment=fashion_figure3" in text
    assert "$runs_root/fashion_figure3/inception" in text
    assert "bn_x30-imagenet-seed0" in (tmp_path / "results" / "figure4.md").read_text()


def bold_top(text: str) -> list[str]:
    """The bold warning lines between the title and the first blank line after them."""
    lines = text.splitlines()[1:]
    return [line for line in lines[:6] if line.startswith("**Warning")]


def test_commits_are_named_and_a_clean_render_of_its_own_runs_has_no_warning(tmp_path, rendered_at):
    render_all(tmp_path, A)
    for name in ("figure3.md", "mnist_figure1.md", "figure4.md"):
        text = (tmp_path / "results" / name).read_text()
        assert f"trained at: {A}" in text and f"rendered at: {A}" in text, name
        assert bold_top(text) == [], name


@pytest.mark.parametrize(
    "trained, rendered, says",
    [
        (A, A + "-dirty", "uncommitted changes"),  # rendered from a dirty tree
        (B, A, "another commit"),  # runs trained at another commit
        (A + "-dirty", A, "uncommitted changes"),  # runs trained from a dirty tree
    ],
)
def test_a_dirty_or_foreign_commit_is_a_bold_warning_at_the_top(
    tmp_path, rendered_at, trained, rendered, says
):
    rendered_at(rendered)
    render_all(tmp_path, trained)
    for name in ("figure3.md", "mnist_figure1.md", "figure4.md"):
        warnings = bold_top((tmp_path / "results" / name).read_text())
        assert warnings and any(says in w for w in warnings), (name, warnings)
    svg = (tmp_path / "results" / "figure2.svg").read_text()
    assert "Warning" in svg and says in svg


def test_the_figure_footer_keeps_the_dirty_marker(tmp_path, rendered_at):
    rendered_at(A + "-dirty")
    render_all(tmp_path, B + "-dirty")
    svg = (tmp_path / "results" / "figure2.svg").read_text()
    assert f"{B[:12]}-dirty" in svg and f"{A[:12]}-dirty" in svg
