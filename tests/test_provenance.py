"""git SHA in every summary: '-dirty' for changed source, not for re-rendered results/."""

from __future__ import annotations

import subprocess

from bnrepro.provenance import git_sha


def test_git_sha_marks_source_changes_but_not_results(tmp_path):
    def git(*args):
        subprocess.run(["git", *args], cwd=tmp_path, check=True, capture_output=True)

    git("init", "-q")
    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "table.md").write_text("a\n")
    (tmp_path / "train.py").write_text("a\n")
    git("add", "-A")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "init")
    clean = git_sha(tmp_path)
    assert len(clean) == 40 and not clean.endswith("-dirty")
    (tmp_path / "results" / "table.md").write_text("b\n")
    assert git_sha(tmp_path) == clean
    (tmp_path / "train.py").write_text("b\n")
    assert git_sha(tmp_path) == clean + "-dirty"
    assert git_sha(tmp_path.parent / "not-a-repo-xyz") == "unknown"
