"""The input-pipeline benchmark in its tiny mode, and GPUDecodeAugment run on the CPU against the CPU transforms."""

from __future__ import annotations

import pytest
import torch
from torchvision.io import decode_jpeg, encode_jpeg, encode_png
from torchvision.transforms.v2 import functional as F

from bnrepro.bench.pipeline import main, natural_image
from bnrepro.data.gpu_decode import GPUDecodeAugment, color_jitter, random_resized_crop_params
from bnrepro.data.images import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD, eval_transform

MEAN = torch.tensor(IMAGENET_DEFAULT_MEAN).view(1, 3, 1, 1)
STD = torch.tensor(IMAGENET_DEFAULT_STD).view(1, 3, 1, 1)


def _jpegs(sizes, seed: int = 0) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return [encode_jpeg(natural_image(h, w, gen), quality=90) for h, w in sizes]


def test_bench_pipeline_tiny_mode_reports_both_paths():
    result = main(["--tiny", "--device", "cpu"])
    assert result["images"] == 32 and result["batch"] == 8 and result["mean_jpeg_kb"] > 0
    for path in ("cpu_workers", "gpu_decode"):
        assert result[path]["images_per_s"] > 0 and result[path]["warmup_s"] > 0
        assert result[path]["timed_images"] == result["steps"] * result["batch"]


def test_gpu_decode_augment_gives_normalised_reproducible_batches():
    encoded = _jpegs([(120, 160), (160, 120), (90, 200), (100, 100)])
    x = GPUDecodeAugment(device="cpu", image_size=48, color_jitter=0.4, seed=3)(encoded)
    assert x.shape == (4, 3, 48, 48) and x.dtype == torch.float32
    pixels = x * STD + MEAN  # undoing the normalisation gives [0, 1] pixels
    assert pixels.min() >= -1e-5 and pixels.max() <= 1 + 1e-5 and pixels.std() > 0.05
    assert torch.equal(x, GPUDecodeAugment(device="cpu", image_size=48, color_jitter=0.4, seed=3)(encoded))
    assert not torch.equal(
        x, GPUDecodeAugment(device="cpu", image_size=48, color_jitter=0.4, seed=4)(encoded)
    )


def test_gpu_decode_augment_whole_square_crop_is_resize_and_normalise():
    (data,) = _jpegs([(150, 150)])
    aug = GPUDecodeAugment(
        device="cpu", image_size=64, crop_scale=(1, 1), crop_ratio=(1, 1), hflip=False, color_jitter=0
    )
    x = aug([data, data])
    decoded = decode_jpeg(data)
    expected = (F.resize(decoded.float() / 255, [64, 64], antialias=True)[None] - MEAN) / STD
    torch.testing.assert_close(x, expected.expand(2, -1, -1, -1), atol=1e-5, rtol=0)
    # The CPU pipeline's eval crop of a square image is the same resize, made on uint8 (rounded).
    cpu = eval_transform(image_size=64, resize_size=64)(decoded)
    assert (x[0] - cpu).abs().max() < 2.5 / 255 / min(IMAGENET_DEFAULT_STD)


def test_gpu_decode_eval_mode_matches_eval_transform():
    encoded = _jpegs([(120, 160), (170, 110)])
    x = GPUDecodeAugment(device="cpu", train=False, color_jitter=0, image_size=64, resize_size=73)(encoded)
    cpu = torch.stack([eval_transform(64, 73)(decode_jpeg(d)) for d in encoded])
    assert x.shape == cpu.shape == (2, 3, 64, 64)
    assert (x - cpu).abs().max() < 2.5 / 255 / min(IMAGENET_DEFAULT_STD)


def test_color_jitter_matches_torchvision_per_image_and_order():
    x = torch.rand(3, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    factors = torch.tensor([[1.3, 0.7, 1.2], [0.6, 1.4, 0.0], [1.0, 0.8, 1.4]])
    order = torch.tensor([[0, 1, 2], [2, 0, 1], [1, 2, 0]])
    ops = (F.adjust_brightness, F.adjust_contrast, F.adjust_saturation)
    expected = []
    for img, f, o in zip(x, factors, order):
        for k in o.tolist():
            img = ops[k](img, float(f[k]))
        expected.append(img)
    torch.testing.assert_close(color_jitter(x, factors, order), torch.stack(expected), atol=1e-6, rtol=0)


def test_random_resized_crop_params_stay_inside_and_follow_the_ranges():
    sizes = [(375, 500), (500, 333), (64, 64), (20, 400)] * 50  # the last: too wide, always the fallback
    boxes = random_resized_crop_params(sizes, (0.08, 1.0), (3 / 4, 4 / 3), torch.Generator().manual_seed(0))
    for (img_h, img_w), (top, left, h, w) in zip(sizes, boxes):
        assert 0 <= top and top + h <= img_h and 0 <= left and left + w <= img_w and h > 0 and w > 0
        if (img_h, img_w) == (20, 400):
            assert (top, left, h, w) == (0, 186, 20, 27)  # centre, clamped to the largest ratio 4/3
        else:
            assert 0.08 * 0.9 <= h * w / (img_h * img_w) <= 1.0
            assert 3 / 4 * 0.9 <= w / h <= 4 / 3 * 1.1


def test_gpu_decode_falls_back_to_cpu_decoding_for_a_png_named_jpeg():
    gen = torch.Generator().manual_seed(0)
    png = encode_png(natural_image(50, 60, gen))
    (jpeg,) = _jpegs([(50, 60)])
    aug = GPUDecodeAugment(device="cpu", train=False, color_jitter=0, image_size=32, resize_size=40)
    assert aug.decode([jpeg, png])[1].shape == (3, 50, 60)
    assert aug([jpeg, png]).shape == (2, 3, 32, 32)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_gpu_decode_on_cuda_matches_cpu():
    encoded = _jpegs([(375, 500), (500, 333), (256, 256)])
    kwargs = dict(train=False, image_size=224, resize_size=256, color_jitter=0)
    cuda = GPUDecodeAugment(device="cuda", **kwargs)(encoded).cpu()
    cpu = GPUDecodeAugment(device="cpu", **kwargs)(encoded)
    # nvjpeg's IDCT and colour conversion differ from libjpeg-turbo's by a few levels.
    assert (cuda - cpu).abs().mean() < 2 / 255 / min(IMAGENET_DEFAULT_STD)
