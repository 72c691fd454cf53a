"""Streamed ImageNet input pipeline: `python benchmarks/imagenet_streaming.py`.

Why: on ImageNet the GPU waits on JPEG decoding unless enough loader workers keep up, so
a user sizing `data.loader_workers` needs images per second per worker. This measures the
package's streamed training and evaluation batches (PIL decode, RandomResizedCrop + flip
with a per-image seed, uint8 to the device, normalization there) against the pipeline of
torchvision's ImageNet reference recipe (ImageFolder, the same crops, ToTensor and
Normalize per image in the workers), on the same files, with 0, 1 and 2 workers, and how
long `prepare_data` takes to index a folder.

No ImageNet copy is reachable here: the images are synthetic JPEGs of ImageNet's median
size (500 x 375, quality 90, smooth colour fields plus noise so they compress like photos).
"""

from __future__ import annotations

import argparse
import dataclasses
import tempfile
import time
from pathlib import Path
from typing import Any

import _common
import numpy as np
import torch
from PIL import Image

from sparse_soups.config import DataSettings
from sparse_soups.kernels.data import load_prepared, prepare_dataset

CLASSES = 8
SIZE = (500, 375)  # width, height


def write_folder(root: Path, per_class: int, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0 : SIZE[1], 0 : SIZE[0]]
    for split, count in (("train", per_class), ("val", max(1, per_class // 4))):
        for label in range(CLASSES):
            folder = root / split / f"n{label:08d}"
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(count):
                phase = rng.uniform(0, 6.28, size=3)
                field = 127 + 100 * np.sin(x[..., None] / 60 + y[..., None] / 45 + phase)
                pixels = np.clip(field + rng.normal(0, 12, field.shape), 0, 255).astype(np.uint8)
                Image.fromarray(pixels).save(folder / f"img_{i}.JPEG", quality=90)


def reference_loader(
    root: Path, workers: int, train: bool, batch_size: int = 64
) -> torch.utils.data.DataLoader:
    """torchvision's classification reference: ImageFolder + per-image PIL transforms."""
    import torchvision
    from torchvision import transforms

    head = (
        [transforms.RandomResizedCrop(224), transforms.RandomHorizontalFlip()]
        if train
        else [transforms.Resize(256), transforms.CenterCrop(224)]
    )
    transform = transforms.Compose(
        [*head, transforms.ToTensor(), transforms.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))]
    )
    dataset = torchvision.datasets.ImageFolder(str(root / ("train" if train else "val")), transform=transform)
    return torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=train, num_workers=workers)


def images_per_second(batches, repeats: int) -> dict[str, Any]:
    def one_pass() -> int:
        return sum(len(labels) for _, labels in batches())

    count = one_pass()  # warm-up: page cache, worker start-up code paths
    timings = [_common.seconds(one_pass) for _ in range(repeats)]
    return _common.stats([count / t for t in timings])


def measure(root: Path, workers_list: list[int], repeats: int) -> dict[str, Any]:
    settings = DataSettings(dataset="imagenet", root=str(root), validation_fraction=0.01)
    start = time.perf_counter()
    prepare_dataset(settings, root / "data.pt")
    index_seconds = time.perf_counter() - start
    n_files = len(list(root.rglob("*.JPEG")))
    by_workers = {}
    for workers in workers_list:
        data = load_prepared(root / "data.pt", dataclasses.replace(settings, loader_workers=workers))
        generator = torch.Generator().manual_seed(0)
        train = lambda d=data, g=generator: d.training_batches(64, g, settings)  # noqa: E731
        rows = {
            "package_train": images_per_second(train, repeats),
            "reference_train": images_per_second(lambda w=workers: reference_loader(root, w, True), repeats),
            "package_eval": images_per_second(lambda d=data: d.test.batches(64), repeats),
            "reference_eval": images_per_second(lambda w=workers: reference_loader(root, w, False), repeats),
        }
        rows["ratio_train"] = round(rows["package_train"]["median"] / rows["reference_train"]["median"], 3)
        rows["ratio_eval"] = round(rows["package_eval"]["median"] / rows["reference_eval"]["median"], 3)
        by_workers[str(workers)] = rows
        print(workers, {k: v if isinstance(v, float) else v["median"] for k, v in rows.items()}, flush=True)
    return {"files": n_files, "index_seconds": round(index_seconds, 3), "images_per_s": by_workers}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(1)
    per_class = 8 if args.quick else 64
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        write_folder(root, per_class)
        result = measure(root, [0, 1] if args.quick else [0, 1, 2], repeats=1 if args.quick else 3)
    payload = {
        "machine": _common.machine(),
        "image_size": list(SIZE),
        "crop": 224,
        "train_images": per_class * CLASSES,
        "main_process_threads": 1,
        **result,
    }
    _common.write_result("imagenet_streaming", payload, args.quick)


if __name__ == "__main__":
    main()
