"""data=imagenet end to end on a tiny ImageNet-layout folder the test writes (with ImageNet's odd files)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bnrepro.data.images import ImageDataError
from bnrepro.run import train
from conftest import cli, compose_train, train_main

CLASSES = ("n01440764", "n01443537")


def write_imagenet(root: Path, per_class: int = 6) -> Path:
    """train/ and val/ in class folders; train holds a CMYK JPEG, a PNG named .JPEG and a grayscale JPEG."""
    rng = np.random.default_rng(0)
    for split, n in (("train", per_class), ("val", 2)):
        for wnid in CLASSES:
            folder = root / split / wnid
            folder.mkdir(parents=True)
            for i in range(n):
                img = Image.fromarray(rng.integers(0, 256, (40 + 4 * i, 48, 3), dtype=np.uint8))
                if split == "train" and i == 0:
                    img = img.convert("CMYK")
                fmt = "PNG" if split == "train" and i == 1 else "JPEG"
                if split == "train" and i == 2:
                    img = img.convert("L")
                img.save(folder / f"{wnid}_{i}.JPEG", format=fmt)
    return root


def imagenet_overrides(root: Path, runs: Path) -> list[str]:
    return [
        "model=bn_x5", "data=imagenet", f"data.root={root}", "data.num_classes=2", "data.image_size=32",
        "data.resize_size=36", "data.batch_size=4", "data.eval_batch_size=3", "data.num_workers=1",
        "data.pin_memory=false", f"runs_root={runs}", "trainer.max_steps=2", "loop.eval_every_steps=1",
        "trainer.accelerator=cpu", "trainer.enable_progress_bar=false", "logger=csv",
        "callbacks.population_stats.num_batches=2", "run_name=r",
    ]  # fmt: skip


def test_a_tiny_imagenet_folder_trains_through_dataloader_workers(tmp_path):
    from conftest import build_data

    root = write_imagenet(tmp_path / "imagenet")
    cfg = compose_train(*imagenet_overrides(root, tmp_path / "runs"))
    dm = build_data(cfg, eval_every_steps=1)
    dm.prepare_data()
    dm.setup()
    x, y = next(iter(dm.train_dataloader()))
    assert x.shape == (4, 3, 32, 32) and x.dtype.is_floating_point and set(y.tolist()) <= {0, 1}
    val = list(dm.val_dataloader())
    assert sorted(len(b[1]) for b in val) == [1, 3] and all(b[0].shape[1:] == (3, 32, 32) for b in val)

    s = train(cfg, tmp_path / "runs" / "r")
    assert s["status"] == "finished" and s["steps"] == 2 and s["evaluations"] == 2 and "population_acc" in s


def test_a_truncated_image_stops_the_run_naming_the_file(tmp_path):
    root = write_imagenet(tmp_path / "imagenet")
    bad = root / "train" / CLASSES[1] / f"{CLASSES[1]}_3.JPEG"
    bad.write_bytes(bad.read_bytes()[: len(bad.read_bytes()) // 2])
    overrides = [
        o for o in imagenet_overrides(root, tmp_path / "runs") if not o.startswith("trainer.max_steps")
    ]
    cfg = compose_train(*overrides, "trainer.max_steps=6", "data.num_workers=0")  # 3 passes: every file read
    with pytest.raises(ImageDataError, match=str(bad)):
        train(cfg, tmp_path / "runs" / "r")
    s = json.loads((tmp_path / "runs" / "r" / "summary.json").read_text())
    assert s["status"] == "failed" and str(bad) in s["error"]


def test_an_unreadable_image_under_ddp_stops_every_rank_with_its_path(tmp_path):
    """Only one rank reads the bad file; both must stop (not wait in the all-reduce) and name it."""
    root = write_imagenet(tmp_path / "imagenet")
    bad = root / "train" / CLASSES[1] / f"{CLASSES[1]}_3.JPEG"
    bad.write_bytes(bad.read_bytes()[:200])
    overrides = [
        o for o in imagenet_overrides(root, tmp_path / "runs") if not o.startswith("trainer.max_steps")
    ]
    r = cli(*overrides, "trainer.max_steps=6", "data.batch_size=2", "trainer.devices=2", "trainer.strategy=ddp",
            timeout=240)  # fmt: skip
    assert r.returncode == 2, r.stderr[-3000:]
    assert str(bad) in r.stderr
    s = json.loads((tmp_path / "runs" / "imagenet" / "r" / "summary.json").read_text())
    assert s["status"] == "failed" and str(bad) in s["error"] and s["world_size"] == 2


@pytest.mark.parametrize("damage, message", [
    ("no_root", "no such folder"), ("empty_class", "n01443537"), ("no_val_class", "different class folders"),
    ("num_classes", "holds 2 class folders but data.num_classes=3"),
])  # fmt: skip
def test_a_broken_folder_is_refused_before_training_with_the_path(tmp_path, damage, message):
    from conftest import build_data

    root = write_imagenet(tmp_path / "imagenet")
    if damage == "no_root":
        root = tmp_path / "nowhere"
    elif damage == "num_classes":
        pass
    elif damage == "empty_class":
        for f in (root / "train" / CLASSES[1]).iterdir():
            f.unlink()
    else:
        for f in (root / "val" / CLASSES[1]).iterdir():
            f.unlink()
        (root / "val" / CLASSES[1]).rmdir()
    extra = ["data.num_classes=3"] if damage == "num_classes" else []
    cfg = compose_train(*imagenet_overrides(root, tmp_path / "runs"), *extra)
    with pytest.raises(ImageDataError, match=message) as e:
        build_data(cfg, eval_every_steps=1).prepare_data()
    assert str(root) in str(e.value)


def test_a_missing_data_root_exits_2_before_anything_is_written(tmp_path, capsys):
    status = train_main(*imagenet_overrides(tmp_path / "nowhere", tmp_path / "runs"))
    err = capsys.readouterr().err
    assert status == 2 and "error:" in err and str(tmp_path / "nowhere" / "train") in err, err[-2000:]
    assert not (tmp_path / "runs").exists()  # not even Hydra's record, its log or the folder it made


def test_imagenette_offline_says_what_to_do(tmp_path, monkeypatch):
    from conftest import build_data

    for var in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY"):  # no network, fail fast
        monkeypatch.setenv(var, "http://127.0.0.1:9")
    cfg = compose_train("model=bn_x5", "data=imagenette", f"data.root={tmp_path}")
    with pytest.raises(ImageDataError, match="download failed") as e:
        build_data(cfg, eval_every_steps=1).prepare_data()
    assert str(tmp_path / "imagenette2-320") in str(e.value)


def test_a_train_count_other_than_the_configured_epoch_warns(tmp_path):
    from conftest import build_data

    root = write_imagenet(tmp_path / "imagenet")  # 12 training images; data.num_train_examples says 1,281,167
    cfg = compose_train(*imagenet_overrides(root, tmp_path / "runs"))
    with pytest.warns(UserWarning, match="holds 12 images but data.num_train_examples=1281167"):
        build_data(cfg, eval_every_steps=1).prepare_data()


def test_an_unknown_imagenette_size_names_the_choices(tmp_path):
    from conftest import build_data

    cfg = compose_train("model=bn_x5", "data=imagenette", f"data.root={tmp_path}", "data.variant=1024px")
    with pytest.raises(ImageDataError, match="data.variant='1024px': Imagenette comes as full, 320px, 160px"):
        build_data(cfg, eval_every_steps=1)
