"""Tables in the paper's shape, each written as CSV, Markdown, LaTeX (booktabs) and HTML.

A `Table` holds one summary cell per (row, column): the mean over seeds, the standard
deviation (NaN with one seed: it is undefined, so the cell shows the mean alone) and the
number of seeds. Numbers are fractions in the CSV and percentages everywhere else. The
best value per column is bold (lowest for ECE); the prediction ensemble is not a sparse
model, so it is shown but never marked best.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from .parts import TABLE_FORMATS
from .records import ENSEMBLE_ROW, group_cells, ood_cells

FORMATS = TABLE_FORMATS


@dataclass(frozen=True)
class Table:
    stem: str  # file name without suffix
    title: str
    experiment: str
    metric: str  # name of the value in the CSV columns
    cells: pd.DataFrame  # row, key, header, mean, std, seeds [, sparsity]
    row_label: str = "method"
    higher_is_better: bool = True
    note: str = ""  # the reason when there is nothing to show
    budgets: dict[str, float] = field(default_factory=dict)  # row: training epochs per phase

    @property
    def seeds(self) -> int:
        return int(self.cells.seeds.max()) if not self.cells.empty else 0


def summarise(data: pd.DataFrame, value: str, row: str, key: str, headers: dict) -> pd.DataFrame:
    """Mean, standard deviation and seed count of `value` per (row, key), in data order."""
    data = data.dropna(subset=[value])
    aggregations = {"mean": (value, "mean"), "std": (value, "std"), "seeds": ("seed", "nunique")}
    if "sparsity" in data and value != "sparsity":
        aggregations["sparsity"] = ("sparsity", "mean")
    cells = data.groupby([row, key], sort=False).agg(**aggregations).reset_index()
    cells = cells.rename(columns={row: "row", key: "key"})
    cells["header"] = cells.key.map(headers)
    return cells


def _title(what: str, experiment: str, seeds: int, extra: str = "") -> str:
    spread = ", mean ± std over seeds" if seeds > 1 else ""
    return f"{experiment}: {what}, {seeds} seed(s){spread}.{extra} Best per column in bold."


def _phase_headers(results: pd.DataFrame) -> dict[int, str]:
    sparsity = results.groupby("phase").sparsity.mean()
    return {int(p): f"Phase {p} ({100 * s:.1f}% sparse)" for p, s in sparsity.items()}


def phase_table(results: pd.DataFrame, metric: str, stem: str, what: str, higher: bool = True) -> Table:
    """Methods x phases (sparsity in the header) of one metric: the paper's main table shape."""
    experiment = str(results.experiment.iloc[0])
    cells = summarise(results, metric, "method", "phase", _phase_headers(results))
    cells["key"] = "phase" + cells.key.astype(str)
    seeds = int(cells.seeds.max()) if not cells.empty else 0
    note = "" if not cells.empty else f"No {what} in the metrics files of {experiment} ('{metric}' missing)."
    title = _title(what, experiment, seeds, f" Ensemble excluded from the best. {BUDGET_NOTE}")
    return Table(
        stem, title, experiment, metric, cells, higher_is_better=higher, note=note, budgets=budgets(results)
    )


BUDGET_COLUMN = "epochs/phase"
BUDGET_NOTE = (
    f"'{BUDGET_COLUMN}': training epochs spent per IMP phase (summed over a soup's ingredients; "
    "Dense: pretraining epochs; GMP: its epochs after the dense stretch per phase), so rows "
    "with equal numbers are at equal compute."
)


def budgets(results: pd.DataFrame) -> dict[str, float]:
    """Each row's training budget, the mean over phases and seeds of `budget_epochs`."""
    if "budget_epochs" not in results:
        return {}
    return results.dropna(subset=["budget_epochs"]).groupby("method").budget_epochs.mean().to_dict()


def _budget_text(value: float | None) -> str:
    return "" if value is None or np.isnan(value) else f"{value:.3g}"


def _final_phase_cells(
    per_seed: pd.DataFrame, final: pd.DataFrame, metric: str, column: str, name: str
) -> pd.DataFrame:
    """Per-seed accuracies of one kind of column (a group, a corruption), with the metric
    that sums them up (`metric`: worst group, mean over corruptions) as one more column."""
    summary = final.dropna(subset=[metric])[["seed", "method", metric]]
    summary = summary.rename(columns={metric: "accuracy"}).assign(**{column: name})
    data = pd.concat([per_seed, summary], ignore_index=True)
    headers = {c: c.replace("_", " ") for c in data[column].unique()}
    return summarise(data, "accuracy", "method", column, headers)


def group_table(results: pd.DataFrame) -> Table:
    """Methods x groups of the final phase (test accuracy within each group), plus the worst."""
    experiment = str(results.experiment.iloc[0])
    final = results[results.phase == results.phase.max()]
    cells = group_cells(final)
    per_seed = cells[["seed", "method", "group", "accuracy"]]
    table_cells = _final_phase_cells(per_seed, final, "worst_group_accuracy", "group", "worst group")
    seeds = int(table_cells.seeds.max()) if not table_cells.empty else 0
    what = f"Test accuracy (%) per group, phase {int(final.phase.max())}"
    note = "" if not cells.empty else f"No per-group metrics in the metrics files of {experiment}."
    title = _title(what, experiment, seeds, " Ensemble excluded from the best.")
    return Table("group_accuracy", title, experiment, "accuracy", table_cells, note=note)


def corruption_table(results: pd.DataFrame) -> Table:
    """Methods x corruptions of the final phase (mean over severities), plus the overall mean."""
    experiment = str(results.experiment.iloc[0])
    final = results[results.phase == results.phase.max()]
    cells = ood_cells(final)
    per_seed = cells.groupby(["seed", "method", "corruption"], sort=False).accuracy.mean().reset_index()
    table_cells = _final_phase_cells(per_seed, final, "ood_accuracy", "corruption", "mean")
    seeds = int(table_cells.seeds.max()) if not table_cells.empty else 0
    what = f"OOD accuracy (%) per corruption, phase {int(final.phase.max())}, mean over severities"
    note = "" if not cells.empty else f"No per-corruption OOD metrics in the metrics files of {experiment}."
    title = _title(what, experiment, seeds, " Ensemble excluded from the best.")
    return Table("ood_corruptions", title, experiment, "ood_accuracy", table_cells, note=note)


def display(table: Table, pm: str, bold: str = "") -> tuple[pd.DataFrame, pd.DataFrame]:
    """Cell strings (mean, `pm` std when there are several seeds) and where the best is;
    with `bold` ('**' for Markdown) the best cells are wrapped in it."""
    rows = list(dict.fromkeys(table.cells.row))
    columns = list(dict.fromkeys(table.cells.sort_values("key", key=_natural).header))
    cells = table.cells.assign(shown=(100 * table.cells["mean"]).round(2))
    eligible = cells[cells.row != ENSEMBLE_ROW]
    best_per_header = eligible.groupby("header").shown.agg("max" if table.higher_is_better else "min")
    cells["best"] = cells.shown == cells.header.map(best_per_header)
    cells.loc[cells.row == ENSEMBLE_ROW, "best"] = False
    text = cells.apply(lambda c: _cell(c, pm, bold), axis=1) if not cells.empty else pd.Series(dtype=str)
    wide = cells.assign(text=text).pivot(index="row", columns="header", values="text")
    best = cells.pivot(index="row", columns="header", values="best")
    wide = wide.reindex(index=rows, columns=columns).fillna("")
    best = best.reindex(index=rows, columns=columns).fillna(False).astype(bool)
    if table.budgets:
        wide.insert(0, BUDGET_COLUMN, [_budget_text(table.budgets.get(r)) for r in rows])
        best.insert(0, BUDGET_COLUMN, False)
    wide.index.name, wide.columns.name = table.row_label, None
    return wide, best


def _natural(keys: pd.Series) -> pd.Series:
    """Order phase columns numerically (phase10 after phase9); other keys keep their order."""
    numbers = keys.str.extract(r"^phase(\d+)$")[0]
    return numbers.astype(float) if numbers.notna().all() else pd.Series(range(len(keys)), index=keys.index)


def _cell(cell: pd.Series, pm: str, bold: str) -> str:
    text = f"{cell.shown:.2f}"
    if cell.seeds > 1 and not np.isnan(cell["std"]):
        text += f"{pm}{100 * cell['std']:.2f}"
    return f"{bold}{text}{bold}" if bold and cell.best else text


def to_csv(table: Table) -> pd.DataFrame:
    """One row per table row; per column key the mean, std and (phase tables) sparsity."""
    if table.note:
        return pd.DataFrame({"experiment": [table.experiment], "note": [table.note]})
    rows = list(dict.fromkeys(table.cells.row))
    parts = []
    for key, group in table.cells.groupby("key", sort=False):
        part = group.set_index("row")
        columns = {"mean": f"{key}_{table.metric}", "std": f"{key}_{table.metric}_std"}
        if "sparsity" in part:
            columns = {"sparsity": f"{key}_sparsity", **columns}
        parts.append((_natural(pd.Series([key])).iloc[0], part[list(columns)].rename(columns=columns)))
    wide = pd.concat([p for _, p in sorted(parts, key=lambda item: item[0])], axis=1).reindex(rows)
    if table.budgets:
        wide.insert(0, "budget_epochs", [table.budgets.get(r, np.nan) for r in rows])
    wide["seeds"] = table.cells.groupby("row").seeds.max().reindex(rows)
    wide.index.name = table.row_label
    return wide.reset_index().assign(experiment=table.experiment)[
        ["experiment", table.row_label, *wide.columns]
    ]


def to_markdown(table: Table) -> str:
    if table.note:
        return f"{table.note}\n"
    wide, _ = display(table, " ± ", bold="**")
    align = ("left", *["right"] * wide.shape[1])
    return f"{table.title}\n\n{wide.to_markdown(colalign=align)}\n"


_LATEX_SPECIAL = {
    "\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
    "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}", "±": r"$\pm$",
}  # fmt: skip


def latex_escape(text: str) -> str:
    return "".join(_LATEX_SPECIAL.get(char, char) for char in text)


def to_latex(table: Table) -> str:
    """booktabs (\\toprule, \\midrule, \\bottomrule) via pandas' Styler; best cells \\bfseries."""
    label = f"tab:{table.experiment}-{table.stem}".replace("_", "-")
    if table.note:
        styler = pd.DataFrame({"Note": [table.note]}).style.hide(axis="index").format(escape="latex")
        return styler.to_latex(hrules=True, caption=latex_escape(table.note), label=label)
    wide, best = display(table, r" $\pm$ ")
    wide.index.name = None  # no extra header row
    styler = wide.style.apply(lambda _: np.where(best, "font-weight: bold", ""), axis=None)
    styler = styler.format_index(escape="latex", axis=0).format_index(escape="latex", axis=1)
    return styler.to_latex(
        hrules=True,
        convert_css=True,
        caption=latex_escape(table.title),
        label=label,
        position_float="centering",
        column_format="l" + "r" * wide.shape[1],
    )


def to_html(table: Table) -> str:
    """A complete page (the Snakemake report shows tables as HTML)."""
    if table.note:
        return f"<!DOCTYPE html><html><body><p>{table.note}</p></body></html>\n"
    wide, best = display(table, " ± ")
    styler = wide.style.apply(lambda _: np.where(best, "font-weight: bold", ""), axis=None)
    styler = styler.format(escape="html").format_index(escape="html", axis=0)
    styler = styler.format_index(escape="html", axis=1)
    styler = styler.set_caption(table.title).set_table_styles([
        {"selector": "", "props": "border-collapse: collapse; font: 13px sans-serif;"},
        {"selector": "th, td", "props": "padding: 3px 10px; border-bottom: 1px solid #ccc;"},
        {"selector": "td", "props": "text-align: right;"},
        {"selector": "caption", "props": "caption-side: top; text-align: left; padding-bottom: 6px;"},
    ])  # fmt: skip
    return styler.set_uuid(table.stem).to_html(doctype_html=True)  # pandas' default id is random


def write_table(table: Table, out_dir: Path) -> dict[str, Path]:
    """The table in every format, as `{stem}.{csv,md,tex,html}`."""
    paths = {fmt: out_dir / f"{table.stem}.{fmt}" for fmt in FORMATS}
    to_csv(table).to_csv(paths["csv"], index=False)
    paths["md"].write_text(to_markdown(table))
    paths["tex"].write_text(to_latex(table))
    paths["html"].write_text(to_html(table))
    return {f"{table.stem}.{fmt}": path for fmt, path in paths.items()}


def _phase_rows_table(data: pd.DataFrame, order: list[str], stem: str, title: str, note: str) -> Table:
    """A table of labelled rows (column `row`) x phases, from per-seed test accuracies."""
    experiment = str(data.experiment.iloc[0]) if not data.empty else ""
    if note:
        return Table(stem, title, experiment, "test_accuracy", pd.DataFrame(), row_label="", note=note)
    data = data.assign(row=pd.Categorical(data.row, categories=order, ordered=True)).sort_values("row")
    data = data.assign(row=data.row.astype(str))
    cells = summarise(data, "test_accuracy", "row", "phase", _phase_headers(data))
    cells["key"] = "phase" + cells.key.astype(str)
    title = _title(title, experiment, int(cells.seeds.max()))
    spent = budgets(data.drop(columns="method", errors="ignore").rename(columns={"row": "method"}))
    return Table(stem, title, experiment, "test_accuracy", cells, row_label="model", budgets=spent)


def ablation_m_table(results: pd.DataFrame, ingredients: pd.DataFrame) -> Table:
    """SMS uniform with m = 1 (IMP), each ablation chain's k, and the experiment's m."""
    experiment = str(results.experiment.iloc[0])
    chains = results[results.method.str.fullmatch(r"SMS uniform \(m = \d+\)")]
    if chains.empty:
        note = f"No ablation chains over m in the metrics files of {experiment} (soup.ablation_m is empty)."
        return _phase_rows_table(results.iloc[:0], [], "ablation_m", "", note)
    m = int(ingredients[ingredients.chain == "uniform"]["index"].max()) + 1 if not ingredients.empty else None
    ks = sorted(set(chains.method.str.extract(r"m = (\d+)")[0].astype(int)))
    imp = results[results.method == "IMP"].assign(row="m = 1 (IMP)")
    middle = chains.assign(row=chains.method.str.extract(r"\((m = \d+)\)")[0])
    full = results[results.method == "SMS uniform"].assign(row=f"m = {m} (SMS uniform)")
    order = ["m = 1 (IMP)", *[f"m = {k}" for k in ks], f"m = {m} (SMS uniform)"]
    what = "Test accuracy (%) of SMS uniform chains with m ingredients per phase"
    return _phase_rows_table(pd.concat([imp, middle, full], ignore_index=True), order, "ablation_m", what, "")


def subset_soups_table(results: pd.DataFrame, ingredients: pd.DataFrame) -> Table:
    """Uniform soups of the first k of the m chain's ingredients, k = 1 (ingredient 0) .. m
    (SMS uniform); not SMS with k ingredients, which `ablation_m_table` shows."""
    chain = ingredients[ingredients.chain == "uniform"]
    subsets = results[results.method.str.fullmatch(r"Subset soup \(first \d+ of m, uniform chain\)")]
    experiment = str(results.experiment.iloc[0])
    if chain.empty or subsets.empty:
        note = f"No subset soups in the metrics files of {experiment} (soup.subset_sizes is empty)."
        return _phase_rows_table(results.iloc[:0], [], "subset_soups", "", note)
    m = int(chain["index"].max()) + 1
    first = chain[chain["index"] == 0].assign(row="k = 1 (ingredient 0)")
    ks = subsets.method.str.extract(r"first (\d+) of m")[0].astype(int)
    middle = subsets.assign(row="k = " + ks.astype(str))
    full = results[results.method == "SMS uniform"].assign(row=f"k = {m} (SMS uniform)")
    data = pd.concat([first, middle, full], ignore_index=True)
    order = ["k = 1 (ingredient 0)", *[f"k = {k}" for k in sorted(set(ks))], f"k = {m} (SMS uniform)"]
    what = f"Test accuracy (%) of the uniform soup of the first k of SMS uniform's m = {m} ingredients"
    return _phase_rows_table(data, order, "subset_soups", what, "")


def ablation_vary_table(results: pd.DataFrame, ingredients: pd.DataFrame) -> Table:
    """Each ingredient's value on the varied axis and its test accuracy, then its chain's soup."""
    experiment = str(results.experiment.iloc[0])
    varied = ingredients[ingredients.axis != "seed"]
    if varied.empty:
        note = f"The ingredients of {experiment} differ only in their seed (soup.vary: seed)."
        return _phase_rows_table(results.iloc[:0], [], "ablation_vary", "", note)
    axis = str(varied.axis.mode().iloc[0])
    first_seed = varied[varied.seed == varied.seed.min()]
    values = first_seed.drop_duplicates(["chain", "index"]).set_index(["chain", "index"]).value
    label = {key: f"SMS {key[0]}: ingredient {key[1]} ({axis} = {value})" for key, value in values.items()}
    parts, order = [], []
    for chain in dict.fromkeys(varied.chain):
        own = varied[varied.chain == chain]
        keys = list(zip(own.chain, own["index"], strict=True))
        parts.append(own.assign(row=[label.get(k, f"SMS {k[0]}: ingredient {k[1]}") for k in keys]))
        order += [label[k] for k in values.index if k[0] == chain]
        parts.append(results[results.method == f"SMS {chain}"].assign(row=f"SMS {chain}: soup"))
        order.append(f"SMS {chain}: soup")
    what = f"Test accuracy (%) of each ingredient by its {axis} and of its soup"
    return _phase_rows_table(pd.concat(parts, ignore_index=True), order, "ablation_vary", what, "")


def merging_table(results: pd.DataFrame) -> pd.DataFrame:
    """What each soup method chose and what it cost, per phase: the merge's wall seconds
    (mean over seeds; the learned soup's and Fisher's extra passes show here), the grid
    point TIES and DARE kept on validation (with how many seeds chose it), the learned
    soup's mean coefficients and Model Stock's mean interpolation ratio."""
    from .records import soup_labels

    soups = results[results.method.isin(soup_labels()) & results["merge"].map(bool)]
    rows = []
    for (method, phase), group in soups.groupby(["method", "phase"], sort=False):
        facts = [m for m in group["merge"] if isinstance(m, dict)]
        seconds = [f["merge_seconds"] for f in facts if "merge_seconds" in f]
        chosen = [", ".join(f"{k} {v:g}" for k, v in f["chosen"].items()) for f in facts if "chosen" in f]
        coefficients = [f["coefficients"] for f in facts if "coefficients" in f]
        ratios = [f["ratio_mean"] for f in facts if "ratio_mean" in f]
        common = pd.Series(chosen).value_counts() if chosen else None
        rows.append({
            "method": method, "phase": int(phase), "seeds": group.seed.nunique(),
            "merge_seconds": float(np.mean(seconds)) if seconds else np.nan,
            "chosen": "" if common is None else f"{common.index[0]} ({common.iloc[0]} of {len(chosen)})",
            "coefficients": _mean_coefficients(coefficients),
            "model_stock_ratio": f"{np.mean(ratios):.3f}" if ratios else "",
        })  # fmt: skip
    return pd.DataFrame(rows, columns=[
        "method", "phase", "seeds", "merge_seconds", "chosen", "coefficients", "model_stock_ratio"
    ])  # fmt: skip


def _mean_coefficients(coefficients: list[list]) -> str:
    """The learned soup's coefficients per ingredient, averaged over seeds (and tensors)."""
    if not coefficients:
        return ""
    means = np.mean([np.asarray(c, dtype=float).reshape(len(c), -1).mean(1) for c in coefficients], axis=0)
    return ", ".join(f"{value:.2f}" for value in means)


def write_frame(frame: pd.DataFrame, stem: str, title: str, out_dir: Path) -> dict[str, Path]:
    """A table of plain values (not mean ± std cells) in every format."""
    paths = {fmt: out_dir / f"{stem}.{fmt}" for fmt in FORMATS}
    frame.to_csv(paths["csv"], index=False)
    shown = frame.rename(columns=lambda c: c.replace("_", " "))
    paths["md"].write_text(f"{title}\n\n{shown.to_markdown(index=False, floatfmt='.2f')}\n")
    styler = shown.style.hide(axis="index").format(precision=2).set_caption(title)
    paths["tex"].write_text(latex_escape_frame(styler))
    paths["html"].write_text(styler.set_uuid(stem).to_html(doctype_html=True))
    return {f"{stem}.{fmt}": path for fmt, path in paths.items()}


def latex_escape_frame(styler: pd.io.formats.style.Styler) -> str:
    return styler.format(escape="latex", precision=2).to_latex(hrules=True)
