from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest
import torch

from sparse_soups.kernels.corruptions import ALL, EXTRA, STANDARD, corrupt
from sparse_soups.kernels.ood_sets import read_corrupted, write_corrupted_dataset

# the deviation from the clean image grows with severity for these (glass blur, elastic
# transform, pixelate, frost, snow (severities 2-3) and spatter do not in Hendrycks' own
# tables either; saturate is the identity on gray images)
MONOTONE = (
    "gaussian_noise",
    "shot_noise",
    "impulse_noise",
    "speckle_noise",
    "defocus_blur",
    "gaussian_blur",
    "motion_blur",
    "zoom_blur",
    "fog",
    "brightness",
    "contrast",
    "jpeg_compression",
)


def blobs(n: int, channels: int, size: int, seed: int = 0) -> torch.Tensor:
    """Smooth test images (a coloured Gaussian blob on a dark background), uint8 (N, C, H, W)."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.arange(size).float(), torch.arange(size).float(), indexing="ij")
    out = torch.zeros(n, channels, size, size)
    for i in range(n):
        cy, cx = torch.rand(2, generator=g) * size * 0.5 + size * 0.25
        radius = 2 + torch.rand(1, generator=g) * size / 4
        blob = torch.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * radius**2))
        out[i] = 0.1 + 0.8 * blob * (0.3 + 0.7 * torch.rand(channels, 1, 1, generator=g))
    return (out * 255).round().to(torch.uint8)


GRAY = blobs(4, 1, 28)
RGB = blobs(3, 3, 32, seed=1)


def test_the_nineteen_corruptions() -> None:
    assert len(STANDARD) == 15 and len(EXTRA) == 4 and len(set(ALL)) == 19


@pytest.mark.parametrize("name", ALL)
def test_shapes_dtype_determinism(name: str) -> None:
    for images in (GRAY, RGB):
        out = corrupt(images, name, 3, seed=0)
        assert out.dtype == torch.uint8 and out.shape == images.shape
        assert torch.equal(out, corrupt(images, name, 3, seed=0))
    if name != "saturate":  # saturate is the identity on gray images, and changes RGB ones
        assert not torch.equal(corrupt(GRAY, name, 5, seed=0), GRAY)
    assert not torch.equal(corrupt(RGB, name, 5, seed=0), RGB)


@pytest.mark.parametrize("name", ["gaussian_noise", "glass_blur", "snow", "frost", "elastic_transform"])
def test_seed_changes_random_corruptions(name: str) -> None:
    assert not torch.equal(corrupt(GRAY, name, 3, seed=0), corrupt(GRAY, name, 3, seed=1))


@pytest.mark.parametrize("name", MONOTONE)
def test_deviation_grows_with_severity(name: str) -> None:
    for images in (GRAY, RGB):
        deviation = [
            (corrupt(images, name, s).float() - images.float()).abs().mean().item() for s in range(1, 6)
        ]
        assert all(a < b for a, b in itertools.pairwise(deviation)), deviation


def test_hand_checked_values() -> None:
    flat = torch.full((1, 1, 8, 8), 100, dtype=torch.uint8)
    # contrast keeps a flat image; brightness adds c * 255 to the value channel
    assert torch.equal(corrupt(flat, "contrast", 5), flat)
    assert torch.all(corrupt(flat, "brightness", 1) == round(100 + 0.05 * 255))
    # a flat image is invariant under every blur
    for name in ("gaussian_blur", "defocus_blur", "motion_blur", "zoom_blur", "pixelate"):
        assert torch.equal(corrupt(flat, name, 5), flat), name


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="unknown corruption"):
        corrupt(GRAY, "rain", 1)
    with pytest.raises(ValueError, match="severity"):
        corrupt(GRAY, "fog", 6)
    with pytest.raises(ValueError, match="uint8"):
        corrupt(GRAY.float(), "fog", 1)


def test_writer_uses_official_layout_and_reader_round_trips(tmp_path: Path) -> None:
    labels = torch.tensor([3, 1, 4, 1])
    write_corrupted_dataset(GRAY, labels, tmp_path, corruptions=["fog", "pixelate"], seed=2)
    raw = np.load(tmp_path / "fog.npy")
    assert raw.shape == (20, 28, 28, 1) and raw.dtype == np.uint8
    assert np.load(tmp_path / "labels.npy").tolist() == labels.tolist() * 5
    images, read_labels = read_corrupted(tmp_path, "fog", severity=4)
    assert torch.equal(images, corrupt(GRAY, "fog", 4, seed=2)) and torch.equal(read_labels, labels)
    everything, all_labels = read_corrupted(tmp_path, "pixelate")
    assert everything.shape == (20, 1, 28, 28) and len(all_labels) == 20
    with pytest.raises(FileNotFoundError, match=r"snow\.npy"):
        read_corrupted(tmp_path, "snow")


def test_reader_loads_official_cifar10c_files(tmp_path: Path) -> None:
    # official CIFAR-10-C: (50000, 32, 32, 3) uint8 per corruption, labels (50000,) uint8
    rng = np.random.default_rng(0)
    stack = rng.integers(0, 256, size=(10, 32, 32, 3), dtype=np.uint8)
    np.save(tmp_path / "frost.npy", stack)
    np.save(tmp_path / "labels.npy", np.tile(np.array([7, 2], dtype=np.uint8), 5))
    images, labels = read_corrupted(tmp_path, "frost", severity=2)
    assert images.shape == (2, 3, 32, 32)
    assert torch.equal(images, torch.from_numpy(stack[2:4]).permute(0, 3, 1, 2))
    assert labels.dtype == torch.int64 and labels.tolist() == [7, 2]
