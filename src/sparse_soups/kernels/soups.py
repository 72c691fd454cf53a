"""Averaging sparse models that share one mask, and BatchNorm recalibration.

Averaged weights need fresh BatchNorm statistics: the running means of the ingredients
describe their own activations, not the soup's. `recalibrate_batchnorm` recomputes them
as an exact cumulative average over a share of the training split.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn

from .checkpoints import NonFiniteError
from .data import Split, iterate_batches
from .pruning import Masks, masks_equal
from .stopwatch import arithmetic

StateDict = dict[str, torch.Tensor]


class MaskMismatchError(ValueError):
    """Ingredients with different masks or architectures: no sparse average exists."""


def check_shared_mask(states: Sequence[StateDict], masks: Sequence[Masks]) -> None:
    """Refuse ingredients of different architectures or masks, or holding non-finite
    values: no merge of them keeps the sparsity (or means anything)."""
    if not states:
        raise ValueError("a soup needs at least one ingredient")
    shapes = {key: value.shape for key, value in states[0].items()}
    for index, state in enumerate(states[1:], start=1):
        if {key: value.shape for key, value in state.items()} != shapes:
            raise MaskMismatchError(f"ingredient {index} has a different architecture than ingredient 0")
    for index, other in enumerate(masks[1:], start=1):
        if not masks_equal(masks[0], other):
            raise MaskMismatchError(
                f"ingredient {index} has a different pruning mask than ingredient 0: "
                "averaging them would destroy sparsity"
            )
    for index, state in enumerate(states):
        for key, value in state.items():
            if value.is_floating_point() and not bool(torch.isfinite(value).all()):
                raise NonFiniteError(f"ingredient {index} holds NaN or infinite values in '{key}'")


def check_keeps_mask(state: StateDict, masks: Masks) -> None:
    """The invariant every soup must keep: each pruned weight is exactly zero."""
    for name, mask in masks.items():
        if bool((state[name].to(mask.device)[~mask] != 0).any()):
            raise MaskMismatchError(
                f"the soup has nonzero pruned weights in '{name}': the merge broke the mask"
            )


@arithmetic("merging")
def average_state_dicts(states: Sequence[StateDict], masks: Sequence[Masks]) -> StateDict:
    """Uniform mean of every floating-point entry; refuses ingredients whose masks differ
    or that hold non-finite values.

    Integer entries (BatchNorm's batch counters) are taken from the first ingredient;
    they are reset by recalibration anyway.
    """
    check_shared_mask(states, masks)
    return {
        key: torch.stack([state[key] for state in states]).mean(0)
        if first.is_floating_point()
        else first.clone()
        for key, first in states[0].items()
    }


@torch.no_grad()
@arithmetic("evaluation")
def recalibrate_batchnorm(model: nn.Module, split: Split, batch_size: int) -> None:
    """Reset BatchNorm statistics and recompute them over `split` (no augmentation).

    `momentum=None` makes the running statistics a cumulative average over all batches;
    the original momentum is restored afterwards, since models retrained from the soup
    would otherwise keep averaging cumulatively.
    """
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not norms:
        return
    momenta = [m.momentum for m in norms]
    try:
        for norm in norms:
            norm.reset_running_stats()
            norm.momentum = None
        model.train()
        for images, _ in iterate_batches(split, batch_size):
            model(images)
    finally:
        for norm, momentum in zip(norms, momenta, strict=True):
            norm.momentum = momentum
        model.eval()


Evaluate = Callable[[list[int]], float]


def greedy_selection(validation_accuracies: Sequence[float], evaluate_soup: Evaluate) -> list[int]:
    """The greedy soup of Wortsman et al. (2022): which ingredients to average.

    Visit ingredients from best to worst validation accuracy, starting from the best
    alone; keep each one whose addition does not lower the soup's validation accuracy.
    `evaluate_soup(indices)` returns the validation accuracy of the uniform soup of
    those ingredients (after BN recalibration).
    """
    order = sorted(range(len(validation_accuracies)), key=lambda i: -validation_accuracies[i])
    kept, best = [order[0]], validation_accuracies[order[0]]
    for candidate in order[1:]:
        accuracy = evaluate_soup([*kept, candidate])
        if accuracy >= best:
            kept, best = [*kept, candidate], accuracy
    return sorted(kept)


# Soup methods, as `registry.SOUP_METHODS` calls them: given the number of ingredients and
# `soup_accuracy(indices)` (validation accuracy of the uniform soup of those ingredients,
# BN recalibrated), return the indices to average.
def uniform_selection(count: int, soup_accuracy: Evaluate) -> list[int]:
    """Every ingredient (Wortsman et al.'s uniform soup)."""
    return list(range(count))


def greedy_soup(count: int, soup_accuracy: Evaluate) -> list[int]:
    """The greedy soup, ranking ingredients by their own validation accuracy."""
    return greedy_selection([soup_accuracy([i]) for i in range(count)], soup_accuracy)
