"""bnrepro.data.images on a tiny ImageNet-layout folder written by the tests, with ImageNet's odd files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.transforms.v2 import functional as F

from bnrepro.data.images import (
    IMAGENET_DEFAULT_MEAN,
    IMAGENET_DEFAULT_STD,
    ImageDataError,
    ImageFolderDataset,
    eval_transform,
    load_rgb,
    scan_class_folders,
    train_transform,
)

RED = (200, 30, 30)


def _gradient(width: int = 500, height: int = 375) -> np.ndarray:
    """An RGB image whose three channels differ, so a channel mix-up or a flip shows."""
    yy, xx = np.mgrid[0:height, 0:width]
    return np.stack([xx * 255 // width, yy * 255 // height, (xx + yy) % 256], -1).astype(np.uint8)


def _noise_jpeg(path: Path, size: int = 96) -> bytes:
    """A JPEG whose entropy-coded data is most of the file, so cutting it in half cuts the scan."""
    noise = np.random.default_rng(0).integers(0, 256, (size, size, 3), dtype=np.uint8)
    Image.fromarray(noise).save(path, format="JPEG", quality=90)
    return path.read_bytes()


@pytest.fixture
def split_dir(tmp_path: Path) -> Path:
    """train/ with three classes holding the kinds of file ImageNet's train set really has."""
    root = tmp_path / "train"
    for wnid in ("n01440764", "n01443537", "n01484850"):
        (root / wnid).mkdir(parents=True)
    Image.fromarray(_gradient()).save(root / "n01440764" / "rgb.JPEG", quality=90)
    Image.new("RGB", (500, 375), RED).convert("CMYK").save(root / "n01440764" / "cmyk.JPEG", quality=95)
    Image.fromarray(_gradient()).save(root / "n01443537" / "png.JPEG", format="PNG")  # PNG named .JPEG
    Image.fromarray(_gradient()[..., 0]).save(root / "n01443537" / "gray.JPEG", quality=90)
    Image.fromarray(_gradient(300, 400)).save(root / "n01484850" / "lower.jpg", quality=90)
    (root / "n01484850" / "notes.txt").write_text("not an image")  # must be skipped by the scan
    return root


def test_scan_sorts_classes_and_keeps_only_images(split_dir: Path):
    classes, samples = scan_class_folders(split_dir)
    assert classes == ["n01440764", "n01443537", "n01484850"]
    names = {(Path(p).name, label) for p, label in samples}
    assert names == {("cmyk.JPEG", 0), ("rgb.JPEG", 0), ("gray.JPEG", 1), ("png.JPEG", 1), ("lower.jpg", 2)}


def test_load_rgb_converts_imagenet_odd_files(split_dir: Path):
    cmyk = load_rgb(split_dir / "n01440764" / "cmyk.JPEG")
    assert cmyk.shape == (3, 375, 500) and cmyk.dtype == torch.uint8
    # CMYK JPEGs store inverted ink values (Adobe); a wrong conversion gives a cyan-ish or dark image.
    assert torch.allclose(cmyk.float().mean((1, 2)), torch.tensor(RED, dtype=torch.float), atol=6)

    gray = load_rgb(split_dir / "n01443537" / "gray.JPEG")
    assert gray.shape == (3, 375, 500) and torch.equal(gray[0], gray[1]) and torch.equal(gray[1], gray[2])

    png = load_rgb(split_dir / "n01443537" / "png.JPEG")  # lossless, so exactly the array we wrote
    assert torch.equal(png, torch.from_numpy(_gradient()).permute(2, 0, 1))


def test_load_rgb_falls_back_to_pil_for_other_formats(tmp_path: Path):
    path = tmp_path / "bmp.JPEG"  # decode_image reads no BMP; PIL does
    Image.fromarray(_gradient(64, 48)).save(path, format="BMP")
    assert torch.equal(load_rgb(path), torch.from_numpy(_gradient(64, 48)).permute(2, 0, 1))


@pytest.mark.parametrize(
    "transform", [eval_transform(), train_transform(color_jitter=0.4)], ids=["eval", "train"]
)
def test_every_file_gives_a_normalised_224_tensor(split_dir: Path, transform):
    _, samples = scan_class_folders(split_dir)
    dataset = ImageFolderDataset(samples, transform)
    assert len(dataset) == 5
    torch.manual_seed(0)
    for i, (path, label) in enumerate(samples):
        image, got_label = dataset[i]
        assert image.shape == (3, 224, 224) and image.dtype == torch.float32, path
        assert got_label == label and torch.isfinite(image).all()
        # Normalised [0, 1] values lie within (0 - mean) / std = -2.12 .. (1 - mean) / std = 2.64.
        assert image.min() >= -2.2 and image.max() <= 2.7, path


def _truncated(tmp_path: Path) -> Path:
    folder = tmp_path / "n01440764"
    folder.mkdir(exist_ok=True)
    data = _noise_jpeg(folder / "whole.JPEG")
    path = folder / "cut.JPEG"
    path.write_bytes(data[: len(data) // 2])
    return path


def test_truncated_jpeg_is_an_error_naming_the_file(tmp_path: Path):
    path = _truncated(tmp_path)
    load_rgb(path.parent / "whole.JPEG")  # the uncut file decodes, so the cut is what fails
    with pytest.raises(ImageDataError, match="cannot decode") as err:
        load_rgb(path)
    assert str(path) in str(err.value) and "Re-extract" in str(err.value)


def test_truncated_jpeg_error_survives_a_dataloader_worker(tmp_path: Path):
    # Workers re-raise as type(err)(message): ImageDataError must stay itself, with the path.
    path = _truncated(tmp_path)
    loader = torch.utils.data.DataLoader(
        ImageFolderDataset([(str(path), 0)], eval_transform()), num_workers=1
    )
    try:
        next(iter(loader))
    except ImageDataError as err:
        message = str(err)
        # The traceback holds the loader's iterator in a reference cycle; shut down later by the garbage
        # collector, its worker takes 5 s to join. Dropping it frees the iterator now (hence no pytest.raises).
        err.__traceback__ = None
    else:
        pytest.fail("a truncated file loaded through a DataLoader worker")
    assert str(path) in message


def test_not_an_image_is_an_error_naming_the_file(tmp_path: Path):
    path = tmp_path / "x.JPEG"
    path.write_bytes(b"<html>403 Forbidden</html>")
    with pytest.raises(ImageDataError, match="x.JPEG: cannot decode"):
        load_rgb(path)


def _missing(tmp_path: Path) -> tuple[Path, Path]:
    return tmp_path / "train", tmp_path / "train"


def _flat(tmp_path: Path) -> tuple[Path, Path]:
    # ImageNet's val/ as shipped: images, no class folders.
    (tmp_path / "val").mkdir()
    Image.fromarray(_gradient(32, 32)).save(tmp_path / "val" / "ILSVRC2012_val_00000001.JPEG")
    return tmp_path / "val", tmp_path / "val"


def _one_empty_class(tmp_path: Path) -> tuple[Path, Path]:
    for wnid in ("n01440764", "n01443537"):
        (tmp_path / "train" / wnid).mkdir(parents=True)
    Image.fromarray(_gradient(32, 32)).save(tmp_path / "train" / "n01440764" / "a.JPEG")
    (tmp_path / "train" / "n01443537" / "a.txt").write_text("no image here")
    return tmp_path / "train", tmp_path / "train" / "n01443537"


@pytest.mark.parametrize(
    "make, expected",
    [(_missing, "no such folder"), (_flat, "no class folders"), (_one_empty_class, "no image files")],
    ids=["missing", "flat", "empty-class"],
)
def test_bad_layouts_are_errors_naming_the_path(tmp_path: Path, make, expected):
    split, offending = make(tmp_path)
    with pytest.raises(ImageDataError, match=expected) as err:
        scan_class_folders(split)
    assert str(err.value).startswith(f"{offending}:")


def _normalised(value: float, channel: int) -> float:
    return (value - IMAGENET_DEFAULT_MEAN[channel]) / IMAGENET_DEFAULT_STD[channel]


def test_eval_transform_is_a_deterministic_centre_crop(tmp_path: Path):
    # 500x375 -> shorter side 256 gives 341x256; the 224 centre crop keeps original columns ~85..414.
    # So a white band over columns 80..420 on black fills the crop; an uncentred crop or a resize of the
    # longer side would take in black.
    array = np.zeros((375, 500, 3), np.uint8)
    array[:, 80:420] = 255
    image = torch.from_numpy(array).permute(2, 0, 1)
    out = eval_transform()(image)
    assert out.shape == (3, 224, 224)
    assert torch.equal(out, eval_transform()(image))
    for c in range(3):
        assert torch.allclose(out[c], torch.tensor(_normalised(1.0, c)), atol=1e-3)


def test_train_transform_whole_image_without_jitter_is_a_plain_resize():
    image = torch.from_numpy(_gradient()).permute(2, 0, 1)
    whole = dict(crop_scale=(1.0, 1.0), crop_ratio=(500 / 375, 500 / 375), hflip=False)
    expected = F.normalize(
        F.to_dtype(F.resize(image, [224, 224], antialias=True), torch.float32, scale=True),
        IMAGENET_DEFAULT_MEAN,
        IMAGENET_DEFAULT_STD,
    )
    torch.manual_seed(0)
    assert torch.allclose(train_transform(color_jitter=0, **whole)(image), expected, atol=1e-5)
    torch.manual_seed(0)
    assert not torch.allclose(train_transform(color_jitter=0.4, **whole)(image), expected, atol=1e-2)


def test_train_transform_flips_about_half_the_time():
    image = torch.from_numpy(_gradient(120, 90)).permute(2, 0, 1)  # small: 40 draws
    transform = train_transform(32, crop_scale=(1.0, 1.0), crop_ratio=(4 / 3, 4 / 3), color_jitter=0)
    torch.manual_seed(0)
    # The red channel rises left to right; flipped, it falls.
    rising = [
        bool(out[0, :, -1].mean() > out[0, :, 0].mean()) for out in (transform(image) for _ in range(40))
    ]
    assert 8 <= sum(rising) <= 32
