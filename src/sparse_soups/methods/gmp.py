"""Gradual magnitude pruning (Zhu & Gupta, 2017) and GMP + SMS, the adaptation of soups
to pruning during training. The schedules and the pruner are in kernels/gradual.py,
whose docstring gives the method; here are its three steps."""

from __future__ import annotations

from pathlib import Path

from ..kernels import gradual
from ..kernels.checkpoints import Checkpoint
from ..kernels.files import sha256
from ..kernels.metrics import soup_geometry
from ..kernels.pruning import dense_masks
from ..kernels.schedules import pretrain_schedule
from ..kernels.seeds import derive_seed
from .context import Job


def _plan(job: Job, phase: int) -> gradual.GmpPlan:
    steps = gradual.steps_per_epoch(len(job.dataset.train), job.settings.pretrain.batch_size)
    return gradual.plan(job.settings, phase, steps)


def _budget(plan: gradual.GmpPlan, phase: int) -> float:
    """GMP's epochs after its dense stretch, per IMP phase it stands for: comparable with
    IMP's retrain epochs per phase (GMP + SMS spends this m times over)."""
    return (plan.epochs - plan.dense_epochs) / phase


def gmp_train(job: Job, phase: int, seed: int, out: Path, prefix_out: Path, prefix_dir: str) -> Checkpoint:
    """GMP aimed at phase `phase`'s sparsity, from the dense model's initialization. Also
    writes its state when pruning starts to `prefix_out` (recorded as `prefix_dir`):
    GMP + SMS starts there, so the dense stretch is trained once."""
    model = job.seeded_model(seed)
    masks = dense_masks(model)
    plan = _plan(job, phase)
    pruner = gradual.GradualPruner(model, masks, plan, job.settings.prune.exclude)
    prefix = job.record(seed, "gmp_prefix", phase=phase, target_sparsity=0.0, train_steps=plan.start_step)
    prefix_meta = {**prefix.to_meta(), "model_dir": prefix_dir}

    def save_prefix() -> None:
        job.save(model.state_dict(), dense_masks(model), prefix_meta, prefix_out)

    def on_step(step: int) -> None:
        pruner(step)
        if step == plan.start_step:
            save_prefix()

    if plan.start_step == 0:
        save_prefix()
    record = job.record(
        seed, "gmp", phase=phase, target_sparsity=plan.final_sparsity, gmp_epochs=plan.epochs,
        prune_start_step=plan.start_step, prune_end_step=plan.end_step, prune_interval=plan.interval,
        budget_epochs=_budget(plan, phase),
    )  # fmt: skip
    return job.train_and_save(
        model, masks,
        epochs=plan.epochs, schedule=pretrain_schedule(job.settings.pretrain),  # stretched to GMP's length
        seed=derive_seed(seed, "gmp", phase), record=record, out=out, on_step=on_step,
    )  # fmt: skip


def gmp_sms_ingredient(
    job: Job, parent: Path, phase: int, round_index: int, index: int, seed: int, out: Path
) -> Checkpoint:
    """Copy `index` of GMP + SMS round `round_index`: continue GMP's LR and sparsity
    schedules over the round's epochs from `parent` (GMP's dense prefix for round 1,
    else the previous round's average), with its own seed."""
    start, model = job.load(parent)
    if start.meta.get("phase") != phase:
        raise ValueError(f"GMP + SMS phase {phase}: {parent} belongs to phase {start.meta.get('phase')}")
    masks = job.masks_of(start)
    plan = _plan(job, phase)
    first, end = plan.round_epochs(round_index)
    offset = first * plan.steps_per_epoch
    record = job.record(
        seed, "gmp_sms_ingredient", phase=phase, round=round_index, index=index,
        target_sparsity=plan.sparsity_at(end * plan.steps_per_epoch), parent_sha256=sha256(parent),
    )  # fmt: skip
    schedule = gradual.continued_schedule(pretrain_schedule(job.settings.pretrain), offset, plan.total_steps)
    return job.train_and_save(
        model, masks,
        epochs=end - first, schedule=schedule,
        seed=derive_seed(seed, "gmp_sms", phase, round_index, index), record=record, out=out,
        on_step=gradual.GradualPruner(model, masks, plan, job.settings.prune.exclude, offset),
    )  # fmt: skip


def gmp_sms_average(job: Job, phase: int, round_index: int, ingredients: list[Path], out: Path) -> Checkpoint:
    """Average a GMP + SMS round's copies (their masks may differ), re-prune globally to
    the schedule's sparsity at the round's end, recalibrate BatchNorm. The last round's
    average is GMP + SMS's result (kind `soup`, method `gmp_sms`)."""
    loaded = [Checkpoint.load(path) for path in ingredients]
    for path, checkpoint in zip(ingredients, loaded, strict=True):
        found = (checkpoint.meta.get("kind"), checkpoint.meta.get("phase"), checkpoint.meta.get("round"))
        if found != ("gmp_sms_ingredient", phase, round_index):
            raise ValueError(
                f"GMP + SMS phase {phase} round {round_index}: {path} is (kind, phase, round) {found}"
            )
    plan = _plan(job, phase)
    end = plan.round_epochs(round_index)[1]
    density = 1 - plan.sparsity_at(end * plan.steps_per_epoch)
    model = job.new_model()
    states = [c.state_dict for c in loaded]
    masks = gradual.average_dense_and_reprune(states, model, density, job.settings.prune.exclude)
    job.recalibrate(model)
    final = round_index == plan.rounds
    record = job.record(
        loaded[0].meta["seed"], "soup" if final else "gmp_sms_round", method="gmp_sms", phase=phase,
        round=round_index, rounds=plan.rounds, target_sparsity=1 - density,
        ingredients=[str(p) for p in ingredients], ingredient_sha256=[sha256(p) for p in ingredients],
        geometry=soup_geometry(states, model.state_dict()), bn_recalibrated=True,
        budget_epochs=len(loaded) * _budget(plan, phase),
    )  # fmt: skip
    return job.save(model.state_dict(), masks, record.to_meta(), out)
