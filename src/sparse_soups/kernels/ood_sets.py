"""Corrupted test sets on disk, in the official CIFAR-10-C layout: written from a test
split (`corruptions.corrupt`) or subsampled from the official files, and read back.

Files follow the official layout: `<corruption>.npy` of shape (5 * N, H, W, C) uint8,
severities 1..5 stacked in order, and `labels.npy` of shape (5 * N,).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from ..config import OodSettings
from .corruptions import ALL, SEVERITIES, Array, corrupt


def write_corrupted_dataset(
    images: torch.Tensor,
    labels: torch.Tensor,
    out_dir: Path,
    corruptions: Sequence[str] = ALL,
    seed: int = 0,
) -> list[Path]:
    """Write `<corruption>.npy` (5N, H, W, C) uint8 and `labels.npy` (5N,) like CIFAR-10-C."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name in corruptions:
        stacked = np.concatenate(
            [corrupt(images, name, severity, seed).numpy().transpose(0, 2, 3, 1) for severity in SEVERITIES]
        )
        written.append(_save_npy(out_dir / f"{name}.npy", stacked))
    labels_array = np.tile(np.asarray(labels, dtype=np.int64), len(SEVERITIES))
    written.append(_save_npy(out_dir / "labels.npy", labels_array))
    return written


def _save_npy(path: Path, array: Array) -> Path:
    """Write beside the target and rename, so a killed job never leaves a partial file."""
    partial = path.with_name(path.name + ".partial")
    with open(partial, "wb") as handle:
        np.save(handle, array)
    partial.replace(path)
    return path


def _load_npy(path: Path, mmap_mode: str | None = None) -> np.ndarray:
    """np.load, naming the file when it is truncated, pickled or not .npy at all."""
    try:
        return np.load(path, mmap_mode=mmap_mode, allow_pickle=False)
    except (OSError, ValueError, EOFError) as error:
        raise ValueError(f"{path} is not a readable .npy array ({type(error).__name__}: {error})") from error


def read_corrupted(
    directory: Path, name: str, severity: int | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Images (N, C, H, W) uint8 and labels of one corruption from a CIFAR-10-C/100-C style directory.

    Works for the official files and for `write_corrupted_dataset`'s alike; with `severity`
    only that fifth of the stack, else all five severities.
    """
    directory = Path(directory)
    path, labels_path = directory / f"{name}.npy", directory / "labels.npy"
    for required in (path, labels_path):
        if not required.is_file():
            raise FileNotFoundError(f"{required} not found (expected a CIFAR-10-C style directory)")
    images, labels = _load_npy(path, mmap_mode="r"), _load_npy(labels_path)
    if images.ndim == 3:  # (5N, H, W) grayscale
        images = images[..., None]
    if images.ndim != 4 or images.dtype != np.uint8 or len(images) != len(labels) or len(images) % 5:
        raise ValueError(
            f"{path}: expected uint8 (5N, H, W, C) matching {labels_path}, got {images.dtype} {images.shape} "
            f"and {labels.shape}"
        )
    if severity is not None:
        if severity not in SEVERITIES:
            raise ValueError(f"severity must be 1..5, got {severity}")
        n = len(images) // 5
        images, labels = images[(severity - 1) * n : severity * n], labels[(severity - 1) * n : severity * n]
    tensor = torch.from_numpy(np.ascontiguousarray(images).transpose(0, 3, 1, 2).copy())
    return tensor, torch.from_numpy(labels.astype(np.int64))


def subset_indices(n: int, subset: int | None, seed: int) -> np.ndarray:
    """A seeded, sorted choice of `subset` of `n` images (all of them for None or subset >= n).

    The same positions are taken from every corruption and severity, so cells differ only
    in the corruption, as in the official sets (each severity block is the same test images).
    """
    if subset is None or subset >= n:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).permutation(n)[:subset])


def write_ood_set(
    ood: OodSettings, images: torch.Tensor, labels: torch.Tensor, out_dir: Path
) -> dict[str, object]:
    """The evaluation's corrupted test set in the official `.npy` layout under `out_dir`.

    `generate`: corrupt a seeded subset of `images` (uint8 N, C, H, W) locally.
    `files`: validate the official CIFAR-10-C/100-C files under `ood.root` against the test
    images' shape and copy the same seeded subset of each severity block. Both write every
    severity (the layout stacks 5), and a `manifest.json` saying what the directory holds.
    """
    names = ood_corruptions(ood)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if ood.source == "generate":
        index = torch.from_numpy(subset_indices(len(images), ood.test_subset, ood.seed))
        write_corrupted_dataset(images[index], labels[index], out_dir, names, ood.seed)
        n = len(index)
    elif ood.source == "files":
        n = _copy_official_subset(ood, names, tuple(images.shape[1:]), out_dir)
    else:
        raise ValueError(f"ood.source: unknown source '{ood.source}' (known: generate, files)")
    manifest = {
        "source": ood.source, "root": ood.root, "corruptions": list(names),
        "images_per_severity": n, "seed": ood.seed,
    }  # fmt: skip
    (out_dir / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


MANIFEST = "manifest.json"


def ood_corruptions(ood: OodSettings) -> tuple[str, ...]:
    """The configured corruptions, all 19 when none are named; unknown names are an error."""
    unknown = sorted(set(ood.corruptions) - set(ALL))
    if unknown:
        raise ValueError(f"ood.corruptions: unknown corruption '{unknown[0]}' (known: {', '.join(ALL)})")
    return tuple(ood.corruptions) or ALL


def _copy_official_subset(
    ood: OodSettings, names: Sequence[str], image_shape: tuple[int, ...], out_dir: Path
) -> int:
    """Check every official file first (a missing one named before any copying), then copy."""
    if ood.root is None or not Path(ood.root).is_dir():
        raise FileNotFoundError(f"ood.root: directory '{ood.root}' of the official corrupted set not found")
    root = Path(ood.root)
    missing = [f"{name}.npy" for name in (*names, "labels") if not (root / f"{name}.npy").is_file()]
    if missing:
        raise FileNotFoundError(
            f"ood.root {root} lacks {', '.join(missing)} (expected CIFAR-10-C/100-C files)"
        )
    labels = _load_npy(root / "labels.npy")
    n = len(labels) // len(SEVERITIES)
    channels, height, width = image_shape
    index = subset_indices(n, ood.test_subset, ood.seed)
    blocks = np.concatenate([index + s * n for s in range(len(SEVERITIES))])
    for name in names:
        images = _load_npy(root / f"{name}.npy", mmap_mode="r")
        expected = (len(labels), height, width, channels)
        allowed = (expected, expected[:3]) if channels == 1 else (expected,)  # gray sets may omit C
        if images.dtype != np.uint8 or images.shape not in allowed:
            raise ValueError(
                f"{root / name}.npy: expected uint8 {expected} to match the test set and labels.npy, "
                f"got {images.dtype} {images.shape}"
            )
        subset = np.asarray(images[blocks]).reshape(len(blocks), height, width, channels)
        _save_npy(out_dir / f"{name}.npy", subset)
    _save_npy(out_dir / "labels.npy", labels[blocks].astype(np.int64))
    return len(index)
