"""The hyperparameters of every retrain: what makes a comparison like for like.

SMS ingredients differ in one hyperparameter (`soup.vary`); everything else comes from
the experiment. The IMP baselines never take an ingredient's value: IMP and IMP with m
times the budget always retrain with the experiment's own weight decay and peak LR
(pretraining's), `retrain.epochs` and `retrain.schedule`, so changing `soup.vary` leaves
them untouched. Kept free of torch, so the workflow can plan with it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from ..config import Settings


@dataclass(frozen=True)
class Recipe:
    """The hyperparameters of one retrain: pretraining's, except along the varied axis."""

    weight_decay: float
    lr: float
    epochs: int
    schedule: str
    seed_index: int  # which seed label the batch order and augmentation come from
    swa_fraction: float = 0.0  # > 0: the model is the average of the weights over this last share of steps


def baseline_recipe(settings: Settings, budget: int = 1) -> Recipe:
    """IMP's recipe: the experiment's own hyperparameters, `budget` times the retrain epochs."""
    return Recipe(
        weight_decay=settings.pretrain.weight_decay,
        lr=settings.pretrain.lr,
        epochs=settings.retrain.epochs * budget,
        schedule=settings.retrain.schedule,
        seed_index=0,
    )


def ingredient_recipe(settings: Settings, index: int) -> Recipe:
    """Ingredient `index` takes the index-th value of `soup.vary`; along any axis but the
    seed all ingredients share seed 0, so they differ in exactly one hyperparameter."""
    base = baseline_recipe(settings)
    axis = settings.soup.vary
    if axis == "seed":
        return Recipe(base.weight_decay, base.lr, base.epochs, base.schedule, seed_index=index)
    values = {**asdict(base), axis: settings.soup.values[index], "seed_index": 0}
    return Recipe(**values)


def imp_shares_phase1(settings: Settings) -> bool:
    """Whether IMP's phase-1 retrain is the SMS chains' ingredient 0 (same recipe, same
    parent): then it is trained once, under `dense/phase1/`; otherwise IMP has its own."""
    return ingredient_recipe(settings, 0) == baseline_recipe(settings)
