"""Where a study stands: `sparse-soups status results/`.

Reads only the files present (each experiment's `settings.json`, then which model and
metrics files exist), so it works while a long cluster run is under way, and compares
them with what the settings say the run produces (`plan`, `layout`)."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from . import layout, plan
from .config import Settings

_OWN_CHAINS = {layout.IMP, layout.IMP_BUDGET, layout.IMP_REWIND}


def model_group(model_dir: str) -> str:
    """The row a model directory counts in: its method, ingredients apart from soups."""
    parsed = layout.parse(model_dir)
    top = model_dir.split("/")[0]
    if parsed is None:
        return top
    template, fields = parsed
    if template == "ingredient" and fields["lineage"] not in _OWN_CHAINS:
        return f"{fields['lineage']} ingredients"
    if template == "gmp_sms_ingredient":
        return f"{top} ingredients"
    if template == "gmp_sms_round":
        return f"{top} rounds"
    return top


def _phase(model_dir: str) -> int:
    parsed = layout.parse(model_dir)
    return int(parsed[1].get("phase", 0)) if parsed else 0


def experiment_status(experiment_dir: Path) -> pd.DataFrame:
    """One row per model directory and seed: whether its model and metrics exist."""
    settings = Settings.from_dict(json.loads((experiment_dir / "settings.json").read_text()))
    with_models = set(plan.experiment_model_dirs(settings))
    rows = []
    for seed in settings.seeds:
        run = experiment_dir / f"seed{seed}"
        for model_dir in plan.experiment_metrics_dirs(settings):
            has_model = model_dir in with_models
            rows.append(
                {
                    "experiment": experiment_dir.name,
                    "seed": seed,
                    "method": model_group(model_dir),
                    "phase": _phase(model_dir),
                    "models": int(has_model),
                    "trained": int(has_model and (run / model_dir / layout.MODEL_FILE).exists()),
                    "evaluated": int((run / model_dir / layout.METRICS_FILE).exists()),
                }
            )
    return pd.DataFrame(rows)


def study_status(results: Path) -> pd.DataFrame:
    """Per experiment, method and phase: models trained and evaluated, of how many."""
    if not results.is_dir():
        raise FileNotFoundError(f"{results} is not a directory (expected the workflow's results/)")
    experiments = sorted(p.parent for p in results.glob("*/settings.json"))
    if not experiments:
        raise FileNotFoundError(f"{results} holds no experiment (no */settings.json): has a run started?")
    rows = pd.concat([experiment_status(e) for e in experiments], ignore_index=True)
    table = rows.groupby(["experiment", "method", "phase"], sort=False).agg(
        seeds=("seed", "nunique"), models=("models", "sum"), trained=("trained", "sum"),
        expected=("seed", "size"), evaluated=("evaluated", "sum"),
    )  # fmt: skip
    return table.reset_index().sort_values(["experiment", "phase"], kind="stable", ignore_index=True)


def format_status(table: pd.DataFrame) -> str:
    """The table as text, with 'trained' and 'evaluated' as done/expected."""
    shown = table.assign(
        trained=[f"{t}/{m}" if m else "-" for t, m in zip(table.trained, table.models, strict=True)],
        evaluated=[f"{e}/{n}" for e, n in zip(table.evaluated, table.expected, strict=True)],
    )[["experiment", "method", "phase", "seeds", "trained", "evaluated"]]
    done = int(table.trained.sum()) + int(table.evaluated.sum())
    total = int(table.models.sum()) + int(table.expected.sum())
    return shown.to_string(index=False) + f"\n\n{done} of {total} model and metrics files present"
