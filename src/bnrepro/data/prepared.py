"""ImageNet / Imagenette from prepared chunks (`just prepare`, data/prepare.py): a local folder or an
s3:// / gs:// URL, read with LitData (data=imagenet_prepared, data=imagenette_prepared).

    <prepared>/train/, <prepared>/val/   LitData chunks of {"image": JPEG bytes, "label": int}
    <prepared>/prepared.json             written last by the preparation: without it the set is refused

Why chunks: a worker reads one ~64 MB file instead of a thousand small ones, and the training images
were resized once (shorter side prepare.short_side) instead of being decoded at full size every epoch
(docs/data.md, "Prepared chunks", and docs/benchmarks.md measure what it gains).

The data order is the project's own step stream (StepChunkSampler, data/device_loader.py), not LitData's
shuffler: the sampler picks each global step's indices for this rank and a DataLoader worker reads them
from the chunks by index (StreamingDataset[i]). So `thorough` and `shard` shuffling keep their meaning,
the ranks' examples are disjoint with every example once per pass, and the position after a resume is a
function of the global step -- exact on any number of devices, with no loader state to save. The random
crops and flips of a mini-batch are drawn from a generator seeded by (seed, its indices), so they do not
depend on which worker made it nor on where the run was resumed.
"""

from __future__ import annotations

import json
import os
import warnings
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from omegaconf import MISSING
from torch.utils.data import Dataset

from bnrepro.config.schema import schema
from bnrepro.data.device_loader import own_generator
from bnrepro.data.gpu_decode import DeviceColorJitter
from bnrepro.data.image_batches import BatchedImages, ImageBatchLoader, UnreadableImage
from bnrepro.data.imagenet import ImageFolderDataConfig, ImageFolderDataModule
from bnrepro.data.images import ImageDataError, RandomResizedCropFlip, decode_rgb

MARKER = "prepared.json"  # written last by `just prepare` (data/prepare.py): a finished preparation


class PrepareError(ImageDataError):
    """A preparation that cannot be done or checked; the message names the folder and the fix."""


def one_line(text: str) -> str:
    return " ".join(str(text).split())  # one line, no tabs: the report is tab-separated


def read_marker(location: str) -> dict:
    """prepared.json of a prepared set (a folder or an s3:// / gs:// URL); refuses an unfinished one."""
    if "://" not in location:
        path = Path(location)
        if not (path / MARKER).exists():
            state = (
                "does not exist"
                if not path.exists()
                else "has no prepared.json: its preparation did not finish"
            )
            raise PrepareError(
                f"{path}: not a prepared data set ({state}). Run `just prepare <data set> "
                f"prepare.output={path}` (it resumes where it stopped) or point data.prepared elsewhere."
            )
        return json.loads((path / MARKER).read_text())
    return json.loads(_read_remote(location.rstrip("/") + "/" + MARKER, location))


def _read_remote(url: str, location: str) -> str:
    import tempfile

    from litdata.streaming.downloader import get_downloader

    with tempfile.TemporaryDirectory() as tmp:
        target = os.path.join(tmp, MARKER)
        try:
            get_downloader(location, tmp, []).download_file(url, target)
            return Path(target).read_text()
        except Exception as err:  # botocore / obstore / gcsfs raise their own kinds
            raise PrepareError(
                f"{url}: cannot read the prepared set's marker ({type(err).__name__}: {one_line(err)[:300]}). "
                "Check the URL, the credentials and the network; a set whose preparation did not finish has "
                "no prepared.json either."
            ) from err


@schema("data", "prepared_schema")
@dataclass
class PreparedDataConfig(ImageFolderDataConfig):
    """Prepared chunks; `root` names the class folders they were prepared from (`just prepare` reads it)."""

    _target_: str = "bnrepro.data.prepared.PreparedDataModule"
    prepared: str = MISSING  # the folder or s3:// / gs:// URL that `just prepare` wrote
    cache_dir: str | None = None  # where chunks read from a URL are kept (null: LitData's default)
    max_cache_size: str = "100GB"  # ... and how much of them (LitData evicts the oldest chunks)
    # Training batches leave the workers as uint8 crops; the colour jitter and normalisation run on the
    # training device after the transfer, one batched op (gpu_decode.DeviceColorJitter). false: all of
    # it in the workers, as data=imagenet does.
    device_color_jitter: bool = True


class PreparedImages(Dataset):
    """(image, label) of one split of a prepared set, decoded from its chunks and transformed.

    The LitData StreamingDataset is opened in the process that reads (each DataLoader worker its own).
    """

    def __init__(self, location: str, num_examples: int, transform, cache_dir, max_cache_size, labels=None):
        self.location, self.num_examples, self.transform = location, num_examples, transform
        self.labels = labels  # the network's output index of each stored label (evaluation); None: the same
        self.cache_dir, self.max_cache_size = cache_dir, max_cache_size
        self._chunks = None

    def __getstate__(self):
        return {**self.__dict__, "_chunks": None}  # each process opens its own

    @property
    def chunks(self):
        if self._chunks is None:
            from litdata import StreamingDataset

            try:
                self._chunks = StreamingDataset(
                    self.location, cache_dir=self.cache_dir, max_cache_size=self.max_cache_size
                )
            except Exception as err:  # a missing index.json, an unreachable bucket, bad credentials
                raise ImageDataError(
                    f"{self.location}: cannot open the prepared chunks ({type(err).__name__}: {err}). "
                    "Check the path or URL (and the credentials for a bucket); `just prepare` writes them."
                ) from err
            # len() of a StreamingDataset counts this rank's share under DDP; its chunk intervals hold all.
            total = sum(end - start for start, end in self._chunks.region_of_interest)
            if total != self.num_examples and self.labels is None:  # evaluation may take the first few
                raise ImageDataError(
                    f"{self.location}: the chunks hold {total} images but prepared.json says "
                    f"{self.num_examples}; the set was changed after its preparation: prepare it again."
                )
        return self._chunks

    def __len__(self) -> int:
        return self.num_examples

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        item = self.chunks[index]
        data = torch.frombuffer(bytearray(item["image"]), dtype=torch.uint8)
        label = int(item["label"]) if self.labels is None else self.labels[int(item["label"])]
        return self.transform(decode_rgb(data, f"{self.location} item {index}")), label


class SeededBatches(BatchedImages):
    """BatchedImages whose random distortions come from a generator seeded by (seed, the batch's indices):
    the same mini-batch gets the same crops whichever worker makes it and after any resume."""

    def __init__(self, dataset: Dataset, seed: int):
        super().__init__(dataset)
        self.seed = seed

    def __getitem__(self, indices: list[int]):
        key = zlib.crc32(np.asarray(indices, dtype=np.int64).tobytes())
        with torch.random.fork_rng(devices=[]):  # leaves the process's own stream (dropout's) untouched
            torch.manual_seed(self.seed * 1_000_003 + key)
            try:
                images, labels = zip(*(self.dataset[i] for i in indices))
            except ImageDataError as e:
                return UnreadableImage(str(e))  # ImageBatchLoader takes it off the stream
        if images[0].dtype == torch.uint8 and images[0].permute(1, 2, 0).is_contiguous():
            # Channels-last crops (RandomResizedCropFlip): stacked as [B, H, W, 3], a plain copy, and
            # handed on as a channels-last [B, 3, H, W] (the layout the convolutions want on a GPU).
            return torch.stack([im.permute(1, 2, 0) for im in images]).permute(0, 3, 1, 2), torch.tensor(
                labels
            )
        return torch.stack(images), torch.tensor(labels)


class PreparedDataModule(ImageFolderDataModule):
    """Prepared chunks of an ImageNet-layout set (data=imagenet_prepared, data=imagenette_prepared)."""

    def __init__(self, *, prepared: str, cache_dir: str | None, max_cache_size: str, device_color_jitter: bool,
                 **kwargs):  # fmt: skip
        super().__init__(**kwargs)  # root (the source folders), sizes, transforms, loader settings
        self.prepared = str(prepared).rstrip("/")
        self.cache_dir, self.max_cache_size = cache_dir, max_cache_size
        self._info: dict | None = None
        augment = kwargs["augment"]
        self.device_jitter = None
        if device_color_jitter and augment["name"] != "none":
            # train_transform's geometric part only (uint8 crop); the colour jitter and normalisation run
            # on the training device (gpu_decode.DeviceColorJitter)
            self.train_tf = RandomResizedCropFlip(
                kwargs["image_size"],
                tuple(augment["crop_scale"]),
                tuple(augment["crop_ratio"]),
                augment["hflip"],
            )
            self.device_jitter = DeviceColorJitter(
                augment["color_jitter"], kwargs["mean"], kwargs["std"], self.seed
            )
        self._key = (-1, 0)  # (global step, batches seen at it): names each jittered batch

    def on_after_batch_transfer(self, batch, dataloader_idx: int):
        """Training batches (uint8 crops) on the device: float, colour jitter, normalise."""
        if self.device_jitter is None or batch[0].dtype != torch.uint8:
            return batch  # evaluation batches (already float), or the loader's empty stand-in
        step = self.trainer.global_step if self.trainer is not None else 0
        count = self._key[1] + 1 if self._key[0] == step else 0
        self._key = (step, count)  # several batches at one step: Alg. 2's pass after training
        return self.device_jitter(batch[0], step * 1_000 + count), batch[1]

    def prepare_data(self) -> None:
        """Refuses a set that is missing, unreachable or not finished, naming it."""
        self._marker()

    def _marker(self) -> dict:
        if self._info is None:
            info = read_marker(self.prepared)
            if len(info["classes"]) != self.num_classes:
                raise ImageDataError(
                    f"{self.prepared} holds {len(info['classes'])} classes but data.num_classes="
                    f"{self.num_classes}; set data.num_classes={len(info['classes'])} or use another set."
                )
            if info["images"]["train"] != self.num_train_examples:
                warnings.warn(
                    f"{self.prepared} holds {info['images']['train']} training images but "
                    f"data.num_train_examples={self.num_train_examples}, the epoch that LR decay and lengths "
                    f"in epochs count; set data.num_train_examples={info['images']['train']} if this is the "
                    "set you mean to train on",
                    stacklevel=2,
                )
            self._info = info
        return self._info

    def setup(self, stage: str | None = None) -> None:
        info = self._marker()
        kwargs = dict(cache_dir=self.cache_dir, max_cache_size=self.max_cache_size)
        self.train_set = PreparedImages(
            f"{self.prepared}/train", info["images"]["train"], self.train_tf, **kwargs
        )
        self.val_set = PreparedImages(f"{self.prepared}/val", info["images"]["val"], self.eval_tf, **kwargs)
        for split in (self.train_set, self.val_set):
            split.chunks  # noqa: B018  (opens them here: a bad path fails before training, not in a worker)

    def train_dataloader(self, start_step: int | None = None):
        sampler = self.train_sampler(len(self.train_set), as_list=True, start_step=start_step)
        return ImageBatchLoader(
            self.train_set, sampler=sampler, lockstep=True, trainer=self.trainer,
            batches=SeededBatches(self.train_set, self.seed), generator=own_generator(), **self.loader_kwargs,
        )  # fmt: skip
