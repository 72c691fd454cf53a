"""Iterative magnitude pruning: pretraining, each phase's prune-and-retrain (IMP's own
retrain and every SMS ingredient), and IMP with weight rewinding (Frankle et al., 2020).

With rewinding, each phase prunes the chain's previous model, resets the survivors (and
every other entry of the state) to the dense run's state at the end of epoch k
(`baselines.rewind_epoch`), and retrains for the remaining `pretrain.epochs - k` epochs
with the pretraining LR schedule from that epoch on. The epoch-k state is obtained by
replaying the first k epochs of pretraining (same initialization, batch order and LR),
which is bitwise the pretraining run's state when run on the same number of threads.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel

from ..kernels import gradual
from ..kernels.checkpoints import Checkpoint
from ..kernels.files import sha256
from ..kernels.pruning import dense_masks, rewind_to
from ..kernels.schedules import allr_scale, pretrain_schedule, retrain_schedule
from ..kernels.seeds import derive_seed
from .context import Job, norm_drop
from .recipes import Recipe


def pretrain(job: Job, seed: int, out: Path) -> Checkpoint:
    """Train the dense model from a seeded initialization."""
    model = job.seeded_model(seed)
    return job.train_and_save(
        model, dense_masks(model),
        epochs=job.settings.pretrain.epochs,
        schedule=pretrain_schedule(job.settings.pretrain),
        seed=derive_seed(seed, "pretrain"),
        record=job.record(seed, "dense", phase=0, target_sparsity=0.0),
        out=out,
    )  # fmt: skip


def retrain(
    job: Job, parent: Path, lineage: str, phase: int, index: int, seed: int, recipe: Recipe, out: Path
) -> Checkpoint:
    """Prune the parent to this phase's density, then retrain it as the recipe says (its
    weight decay, peak LR, epochs and schedule; see recipes.py)."""
    start, model = job.load(parent)
    parent_masks = job.masks_of(start)
    masks = job.prune_for_phase(model, parent, parent_masks, phase, seed)
    drop, prune_fraction = norm_drop(model, parent_masks, masks)
    settings = job.settings
    peak = allr_scale(drop, prune_fraction, recipe.epochs, settings.pretrain.epochs)
    schedule = retrain_schedule(
        dataclasses.replace(settings.retrain, schedule=recipe.schedule),
        settings.pretrain, job.pretrain_steps, peak,
    )  # fmt: skip
    swa = WeightAverage(model, recipe.swa_fraction, recipe.epochs * job.steps_per_epoch)
    record = job.record(
        seed, "ingredient", lineage=lineage, phase=phase, index=index,
        target_sparsity=1 - job.phase_density(phase), parent_sha256=sha256(parent),
        recipe=dataclasses.asdict(recipe), **swa.details(),
    )  # fmt: skip
    return job.train_and_save(
        model, masks,
        epochs=recipe.epochs, schedule=schedule,
        seed=derive_seed(seed, "retrain", phase, recipe.seed_index), record=record, out=out,
        optim=dataclasses.replace(settings.pretrain, weight_decay=recipe.weight_decay), peak_lr=recipe.lr,
        on_step=swa.on_step if swa.enabled else None, finish=swa.finish if swa.enabled else None,
    )  # fmt: skip


class WeightAverage:
    """Stochastic weight averaging over the last `fraction` of a retrain's steps (SWAMP's
    particles, Choi et al. 2024): after each of those steps the weights join a running
    mean (torch.optim.swa_utils.AveragedModel); at the end the model takes the mean and
    BatchNorm is recalibrated for it. Masked weights are zero at every step, so their mean is."""

    def __init__(self, model: nn.Module, fraction: float, total_steps: int) -> None:
        self.model, self.enabled = model, fraction > 0
        self.start = total_steps - max(1, round(fraction * total_steps)) if self.enabled else total_steps
        self.averaged: AveragedModel | None = None

    def details(self) -> dict[str, Any]:
        return {"swa_from_step": self.start, "bn_recalibrated": True} if self.enabled else {}

    def on_step(self, steps_done: int) -> None:
        if steps_done <= self.start:
            return
        if self.averaged is None:
            self.averaged = AveragedModel(self.model, use_buffers=False)
        self.averaged.update_parameters(self.model)

    def finish(self, job: Job) -> None:
        if self.averaged is None:
            return
        with torch.no_grad():
            for mine, mean in zip(self.model.parameters(), self.averaged.module.parameters(), strict=True):
                mine.copy_(mean)
        job.recalibrate(self.model)


def _rewind_epoch(job: Job) -> int:
    epoch, pretrain_epochs = job.settings.baselines.rewind_epoch, job.settings.pretrain.epochs
    if not 0 <= epoch < pretrain_epochs:
        raise ValueError(
            f"baselines.rewind_epoch: {epoch} must be in 0..{pretrain_epochs - 1} (less than pretrain.epochs)"
        )
    return epoch


def rewind_point(job: Job, seed: int, out: Path) -> Checkpoint:
    """The dense run's state at the end of epoch `baselines.rewind_epoch`: its first epochs
    replayed (same initialization, batch order and LR), so `pretrain` stays as it is."""
    epoch = _rewind_epoch(job)
    model = job.seeded_model(seed)
    schedule = gradual.continued_schedule(pretrain_schedule(job.settings.pretrain), 0, job.pretrain_steps)
    record = job.record(seed, "rewind", phase=0, target_sparsity=0.0, rewind_epoch=epoch)
    if epoch == 0:  # the initialization itself (the original lottery ticket rewinding)
        meta = {**record.to_meta(), "train_steps": 0}
        return job.save(model.state_dict(), dense_masks(model), meta, out, history=[])
    return job.train_and_save(
        model, dense_masks(model),
        epochs=epoch, schedule=schedule, seed=derive_seed(seed, "pretrain"), record=record, out=out,
    )  # fmt: skip


def imp_rewind(
    job: Job, parent: Path, rewind: Path, lineage: str, phase: int, seed: int, out: Path
) -> Checkpoint:
    """Prune the chain's previous model to this phase's density, reset the survivors to
    the rewind point, and train the rest of pretraining (its LR schedule from the rewind
    epoch on)."""
    epoch = _rewind_epoch(job)
    start, model = job.load(parent)
    point = Checkpoint.load(rewind)
    if point.meta.get("kind") != "rewind" or point.meta.get("rewind_epoch") != epoch:
        raise ValueError(f"{rewind} is not the rewind point of epoch {epoch} (meta {point.meta})")
    masks = job.prune_for_phase(model, parent, job.masks_of(start), phase, seed)
    rewind_to(model, point.state_dict, masks)
    pretrain = job.settings.pretrain
    offset = epoch * gradual.steps_per_epoch(len(job.dataset.train), pretrain.batch_size)
    record = job.record(
        seed, "ingredient", lineage=lineage, phase=phase, index=0,
        target_sparsity=1 - job.phase_density(phase), parent_sha256=sha256(parent),
        rewind_sha256=sha256(rewind), rewind_epoch=epoch,
    )  # fmt: skip
    return job.train_and_save(
        model, masks,
        epochs=pretrain.epochs - epoch,
        schedule=gradual.continued_schedule(pretrain_schedule(pretrain), offset, job.pretrain_steps),
        seed=derive_seed(seed, "imp_rewind", phase), record=record, out=out,
    )  # fmt: skip
