"""The models one run of an experiment produces, from its settings (`layout` names them).

The workflow declares these as the report's inputs, so `snakemake -n` shows every job.
"""

from __future__ import annotations

from . import layout
from .config import Settings
from .recipes import imp_shares_phase1


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
