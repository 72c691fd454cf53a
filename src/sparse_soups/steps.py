"""One function per workflow step. Each reads and writes files only, so it runs the same
from the command line, from a Snakemake rule, or from a test.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
from torch import nn

from . import layout
from .checkpoints import Checkpoint, CheckpointError, sha256, write_json
from .config import Settings
from .data import Dataset, load_prepared
from .evaluation import accuracy, model_metrics
from .models import build_model
from .pruning import Masks, dense_masks, global_magnitude_masks, target_density
from .schedules import Schedule, pretrain_schedule, retrain_schedule
from .soups import average_state_dicts, greedy_selection, recalibrate_batchnorm
from .training import derive_seed, train

log = logging.getLogger(__name__)


def _model(settings: Settings, dataset: Dataset) -> nn.Module:
    model = build_model(settings.model, dataset.in_channels, dataset.num_classes)
    memory_format = torch.channels_last if settings.compute.channels_last else torch.contiguous_format
    return model.to(dataset.device, memory_format=memory_format)


def _load_model(settings: Settings, dataset: Dataset, checkpoint: Checkpoint, path: Path) -> nn.Module:
    model = _model(settings, dataset)
    try:
        model.load_state_dict(checkpoint.state_dict)
    except RuntimeError as error:
        raise CheckpointError(
            f"checkpoint {path} does not fit model '{settings.model.name}' "
            f"(width {settings.model.width}): {error}"
        ) from error
    return model


def _meta(settings: Settings, seed: int, model_dir: str, **fields: Any) -> dict[str, Any]:
    return {"experiment": settings.name, "seed": seed, "model_dir": model_dir, **fields}


def _train_and_save(
    settings: Settings,
    model: nn.Module,
    masks: Masks,
    dataset: Dataset,
    *,
    epochs: int,
    schedule: Schedule,
    seed: int,
    meta: dict[str, Any],
    out: Path,
) -> Checkpoint:
    """Retraining uses pretraining's optimizer settings and peak LR; only the length,
    the schedule and the seed differ."""
    result = train(
        model, masks, dataset, optim=settings.pretrain, peak_lr=settings.pretrain.lr,
        epochs=epochs, schedule=schedule, seed=seed, augment=settings.data, compute=settings.compute,
    )  # fmt: skip
    log.info("trained %s for %d steps, final loss %.4f", meta["model_dir"], result.steps, result.final_loss)
    checkpoint = Checkpoint(model.state_dict(), masks, meta)
    checkpoint.save(out)
    return checkpoint


def pretrain(settings: Settings, data: Path, seed: int, out: Path, device: str = "cpu") -> Checkpoint:
    """Train the dense model from a seeded initialization."""
    dataset = load_prepared(data, settings.data, device)
    torch.manual_seed(derive_seed(seed, "init"))
    model = _model(settings, dataset)
    return _train_and_save(
        settings, model, dense_masks(model), dataset,
        epochs=settings.pretrain.epochs,
        schedule=pretrain_schedule(settings.pretrain),
        seed=derive_seed(seed, "pretrain"),
        meta=_meta(settings, seed, layout.DENSE, kind="dense", phase=0, target_sparsity=0.0),
        out=out,
    )  # fmt: skip


def retrain(
    settings: Settings,
    data: Path,
    parent: Path,
    lineage: str,
    phase: int,
    index: int,
    seed: int,
    out: Path,
    device: str = "cpu",
) -> Checkpoint:
    """Prune the parent to this phase's density, then retrain it with the LLR schedule.

    Pruning is deterministic given the parent, so all m ingredients of a phase share one
    mask; they differ only by the seed of batch order and augmentation.
    """
    dataset = load_prepared(data, settings.data, device)
    start = Checkpoint.load(parent)
    model = _load_model(settings, dataset, start, parent)
    density = target_density(settings.prune.sparsity, settings.prune.phases, phase)
    parent_masks = {name: mask.to(dataset.device) for name, mask in start.masks.items()}
    meta = _meta(
        settings, seed, f"{lineage}/phase{phase}/ingredient{index}", kind="ingredient",
        lineage=lineage, phase=phase, index=index, target_sparsity=1 - density,
        parent_sha256=sha256(parent),
    )  # fmt: skip
    return _train_and_save(
        settings, model, global_magnitude_masks(model, parent_masks, density), dataset,
        epochs=settings.retrain.epochs,
        schedule=retrain_schedule(settings.retrain),
        seed=derive_seed(seed, "retrain", phase, index),
        meta=meta,
        out=out,
    )  # fmt: skip


def soup(
    settings: Settings, data: Path, method: str, ingredients: list[Path], out: Path, device: str = "cpu"
) -> Checkpoint:
    """Average the ingredients (uniformly, or the greedy subset) and recalibrate BN."""
    dataset = load_prepared(data, settings.data, device)
    loaded = [Checkpoint.load(path) for path in ingredients]
    phases = {c.meta.get("phase") for c in loaded}
    if len(phases) != 1:
        raise ValueError(f"ingredients come from different phases {sorted(phases)}: {ingredients}")
    model = _model(settings, dataset)
    recalibration = dataset.train.head(settings.soup.bn_recalibration_fraction)
    batch_size = settings.eval_batch_size

    def build(indices: list[int]) -> nn.Module:
        state = average_state_dicts(
            [loaded[i].state_dict for i in indices], [loaded[i].masks for i in indices]
        )
        model.load_state_dict(state)
        recalibrate_batchnorm(model, recalibration, batch_size)
        return model

    def validation_accuracy(indices: list[int]) -> float:
        return accuracy(build(indices), dataset.val, batch_size)

    if method == "uniform":
        kept = list(range(len(loaded)))
    elif method == "greedy":
        individual = [validation_accuracy([i]) for i in range(len(loaded))]
        kept = greedy_selection(individual, validation_accuracy)
    else:
        raise ValueError(f"soup.methods: unknown soup method '{method}' (known: {layout.SOUP_METHODS})")
    build(kept)
    first = loaded[0].meta
    phase = first["phase"]
    meta = _meta(
        settings, first["seed"], f"{method}/phase{phase}/soup", kind="soup", method=method,
        phase=phase, target_sparsity=first["target_sparsity"], kept=kept,
        ingredients=[str(p) for p in ingredients],
        ingredient_sha256=[sha256(p) for p in ingredients],
    )  # fmt: skip
    checkpoint = Checkpoint(model.state_dict(), loaded[0].masks, meta)
    checkpoint.save(out)
    log.info("%s soup of %d ingredients kept %s", method, len(loaded), kept)
    return checkpoint


def evaluate(
    settings: Settings, data: Path, checkpoint_path: Path, out: Path, device: str = "cpu"
) -> dict[str, Any]:
    """Metrics of one checkpoint, with its identity, as a small JSON file."""
    dataset = load_prepared(data, settings.data, device)
    checkpoint = Checkpoint.load(checkpoint_path)
    model = _load_model(settings, dataset, checkpoint, checkpoint_path)
    metrics = {
        **checkpoint.meta,
        **model_metrics(model, dataset, settings.eval_batch_size),
        "checkpoint_sha256": sha256(checkpoint_path),
    }
    write_json(metrics, out)
    return metrics
