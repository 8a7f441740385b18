"""The colour jitter that runs on the training device after the transfer (gpu_decode.DeviceColorJitter)
against the CPU workers' torchvision ColorJitter: the same distribution of outputs on a fixed batch."""

from __future__ import annotations

import torch
from torchvision.transforms import v2

from bnrepro.data.gpu_decode import DeviceColorJitter

DRAWS = 2000


def _statistics(outputs: torch.Tensor) -> torch.Tensor:
    """Per draw and image: each channel's mean and std, and the whole image's 10th/90th percentile."""
    flat = outputs.flatten(-2)  # [draws, images, 3, H*W]
    q = torch.quantile(flat.flatten(-2), torch.tensor([0.1, 0.9]), dim=-1).movedim(0, -1)
    return torch.cat([flat.mean(-1), flat.std(-1), q], dim=-1)  # [draws, images, 8]


def test_device_color_jitter_has_the_cpu_ops_distribution():
    gen = torch.Generator().manual_seed(0)
    base = torch.rand(4, 3, 1, 1, generator=gen) * 0.6 + 0.2  # a colour per image, plus texture
    images = (base + 0.15 * torch.randn(4, 3, 12, 12, generator=gen)).clamp(0, 1).mul(255).round().byte()

    cpu_op = v2.ColorJitter(brightness=0.4, contrast=0.4, saturation=0.4)
    torch.manual_seed(1)
    cpu = torch.stack([torch.stack([cpu_op(img.float() / 255) for img in images]) for _ in range(DRAWS)])
    device_op = DeviceColorJitter(0.4, mean=[0, 0, 0], std=[1, 1, 1], seed=3)
    dev = torch.stack([device_op(images, key) for key in range(DRAWS)])

    a, b = _statistics(cpu), _statistics(dev)  # [draws, images, 8]
    stderr = torch.sqrt((a.var(0) + b.var(0)) / DRAWS)
    z = (a.mean(0) - b.mean(0)).abs() / stderr
    assert z.max() < 4.5, z  # the means of every statistic agree
    ratio = b.std(0) / a.std(0)
    assert ((ratio > 0.9) & (ratio < 1.1)).all(), ratio  # and their spreads
    # Not trivially: the jitter moves the statistics far more than the tolerance.
    assert (a.std(0) > 5 * stderr).all()


def test_device_color_jitter_is_a_function_of_its_key_and_normalises():
    images = torch.randint(
        0, 256, (3, 3, 8, 8), dtype=torch.uint8, generator=torch.Generator().manual_seed(0)
    )
    op = DeviceColorJitter(0.4, mean=[0.5, 0.4, 0.3], std=[0.2, 0.25, 0.3], seed=0)
    assert torch.equal(op(images, 5), op(images, 5)) and not torch.equal(op(images, 5), op(images, 6))
    plain = DeviceColorJitter(0.0, mean=[0.5, 0.4, 0.3], std=[0.2, 0.25, 0.3], seed=0)(images, 5)
    expected = (images.float() / 255 - torch.tensor([0.5, 0.4, 0.3]).view(1, 3, 1, 1)) / torch.tensor(
        [0.2, 0.25, 0.3]
    ).view(1, 3, 1, 1)
    torch.testing.assert_close(plain, expected)
