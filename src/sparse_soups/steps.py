"""One function per workflow step. Each reads and writes files only, so it runs the same
from the command line, from a Snakemake rule, or from a test.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from . import layout
from .checkpoints import Checkpoint, CheckpointError, sha256, write_json
from .config import Settings
from .data import Dataset, load_prepared
from .evaluation import accuracy, ensemble_accuracy, model_metrics
from .lottery_pools import ALPHAS, AVG_ALPHAS, lottery_pool
from .models import build_model
from .pruning import (
    Masks,
    apply_masks,
    dense_masks,
    prunable_parameters,
    select_masks,
    sparsity,
    target_density,
)
from .schedules import Schedule, allr_scale, pretrain_schedule, retrain_schedule
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


@dataclass(frozen=True)
class Recipe:
    """The hyperparameters of one retrain: pretraining's, except along the varied axis."""

    weight_decay: float
    lr: float
    epochs: int
    schedule: str
    seed_index: int  # which seed label the batch order and augmentation come from


def ingredient_recipe(settings: Settings, lineage: str, index: int) -> Recipe:
    """Ingredient `index` takes the index-th value of `soup.vary`; with any axis but seed
    all ingredients share seed 0, so they differ in exactly one hyperparameter. IMP with
    m x budget is ingredient 0 retrained m times as long."""
    values = {
        "weight_decay": settings.pretrain.weight_decay,
        "lr": settings.pretrain.lr,
        "epochs": settings.retrain.epochs,
        "schedule": settings.retrain.schedule,
        "seed_index": index,
    }
    axis = settings.soup.vary
    if axis != "seed":
        values[axis] = settings.soup.values[index]
        values["seed_index"] = 0
    if lineage == layout.IMP_BUDGET:
        values["epochs"] *= settings.soup.ingredients
    return Recipe(**values)


def _pretrain_steps(settings: Settings, dataset: Dataset) -> int:
    return settings.pretrain.epochs * math.ceil(len(dataset.train) / settings.pretrain.batch_size)


def _norm_drop(model: nn.Module, old: Masks, new: Masks) -> tuple[float, float]:
    """Relative L2 norm removed by a prune, and the share of unpruned weights it removed."""
    params = prunable_parameters(model)
    before = sum(float((p.detach() * old[n]).pow(2).sum()) for n, p in params.items())
    removed = sum(float((p.detach() * (old[n] & ~new[n])).pow(2).sum()) for n, p in params.items())
    alive_before = sum(int(old[n].sum()) for n in params)
    alive_after = sum(int(new[n].sum()) for n in params)
    return math.sqrt(removed / max(before, 1e-30)), 1 - alive_after / max(alive_before, 1)


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
    recipe: Recipe | None = None,
) -> Checkpoint:
    """Retraining uses pretraining's optimizer settings and peak LR unless the
    ingredient's recipe overrides weight decay or the peak."""
    optim, peak = settings.pretrain, settings.pretrain.lr
    if recipe is not None:
        optim, peak = dataclasses.replace(optim, weight_decay=recipe.weight_decay), recipe.lr
    result = train(
        model, masks, dataset, optim=optim, peak_lr=peak,
        epochs=epochs, schedule=schedule, seed=seed, augment=settings.data, compute=settings.compute,
    )  # fmt: skip
    log.info("trained %s for %d steps, final loss %.4f", meta["model_dir"], result.steps, result.final_loss)
    checkpoint = Checkpoint(model.state_dict(), masks, {**meta, "train_steps": result.steps})
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
    """Prune the parent to this phase's density, then retrain it as the ingredient's recipe says.

    Pruning is deterministic given the parent (random selection draws from a seed of the
    run, phase and parent checksum), so all m ingredients of a phase share one mask.
    """
    dataset = load_prepared(data, settings.data, device)
    start = Checkpoint.load(parent)
    model = _load_model(settings, dataset, start, parent)
    density = target_density(settings.prune.sparsity, settings.prune.phases, phase)
    parent_masks = {name: mask.to(dataset.device) for name, mask in start.masks.items()}
    parent_sha = sha256(parent)  # random selection: same parent, same mask, whatever the chain
    generator = torch.Generator().manual_seed(derive_seed(seed, "prune", phase, parent_sha))
    prune = settings.prune
    masks = select_masks(model, parent_masks, density, prune.selection, prune.exclude, generator)
    recipe = ingredient_recipe(settings, lineage, index)
    norm_drop, prune_fraction = _norm_drop(model, parent_masks, masks)
    peak = allr_scale(norm_drop, prune_fraction, recipe.epochs, settings.pretrain.epochs)
    schedule = retrain_schedule(
        dataclasses.replace(settings.retrain, schedule=recipe.schedule),
        settings.pretrain, _pretrain_steps(settings, dataset), peak,
    )  # fmt: skip
    meta = _meta(
        settings, seed, f"{lineage}/phase{phase}/ingredient{index}", kind="ingredient",
        lineage=lineage, phase=phase, index=index, target_sparsity=1 - density,
        parent_sha256=parent_sha, recipe=dataclasses.asdict(recipe),
    )  # fmt: skip
    return _train_and_save(
        settings, model, masks, dataset,
        epochs=recipe.epochs,
        schedule=schedule,
        seed=derive_seed(seed, "retrain", phase, recipe.seed_index),
        meta=meta,
        out=out,
        recipe=recipe,
    )  # fmt: skip


def soup(
    settings: Settings,
    data: Path,
    method: str,
    ingredients: list[Path],
    out: Path,
    device: str = "cpu",
    name: str | None = None,
) -> Checkpoint:
    """Average the ingredients (uniformly, or the greedy subset) and recalibrate BN.

    `name` is the soup's directory (see `layout.soup_recipe`), the method by default."""
    name = name or method
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
        settings, first["seed"], layout.soup_dir(name, phase), kind="soup", method=name,
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


def ensemble(
    settings: Settings, data: Path, ingredients: list[Path], out: Path, device: str = "cpu"
) -> dict[str, Any]:
    """Metrics of the mean-softmax ensemble of a phase's ingredients, against the true labels.

    Not a sparse model: its inference cost is the sum of its members' nonzero weights,
    recorded as `inference_cost` relative to one dense model.
    """
    dataset = load_prepared(data, settings.data, device)
    loaded = [(Checkpoint.load(path), path) for path in ingredients]
    models = [_load_model(settings, dataset, c, path) for c, path in loaded]
    member_sparsity = [sparsity(model)[0] for model in models]
    first = loaded[0][0].meta
    metrics = _meta(
        settings, first["seed"], layout.ensemble_dir(first["phase"]), kind="ensemble",
        phase=first["phase"], target_sparsity=first["target_sparsity"],
        sparsity=sum(member_sparsity) / len(models),
        test_accuracy=ensemble_accuracy(models, dataset.test, settings.eval_batch_size),
        validation_accuracy=ensemble_accuracy(models, dataset.val, settings.eval_batch_size),
        inference_cost=sum(1 - s for s in member_sparsity),
        members=[str(p) for p in ingredients],
        checkpoint_sha256=None,
        member_sha256=[sha256(p) for p in ingredients],
    )  # fmt: skip
    write_json(metrics, out)
    return metrics


def lottery_pools(
    settings: Settings,
    data: Path,
    target_phase: int,
    tickets: list[Path],
    variant: str,
    out: Path,
    device: str = "cpu",
) -> Checkpoint:
    """Lottery Pools over an IMP chain's tickets (`tickets[p - 1]` is phase p's), aimed
    at `target_phase`: `interp` searches the alpha grid, `avg` takes alpha = 0.5.

    Each interpolation is re-pruned globally (with `prune.exclude`) to the target
    ticket's density, BatchNorm recalibrated, and scored on validation accuracy.
    """
    if variant not in ("interp", "avg"):
        raise ValueError(f"lottery pools: unknown variant '{variant}' (known: interp, avg)")
    dataset = load_prepared(data, settings.data, device)
    loaded = [Checkpoint.load(path) for path in tickets]
    phases = [c.meta.get("phase") for c in loaded]
    if phases != list(range(1, len(loaded) + 1)):
        raise ValueError(f"lottery pools needs the tickets of phases 1..{len(loaded)} in order, got {phases}")
    model = _model(settings, dataset)
    density = target_density(settings.prune.sparsity, settings.prune.phases, target_phase)
    recalibration = dataset.train.head(settings.soup.bn_recalibration_fraction)
    batch_size = settings.eval_batch_size

    def score(state: dict[str, torch.Tensor]) -> tuple[float, dict[str, torch.Tensor]]:
        model.load_state_dict(state)
        masks = select_masks(model, dense_masks(model), density, "global", settings.prune.exclude)
        apply_masks(model, masks)
        recalibrate_batchnorm(model, recalibration, batch_size)
        return accuracy(model, dataset.val, batch_size), {k: v.clone() for k, v in model.state_dict().items()}

    alphas = ALPHAS if variant == "interp" else AVG_ALPHAS
    states = {c.meta["phase"]: c.state_dict for c in loaded}
    result = lottery_pool(target_phase, states, score, alphas)
    model.load_state_dict(result.state)
    name = layout.lottery_pools_dir(variant, target_phase)
    meta = _meta(
        settings, loaded[0].meta["seed"], name, kind="lottery_pools", method=f"lottery_pools_{variant}",
        phase=target_phase, target_sparsity=1 - density, validation_score=result.score,
        accepted=[list(step) for step in result.accepted], trials=result.trials,
        ticket_sha256=[sha256(p) for p in tickets],
    )  # fmt: skip
    masks = {n: p != 0 for n, p in prunable_parameters(model).items()}
    checkpoint = Checkpoint(model.state_dict(), masks, meta)
    checkpoint.save(out)
    log.info("lottery pools (%s) for phase %d accepted %s", variant, target_phase, result.accepted)
    return checkpoint
