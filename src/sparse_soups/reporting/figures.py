"""Figures (PNG and PDF), one style and one colour per method across all of them.

Every figure shades the standard deviation over seeds where there are several; with one
seed it draws the lines alone. A figure whose data the run does not have (no OOD metrics,
no soups) says so in its panel instead of failing, so a declared output always exists.
"""

from __future__ import annotations

import re
from pathlib import Path

import matplotlib
import pandas as pd

from ..layout import soup_methods
from ..registry import SOUP_METHODS
from .parts import FIGURE_FORMATS
from .records import DENSE_ROW, ood_cells

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import seaborn as sns

FORMATS = FIGURE_FORMATS
STYLE = {"style": "whitegrid", "context": "paper", "font_scale": 1.1}

# The one colour mapping of the package: every known row label, in table order.
KNOWN_METHODS = (
    "IMP", "IMP (rewind)", "IMP (m x budget)",
    "Best ingredient (SMS uniform)", "Mean ingredient (SMS uniform)", "SMS uniform",
    "Best ingredient (SMS greedy)", "Mean ingredient (SMS greedy)", "SMS greedy",
    "GMP", "GMP + SMS", "Soup at end (IMP, last phase)", "Lottery Pools (interp)",
    "Lottery Pools (avg)", "Prediction ensemble (not sparse)",
)  # fmt: skip
_TAB20 = sns.color_palette("tab20", 20)
_ORDER = (0, 18, 1, 3, 11, 2, 7, 13, 6, 5, 4, 8, 10, 16, 14)  # strong hues for the main rows
PALETTE = {label: _TAB20[i] for label, i in zip(KNOWN_METHODS, _ORDER, strict=True)}
PALETTE[DENSE_ROW] = (0.0, 0.0, 0.0)
_EXTRA = sns.color_palette("tab20b", 20)
_MARKERS = ("o", "s", "D", "^", "v", "P", "X", "*", "<", ">", "p", "h", "d", "H", "8")


_SOUPS_PALETTE = sns.color_palette("Dark2", 8)


def _other_soup(method: str) -> int | None:
    """The place of a soup method beyond uniform and greedy (SWAMP, the merging operators, a
    plugin's) among the registered ones, by its label; None for any other row."""
    labels = [SOUP_METHODS.label(m) for m in soup_methods() if m not in ("uniform", "greedy")]
    return labels.index(method) if method in labels else None


def colour(method: str) -> tuple[float, float, float]:
    """The method's colour: fixed for known rows and the registered soup methods; subset
    soups, ablation chains and unknown rows get a stable one."""
    if method in PALETTE:
        return PALETTE[method]
    if (index := _other_soup(method)) is not None:
        return _SOUPS_PALETTE[index % len(_SOUPS_PALETTE)]
    if match := re.fullmatch(r"Subset soup \(first (\d+) of m.*\)|SMS uniform \(m = (\d+)\)", method):
        k = int(match[1] or match[2])
        return _EXTRA[(4 * k + (2 if match[2] else 0)) % 20]
    return _EXTRA[sum(method.encode()) % 20]


def marker(method: str) -> str:
    if (other := _other_soup(method)) is not None:
        return _MARKERS[(len(KNOWN_METHODS) + other) % len(_MARKERS)]
    index = KNOWN_METHODS.index(method) if method in KNOWN_METHODS else sum(method.encode())
    return _MARKERS[index % len(_MARKERS)]


def _save(fig: plt.Figure, out_dir: Path, stem: str) -> dict[str, Path]:
    paths = {f"{stem}.{fmt}": out_dir / f"{stem}.{fmt}" for fmt in FORMATS}
    for path in paths.values():  # no creation date: the same data gives the same PDF
        metadata = {"CreationDate": None} if path.suffix == ".pdf" else None
        fig.savefig(path, dpi=150, bbox_inches="tight", metadata=metadata)
    plt.close(fig)
    return paths


def _empty(ax: plt.Axes, message: str) -> None:
    ax.text(0.5, 0.5, message, ha="center", va="center", wrap=True, transform=ax.transAxes)
    ax.set_xticks([])
    ax.set_yticks([])


def _legend(ax: plt.Axes, title: str | None = None) -> None:
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1.0), title=title)


# With more soup chains than this, the lines of their ingredients (best, oracle, mean) are left
# out of the metric-against-sparsity figures: the `ingredients` and `soup_gain` figures and the
# tables show them, and a figure of dozens of lines shows nothing.
MAX_CHAINS_WITH_INGREDIENT_LINES = 3


def metric_vs_sparsity(results: pd.DataFrame, metric: str, label: str, out_dir: Path, stem: str) -> dict:
    """One line per method through its phases, shaded std over seeds; dense as a dashed line."""
    sns.set_theme(**STYLE)
    fig, ax = plt.subplots(figsize=(8, 4.5))
    data = results.dropna(subset=[metric])
    experiment = str(results.experiment.iloc[0])
    if data.empty:
        _empty(ax, f"No {label} in the metrics files of {experiment}.")
        return _save(fig, out_dir, stem)
    data = data.assign(**{
        "sparsity (%)": 100 * data.groupby(["method", "phase"]).sparsity.transform("mean"),
        label: 100 * data[metric],
    })  # fmt: skip
    lines = data[data.method != DENSE_ROW]
    chains = [SOUP_METHODS.label(chain) for chain in soup_methods()]
    if sum(chain in set(lines.method) for chain in chains) > MAX_CHAINS_WITH_INGREDIENT_LINES:
        lines = lines[~lines.method.str.contains(r"ingredient", case=False)]
    methods = list(dict.fromkeys(lines.method))
    sns.lineplot(
        data=lines, x="sparsity (%)", y=label, hue="method", style="method", hue_order=methods,
        style_order=methods, palette={m: colour(m) for m in methods},
        markers={m: marker(m) for m in methods}, dashes=False, errorbar="sd",
        err_kws={"alpha": 0.12}, ax=ax,
    )  # fmt: skip
    dense = data[data.method == DENSE_ROW]
    if not dense.empty:
        ax.axhline(dense[label].mean(), color=colour(DENSE_ROW), ls="--", lw=1, label=DENSE_ROW)
    ax.set_title(f"{experiment}: {label} against sparsity")
    _legend(ax)
    return _save(fig, out_dir, stem)


def soup_gain(
    results: pd.DataFrame, out_dir: Path, metric: str = "test_accuracy", label: str = "accuracy"
) -> dict:
    """Per phase: each SMS soup's headline metric (test accuracy, or mIoU) minus its chain's
    mean and best ingredient's."""
    sns.set_theme(**STYLE)
    rows = []
    for chain in soup_methods():
        soup = SOUP_METHODS.label(chain)
        mean, best = f"Mean ingredient ({soup})", f"Best ingredient ({soup})"
        wide = results[results.method.isin([soup, mean, best])].pivot_table(
            index=["seed", "phase"], columns="method", values=metric
        )
        if not {soup, mean, best} <= set(wide.columns):
            continue
        for reference, column in (("vs. mean ingredient", mean), ("vs. best ingredient", best)):
            gain = (100 * (wide[soup] - wide[column])).rename("gain (points)").reset_index()
            rows.append(gain.assign(soup=soup, reference=reference))
    experiment = str(results.experiment.iloc[0])
    fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharey=True)
    if not rows:
        for ax in axes:
            _empty(ax, f"No SMS soups with ingredients in {experiment}.")
        return _save(fig, out_dir, "soup_gain")
    data = pd.concat(rows, ignore_index=True)
    soups = list(dict.fromkeys(data.soup))
    for ax, reference in zip(axes, ("vs. mean ingredient", "vs. best ingredient"), strict=True):
        sns.barplot(
            data=data[data.reference == reference], x="phase", y="gain (points)", hue="soup",
            hue_order=soups, palette={s: colour(s) for s in soups}, errorbar="sd", ax=ax,
        )  # fmt: skip
        ax.axhline(0, color="black", lw=0.8)
        ax.set_title(f"Soup {reference}")
    fig.suptitle(f"{experiment}: soup gain in test {label} (points), std over seeds")
    return _save(fig, out_dir, "soup_gain")


def ingredients_figure(
    results: pd.DataFrame, ingredients: pd.DataFrame, out_dir: Path, metric: str = "test_accuracy",
    label: str = "accuracy",
) -> dict:  # fmt: skip
    """The paper's scatter: each phase's m ingredients (small dots) and their soup (star)."""
    sns.set_theme(**STYLE)
    chains = list(dict.fromkeys(ingredients.chain))
    experiment = str(results.experiment.iloc[0])
    fig, axes = plt.subplots(1, max(len(chains), 1), figsize=(5.5 * max(len(chains), 1), 4), squeeze=False)
    if not chains:
        _empty(axes[0, 0], f"No SMS ingredients in the metrics files of {experiment}.")
        return _save(fig, out_dir, "ingredients")
    for ax, chain in zip(axes[0], chains, strict=True):
        own = ingredients[ingredients.chain == chain]
        m = int(own["index"].max()) + 1
        x = own.phase + 0.25 * (own["index"] - (m - 1) / 2) / max(m - 1, 1)
        ax.scatter(x, 100 * own[metric], s=18, color=colour(f"Mean ingredient (SMS {chain})"),
                   alpha=0.8, label="ingredient")  # fmt: skip
        soup = results[results.method == f"SMS {chain}"]
        ax.scatter(soup.phase, 100 * soup[metric], s=160, marker="*", color=colour(f"SMS {chain}"),
                   edgecolor="black", linewidth=0.5, label=f"SMS {chain} (soup)", zorder=3)  # fmt: skip
        phases = sorted(own.phase.unique())
        sparsity = own.groupby("phase").sparsity.mean()
        ax.set_xticks(phases, [f"{p}\n({100 * sparsity[p]:.1f}%)" for p in phases])
        ax.set_xlabel("phase (sparsity)")
        ax.set_ylabel(f"test {label}" + ("" if label == "BLEU" else " (%)"))
        ax.set_title(f"SMS {chain}: ingredients and soup")
        ax.legend(fontsize="small")
    fig.suptitle(f"{experiment}: every seed's ingredients and soups")
    return _save(fig, out_dir, "ingredients")


def ood_severity(results: pd.DataFrame, out_dir: Path) -> dict:
    """Final phase: accuracy against corruption severity (0 = clean test set), per method."""
    sns.set_theme(**STYLE)
    final = results[results.phase == results.phase.max()]
    cells = ood_cells(final)
    experiment = str(results.experiment.iloc[0])
    fig, ax = plt.subplots(figsize=(8, 4.5))
    if cells.empty:
        _empty(ax, f"No per-corruption OOD metrics in the metrics files of {experiment}.")
        return _save(fig, out_dir, "ood_severity")
    per_seed = cells.groupby(["seed", "method", "severity"], sort=False).accuracy.mean().reset_index()
    clean = final[final.method.isin(per_seed.method)][["seed", "method", "test_accuracy"]]
    data = pd.concat([clean.rename(columns={"test_accuracy": "accuracy"}).assign(severity=0), per_seed])
    data["accuracy (%)"] = 100 * data.accuracy
    methods = list(dict.fromkeys(per_seed.method))
    sns.lineplot(
        data=data, x="severity", y="accuracy (%)", hue="method", style="method", hue_order=methods,
        style_order=methods, palette={m: colour(m) for m in methods},
        markers={m: marker(m) for m in methods}, dashes=False, errorbar="sd", ax=ax,
    )  # fmt: skip
    ax.set_xticks(sorted(data.severity.unique()))
    ax.set_title(f"{experiment}: accuracy against severity, phase {int(final.phase.max())} (0 = clean)")
    _legend(ax)
    return _save(fig, out_dir, "ood_severity")


def ood_heatmap(results: pd.DataFrame, out_dir: Path) -> dict:
    """Final phase: accuracy per corruption (mean over severities and seeds) and method."""
    sns.set_theme(**STYLE)
    final = results[results.phase == results.phase.max()]
    cells = ood_cells(final)
    experiment = str(results.experiment.iloc[0])
    if cells.empty:
        fig, ax = plt.subplots(figsize=(8, 4))
        _empty(ax, f"No per-corruption OOD metrics in the metrics files of {experiment}.")
        return _save(fig, out_dir, "ood_heatmap")
    grid = cells.pivot_table(
        index="method", columns="corruption", values="accuracy", aggfunc="mean", sort=False
    )
    grid = 100 * grid.reindex(index=list(dict.fromkeys(cells.method)))
    fig, ax = plt.subplots(figsize=(max(6.0, 2.5 + 0.6 * grid.shape[1]), 1.2 + 0.45 * grid.shape[0]))
    sns.heatmap(grid, annot=True, fmt=".1f", cmap="viridis", cbar_kws={"label": "accuracy (%)"},
                annot_kws={"fontsize": 7}, ax=ax)  # fmt: skip
    ax.set_xlabel("corruption")
    ax.set_ylabel("")
    ax.set_title(f"{experiment}: OOD accuracy, phase {int(final.phase.max())}, mean over severities")
    return _save(fig, out_dir, "ood_heatmap")
