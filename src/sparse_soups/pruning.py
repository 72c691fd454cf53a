"""Unstructured magnitude pruning with explicit masks.

Masks are boolean tensors keyed by parameter name (True = weight kept). They travel
with every checkpoint, so a soup can check that its ingredients share one mask.
Pruning covers the weights of every Conv and Linear layer; biases and BatchNorm are
never pruned.
"""

from __future__ import annotations

import torch
from torch import nn

Masks = dict[str, torch.Tensor]
PRUNABLE_LAYERS = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)


def prunable_parameters(model: nn.Module) -> dict[str, nn.Parameter]:
    return {
        f"{name}.weight" if name else "weight": module.weight
        for name, module in model.named_modules()
        if isinstance(module, PRUNABLE_LAYERS)
    }


def dense_masks(model: nn.Module) -> Masks:
    return {name: torch.ones_like(p, dtype=torch.bool) for name, p in prunable_parameters(model).items()}


def per_phase_rate(goal_sparsity: float, phases: int) -> float:
    """Fraction of the *remaining* weights pruned in each phase to reach the goal after P."""
    return 1 - (1 - goal_sparsity) ** (1 / phases)


def target_density(goal_sparsity: float, phases: int, phase: int) -> float:
    """Share of prunable weights kept after `phase` of `phases` phases."""
    return (1 - per_phase_rate(goal_sparsity, phases)) ** phase


def global_magnitude_masks(model: nn.Module, masks: Masks, density: float) -> Masks:
    """Keep the `density` share of all prunable weights with the largest magnitude.

    The count kept is rounded from the total, not from the previous phase, so rounding
    never drifts across phases. Already pruned weights stay pruned.
    """
    params = prunable_parameters(model)
    total = sum(p.numel() for p in params.values())
    keep = round(density * total)
    alive = sum(int(masks[name].sum()) for name in params)
    if keep > alive:
        raise ValueError(f"cannot keep {keep} weights: only {alive} are unpruned")
    scores = torch.cat(
        [torch.where(masks[name], p.detach().abs(), -1.0).flatten() for name, p in params.items()]
    )
    kept = torch.zeros_like(scores, dtype=torch.bool)
    kept[torch.topk(scores, keep, sorted=False).indices] = True
    new_masks, offset = {}, 0
    for name, p in params.items():
        new_masks[name] = kept[offset : offset + p.numel()].view_as(p)
        offset += p.numel()
    return new_masks


@torch.no_grad()
def apply_masks(model: nn.Module, masks: Masks) -> None:
    """Zero pruned weights in place. Called after every optimizer step."""
    for name, param in prunable_parameters(model).items():
        param.mul_(masks[name])


def masks_equal(a: Masks, b: Masks) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def sparsity(model: nn.Module) -> tuple[float, dict[str, float]]:
    """Measured share of zero weights: over all prunable weights, and per layer."""
    params = prunable_parameters(model)
    zeros = {name: int((p == 0).sum()) for name, p in params.items()}
    total = sum(p.numel() for p in params.values())
    per_layer = {name: zeros[name] / params[name].numel() for name in params}
    return sum(zeros.values()) / total, per_layer
