"""Image files -> tensors for ImageNet-style folders: decoding, the class-folder scan, the transforms.

Decoder choice: torchvision.io.decode_image (libjpeg-turbo, uint8 tensors), measured against PIL 13 on
a 2-core CPU (single process, torch.set_num_threads(1); 200 random-texture 500x375 JPEGs, quality 90,
~106 KB each; best of 5 interleaved passes, images/s; runs differ by ~10%):

                                              decode only   + train_transform   + eval_transform
    torchvision.io decode_image -> tensor ops      610             255                 331
    PIL decode -> PIL crop/resize -> tensor ops    528             172                 209
    PIL decode -> this file's tensor transforms     -              221                  -

Decoding alone is a tie; the uint8-tensor path wins on the transforms and skips the PIL->tensor copy.
Both are correct on what ImageNet's train set holds, with identical pixels: CMYK JPEGs (Adobe-inverted),
a PNG named .JPEG, grayscale JPEGs. Both raise on a truncated JPEG or PNG: libjpeg's "premature end"
warning is turned into an error by torchvision whatever PIL's ImageFile.LOAD_TRUNCATED_IMAGES global
says, and by PIL only while it stays False. Both accept ImageNet's harmless "Corrupt JPEG data:
extraneous bytes" files. So the faster one wins. torchvision 0.29 marks its decoders deprecated in
favour of torchcodec; torchvision is pinned, and formats decode_image does not know (BMP, TIFF, ...)
fall back to PIL.
"""

from __future__ import annotations

import io
import re
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from PIL import Image
from torchvision.datasets.folder import find_classes, make_dataset
from torchvision.io import ImageReadMode, decode_image, read_file
from torchvision.transforms import RandomResizedCrop, v2
from torchvision.transforms.v2 import functional as F

from bnrepro.errors import ReproError

# timm's IMAGENET_DEFAULT_MEAN/STD, written out: importing timm costs ~2.4 s, paid again by every
# DataLoader worker that is spawned rather than forked.
IMAGENET_DEFAULT_MEAN = (0.485, 0.456, 0.406)
IMAGENET_DEFAULT_STD = (0.229, 0.224, 0.225)
# Lower-case; torchvision's has_file_allowed_extension lower-cases the file name, so .JPEG matches.
IMAGE_EXTENSIONS = (".jpeg", ".jpg", ".png")
LAYOUT = "<split_dir>/<class, e.g. n01440764>/<image>.JPEG"
# torchvision's C++ errors start with "<op>, <source file>:<line>, "; the user needs only the rest.
_CPP_LOCATION = re.compile(r"^\w+, \S+:\d+, ")


class ImageDataError(ReproError, ValueError):
    """A file or folder of an image data set that cannot be used; the message names it and the fix.

    Takes one string, so DataLoader workers can re-raise it as `type(err)(message)`.
    """


def _cannot_decode(path: str | Path, reason: str) -> ImageDataError:
    reason = _CPP_LOCATION.sub("", reason.strip())
    return ImageDataError(f"{path}: cannot decode ({reason}). Re-extract it from the archive or delete it.")


def _decode_with_pil(data: torch.Tensor, source: str | Path) -> torch.Tensor:
    # PIL raises on a truncated file as long as ImageFile.LOAD_TRUNCATED_IMAGES is False (its default).
    try:
        with Image.open(io.BytesIO(data.numpy().tobytes())) as image:
            return F.pil_to_tensor(image.convert("RGB"))
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as err:
        raise _cannot_decode(source, str(err)) from err


def decode_rgb(data: torch.Tensor, source: str | Path) -> torch.Tensor:
    """Decodes an encoded image (uint8 1-D tensor of the file's bytes), whatever its format, to a uint8
    RGB tensor [3, H, W]; `source` names it in errors (a path, or a prepared set's item).

    CMYK, grayscale, palette and RGBA images are converted to RGB; a truncated, empty or unreadable file
    raises ImageDataError naming `source` rather than giving a partly grey image.
    """
    if data.numel() == 0:
        raise ImageDataError(f"{source}: empty file (0 bytes). Re-extract it from the archive or delete it.")
    try:
        image = decode_image(data, mode=ImageReadMode.RGB)
    except RuntimeError as err:
        if "Unsupported image file" not in str(err):
            raise _cannot_decode(source, str(err)) from err
        image = _decode_with_pil(data, source)  # e.g. a BMP or TIFF: libjpeg-turbo/libpng do not read it
    # 16-bit PNGs decode as uint16; the transforms below expect uint8 (or float in [0, 1]).
    return F.to_dtype(image, torch.uint8, scale=True)


def load_rgb(path: str | Path) -> torch.Tensor:
    """Reads and decodes an image file with decode_rgb (any format, whatever its extension says)."""
    try:
        data = read_file(str(path))
    except (RuntimeError, OSError) as err:
        raise _cannot_decode(path, str(err)) from err
    return decode_rgb(data, path)


def scan_class_folders(split_dir: str | Path) -> tuple[list[str], list[tuple[str, int]]]:
    """(classes, samples) of the class-folder layout <split_dir>/<class>/<file>, as torchvision's ImageFolder.

    Classes are the sorted sub-folder names; samples are (path, class index) for .jpeg/.jpg/.png files
    (any case), searched recursively within each class folder.
    """
    split_dir = Path(split_dir)
    if not split_dir.is_dir():
        raise ImageDataError(
            f"{split_dir}: no such folder. Expected the class-folder layout {LAYOUT}; point the data root "
            "at the folder that holds train/ and val/ (ImageNet's val/ must be sorted into class folders too)."
        )
    try:
        classes, class_to_idx = find_classes(split_dir)
    except FileNotFoundError as err:
        raise ImageDataError(
            f"{split_dir}: no class folders in it. Expected {LAYOUT} (a flat folder of images, such as "
            "ImageNet's val/ as shipped, must first be sorted into one sub-folder per class)."
        ) from err
    # allow_empty: we name the empty folders ourselves, with their paths.
    samples = make_dataset(split_dir, class_to_idx, extensions=IMAGE_EXTENSIONS, allow_empty=True)
    seen = {label for _, label in samples}
    empty = [str(split_dir / name) for i, name in enumerate(classes) if i not in seen]
    if empty:
        more = f" (and {len(empty) - 1} more: {', '.join(empty[1:4])}{', ...' if len(empty) > 4 else ''})"
        raise ImageDataError(
            f"{empty[0]}: class folder has no image files ({'/'.join(IMAGE_EXTENSIONS)}, any case)"
            f"{more if len(empty) > 1 else ''}. Re-extract the class from the archive or remove the folder."
        )
    return classes, samples


class ImageFolderDataset(torch.utils.data.Dataset):
    """(image, label) pairs from `samples` (see scan_class_folders), the image decoded by load_rgb."""

    def __init__(self, samples: Sequence[tuple[str, int]], transform: Callable[[torch.Tensor], torch.Tensor]):
        self.samples = samples
        self.transform = transform

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        path, label = self.samples[index]
        return self.transform(load_rgb(path)), label


def train_transform(
    image_size: int = 224,
    crop_scale: tuple[float, float] = (0.08, 1.0),
    crop_ratio: tuple[float, float] = (3 / 4, 4 / 3),
    hflip: bool = True,
    *,
    color_jitter: float,  # no default: conf/augment/*.yaml sets it (schema AugmentConfig: 0.0, off)
    mean: Sequence[float] = IMAGENET_DEFAULT_MEAN,
    std: Sequence[float] = IMAGENET_DEFAULT_STD,
) -> v2.Compose:
    """GoogLeNet-style distortions (docs/paper.md Sec. 4 CHOICE): random-resized crop, flip, colour jitter.

    uint8 RGB tensor (or PIL image) -> normalised float [3, image_size, image_size]. color_jitter is the
    brightness = contrast = saturation strength; 0 turns it off ("full" uses 0.4, "reduced" 0.1).
    """
    steps = [
        v2.ToImage(),
        v2.RandomResizedCrop(image_size, scale=crop_scale, ratio=crop_ratio, antialias=True),
    ]
    if hflip:
        steps.append(v2.RandomHorizontalFlip())
    # Crop before converting: the resize then runs on uint8, a quarter of the bytes of float.
    steps.append(v2.ToDtype(torch.float32, scale=True))
    if color_jitter:
        # Jitter after the float conversion: measured faster than on uint8 (which converts per op).
        steps.append(v2.ColorJitter(brightness=color_jitter, contrast=color_jitter, saturation=color_jitter))
    steps.append(v2.Normalize(mean, std))
    return v2.Compose(steps)


class RandomResizedCropFlip:
    """uint8 [3, H, W] -> uint8 [3, size, size]: RandomResizedCrop (torchvision's sampling, antialiased
    bilinear) and a horizontal flip with probability 1/2, drawing from torch's global generator as
    v2's transforms do. The crop is resized in channels-last layout, where PyTorch's uint8 kernel is
    vectorised: measured 1.5x faster than v2.RandomResizedCrop on 224x299 images (docs/benchmarks.md).
    """

    def __init__(self, size: int, scale: tuple[float, float], ratio: tuple[float, float], hflip: bool):
        self.size, self.scale, self.ratio, self.hflip = size, list(scale), list(ratio), hflip

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        top, left, h, w = RandomResizedCrop.get_params(image, self.scale, self.ratio)
        crop = image[:, top : top + h, left : left + w].unsqueeze(0)
        out = F.resize(crop.contiguous(memory_format=torch.channels_last), [self.size] * 2, antialias=True)[0]
        if self.hflip and torch.rand(1) < 0.5:
            out = out.flip(-1)
        return out


def eval_transform(
    image_size: int = 224,
    resize_size: int = 256,
    mean: Sequence[float] = IMAGENET_DEFAULT_MEAN,
    std: Sequence[float] = IMAGENET_DEFAULT_STD,
) -> v2.Compose:
    """Single-crop protocol: shorter side to resize_size, centre crop image_size, float, normalise."""
    return v2.Compose(
        [
            v2.ToImage(),
            v2.Resize(resize_size, antialias=True),  # an int resizes the shorter side, keeping the aspect
            v2.CenterCrop(image_size),
            v2.ToDtype(torch.float32, scale=True),
            v2.Normalize(mean, std),
        ]
    )
