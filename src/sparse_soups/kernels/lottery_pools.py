"""Lottery Pools (Yin et al., AAAI 2023): interpolate a ticket with the other tickets of
its IMP chain, re-pruned to its own density.

Starting from the target ticket (phase t), candidates are visited by distance in the
chain (t-1, t+1, t-2, t+2, ...). For each, every `alpha` of the grid gives the
interpolation `alpha * candidate + (1 - alpha) * best`; it is re-pruned globally to the
target density, its BatchNorm recalibrated, and scored on validation accuracy. The best
alpha replaces the running best only if it beats it. LP-Avg is the same with alpha 0.5.
The scoring (re-prune, recalibrate, validate) is passed in, so the search itself is
pure and testable on constructed cases.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

from .stopwatch import arithmetic

StateDict = dict[str, torch.Tensor]
# Maps an interpolated state to its validation score and its re-pruned, recalibrated state.
Score = Callable[[StateDict], tuple[float, StateDict]]

ALPHAS = (0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95)
AVG_ALPHAS = (0.5,)


def candidate_order(target: int, tickets: Sequence[int]) -> list[int]:
    """Other tickets by distance from the target, the earlier (denser) one first on ties."""
    others = [t for t in tickets if t != target]
    return sorted(others, key=lambda t: (abs(t - target), t > target))


@arithmetic("merging")
def interpolate(best: StateDict, candidate: StateDict, alpha: float) -> StateDict:
    """`alpha * candidate + (1 - alpha) * best` for floating-point entries; counters
    (BatchNorm's num_batches_tracked) are taken from `best`."""
    return {
        key: alpha * candidate[key] + (1 - alpha) * value if value.is_floating_point() else value.clone()
        for key, value in best.items()
    }


@dataclass
class PoolResult:
    state: StateDict
    score: float
    # (candidate, alpha, score) of each accepted step, in the order taken
    accepted: list[tuple[int, float, float]] = field(default_factory=list)
    trials: int = 0


def lottery_pool(
    target: int,
    tickets: dict[int, StateDict],
    score: Score,
    alphas: Sequence[float] = ALPHAS,
) -> PoolResult:
    """The greedy interpolation search from the target ticket over the others."""
    start_score, start_state = score(tickets[target])
    result = PoolResult(start_state, start_score)
    for candidate in candidate_order(target, list(tickets)):
        trials = [(*score(interpolate(result.state, tickets[candidate], alpha)), alpha) for alpha in alphas]
        result.trials += len(trials)
        best_score, best_state, best_alpha = max(trials, key=lambda trial: trial[0])
        if best_score > result.score:
            result.state, result.score = best_state, best_score
            result.accepted.append((candidate, best_alpha, best_score))
    return result
