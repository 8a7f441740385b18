"""Class-folder image sets (ImageNet, Imagenette) -> prepared chunks that training streams (data/prepared.py).

    just prepare imagenet [data.root=...] [prepare.output=...] [prepare.short_side=...]
    python -m bnrepro.data.prepare imagenette [overrides]

Writes, with LitData's `optimize` (one process per CPU core by default; its progress bar gives images/s
and the ETA):

    <output>/train/, <output>/val/   LitData chunks + index.json: {"image": JPEG bytes, "label": int}
    <output>/unreadable.tsv          split, path, reason of every image that could not be decoded
    <output>/prepared.json           classes, per-class counts, parameters; written last, so its presence
                                     means the set is complete (training refuses a folder without it)

Train images are resized so the shorter side is `short_side` (never enlarged; null keeps the
originals' pixels) and stored as JPEG; val keeps `val_short_side` (352, the largest scale of the
144-crop protocol) for src/eval.py. A file that is already a JPEG of the right size is stored as it is.

Nothing is lost silently: each worker logs every image it wrote or could not read, and a split is
accepted only when, for every class, written + unreadable equals the folder's count and the chunks'
index holds every written image. A split is written into <split>.partial/ and renamed when checked, so
a killed preparation resumes at the first split not finished and never leaves a half-made split under
its final name. A finished set with the same parameters is reused.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from collections import Counter
from functools import partial
from pathlib import Path

import torch
from torchvision.io import encode_jpeg
from torchvision.transforms.v2 import functional as F

from bnrepro.data.images import ImageDataError, decode_rgb, scan_class_folders

# What the reader checks lives with the reader (data/prepared.py), below this command.
from bnrepro.data.prepared import MARKER, PrepareError, one_line, read_marker  # noqa: F401  (re-exported)
from bnrepro.provenance import write_json_atomic  # a reader sees the old file, the new one, or none

REPORT = "unreadable.tsv"
FORMAT = 1  # version of the layout above; prepared.json records it
SPLITS = ("train", "val")
JPEG_MAGIC = b"\xff\xd8\xff"


_converted = 0  # images this worker process has converted (each forked worker counts its own)
PROGRESS_EVERY = 5000


def _count_converted() -> None:
    """A line per PROGRESS_EVERY images of a worker when stdout is not a terminal: LitData's bar is one
    line of carriage returns in a log file, and ImageNet takes hours."""
    global _converted
    _converted += 1
    if _converted % PROGRESS_EVERY == 0 and not sys.stdout.isatty():
        print(f"prepare: worker {os.getpid()}: {_converted} images converted", flush=True)


def convert(item: tuple[str, int], short_side: int | None, quality: int, log_dir: str):
    """One (path, label) -> at most one {"image": JPEG bytes, "label": label} (a LitData worker's fn).

    Logs the outcome to <log_dir>/<pid>.tsv ("ok" or "bad" with the path and reason); an unreadable
    image yields nothing.
    """
    _count_converted()
    path, label = item
    log = Path(log_dir) / f"{os.getpid()}.tsv"
    try:
        with open(path, "rb") as f:
            raw = f.read()
        encoded = (
            torch.frombuffer(bytearray(raw), dtype=torch.uint8) if raw else torch.empty(0, dtype=torch.uint8)
        )
        image = decode_rgb(encoded, path)
        height, width = image.shape[1:]
        resize = short_side is not None and min(height, width) > short_side
        if resize:
            image = F.resize(image, short_side, antialias=True)  # an int sets the shorter side
        if resize or not raw.startswith(JPEG_MAGIC):  # PNG named .JPEG, or resized: (re-)encode
            data = encode_jpeg(image, quality=quality).numpy().tobytes()
        else:
            data = raw
    except (ImageDataError, OSError) as err:
        with open(log, "a") as f:
            f.write(f"bad\t{label}\t{one_line(path)}\t{one_line(err)}\n")
        return
    with open(log, "a") as f:
        f.write(f"ok\t{label}\n")
    yield {"image": data, "label": label}


def _read_logs(log_dir: Path) -> tuple[Counter, list[tuple[int, str, str]]]:
    written, bad = Counter(), []
    for log in sorted(log_dir.glob("*.tsv")):
        for line in log.read_text().splitlines():
            kind, label, *rest = line.split("\t")
            if kind == "ok":
                written[int(label)] += 1
            else:
                bad.append((int(label), rest[0], rest[1]))
    return written, bad


def _params(short_side, val_short_side, quality) -> dict:
    return {"format": FORMAT, "short_side": short_side, "val_short_side": val_short_side, "quality": quality}


def _prepare_split(
    split: str, samples, classes, output: Path, side: int | None, quality: int, workers: int, chunk_bytes: str
) -> dict:
    from litdata import optimize  # ~2 s to import: only here and in the data module's setup

    partial_dir, log_dir = output / f"{split}.partial", output / f".logs-{split}"
    for stale in (partial_dir, log_dir):  # what a killed run left: this split starts over
        shutil.rmtree(stale, ignore_errors=True)
    log_dir.mkdir(parents=True)
    t0 = time.perf_counter()
    print(
        f"prepare: {split}: {len(samples)} images from {len(classes)} classes -> {output / split}", flush=True
    )
    optimize(
        fn=partial(convert, short_side=side, quality=quality, log_dir=str(log_dir)),
        inputs=[(str(p), label) for p, label in samples],
        output_dir=str(partial_dir),
        chunk_bytes=chunk_bytes,
        num_workers=min(workers, len(samples)),
        # fork: a spawned worker would import the package again (Lightning, Hydra: seconds each).
        start_method="fork",
        verbose=True,
    )
    seconds = time.perf_counter() - t0
    written, bad = _read_logs(log_dir)
    expected = Counter(label for _, label in samples)
    unread = Counter(label for label, _, _ in bad)
    wrong = [c for c in expected if written[c] + unread[c] != expected[c]]
    if wrong:
        c = wrong[0]
        raise PrepareError(
            f"{output / split}: class {classes[c]} has {expected[c]} images in the folder but {written[c]} were "
            f"written and {unread[c]} reported unreadable ({len(wrong)} classes differ); the preparation is "
            "incomplete. Run it again (it starts this split over)."
        )
    index = (
        json.loads((partial_dir / "index.json").read_text()) if (partial_dir / "index.json").exists() else {}
    )
    in_chunks = sum(chunk["chunk_size"] for chunk in index.get("chunks", []))
    if in_chunks != sum(written.values()):
        raise PrepareError(
            f"{partial_dir}: the chunks' index holds {in_chunks} images but {sum(written.values())} were "
            "written; run the preparation again (it starts this split over)."
        )
    shutil.rmtree(output / split, ignore_errors=True)
    partial_dir.rename(output / split)
    stats = {
        "images": sum(written.values()),
        "per_class": [written[c] for c in range(len(classes))],
        "unreadable": [
            {"path": p, "reason": r, "class": classes[c]} for c, p, r in sorted(bad, key=lambda b: b[1])
        ],
        "seconds": round(seconds, 1),
        "images_per_s": round(len(samples) / seconds, 1),
        "short_side": side,
    }
    write_json_atomic(output / f"{split}.json", stats)  # this split is done (read on resume)
    shutil.rmtree(log_dir)
    return stats


def prepare(
    source: str | Path,
    output: str | Path,
    short_side: int | None,
    val_short_side: int | None = 352,
    quality: int = 90,
    num_workers: int | None = None,
    chunk_bytes: str = "64MB",
) -> dict:
    """Prepares <source>/{train,val}/<class>/* into `output`; returns prepared.json's content."""
    if "://" in str(output):
        raise PrepareError(
            f"prepare.output={output}: preparation writes a local folder; copy it to the bucket afterwards "
            "(e.g. `aws s3 sync` / `gcloud storage rsync`) and train with data.prepared=<the URL>."
        )
    source, output = Path(source), Path(output)
    params = _params(short_side, val_short_side, quality)
    marker = output / MARKER
    if marker.exists():
        done = json.loads(marker.read_text())
        if {k: done.get(k) for k in params} != params:
            raise PrepareError(
                f"{output} is already a prepared set with other parameters "
                f"({ {k: done.get(k) for k in params} }); choose another prepare.output or delete it."
            )
        print(f"prepare: {output} is already prepared ({done['images']['train']} train images): reused")
        return done
    workers = num_workers or len(os.sched_getaffinity(0))
    scans = {split: scan_class_folders(source / split) for split in SPLITS}
    classes = scans["train"][0]
    if scans["val"][0] != classes:
        raise PrepareError(f"{source}: train/ and val/ have different class folders")
    output.mkdir(parents=True, exist_ok=True)
    stats = {}
    for split, side in (("train", short_side), ("val", val_short_side)):
        done = output / f"{split}.json"
        if done.exists() and (output / split).is_dir() and json.loads(done.read_text())["short_side"] == side:
            print(f"prepare: {split} was finished by an earlier run: kept", flush=True)
            stats[split] = json.loads(done.read_text())
            continue
        done.unlink(missing_ok=True)
        stats[split] = _prepare_split(
            split, scans[split][1], classes, output, side, quality, workers, chunk_bytes
        )
    with open(output / REPORT, "w") as f:
        f.write("split\tpath\treason\n")
        for split in SPLITS:
            f.writelines(f"{split}\t{u['path']}\t{u['reason']}\n" for u in stats[split]["unreadable"])
    summary = {
        **params,
        "source": str(source.resolve()),
        "classes": classes,
        "images": {split: stats[split]["images"] for split in SPLITS},
        "unreadable": {split: len(stats[split]["unreadable"]) for split in SPLITS},
        "per_class": {split: stats[split]["per_class"] for split in SPLITS},
        "seconds": {split: stats[split]["seconds"] for split in SPLITS},
    }
    write_json_atomic(marker, summary)
    return summary


def main(argv: list[str] | None = None) -> dict:
    """`python -m bnrepro.data.prepare <data set> [data.*=...] [prepare.*=...]`"""
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0].startswith("-") or "=" in argv[0]:
        raise SystemExit("usage: just prepare <imagenet|imagenette> [data.root=...] [prepare.output=...] "
                         "[prepare.short_side=N|null] [prepare.val_short_side=N|null] [prepare.workers=N]")  # fmt: skip
    import yaml

    from bnrepro.compose import compose_train
    from bnrepro.config.build import build

    ours = dict(arg.split("=", 1) for arg in argv[1:] if arg.startswith("prepare."))
    known = {"output", "short_side", "val_short_side", "quality", "workers"}
    options = {k.removeprefix("prepare."): yaml.safe_load(v) for k, v in ours.items()}
    if unknown := set(options) - known:
        raise SystemExit(f"prepare: unknown option(s) {sorted(unknown)}; known: {sorted(known)}")
    cfg = compose_train(f"data={argv[0]}", *(a for a in argv[1:] if not a.startswith("prepare.")))
    data = build(cfg.data, "data", seed=0)
    data.fetch()  # Imagenette downloads when missing
    source = data.data_dir
    summary = prepare(
        source,
        options.get("output") or f"{source}-prepared",
        short_side=options.get("short_side", DEFAULT_SHORT_SIDE),
        val_short_side=options.get("val_short_side", 352),
        quality=options.get("quality", 90),
        num_workers=options.get("workers"),
    )
    print(
        f"prepare: done: {summary['images']['train']} train, {summary['images']['val']} val images; "
        f"unreadable: {summary['unreadable']['train']} train, {summary['unreadable']['val']} val"
        + (f" (listed in {Path(options.get('output') or f'{source}-prepared') / REPORT})" if any(summary['unreadable'].values()) else "")
    )  # fmt: skip
    return summary


# Train images' shorter side: the smallest that is never below the 224 crop; measured 2.5-2.7x a folder
# worker's rate per worker, 256 2.1-2.3x (docs/benchmarks.md, "Prepared chunks").
DEFAULT_SHORT_SIDE = 224

if __name__ == "__main__":
    try:
        main()
    except ImageDataError as err:  # a bad folder, output or count: the message says what to do
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
