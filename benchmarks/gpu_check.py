"""Everything a GPU session should confirm, in one command and one JSON file.

    python benchmarks/gpu_check.py                 # on the GPU machine: under 8 minutes
    python benchmarks/gpu_check.py --device cpu --quick   # the same checks, small, on CPU

Writes `benchmarks/results/gpu_check.json` (or `--out`) with one entry per check, each
with its seconds and `ok` (or the error it raised, so one failure never hides the rest):

- `workflow`: a small workflow (1 seed, 2 phases, m = 2, OOD on; --quick: 1 phase) run by
  Snakemake on the device, from Fashion-MNIST-format files this script writes (the machine
  may have no data);
- `bitwise_repeat`: one retrain run twice from the same parent: identical bytes, or the
  largest difference between the two (cuDNN may choose nondeterministic kernels);
- `pruned_stay_zero`: after training a 90%-sparse ResNet-18 (CNN with --quick) under fp32,
  bf16 autocast, channels-last, torch.compile and all three (--quick: no torch.compile
  alone), every pruned weight is exactly 0;
- `throughput`: ResNet-18 training images/s at CIFAR shape (synthetic 32x32 images; the
  CNN with --quick), the package's `train` against a minimal hand-written loop in the same
  process;
- `peak`: measured peak matmul FLOP/s, and the fraction the package's training reaches;
- `data_on_device`: the package's in-memory, on-device augmentation against a DataLoader
  with per-sample torchvision transforms (0 and 4 workers).
"""

from __future__ import annotations

import argparse
import copy
import gzip
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import _common
import numpy as np
import torch
import yaml
from torch import nn
from torch.utils.data import DataLoader, TensorDataset
from torchvision.transforms import v2
from training_throughput import minimal_epoch, package_epoch, peak_matmul, train_on_loader

from sparse_soups import jobs
from sparse_soups.config import Settings
from sparse_soups.kernels.checkpoints import Checkpoint
from sparse_soups.kernels.data import Dataset, Split
from sparse_soups.kernels.models import build_model
from sparse_soups.kernels.pruning import dense_masks, global_magnitude_masks
from sparse_soups.kernels.schedules import retrain_schedule
from sparse_soups.kernels.training import make_reproducible, pick_device, train

REPO = _common.REPO


def write_idx(directory: Path, n_train: int, n_test: int) -> Path:
    """Fashion-MNIST's four IDX files with learnable synthetic images (a bright square
    whose position encodes the label), so the workflow needs no download."""
    rng = np.random.default_rng(0)
    directory.mkdir(parents=True, exist_ok=True)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        labels = rng.integers(0, 10, n).astype(np.uint8)
        images = rng.integers(0, 60, (n, 28, 28))
        for i, label in enumerate(labels):
            row, col = divmod(int(label), 5)
            images[i, 4 + 12 * row : 12 + 12 * row, 1 + 5 * col : 6 + 5 * col] += 180
        header = (2051).to_bytes(4, "big") + n.to_bytes(4, "big") + (28).to_bytes(4, "big") * 2
        (directory / f"{prefix}-images-idx3-ubyte.gz").write_bytes(
            gzip.compress(header + images.clip(0, 255).astype(np.uint8).tobytes())
        )
        label_header = (2049).to_bytes(4, "big") + n.to_bytes(4, "big")
        (directory / f"{prefix}-labels-idx1-ubyte.gz").write_bytes(
            gzip.compress(label_header + labels.tobytes())
        )
    return directory


def check_workflow(scratch: Path, quick: bool, cores: int) -> dict[str, Any]:
    """The workflow end to end on the device, through Snakemake and the CLI."""
    root = write_idx(scratch / "idx", 256 if quick else 4096, 128 if quick else 1024)
    experiment = {
        "seeds": [0], "data": {"root": str(root)}, "model": {"width": 8},
        "pretrain": {"epochs": 1 if quick else 5, "batch_size": 64},
        "prune": {"sparsity": 0.75, "phases": 1 if quick else 2}, "retrain": {"epochs": 1},
        "soup": {"ingredients": 2, "methods": ["uniform"] if quick else ["uniform", "greedy"]},
        "baselines": {"lottery_pools": "none", "gmp": "none", "gmp_sms": "none", "soup_at_end": False,
                      "imp_budget": not quick},
        "ood": {"corruptions": ["gaussian_noise"] if quick else ["gaussian_noise", "contrast"],
                "severities": [5] if quick else [1, 5], "test_subset": 50 if quick else 200},
        "eval_batch_size": 2000,
    }  # fmt: skip
    config = scratch / "gpu_check.yaml"
    config.write_text(yaml.safe_dump({"experiments": {"gpu_check": experiment}}))
    command = ["snakemake", "--snakefile", str(REPO / "Snakefile"), "-d", str(scratch), "--configfile",
               str(config), "--cores", str(cores)]  # fmt: skip
    started = time.perf_counter()
    run = subprocess.run(command, capture_output=True, text=True)
    lines = [line for log in (scratch / "results").rglob("*.log") for line in log.read_text().splitlines()]
    devices = sorted(
        {line.split("device ")[1].split(",")[0] for line in lines if "sparse_soups.cli: device " in line}
    )
    metrics = sorted((scratch / "results" / "gpu_check").rglob("metrics.json"))
    soups = [json.loads(m.read_text())["test_accuracy"] for m in metrics if "soup" in m.parts]
    return {
        "ok": run.returncode == 0, "seconds": round(time.perf_counter() - started, 1),
        "jobs_ran_on": devices, "metrics_files": len(metrics),
        "soup_test_accuracy": soups,
        **({} if run.returncode == 0 else {"error": run.stderr[-2000:]}),
    }  # fmt: skip


def check_bitwise_repeat(scratch: Path, device: str) -> dict[str, Any]:
    """One phase-1 retrain of the workflow's dense model, twice, on `device`."""
    experiment = scratch / "results" / "gpu_check"
    settings = Settings.from_json(experiment / "settings.json")
    data, parent = experiment / "data.pt", experiment / "seed0" / "dense" / "model.pt"
    outs = [scratch / f"repeat{i}.pt" for i in range(2)]
    for out in outs:
        jobs.retrain(settings, data, parent, "dense", 1, 0, 0, out, device)
    digests = [hashlib.sha256(out.read_bytes()).hexdigest() for out in outs]
    first, second = (Checkpoint.load(out).state_dict for out in outs)
    difference = max(float((first[k].double() - second[k].double()).abs().max()) for k in first)
    return {"ok": True, "identical_bytes": digests[0] == digests[1], "max_abs_difference": difference}


def synthetic_dataset(n: int, device: str, shape: tuple[int, int, int] = (3, 32, 32)) -> Dataset:
    """CIFAR-shaped normalized images and ten labels, already on the device."""
    generator = torch.Generator().manual_seed(0)
    images = torch.randn(n, *shape, generator=generator).to(device)
    labels = torch.randint(0, 10, (n,), generator=generator).to(device)
    split = Split(images, labels)
    return Dataset(train=split, val=split, test=split, num_classes=10, pad_value=(0.0,) * shape[0])


def cifar_settings(model: str, **compute: Any) -> Settings:
    return Settings.from_dict({
        "data": {"dataset": "cifar10", "crop_padding": 4}, "model": {"name": model, "width": 16},
        "pretrain": {"batch_size": 128}, "compute": compute,
    })  # fmt: skip


def check_pruned_stay_zero(device: str, quick: bool) -> dict[str, Any]:
    """Masks hold under every compute option: a pruned weight that drifts from 0 would
    make the soup's shared mask a fiction."""
    model_name, n, shape = ("cnn", 256, (3, 28, 28)) if quick else ("resnet18", 2048, (3, 32, 32))
    dataset = synthetic_dataset(n, device, shape)
    variants = {
        "fp32": {}, "bf16": {"precision": "bf16"}, "channels_last": {"channels_last": True},
        "compile": {"compile": True}, "all": {"precision": "bf16", "channels_last": True, "compile": True},
    }  # fmt: skip
    if quick:  # compiling takes a minute on 2 CPU cores: once, with the other two options
        del variants["compile"]
    out: dict[str, Any] = {}
    for name, compute in variants.items():
        settings = cifar_settings(model_name, **compute)
        torch.manual_seed(0)
        model = build_model(settings.model, 3, 10).to(device)
        masks = global_magnitude_masks(model, dense_masks(model), 0.1)
        try:
            train(
                model, masks, dataset, optim=settings.pretrain, peak_lr=0.05, epochs=1, seed=0,
                schedule=retrain_schedule(settings.retrain), augment=settings.data, compute=settings.compute,
            )  # fmt: skip
        except Exception as error:
            out[name] = {"ok": False, "error": f"{type(error).__name__}: {error}"[:500]}
            continue
        leaked = sum(
            int((p.detach()[~masks[k]] != 0).sum()) for k, p in model.named_parameters() if k in masks
        )
        out[name] = {"ok": leaked == 0, "nonzero_pruned_weights": leaked}
    return {"ok": all(v["ok"] for v in out.values()), "model": model_name, "variants": out}


def flops_per_image(model: nn.Module, shape: tuple[int, ...], device: str) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    model = copy.deepcopy(model).train()
    x, y = torch.randn(8, *shape, device=device), torch.randint(0, 10, (8,), device=device)
    with FlopCounterMode(display=False) as counter:
        nn.functional.cross_entropy(model(x), y).backward()
    return counter.get_total_flops() / 8


def dataloader_epoch(
    model: nn.Module, dataset: Dataset, settings: Settings, workers: int, device: str
) -> Callable:
    """The conventional pipeline: uint8 images on the CPU, per-sample torchvision transforms
    in a DataLoader, each batch copied to the device."""
    images = (dataset.train.images.cpu() * 40 + 128).clamp(0, 255).to(torch.uint8)
    data = TensorDataset(images, dataset.train.labels.cpu())
    augment = v2.Compose([
        v2.RandomCrop(images.shape[-1], padding=4), v2.RandomHorizontalFlip(),
        v2.ToDtype(torch.float32, scale=True), v2.Normalize((0.5,) * 3, (0.25,) * 3),
    ])  # fmt: skip

    def collate(batch: list) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.stack([augment(x) for x, _ in batch]), torch.stack([y for _, y in batch])

    def epoch(seed: int) -> None:
        loader = DataLoader(data, batch_size=settings.pretrain.batch_size, shuffle=True, num_workers=workers,
                            collate_fn=collate, generator=torch.Generator().manual_seed(seed))  # fmt: skip
        train_on_loader(model, settings, loader, device, torch.contiguous_format)

    return epoch


def check_throughput(device: str, quick: bool, workers: list[int]) -> dict[str, Any]:
    """ResNet-18 at CIFAR shape (--quick: the small CNN): the package, a minimal loop, and
    a DataLoader, interleaved."""
    n, repeats, model, shape = (128, 1, "cnn", (3, 28, 28)) if quick else (10_000, 3, "resnet18", (3, 32, 32))
    settings = cifar_settings(model)
    dataset = synthetic_dataset(n, device, shape)
    torch.manual_seed(0)
    base = build_model(settings.model, 3, 10).to(device)
    variants = {
        "package": package_epoch(copy.deepcopy(base), 0.0, dataset, settings),
        "minimal": minimal_epoch(copy.deepcopy(base), dataset, settings),
        **{
            f"dataloader_w{w}": dataloader_epoch(copy.deepcopy(base), dataset, settings, w, device)
            for w in workers
        },
    }
    times: dict[str, list[float]] = {name: [] for name in variants}
    for round_ in range(1 + repeats):  # the first round warms up (cuDNN autotuning, allocator)
        for name, epoch in variants.items():
            elapsed = _common.seconds(lambda epoch=epoch, r=round_: epoch(r), device)
            if round_:
                times[name].append(elapsed)
    per_s = {name: round(n / sorted(t)[len(t) // 2], 1) for name, t in times.items()}
    peak = peak_matmul(1024 if quick else 8192, 3, device)
    flops = flops_per_image(base, shape, device)
    fraction = flops * per_s["package"] / peak["best_flops_per_s"]
    speedups = {
        f"speedup_over_dataloader_w{w}": round(per_s["package"] / per_s[f"dataloader_w{w}"], 2)
        for w in workers
    }
    return {
        "ok": True, "model": model, "images": n, "images_per_s": per_s,
        "package_over_minimal": round(per_s["package"] / per_s["minimal"], 3),
        "peak": {**peak, "train_flops_per_image": round(flops), "package_fraction": round(fraction, 4)},
        "data_on_device": speedups,
    }  # fmt: skip


def timed(check: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    started = time.perf_counter()
    try:
        result = check()
    except Exception as error:
        result = {"ok": False, "error": f"{type(error).__name__}: {error}"[:2000]}
    return {**result, "seconds": result.get("seconds", round(time.perf_counter() - started, 1))}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto", help="auto (cuda if available), cpu, cuda")
    parser.add_argument("--quick", action="store_true", help="small sizes (for CPU and tests)")
    parser.add_argument("--cores", type=int, default=os.cpu_count() or 1, help="Snakemake --cores")
    parser.add_argument("--out", type=Path, default=_common.RESULTS / "gpu_check.json")
    args = parser.parse_args(argv)
    device = pick_device(args.device)
    make_reproducible(min(4, os.cpu_count() or 1))
    workers = [0, 2] if args.quick else [0, 4]
    report: dict[str, Any] = {
        "device": torch.cuda.get_device_name() if device.startswith("cuda") else "cpu",
        "torch": torch.__version__, "cuda": torch.version.cuda, "cudnn": torch.backends.cudnn.version(),
        "quick": args.quick,
    }  # fmt: skip
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        scratch = Path(tmp)
        report["workflow"] = timed(lambda: check_workflow(scratch, args.quick, args.cores))
        report["bitwise_repeat"] = timed(lambda: check_bitwise_repeat(scratch, device))
    report["pruned_stay_zero"] = timed(lambda: check_pruned_stay_zero(device, args.quick))
    report["throughput"] = timed(lambda: check_throughput(device, args.quick, workers))
    report["total_seconds"] = round(time.perf_counter() - started, 1)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))
    checks = ("workflow", "bitwise_repeat", "pruned_stay_zero", "throughput")
    return 0 if all(report[name]["ok"] for name in checks) else 1


if __name__ == "__main__":
    sys.exit(main())
