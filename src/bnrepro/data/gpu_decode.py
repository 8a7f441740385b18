"""JPEG bytes -> augmented, normalised batch on the training device (nvjpeg on CUDA).

Why: a DataLoader worker decodes and distorts a few hundred ImageNet JPEGs per second per core
(data/images.py measures ~255 images/s on one core with train_transform), while BN-Inception's compiled
bf16 step trains ~5,900 images/s on one H100 (docs/benchmarks.md): 14 CPU workers reached 2,623 images/s
there. Here the workers only read file bytes (torchvision.io.read_file) and the main process hands a
whole mini-batch to torchvision.io.decode_jpeg(list, device="cuda") (nvjpeg; progressive JPEGs are
decoded one by one), and the distortions run batched on the GPU: 4,908 images/s on the same machine
(`python -m bnrepro.bench.pipeline`). A benchmark path for now: training still decodes in workers.
DeviceColorJitter (below) is used in training: data=imagenet_prepared's jitter after the transfer.

GPUDecodeAugment(train=True) does what images.train_transform does, with the same distributions per
image: random-resized crop (torchvision's sampling, 10 tries then the centre crop), horizontal flip,
brightness/contrast/saturation jitter in a random order, ImageNet normalisation. train=False is
eval_transform: shorter side to resize_size, centre crop. Differences from the CPU path, all below the
JPEG noise: the resize runs on float (the CPU path resizes uint8, rounding to integers), and the random
numbers are other draws of the same distributions (one explicit CPU generator, the same stream on any
device). Also runs with device="cpu" (tests), where it is no faster than the CPU transforms.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torchvision.io import ImageReadMode, decode_image, decode_jpeg
from torchvision.transforms.v2 import functional as F

from bnrepro.data.images import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD

# ITU-R 601 luma, torchvision's rgb_to_grayscale weights (contrast and saturation blend towards it).
_LUMA = (0.2989, 0.587, 0.114)


def random_resized_crop_params(
    sizes: Sequence[tuple[int, int]],
    scale: tuple[float, float],
    ratio: tuple[float, float],
    generator: torch.Generator,
    tries: int = 10,
) -> list[tuple[int, int, int, int]]:
    """(top, left, height, width) per image of (height, width) `sizes`: RandomResizedCrop.get_params,
    vectorised over the batch and its 10 tries, drawing from `generator`."""
    hw = torch.tensor(sizes, dtype=torch.float64)
    height, width = hw[:, :1], hw[:, 1:]
    n = len(sizes)
    # float64 like the Python floats of torchvision's loop, so round() sees the same values.
    area = height * width * torch.empty(n, tries, dtype=torch.float64).uniform_(*scale, generator=generator)
    log_ratio = torch.empty(n, tries, dtype=torch.float64).uniform_(
        math.log(ratio[0]), math.log(ratio[1]), generator=generator
    )
    aspect = log_ratio.exp()
    w = (area * aspect).sqrt().round()  # torch.round and Python's round both round half to even
    h = (area / aspect).sqrt().round()
    fits = (w > 0) & (w <= width) & (h > 0) & (h <= height)
    first = fits.int().argmax(1, keepdim=True)  # the first try that fits, as the loop would stop there
    # Python lists for the per-image loop: indexing tensors there costs microseconds per element.
    found = fits.gather(1, first).squeeze(1).tolist()
    hs, ws = h.gather(1, first).squeeze(1).tolist(), w.gather(1, first).squeeze(1).tolist()
    offsets = torch.rand(n, 2, dtype=torch.float64, generator=generator).tolist()  # uniform in [0, 1)
    params = []
    for k, (img_h, img_w) in enumerate(sizes):
        if found[k]:
            ch, cw = int(hs[k]), int(ws[k])
            top = int(offsets[k][0] * (img_h - ch + 1))  # uniform over the valid offsets
            left = int(offsets[k][1] * (img_w - cw + 1))
        else:  # torchvision's fallback: the centre crop, clamped to the ratio range
            in_ratio = img_w / img_h
            ch, cw = img_h, img_w
            if in_ratio < min(ratio):
                ch = int(round(cw / min(ratio)))
            elif in_ratio > max(ratio):
                cw = int(round(ch * max(ratio)))
            top, left = (img_h - ch) // 2, (img_w - cw) // 2
        params.append((top, left, ch, cw))
    return params


def color_jitter(x: torch.Tensor, factors: torch.Tensor, order: torch.Tensor) -> torch.Tensor:
    """torchvision's ColorJitter (no hue) on a float batch [B, 3, H, W] in [0, 1], per image.

    factors [B, 3]: brightness, contrast, saturation factors; order [B, 3]: a permutation of (0, 1, 2)
    per image, the order in which they apply. Each op is a blend clamped to [0, 1] with a reference:
    black (brightness), the mean grey level (contrast), the grey image (saturation).
    """
    luma = torch.tensor(_LUMA, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    for step in range(order.shape[1]):
        op = order[:, step]
        a = factors.gather(1, op[:, None]).view(-1, 1, 1, 1)
        grey = (x * luma).sum(1, keepdim=True)
        # One blend per step, each image with its own reference: three times cheaper than running all
        # three ops on every image and selecting.
        ref = torch.where(
            (op == 2).view(-1, 1, 1, 1),
            grey,
            torch.where((op == 1).view(-1, 1, 1, 1), grey.mean((2, 3), keepdim=True), 0.0),
        )
        x = (a * x + (1 - a) * ref).clamp_(0, 1)
    return x


def jitter_params(n: int, strength: float, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """(factors [n, 3], order [n, 3]) of ColorJitter(brightness=contrast=saturation=strength) per image:
    each factor uniform in [max(0, 1 - strength), 1 + strength], the three ops in a uniformly random
    order (torchvision's randperm, hue left out)."""
    lo, hi = max(0.0, 1 - strength), 1 + strength
    factors = torch.empty(n, 3).uniform_(lo, hi, generator=generator)
    return factors, torch.rand(n, 3, generator=generator).argsort(1)


class DeviceColorJitter:
    """uint8 crops [B, 3, S, S] on the training device -> float, colour-jittered, normalised: the end of
    images.train_transform (ToDtype, ColorJitter, Normalize) as one batched op after the transfer, so
    the CPU workers only decode, crop and flip (and send a quarter of the bytes).

    The same distribution per image as the CPU op (tests/test_gpu_jitter.py compares their statistics);
    the random numbers are drawn on the CPU from a generator seeded by (seed, key), where the caller's
    key names the batch (the global step): a resumed run draws what the uninterrupted one drew.
    """

    def __init__(self, strength: float, mean: Sequence[float], std: Sequence[float], seed: int):
        self.strength, self.seed = strength, seed
        self.mean, self.std = torch.tensor(mean).view(1, 3, 1, 1), torch.tensor(std).view(1, 3, 1, 1)

    @torch.no_grad()
    def __call__(self, x: torch.Tensor, key: int) -> torch.Tensor:
        x = x.float().div_(255)
        if self.strength:
            gen = torch.Generator().manual_seed(self.seed * 1_000_003 + 7_919 * key + 1)
            factors, order = jitter_params(len(x), self.strength, gen)
            x = color_jitter(x, factors.to(x.device), order.to(x.device))
        return x.sub_(self.mean.to(x.device)).div_(self.std.to(x.device))


class GPUDecodeAugment:
    """List of encoded JPEGs (uint8 1-D CPU tensors) -> normalised float32 batch [B, 3, S, S] on `device`.

    train=True: images.train_transform's distortions; train=False: images.eval_transform's centre crop.
    Random numbers come from `generator` (a CPU torch.Generator; seeded with `seed` if None).
    """

    def __init__(
        self,
        device: str | torch.device = "cuda",
        train: bool = True,
        image_size: int = 224,
        resize_size: int = 256,
        crop_scale: tuple[float, float] = (0.08, 1.0),
        crop_ratio: tuple[float, float] = (3 / 4, 4 / 3),
        hflip: bool = True,
        *,
        color_jitter: float,  # no default: conf/augment/*.yaml sets it (schema AugmentConfig: 0.0, off)
        mean: Sequence[float] = IMAGENET_DEFAULT_MEAN,
        std: Sequence[float] = IMAGENET_DEFAULT_STD,
        generator: torch.Generator | None = None,
        seed: int = 0,
    ):
        self.device = torch.device(device)
        self.train, self.image_size, self.resize_size = train, image_size, resize_size
        self.crop_scale, self.crop_ratio = tuple(crop_scale), tuple(crop_ratio)
        self.hflip, self.jitter = hflip, color_jitter
        self.mean = torch.tensor(mean, device=self.device).view(1, 3, 1, 1)
        self.std = torch.tensor(std, device=self.device).view(1, 3, 1, 1)
        # A CPU generator: crop boxes are Python ints anyway, and drawing there needs no device sync.
        self.generator = generator if generator is not None else torch.Generator().manual_seed(seed)

    @classmethod
    def from_augment(cls, augment: dict, **kwargs) -> GPUDecodeAugment:
        """From a conf/augment/*.yaml dict, as ImageFolderDataModule reads it ("none": the eval crop)."""
        if augment["name"] == "none":
            return cls(train=False, color_jitter=0.0, **kwargs)  # evaluation: no distortion
        return cls(
            train=True, crop_scale=tuple(augment["crop_scale"]), crop_ratio=tuple(augment["crop_ratio"]),
            hflip=augment["hflip"], color_jitter=augment["color_jitter"], **kwargs,
        )  # fmt: skip

    def decode(self, encoded: list[torch.Tensor]) -> list[torch.Tensor]:
        """uint8 RGB [3, H, W] per image, on the device; grayscale and CMYK JPEGs come out as RGB."""
        try:
            return decode_jpeg(encoded, mode=ImageReadMode.RGB, device=self.device)
        except RuntimeError:  # one bad file fails the whole batched call: redo it image by image
            return [self._decode_one(data) for data in encoded]

    def _decode_one(self, data: torch.Tensor) -> torch.Tensor:
        try:
            return decode_jpeg(data, mode=ImageReadMode.RGB, device=self.device)
        except RuntimeError:
            # Not a JPEG nvjpeg/libjpeg reads (ImageNet has a PNG named .JPEG): decode on the CPU, which
            # still raises on a truncated or corrupt file. 16-bit PNGs decode as uint16.
            image = decode_image(data, mode=ImageReadMode.RGB)
            return F.to_dtype(image, torch.uint8, scale=True).to(self.device)

    @torch.no_grad()
    def __call__(self, encoded: list[torch.Tensor]) -> torch.Tensor:
        images = self.decode(encoded)
        size = [self.image_size, self.image_size]
        if self.train:
            boxes = random_resized_crop_params(
                [tuple(img.shape[-2:]) for img in images], self.crop_scale, self.crop_ratio, self.generator
            )
            # Crop (a view) before converting to float, so only the crop's pixels are copied; float because
            # CUDA's antialiased resize takes no uint8. Per image: the images differ in size.
            out = torch.stack(
                [
                    F.resize(img[:, top : top + h, left : left + w].float(), size, antialias=True)
                    for img, (top, left, h, w) in zip(images, boxes)
                ]
            )
        else:
            out = torch.stack(
                [
                    F.center_crop(F.resize(img.float(), [self.resize_size], antialias=True), size)
                    for img in images
                ]
            )
        out = out.div_(255)
        if self.train and self.hflip:
            flip = (torch.rand(len(images), generator=self.generator) < 0.5).to(self.device)
            out = torch.where(flip.view(-1, 1, 1, 1), out.flip(-1), out)
        if self.train and self.jitter:
            factors, order = jitter_params(len(images), self.jitter, self.generator)
            out = color_jitter(out, factors.to(self.device), order.to(self.device))
        return out.sub_(self.mean).div_(self.std)
