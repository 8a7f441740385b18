"""`just prepare` (data/prepare.py) and data=imagenet_prepared (data/prepared.py) on tiny folders the tests
write: odd files, counts and the report, a killed preparation, training, DDP coverage, resume, bad URLs."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
from test_eval import tiny_run  # noqa: F401  (the fixture: a finished tiny run folder)
from test_imagenet_data import CLASSES, imagenet_overrides, write_imagenet

from bnrepro.data.images import ImageDataError
from bnrepro.data.prepare import MARKER, REPORT, PrepareError, main, prepare
from bnrepro.run import train
from conftest import build_data, compose_train


def write_odd_imagenet(root: Path) -> tuple[Path, list[Path]]:
    """write_imagenet's folder (CMYK, PNG named .JPEG, grayscale) plus a truncated and an empty JPEG."""
    write_imagenet(root)
    good = root / "train" / CLASSES[1] / f"{CLASSES[1]}_3.JPEG"
    truncated = root / "train" / CLASSES[1] / "truncated.JPEG"
    truncated.write_bytes(good.read_bytes()[:200])
    empty = root / "train" / CLASSES[0] / "empty.JPEG"
    empty.write_bytes(b"")
    return root, [truncated, empty]


@pytest.fixture(scope="module")
def prepared(tmp_path_factory) -> tuple[Path, Path, list[Path]]:
    """(source, prepared folder, the unreadable files) -- prepared once for the module's tests."""
    tmp = tmp_path_factory.mktemp("prepared")
    source, bad = write_odd_imagenet(tmp / "imagenet")
    out = tmp / "imagenet-prepared"
    prepare(source, out, short_side=32, val_short_side=40, num_workers=2, chunk_bytes="8kB")
    return source, out, bad


def chunks(folder: Path):
    from litdata import StreamingDataset

    return [StreamingDataset(str(folder))[i] for i in range(len(StreamingDataset(str(folder))))]


def test_prepare_keeps_every_readable_image_and_reports_the_rest(prepared):
    from torchvision.io import ImageReadMode, decode_jpeg

    source, out, bad = prepared
    summary = json.loads((out / MARKER).read_text())
    assert summary["classes"] == list(CLASSES)
    assert summary["images"] == {"train": 12, "val": 4} and summary["unreadable"] == {"train": 2, "val": 0}
    assert summary["per_class"] == {"train": [6, 6], "val": [2, 2]}
    report = (out / REPORT).read_text().splitlines()
    assert report[0] == "split\tpath\treason" and len(report) == 3
    reasons = {line.split("\t")[1]: line.split("\t")[2] for line in report[1:]}
    assert set(reasons) == {str(p) for p in bad}
    assert "empty file" in reasons[str(bad[1])] and "cannot decode" in reasons[str(bad[0])]
    items = chunks(out / "train")
    assert sorted(int(i["label"]) for i in items) == [0] * 6 + [1] * 6
    for item in items:  # CMYK, grayscale and PNG all stored as RGB-decodable JPEGs, shorter side 32
        data = bytes(item["image"])
        assert data[:3] == b"\xff\xd8\xff"
        image = decode_jpeg(torch.frombuffer(bytearray(data), dtype=torch.uint8), mode=ImageReadMode.RGB)
        assert min(image.shape[1:]) == 32
    assert all(min(decode_jpeg(torch.frombuffer(bytearray(i["image"]), dtype=torch.uint8)).shape[1:]) == 40
               for i in chunks(out / "val"))  # fmt: skip
    assert not list(out.glob("*.partial")) and not list(out.glob(".logs-*"))


def test_a_finished_set_is_reused_and_other_parameters_are_refused(prepared):
    source, out, _ = prepared
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*")}
    assert prepare(source, out, short_side=32, val_short_side=40)["images"]["train"] == 12
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*")} == before
    with pytest.raises(PrepareError, match="already a prepared set with other parameters"):
        prepare(source, out, short_side=64, val_short_side=40)


def test_a_killed_prepare_is_refused_by_training_and_resumes(tmp_path, monkeypatch):
    import bnrepro.data.prepare as prep

    source = write_imagenet(tmp_path / "imagenet")
    out = tmp_path / "out"
    real = prep._prepare_split

    def killed_in_val(split, *args):
        if split == "val":
            (out / "val.partial").mkdir()
            (out / "val.partial" / "chunk-0-0.bin").write_bytes(b"half")
            raise KeyboardInterrupt  # as a kill would: nothing after this runs
        return real(split, *args)

    monkeypatch.setattr(prep, "_prepare_split", killed_in_val)
    with pytest.raises(KeyboardInterrupt):
        prepare(source, out, short_side=32, num_workers=1)
    assert not (out / MARKER).exists() and (out / "train.json").exists()

    cfg = compose_train(*prepared_overrides(out, tmp_path / "runs"))
    with pytest.raises(PrepareError, match=f"{out}: not a prepared data set .*did not finish"):
        build_data(cfg, eval_every_steps=1).prepare_data()

    monkeypatch.setattr(prep, "_prepare_split", real)
    train_mtime = (out / "train.json").stat().st_mtime_ns
    summary = prepare(source, out, short_side=32, num_workers=1)
    assert summary["images"] == {"train": 12, "val": 4} and (out / MARKER).exists()
    assert (out / "train.json").stat().st_mtime_ns == train_mtime  # the finished split was kept
    assert not (out / "val.partial").exists() and len(chunks(out / "val")) == 4


def test_a_class_count_that_does_not_add_up_is_an_error(tmp_path, monkeypatch):
    import bnrepro.data.prepare as prep

    source = write_imagenet(tmp_path / "imagenet")
    monkeypatch.setattr(prep, "_read_logs", lambda log_dir: (prep.Counter({0: 6, 1: 5}), []))
    with pytest.raises(
        PrepareError, match=f"class {CLASSES[1]} has 6 images in the folder but 5 were written"
    ):
        prepare(source, tmp_path / "out", short_side=32, num_workers=1)
    assert not (tmp_path / "out" / MARKER).exists() and not (tmp_path / "out" / "train").exists()


def prepared_overrides(out: Path, runs: Path) -> list[str]:
    keep = [o for o in imagenet_overrides(out, runs) if not o.startswith(("data=", "data.root="))]
    return ["data=imagenet_prepared", f"data.prepared={out}", "data.num_train_examples=12", *keep]


def test_training_from_chunks_runs_a_few_steps(prepared, tmp_path):
    _, out, _ = prepared
    cfg = compose_train(*prepared_overrides(out, tmp_path / "runs"), "trainer.max_steps=3")
    dm = build_data(cfg, eval_every_steps=1)
    dm.prepare_data()
    dm.setup()
    x, y = next(iter(dm.train_dataloader()))  # the workers' crops; jitter and normalise on the device
    assert x.shape == (4, 3, 32, 32) and x.dtype == torch.uint8 and set(y.tolist()) <= {0, 1}
    x, y = dm.on_after_batch_transfer((x, y), 0)
    assert x.dtype == torch.float32 and x.min() < -0.5 and x.max() > 0.5
    assert sum(len(b[1]) for b in dm.val_dataloader()) == 4
    s = train(cfg, tmp_path / "runs" / "r")
    assert s["status"] == "finished" and s["steps"] == 3 and "population_acc" in s


@pytest.mark.parametrize("where", ["missing_folder", "unreachable_url"])
def test_a_set_that_cannot_be_read_is_a_clear_error(tmp_path, monkeypatch, where):
    if where == "missing_folder":
        location, message = str(tmp_path / "nowhere"), "not a prepared data set .does not exist"
    else:
        monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")  # nothing listens there
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", "x")
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "y")
        location, message = "s3://no-such-bucket/imagenet-prepared", "cannot read the prepared set's marker"
    cfg = compose_train(*prepared_overrides(location, tmp_path / "runs"))
    with pytest.raises(ImageDataError, match=message) as e:
        build_data(cfg, eval_every_steps=1).prepare_data()
    assert location in str(e.value)


def _one_pass_on_rank(rank: int, out: str, result: str, init: str) -> None:
    """One rank of a 2-process gloo group: reads one pass of the training stream through DataLoader
    workers and gathers every example's fingerprint (augment=none: the deterministic centre crop)."""
    import types

    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=2)
    cfg = compose_train(*prepared_overrides(Path(out), Path(result).parent / "runs"), "augment=none",
                        "data.batch_size=2")  # fmt: skip
    dm = build_data(cfg, eval_every_steps=3)  # 12 examples / global batch 4 = 3 steps: one pass
    dm.trainer = types.SimpleNamespace(global_rank=rank, world_size=2, global_step=0)
    dm.prepare_data()
    dm.setup()
    mine = [
        (round(float(x.double().sum()), 2), int(y))
        for xb, yb in dm.train_dataloader()
        for x, y in zip(xb, yb)
    ]
    everyone = [None, None]
    dist.all_gather_object(everyone, mine)
    if rank == 0:
        Path(result).write_text(json.dumps(everyone))
    dist.destroy_process_group()


@pytest.mark.slow
def test_two_process_ddp_reads_every_example_once_per_pass_and_no_overlap(prepared, tmp_path):
    import torch.multiprocessing as mp

    _, out, _ = prepared
    result = tmp_path / "ranks.json"
    init = f"file://{tmp_path / 'rendezvous'}"
    mp.spawn(_one_pass_on_rank, args=(str(out), str(result), init), nprocs=2, join=True)
    ranks = json.loads(result.read_text())
    assert [len(r) for r in ranks] == [6, 6]
    fingerprints = [tuple(e) for r in ranks for e in r]
    assert not {tuple(e) for e in ranks[0]} & {tuple(e) for e in ranks[1]}
    # the 12 images of the set, each once: the same fingerprints as one process reading them all in order
    cfg = compose_train(*prepared_overrides(out, tmp_path / "runs"), "augment=none")
    dm = build_data(cfg, eval_every_steps=1)
    dm.setup()
    alone = [
        (round(float(x.double().sum()), 2), int(y))
        for x, y in (dm.train_set[i] for i in range(len(dm.train_set)))
    ]
    assert sorted(fingerprints) == sorted(alone) and len(set(alone)) == 12


@pytest.fixture
def step_losses(monkeypatch):
    from bnrepro.lit.classifier import ClassifierModule

    losses: list[float] = []
    original = ClassifierModule.training_step

    def recording(self, batch, batch_idx):
        out = original(self, batch, batch_idx)
        losses.extend(out.reshape(-1).tolist())
        return out

    monkeypatch.setattr(ClassifierModule, "training_step", recording)
    return losses


def test_resume_from_chunks_equals_the_uninterrupted_run(prepared, tmp_path, step_losses):
    from test_resume import assert_same_run

    _, out, _ = prepared
    runs = tmp_path / "runs"
    overrides = [
        o for o in prepared_overrides(out, runs) if not o.startswith(("trainer.max_steps", "loop.eval"))
    ]
    # An uneven schedule (evaluations at 1, 2, 4, 8, 9): the loaders, workers and all, are made anew each
    # period (run.py), and the batches still depend only on (seed, step).
    overrides += ["trainer.max_steps=9", "loop.eval_every_steps=4", "data.num_workers=2",
                  "loop.early_eval_every_steps=1", "loop.early_eval_until_steps=2"]  # fmt: skip
    straight_cfg = compose_train(*overrides, "run_name=straight")
    assert train(straight_cfg, runs / straight_cfg.task / "straight")["eval_steps"] == [1, 2, 4, 8, 9]
    reference = list(step_losses)
    step_losses.clear()
    run_dir = runs / straight_cfg.task / "resumed"
    stopped = train(compose_train(*overrides, "run_name=resumed", "testing.stop_at_step=6"), run_dir)
    assert stopped["status"] == "preempted" and stopped["steps"] == 6
    again = train(compose_train(*overrides, "run_name=resumed"), run_dir)
    assert again["status"] == "finished" and again["resumed_at_steps"] == [6]
    assert step_losses == reference
    assert_same_run(runs / straight_cfg.task / "straight", run_dir)


def test_prepare_command_line_writes_next_to_the_source(tmp_path):
    source = write_imagenet(tmp_path / "imagenet")
    summary = main(["imagenet", f"data.root={source}", "prepare.short_side=null", "prepare.workers=1"])
    assert summary["short_side"] is None and summary["images"]["train"] == 12
    assert (Path(f"{source}-prepared") / MARKER).exists() and os.path.isdir(f"{source}-prepared/val")


def test_eval_reads_prepared_val_chunks_as_it_reads_the_folder(tmp_path, tiny_run):  # noqa: F811
    """src/eval.py's evaluate() on data=imagenet_prepared: the same images (JPEGs stored as they are), the
    same record as from the val/ folder, single crop and 144 crops."""
    import numpy as np
    from PIL import Image
    from test_eval import PER_CLASS, TINY, compose_eval, wnids

    from bnrepro.evaluation.evaluate import evaluate

    root, rng = tmp_path / "imagenet", np.random.default_rng(0)
    for c, (wnid, n) in enumerate(zip(wnids(), PER_CLASS)):
        (root / "val" / wnid).mkdir(parents=True)
        for i in range(n):
            size = (10 + c, 14) if i % 2 == 0 else (15, 11 + c)
            Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8)).save(
                root / "val" / wnid / f"{i}.JPEG"
            )
    (root / "train").symlink_to(root / "val", target_is_directory=True)
    prepare(root, tmp_path / "prepared", short_side=None, val_short_side=None, num_workers=1)
    run = tiny_run
    for crops in (1, 144):
        common = [f"ckpt={run / 'checkpoints' / 'best.ckpt'}", f"eval.crops={crops}", *TINY]
        folder = evaluate(
            compose_eval(*common, "data=imagenet", f"data.root={root}"), tmp_path / f"folder{crops}"
        )
        chunks = evaluate(
            compose_eval(*common, "data=imagenet_prepared", f"data.prepared={tmp_path / 'prepared'}"),
            tmp_path / f"chunks{crops}",
        )
        assert chunks["num_images"] == folder["num_images"] == sum(PER_CLASS)
        assert chunks["data_root"] == str(tmp_path / "prepared")
        assert (chunks["top1_acc"], chunks["top5_acc"]) == (folder["top1_acc"], folder["top5_acc"])


def test_prepare_refuses_a_url_as_output_and_says_how_to_get_there(tmp_path):
    with pytest.raises(PrepareError, match="writes a local folder; copy it to the bucket"):
        prepare(write_imagenet(tmp_path / "imagenet"), "s3://bucket/imagenet-prepared", short_side=224)


def test_a_prepare_killed_by_a_signal_starts_its_split_over_and_finishes(tmp_path):
    """SIGKILL to the whole process group (the command and LitData's workers) while train/ is being
    written; the same command again gives a complete set."""
    import signal
    import subprocess
    import sys
    import time

    from conftest import ROOT

    source = write_imagenet(tmp_path / "imagenet", per_class=150)  # 300 train images: a few seconds
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "bnrepro.data.prepare", "imagenet", f"data.root={source}",
           f"prepare.output={out}", "prepare.short_side=32", "prepare.workers=2"]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT / "src")}
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)  # fmt: skip
    deadline = time.time() + 120
    while not list((out / ".logs-train").glob("*.tsv")) and time.time() < deadline:
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (out / MARKER).exists() and not (out / "train.json").exists()
    main(cmd[3:])  # the same command again, in this process: only the kill needs a process
    summary = json.loads((out / MARKER).read_text())
    assert summary["images"] == {"train": 300, "val": 4} and summary["per_class"]["train"] == [150, 150]
    assert len(chunks(out / "train")) == 300 and not list(out.glob("*.partial"))
