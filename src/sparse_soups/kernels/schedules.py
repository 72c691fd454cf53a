"""Learning-rate schedules as per-step multipliers of a peak rate.

Each schedule is a function `(step, total_steps) -> factor`, used with
`torch.optim.lr_scheduler.LambdaLR`, whose optimizer holds the peak rate.
Step s (0-based) trains with `peak * factor(s)`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import partial

from ..config import PretrainSettings, RetrainSettings

Schedule = Callable[[int, int], float]


def _warmup_steps(total: int, warmup_fraction: float) -> int:
    return math.ceil(warmup_fraction * total)


def _with_warmup(decay: Callable[[float], float], warmup_fraction: float, step: int, total: int) -> float:
    """Linear warm-up to the peak over the first steps, then `decay(progress in [0, 1))`."""
    warmup = _warmup_steps(total, warmup_fraction)
    if step < warmup:
        return (step + 1) / warmup
    return decay((step - warmup) / max(1, total - warmup))


def _linear(progress: float) -> float:
    return 1.0 - progress


def _cosine(progress: float) -> float:
    return 0.5 * (1.0 + math.cos(math.pi * progress))


def _constant(progress: float) -> float:
    return 1.0


def _step(milestones: tuple[float, ...], gamma: float, progress: float) -> float:
    return gamma ** sum(progress >= m for m in milestones)


# The schedules' names, declared here only: the config schema takes its enums from these.
PRETRAIN_SCHEDULES = ("linear", "cosine", "step", "constant")
RETRAIN_SCHEDULES = ("ft", "lrw", "slr", "clr", "llr", "allr")


def _pretrain_decay(settings: PretrainSettings) -> Callable[[float], float]:
    decays: dict[str, Callable[[float], float]] = {
        "linear": _linear,
        "cosine": _cosine,
        "constant": _constant,
        "step": partial(_step, tuple(settings.step_milestones), settings.step_gamma),
    }
    if settings.schedule not in decays:
        known = ", ".join(PRETRAIN_SCHEDULES)
        raise ValueError(f"pretrain.schedule: unknown schedule '{settings.schedule}' (known: {known})")
    return decays[settings.schedule]


def pretrain_schedule(settings: PretrainSettings) -> Schedule:
    return partial(_with_warmup, _pretrain_decay(settings), settings.warmup_fraction)


def _constant_factor(factor: float, step: int, total: int) -> float:
    return factor


def _replay(pretrain: Schedule, pretrain_steps: int, step: int, total: int) -> float:
    """LRW: step s of N replays pretraining step P - N + s (clamped to the first step)."""
    return pretrain(max(0, pretrain_steps - total + step), pretrain_steps)


def _cosine_to(floor: float, progress: float) -> float:
    return floor + (1.0 - floor) * _cosine(progress)


def _scaled(scale: float, schedule: Schedule, step: int, total: int) -> float:
    return scale * schedule(step, total)


def allr_scale(norm_drop: float, prune_fraction: float, retrain_epochs: int, pretrain_epochs: int) -> float:
    """ALLR's peak as a share of the pretraining peak: a prune that removes much of the
    norm gets a high peak, a gentle one a low peak, clipped to [min(E_re/E_pre, 1), 1]."""
    low = min(retrain_epochs / pretrain_epochs, 1.0)
    if prune_fraction <= 0:
        return low
    return min(max(norm_drop / math.sqrt(prune_fraction), low), 1.0)


def retrain_schedule(
    settings: RetrainSettings,
    pretrain: PretrainSettings | None = None,
    pretrain_steps: int = 1,
    allr_peak: float = 1.0,
) -> Schedule:
    """The retrain schedule as factors of the pretraining peak LR.

    FT, LRW, SLR and CLR are defined by the pretraining schedule of `pretrain_steps`
    steps; `allr_peak` is ALLR's scaled peak (see `allr_scale`).
    """
    pretrain = pretrain or PretrainSettings()
    before = pretrain_schedule(pretrain)
    warmup = settings.warmup_fraction
    name = settings.schedule
    if name == "llr":
        return partial(_with_warmup, _linear, warmup)
    if name == "allr":
        return partial(_scaled, allr_peak, partial(_with_warmup, _linear, warmup))
    if name == "ft":
        return partial(_constant_factor, before(pretrain_steps - 1, pretrain_steps))
    if name == "lrw":
        return partial(_replay, before, pretrain_steps)
    if name == "slr":
        return partial(_with_warmup, _pretrain_decay(pretrain), warmup)
    if name == "clr":
        floor = min(before(step, pretrain_steps) for step in range(pretrain_steps))
        return partial(_with_warmup, partial(_cosine_to, floor), warmup)
    raise ValueError(f"retrain.schedule: unknown schedule '{name}' (known: {', '.join(RETRAIN_SCHEDULES)})")
