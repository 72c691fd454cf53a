"""ImageNet streamed from an ImageFolder directory, and ImageNet-C read the same way.

ImageNet does not fit in memory, so `prepare` writes only an index (relative file paths
and labels, with a seeded validation split held out of train/) and the splits decode
JPEGs on the fly through a DataLoader. Images cross the worker boundary as uint8 at the
crop size; normalization happens on the training device.

Reproducibility does not depend on the number of loader workers: the batch order comes
from the training generator, and each image's random crop and flip from a seed derived
from the epoch's seed and the image's position, not from any worker's RNG state.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ...config import DataSettings, OodSettings
from . import DataNotFoundError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
RESIZE_RATIO = 256 / 224  # evaluation resizes the short side to 256 before the 224 crop
STREAMED_MANIFEST = "streamed.json"  # the corrupted set's index, for streamed datasets
JPEG_QUALITY = 85  # ImageNet-C's own


def train_transform(size: int):
    """The standard ImageNet augmentation on uint8 tensors: RandomResizedCrop + flip."""
    from torchvision.transforms import v2

    return v2.Compose([v2.RandomResizedCrop(size, antialias=True), v2.RandomHorizontalFlip()])


def eval_transform(size: int, resize: bool = True):
    """Resize (short side to size x 256/224) and centre crop; ImageNet-C is already cropped."""
    from torchvision.transforms import v2

    head = [v2.Resize(round(size * RESIZE_RATIO), antialias=True)] if resize else []
    return v2.Compose([*head, v2.CenterCrop(size)])


def read_image(path: Path) -> torch.Tensor:
    """uint8 (3, H, W) via PIL, as ImageFolder reads; grayscale and CMYK JPEGs (ImageNet has
    both) become RGB."""
    from PIL import Image, UnidentifiedImageError
    from torchvision.transforms.v2.functional import pil_to_tensor

    try:
        with Image.open(path) as image:
            return pil_to_tensor(image.convert("RGB"))
    except (OSError, UnidentifiedImageError) as error:
        raise DataNotFoundError(f"cannot read image {path}: {error}") from error


def index_folder(folder: Path, class_to_idx: dict[str, int] | None = None) -> tuple[list[str], list[int]]:
    """Image paths relative to `folder` and their labels, in ImageFolder's order.

    With `class_to_idx` (the training classes) every class folder must be one of them, so
    val/ and ImageNet-C labels mean what train/'s do."""
    from torchvision.datasets.folder import IMG_EXTENSIONS, find_classes, make_dataset

    if not folder.is_dir():
        raise DataNotFoundError(f"{folder} not found (expected <class>/<image> folders, ImageFolder layout)")
    classes, own = find_classes(str(folder))
    if class_to_idx is not None:
        unknown = sorted(set(classes) - set(class_to_idx))
        if unknown:
            raise DataNotFoundError(f"{folder}: class folder '{unknown[0]}' is not a training class")
        own = {name: class_to_idx[name] for name in classes}
    samples = make_dataset(str(folder), own, extensions=IMG_EXTENSIONS, allow_empty=True)
    if not samples:
        raise DataNotFoundError(f"{folder} holds no images")
    return [str(Path(path).relative_to(folder)) for path, _ in samples], [label for _, label in samples]


def prepare(settings: DataSettings) -> dict[str, Any]:
    """The index of `data.root`'s train/ and val/ (ImageNet's val/ is the test split)."""
    if settings.root is None:
        raise DataNotFoundError("data.root: ImageNet needs the directory holding train/ and val/, got null")
    root = Path(settings.root)
    from torchvision.datasets.folder import find_classes

    if not (root / "train").is_dir():
        raise DataNotFoundError(
            f"data.root {root} lacks train/ (expected <root>/{{train,val}}/<class>/<image>)"
        )
    classes, class_to_idx = find_classes(str(root / "train"))
    train_files, train_labels = index_folder(root / "train", class_to_idx)
    test_files, test_labels = index_folder(root / "val", class_to_idx)
    order = torch.randperm(len(train_files), generator=torch.Generator().manual_seed(settings.split_seed))
    n_val = round(settings.validation_fraction * len(train_files))
    val_idx, train_idx = order[:n_val].tolist(), order[n_val:].tolist()
    return {
        "streamed": True,
        "root": str(root.resolve()),
        "classes": classes,
        "train_files": [train_files[i] for i in train_idx],
        "train_labels": torch.tensor([train_labels[i] for i in train_idx]),
        "val_files": [train_files[i] for i in val_idx],
        "val_labels": torch.tensor([train_labels[i] for i in val_idx]),
        "test_files": test_files,
        "test_labels": torch.tensor(test_labels),
        "num_classes": len(classes),
        "source": str(root),
    }


@dataclass(frozen=True)
class StreamedSplit:
    """Images on disk, decoded per batch; `batches` is the in-memory Split's interface."""

    root: Path
    files: Sequence[str]
    labels: torch.Tensor  # int64, on the CPU
    image_size: int
    device: torch.device
    workers: int = 0
    resize: bool = True  # False for ImageNet-C, whose images are already centre crops

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return (3, self.image_size, self.image_size)

    def head(self, fraction: float) -> StreamedSplit:
        n = max(1, round(fraction * len(self)))
        return dataclasses.replace(self, files=self.files[:n], labels=self.labels[:n])

    def batches(
        self, batch_size: int, generator: torch.Generator | None = None, augment: bool = False
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Normalized float batches on `device`; shuffled with `generator`, augmented with `augment`."""
        n = len(self)
        order = torch.randperm(n, generator=generator) if generator is not None else torch.arange(n)
        seed = int(torch.randint(2**62, (1,), generator=generator)) if augment else 0
        images = _Images(self, augment, seed)
        batches = torch.utils.data.BatchSampler(order.tolist(), batch_size, drop_last=False)
        loader = torch.utils.data.DataLoader(
            images, batch_sampler=batches, num_workers=self.workers, pin_memory=self.device.type == "cuda"
        )
        for pixels, labels in loader:
            yield normalize(pixels, self.device), labels.to(self.device, non_blocking=True)


class _Images(torch.utils.data.Dataset):
    """(uint8 image, label) by position; picklable, so it runs in loader workers."""

    def __init__(self, split: StreamedSplit, augment: bool, seed: int) -> None:
        self.split, self.augment, self.seed = split, augment, seed
        size = split.image_size
        self.transform = train_transform(size) if augment else eval_transform(size, split.resize)

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        image = read_image(self.split.root / self.split.files[index])
        if self.augment:  # torchvision draws from the global RNG: seed it per image, then restore it
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(self.seed + index)
                image = self.transform(image)
        else:
            image = self.transform(image)
        return image, int(self.split.labels[index])


def normalize(pixels: torch.Tensor, device: torch.device) -> torch.Tensor:
    """uint8 (N, 3, H, W) -> float normalized with ImageNet's channel statistics, on `device`.

    One multiply and one subtract in place ((x / 255 - mean) / std folded): on a CPU
    without loader workers this runs in the training process, once per pixel."""
    std = torch.tensor(IMAGENET_STD, device=device).view(1, 3, 1, 1)
    scale = 1 / (255 * std)
    shift = torch.tensor(IMAGENET_MEAN, device=device).view(1, 3, 1, 1) / std
    return pixels.to(device, non_blocking=True).float().mul_(scale).sub_(shift)


def splits(raw: dict[str, Any], settings: DataSettings, device: torch.device) -> dict[str, StreamedSplit]:
    """The train, val and test splits of a prepared index (`data.train_subset`: a prefix of
    the already shuffled training split)."""
    root = Path(raw["root"])
    for name in ("train", "val"):
        if not (root / name).is_dir():
            raise DataNotFoundError(f"{root / name} not found: the prepared index points at a moved dataset")

    def split(files: Sequence[str], labels: torch.Tensor, folder: str) -> StreamedSplit:
        return StreamedSplit(
            root / folder, files, labels.long(), settings.image_size, device, settings.loader_workers
        )

    n_train = settings.train_subset or len(raw["train_files"])
    return {
        "train": split(raw["train_files"][:n_train], raw["train_labels"][:n_train], "train"),
        "val": split(raw["val_files"], raw["val_labels"], "train"),
        "test": split(raw["test_files"], raw["test_labels"], "val"),
    }


def write_ood_index(ood: OodSettings, raw: dict[str, Any], image_size: int, out_dir: Path) -> dict[str, Any]:
    """The corrupted test set of a streamed dataset: an index of ImageNet-C cells under `out_dir`.

    `files`: the official ImageNet-C directory (`<corruption>/<severity>/<class>/*.JPEG`) at
    `ood.root`, a seeded subset of each cell (the same positions in every cell).
    `generate`: the same seeded subset of the test split, centre-cropped, corrupted here at
    the configured severities and written as JPEG in ImageNet-C's layout under `out_dir`.
    """
    from ..ood_sets import ood_corruptions, subset_indices

    names = ood_corruptions(ood)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    class_to_idx = {name: index for index, name in enumerate(raw["classes"])}
    if ood.source == "files":
        if ood.root is None or not Path(ood.root).is_dir():
            raise FileNotFoundError(f"ood.root: ImageNet-C directory '{ood.root}' not found")
        root = Path(ood.root).resolve()
    elif ood.source == "generate":
        root = out_dir.resolve()
        _generate_imagenet_c(ood, raw, image_size, names, out_dir)
    else:
        raise ValueError(f"ood.source: unknown source '{ood.source}' (known: generate, files)")
    cells: dict[str, dict[str, list]] = {}
    for name in names:
        cells[name] = {}
        for severity in ood.severities:
            files, labels = index_folder(root / name / str(severity), class_to_idx)
            keep = subset_indices(len(files), ood.test_subset, ood.seed)
            cells[name][str(severity)] = [[files[i], labels[i]] for i in keep]
    manifest = {
        "source": ood.source, "root": str(root), "corruptions": list(names), "seed": ood.seed, "cells": cells,
    }  # fmt: skip
    (out_dir / STREAMED_MANIFEST).write_text(json.dumps(manifest) + "\n")
    return {key: value for key, value in manifest.items() if key != "cells"}


def _generate_imagenet_c(
    ood: OodSettings, raw: dict[str, Any], size: int, names: Sequence[str], out_dir: Path, chunk: int = 64
) -> None:
    """Corrupt chunks of the test subset (bounded memory); each chunk's noise has its own seed."""
    from PIL import Image

    from ..corruptions import corrupt
    from ..ood_sets import subset_indices
    from ..seeds import derive_seed

    test_root = Path(raw["root"]) / "val"
    keep = subset_indices(len(raw["test_files"]), ood.test_subset, ood.seed)
    crop = eval_transform(size)
    for start in range(0, len(keep), chunk):
        files = [raw["test_files"][i] for i in keep[start : start + chunk]]
        clean = torch.stack([crop(read_image(test_root / file)) for file in files])
        for name in names:
            for severity in ood.severities:
                corrupted = corrupt(clean, name, severity, derive_seed(ood.seed, "imagenet-c", start))
                for file, image in zip(files, corrupted, strict=True):
                    target = (out_dir / name / str(severity) / file).with_suffix(".JPEG")
                    target.parent.mkdir(parents=True, exist_ok=True)
                    Image.fromarray(image.permute(1, 2, 0).numpy()).save(target, quality=JPEG_QUALITY)


def corrupted_split(ood_dir: Path, name: str, severity: int, like: StreamedSplit) -> StreamedSplit:
    """One corruption at one severity, from `write_ood_index`'s manifest in `ood_dir`."""
    path = Path(ood_dir) / STREAMED_MANIFEST
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found (the streamed dataset's corrupted-set index)")
    manifest = json.loads(path.read_text())
    try:
        cell = manifest["cells"][name][str(severity)]
    except KeyError as error:
        raise ValueError(f"{path} has no cell {name} / severity {severity}") from error
    root = Path(manifest["root"]) / name / str(severity)
    labels = torch.tensor([label for _, label in cell], dtype=torch.long)
    return dataclasses.replace(like, root=root, files=[file for file, _ in cell], labels=labels, resize=False)
