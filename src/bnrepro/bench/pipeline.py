"""ImageNet input pipeline, images/s: the project's CPU-worker pipeline vs decoding on the training device.

Writes --images real JPEGs (class-folder layout, ImageNet-like sizes, ~100 KB each at quality 90) to a
temporary folder, then times two ways of turning them into distorted, normalised training batches on
--device, both with conf/augment/full.yaml's distortions:

    cpu_workers  the project's own: ImageFolderDataModule's training loader (--workers DataLoader workers
                 each decode and distort a whole mini-batch, data/images.py), pinned memory, copy to device
    gpu_decode   the workers only read the file bytes; the main process decodes and distorts the batch on
                 the device (data/gpu_decode.py: nvjpeg on CUDA)

Each path: one warm-up batch timed alone (worker start-up, nvjpeg and kernel initialisation), then
--steps batches timed after skipping the 2 x workers batches prefetched meanwhile (they come too fast).
The files were just written, so they come from the page cache: this measures decoding and distortion,
not the disk.

    python -m bnrepro.bench.pipeline [--images 1024] [--workers 8] [--batch 256] [--steps 24]
                                     [--device cuda|cpu] [--threads 1] [--tiny]
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as Fn
from omegaconf import OmegaConf
from torch.utils.data import DataLoader, Dataset
from torchvision.io import encode_jpeg, read_file, write_file

from bnrepro.bench import sync
from bnrepro.compose import compose_train
from bnrepro.config.build import build
from bnrepro.data.device_loader import own_generator
from bnrepro.data.gpu_decode import GPUDecodeAugment
from bnrepro.data.prepare import DEFAULT_SHORT_SIDE
from bnrepro.provenance import hardware

# (height, width) of typical ImageNet photos, landscape ones the most common; mean ~0.2 megapixels.
SIZES = ((375, 500), (375, 500), (375, 500), (333, 500), (500, 375), (500, 333), (500, 500), (400, 500),
         (480, 640), (600, 800))  # fmt: skip
NUM_CLASSES, DISTINCT = 10, 64
PREFETCH = 2  # DataLoader's default prefetch_factor


def natural_image(height: int, width: int, gen: torch.Generator) -> torch.Tensor:
    """uint8 [3, H, W]: noise summed over octaves (coarse to fine, each bilinearly upsampled), colour
    channels correlated. The fine-octave weight sets the entropy: ~100 KB at 500x375, quality 90, which is
    ImageNet's mean file size (the JPEG entropy decode is much of the decode time)."""
    levels = max(1, (max(height, width) // 4).bit_length())
    img = torch.zeros(1, 3, 1, 1)
    for level in range(levels, -1, -1):
        size = (max(1, -(-height >> level)), max(1, -(-width >> level)))
        img = Fn.interpolate(img, size=size, mode="bilinear", align_corners=False)
        noise = torch.randn(1, 3, *size, generator=gen)
        noise[:, 1:] = 0.6 * noise[:, :1] + 0.4 * noise[:, 1:]
        img += noise * 2.0 ** (0.3 * level)
    img = (img - img.mean()) / img.std() * 55 + 115
    return img.clamp(0, 255).round().to(torch.uint8)[0]


def write_jpegs(root: Path, n: int, tiny: bool = False, seed: int = 0) -> list[tuple[int, int]]:
    """n JPEGs as <root>/train/<class>/<i>.jpg (a quarter of the size if tiny); returns (bytes, pixels)
    per file. DISTINCT images are generated and cycled through: decode time depends on size and entropy,
    not on whether a file repeats another."""
    gen = torch.Generator().manual_seed(seed)
    pool = []
    for k in range(min(n, DISTINCT)):
        h, w = (s // 4 if tiny else s for s in SIZES[k % len(SIZES)])
        pool.append((encode_jpeg(natural_image(h, w, gen), quality=90), h * w))
    for c in range(NUM_CLASSES):
        (root / "train" / f"c{c:03d}").mkdir(parents=True)
    for i in range(n):
        write_file(str(root / "train" / f"c{i % NUM_CLASSES:03d}" / f"{i:06d}.jpg"), pool[i % len(pool)][0])
    # The data module checks val/ against train/; no val batch is read here.
    (root / "val").symlink_to(root / "train", target_is_directory=True)
    return [(pool[i % len(pool)][0].numel(), pool[i % len(pool)][1]) for i in range(n)]


class EncodedBatches(Dataset):
    """Indexed by one mini-batch's indices: (all its files' bytes concatenated, their lengths, labels).

    One tensor per batch, not one per image: each tensor a worker sends costs a file descriptor, and
    2 x workers batches of 256 in flight would run into the open-file limit.
    """

    def __init__(self, samples):
        self.samples = samples

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, indices: list[int]):
        files = [read_file(self.samples[i][0]) for i in indices]
        lengths = torch.tensor([f.numel() for f in files])
        return torch.cat(files), lengths, torch.tensor([self.samples[i][1] for i in indices])


def worker_rates(loaders: dict[str, DataLoader], batches: int, rounds: int = 5) -> dict[str, float]:
    """Images/s of one worker's own work per loader: its data set indexed by its sampler's first `batches`
    mini-batches in this process (no workers, no transfer). The loaders take turns, `rounds` passes each,
    and each keeps its best pass: on a shared machine, the pass least disturbed by other processes, and
    every loader measured in the same minutes."""
    work = {name: list(itertools.islice(iter(loader.sampler), batches)) for name, loader in loaders.items()}
    best = dict.fromkeys(loaders, float("inf"))
    for _ in range(rounds):
        for name, loader in loaders.items():
            t0 = time.perf_counter()
            for idx in work[name]:
                loader.dataset[idx]
            best[name] = min(best[name], time.perf_counter() - t0)
    return {name: round(sum(len(i) for i in work[name]) / best[name], 1) for name in loaders}


def measure(loader: DataLoader, step, device: torch.device, skip: int) -> dict:
    """Runs `step` (batch -> images on the device) on every batch; times the first batch alone and the
    batches after `skip` more (the ones the workers prepared while the first was being made)."""
    t0 = time.perf_counter()
    batches = iter(loader)  # starts the workers: part of the warm-up
    step(next(batches))
    sync(device)
    warmup = time.perf_counter() - t0
    for _ in range(skip):
        step(next(batches))
    sync(device)  # the clock starts when everything queued so far has run
    t1, images = time.perf_counter(), 0
    for batch in batches:
        images += step(batch)
    sync(device)
    elapsed = time.perf_counter() - t1
    return {"warmup_s": round(warmup, 3), "images_per_s": round(images / elapsed, 1), "timed_images": images}


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--images", type=int, help="JPEG files written (default 1024; --tiny 32)")
    p.add_argument(
        "--workers", type=int, help="DataLoader workers (default 8, conf/data/imagenet.yaml; --tiny 1)"
    )
    p.add_argument("--batch", type=int, help="images per batch (default 256; --tiny 8)")
    p.add_argument("--steps", type=int, help="batches timed per path after warm-up (default 24; --tiny 3)")
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--threads", type=int, default=1, help="torch threads of the main process (workers: 1)")
    p.add_argument("--tiny", action="store_true", help="a few dozen small images: a smoke test in seconds")
    p.add_argument("--short-side", type=lambda v: None if v == "null" else int(v), nargs="+",
                   default=[DEFAULT_SHORT_SIDE], help="prepared sets' shorter sides to time (null: originals)")  # fmt: skip
    p.add_argument(
        "--prepare-workers", type=int, default=None, help="preparation processes (default: all cores)"
    )
    args = p.parse_args(argv)
    images = args.images or (32 if args.tiny else 1024)
    workers = args.workers if args.workers is not None else (1 if args.tiny else 8)
    batch = args.batch or (8 if args.tiny else 256)
    steps = args_steps(args)
    if images < batch:
        p.error(f"--images {images} is fewer than one batch of {batch}")
    device = torch.device(args.device)
    # One thread, like each worker: more would only contend with the workers for the cores (and
    # OpenMP's spinning threads slow down badly when the cores are oversubscribed).
    threads = torch.get_num_threads()
    torch.set_num_threads(args.threads)
    try:
        result = run(args, images, workers, batch, steps, device)
    finally:
        torch.set_num_threads(threads)
    print(json.dumps(result, indent=2))
    return result


def run(args, images: int, workers: int, batch: int, steps: int, device: torch.device) -> dict:
    skip = workers * PREFETCH

    with tempfile.TemporaryDirectory(prefix="bnrepro-pipeline-") as tmp:
        files = write_jpegs(Path(tmp), images, args.tiny)
        # The training data module of model=inception (GoogLeNet's distortions) on the written JPEGs.
        cfg = compose_train("model=inception", f"data.root={tmp}", f"data.num_classes={NUM_CLASSES}",
                            f"data.num_train_examples={images}", f"data.image_size={args.image_size}",
                            f"data.num_workers={workers}", f"data.pin_memory={device.type == 'cuda'}",
                            "data.persistent_workers=false", f"data.batch_size={batch}", f"data.eval_batch_size={batch}")  # fmt: skip
        data = build(cfg.data, "data", seed=0)
        augment = OmegaConf.to_container(cfg.augment, resolve=True)  # the GPU path's same distortions
        data.eval_every_steps = 1 + skip + steps
        data.prepare_data()
        data.setup("fit")

        def cpu_step(b) -> int:
            x, _labels = b[0].to(device, non_blocking=True), b[1].to(device, non_blocking=True)
            return x.shape[0]

        cpu = measure(data.train_dataloader(), cpu_step, device, skip)
        own = {"cpu_workers": data.train_dataloader()}  # each path's loader, for worker_rates

        gpu_augment = GPUDecodeAugment.from_augment(augment, device=device, image_size=args.image_size)
        # The same sampler (index stream) as the training loader. Not pinned: decode_jpeg reads the bytes
        # on the host and nvjpeg stages them in its own pinned buffers.
        raw = DataLoader(
            EncodedBatches(data.train_set.samples), sampler=data.train_sampler(images, as_list=True),
            batch_size=None, num_workers=workers, generator=own_generator(),
        )  # fmt: skip

        def gpu_step(b) -> int:
            flat, lengths, labels = b
            x, _labels = gpu_augment(list(flat.split(lengths.tolist()))), labels.to(device, non_blocking=True)
            return x.shape[0]

        gpu = measure(raw, gpu_step, device, skip)
        prepared = {side: measure_prepared(args, tmp, images, workers, batch, device, skip, side, own)
                    for side in args.short_side}  # fmt: skip
        rates = worker_rates(own, steps)
        cpu["worker_images_per_s"] = rates["cpu_workers"]
        for side, result in prepared.items():
            for name in ("workers_jitter", "device_jitter"):
                result[name]["worker_images_per_s"] = rates[f"{side}/{name}"]
                result[name]["worker_speedup"] = round(rates[f"{side}/{name}"] / rates["cpu_workers"], 2)

    return {
        "device": hardware(device),
        "cpu_count": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "threads": args.threads,
        "workers": workers, "batch": batch, "steps": steps, "images": images, "image_size": args.image_size,
        "mean_jpeg_kb": round(sum(b for b, _ in files) / images / 1e3, 1),
        "mean_megapixels": round(sum(px for _, px in files) / images / 1e6, 3),
        "cpu_workers": per_worker(cpu, workers), "gpu_decode": per_worker(gpu, workers),
        "prepared": prepared,
    }  # fmt: skip


def per_worker(result: dict, workers: int) -> dict:
    """images_per_s / workers: the loader's rate shared out (the main process's work included)."""
    return {**result, "images_per_s_per_worker": round(result["images_per_s"] / max(1, workers), 1)}


def measure_prepared(args, tmp: str, images: int, workers: int, batch: int, device, skip: int, side,
                     own: dict) -> dict:  # fmt: skip
    """Prepares the written JPEGs (shorter side `side`; None keeps them) and times data=imagenet_prepared's
    training loader: with the colour jitter in the workers, and on `device` after the transfer."""
    from bnrepro.data.prepare import prepare

    out = Path(tmp) / f"prepared-{side}"
    summary = prepare(tmp, out, short_side=side, val_short_side=None, num_workers=args.prepare_workers,
                      chunk_bytes="64MB")  # fmt: skip
    result = {"prepare_s": summary["seconds"]["train"],
              "prepare_images_per_s": round(images / summary["seconds"]["train"], 1),
              "mean_jpeg_kb": round(sum(p.stat().st_size for p in (out / "train").glob("*.bin")) / images / 1e3, 1)}  # fmt: skip
    for name, on_device in (("workers_jitter", False), ("device_jitter", True)):
        cfg = compose_train("model=inception", "data=imagenet_prepared", f"data.prepared={out}",
                            f"data.num_classes={NUM_CLASSES}", f"data.num_train_examples={images}",
                            f"data.image_size={args.image_size}", f"data.num_workers={workers}",
                            f"data.pin_memory={device.type == 'cuda'}", "data.persistent_workers=false",
                            f"data.batch_size={batch}", f"data.eval_batch_size={batch}",
                            f"data.device_color_jitter={on_device}")  # fmt: skip
        data = build(cfg.data, "data", seed=0)
        data.eval_every_steps = 1 + skip + args_steps(args)
        data.prepare_data()
        data.setup("fit")

        def step(b, data=data) -> int:
            x, _ = data.on_after_batch_transfer((b[0].to(device, non_blocking=True), b[1].to(device)), 0)
            return x.shape[0]

        result[name] = per_worker(measure(data.train_dataloader(), step, device, skip), workers)
        own[f"{side}/{name}"] = data.train_dataloader()
        if on_device:  # what the device's batched op costs here (on a GPU: a few ms per step)
            x = next(iter(data.train_dataloader()))[0].to(device)
            t0 = time.perf_counter()
            for _ in range(3):
                data.device_jitter(x, 0)
            sync(device)
            result[name]["device_op_images_per_s"] = round(3 * len(x) / (time.perf_counter() - t0), 1)
    return result


def args_steps(args) -> int:
    return args.steps or (3 if args.tiny else 24)


if __name__ == "__main__":
    main()
