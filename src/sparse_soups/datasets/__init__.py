"""The paper's datasets: MNIST, CIFAR-10/100 in memory (through torchvision), ImageNet streamed.

The small datasets are read by torchvision's own loaders (so the real file formats and
checksums apply) and returned as uint8 tensors (N, C, H, W), the form `data.py` keeps in
memory and augments batch-wise. ImageNet is too large for that: it is streamed from an
ImageFolder directory through a DataLoader (`imagenet.py`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..data import DataError, DataNotFoundError, augment_batch
from ..data import rotate_batch as rotate_batch  # re-exported: it lived here first

TORCHVISION_CLASSES = {
    "mnist": "MNIST",
    "fashion_mnist": "FashionMNIST",
    "cifar10": "CIFAR10",
    "cifar100": "CIFAR100",
}
# augmentation the paper uses per dataset: crop padding, flip, rotation in degrees
AUGMENTATION = {
    "mnist": (0, False, 0.0),
    "fashion_mnist": (4, True, 0.0),
    "cifar10": (4, True, 0.0),
    "cifar100": (4, True, 15.0),
}


@dataclass(frozen=True)
class Source:
    """Where to download a dataset from instead of torchvision's default, with its checksums.

    `url` is the archive (CIFAR) or the directory holding the files (MNIST); `md5` the archive's
    MD5 (CIFAR); `files` maps each file name to its MD5 (CIFAR batch files, MNIST .gz files).
    """

    url: str
    md5: str | None = None
    files: Mapping[str, str] = field(default_factory=dict)


def _torchvision_class(name: str, source: Source | None) -> type:
    import torchvision

    if name not in TORCHVISION_CLASSES:
        raise ValueError(f"unknown dataset '{name}' (known: {sorted(TORCHVISION_CLASSES)})")
    base = getattr(torchvision.datasets, TORCHVISION_CLASSES[name])
    if source is None:
        return base
    if name.startswith("cifar"):  # one archive; then each extracted batch file is checked
        attrs = {
            "url": source.url,
            "tgz_md5": source.md5,
            "train_list": [[f, source.files[f]] for f, _ in base.train_list],
            "test_list": [[f, source.files[f]] for f, _ in base.test_list],
        }
        if "meta" in base.__dict__:
            attrs["meta"] = {**base.meta, "md5": source.files[base.meta["filename"]]}
    else:  # MNIST family: four .gz files under one or more mirrors
        attrs = {
            "mirrors": [source.url.rstrip("/") + "/"],
            "resources": [(f, source.files[f]) for f, _ in base.resources],
        }
    return type(base.__name__, (base,), attrs)  # same name: torchvision derives folders from it


def load_torchvision_dataset(
    name: str, root: Path, download: bool = False, source: Source | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Train images, train labels, test images, test labels as uint8 (N, C, H, W) / int64.

    Uses the copy under `root` if its checksums pass; else, with `download`, fetches it from
    torchvision's URL (or `source`), verifying the MD5s. A checksum failure names the file.
    """
    dataset_class = _torchvision_class(name, source)
    root = Path(root)
    try:
        train = dataset_class(str(root), train=True, download=download)
        test = dataset_class(str(root), train=False, download=download)
    except RuntimeError as error:
        message = str(error)
        if "corrupted" not in message and "not found" not in message.lower():
            raise
        bad = _failed_checksums(dataset_class, root)
        if bad:
            raise DataError(
                f"{name}: checksum mismatch for {', '.join(map(str, bad))}; delete it and download again"
            ) from error
        raise DataNotFoundError(
            f"{name} not found under {root}"
            + ("" if download else " (pass download=True to fetch it)")
            + f" ({message})"
        ) from error
    return (*_as_tensors(train), *_as_tensors(test))


def _failed_checksums(dataset_class: type, root: Path) -> list[Path]:
    """Files present under `root` whose MD5 does not match the one the class expects."""
    from torchvision.datasets.utils import check_integrity

    expected: list[tuple[Path, str]] = []
    if hasattr(dataset_class, "tgz_md5"):
        folder = root / dataset_class.base_folder
        expected.append((root / dataset_class.filename, dataset_class.tgz_md5))
        expected += [(folder / f, md5) for f, md5 in dataset_class.train_list + dataset_class.test_list]
        expected.append((folder / dataset_class.meta["filename"], dataset_class.meta["md5"]))
    else:
        raw = root / dataset_class.__name__ / "raw"
        expected += [(raw / f, md5) for f, md5 in dataset_class.resources]
    return [path for path, md5 in expected if path.is_file() and not check_integrity(str(path), md5)]


def _as_tensors(dataset) -> tuple[torch.Tensor, torch.Tensor]:
    images = dataset.data
    if isinstance(images, np.ndarray):  # CIFAR: (N, H, W, C) numpy
        images = torch.from_numpy(images).permute(0, 3, 1, 2)
    else:  # MNIST: (N, H, W) tensor
        images = images.unsqueeze(1)
    labels = torch.as_tensor(dataset.targets, dtype=torch.int64)
    return images.contiguous(), labels


def augment_for(
    name: str, images: torch.Tensor, pad_value: float, generator: torch.Generator
) -> torch.Tensor:
    """The paper's training augmentation for dataset `name` on a batch of normalized images."""
    padding, flip, degrees = AUGMENTATION[name]
    return augment_batch(images, padding, flip, pad_value, generator, rotation=degrees)
