"""Learning-rate schedules as per-step multipliers of a peak rate.

Each schedule is a function `(step, total_steps) -> factor`, used with
`torch.optim.lr_scheduler.LambdaLR`, whose optimizer holds the peak rate.
Step s (0-based) trains with `peak * factor(s)`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import partial

from .config import PretrainSettings, RetrainSettings

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


def pretrain_schedule(settings: PretrainSettings) -> Schedule:
    decays: dict[str, Callable[[float], float]] = {
        "linear": _linear,
        "cosine": _cosine,
        "constant": _constant,
        "step": partial(_step, tuple(settings.step_milestones), settings.step_gamma),
    }
    if settings.schedule not in decays:
        raise ValueError(
            f"pretrain.schedule: unknown schedule '{settings.schedule}' (known: {sorted(decays)})"
        )
    return partial(_with_warmup, decays[settings.schedule], settings.warmup_fraction)


def retrain_schedule(settings: RetrainSettings) -> Schedule:
    """LLR (the paper's default): warm-up to the peak pretraining LR, then linear to zero."""
    if settings.schedule != "llr":
        raise ValueError(f"retrain.schedule: unknown schedule '{settings.schedule}' (known: ['llr'])")
    return partial(_with_warmup, _linear, settings.warmup_fraction)
