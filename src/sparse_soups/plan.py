"""What one run of an experiment produces, from its settings (`layout` names it): every
model directory, and the recipe each retrain follows.

The workflow declares these as the report's inputs, so `snakemake -n` shows every job.
"""

from __future__ import annotations

import dataclasses

from . import layout
from .config import Settings
from .methods.recipes import Recipe, baseline_recipe, imp_shares_phase1, ingredient_recipe


def experiment_model_dirs(settings: Settings) -> list[str]:
    """Every model directory of one run of `settings`, each baseline as switched on."""
    return layout.run_model_dirs(
        settings.prune.phases,
        settings.soup.methods,
        settings.soup.ingredients,
        imp_budget=settings.baselines.imp_budget,
        soup_at_end=settings.baselines.soup_at_end,
        subset_sizes=settings.soup.subset_sizes,
        ablation_m=settings.soup.ablation_m,
        imp_shared=imp_shares_phase1(settings),
        lottery_pools=settings.baselines.lottery_pools,
        gmp=settings.baselines.gmp,
        gmp_sms=settings.baselines.gmp_sms,
        imp_rewind=settings.baselines.imp_rewind,
    )


def experiment_metrics_dirs(settings: Settings) -> list[str]:
    """Directories whose metrics.json the report reads: the models, and the ensembles
    (which have metrics but no model)."""
    dirs = experiment_model_dirs(settings)
    if settings.baselines.ensemble and settings.soup.ingredients > 1:
        dirs += [layout.ensemble_dir(p) for p in range(1, settings.prune.phases + 1)]
    return dirs


def retrain_recipe(settings: Settings, lineage: str, index: int) -> Recipe:
    """The recipe of the retrain in `{lineage}/phase{p}/ingredient{index}`.

    IMP is index 0 of its lineage; its other indices are the extra retrains that
    soup-at-end averages with it, which vary like the SMS ingredients do."""
    if lineage == layout.IMP:
        return baseline_recipe(settings) if index == 0 else ingredient_recipe(settings, index)
    if lineage == layout.IMP_BUDGET:
        return baseline_recipe(settings, budget=settings.soup.ingredients)
    if layout.keeps_swa(lineage):  # SWAMP's particles: the same retrain, its late weights averaged
        return dataclasses.replace(
            ingredient_recipe(settings, index), swa_fraction=settings.merging.swa_fraction
        )
    return ingredient_recipe(settings, index)
