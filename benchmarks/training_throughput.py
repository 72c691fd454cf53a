"""Training throughput of the package's training step, against what it could be.

Why: nearly all of the workflow's compute is SGD epochs (pretraining and the m * P
retrains). This measures, in one process and interleaved so that machine noise hits
every variant alike:

- `package_dense`, `package_sparse90`: `sparse_soups.kernels.training.train` for one epoch, with
  dense masks and with 90%-sparse global magnitude masks;
- `minimal`: a hand-written loop doing the same work (same model, optimizer settings,
  batch size, in-memory normalized tensors, `augment_batch`) without the package's
  extras (mask re-application, LR schedule, finiteness check, accuracy bookkeeping);
  package / minimal >= 0.95 is the target;
- `dataloader_w0`, `dataloader_w2`: the conventional pipeline of the authors' code,
  torchvision's FashionMNIST through a DataLoader with per-sample PIL transforms
  (RandomCrop(28, padding=2), RandomHorizontalFlip, ToTensor, Normalize), 0 and 2 workers;

and the achieved FLOP/s (FlopCounterMode's count of one forward + backward) against the
peak of large fp32 matmuls on the same threads.

    python benchmarks/training_throughput.py [--threads 1 2] [--device auto] [--quick]
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import _common
import torch
import torchvision
from torch import nn
from torch.utils.data import DataLoader, Subset
from torch.utils.flop_counter import FlopCounterMode
from torchvision import transforms

from sparse_soups.config import Settings
from sparse_soups.kernels.data import (
    DEBIAN_FASHION_MNIST,
    Dataset,
    _stage_for_torchvision,
    augment_batch,
    find_raw_dir,
    load_prepared,
)
from sparse_soups.kernels.models import build_model
from sparse_soups.kernels.pruning import dense_masks, global_magnitude_masks
from sparse_soups.kernels.schedules import retrain_schedule
from sparse_soups.kernels.training import make_reproducible, pick_device, train

Epoch = Callable[[int], None]  # one epoch of training, given a seed


def memory_format(settings: Settings) -> torch.memory_format:
    return torch.channels_last if settings.compute.channels_last else torch.contiguous_format


def sgd(model: nn.Module, settings: Settings) -> torch.optim.Optimizer:
    p = settings.pretrain
    return torch.optim.SGD(
        model.parameters(), lr=p.lr, momentum=p.momentum, nesterov=p.nesterov, weight_decay=p.weight_decay
    )


def package_epoch(model: nn.Module, sparsity: float, dataset: Dataset, settings: Settings) -> Epoch:
    masks = dense_masks(model)
    if sparsity > 0:
        masks = global_magnitude_masks(model, masks, 1 - sparsity)

    def epoch(seed: int) -> None:
        train(
            model, masks, dataset, optim=settings.pretrain, peak_lr=settings.pretrain.lr, epochs=1,
            schedule=retrain_schedule(settings.retrain), seed=seed, augment=settings.data,
            compute=settings.compute,
        )  # fmt: skip

    return epoch


def minimal_epoch(model: nn.Module, dataset: Dataset, settings: Settings) -> Epoch:
    images, labels, batch = dataset.train.images, dataset.train.labels, settings.pretrain.batch_size
    padding, flip = settings.data.crop_padding, settings.data.horizontal_flip
    layout = memory_format(settings)
    model.to(memory_format=layout)

    def epoch(seed: int) -> None:
        generator = torch.Generator().manual_seed(seed)
        optimizer = sgd(model, settings)
        model.train()
        order = torch.randperm(len(labels), generator=generator).to(labels.device)
        for start in range(0, len(labels), batch):
            index = order[start : start + batch]
            x = augment_batch(images[index], padding, flip, dataset.pad_value, generator)
            loss = nn.functional.cross_entropy(model(x.contiguous(memory_format=layout)), labels[index])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()

    return epoch


def dataloader_epoch(
    model: nn.Module, root: Path, n: int, workers: int, settings: Settings, device: str
) -> Epoch:
    """The authors' pipeline: PIL images, per-sample transforms, collation in a DataLoader.

    Workers are not persistent, so each epoch pays for starting them, as in a plain loop.
    """
    pad = settings.data.crop_padding
    augment = transforms.Compose(
        [
            transforms.RandomCrop(28, padding=pad),
            transforms.RandomHorizontalFlip(),
            transforms.ToTensor(),
            transforms.Normalize((0.2860,), (0.3530,)),  # Fashion-MNIST's training statistics
        ]
    )
    layout = memory_format(settings)
    model.to(memory_format=layout)
    data = Subset(torchvision.datasets.FashionMNIST(str(root), train=True, transform=augment), range(n))

    def epoch(seed: int) -> None:
        generator = torch.Generator().manual_seed(seed)
        batch = settings.pretrain.batch_size
        loader = DataLoader(data, batch_size=batch, shuffle=True, num_workers=workers, generator=generator)
        train_on_loader(model, settings, loader, device, layout)

    return epoch


def train_on_loader(
    model: nn.Module, settings: Settings, loader: DataLoader, device: str, layout: torch.memory_format
) -> None:
    """One epoch of plain SGD over a DataLoader's batches, each copied to the device."""
    optimizer = sgd(model, settings)
    model.train()
    for x, y in loader:
        loss = nn.functional.cross_entropy(model(x.to(device, memory_format=layout)), y.to(device))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()


def flops_per_image(model: nn.Module, batch: int, device: str) -> float:
    """Forward + backward FLOPs of one training image, as FlopCounterMode counts them."""
    model = copy.deepcopy(model).train()
    x = torch.randn(batch, 1, 28, 28, device=device)
    y = torch.randint(0, 10, (batch,), device=device)
    with FlopCounterMode(display=False) as counter:
        nn.functional.cross_entropy(model(x), y).backward()
    return counter.get_total_flops() / batch


def peak_matmul(size: int, repeats: int, device: str) -> dict[str, Any]:
    a, b = torch.randn(size, size, device=device), torch.randn(size, size, device=device)
    timing = _common.repeat(lambda: a @ b, repeats, warmup=1, device=device)
    flop = 2 * size**3
    return {
        "matrix_size": size,
        "best_flops_per_s": round(flop / timing["min"]),
        "median_flops_per_s": round(flop / timing["median"]),
    }


def measure(
    threads: int, args: argparse.Namespace, dataset: Dataset, settings: Settings, root: Path, flops: float
) -> dict[str, Any]:
    make_reproducible(threads)  # as every workflow job does
    device, n = args.device, len(dataset.train)
    torch.manual_seed(0)
    base = build_model(settings.model, dataset.in_channels, dataset.num_classes).to(device)
    variants: dict[str, Epoch] = {
        "package_dense": package_epoch(copy.deepcopy(base), 0.0, dataset, settings),
        "package_sparse90": package_epoch(copy.deepcopy(base), 0.9, dataset, settings),
        "minimal": minimal_epoch(copy.deepcopy(base), dataset, settings),
        **{
            f"dataloader_w{w}": dataloader_epoch(copy.deepcopy(base), root, n, w, settings, device)
            for w in args.workers
        },
    }
    names = list(variants)
    times: dict[str, list[float]] = {name: [] for name in names}
    for round_ in range(args.warmup + args.repeats):
        for name in names[round_ % len(names) :] + names[: round_ % len(names)]:  # rotate the order
            elapsed = _common.seconds(lambda name=name, r=round_: variants[name](r), device)
            if round_ >= args.warmup:
                times[name].append(elapsed)
    per_s = {name: _common.stats([n / t for t in samples]) for name, samples in times.items()}
    median = {name: s["median"] for name, s in per_s.items()}
    peak = peak_matmul(args.matmul_size, args.repeats, device)
    achieved = {name: round(flops * ips) for name, ips in median.items()}
    return {
        "images_per_s": per_s,
        "ratio_package_to_minimal": {
            name: round(median[name] / median["minimal"], 3) for name in ("package_dense", "package_sparse90")
        },
        "speedup_in_memory_over_dataloader": {
            f"{name}_over_dataloader_w{w}": round(median[name] / median[f"dataloader_w{w}"], 2)
            for name in ("package_dense", "minimal")
            for w in args.workers
        },
        "peak_matmul": peak,
        "achieved_flops_per_s": achieved,
        "fraction_of_peak": {name: round(f / peak["best_flops_per_s"], 4) for name, f in achieved.items()},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2], help="torch thread counts")
    parser.add_argument("--device", default="auto", help="auto (cuda if available), cpu, cuda")
    parser.add_argument("--repeats", type=int, default=5, help="timed epochs per variant")
    parser.add_argument("--warmup", type=int, default=1, help="untimed epochs per variant first")
    parser.add_argument("--images", type=int, default=None, help="images per epoch (default: all)")
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 2], help="DataLoader workers")
    parser.add_argument("--matmul-size", type=int, default=None, help="default 2048 (CPU), 8192 (GPU)")
    parser.add_argument("--quick", action="store_true", help="1 thread, 1024 images, 2 repeats")
    args = parser.parse_args()
    if args.quick:
        args.threads, args.repeats, args.images = args.threads[:1], 2, args.images or 1024
    args.device = pick_device(args.device)
    args.matmul_size = args.matmul_size or (8192 if args.device.startswith("cuda") else 2048)

    settings = _common.default_settings()
    dataset = load_prepared(_common.EXPERIMENT_DIR / "data.pt", settings.data, args.device)
    if args.images:
        dataset = dataclasses.replace(dataset, train=dataset.train.head(args.images / len(dataset.train)))
    model = build_model(settings.model, dataset.in_channels, dataset.num_classes).to(args.device)
    flops = flops_per_image(model, settings.pretrain.batch_size, args.device)
    raw_dir = find_raw_dir(Path(settings.data.root) if settings.data.root else DEBIAN_FASHION_MNIST)
    with tempfile.TemporaryDirectory() as root:
        _stage_for_torchvision(raw_dir, Path(root), "FashionMNIST")
        results = {str(t): measure(t, args, dataset, settings, Path(root), flops) for t in args.threads}

    payload = {
        "benchmark": "training_throughput",
        "machine": _common.machine(args.device),
        "setup": {
            "model": f"{settings.model.name} (SmallCNN) width {settings.model.width}",
            "batch_size": settings.pretrain.batch_size,
            "images_per_epoch": len(dataset.train),
            "crop_padding": settings.data.crop_padding,
            "horizontal_flip": settings.data.horizontal_flip,
            "compute": dataclasses.asdict(settings.compute),
            "memory_format": "all variants use the config's compute.channels_last",
            "optimizer": "SGD with the default config's momentum, Nesterov and weight decay (all variants)",
            "repeats": args.repeats,
            "warmup_epochs": args.warmup,
            "timing": "one epoch per sample; variants interleaved, order rotated each round; median",
            "deterministic_algorithms": "on, as in workflow jobs (make_reproducible)",
            "dataloader": "torchvision FashionMNIST on PIL images, per-sample transforms, "
            "shuffle, non-persistent workers",
        },
        "flops": {
            "per_image_forward_backward": flops,
            "counted_with": "torch.utils.flop_counter.FlopCounterMode (conv and matmul only; "
            "BatchNorm, ReLU, pooling, optimizer and augmentation are not counted)",
            "note": "dense FLOPs are counted for the sparse model too: unstructured sparsity does not "
            "reduce the work of the dense kernels it runs on",
            "peak": "best of large fp32 square matmuls on the same threads and device",
        },
        "by_threads": results,
    }
    _common.write_result("training_throughput", payload, args.quick)
    for threads, r in results.items():
        print(f"threads={threads}: images/s", {k: v["median"] for k, v in r["images_per_s"].items()})
        print(f"  package/minimal {r['ratio_package_to_minimal']}")
        print(f"  speed-up over DataLoader {r['speedup_in_memory_over_dataloader']}")
        print(f"  fraction of peak matmul FLOP/s {r['fraction_of_peak']}")


if __name__ == "__main__":
    main()
