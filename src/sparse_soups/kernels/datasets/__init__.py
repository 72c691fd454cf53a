"""The raw datasets: each is read into uint8 tensors, or (ImageNet) indexed, by the loader
`registry.DATASETS` names for it.

A loader takes the `data` settings and returns `((train images, train labels, test images,
test labels), source)`, images uint8 (N, C, H, W) and labels int64, the form `data.py` keeps
in memory and augments batch-wise; `source` says where the files came from. Datasets that
follow torchvision's `(root, train=..., download=...)` API share `load_torchvision`, which
reads through torchvision's own loaders (so the real file formats and checksums apply):
registering one takes its class as `torchvision_class`. Fashion-MNIST has its own search
order (`load_fashion_mnist`). A streamed dataset's loader returns an index of its files
instead (`imagenet.py`: too large for memory, its JPEGs are decoded per batch). A dataset
with its own validation split and per-image groups returns `OfficialSplits` instead of the
four tensors (`celeba.py`).
"""

from __future__ import annotations

import gzip
import importlib
import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from ...registry import DATASETS
from ..augment import augment_batch
from ..augment import rotate_batch as rotate_batch  # re-exported: it lived here first

if TYPE_CHECKING:
    from ...config import DataSettings

Tensors = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]

DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
IDX_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)


@dataclass(frozen=True)
class OfficialSplits:
    """Train, validation and test (images, labels) as the dataset's authors split them.

    `val` None: the dataset has no validation split with labels to spare (Cityscapes, whose
    official validation split is the test set), so `data.validation_fraction` of the
    training split is held out. `groups`: each image's group (an index into `group_names`)
    per split, for worst-group accuracy. Labels may be masks (N, H, W) for segmentation."""

    train: tuple[torch.Tensor, torch.Tensor]
    val: tuple[torch.Tensor, torch.Tensor] | None
    test: tuple[torch.Tensor, torch.Tensor]
    num_classes: int
    groups: Mapping[str, torch.Tensor] = field(default_factory=dict)  # "train" | "val" | "test"
    group_names: tuple[str, ...] = ()
    class_names: tuple[str, ...] = ()


class DataNotFoundError(FileNotFoundError):
    """None of the places the raw files may come from has them."""


class DataError(ValueError):
    """A raw data file that exists but cannot be read."""


@dataclass(frozen=True)
class Source:
    """Where to download a dataset from instead of torchvision's default, with its checksums.

    `url` is the archive (CIFAR) or the directory holding the files (MNIST); `md5` the archive's
    MD5 (CIFAR); `files` maps each file name to its MD5 (CIFAR batch files, MNIST .gz files).
    """

    url: str
    md5: str | None = None
    files: Mapping[str, str] = field(default_factory=dict)


def torchvision_class(name: str, source: Source | None = None) -> type:
    """The class registered as dataset `name`'s `torchvision_class` (the class itself, a
    `"module:Class"` path, or the name of a class in `torchvision.datasets`), with `source`
    its download location and checksums instead of its own."""
    base = DATASETS.info(name).get("torchvision_class")
    if base is None:
        raise ValueError(f"{DATASETS.key}: dataset '{name}' has no torchvision_class")
    if isinstance(base, str) and ":" in base:
        module, _, attribute = base.partition(":")
        base = getattr(importlib.import_module(module), attribute)
    elif isinstance(base, str):
        import torchvision  # only the prepare step needs it; it is slow to import

        base = getattr(torchvision.datasets, base)
    if source is None:
        return base
    if hasattr(base, "tgz_md5"):  # CIFAR: one archive; then each extracted batch file is checked
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


def load_torchvision(settings: DataSettings) -> tuple[Tensors, str]:
    """The loader of datasets read through torchvision: `data.root` is a torchvision root
    holding the dataset, else torchvision downloads it into `data.download_root`."""
    if settings.root:
        return load_torchvision_dataset(settings.dataset, Path(settings.root)), settings.root
    download_root = Path(settings.download_root)
    tensors = load_torchvision_dataset(settings.dataset, download_root, download=True)
    return tensors, f"torchvision download into {download_root}"


def load_torchvision_dataset(
    name: str, root: Path, download: bool = False, source: Source | None = None
) -> Tensors:
    """Train images, train labels, test images, test labels as uint8 (N, C, H, W) / int64.

    Uses the copy under `root` if its checksums pass; else, with `download`, fetches it from
    torchvision's URL (or `source`), verifying the MD5s. A checksum failure names the file.
    """
    dataset_class = torchvision_class(name, source)
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


def _idx_file(directory: Path, name: str) -> Path | None:
    for candidate in (directory / name, directory / f"{name}.gz"):
        if candidate.is_file():
            return candidate
    return None


def find_raw_dir(directory: Path) -> Path | None:
    """`directory` itself or its torchvision layout (`FashionMNIST/raw`), if it has all files."""
    for candidate in (directory, directory / "FashionMNIST" / "raw"):
        if all(_idx_file(candidate, name) for name in IDX_FILES):
            return candidate
    return None


def _stage_for_torchvision(raw_dir: Path, root: Path, folder: str) -> None:
    """Lay out (and un-gzip) the IDX files where torchvision's loader reads them."""
    target = root / folder / "raw"
    target.mkdir(parents=True)
    for name in IDX_FILES:
        source = _idx_file(raw_dir, name)
        opener = gzip.open if source.suffix == ".gz" else open
        try:
            with opener(source, "rb") as src, open(target / name, "wb") as dst:
                shutil.copyfileobj(src, dst)
        except (OSError, EOFError) as error:  # truncated or corrupt archive
            raise DataError(f"cannot read {source}: {error}") from error


def _read_raw_dir(dataset_class: type, raw_dir: Path) -> Tensors:
    with tempfile.TemporaryDirectory() as staging:
        _stage_for_torchvision(raw_dir, Path(staging), dataset_class.__name__)
        try:
            return _read_splits(dataset_class, Path(staging))
        except Exception as error:  # torchvision's IDX parser asserts on bad headers
            raise DataError(f"the IDX files in {raw_dir} cannot be read ({error!r})") from error


def _read_splits(dataset_class: type, root: Path) -> Tensors:
    train = dataset_class(str(root), train=True, download=False)
    test = dataset_class(str(root), train=False, download=False)
    return train.data, train.targets, test.data, test.targets


def load_fashion_mnist(settings: DataSettings) -> tuple[Tensors, str]:
    """Fashion-MNIST's loader: the four IDX files (plain or .gz) from the first source that
    has them. Order: `data.root` from the config, Debian's `dataset-fashion-mnist` package,
    then a download by torchvision into `data.download_root`."""
    dataset_class = torchvision_class(settings.dataset)
    if settings.root:  # named in the config: use it or say what it lacks, never skip it
        root = Path(settings.root)
        raw_dir = find_raw_dir(root)
        if raw_dir is None:
            missing = [name for name in IDX_FILES if _idx_file(root, name) is None]
            raise DataNotFoundError(
                f"data.root {root} lacks {', '.join(missing)} (or their .gz): point it at a "
                "directory with all four Fashion-MNIST files, or set it to null to use the "
                "Debian package or a download"
            )
        return _read_raw_dir(dataset_class, raw_dir), str(raw_dir)
    searched = [str(DEBIAN_FASHION_MNIST)]
    raw_dir = find_raw_dir(DEBIAN_FASHION_MNIST)
    if raw_dir is not None:
        return _read_raw_dir(dataset_class, raw_dir), str(raw_dir)
    download_root = Path(settings.download_root)
    try:
        dataset_class(str(download_root), train=True, download=True)
        dataset_class(str(download_root), train=False, download=True)
    except (OSError, RuntimeError) as error:  # URLError is an OSError
        raise DataNotFoundError(
            f"Fashion-MNIST not found: searched {', '.join(searched)} for {', '.join(IDX_FILES)} "
            f"(optionally .gz), and torchvision could not download it into {download_root} "
            f"({error}). Get it with `apt-get install dataset-fashion-mnist` (Debian/Ubuntu), "
            "or download the four files and set `data.root` in the config to their directory."
        ) from error
    return _read_splits(dataset_class, download_root), f"torchvision download into {download_root}"


def augment_for(
    name: str, images: torch.Tensor, pad_value: float, generator: torch.Generator
) -> torch.Tensor:
    """The paper's training augmentation for dataset `name` on a batch of normalized images."""
    padding, flip, degrees = DATASETS.info(name)["augmentation"]
    return augment_batch(images, padding, flip, pad_value, generator, rotation=degrees)
