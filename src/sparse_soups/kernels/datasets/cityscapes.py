"""Cityscapes semantic segmentation, read by torchvision's `Cityscapes`.

`data.root` holds `leftImg8bit/{train,val}/<city>/*_leftImg8bit.png` and
`gtFine/{train,val}/<city>/*_gtFine_labelIds.png`, as the official archives unpack. The
label ids are mapped to the 19 training classes (torchvision's `Cityscapes.classes`
table), every other id to the ignore index 255. The official validation split is the test
set (the test split has no public labels); `data.validation_fraction` of the training split
is held out for greedy soups and monitoring.

Images are resized once, when the data is prepared, to `data.image_size` rows and twice as
many columns (Cityscapes' 1:2 aspect; bilinear for images, nearest for masks), and kept in
memory as uint8 like every in-memory dataset: 2,975 + 500 images at 256 x 512 are 1.6 GB.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from . import DataError, DataNotFoundError, OfficialSplits

if TYPE_CHECKING:
    from ...config import DataSettings

IGNORE = 255
FOLDERS = ("leftImg8bit/train", "leftImg8bit/val", "gtFine/train", "gtFine/val")


def _train_id_table() -> tuple[np.ndarray, tuple[str, ...]]:
    """label id -> train id (255: ignored), and the names of the 19 training classes."""
    from torchvision.datasets import Cityscapes

    table = np.full(256, IGNORE, dtype=np.uint8)
    names = {}
    for entry in Cityscapes.classes:
        if 0 <= entry.id < 256 and entry.train_id not in (-1, IGNORE):
            table[entry.id] = entry.train_id
            names[entry.train_id] = entry.name
    return table, tuple(names[i] for i in sorted(names))


def _read_pair(image_path: str, mask_path: str, size: tuple[int, int], table: np.ndarray) -> tuple:
    from PIL import Image

    height, width = size
    try:
        with Image.open(image_path) as image:
            pixels = np.asarray(image.convert("RGB").resize((width, height), Image.Resampling.BILINEAR))
    except (OSError, ValueError) as error:
        raise DataError(f"cannot read the Cityscapes image {image_path}: {error}") from error
    try:
        with Image.open(mask_path) as mask:
            labels = np.asarray(mask.resize((width, height), Image.Resampling.NEAREST))
    except (OSError, ValueError) as error:
        raise DataError(f"cannot read the Cityscapes label file {mask_path}: {error}") from error
    if labels.ndim != 2:
        raise DataError(
            f"{mask_path}: expected one label id per pixel (a grey PNG), got shape {labels.shape}"
        )
    return pixels, table[labels]


def _split(
    root: Path, split: str, size: tuple[int, int], table: np.ndarray
) -> tuple[torch.Tensor, torch.Tensor]:
    from torchvision.datasets import Cityscapes

    try:
        dataset = Cityscapes(str(root), split=split, mode="fine", target_type="semantic")
    except RuntimeError as error:
        raise DataNotFoundError(
            f"cityscapes: {root} lacks leftImg8bit/{split} or gtFine/{split} ({error})"
        ) from error
    pairs = [(image, targets[0]) for image, targets in zip(dataset.images, dataset.targets, strict=True)]
    missing = [mask for _, mask in pairs if not os.path.isfile(mask)]
    if missing:
        raise DataNotFoundError(f"cityscapes: {len(missing)} label files are missing, e.g. {missing[0]}")
    if not pairs:
        raise DataNotFoundError(f"cityscapes: no images under {root}/leftImg8bit/{split}")
    pairs.sort()  # directory order differs between file systems; results must not
    with ThreadPoolExecutor(max_workers=max(1, min(8, os.cpu_count() or 1))) as pool:
        read = list(pool.map(lambda pair: _read_pair(*pair, size, table), pairs))
    images = torch.from_numpy(np.stack([pixels for pixels, _ in read])).permute(0, 3, 1, 2).contiguous()
    masks = torch.from_numpy(np.stack([labels for _, labels in read]))
    return images, masks


def load_cityscapes(settings: DataSettings) -> tuple[OfficialSplits, str]:
    """Train and (official) val, resized to `data.image_size` x 2 `data.image_size`."""
    if not settings.root:
        raise DataNotFoundError(
            "cityscapes: set data.root to the directory holding leftImg8bit/ and gtFine/ "
            "(the official archives unpacked); Cityscapes is not downloaded"
        )
    root = Path(settings.root)
    size = (settings.image_size, 2 * settings.image_size)
    table, names = _train_id_table()
    train = _split(root, "train", size, table)
    test = _split(root, "val", size, table)
    splits = OfficialSplits(train=train, val=None, test=test, num_classes=len(names), class_names=names)
    return splits, str(root)
