"""src/eval.py (Figure 4's protocols): crop geometry, single crop, ensemble averaging, end to end, DDP.

The network under test is a tiny MLP trained for two steps on 8x8 synthetic images (BN-Inception costs
seconds per step on a CPU); the val folder is a dozen small JPEGs/PNGs of both orientations, and the
crops are scaled down with them (crop 8, single-crop resize 9, 144-crop scales 9-12).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import types

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from PIL import Image
from torch import nn
from torchvision.transforms.v2 import functional as F

import bnrepro.evaluation.config  # noqa: F401  (registers eval_schema)
from bnrepro.config import ConfigError
from bnrepro.data.images import eval_transform
from bnrepro.evaluation.crops import PAPER_SCALES, MultiCrop, SingleCrop, crop_boxes, to_unit_float
from bnrepro.evaluation.ensemble import EnsembleClassifier, average_probabilities
from bnrepro.evaluation.evaluate import evaluate
from bnrepro.evaluation.members import CheckpointError, Member, Normalize, load_run_member
from conftest import CONF, ROOT, compose_train, train_main

KEYS = {"protocol", "crops", "members", "checkpoints", "weights", "data", "data_root", "num_images", "top1_acc",
        "top5_acc", "top1_err", "top5_err", "world_size", "precision", "hardware", "git_sha", "versions", "command",
        "finished_at", "model"}  # fmt: skip
PER_CLASS = (2, 1, 1, 2, 1, 1, 3)  # 11 images: an odd count, shards of 5 and 6 under 2 processes
TINY = ["data.image_size=8", "data.resize_size=9", "eval.scales=[9,10,11,12]", "eval.num_workers=0",
        "eval.pin_memory=false", "eval.batch_size=288", "trainer.accelerator=cpu",
        "trainer.enable_progress_bar=false"]  # fmt: skip


def wnids() -> list[str]:
    """Seven real ImageNet wnids, 100 apart: their indices among ImageNet's 1000 are 0, 100, ..., 600."""
    from timm.data import ImageNetInfo

    return ImageNetInfo().label_names()[::100][: len(PER_CLASS)]


@pytest.fixture(scope="module")
def val_root(tmp_path_factory):
    """<root>/val/<wnid>/ with JPEGs and PNGs, landscape and portrait, 11 in all."""
    root, rng = tmp_path_factory.mktemp("imagenet"), np.random.default_rng(0)
    for c, (wnid, n) in enumerate(zip(wnids(), PER_CLASS)):
        (root / "val" / wnid).mkdir(parents=True)
        for i in range(n):
            h, w = (10 + c, 14) if i % 2 == 0 else (15, 11 + c)
            ext = "png" if (c + i) % 3 == 0 else "JPEG"
            Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(
                root / "val" / wnid / f"{i}.{ext}"
            )
    return root


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """A finished run folder <runs>/tiny/r: 7 classes, 8x8 RGB input, two SGD steps."""
    from bnrepro.run import train

    runs = tmp_path_factory.mktemp("runs")
    cfg = compose_train(
        "model=mnist_mlp_bn", "data=synthetic", "data.image_size=8", "model.net.in_features=192",
        "model.net.hidden=[16,16,16]", "model.net.num_classes=7", "data.num_classes=7", "data.batch_size=4",
        "data.num_train_examples=32", "data.num_val_examples=8", "data.eval_batch_size=8", f"runs_root={runs}",
        "trainer.max_steps=2", "loop.eval_every_steps=2", "loop.steps_per_batch=1", "trainer.accelerator=cpu",
        "trainer.enable_progress_bar=false", "logger=csv", "callbacks.population_stats.num_batches=1",
    )  # fmt: skip
    train(cfg, runs / "tiny" / "r")
    return runs / "tiny" / "r"


def compose_eval(*overrides: str):
    with initialize_config_dir(CONF, version_base="1.3"):
        return compose("eval", overrides=list(overrides))


def eval_cli(*args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, str(ROOT / "src" / "eval.py"), *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)  # fmt: skip


@pytest.mark.parametrize("height, width", [(300, 400), (400, 300)])
def test_the_144_crops_of_a_non_square_image(height, width):
    crops = crop_boxes(height, width)
    assert len(crops) == 144 and [c.flip for c in crops] == [False] * 72 + [True] * 72
    assert [c._replace(flip=True) for c in crops[:72]] == crops[72:]  # mirrors, in the same order
    landscape = width > height
    for scale in PAPER_SCALES:
        at = [c for c in crops[:72] if c.scale == scale]
        long = int(scale * 4 / 3)  # torchvision's Resize(int): 300x400 -> 256x341, ..., 352x469
        # Three squares of side `scale` along the long side: left/top, centre, right/bottom.
        offsets = sorted({c.square[1] if landscape else c.square[0] for c in at})
        assert offsets == [0, round((long - scale) / 2), long - scale]
        assert all(c.square[2] == scale and (c.square[0] if landscape else c.square[1]) == 0 for c in at)
        for i in range(3):
            top, left, side = at[6 * i].square
            far = side - 224
            mid = far // 2  # far is even at every paper scale
            expected = [(top, left), (top, left + far), (top + far, left), (top + far, left + far),
                        (top + mid, left + mid)]  # fmt: skip
            assert [c.box[:2] for c in at[6 * i : 6 * i + 5]] == expected
            assert all(c.box[2:] == (224, 224) and not c.full for c in at[6 * i : 6 * i + 5])
            assert at[6 * i + 5].full and at[6 * i + 5].box == (top, left, side, side)  # the whole square
    if landscape:  # the numbers by hand at 256: resized 256x341, squares at x = 0, 42, 85
        assert [c.square for c in crops[:18:6]] == [(0, 0, 256), (0, 42, 256), (0, 85, 256)]
        assert crops[1].box == (0, 32, 224, 224) and crops[4].box == (16, 16, 224, 224)


@pytest.mark.parametrize("height, width", [(300, 400), (400, 300)])
def test_the_144_crop_transform_cuts_those_boxes(height, width):
    image = torch.randint(0, 256, (3, height, width), dtype=torch.uint8)
    out = MultiCrop()(image)
    assert out.shape == (144, 3, 224, 224) and out.dtype == torch.uint8
    assert torch.equal(out[72:], out[:72].flip(-1))  # the mirror images
    crops = crop_boxes(height, width)
    for i in (0, 3, 4, 5, 40, 71):  # corners, centre, the full square, at other scales and squares
        c = crops[i]
        resized = F.resize(image, [c.scale], antialias=True)
        assert resized.shape[-2:] == (
            (c.scale, int(c.scale * 4 / 3)) if width > height else (int(c.scale * 4 / 3), c.scale)
        )
        top, left, h, w = c.box
        cut = resized[:, top : top + h, left : left + w]
        assert torch.equal(out[i], F.resize(cut, [224, 224], antialias=True) if c.full else cut), c


def test_the_single_crop_is_the_training_evaluation_transform():
    image = torch.randint(0, 256, (3, 300, 410), dtype=torch.uint8)
    mean, std = (0.5, 0.4, 0.3), (0.2, 0.25, 0.3)
    ours = Normalize(mean, std)(to_unit_float(SingleCrop(256, 224)(image)))
    assert ours.shape == (1, 3, 224, 224)
    assert torch.equal(ours[0], eval_transform(224, 256, mean, std)(image))


class FixedLogits(nn.Module):
    def __init__(self, logits: torch.Tensor):
        super().__init__()
        self.logits, self.num_classes = logits, logits.shape[-1]

    def forward(self, x):  # x: [B * crops, ...]; the same logits per crop position
        return self.logits.reshape(-1, self.num_classes)[: len(x)]


def test_an_ensemble_averages_probabilities_over_crops_then_members_not_logits():
    a = torch.tensor([[[0.0, 10.0, 0.0], [0.0, 8.0, 0.0]]])  # [1 image, 2 crops, 3 classes]: sure of 1
    b = torch.tensor([[[3.0, 0.0, 0.0], [1.0, 0.0, 0.0]]])  # unsure, leaning to 0
    expected = (a.softmax(-1).mean(1) + b.softmax(-1).mean(1)) / 2
    assert torch.allclose(average_probabilities([a, b]), expected)
    assert not torch.allclose(expected, ((a + b) / 2).mean(1).softmax(-1), atol=1e-3)  # not logits
    members = [Member(FixedLogits(t), nn.Identity(), str(i), "m") for i, t in enumerate((a, b))]
    probs = EnsembleClassifier(members)(torch.zeros(1, 2, 3, 4, 4, dtype=torch.uint8))
    assert torch.allclose(probs, expected) and torch.allclose(probs.sum(-1), torch.ones(1))


def test_eval_main_writes_eval_json_for_144_crops(tiny_run, val_root, tmp_path, capsys):
    """src/eval.py's main, Hydra's included, in this process."""
    ckpt = tiny_run / "checkpoints" / "best.ckpt"
    status = train_main(f"ckpt={ckpt}", "data=imagenet", f"data.root={val_root}", "eval.crops=144", f"runs_root={tmp_path}",
                        *TINY, script="eval.py")  # fmt: skip
    out_err = capsys.readouterr()
    assert status == 0, out_err.err[-3000:]
    out = tmp_path / "eval" / "imagenet" / "tiny-r-best-144crops"  # the stable default folder
    record = json.loads((out / "eval.json").read_text())
    assert set(record) == KEYS
    assert record["num_images"] == sum(PER_CLASS) and record["world_size"] == 1
    assert record["precision"] == "32-true"  # trainer.precision=auto evaluates in float32
    assert (record["protocol"], record["crops"], record["members"]) == ("144 crops", 144, 1)
    assert (
        record["checkpoints"] == [str(ckpt)]
        and record["model"] == "mnist_mlp_bn"
        and record["weights"] == "run"
    )
    assert record["top1_err"] == pytest.approx(1 - record["top1_acc"]) and 0 <= record["top5_err"] <= 1
    assert "top-1 error" in out_err.out and str(out / "eval.json") in out_err.out


def reference_top1(ckpts, val_root, crops) -> float:
    """Top-1 by a plain loop: each member's softmax averaged over crops, then over members."""
    from bnrepro.evaluation.data import val_samples
    from bnrepro.evaluation.members import load_run_member

    members = [load_run_member(c) for c in ckpts]
    from bnrepro.config.build import build

    _, samples = val_samples(
        build(compose_eval("data=imagenet", f"data.root={val_root}").data, "data", seed=0), 7
    )
    hits = 0
    with torch.no_grad():
        for path, label in samples:
            from bnrepro.data.images import load_rgb

            x = to_unit_float(crops(load_rgb(path)))
            probs = torch.stack([m.net(m.preprocess(x)).softmax(-1).mean(0) for m in members]).mean(0)
            hits += int(probs.argmax()) == label
    return hits / len(samples)


def test_an_ensemble_in_process_matches_a_plain_loop(tiny_run, val_root, tmp_path):
    ckpts = [tiny_run / "checkpoints" / "best.ckpt", tiny_run / "checkpoints" / "population.ckpt"]
    cfg = compose_eval(
        f"eval.ensemble=[{ckpts[0]},{ckpts[1]}]",
        "data=imagenet",
        f"data.root={val_root}",
        "eval.crops=144",
        *TINY,
    )
    assert cfg.out.startswith("runs/eval/imagenet/ensemble2-") and cfg.out.endswith("-144crops")
    record = evaluate(cfg, tmp_path / "out")
    assert record["members"] == 2 and record["checkpoints"] == [str(c) for c in ckpts]
    assert record["num_images"] == sum(PER_CLASS)
    assert record["top1_acc"] == pytest.approx(reference_top1(ckpts, val_root, MultiCrop((9, 10, 11, 12), 8)))
    assert json.loads((tmp_path / "out" / "eval.json").read_text()) == record


@pytest.mark.slow  # ~26 s on 2 CPU cores: three Python processes importing Lightning
def test_ddp_on_two_cpu_processes_counts_every_image_once(tiny_run, val_root, tmp_path):
    ckpt = tiny_run / "checkpoints" / "best.ckpt"
    single = evaluate(
        compose_eval(f"ckpt={ckpt}", "data=imagenet", f"data.root={val_root}", *TINY), tmp_path / "one"
    )
    r = eval_cli(f"ckpt={ckpt}", "data=imagenet", f"data.root={val_root}", f"out={tmp_path / 'ddp'}", *TINY, "trainer.devices=2",
                 "trainer.strategy=ddp", "eval.batch_size=2", timeout=400)  # fmt: skip
    assert r.returncode == 0, r.stderr[-3000:]
    ddp = json.loads((tmp_path / "ddp" / "eval.json").read_text())
    assert ddp["world_size"] == 2 and ddp["num_images"] == single["num_images"] == sum(PER_CLASS)
    assert (ddp["top1_acc"], ddp["top5_acc"]) == (single["top1_acc"], single["top5_acc"])


def test_a_missing_checkpoint_exits_2_naming_it(tmp_path, val_root, capsys):
    missing = tmp_path / "runs" / "x" / "checkpoints" / "best.ckpt"
    status = train_main(f"ckpt={missing}", "data=imagenet", f"data.root={val_root}", f"out={tmp_path / 'out'}", *TINY,
                        script="eval.py")  # fmt: skip
    err = capsys.readouterr().err
    assert status == 2 and f"{missing}: no such checkpoint" in err, err[-3000:]
    assert not (tmp_path / "out" / "eval.json").exists()


def test_a_corrupt_checkpoint_or_a_run_without_config_is_named(tiny_run, tmp_path):
    bad = tmp_path / "r" / "checkpoints" / "best.ckpt"
    bad.parent.mkdir(parents=True)
    bad.write_bytes((tiny_run / "checkpoints" / "best.ckpt").read_bytes()[:300])
    with pytest.raises(CheckpointError, match=f"{bad} is not a readable checkpoint"):
        load_run_member(bad)
    bad.write_bytes((tiny_run / "checkpoints" / "best.ckpt").read_bytes())  # readable, but no config.yaml
    with pytest.raises(CheckpointError, match=f"{tmp_path / 'r' / 'config.yaml'}: no such file"):
        load_run_member(bad)


def test_an_unreadable_image_stops_the_evaluation_naming_it(tiny_run, val_root, tmp_path):
    import shutil

    from bnrepro.data.images import ImageDataError

    root = tmp_path / "copy"
    shutil.copytree(val_root, root)
    bad = sorted((root / "val").glob("*/*.JPEG"))[3]
    bad.write_bytes(bad.read_bytes()[:100])
    cfg = compose_eval(
        f"ckpt={tiny_run / 'checkpoints' / 'best.ckpt'}", "data=imagenet", f"data.root={root}", *TINY
    )
    with pytest.raises(ImageDataError, match=str(bad)):
        evaluate(cfg, tmp_path / "out")
    assert not (tmp_path / "out" / "eval.json").exists()


def test_a_misspelled_key_or_a_bad_value_fails_at_start_up():
    with pytest.raises(Exception, match="eval.crop"):
        compose_eval("eval.crop=144")
    from bnrepro.evaluation.config import validate_eval

    for overrides, message in [
        (["ckpt=a.ckpt", "eval.crops=10"], "eval.crops=10"),
        (["ckpt=a.ckpt", "eval.ensemble=[b.ckpt]"], "set one of ckpt"),
        (["weights=caffe_port", "ckpt=a.ckpt"], "leave ckpt"),
        (["weights=caffe_port"], "choose its val set, e.g. data=imagenet"),
    ]:
        with pytest.raises(ConfigError, match=message):
            validate_eval(compose_eval(*overrides))
    from bnrepro.evaluation.config import validate_crops

    cfg = compose_eval("ckpt=a.ckpt", "data=imagenet", "eval.crops=144", "eval.scales=[256,288]")
    with pytest.raises(ConfigError, match="4 shorter sides"):
        validate_crops(cfg.eval, cfg.data)


def test_caffe_port_weights_on_a_subset_of_imagenet_classes(monkeypatch, val_root, tmp_path):
    """The port's interface, faked: a 1000-class net that always says ImageNet class 100 (wnids()[1])."""
    calls = []

    class Always100(nn.Module):
        def __init__(self):
            super().__init__()
            self.last_linear = nn.Linear(3, 1000)  # no num_classes attribute: read from the last layer

        def forward(self, x):
            calls.append(x.clone())
            return nn.functional.one_hot(torch.full((len(x),), 100), 1000).float() * 10

    def caffe_preprocess(x):
        return x.flip(1) * 255 - torch.tensor([104.0, 117.0, 128.0]).view(1, 3, 1, 1)

    fake = types.SimpleNamespace(
        load_caffe_port=lambda source=None: (Always100(), {}), caffe_preprocess=caffe_preprocess
    )
    monkeypatch.setitem(sys.modules, "bnrepro.models.caffe_port", fake)
    cfg = compose_eval(
        "weights=caffe_port",
        "weights_path=/w/bn_inception.pth",
        "data=imagenet",
        f"data.root={val_root}",
        *TINY,
    )
    assert cfg.out == "runs/eval/imagenet/caffe_port-bn_inception-1crop"
    record = evaluate(cfg, tmp_path / "out")
    assert (
        record["checkpoints"] == ["caffe_port:/w/bn_inception.pth"]
        and record["model"] == "bn_inception (caffe port)"
    )
    assert record["top1_acc"] == pytest.approx(
        PER_CLASS[1] / sum(PER_CLASS)
    )  # labels mapped to ImageNet's 1000
    assert calls and calls[0].min() < 0 and calls[0].max() > 100  # the port's BGR 0-255 input, not mean/std
