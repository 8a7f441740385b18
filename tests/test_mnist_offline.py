"""MNIST without a network, and damaged IDX files: one message naming the reason and the fix, exit
status 2, and nothing left behind (no empty data/MNIST/raw, no run folder)."""

from __future__ import annotations

from urllib.error import URLError

import pytest
from torchvision import datasets

from bnrepro.data.mnist import IDX_FILES, DatasetDamagedError, DatasetNotFoundError, prepare
from conftest import fast_overrides, make_idx_set, train_main


@pytest.fixture
def offline(monkeypatch):
    """torchvision's download as it fails without a network: the folder made, then every mirror refused."""

    def download(self):
        import os

        os.makedirs(self.raw_folder, exist_ok=True)
        err = URLError("[Errno -3] Temporary failure in name resolution")
        tried = "".join(f"Tried {m}, got:\n{err}\n" for m in self.mirrors)
        raise RuntimeError(f"Error downloading train-images-idx3-ubyte.gz:\n{tried}")

    monkeypatch.setattr(datasets.MNIST, "download", download)


def test_offline_mnist_says_why_and_how_to_fix_in_one_line(tmp_path, offline):
    root = tmp_path / "data"
    with pytest.raises(DatasetNotFoundError) as e:
        prepare("mnist", root, system_dirs=[], download=True)
    msg = str(e.value)
    assert "\n" not in msg and not msg.endswith("\n")
    assert "Temporary failure in name resolution" in msg  # the reason
    assert "data=fashion_mnist" in msg and str(root.resolve() / "MNIST" / "raw") in msg  # the fixes
    assert "system folder" not in msg and "gzipped" not in msg  # MNIST has no system folder
    assert not root.exists()  # no empty data/MNIST/raw left behind


def test_offline_mnist_run_exits_2_with_the_message_on_the_console(tmp_path, offline, capsys):
    runs = tmp_path / "runs"
    overrides = [o for o in fast_overrides(tmp_path / "data", runs) if o != "data.download=false"]
    assert train_main("model=mnist_mlp_bn", *overrides) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: mnist: no data found and the download failed (RuntimeError: ")
    assert "data=fashion_mnist" in err and not err.endswith("\n\n")
    assert not runs.exists() and not (tmp_path / "data").exists()


@pytest.mark.parametrize(
    "file, damage, says",
    [
        ("train-images-idx3-ubyte", b"<html>404 Not Found</html>", "not an MNIST IDX images file"),
        ("t10k-labels-idx1-ubyte", b"", "not an MNIST IDX labels file"),
        ("train-labels-idx1-ubyte", "truncate", "but the file has"),
    ],
)
def test_garbage_idx_files_are_refused_naming_the_file(tmp_path, file, damage, says):
    raw = tmp_path / "MNIST" / "raw"
    make_idx_set(raw)
    path = raw / file
    path.write_bytes(path.read_bytes()[:-3] if damage == "truncate" else damage)
    with pytest.raises(DatasetDamagedError) as e:
        prepare("mnist", tmp_path, download=False)
    assert str(e.value).startswith(f"{path}: ") and says in str(e.value) and "Delete it" in str(e.value)


def test_images_and_labels_of_different_counts_are_refused(tmp_path):
    raw = tmp_path / "MNIST" / "raw"
    make_idx_set(raw)
    make_idx_set(tmp_path / "other", n_train=120)
    (raw / "train-labels-idx1-ubyte").write_bytes(
        (tmp_path / "other" / "train-labels-idx1-ubyte").read_bytes()
    )
    with pytest.raises(DatasetDamagedError, match="240 images but train-labels-idx1-ubyte 120 labels"):
        prepare("mnist", tmp_path, download=False)


def test_a_run_on_garbage_idx_files_exits_2_and_leaves_no_run_folder(mnist_root, tmp_path, capsys):
    (mnist_root / "MNIST" / "raw" / IDX_FILES[0]).write_text("garbage")
    runs = tmp_path / "runs"
    assert train_main("model=mnist_mlp_bn", *fast_overrides(mnist_root, runs)) == 2
    err = capsys.readouterr().err
    assert f"{mnist_root / 'MNIST' / 'raw' / IDX_FILES[0]}: not an MNIST IDX images file" in err
    assert "Traceback" not in err and "AssertionError" not in err
    assert not runs.exists()
