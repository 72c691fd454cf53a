"""Pruning during training: gradual magnitude pruning (GMP) and GMP with Sparse Model Soups.

**GMP** (Zhu & Gupta, 2017) trains from the same seeded initialization as the dense
model, with the pretraining LR schedule stretched over GMP's epochs (by default IMP's
whole budget to the target phase: `pretrain.epochs + phase * retrain.epochs`). Training
is dense for the first `start_fraction` of the steps (by default the pretraining's share
of that budget, so GMP prunes in the epochs IMP spends retraining); then every
`prune_interval` steps for the first `ramp_fraction` of the remaining steps, and at
the ramp's last step t1 itself,
the weights are pruned globally by magnitude (with `prune.exclude` honoured, through
`pruning.select_masks`) to the cubic schedule's sparsity

    s(t) = s_f * (1 - (1 - (t - t0) / (t1 - t0))^3)   for t0 <= t <= t1,

so the target phase's sparsity s_f is reached exactly at t1 and kept while the rest
of training fine-tunes.
Weights once pruned stay pruned; masks are re-applied after every optimizer step, so
pruned weights are exactly zero between pruning steps too. GMP always selects by global
magnitude (`prune.selection` applies to IMP).

**GMP + SMS**, the adaptation used here (the paper gives no exact recipe):

1. The dense stretch before t0 is trained once: it is the GMP run's own state at t0
   (saved by the GMP job), so GMP and GMP + SMS share it and it is never recomputed.
2. The remaining epochs (t0 to the end) are split into R rounds of whole epochs
   (`gmp.rounds`, by default `prune.phases`; as equal as integers allow).
3. In each round, m copies (`soup.ingredients`) start from the round's start model and
   differ only in the seed of batch order and augmentation (the seed axis, whatever
   `soup.vary` says for SMS). Each continues the *global* LR schedule and the global
   cubic sparsity schedule from the round's first step, with a fresh optimizer (as every
   SMS retrain does), pruning by its own magnitudes, so the copies' masks may differ.
4. At the round's end the copies are averaged entry by entry as dense tensors (a pruned
   weight counts as zero), the average is re-pruned globally by magnitude to the
   schedule's sparsity at that step (`average_dense_and_reprune`; SMS's own soup refuses
   differing masks and is left so), and BatchNorm is recalibrated.
5. The next round starts from that model; the last round's average is the result. With
   the defaults the copies train for as many epochs in total as SMS's retrains do.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial

import torch
from torch import nn

from ..config import Settings, dense_epochs, gmp_epochs, gmp_rounds
from .pruning import Masks, apply_masks, dense_masks, select_masks, target_density
from .schedules import Schedule

StateDict = dict[str, torch.Tensor]


def cubic_sparsity(step: int, start: int, end: int, final: float) -> float:
    """Zhu & Gupta's schedule from 0 at step `start` to `final` at step `end`."""
    if step <= start:
        return 0.0
    if step >= end:
        return final
    return final * (1 - (1 - (step - start) / (end - start)) ** 3)


@dataclass(frozen=True)
class GmpPlan:
    """Where GMP prunes, in optimizer steps (step t = t steps completed)."""

    steps_per_epoch: int
    epochs: int
    dense_epochs: int  # pruning starts after these epochs (t0)
    end_step: int  # t1: the final sparsity is reached here
    interval: int
    final_sparsity: float
    rounds: int  # GMP + SMS rounds over the epochs after t0

    @property
    def total_steps(self) -> int:
        return self.epochs * self.steps_per_epoch

    @property
    def start_step(self) -> int:
        return self.dense_epochs * self.steps_per_epoch

    def is_pruning_step(self, step: int) -> bool:
        if not self.start_step < step <= self.end_step:
            return False
        return (step - self.start_step) % self.interval == 0 or step == self.end_step

    def sparsity_at(self, step: int) -> float:
        """The model's sparsity after `step` steps: that of the last pruning step so far."""
        if step >= self.end_step:
            return self.final_sparsity
        last = step - (step - self.start_step) % self.interval if step > self.start_step else self.start_step
        return cubic_sparsity(last, self.start_step, self.end_step, self.final_sparsity)

    def round_epochs(self, round_index: int) -> tuple[int, int]:
        """First and end epoch of GMP + SMS round `round_index` (1-based)."""
        if not 1 <= round_index <= self.rounds:
            raise ValueError(f"gmp.rounds: round {round_index} is not in 1..{self.rounds}")
        sparse = self.epochs - self.dense_epochs
        bounds = [self.dense_epochs + (sparse * r) // self.rounds for r in range(self.rounds + 1)]
        return bounds[round_index - 1], bounds[round_index]


def plan(settings: Settings, phase: int, steps_per_epoch: int) -> GmpPlan:
    """GMP aimed at IMP phase `phase`'s sparsity (`validation` has checked the settings)."""
    epochs = gmp_epochs(settings, phase)
    start, total = dense_epochs(settings, phase) * steps_per_epoch, epochs * steps_per_epoch
    ramp = max(1, round(settings.gmp.ramp_fraction * (total - start)))
    return GmpPlan(
        steps_per_epoch=steps_per_epoch,
        epochs=epochs,
        dense_epochs=dense_epochs(settings, phase),
        end_step=min(start + ramp, total),
        interval=settings.gmp.prune_interval,
        final_sparsity=1 - target_density(settings.prune.sparsity, settings.prune.phases, phase),
        rounds=gmp_rounds(settings),
    )


def _shifted(base: Schedule, offset: int, total: int, step: int, _local_total: int) -> float:
    return base(offset + step, total)


def continued_schedule(base: Schedule, offset: int, total: int) -> Schedule:
    """`base` over `total` steps, entered at step `offset`: a run that resumes a longer one."""
    return partial(_shifted, base, offset, total)


class GradualPruner:
    """Called after each optimizer step (with the steps done in this run): prunes at the
    plan's pruning steps, updating `masks` in place so training keeps applying them."""

    def __init__(
        self, model: nn.Module, masks: Masks, gmp_plan: GmpPlan, exclude: Sequence[str], offset: int = 0
    ) -> None:
        self.model, self.masks, self.plan = model, masks, gmp_plan
        self.exclude, self.offset = tuple(exclude), offset

    def __call__(self, step: int) -> None:
        global_step = self.offset + step
        if self.plan.is_pruning_step(global_step):
            density = 1 - self.plan.sparsity_at(global_step)
            self.masks.update(select_masks(self.model, self.masks, density, "global", self.exclude))
            apply_masks(self.model, self.masks)


def average_dense_and_reprune(
    states: Sequence[StateDict], model: nn.Module, density: float, exclude: Sequence[str]
) -> Masks:
    """GMP + SMS's round average: the entry-wise mean of models whose masks may differ (a
    pruned weight counts as zero), loaded into `model` and re-pruned globally by magnitude
    to `density`. Unlike `soups.average_state_dicts` it accepts differing masks, because
    the re-prune restores the sparsity that averaging them loses; BatchNorm statistics
    are left for the caller to recalibrate. Returns the new masks."""
    if not states:
        raise ValueError("GMP + SMS: a round average needs at least one model")
    averaged = {
        key: torch.stack([s[key] for s in states]).mean(0) if first.is_floating_point() else first.clone()
        for key, first in states[0].items()
    }
    model.load_state_dict(averaged)
    masks = select_masks(model, dense_masks(model), density, "global", exclude)
    apply_masks(model, masks)
    return masks


@torch.no_grad()
def steps_per_epoch(train_size: int, batch_size: int) -> int:
    return math.ceil(train_size / batch_size)
