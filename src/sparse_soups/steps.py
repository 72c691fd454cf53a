"""One function per workflow step. Each reads and writes files only, so it runs the same
from the command line, from a Snakemake rule, or from a test.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from . import gmp, layout
from .checkpoints import Checkpoint, CheckpointError, load_torch_file, sha256, write_json
from .config import Settings
from .data import Dataset, load_prepared
from .evaluation import accuracy, ensemble_predict, model_metrics, ood_metrics, prediction_metrics
from .lottery_pools import ALPHAS, AVG_ALPHAS, lottery_pool
from .metrics import soup_geometry
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
from .recipes import Recipe, retrain_recipe
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


def _total_budget(metas: Iterable[dict[str, Any]]) -> int | float | None:
    """Training epochs that went into a merged model: the sum over what it merges (the
    compute spent, including greedy's unused ingredients); None if any is unknown."""
    budgets = [meta.get("budget_epochs") for meta in metas]
    return None if any(b is None for b in budgets) else sum(budgets)


def _recalibration_split(settings: Settings, dataset: Dataset):
    """The same share of the training split for every BatchNorm recalibration."""
    return dataset.train.head(settings.soup.bn_recalibration_fraction)


def _recalibrate_for_evaluation(settings: Settings, dataset: Dataset, model: nn.Module, meta: dict) -> bool:
    """With `evaluation.recalibrate: all`, every evaluated model gets its BatchNorm
    statistics recomputed (averaged models already have); returns whether it has them."""
    if meta.get("bn_recalibrated"):
        return True
    if settings.evaluation.recalibrate != "all":
        return False
    recalibrate_batchnorm(model, _recalibration_split(settings, dataset), settings.eval_batch_size)
    return True


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
    on_step: Callable[[int], None] | None = None,
) -> Checkpoint:
    """Retraining uses pretraining's optimizer settings and peak LR unless the
    ingredient's recipe overrides weight decay or the peak. `on_step` (gradual pruning)
    may update `masks` in place; the checkpoint stores them as they end."""
    optim, peak = settings.pretrain, settings.pretrain.lr
    if recipe is not None:
        optim, peak = dataclasses.replace(optim, weight_decay=recipe.weight_decay), recipe.lr
    result = train(
        model, masks, dataset, optim=optim, peak_lr=peak,
        epochs=epochs, schedule=schedule, seed=seed, augment=settings.data, compute=settings.compute,
        on_step=on_step,
    )  # fmt: skip
    log.info("trained %s for %d steps, final loss %.4f", meta["model_dir"], result.steps, result.final_loss)
    meta = {"budget_epochs": epochs, **meta, "train_steps": result.steps}
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
    recipe = retrain_recipe(settings, lineage, index)
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
    recalibration, batch_size = _recalibration_split(settings, dataset), settings.eval_batch_size

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
        geometry=soup_geometry([c.state_dict for c in loaded], model.state_dict()),
        budget_epochs=_total_budget(c.meta for c in loaded), bn_recalibrated=True,
    )  # fmt: skip
    checkpoint = Checkpoint(model.state_dict(), loaded[0].masks, meta)
    checkpoint.save(out)
    log.info("%s soup of %d ingredients kept %s", method, len(loaded), kept)
    return checkpoint


def corrupt_test_set(settings: Settings, data: Path, out: Path) -> dict[str, Any]:
    """The experiment's corrupted test set for OOD evaluation, in CIFAR-10-C's `.npy` layout
    under the directory `out` (generated from the test split, or the official files subsampled);
    for streamed ImageNet, an index of ImageNet-C cells (official, or generated as JPEGs)."""
    from .corruptions import write_ood_set

    raw = load_torch_file(data, what="prepared dataset")
    if raw.get("streamed"):
        from .datasets.imagenet import write_ood_index

        return write_ood_index(settings.ood, raw, settings.data.image_size, out)
    return write_ood_set(settings.ood, raw["test_images"], raw["test_labels"], out)


def evaluate(
    settings: Settings,
    data: Path,
    checkpoint_path: Path,
    out: Path,
    device: str = "cpu",
    ood_dir: Path | None = None,
) -> dict[str, Any]:
    """Metrics of one checkpoint, with its identity, as a small JSON file (OOD accuracy
    on the corrupted set in `ood_dir`, if given)."""
    dataset = load_prepared(data, settings.data, device)
    checkpoint = Checkpoint.load(checkpoint_path)
    model = _load_model(settings, dataset, checkpoint, checkpoint_path)
    recalibrated = _recalibrate_for_evaluation(settings, dataset, model, checkpoint.meta)
    metrics = {
        **checkpoint.meta,
        "bn_recalibrated": recalibrated,
        **model_metrics(model, dataset, settings.eval_batch_size, ood_dir, settings.ood),
        "checkpoint_sha256": sha256(checkpoint_path),
    }
    write_json(metrics, out)
    return metrics


def ensemble(
    settings: Settings,
    data: Path,
    ingredients: list[Path],
    out: Path,
    device: str = "cpu",
    ood_dir: Path | None = None,
) -> dict[str, Any]:
    """Metrics of the mean-softmax ensemble of a phase's ingredients, against the true labels.

    Not a sparse model: its inference cost is the sum of its members' nonzero weights,
    recorded as `inference_cost` relative to one dense model.
    """
    dataset = load_prepared(data, settings.data, device)
    loaded = [(Checkpoint.load(path), path) for path in ingredients]
    models = [_load_model(settings, dataset, c, path) for c, path in loaded]
    recalibrated = [
        _recalibrate_for_evaluation(settings, dataset, model, c.meta)
        for model, (c, _) in zip(models, loaded, strict=True)
    ]
    member_sparsity = [sparsity(model)[0] for model in models]
    first = loaded[0][0].meta
    predict, batch_size = ensemble_predict(models), settings.eval_batch_size
    metrics = _meta(
        settings, first["seed"], layout.ensemble_dir(first["phase"]), kind="ensemble",
        phase=first["phase"], target_sparsity=first["target_sparsity"],
        sparsity=sum(member_sparsity) / len(models),
        **prediction_metrics(predict, dataset, batch_size),
        **ood_metrics(predict, dataset, ood_dir, settings.ood, batch_size),
        inference_cost=sum(1 - s for s in member_sparsity),
        bn_recalibrated=all(recalibrated), budget_epochs=_total_budget(c.meta for c, _ in loaded),
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
    recalibration, batch_size = _recalibration_split(settings, dataset), settings.eval_batch_size

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
        ticket_sha256=[sha256(p) for p in tickets], bn_recalibrated=True,
    )  # fmt: skip
    masks = {n: p != 0 for n, p in prunable_parameters(model).items()}
    checkpoint = Checkpoint(model.state_dict(), masks, meta)
    checkpoint.save(out)
    log.info("lottery pools (%s) for phase %d accepted %s", variant, target_phase, result.accepted)
    return checkpoint


def _gmp_budget(plan: gmp.GmpPlan, phase: int) -> float:
    """GMP's epochs after its dense stretch, per IMP phase it stands for: comparable with
    IMP's retrain epochs per phase (GMP + SMS spends this m times over)."""
    return (plan.epochs - plan.dense_epochs) / phase


def _gmp_plan(settings: Settings, dataset: Dataset, phase: int) -> gmp.GmpPlan:
    return gmp.plan(settings, phase, gmp.steps_per_epoch(len(dataset.train), settings.pretrain.batch_size))


def gmp_train(
    settings: Settings, data: Path, phase: int, seed: int, out: Path, prefix_out: Path, device: str = "cpu"
) -> Checkpoint:
    """Gradual magnitude pruning aimed at phase `phase`'s sparsity, from the dense model's
    initialization (see gmp.py). Also writes its state when pruning starts to
    `prefix_out`: GMP + SMS starts there, so the dense stretch is trained once."""
    dataset = load_prepared(data, settings.data, device)
    torch.manual_seed(derive_seed(seed, "init"))  # the dense model's initialization
    model = _model(settings, dataset)
    masks = dense_masks(model)
    plan = _gmp_plan(settings, dataset, phase)
    pruner = gmp.GradualPruner(model, masks, plan, settings.prune.exclude)
    prefix_meta = _meta(
        settings, seed, layout.gmp_prefix_dir(phase), kind="gmp_prefix", phase=phase,
        target_sparsity=0.0, train_steps=plan.start_step,
    )  # fmt: skip

    def save_prefix() -> None:
        Checkpoint(model.state_dict(), dense_masks(model), prefix_meta).save(prefix_out)

    def on_step(step: int) -> None:
        pruner(step)
        if step == plan.start_step:
            save_prefix()

    if plan.start_step == 0:
        save_prefix()
    meta = _meta(
        settings, seed, layout.gmp_dir(phase), kind="gmp", phase=phase,
        target_sparsity=plan.final_sparsity, gmp_epochs=plan.epochs,
        prune_start_step=plan.start_step, prune_end_step=plan.end_step, prune_interval=plan.interval,
        budget_epochs=_gmp_budget(plan, phase),
    )  # fmt: skip
    return _train_and_save(
        settings, model, masks, dataset,
        epochs=plan.epochs, schedule=pretrain_schedule(settings.pretrain),  # stretched to GMP's length
        seed=derive_seed(seed, "gmp", phase), meta=meta, out=out, on_step=on_step,
    )  # fmt: skip


def gmp_sms_ingredient(
    settings: Settings,
    data: Path,
    parent: Path,
    phase: int,
    round_index: int,
    index: int,
    seed: int,
    out: Path,
    device: str = "cpu",
) -> Checkpoint:
    """Copy `index` of GMP + SMS round `round_index`: continue GMP's LR and sparsity
    schedules over the round's epochs from `parent` (GMP's dense prefix for round 1,
    else the previous round's average), with its own seed."""
    dataset = load_prepared(data, settings.data, device)
    start = Checkpoint.load(parent)
    if start.meta.get("phase") != phase:
        raise ValueError(f"GMP + SMS phase {phase}: {parent} belongs to phase {start.meta.get('phase')}")
    model = _load_model(settings, dataset, start, parent)
    masks = {name: mask.to(dataset.device) for name, mask in start.masks.items()}
    plan = _gmp_plan(settings, dataset, phase)
    first, end = plan.round_epochs(round_index)
    offset = first * plan.steps_per_epoch
    meta = _meta(
        settings, seed, layout.gmp_sms_ingredient_dir(phase, round_index, index), kind="gmp_sms_ingredient",
        phase=phase, round=round_index, index=index,
        target_sparsity=plan.sparsity_at(end * plan.steps_per_epoch), parent_sha256=sha256(parent),
    )  # fmt: skip
    return _train_and_save(
        settings, model, masks, dataset,
        epochs=end - first,
        schedule=gmp.continued_schedule(pretrain_schedule(settings.pretrain), offset, plan.total_steps),
        seed=derive_seed(seed, "gmp_sms", phase, round_index, index), meta=meta, out=out,
        on_step=gmp.GradualPruner(model, masks, plan, settings.prune.exclude, offset),
    )  # fmt: skip


def gmp_sms_average(
    settings: Settings,
    data: Path,
    phase: int,
    round_index: int,
    ingredients: list[Path],
    out: Path,
    device: str = "cpu",
) -> Checkpoint:
    """Average a GMP + SMS round's copies (their masks may differ), re-prune globally to
    the schedule's sparsity at the round's end, recalibrate BatchNorm. The last round's
    average is GMP + SMS's result (kind `soup`, method `gmp_sms`)."""
    dataset = load_prepared(data, settings.data, device)
    loaded = [Checkpoint.load(path) for path in ingredients]
    for path, checkpoint in zip(ingredients, loaded, strict=True):
        found = (checkpoint.meta.get("kind"), checkpoint.meta.get("phase"), checkpoint.meta.get("round"))
        if found != ("gmp_sms_ingredient", phase, round_index):
            raise ValueError(
                f"GMP + SMS phase {phase} round {round_index}: {path} is (kind, phase, round) {found}"
            )
    plan = _gmp_plan(settings, dataset, phase)
    end = plan.round_epochs(round_index)[1]
    density = 1 - plan.sparsity_at(end * plan.steps_per_epoch)
    model = _model(settings, dataset)
    states = [c.state_dict for c in loaded]
    masks = gmp.average_dense_and_reprune(states, model, density, settings.prune.exclude)
    recalibrate_batchnorm(model, _recalibration_split(settings, dataset), settings.eval_batch_size)
    final = round_index == plan.rounds
    meta = _meta(
        settings, loaded[0].meta["seed"], layout.gmp_sms_round_dir(phase, round_index, plan.rounds),
        kind="soup" if final else "gmp_sms_round", method=layout.GMP_SMS, phase=phase,
        round=round_index, rounds=plan.rounds, target_sparsity=1 - density,
        ingredients=[str(p) for p in ingredients], ingredient_sha256=[sha256(p) for p in ingredients],
        geometry=soup_geometry(states, model.state_dict()), bn_recalibrated=True,
        budget_epochs=len(loaded) * _gmp_budget(plan, phase),
    )  # fmt: skip
    checkpoint = Checkpoint(model.state_dict(), masks, meta)
    checkpoint.save(out)
    return checkpoint


def _check_rewind_epoch(settings: Settings) -> int:
    epoch = settings.baselines.rewind_epoch
    if not 0 <= epoch < settings.pretrain.epochs:
        raise ValueError(
            f"baselines.rewind_epoch: {epoch} must be in 0..{settings.pretrain.epochs - 1} "
            f"(less than pretrain.epochs)"
        )
    return epoch


def rewind_point(settings: Settings, data: Path, seed: int, out: Path, device: str = "cpu") -> Checkpoint:
    """The dense run's state at the end of epoch `baselines.rewind_epoch`: its first epochs
    replayed (same initialization, batch order and LR), so `pretrain` stays as it is."""
    epoch = _check_rewind_epoch(settings)
    dataset = load_prepared(data, settings.data, device)
    torch.manual_seed(derive_seed(seed, "init"))
    model = _model(settings, dataset)
    total = _pretrain_steps(settings, dataset)
    schedule = gmp.continued_schedule(pretrain_schedule(settings.pretrain), 0, total)
    meta = _meta(
        settings, seed, layout.REWIND, kind="rewind", phase=0, target_sparsity=0.0, rewind_epoch=epoch
    )  # fmt: skip
    if epoch == 0:  # the initialization itself (the original lottery ticket rewinding)
        checkpoint = Checkpoint(model.state_dict(), dense_masks(model), {**meta, "train_steps": 0})
        checkpoint.save(out)
        return checkpoint
    return _train_and_save(
        settings, model, dense_masks(model), dataset,
        epochs=epoch, schedule=schedule, seed=derive_seed(seed, "pretrain"), meta=meta, out=out,
    )  # fmt: skip


def imp_rewind(
    settings: Settings,
    data: Path,
    parent: Path,
    rewind: Path,
    phase: int,
    seed: int,
    out: Path,
    device: str = "cpu",
) -> Checkpoint:
    """IMP with weight rewinding: prune the chain's previous model to this phase's
    density, reset the survivors to the rewind point, and train the rest of pretraining
    (its LR schedule from the rewind epoch on)."""
    epoch = _check_rewind_epoch(settings)
    dataset = load_prepared(data, settings.data, device)
    start = Checkpoint.load(parent)
    model = _load_model(settings, dataset, start, parent)
    point = Checkpoint.load(rewind)
    if point.meta.get("kind") != "rewind" or point.meta.get("rewind_epoch") != epoch:
        raise ValueError(f"{rewind} is not the rewind point of epoch {epoch} (meta {point.meta})")
    density = target_density(settings.prune.sparsity, settings.prune.phases, phase)
    parent_masks = {name: mask.to(dataset.device) for name, mask in start.masks.items()}
    parent_sha = sha256(parent)
    generator = torch.Generator().manual_seed(derive_seed(seed, "prune", phase, parent_sha))
    prune = settings.prune
    masks = select_masks(model, parent_masks, density, prune.selection, prune.exclude, generator)
    gmp.rewind_to(model, point.state_dict, masks)
    total = _pretrain_steps(settings, dataset)
    offset = epoch * gmp.steps_per_epoch(len(dataset.train), settings.pretrain.batch_size)
    meta = _meta(
        settings, seed, layout.ingredient_dir(layout.IMP_REWIND, phase, 0), kind="ingredient",
        lineage=layout.IMP_REWIND, phase=phase, index=0, target_sparsity=1 - density,
        parent_sha256=parent_sha, rewind_sha256=sha256(rewind), rewind_epoch=epoch,
    )  # fmt: skip
    return _train_and_save(
        settings, model, masks, dataset,
        epochs=settings.pretrain.epochs - epoch,
        schedule=gmp.continued_schedule(pretrain_schedule(settings.pretrain), offset, total),
        seed=derive_seed(seed, "imp_rewind", phase), meta=meta, out=out,
    )  # fmt: skip
