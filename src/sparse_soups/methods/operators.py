"""The merging operators as soup methods: each turns one phase's ingredients into a soup.

An operator is a function `(pot: Pot) -> Merged`, registered in `registry.SOUP_METHODS`
with `merges=True` (and `base=True` when it needs the phase's pruned starting model). The
algorithms live in kernels/merging.py; here they get their settings (`merging.*`), their
data (validation split for grids and the learned soup, a share of the training split for
the Fisher) and their seeds. Operators with a grid merge every point, recalibrate
BatchNorm, score it on the validation split with the task's selection score, and keep the
best; the grid and its scores go into the soup's record.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..kernels import merging
from ..kernels.checkpoints import Checkpoint
from ..kernels.data import iterate_batches
from ..kernels.evaluation import accuracy
from ..kernels.pruning import Masks
from ..kernels.seeds import derive_seed
from .context import Job

StateDict = dict[str, torch.Tensor]


@dataclass
class Pot:
    """What an operator sees of a phase: the ingredients (sharing `masks`), the model to
    evaluate candidates in, and `base_path`, the chain's model the phase started from."""

    job: Job
    states: list[StateDict]
    masks: Masks
    model: nn.Module
    seed: int
    phase: int
    base_path: Path | None = None

    @cached_property
    def base(self) -> StateDict:
        """theta_0: the chain's previous model pruned to the phase's mask, which is what
        every ingredient was retrained from (the prune keeps the other entries as they are)."""
        if self.base_path is None:
            raise ValueError("this soup method needs the phase's starting model: pass --base")
        parent = Checkpoint.load(self.base_path).state_dict
        return {key: value * self.masks[key] if key in self.masks else value for key, value in parent.items()}

    def score(self, state: StateDict) -> float:
        """Validation score of a candidate soup, BatchNorm recalibrated (the soup's own)."""
        self.model.load_state_dict(state)
        self.job.recalibrate(self.model)
        return accuracy(self.model, self.job.dataset.val, self.job.batch_size)

    def loss_and_forward(self) -> tuple[Callable, Callable]:
        task = self.job.dataset.task
        return task.loss, task.forward


@dataclass
class Merged:
    state: StateDict
    details: dict[str, Any] = field(default_factory=dict)  # recorded in the soup's meta
    history: list[dict[str, float]] | None = None  # an optimized soup's loss per epoch


def _best_of_grid(pot: Pot, grid: list[dict[str, float]], merge: Callable[..., StateDict]) -> Merged:
    """Merge at every grid point, keep the best validation score (the first among ties)."""
    best: tuple[float, StateDict, dict[str, float]] | None = None
    scored = []
    for point in grid:
        state = merge(**point)
        value = pot.score(state)
        scored.append({**point, "validation_score": value})
        if best is None or value > best[0]:
            best = (value, state, point)
    assert best is not None
    return Merged(best[1], {"chosen": best[2], "grid": scored})


def model_stock(pot: Pot) -> Merged:
    """Model Stock: toward the ingredients' mean by the per-tensor ratio of their updates' angle."""
    state, ratios = merging.model_stock(pot.states, pot.base)
    values = list(ratios.values())
    summary = {"ratio_mean": sum(values) / len(values), "ratio_min": min(values), "ratio_max": max(values)}
    return Merged(state, {**summary, "ratios": ratios})


def ties(pot: Pot) -> Merged:
    """TIES over the grid of `merging.ties_density` x `merging.ties_scale`."""
    settings = pot.job.settings.merging
    grid = [
        {"density": d, "scale": s} for d, s in itertools.product(settings.ties_density, settings.ties_scale)
    ]
    return _best_of_grid(
        pot, grid, lambda density, scale: merging.ties_merge(pot.states, pot.base, density, scale)
    )


def dare(pot: Pot) -> Merged:
    """DARE over the grid of `merging.dare_drop_rate`, each point with the same seeded draws."""
    rates = pot.job.settings.merging.dare_drop_rate

    def merge(drop_rate: float) -> StateDict:
        generator = torch.Generator().manual_seed(derive_seed(pot.seed, "dare", pot.phase))
        return merging.dare_merge(pot.states, pot.base, drop_rate, generator)

    return _best_of_grid(pot, [{"drop_rate": rate} for rate in rates], merge)


def fisher(pot: Pot) -> Merged:
    """Fisher-weighted averaging, each ingredient's diagonal Fisher over the first
    `merging.fisher_fraction` of the training split (un-augmented)."""
    job = pot.job
    split = job.dataset.train.head(job.settings.merging.fisher_fraction)
    loss, forward = pot.loss_and_forward()
    chunk = min(job.settings.pretrain.batch_size, 64)  # per-example gradients: memory x chunk
    fishers = [
        merging.diagonal_fisher(pot.model, state, iterate_batches(split, chunk), loss, forward)
        for state in pot.states
    ]
    return Merged(merging.fisher_merge(pot.states, fishers), {"fisher_examples": len(split)})


def learned(pot: Pot) -> Merged:
    """The learned soup: mixing coefficients fitted with AdamW on the validation split."""
    job, settings = pot.job, pot.job.settings.merging
    loss, forward = pot.loss_and_forward()
    validation, batch_size = job.dataset.val, job.settings.pretrain.batch_size
    state, coefficients, history = merging.learned_soup(
        pot.model, pot.states, lambda: iterate_batches(validation, batch_size), loss,
        per_layer=settings.learned_per_layer, epochs=settings.learned_epochs, lr=settings.learned_lr,
        seed=derive_seed(pot.seed, "learned_soup", pot.phase), forward=forward,
    )  # fmt: skip
    rows = [{"epoch": epoch, "validation_loss": value} for epoch, value in enumerate(history, start=1)]
    details = {"coefficients": coefficients.tolist(), "per_layer": settings.learned_per_layer}
    return Merged(state, details, history=rows)
