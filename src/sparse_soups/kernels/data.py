"""Datasets: prepare the raw data once, and serve whole batches from memory.

`prepare_dataset` reads the raw files through the loader `registry.DATASETS` names for
`data.dataset` (`datasets/`: torchvision's own loaders), holds out a seeded validation
split, and saves uint8 tensors in one small file. Training jobs load that file in a
fraction of a second and keep every image in memory (on the GPU when training there);
augmentation (`augment.py`) runs on whole batches, with no per-sample Python work.
Streamed datasets (ImageNet) are the exception: the prepared file is an index, and the
splits stream JPEGs (`datasets/imagenet.py`) behind the same `batches` interface.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch

# the `x as x` names are re-exported: they lived here, and callers import them from here
from ..config import DataSettings
from ..registry import DATASETS
from .augment import augment_batch, augment_segmentation, channel_statistics
from .augment import rotate_batch as rotate_batch
from .checkpoints import atomic_torch_save, load_torch_file
from .datasets import DEBIAN_FASHION_MNIST as DEBIAN_FASHION_MNIST
from .datasets import IDX_FILES as IDX_FILES
from .datasets import DataError, OfficialSplits
from .datasets import DataNotFoundError as DataNotFoundError
from .datasets import _stage_for_torchvision as _stage_for_torchvision
from .datasets import find_raw_dir as find_raw_dir
from .stopwatch import not_arithmetic
from .tasks import CLASSIFICATION, TASKS, Classification, Segmentation, Translation

if TYPE_CHECKING:
    from .datasets.imagenet import StreamedSplit


def load_raw(settings: DataSettings) -> tuple[tuple[torch.Tensor, ...], str]:
    """Train and test tensors of an in-memory dataset, from the loader `registry.DATASETS`
    names for `data.dataset` (see `datasets/`), and where they came from."""
    return DATASETS.get(settings.dataset)(settings)


def _with_channels(images: torch.Tensor) -> torch.Tensor:
    """(N, H, W) gray images get a channel axis; (N, C, H, W) ones are kept."""
    return images.unsqueeze(1) if images.ndim == 3 else images


def prepare_dataset(settings: DataSettings, out: Path, min_train: int = 1) -> dict[str, object]:
    """Split off a seeded validation set and save everything as uint8 tensors (ImageNet:
    the index of its files). Refuses splits without a validation image or with fewer
    than `min_train` (a batch) training images, naming the keys, before anything trains."""
    info = DATASETS.info(settings.dataset)
    if info.get("streamed") or info.get("prepared"):  # its loader returns the prepared data
        prepared = DATASETS.get(settings.dataset)(settings)
        _check_split(prepared, settings, min_train)
        atomic_torch_save(prepared, out)
        return prepared
    raw, source = load_raw(settings)
    generator = torch.Generator().manual_seed(settings.split_seed)
    if isinstance(raw, OfficialSplits):
        prepared = _official_splits(raw, generator, settings.validation_fraction)
    else:
        train_x, train_y, test_x, test_y = raw
        train_x, test_x = _with_channels(train_x), _with_channels(test_x)
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
        }
    prepared["source"] = source
    _check_split(prepared, settings, min_train)
    atomic_torch_save(prepared, out)
    return prepared


def _official_splits(raw: OfficialSplits, generator: torch.Generator, fraction: float) -> dict[str, object]:
    """The dataset's own splits, its training split shuffled (so that `data.train_subset`,
    a prefix, is a random subset), with each split's groups; without a validation split,
    `fraction` of the training split is held out as one."""
    order = torch.randperm(len(raw.train[1]), generator=generator)
    splits = {"train": raw.train, "val": raw.val, "test": raw.test}
    index = {"train": order, "test": torch.arange(len(raw.test[1]))}
    if raw.val is None:
        n_val = round(fraction * len(order))
        splits["val"], index["train"], index["val"] = raw.train, order[n_val:], order[:n_val]
    else:
        index["val"] = torch.arange(len(raw.val[1]))
    prepared: dict[str, object] = {"num_classes": raw.num_classes, "official_splits": True}
    prepared |= {"group_names": list(raw.group_names)} if raw.group_names else {}
    prepared |= {"class_names": list(raw.class_names)} if raw.class_names else {}
    for split, (images, labels) in splits.items():
        prepared[f"{split}_images"] = _with_channels(images)[index[split]].contiguous()
        prepared[f"{split}_labels"] = labels[index[split]].clone()
        group_source = "train" if split == "val" and raw.val is None else split
        if group_source in raw.groups:
            prepared[f"{split}_groups"] = raw.groups[group_source][index[split]].clone()
    return prepared


def _check_split(prepared: dict[str, object], settings: DataSettings, min_train: int) -> None:
    n_val, n_all = len(prepared["val_labels"]), len(prepared["train_labels"])
    n_train = n_all if settings.train_subset is None else min(settings.train_subset, n_all)
    official = "group_names" in prepared  # the dataset's own validation split: no fraction held out
    if official and min(n_val, n_all, len(prepared["test_labels"])) < 1:
        raise DataError(
            f"{settings.dataset}: an official split under {prepared['source']} is empty "
            f"({n_all} training, {n_val} validation, {len(prepared['test_labels'])} test images)"
        )
    if n_val < 1:
        raise DataError(
            f"data.validation_fraction: {settings.validation_fraction} of {n_all + n_val} training images "
            "leaves no validation image (every evaluation, greedy soups and Lottery Pools need them)"
        )
    if n_train < min_train:
        fraction = settings.validation_fraction
        if n_train < n_all:
            cause = f"data.train_subset: {settings.train_subset}"
        elif official:
            cause = f"{settings.dataset}: the official training split holds {n_train}"
        else:
            cause = f"data.validation_fraction: {fraction} leaves {n_train} of {n_all + n_val}"
        raise DataError(f"{cause} training images, fewer than one batch (pretrain.batch_size {min_train})")


class Split:
    """Images (float, normalized, (N, C, H, W)) and labels, batched from memory.

    A split made with `normalize` keeps its uint8 images and converts them on first use:
    a job touches one or two of the three splits (an evaluation reads the test set and
    the head of the training set), and converting all of them cost ~0.15 s a job."""

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        normalize: Callable[[torch.Tensor], torch.Tensor] | None = None,
        groups: torch.Tensor | None = None,
        task: Classification = CLASSIFICATION,
        references: list[str] | None = None,
    ) -> None:
        self._images = images
        self._normalize = normalize
        self.labels = labels  # a class per image, or per pixel (segmentation masks)
        self.groups = groups  # each image's group (Dataset.group_names), where the data has them
        self.task = task  # how its predictions are scored (tasks.py)
        self.references = references  # translation: each source's reference sentence, as text

    @property
    def images(self) -> torch.Tensor:
        if self._normalize is not None:
            with not_arithmetic():  # loading, even when a training or evaluation step asks
                self._images, self._normalize = self._normalize(self._images), None
        return self._images

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def device(self) -> torch.device:
        return self.labels.device

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self._images.shape[1:])

    def head(self, fraction: float) -> Split:
        n = max(1, round(fraction * len(self)))
        groups = None if self.groups is None else self.groups[:n]
        references = None if self.references is None else self.references[:n]
        return Split(self._images[:n], self.labels[:n], self._normalize, groups, self.task, references)

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
    group_names: tuple[str, ...] = ()  # the groups of worst-group accuracy (Celeb-A), if any
    class_names: tuple[str, ...] = ()
    task: Classification = CLASSIFICATION  # or a subclass: Segmentation, Translation

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
        if isinstance(self.task, Translation):  # token ids: no augmentation
            yield from self.train.batches(batch_size, generator)
            return
        for images, labels in self.train.batches(batch_size, generator):
            if isinstance(self.task, Segmentation):  # image and mask transformed together
                yield augment_segmentation(
                    images, labels, augment.horizontal_flip, self.pad_value, self.task.ignore_index,
                    generator, augment.scale_range,
                )  # fmt: skip
                continue
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
        from .ood_sets import read_corrupted

        images, labels = read_corrupted(Path(ood_dir), name, severity)
        return Split(self.normalize(images), labels.to(self.device))


def load_prepared(path: Path, settings: DataSettings, device: torch.device | str = "cpu") -> Dataset:
    """Load the prepared file, normalize with training statistics, move to `device`."""
    # Memory-mapped: a job reads only the pages of the images it uses (a train_subset
    # prefix, the test set), not the whole file.
    raw = load_torch_file(path, what="prepared dataset", mmap=True)
    if raw.get("streamed"):
        from .datasets import imagenet

        return Dataset(**imagenet.splits(raw, settings, torch.device(device)), num_classes=raw["num_classes"],
                       pad_value=0.0)  # fmt: skip
    if raw.get("task") == "translation":
        return _translation_dataset(raw, settings, device)
    train_images, train_labels = raw["train_images"], raw["train_labels"]
    if settings.train_subset is not None:  # the split is already shuffled: a prefix is random
        train_images, train_labels = (
            train_images[: settings.train_subset],
            train_labels[: settings.train_subset],
        )
    mean, std = channel_statistics(train_images)
    mean_t, std_t = (torch.tensor(v).view(1, -1, 1, 1) for v in (mean, std))

    def normalize(images: torch.Tensor) -> torch.Tensor:
        return ((images.float() / 255 - mean_t) / std_t).to(device)

    task = TASKS[DATASETS.info(settings.dataset).get("task", "classification")]

    def split(name: str, images: torch.Tensor, labels: torch.Tensor) -> Split:
        groups = raw.get(f"{name}_groups")
        groups = None if groups is None else groups[: len(labels)].long().to(device)
        return Split(images, labels.long().to(device), normalize, groups, task)

    return Dataset(
        train=split("train", train_images, train_labels),
        val=split("val", raw["val_images"], raw["val_labels"]),
        test=split("test", raw["test_images"], raw["test_labels"]),
        num_classes=raw["num_classes"],
        pad_value=tuple(-m / s for m, s in zip(mean, std, strict=True)),
        mean=mean,
        std=std,
        group_names=tuple(raw.get("group_names", ())),
        class_names=tuple(raw.get("class_names", ())),
        task=task,
    )


def _translation_dataset(raw: dict, settings: DataSettings, device: torch.device | str) -> Dataset:
    """Token ids as they are (no normalization or augmentation), the references for BLEU, and
    the task holding the tokenizer the data was encoded with."""
    task = Translation(raw["tokenizer"], raw["max_length"], settings.label_smoothing)
    limit = settings.train_subset

    def split(name: str) -> Split:
        ids, labels = raw[f"{name}_images"], raw[f"{name}_labels"]
        if name == "train" and limit is not None:  # shuffled when prepared: a prefix is random
            ids, labels = ids[:limit], labels[:limit]
        return Split(
            ids.long().to(device), labels.long().to(device), None, None, task, raw.get(f"{name}_references")
        )

    return Dataset(train=split("train"), val=split("val"), test=split("test"), num_classes=raw["num_classes"],
                   pad_value=0.0, task=task)  # fmt: skip


def iterate_batches(
    split: Split | StreamedSplit, batch_size: int, generator: torch.Generator | None = None
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Un-augmented batches (evaluation, BN recalibration), shuffled when a generator is given."""
    return split.batches(batch_size, generator)
