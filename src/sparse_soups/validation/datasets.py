"""Checks of an experiment's data and task that the schema cannot express: datasets that are
never downloaded must be where `data.root` says, with every file their loader reads; the
model must fit the dataset's task; and the training set's size, for the split checks, read
from the files where they are given. All before any job starts, and without torch."""

from __future__ import annotations

import gzip
from pathlib import Path
from typing import Any

from ..registry import DATASETS, MODELS


def dataset_problems(key: str, data: dict[str, Any], files: bool = True) -> list[str]:
    """The per-dataset setting checks of `data` and, with `files`, whether its files exist."""
    return (
        _imagenet_problems(key, data, files) + _celeba_problems(key, data, files)
        + _cityscapes_problems(key, data, files)
    )  # fmt: skip


def _present(root: str, files: bool) -> Path | None:
    """`root`, expanded, when its files are to be checked and it is a directory (a missing
    one is named once, by the generic `data.root` check)."""
    path = Path(root).expanduser()
    return path if files and path.is_dir() else None


def _imagenet_problems(key: str, data: dict[str, Any], files: bool) -> list[str]:
    """ImageNet is never downloaded: its ImageFolder root must hold train/ and val/."""
    if data["dataset"] != "imagenet":
        return []
    root = data["root"]
    if not isinstance(root, str):
        return [f"{key}.data.root: imagenet needs the directory holding train/ and val/ "
                "(ImageFolder layout), got null"]  # fmt: skip
    where = _present(root, files)
    if where is None:
        return []
    missing = [folder for folder in ("train", "val") if not (where / folder).is_dir()]
    return [f"{key}.data.root: '{root}' lacks {part}/ (ImageFolder layout)" for part in missing]


CITYSCAPES_FOLDERS = ("leftImg8bit/train", "leftImg8bit/val", "gtFine/train", "gtFine/val")


def _cityscapes_problems(key: str, data: dict[str, Any], files: bool) -> list[str]:
    """Cityscapes is never downloaded (it needs a login): root must hold the unpacked
    official archives; the augmentation's scale range must be a range."""
    if data["dataset"] != "cityscapes":
        return []
    found = []
    low, high = data["scale_range"]
    if low > high:
        found.append(f"{key}.data.scale_range: [{low}, {high}] is not [low, high] with low <= high")
    root = data["root"]
    if not isinstance(root, str):
        return [
            *found,
            f"{key}.data.root: cityscapes needs the directory holding leftImg8bit/ and gtFine/, got null",
        ]
    if (where := _present(root, files)) is not None:
        lacking = [f for f in CITYSCAPES_FOLDERS if not (where / f).is_dir()]
        found += [f"{key}.data.root: '{root}' lacks {folder}/" for folder in lacking]
    return found


def task_problems(key: str, experiment: dict[str, Any], files: bool = True) -> list[str]:
    """The model must produce what the dataset's task scores (a class per image, or per
    pixel), and segmentation has no corrupted test set here."""
    dataset, model = experiment["data"]["dataset"], experiment["model"]["name"]
    if dataset not in DATASETS or model not in MODELS:
        return []  # named by the schema
    task = DATASETS.info(dataset).get("task", "classification")
    model_task = MODELS.info(model).get("task", "classification")
    found = []
    if task != model_task:
        fitting = [name for name in MODELS.names() if MODELS.info(name).get("task", "classification") == task]
        found.append(
            f"{key}.model.name: {model} is a {model_task} model, but {dataset} is a {task} dataset "
            f"(use one of {', '.join(fitting)})"
        )
    if task != "classification" and experiment["ood"]["enabled"]:
        found.append(f"{key}.ood.enabled: {dataset} has no corrupted test set here; set ood.enabled: false")
    if task == "translation" and experiment["baselines"]["ensemble"]:
        found.append(
            f"{key}.baselines.ensemble: the prediction ensemble is not decoded for translation; "
            "set baselines.ensemble: false"
        )
    if task == "translation":
        found += _wmt16_problems(key, experiment["data"], files)
    return found


def _wmt16_problems(key: str, data: dict[str, Any], files: bool) -> list[str]:
    """The parallel text is never downloaded: root must hold the six plain-text files."""
    from ..kernels.dataset_files import wmt16_missing_files

    root = data["root"]
    if not isinstance(root, str):
        return [
            f"{key}.data.root: {data['dataset']} needs the directory of its parallel text files, got null"
        ]
    where = _present(root, files)
    lacking = [] if where is None else wmt16_missing_files(where)
    return [f"{key}.data.root: '{root}' lacks {path.name}" for path in lacking]


CELEBA_MAX_SIDE = 128  # 202,599 faces x 3 x 128^2 bytes = 10 GB in memory


def _celeba_problems(key: str, data: dict[str, Any], files: bool) -> list[str]:
    """Celeb-A is never downloaded (Google Drive quotas): root must hold torchvision's
    celeba/ folder with every file its loader parses; and it is kept in memory."""
    if data["dataset"] != "celeba":
        return []
    from ..kernels.dataset_files import FOLDER, missing_files

    found = []
    side = data["image_size"]
    if side > CELEBA_MAX_SIDE:
        gigabytes = 202_599 * 3 * side * side / 1e9
        found.append(
            f"{key}.data.image_size: {side} would hold Celeb-A's faces in {gigabytes:.0f} GB of memory; "
            f"use at most {CELEBA_MAX_SIDE} (config/celeba_resnet18.yaml uses 64)"
        )
    if data["target_attribute"] == data["group_attribute"]:
        found.append(
            f"{key}.data.group_attribute: '{data['group_attribute']}' is also the target_attribute; "
            "the groups cross the label with a different attribute (e.g. Male)"
        )
    root = data["root"]
    if not isinstance(root, str):
        return [
            *found,
            f"{key}.data.root: celeba needs the directory holding {FOLDER}/ (torchvision's layout), got null",
        ]
    if (where := _present(root, files)) is not None:
        found += [f"{key}.data.root: '{root}' lacks {path}" for path in missing_files(where)]
    return found


def _idx_count(path: Path) -> int | None:
    """The item count in an IDX file's header (gzip or plain), None if unreadable."""
    try:
        opener = gzip.open if path.suffix == ".gz" else open
        with opener(path, "rb") as handle:
            header = handle.read(8)
    except (OSError, EOFError):
        return None  # prepare-data names the file
    return int.from_bytes(header[4:8], "big") if len(header) == 8 else None


def training_set_size(dataset: str, root: str | None) -> int | None:
    """Images of the full training set: read from IDX headers under `root` for
    Fashion-MNIST, else the registered official size (None if unknown)."""
    if dataset == "fashion_mnist" and root:
        for directory in (Path(root), Path(root) / "FashionMNIST" / "raw"):
            for name in ("train-labels-idx1-ubyte", "train-labels-idx1-ubyte.gz"):
                if (directory / name).is_file():
                    return _idx_count(directory / name)
    if dataset == "wmt16_de_en" and root:
        from ..kernels.dataset_files import line_count

        try:
            return line_count(Path(root).expanduser() / "train.de") or None
        except OSError:
            return None  # named by _wmt16_problems
    if dataset == "cityscapes" and root:
        images = Path(root).expanduser() / "leftImg8bit" / "train"
        return sum(1 for _ in images.glob("*/*_leftImg8bit.png")) or None
    if dataset == "celeba" and root:
        from ..kernels.dataset_files import partition_counts

        try:
            return partition_counts(Path(root).expanduser())[0] or None
        except OSError:
            return None  # named by _celeba_problems
    return DATASETS.info(dataset).get("train_size") if dataset in DATASETS else None
