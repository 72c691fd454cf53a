"""Scoring: the data every step reads, the corrupted test set, and one model's metrics."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..config import Settings
from ..kernels.checkpoints import load_torch_file
from ..kernels.data import prepare_dataset
from ..kernels.evaluation import model_metrics
from ..kernels.files import sha256, write_json
from .context import Job


def prepare_data(settings: Settings, out: Path) -> dict[str, object]:
    """Find the raw data, hold out the validation split, save compactly."""
    return prepare_dataset(settings.data, out, min_train=settings.pretrain.batch_size)


def corrupt_test_set(settings: Settings, data: Path, out: Path) -> dict[str, Any]:
    """The experiment's corrupted test set for OOD evaluation, in CIFAR-10-C's `.npy` layout
    under the directory `out` (generated from the test split, or the official files subsampled);
    for streamed ImageNet, an index of ImageNet-C cells (official, or generated as JPEGs)."""
    from ..kernels.ood_sets import write_ood_set  # numpy/scipy image ops: only here

    raw = load_torch_file(data, what="prepared dataset")
    if raw.get("streamed"):
        from ..kernels.datasets.imagenet import write_ood_index

        return write_ood_index(settings.ood, raw, settings.data.image_size, out)
    return write_ood_set(settings.ood, raw["test_images"], raw["test_labels"], out)


def evaluate(job: Job, checkpoint_path: Path, out: Path, ood_dir: Path | None = None) -> dict[str, Any]:
    """Metrics of one checkpoint, with its identity, as a small JSON file (OOD accuracy
    on the corrupted set in `ood_dir`, if given)."""
    checkpoint, model = job.load(checkpoint_path)
    recalibrated = job.recalibrate_for_evaluation(model, checkpoint.meta)
    metrics = {
        **checkpoint.meta,
        "bn_recalibrated": recalibrated,
        **model_metrics(model, job.dataset, job.batch_size, ood_dir, job.settings.ood),
        "checkpoint_sha256": sha256(checkpoint_path),
    }
    write_json(metrics, out)
    return metrics
