"""Figure 4's two test-time crop protocols: geometry as a pure function, and the transforms that cut them.

144 crops (GoogLeNet's protocol, docs/paper.md Sec. 5): the shorter side resized to 256, 288, 320 and 352;
the left, centre and right squares (top, centre, bottom for a portrait image); from each square its four
corner and its centre 224 crops plus the whole square resized to 224; and the mirror images of these
72: 4 x 3 x 6 x 2 = 144. A square image has three identical squares; the crops are kept (and counted)
anyway, as in GoogLeNet.

Both transforms return uint8 [crops, 3, size, size]: the float conversion and the normalisation happen
on the device, per ensemble member (each member may normalise differently: a run's mean/std, the
Caffe port's BGR 0-255), and uint8 keeps a 144-crop batch a quarter of the bytes between processes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as F

PAPER_SCALES = (256, 288, 320, 352)  # shorter sides of the 144-crop protocol
CORNERS = ("top_left", "top_right", "bottom_left", "bottom_right", "centre")  # then "full"


class Crop(NamedTuple):
    scale: int  # the shorter side the image is resized to first
    square: tuple[int, int, int]  # (top, left, side) of the square, in the resized image
    box: tuple[int, int, int, int]  # (top, left, height, width) cut from the resized image
    full: bool  # True: `box` is the whole square, resized to size x size afterwards
    flip: bool  # mirrored left-right after cutting (and resizing)


def resized_shape(height: int, width: int, short: int) -> tuple[int, int]:
    """(height, width) after resizing the shorter side to `short`, rounded as torchvision's Resize(int)."""
    if height <= width:
        return short, int(short * width / height)
    return int(short * height / width), short


def _centre(length: int, crop: int) -> int:
    return int(round((length - crop) / 2.0))  # torchvision's CenterCrop anchor, so centre crops agree


def crop_boxes(height: int, width: int, scales: Sequence[int] = PAPER_SCALES, size: int = 224) -> list[Crop]:
    """The 144 crops (len(scales) x 3 x 6 x 2) of an image of height x width, in a fixed order.

    Order: for each scale, for each square (left/top, centre, right/bottom), the crops of CORNERS and
    then the full square; all of these unflipped first, then the same list mirrored (crop i + half is
    crop i flipped), so a model's output over the crops can be read by position.
    """
    if size > min(scales):
        raise ValueError(f"crop size {size} is larger than the smallest scale {min(scales)}")
    plain = []
    for scale in scales:
        h, w = resized_shape(height, width, scale)
        side = min(h, w)  # = scale
        long, landscape = max(h, w), w >= h
        for offset in (0, _centre(long, side), long - side):  # left, centre, right (top, ... if portrait)
            top, left = (0, offset) if landscape else (offset, 0)
            far = side - size  # the bottom/right corner crop's offset inside the square
            for dy, dx in (
                (0, 0),
                (0, far),
                (far, 0),
                (far, far),
                (_centre(side, size), _centre(side, size)),
            ):
                plain.append(Crop(scale, (top, left, side), (top + dy, left + dx, size, size), False, False))
            plain.append(Crop(scale, (top, left, side), (top, left, side, side), True, False))
    return plain + [c._replace(flip=True) for c in plain]


class MultiCrop:
    """uint8 RGB [3, H, W] -> uint8 [len(scales) * 36, 3, size, size]: the crops of crop_boxes, in its order."""

    def __init__(self, scales: Sequence[int] = PAPER_SCALES, size: int = 224):
        self.scales, self.size = tuple(scales), size

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        boxes = crop_boxes(image.shape[-2], image.shape[-1], self.scales, self.size)
        resized = {s: F.resize(image, [s], antialias=True) for s in self.scales}  # as Resize(int)
        views = []
        for c in boxes[: len(boxes) // 2]:  # the second half are the mirrors of the first
            top, left, h, w = c.box
            view = resized[c.scale][..., top : top + h, left : left + w]
            if c.full:
                view = F.resize(view, [self.size, self.size], antialias=True)
            assert view.shape[-2:] == (self.size, self.size), (c, image.shape)  # geometry = transform
            views.append(view)
        views = torch.stack(views)
        return torch.cat([views, views.flip(-1)])

    def __repr__(self) -> str:
        return f"MultiCrop(scales={self.scales}, size={self.size})"


class SingleCrop:
    """uint8 RGB [3, H, W] -> uint8 [1, 3, size, size]: the project's eval_transform before its float steps
    (shorter side to resize_size, centre size x size), with the same torchvision ops."""

    def __init__(self, resize_size: int = 256, size: int = 224):
        self.ops = v2.Compose([v2.Resize(resize_size, antialias=True), v2.CenterCrop(size)])

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        return self.ops(image).unsqueeze(0)


def crop_transform(crops: int, size: int = 224, resize_size: int = 256, scales: Sequence[int] = PAPER_SCALES):
    """The transform of a protocol: 1 (single crop) or len(scales) * 36 (144 with the paper's scales)."""
    if crops == 1:
        return SingleCrop(resize_size, size)
    if crops != len(scales) * 36:
        raise ValueError(
            f"crops={crops}: expected 1 or {len(scales) * 36} (scales {list(scales)} x 3 x 6 x 2)"
        )
    return MultiCrop(scales, size)


def to_unit_float(crops: torch.Tensor) -> torch.Tensor:
    """uint8 crops -> float32 in [0, 1], the same op (and values) as eval_transform's ToDtype(scale=True)."""
    return F.to_dtype(crops, torch.float32, scale=True)
