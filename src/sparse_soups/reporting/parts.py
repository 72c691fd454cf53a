"""The fixed files of each report part: what `write_report` writes and the rules declare.

Kept free of heavy imports, so the Snakefile can read it while it builds the DAG.

    main           results.csv; table (test accuracy), ece, mce and claims (paired tests of
                   the paper's claims) tables; accuracy_vs_sparsity, soup_gain, ingredients figures
    ood            ood (mean OOD accuracy) and ood_corruptions tables; ood_vs_sparsity,
                   ood_severity, ood_heatmap figures
    ablation_m     ablation_m table (SMS uniform chains with k = 1 (IMP) .. m ingredients)
    subset_soups   subset_soups table (uniform soups of the first k of the m chain's ingredients)
    ablation_vary  ablation_vary table (ingredients by their value on soup.vary)
    training       training_dense, training_phases figures (from the history.csv files)
    training_gmp   training_gmp figure (GMP with its sparsity ramp)
    fairness       worst_group (worst-group test accuracy) and group_accuracy (each group,
                   last phase) tables; worst_group_vs_sparsity figure (data with groups: Celeb-A)
    merging        merging table: each soup method's merge time, chosen grid point, learned
                   coefficients, Model Stock ratio (a merging operator or SWAMP among soup.methods)

Tables come as .csv, .md, .tex (booktabs) and .html; figures as .png and .pdf.
"""

from __future__ import annotations

from typing import Any

TABLE_FORMATS = ("csv", "md", "tex", "html")
FIGURE_FORMATS = ("png", "pdf")
PARTS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {  # part: (tables, figures)
    "main": (("table", "ece", "mce", "claims"), ("accuracy_vs_sparsity", "soup_gain", "ingredients")),
    "ood": (("ood", "ood_corruptions"), ("ood_vs_sparsity", "ood_severity", "ood_heatmap")),
    "ablation_m": (("ablation_m",), ()),
    "subset_soups": (("subset_soups",), ()),
    "ablation_vary": (("ablation_vary",), ()),
    "training": ((), ("training_dense", "training_phases")),
    "training_gmp": ((), ("training_gmp",)),
    "fairness": (("worst_group", "group_accuracy"), ("worst_group_vs_sparsity",)),
    "merging": (("merging",), ()),
}
HISTORY_PARTS = ("training", "training_gmp")  # drawn from history.csv, not metrics.json
EXTRA_FILES = {"main": ("results.csv",)}  # the long per-seed results behind every table


def part_files(part: str) -> list[str]:
    """The file names a part writes (what its Snakemake rule declares)."""
    table_stems, figure_stems = PARTS[part]
    names = list(EXTRA_FILES.get(part, ()))
    names += [f"{stem}.{fmt}" for stem in table_stems for fmt in TABLE_FORMATS]
    return names + [f"{stem}.{fmt}" for stem in figure_stems for fmt in FIGURE_FORMATS]


def report_parts(
    *, ood: bool, ablation_m: bool, subset_soups: bool, ablation_vary: bool, training: bool = True,
    training_gmp: bool = False, main: bool = True, fairness: bool = False, merging: bool = False,
) -> list[str]:  # fmt: skip
    """The parts a report has, given what it has data for: the one rule for both the
    workflow (which knows from the settings) and `write_report` (from the files)."""
    present = {
        "main": main,
        "ood": ood,
        "ablation_m": ablation_m,
        "subset_soups": subset_soups,
        "ablation_vary": ablation_vary,
        "training": training,
        "training_gmp": training_gmp,
        "fairness": fairness,
        "merging": merging,
    }
    return [part for part, has in present.items() if has]


def settings_parts(settings: Any) -> list[str]:
    """The report parts of an experiment, from its settings (`config.Settings`)."""
    from .. import layout
    from ..registry import DATASETS

    soup = settings.soup
    return report_parts(
        ood=settings.ood.enabled,
        ablation_m=bool(layout.ablation_sizes(soup.ablation_m, soup.ingredients)),
        subset_soups="uniform" in soup.methods and any(k < soup.ingredients for k in soup.subset_sizes),
        ablation_vary=soup.vary != "seed",
        training_gmp=settings.baselines.gmp != "none",
        fairness=bool(DATASETS.info(settings.data.dataset).get("groups")),
        merging=any(is_merging_method(method) for method in soup.methods),
    )


def is_merging_method(method: str) -> bool:
    """A merging operator or SWAMP: the methods the merging part describes."""
    from ..registry import SOUP_METHODS

    info = SOUP_METHODS.info(method) if method in SOUP_METHODS else {}
    return bool(info.get("merges") or info.get("swa"))
