"""Lottery Pools (Yin et al., 2023) over an IMP chain's tickets: interpolate the target
phase's ticket with the others (kernels/lottery_pools.py), re-prune, recalibrate."""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from ..config import LOTTERY_POOLS_VARIANTS
from ..kernels.checkpoints import Checkpoint
from ..kernels.evaluation import accuracy
from ..kernels.files import sha256
from ..kernels.lottery_pools import ALPHAS, AVG_ALPHAS, lottery_pool
from ..kernels.pruning import apply_masks, dense_masks, prunable_parameters, select_masks
from .context import Job

log = logging.getLogger(__name__)
VARIANTS = dict(zip(LOTTERY_POOLS_VARIANTS, (ALPHAS, AVG_ALPHAS), strict=True))  # the alpha grid, or 0.5


def lottery_pools(job: Job, target_phase: int, tickets: list[Path], variant: str, out: Path) -> Checkpoint:
    """Lottery Pools aimed at `target_phase` (`tickets[p - 1]` is phase p's ticket).

    Each interpolation is re-pruned globally (with `prune.exclude`) to the target
    ticket's density, BatchNorm recalibrated, and scored on validation accuracy.
    """
    if variant not in VARIANTS:
        raise ValueError(f"lottery pools: unknown variant '{variant}' (known: {', '.join(VARIANTS)})")
    _ = job.dataset  # loaded before the model is built, as for every step
    loaded = [Checkpoint.load(path) for path in tickets]
    phases = [c.meta.get("phase") for c in loaded]
    if phases != list(range(1, len(loaded) + 1)):
        raise ValueError(f"lottery pools needs the tickets of phases 1..{len(loaded)} in order, got {phases}")
    model = job.new_model()
    density = job.phase_density(target_phase)

    def score(state: dict[str, torch.Tensor]) -> tuple[float, dict[str, torch.Tensor]]:
        model.load_state_dict(state)
        masks = select_masks(model, dense_masks(model), density, "global", job.settings.prune.exclude)
        apply_masks(model, masks)
        job.recalibrate(model)
        return accuracy(model, job.dataset.val, job.batch_size), {
            k: v.clone() for k, v in model.state_dict().items()
        }

    states = {c.meta["phase"]: c.state_dict for c in loaded}
    result = lottery_pool(target_phase, states, score, VARIANTS[variant])
    model.load_state_dict(result.state)
    record = job.record(
        loaded[0].meta["seed"], "lottery_pools", method=f"lottery_pools_{variant}", phase=target_phase,
        target_sparsity=1 - density, validation_score=result.score,
        accepted=[list(step) for step in result.accepted], trials=result.trials,
        ticket_sha256=[sha256(p) for p in tickets], bn_recalibrated=True,
    )  # fmt: skip
    masks = {n: p != 0 for n, p in prunable_parameters(model).items()}
    log.info("lottery pools (%s) for phase %d accepted %s", variant, target_phase, result.accepted)
    return job.save(model.state_dict(), masks, record.to_meta(), out)
