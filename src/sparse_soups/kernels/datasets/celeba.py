"""Celeb-A for attribute classification with groups, as fairness studies use it.

torchvision's `CelebA` reads the official files under `data.root`/celeba: the aligned
images (`img_align_celeba/`), `list_attr_celeba.txt`, `list_eval_partition.txt` (the
official train/valid/test split) and the identity, bounding-box and landmark lists, which
it parses too. The label is one attribute (`data.target_attribute`, e.g. Blond_Hair); each
image's group is that label crossed with a second attribute (`data.group_attribute`, e.g.
Male), so evaluation can report the accuracy of the worst of the four groups.

Images are center-cropped to the 178 x 178 face square and resized to `data.image_size`
once, here, then kept in memory as uint8 like every in-memory dataset.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from ..dataset_files import FOLDER, IMAGES, TEXT_FILES, missing_files
from . import DataError, DataNotFoundError, OfficialSplits

if TYPE_CHECKING:
    from ...config import DataSettings

SPLITS = {"train": "train", "val": "valid", "test": "test"}


def _celeba_class() -> type:
    """torchvision's CelebA, checking that the files exist rather than their MD5s: the
    checksums identify only the full official release, and every file is parsed here
    anyway (a damaged one fails below, named)."""
    from torchvision.datasets import CelebA

    class PresentCelebA(CelebA):
        def _check_integrity(self) -> bool:
            return not missing_files(Path(self.root))

    return PresentCelebA


def _read_image(path: Path, size: int) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as image:
        image.draft("RGB", (size, size))  # JPEG: decode at a reduced scale when it can
        image = image.convert("RGB")
        width, height = image.size
        side = min(width, height)
        left, top = (width - side) // 2, (height - side) // 2
        face = image.crop((left, top, left + side, top + side))
        return np.asarray(face.resize((size, size), Image.Resampling.BILINEAR), dtype=np.uint8)


def _images(folder: Path, names: list[str], size: int) -> torch.Tensor:
    """(N, 3, size, size) uint8, decoded in threads (PIL releases the GIL while decoding)."""

    def read(name: str) -> np.ndarray:
        path = folder / name
        try:
            return _read_image(path, size)
        except (OSError, ValueError) as error:
            raise DataError(f"cannot read the Celeb-A image {path}: {error}") from error

    with ThreadPoolExecutor(max_workers=max(1, min(8, os.cpu_count() or 1))) as pool:
        arrays = list(pool.map(read, names, chunksize=256))
    if not arrays:
        return torch.zeros((0, 3, size, size), dtype=torch.uint8)
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()


def load_celeba(settings: DataSettings) -> tuple[OfficialSplits, str]:
    """The official splits, labelled by `data.target_attribute`, grouped by it crossed with
    `data.group_attribute`."""
    if not settings.root:
        raise DataNotFoundError(
            "celeba: set data.root to the directory holding celeba/ (torchvision's layout: "
            f"celeba/{IMAGES}/ and {', '.join(TEXT_FILES)}); Celeb-A is not downloaded"
        )
    root = Path(settings.root)
    missing = missing_files(root)
    if missing:
        raise DataNotFoundError(f"celeba: data.root {root} lacks {', '.join(map(str, missing))}")
    target, group = settings.target_attribute, settings.group_attribute
    dataset_class = _celeba_class()
    splits: dict[str, tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = {}
    for ours, official in SPLITS.items():
        try:
            part = dataset_class(str(root), split=official, target_type="attr")
            column = {name: index for index, name in enumerate(part.attr_names)}
            labels = part.attr[:, column[target]].long().reshape(-1)
            groups = 2 * labels + part.attr[:, column[group]].long().reshape(-1)
            names = list(part.filename)
        except (KeyError, IndexError, TypeError, ValueError, RuntimeError) as error:
            raise DataError(
                f"celeba: cannot parse the attribute or partition lists under {root / FOLDER} "
                f"({type(error).__name__}: {error})"
            ) from error
        images = _images(root / FOLDER / IMAGES, names, settings.image_size)
        splits[ours] = (images, labels, groups)
    group_names = tuple(
        f"{'' if y else 'not '}{target}, {'' if a else 'not '}{group}" for y in (0, 1) for a in (0, 1)
    )
    official = OfficialSplits(
        train=splits["train"][:2],
        val=splits["val"][:2],
        test=splits["test"][:2],
        groups={name: split[2] for name, split in splits.items()},
        group_names=group_names,
        num_classes=2,
    )
    return official, str(root / FOLDER)
