"""Training curves from the history.csv of every trained model: how a reader checks that
the dense model converged and how far each phase's retraining recovers from pruning.

    training_dense   train loss and validation accuracy of the dense model, per seed
    training_phases  per IMP phase, the SMS ingredients overlaid (thin), with IMP and
                     IMP (m x budget) (bold), for the first seed
    training_gmp     GMP's validation accuracy and train loss, its sparsity ramp on a
                     second axis, per seed
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path

import pandas as pd

from .. import layout
from ..kernels.history import read_history
from .figures import STYLE, _empty, _legend, _save, colour, plt, sns

_RUN_DIR = re.compile(r"seed(\d+)")
LOSS, ACCURACY = "train loss", "validation accuracy (%)"
IMP_ROW, BUDGET_ROW = "IMP", "IMP (m x budget)"


def load_histories(paths: Iterable[str | Path]) -> pd.DataFrame:
    """Every row of every history, with the experiment, seed and model directory its path
    names (`results/{experiment}/seed{seed}/{model dir}/history.csv`)."""
    frames = []
    for path in map(Path, paths):
        parts = path.parts[:-1]
        seeds = [i for i, part in enumerate(parts) if _RUN_DIR.fullmatch(part)]
        if not seeds or seeds[-1] == 0:
            raise ValueError(f"{path}: not under results/{{experiment}}/seed{{n}}/ (layout.RUN)")
        at = seeds[-1]
        frame = pd.DataFrame(read_history(path))
        frames.append(frame.assign(
            experiment=parts[at - 1], seed=int(_RUN_DIR.fullmatch(parts[at])[1]),
            model_dir="/".join(parts[at + 1 :]),
        ))  # fmt: skip
    if not frames:
        raise ValueError("no history files given")
    data = pd.concat(frames, ignore_index=True)
    return data.assign(**{LOSS: data.train_loss, ACCURACY: 100 * data.val_accuracy})


def _fields(model_dir: str) -> tuple[str | None, dict[str, str]]:
    parsed = layout.parse(model_dir)
    return parsed if parsed else (None, {})


def _title(data: pd.DataFrame) -> str:
    return str(data.experiment.iloc[0])


def dense_curves(histories: pd.DataFrame, out_dir: Path) -> dict[str, Path]:
    """Train loss and validation accuracy of the dense model against epoch, one line per seed."""
    sns.set_theme(**STYLE)
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    dense = histories[histories.model_dir == layout.DENSE]
    if dense.empty:
        for ax in axes:
            _empty(ax, "No history of the dense model.")
        return _save(fig, out_dir, "training_dense")
    for ax, metric in zip(axes, (LOSS, ACCURACY), strict=True):
        sns.lineplot(data=dense, x="epoch", y=metric, hue="seed", palette="crest", marker=".", ax=ax)
    axes[0].get_legend().remove()
    _legend(axes[1], title="seed")
    fig.suptitle(f"{_title(histories)}: dense training")
    return _save(fig, out_dir, "training_dense")


def _phase_lines(histories: pd.DataFrame, phase: int) -> list[tuple[str, pd.DataFrame]]:
    """(label, rows) of each curve in a phase's panel: the SMS ingredients of the first
    soup chain present, then IMP and IMP (m x budget)."""
    rows = histories.assign(template=[_fields(d)[0] for d in histories.model_dir])
    fields = [_fields(d)[1] for d in rows.model_dir]
    rows = rows.assign(
        lineage=[f.get("lineage") for f in fields], phase_of=[int(f.get("phase", -1)) for f in fields],
        ingredient=[int(f.get("index", -1)) for f in fields],
    )  # fmt: skip
    rows = rows[(rows.template == "ingredient") & (rows.phase_of == phase)]
    own_imp = (rows.lineage == layout.IMP).any()
    imp_lineage = layout.IMP if own_imp or phase > 1 else layout.DENSE
    chains = [m for m in layout.soup_methods() if (rows.lineage == m).any()]
    sms_lineage = layout.DENSE if phase == 1 else (chains[0] if chains else None)
    lines = []
    for index, group in rows[rows.lineage == sms_lineage].groupby("ingredient"):
        lines.append((f"SMS ingredient {index}", group))
    imp = rows[(rows.lineage == imp_lineage) & (rows.ingredient == 0)]
    if not imp.empty:
        lines.append((IMP_ROW, imp))
    budget = rows[rows.lineage == layout.IMP_BUDGET]
    if not budget.empty:
        lines.append((BUDGET_ROW, budget))
    return lines


def phase_curves(histories: pd.DataFrame, out_dir: Path) -> dict[str, Path]:
    """Per phase: train loss and validation accuracy of the SMS ingredients (thin lines),
    IMP and IMP (m x budget), for the first seed; epoch 0 is right after pruning."""
    sns.set_theme(**STYLE)
    seed = int(histories.seed.min())
    first = histories[histories.seed == seed]
    phases = sorted({int(f["phase"]) for d in first.model_dir if (f := _fields(d)[1]).get("phase")})
    fig, axes = plt.subplots(
        2, max(len(phases), 1), figsize=(4 * max(len(phases), 1) + 2, 6.5), squeeze=False
    )
    if not phases:
        for ax in axes.flat:
            _empty(ax, "No retraining histories.")
        return _save(fig, out_dir, "training_phases")
    for column, phase in enumerate(phases):
        for label, rows in _phase_lines(first, phase):
            ingredient = label.startswith("SMS")
            style = {"color": colour("SMS uniform"), "lw": 0.9, "alpha": 0.6} if ingredient else {
                "color": colour(label), "lw": 2.0,
            }  # fmt: skip
            shown = label if not ingredient or label.endswith(" 0") else None
            for row, metric in enumerate((LOSS, ACCURACY)):
                data = rows.dropna(subset=[metric])
                name = "SMS ingredients" if shown and ingredient else shown
                axes[row, column].plot(data.epoch, data[metric], marker=".", label=name, **style)
        axes[0, column].set_title(f"phase {phase}")
        axes[1, column].set_xlabel("retraining epoch")
    axes[0, 0].set_ylabel(LOSS)
    axes[1, 0].set_ylabel(ACCURACY)
    _legend(axes[0, -1])
    fig.suptitle(f"{_title(histories)}: retraining per phase (seed {seed})")
    return _save(fig, out_dir, "training_phases")


def gmp_curves(histories: pd.DataFrame, out_dir: Path) -> dict[str, Path]:
    """GMP's validation accuracy and train loss against epoch, with its sparsity on a second axis."""
    sns.set_theme(**STYLE)
    gmp = histories[[_fields(d)[0] == "gmp" for d in histories.model_dir]]
    fig, axes = plt.subplots(1, 2, figsize=(12, 3.8), gridspec_kw={"wspace": 0.5})
    if gmp.empty:
        for ax in axes:
            _empty(ax, "No GMP history (baselines.gmp is none).")
        return _save(fig, out_dir, "training_gmp")
    for ax, metric in zip(axes, (ACCURACY, LOSS), strict=True):
        for (model_dir, seed), rows in gmp.groupby(["model_dir", "seed"]):
            data = rows.dropna(subset=[metric])
            ax.plot(
                data.epoch, data[metric], color=colour("GMP"), alpha=0.8, label=f"{model_dir}, seed {seed}"
            )
        ramp = ax.twinx()
        for model_dir, rows in gmp[gmp.seed == gmp.seed.min()].groupby("model_dir"):
            ramp.plot(
                rows.epoch, 100 * rows.sparsity, color="grey", ls="--", lw=1, label=f"sparsity, {model_dir}"
            )
        ramp.set_ylabel("sparsity (%)")
        ramp.set_ylim(0, 100)
        ramp.grid(False)
        ax.set_xlabel("epoch")
        ax.set_ylabel(metric)
    handles = axes[0].get_legend_handles_labels()
    ramp_handles = ramp.get_legend_handles_labels()
    axes[1].legend(handles[0] + ramp_handles[0], handles[1] + ramp_handles[1], fontsize="small",
                   loc="upper left", bbox_to_anchor=(1.12, 1.0))  # fmt: skip
    fig.suptitle(f"{_title(histories)}: gradual magnitude pruning")
    return _save(fig, out_dir, "training_gmp")
