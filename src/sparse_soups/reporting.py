"""Results table and figure, rebuilt from the metrics JSON files alone.

Each metrics file names the model directory it describes (see `layout`), which is all
that is needed to tell which method and phase a number belongs to.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

import matplotlib
import pandas as pd

from . import layout
from .checkpoints import sha256

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import seaborn as sns

DENSE_ROW = "Dense"


REQUIRED_FIELDS = (
    "experiment", "seed", "model_dir", "kind", "phase", "sparsity",
    "test_accuracy", "validation_accuracy", "checkpoint_sha256",
)  # fmt: skip


def load_metrics(paths: Iterable[str | Path]) -> list[dict]:
    """Read metrics files, refusing incomplete ones and ones whose checkpoint changed since."""
    records = []
    for path in map(Path, paths):
        try:
            record = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as error:
            raise ValueError(f"cannot read metrics file {path}: {error}") from error
        missing = [field for field in REQUIRED_FIELDS if field not in record]
        if missing:
            raise ValueError(f"metrics file {path} lacks the fields {missing}")
        checkpoint = path.with_name(layout.MODEL_FILE)
        if checkpoint.exists() and sha256(checkpoint) != record["checkpoint_sha256"]:
            raise ValueError(
                f"metrics file {path} describes another checkpoint than {checkpoint} "
                "(checksums differ): rerun its evaluation"
            )
        records.append(record)
    return records


def _row(method: str, phase: int, record: dict) -> dict:
    return {
        "method": method,
        "phase": phase,
        "sparsity": record["sparsity"],
        "test_accuracy": record["test_accuracy"],
        "validation_accuracy": record["validation_accuracy"],
    }


def _ingredient_rows(chain: str, label: str, phase: int, by_dir: dict[str, dict]) -> list[dict]:
    ingredients = []
    index = 0
    while (record := by_dir.get(layout.ingredient_dir(chain, phase, index))) is not None:
        ingredients.append(record)
        index += 1
    if not ingredients:
        return []
    best = max(ingredients, key=lambda r: r["validation_accuracy"])  # chosen on validation
    mean = {
        key: sum(r[key] for r in ingredients) / len(ingredients)
        for key in ("sparsity", "test_accuracy", "validation_accuracy")
    }
    return [
        _row(f"Best ingredient ({label})", phase, best),
        _row(f"Mean ingredient ({label})", phase, mean),
    ]


def method_results(records: list[dict]) -> pd.DataFrame:
    """One row per (experiment, seed, method, phase)."""
    rows = []
    runs: dict[tuple[str, int], dict[str, dict]] = {}
    for record in records:
        runs.setdefault((record["experiment"], record["seed"]), {})[record["model_dir"]] = record
    for (experiment, seed), by_dir in sorted(runs.items()):
        phases = max(r["phase"] for r in by_dir.values())
        present = {r["method"] for r in by_dir.values() if r["kind"] == "soup"}
        methods = [m for m in layout.SOUP_METHODS if m in present]
        run_rows = []
        if layout.DENSE in by_dir:
            run_rows.append(_row(DENSE_ROW, 0, by_dir[layout.DENSE]))
        for phase in range(1, phases + 1):
            run_rows += _phase_rows(phase, methods, by_dir)
        run_rows.sort(key=_rank)  # stable: the SMS rows keep their order
        rows += [{"experiment": experiment, "seed": seed, **row} for row in run_rows]
    return pd.DataFrame(rows)


_RANKS = {
    DENSE_ROW: 0, "IMP": 1, "IMP (m x budget)": 2, "Soup at end (IMP, last phase)": 4,
    "Lottery Pools (interp)": 5, "Lottery Pools (avg)": 6, "Prediction ensemble (not sparse)": 7,
}  # fmt: skip


def _rank(row: dict) -> int:
    """Table order: dense, IMP baselines, the SMS chains, then the other references."""
    return _RANKS.get(row["method"], 3)


def _subset_sizes(by_dir: dict[str, dict]) -> list[int]:
    names = {r["method"] for r in by_dir.values() if r["kind"] == "soup"}
    return sorted(int(n[9:]) for n in names if n.startswith("uniform_k") and n[9:].isdigit())


def _phase_rows(phase: int, methods: list[str], by_dir: dict[str, dict]) -> list[dict]:
    """A phase's rows, in the table's order: IMP baselines, each SMS chain (best and mean
    ingredient, soup, k-of-m soups), soup-at-end, Lottery Pools, the prediction ensemble."""
    singles = [("IMP", layout.chain_model_dir(layout.IMP, phase))]
    singles.append(("IMP (m x budget)", layout.chain_model_dir(layout.IMP_BUDGET, phase)))
    rows = [_row(label, phase, by_dir[d]) for label, d in singles if d in by_dir]
    for method in methods:
        label = f"SMS {method}"
        rows += _ingredient_rows(method, label, phase, by_dir)
        if (record := by_dir.get(layout.chain_model_dir(method, phase))) is not None:
            rows.append(_row(label, phase, record))
        if method == "uniform":
            for k in _subset_sizes(by_dir):
                if (record := by_dir.get(layout.soup_dir(layout.subset_soup(k), phase))) is not None:
                    rows.append(_row(f"SMS uniform ({k} of m)", phase, record))
    others = [
        ("Soup at end (IMP, last phase)", layout.soup_dir(layout.SOUP_AT_END, phase)),
        ("Lottery Pools (interp)", layout.lottery_pools_dir("interp", phase)),
        ("Lottery Pools (avg)", layout.lottery_pools_dir("avg", phase)),
        ("Prediction ensemble (not sparse)", layout.ensemble_dir(phase)),
    ]
    return rows + [_row(label, phase, by_dir[d]) for label, d in others if d in by_dir]


def summary_table(results: pd.DataFrame) -> pd.DataFrame:
    """Mean and standard deviation over seeds, per experiment, method and phase."""
    grouped = results.groupby(["experiment", "method", "phase"], sort=False)
    summary = grouped.agg(
        sparsity=("sparsity", "mean"),
        test_accuracy=("test_accuracy", "mean"),
        test_accuracy_std=("test_accuracy", "std"),
        seeds=("seed", "nunique"),
    ).reset_index()
    summary["test_accuracy_std"] = summary["test_accuracy_std"].fillna(0.0)
    return summary


def _cell(row: pd.Series) -> str:
    text = f"{100 * row.test_accuracy:.2f}"
    return text + (f" ± {100 * row.test_accuracy_std:.2f}" if row.seeds > 1 else "")


def markdown_table(summary: pd.DataFrame) -> str:
    """Rows: methods; columns: phases, headed by their mean measured sparsity."""
    sections = []
    for experiment, part in summary.groupby("experiment", sort=False):
        headers = {
            phase: f"Phase {phase} ({100 * group.sparsity.mean():.1f}% sparse)"
            for phase, group in part.groupby("phase")
        }
        cells = part.assign(cell=part.apply(_cell, axis=1), column=part.phase.map(headers))
        wide = cells.pivot(index="method", columns="column", values="cell")
        wide = wide.reindex(index=list(dict.fromkeys(part.method)), columns=list(headers.values()))
        seeds = int(part.seeds.max())
        note = f"Test accuracy (%) of `{experiment}`, {seeds} seed(s)" + (
            ", mean ± std." if seeds > 1 else "."
        )
        sections.append(note + "\n\n" + wide.fillna("").to_markdown() + "\n")
    return "\n".join(sections)


def wide_csv(summary: pd.DataFrame) -> pd.DataFrame:
    """The Markdown table's numbers, machine-readable: one row per experiment and method."""
    wide = summary.pivot(
        index=["experiment", "method"],
        columns="phase",
        values=["sparsity", "test_accuracy", "test_accuracy_std"],
    )
    wide.columns = [f"phase{phase}_{value}" for value, phase in wide.columns]
    order = sorted(wide.columns, key=lambda c: (int(c.split("_")[0][5:]), c))
    methods = list(dict.fromkeys(zip(summary.experiment, summary.method, strict=True)))
    return wide[order].reindex(methods).reset_index()


def accuracy_figure(results: pd.DataFrame, path: Path) -> None:
    """Test accuracy against sparsity, one line per method (mean and sd over seeds)."""
    experiments = list(dict.fromkeys(results.experiment))
    fig, axes = plt.subplots(1, len(experiments), figsize=(9 * len(experiments), 4.5), squeeze=False)
    for ax, experiment in zip(axes[0], experiments, strict=True):
        part = results[results.experiment == experiment].copy()
        part["sparsity (%)"] = (100 * part.sparsity).round(1)
        part["test accuracy (%)"] = 100 * part.test_accuracy
        dense = part[part.method == DENSE_ROW]
        sns.lineplot(
            data=part[part.method != DENSE_ROW], x="sparsity (%)", y="test accuracy (%)",
            hue="method", style="method", markers=True, dashes=False, errorbar="sd", ax=ax,
        )  # fmt: skip
        if not dense.empty:
            ax.axhline(dense["test accuracy (%)"].mean(), color="grey", ls="--", lw=1, label="Dense")
        ax.set_title(experiment)
        ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=150)
    plt.close(fig)


def write_report(metric_files: Iterable[str | Path], out_dir: Path) -> dict[str, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    results = method_results(load_metrics(metric_files))
    if results.empty:
        raise ValueError("no metrics to report")
    summary = summary_table(results)
    paths = {
        "results": out_dir / "results.csv",
        "table_csv": out_dir / "table.csv",
        "table_md": out_dir / "table.md",
        "figure": out_dir / "accuracy_vs_sparsity.png",
    }
    results.to_csv(paths["results"], index=False)
    wide_csv(summary).to_csv(paths["table_csv"], index=False)
    paths["table_md"].write_text(markdown_table(summary))
    accuracy_figure(results, paths["figure"])
    return paths
