"""Writing a report: the parts' tables and figures, from metrics files (and, for the
training curves, history files) to `out_dir`."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path

import pandas as pd

from .. import layout
from ..registry import SOUP_METHODS
from . import claims, curves, figures, tables
from .parts import HISTORY_PARTS, PARTS, is_merging_method, report_parts
from .records import NESTED, ingredient_results, load_metrics, method_results, ood_cells


def available_parts(
    results: pd.DataFrame | None, ingredients: pd.DataFrame | None, histories: pd.DataFrame | None
) -> list[str]:
    """The parts for which the files have data (the default of `write_report`)."""
    has_metrics = results is not None and ingredients is not None
    return report_parts(
        main=has_metrics,
        ood=has_metrics and bool(results.ood_accuracy.notna().any() or not ood_cells(results).empty),
        ablation_m=has_metrics and bool(results.method.str.fullmatch(r"SMS uniform \(m = \d+\)").any()),
        subset_soups=has_metrics and bool(results.method.str.startswith("Subset soup (").any()),
        ablation_vary=has_metrics and bool((ingredients.axis != "seed").any()),
        training=histories is not None,
        training_gmp=histories is not None
        and any((layout.parse(d) or ("",))[0] == "gmp" for d in histories.model_dir.unique()),
        fairness=has_metrics and bool(results.worst_group_accuracy.notna().any()),
        merging=has_metrics and bool(results.method.isin(merging_labels()).any()),
    )


def merging_labels() -> list[str]:
    return [SOUP_METHODS.label(m) for m in SOUP_METHODS.names() if is_merging_method(m)]


def headline(results: pd.DataFrame) -> tuple[str, str]:
    """The task's headline metric and how tables name it (all are shown x 100): mIoU (%)
    for segmentation, BLEU for translation, else accuracy (%)."""
    for metric, label in (("test_miou", "mIoU (%)"), ("test_bleu", "BLEU")):
        if metric in results and results[metric].notna().any():
            return metric, label
    return "test_accuracy", "accuracy (%)"


def _main(results: pd.DataFrame, ingredients: pd.DataFrame, out: Path) -> dict[str, Path]:
    paths = {"results.csv": out / "results.csv"}
    results.drop(columns=list(NESTED)).to_csv(paths["results.csv"], index=False)
    metric, label = headline(results)
    paths |= tables.write_table(tables.phase_table(results, metric, "table", f"Test {label}"), out)
    ece = tables.phase_table(results, "ece", "ece", "ECE (%, 15 bins, lower is better)", higher=False)
    paths |= tables.write_table(ece, out)
    mce = tables.phase_table(results, "mce", "mce", "MCE (%, 15 bins, lower is better)", higher=False)
    paths |= tables.write_table(mce, out)
    paths |= claims.write_claims(claims.claims_table(results), out)
    paths |= figures.metric_vs_sparsity(results, metric, f"test {label}", out, "accuracy_vs_sparsity")
    name = label.removesuffix(" (%)")
    paths |= figures.soup_gain(results, out, metric, name)
    return paths | figures.ingredients_figure(results, ingredients, out, metric, name)


def _ood(results: pd.DataFrame, ingredients: pd.DataFrame, out: Path) -> dict[str, Path]:
    what = "OOD accuracy (%, mean over corruptions and severities)"
    paths = tables.write_table(tables.phase_table(results, "ood_accuracy", "ood", what), out)
    paths |= tables.write_table(tables.corruption_table(results), out)
    paths |= figures.metric_vs_sparsity(results, "ood_accuracy", "OOD accuracy (%)", out, "ood_vs_sparsity")
    return paths | figures.ood_severity(results, out) | figures.ood_heatmap(results, out)


def _fairness(results: pd.DataFrame, ingredients: pd.DataFrame, out: Path) -> dict[str, Path]:
    what = "Worst-group test accuracy (%)"
    paths = tables.write_table(tables.phase_table(results, "worst_group_accuracy", "worst_group", what), out)
    paths |= tables.write_table(tables.group_table(results), out)
    return paths | figures.metric_vs_sparsity(
        results, "worst_group_accuracy", "worst-group accuracy (%)", out, "worst_group_vs_sparsity"
    )


def _merging(results: pd.DataFrame, ingredients: pd.DataFrame, out: Path) -> dict[str, Path]:
    experiment = str(results.experiment.iloc[0])
    title = (
        f"{experiment}: what each soup method chose and the seconds its merge took (mean over seeds; "
        "the soup job's merge and BatchNorm recalibrations, without loading or evaluation)."
    )
    return tables.write_frame(tables.merging_table(results), "merging", title, out)


def _ablation_m(results: pd.DataFrame, ingredients: pd.DataFrame, out: Path) -> dict[str, Path]:
    return tables.write_table(tables.ablation_m_table(results, ingredients), out)


def _subset_soups(results: pd.DataFrame, ingredients: pd.DataFrame, out: Path) -> dict[str, Path]:
    return tables.write_table(tables.subset_soups_table(results, ingredients), out)


def _ablation_vary(results: pd.DataFrame, ingredients: pd.DataFrame, out: Path) -> dict[str, Path]:
    return tables.write_table(tables.ablation_vary_table(results, ingredients), out)


def _training(histories: pd.DataFrame, out: Path) -> dict[str, Path]:
    return curves.dense_curves(histories, out) | curves.phase_curves(histories, out)


_WRITERS: dict[str, Callable[[pd.DataFrame, pd.DataFrame, Path], dict[str, Path]]] = {
    "main": _main, "ood": _ood, "ablation_m": _ablation_m, "subset_soups": _subset_soups,
    "ablation_vary": _ablation_vary, "fairness": _fairness, "merging": _merging,
}  # fmt: skip
_CURVE_WRITERS: dict[str, Callable[[pd.DataFrame, Path], dict[str, Path]]] = {
    "training": _training, "training_gmp": curves.gmp_curves,
}  # fmt: skip


def _is_history(path: Path) -> bool:
    return path.name.endswith(layout.HISTORY_FILE)


def write_report(
    files: Iterable[str | Path], out_dir: Path, parts: Iterable[str] | None = None
) -> dict[str, Path]:
    """Write the report `parts` (default: every part the files have data for) of one
    experiment into `out_dir` from its metrics.json and history.csv files; returns each
    written file by name."""
    files = [Path(f) for f in files]
    metric_files = [f for f in files if not _is_history(f)]
    history_files = [f for f in files if _is_history(f)]
    records = load_metrics(metric_files) if metric_files else []
    histories = curves.load_histories(history_files) if history_files else None
    experiments = sorted(
        {r["experiment"] for r in records} | set(() if histories is None else histories.experiment)
    )
    if len(experiments) != 1:
        raise ValueError(f"a report covers one experiment; the files are of {experiments or 'none'}")
    results, ingredients = (method_results(records), ingredient_results(records)) if records else (None, None)
    chosen = list(parts) if parts is not None else available_parts(results, ingredients, histories)
    unknown = [part for part in chosen if part not in PARTS]
    if unknown:
        raise ValueError(f"unknown report parts {unknown} (known: {', '.join(PARTS)})")
    for part in chosen:
        needed, given = ("history.csv", histories) if part in HISTORY_PARTS else ("metrics", results)
        if given is None:
            raise ValueError(f"report part '{part}' needs {needed} files; none were given")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    # Staged beside out_dir and moved in only once every file is written, so a failure
    # part-way leaves the previous report whole.
    with tempfile.TemporaryDirectory(prefix=".report-staging-", dir=out_dir.parent) as staging:
        staged: dict[str, Path] = {}
        for part in chosen:
            if part in HISTORY_PARTS:
                staged |= _CURVE_WRITERS[part](histories, Path(staging))
            else:
                staged |= _WRITERS[part](results, ingredients, Path(staging))
        paths = {name: out_dir / path.name for name, path in staged.items()}
        for name, path in staged.items():
            os.replace(path, paths[name])
    return paths
