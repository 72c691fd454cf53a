"""Datasets: find the raw files, prepare them once, and serve whole batches from memory.

`prepare_dataset` reads the raw files through torchvision's own loader, holds out a
seeded validation split, and saves uint8 tensors in one small file. Training jobs load
that file in a fraction of a second and keep every image in memory (on the GPU when
training there); augmentation runs on whole batches, with no per-sample Python work.
ImageNet is the exception: its prepared file is an index, and its splits stream JPEGs
(`datasets/imagenet.py`) behind the same `batches` interface.
"""

from __future__ import annotations

import gzip
import math
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from .checkpoints import atomic_torch_save, load_torch_file
from .config import DataSettings

if TYPE_CHECKING:
    from .datasets.imagenet import StreamedSplit

DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
IDX_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)
DATASETS = {"fashion_mnist": "FashionMNIST"}  # torchvision.datasets class names
# read through `sparse_soups.datasets` (torchvision's loaders and checksums): `data.root` is a
# torchvision root holding the dataset, else torchvision downloads into `data.download_root`
TORCHVISION_DATASETS = ("mnist", "cifar10", "cifar100")


class DataNotFoundError(FileNotFoundError):
    """None of the places the raw files may come from has them."""


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


class DataError(ValueError):
    """A raw data file that exists but cannot be read."""


def _read_raw_dir(dataset_class: type, raw_dir: Path) -> tuple[torch.Tensor, ...]:
    with tempfile.TemporaryDirectory() as staging:
        _stage_for_torchvision(raw_dir, Path(staging), dataset_class.__name__)
        try:
            return _read_splits(dataset_class, Path(staging))
        except Exception as error:  # torchvision's IDX parser asserts on bad headers
            raise DataError(f"the IDX files in {raw_dir} cannot be read ({error!r})") from error


def _read_splits(dataset_class: type, root: Path) -> tuple[torch.Tensor, ...]:
    train = dataset_class(str(root), train=True, download=False)
    test = dataset_class(str(root), train=False, download=False)
    return train.data, train.targets, test.data, test.targets


def load_raw(settings: DataSettings) -> tuple[tuple[torch.Tensor, ...], str]:
    """Train and test tensors, from the first source that has the files, and its name.

    Order: `data.root` from the config, Debian's `dataset-fashion-mnist` package, then a
    download by torchvision into `data.download_root`.
    """
    if settings.dataset in TORCHVISION_DATASETS:
        from .datasets import load_torchvision_dataset

        if settings.root:
            return load_torchvision_dataset(settings.dataset, Path(settings.root)), settings.root
        download_root = Path(settings.download_root)
        tensors = load_torchvision_dataset(settings.dataset, download_root, download=True)
        return tensors, f"torchvision download into {download_root}"
    if settings.dataset not in DATASETS:
        known = sorted([*DATASETS, *TORCHVISION_DATASETS])
        raise ValueError(f"data.dataset: unknown dataset '{settings.dataset}' (known: {known})")
    import torchvision  # only the prepare step needs it; it is slow to import

    dataset_class = getattr(torchvision.datasets, DATASETS[settings.dataset])
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


def _with_channels(images: torch.Tensor) -> torch.Tensor:
    """(N, H, W) gray images get a channel axis; (N, C, H, W) ones are kept."""
    return images.unsqueeze(1) if images.ndim == 3 else images


def prepare_dataset(settings: DataSettings, out: Path, min_train: int = 1) -> dict[str, object]:
    """Split off a seeded validation set and save everything as uint8 tensors (ImageNet:
    the index of its files). Refuses splits without a validation image or with fewer
    than `min_train` (a batch) training images, naming the keys, before anything trains."""
    if settings.dataset == "imagenet":
        from .datasets import imagenet

        prepared = imagenet.prepare(settings)
        _check_split(prepared, settings, min_train)
        atomic_torch_save(prepared, out)
        return prepared
    (train_x, train_y, test_x, test_y), source = load_raw(settings)
    train_x, test_x = _with_channels(train_x), _with_channels(test_x)
    generator = torch.Generator().manual_seed(settings.split_seed)
    order = torch.randperm(len(train_x), generator=generator)
    n_val = round(settings.validation_fraction * len(train_x))
    val_idx, train_idx = order[:n_val], order[n_val:]
    prepared = {
        "train_images": train_x[train_idx].contiguous(),
        "train_labels": train_y[train_idx].clone(),
        "val_images": train_x[val_idx].contiguous(),
        "val_labels": train_y[val_idx].clone(),
        "test_images": test_x.contiguous(),
        "test_labels": test_y.clone(),
        "num_classes": int(train_y.max()) + 1,
        "source": source,
    }
    _check_split(prepared, settings, min_train)
    atomic_torch_save(prepared, out)
    return prepared


def _check_split(prepared: dict[str, object], settings: DataSettings, min_train: int) -> None:
    n_val, n_all = len(prepared["val_labels"]), len(prepared["train_labels"])
    n_train = n_all if settings.train_subset is None else min(settings.train_subset, n_all)
    if n_val < 1:
        raise DataError(
            f"data.validation_fraction: {settings.validation_fraction} of {n_all + n_val} training images "
            "leaves no validation image (every evaluation, greedy soups and Lottery Pools need them)"
        )
    if n_train < min_train:
        fraction = settings.validation_fraction
        cause = (
            f"data.train_subset: {settings.train_subset}"
            if n_train < n_all
            else f"data.validation_fraction: {fraction} leaves {n_train} of {n_all + n_val}"
        )
        raise DataError(f"{cause} training images, fewer than one batch (pretrain.batch_size {min_train})")


@dataclass
class Split:
    images: torch.Tensor  # float, normalized, (N, C, H, W)
    labels: torch.Tensor

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def device(self) -> torch.device:
        return self.images.device

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.images.shape[1:])

    def head(self, fraction: float) -> Split:
        n = max(1, round(fraction * len(self)))
        return Split(self.images[:n], self.labels[:n])

    def batches(
        self, batch_size: int, generator: torch.Generator | None = None
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Batches in a random order when a generator is given, else in order."""
        n = len(self)
        if generator is None:
            for start in range(0, n, batch_size):
                yield self.images[start : start + batch_size], self.labels[start : start + batch_size]
            return
        order = torch.randperm(n, generator=generator).to(self.labels.device)
        for start in range(0, n, batch_size):
            index = order[start : start + batch_size]
            yield self.images[index], self.labels[index]


@dataclass
class Dataset:
    train: Split | StreamedSplit
    val: Split | StreamedSplit
    test: Split | StreamedSplit
    num_classes: int
    pad_value: float | tuple[float, ...]  # a black pixel after normalization, per channel
    mean: tuple[float, ...] = (0.0,)  # per channel, of the training images scaled to [0, 1]
    std: tuple[float, ...] = (1.0,)

    @property
    def streamed(self) -> bool:
        return not isinstance(self.train, Split)

    @property
    def device(self) -> torch.device:
        return self.train.device

    @property
    def input_shape(self) -> tuple[int, ...]:
        return self.test.input_shape

    @property
    def in_channels(self) -> int:
        return self.input_shape[0]

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 images (N, C, H, W) -> float as the splits were (e.g. corrupted test images)."""
        mean, std = (torch.tensor(v).view(1, -1, 1, 1) for v in (self.mean, self.std))
        return ((images.float() / 255 - mean) / std).to(self.device)

    def training_batches(
        self, batch_size: int, generator: torch.Generator, augment: DataSettings
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """One epoch of shuffled, augmented batches; `generator` fixes order and augmentation."""
        if self.streamed:  # RandomResizedCrop + flip, per image in the loader
            yield from self.train.batches(batch_size, generator, augment=True)
            return
        for images, labels in self.train.batches(batch_size, generator):
            images = augment_batch(
                images, augment.crop_padding, augment.horizontal_flip, self.pad_value, generator,
                rotation=augment.rotation_degrees,
            )  # fmt: skip
            yield images, labels

    def corrupted_split(self, ood_dir: Path, name: str, severity: int) -> Split | StreamedSplit:
        """One cell of the corrupted test set written by the `corrupt_test_set` step."""
        if self.streamed:
            from .datasets.imagenet import corrupted_split

            return corrupted_split(ood_dir, name, severity, like=self.test)
        from .corruptions import read_corrupted

        images, labels = read_corrupted(Path(ood_dir), name, severity)
        return Split(self.normalize(images), labels.to(self.device))


def load_prepared(path: Path, settings: DataSettings, device: torch.device | str = "cpu") -> Dataset:
    """Load the prepared file, normalize with training statistics, move to `device`."""
    raw = load_torch_file(path, what="prepared dataset")
    if raw.get("streamed"):
        from .datasets import imagenet

        return Dataset(**imagenet.splits(raw, settings, torch.device(device)), num_classes=raw["num_classes"],
                       pad_value=0.0)  # fmt: skip
    train_images, train_labels = raw["train_images"], raw["train_labels"]
    if settings.train_subset is not None:  # the split is already shuffled: a prefix is random
        train_images, train_labels = (
            train_images[: settings.train_subset],
            train_labels[: settings.train_subset],
        )
    mean, std = channel_statistics(train_images)
    mean_t, std_t = (torch.tensor(v).view(1, -1, 1, 1) for v in (mean, std))

    def split(images: torch.Tensor, labels: torch.Tensor) -> Split:
        normalized = (images.float() / 255 - mean_t) / std_t
        return Split(normalized.to(device), labels.long().to(device))

    return Dataset(
        train=split(train_images, train_labels),
        val=split(raw["val_images"], raw["val_labels"]),
        test=split(raw["test_images"], raw["test_labels"]),
        num_classes=raw["num_classes"],
        pad_value=tuple(-m / s for m, s in zip(mean, std, strict=True)),
        mean=mean,
        std=std,
    )


def channel_statistics(images: torch.Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and standard deviation of uint8 images (N, C, H, W) scaled to
    [0, 1]: each dataset is normalized with its own training statistics, channel by channel."""
    scaled = images.float() / 255
    channels = range(scaled.shape[1])
    return (
        tuple(scaled[:, c].mean().item() for c in channels),
        tuple(scaled[:, c].std().item() for c in channels),
    )


def _fill(pad_value: float | tuple[float, ...], images: torch.Tensor) -> float | torch.Tensor:
    """A scalar fill where every channel pads alike, else one value per channel."""
    values = (pad_value,) if isinstance(pad_value, int | float) else tuple(pad_value)
    if len(set(values)) == 1:
        return float(values[0])
    return torch.tensor(values, dtype=images.dtype, device=images.device).view(1, -1, 1, 1)


def augment_batch(
    images: torch.Tensor,
    padding: int,
    flip: bool,
    pad_value: float | tuple[float, ...],
    generator: torch.Generator,
    rotation: float = 0.0,
) -> torch.Tensor:
    """Random crop with `padding` pixels, random horizontal flip and, with `rotation`, a
    random rotation in [-rotation, rotation] degrees (filled with `pad_value`), for a whole batch."""
    n, _, height, width = images.shape
    fill = _fill(pad_value, images)
    if padding > 0:
        if isinstance(fill, float):
            padded = torch.nn.functional.pad(images, [padding] * 4, value=fill)
        else:  # per-channel fill: pad the offset from it with zeros
            padded = torch.nn.functional.pad(images - fill, [padding] * 4) + fill
        dy = torch.randint(0, 2 * padding + 1, (n, 1, 1), generator=generator).to(images.device)
        dx = torch.randint(0, 2 * padding + 1, (n, 1, 1), generator=generator).to(images.device)
        rows = (dy + torch.arange(height, device=images.device).view(1, -1, 1)).expand(n, height, width)
        cols = (dx + torch.arange(width, device=images.device).view(1, 1, -1)).expand(n, height, width)
        batch = torch.arange(n, device=images.device).view(n, 1, 1)
        images = padded.permute(0, 2, 3, 1)[batch, rows, cols].permute(0, 3, 1, 2)
    if flip:
        flipped = torch.rand(n, generator=generator).to(images.device) < 0.5
        images = torch.where(flipped.view(n, 1, 1, 1), images.flip(-1), images)
    if rotation > 0:
        images = rotate_batch(images, rotation, fill, generator)
    return images.contiguous()


def rotate_batch(
    images: torch.Tensor, degrees: float, fill: float | torch.Tensor, generator: torch.Generator
) -> torch.Tensor:
    """Rotate each image by its own angle, uniform in [-degrees, degrees], filling with `fill`."""
    n = len(images)
    angles = (torch.rand(n, generator=generator) * 2 - 1) * math.radians(degrees)
    cos, sin = angles.cos(), angles.sin()
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0], theta[:, 0, 1], theta[:, 1, 0], theta[:, 1, 1] = cos, -sin, sin, cos
    theta = theta.to(device=images.device, dtype=images.dtype)
    grid = torch.nn.functional.affine_grid(theta, list(images.shape), align_corners=False)
    rotated = torch.nn.functional.grid_sample(images - fill, grid, align_corners=False, padding_mode="zeros")
    return rotated + fill  # zeros padding of (x - fill) is `fill` after the shift back


def iterate_batches(
    split: Split | StreamedSplit, batch_size: int, generator: torch.Generator | None = None
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Un-augmented batches (evaluation, BN recalibration), shuffled when a generator is given."""
    return split.batches(batch_size, generator)
