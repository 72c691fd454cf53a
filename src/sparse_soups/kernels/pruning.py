"""Unstructured magnitude pruning with explicit masks.

Masks are boolean tensors keyed by parameter name (True = weight kept). They travel
with every checkpoint, so a soup can check that its ingredients share one mask.
Pruning covers the weights of every Conv and Linear layer; biases and BatchNorm are
never pruned.
"""

from __future__ import annotations

import torch
from torch import nn

from ..registry import PRUNING_CRITERIA

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
    return select_masks(model, masks, density, "global")


def excluded_parameters(model: nn.Module, exclude: tuple[str, ...] | list[str]) -> set[str]:
    """Names of the weights `exclude` protects: the first conv and/or the last Linear."""
    names = list(prunable_parameters(model))
    modules = dict(model.named_modules())
    chosen = set()
    kinds = {n: modules[n.removesuffix(".weight")] for n in names}
    convs = [n for n in names if not isinstance(kinds[n], nn.Linear)]
    linears = [n for n in names if isinstance(kinds[n], nn.Linear)]
    if "first_conv" in exclude and convs:
        chosen.add(convs[0])
    if "classifier" in exclude and linears:
        chosen.add(linears[-1])
    return chosen


def _top_k_masks(scores: dict[str, torch.Tensor], keep: int) -> Masks:
    """Keep the `keep` highest scores over all tensors together (dead weights score -1)."""
    flat = torch.cat([score.flatten() for score in scores.values()])
    kept = torch.zeros_like(flat, dtype=torch.bool)
    kept[torch.topk(flat, keep, sorted=False).indices] = True
    masks, offset = {}, 0
    for name, score in scores.items():
        masks[name] = kept[offset : offset + score.numel()].view_as(score)
        offset += score.numel()
    return masks


def magnitude_scores(
    params: dict[str, torch.Tensor], generator: torch.Generator | None
) -> dict[str, torch.Tensor]:
    """Weight magnitudes: IMP's criterion."""
    return {name: p.detach().abs() for name, p in params.items()}


def random_scores(
    params: dict[str, torch.Tensor], generator: torch.Generator | None
) -> dict[str, torch.Tensor]:
    """Uniform noise: a random subset of the unpruned weights (the generator makes it the
    same for every ingredient of a phase)."""
    return {name: torch.rand(p.shape, generator=generator).to(p.device) for name, p in params.items()}


def select_masks(
    model: nn.Module,
    masks: Masks,
    density: float,
    selection: str = "global",
    exclude: tuple[str, ...] | list[str] = (),
    generator: torch.Generator | None = None,
) -> Masks:
    """New masks keeping `density` of the pruned layers' weights (excluded layers stay dense).

    `selection` names a criterion of `registry.PRUNING_CRITERIA`: its scores rank the
    unpruned weights, over all layers together (scope `global`) or within each layer
    (scope `layer`, each keeping `density` of its own weights).
    """
    criterion, scope = PRUNING_CRITERIA.get(selection), PRUNING_CRITERIA.info(selection)["scope"]
    params = prunable_parameters(model)
    protected = excluded_parameters(model, exclude)
    pruned = {name: p for name, p in params.items() if name not in protected}
    raw = criterion(pruned, generator)
    scores = {name: torch.where(masks[name], raw[name], -1.0) for name in pruned}  # dead weights: -1
    if scope == "layer":
        new = {}
        for name, score in scores.items():
            new |= _checked_top_k({name: score}, masks, round(density * score.numel()))
    else:
        new = _checked_top_k(scores, masks, round(density * sum(p.numel() for p in pruned.values())))
    return {name: new[name] if name in new else masks[name] for name in params}


def _checked_top_k(scores: dict[str, torch.Tensor], masks: Masks, keep: int) -> Masks:
    alive = sum(int(masks[name].sum()) for name in scores)
    if keep > alive:
        raise ValueError(f"cannot keep {keep} weights: only {alive} are unpruned")
    return _top_k_masks(scores, keep)


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


def rewind_to(model: nn.Module, rewind_state: dict[str, torch.Tensor], masks: Masks) -> None:
    """Reset every entry of `model` to the rewind point, then zero the pruned weights:
    survivors get exactly their early-training values, the mask is the pruned model's."""
    model.load_state_dict(rewind_state)
    apply_masks(model, masks)
