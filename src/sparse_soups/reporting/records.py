"""From metrics files to tidy tables: one row per (seed, method, phase), and one per ingredient.

Each metrics file names the model directory it describes (see `layout`), which is all
that is needed to tell which method and phase a number belongs to. Fields that an older
run, or a run without OOD evaluation, did not write become NaN here, never an error.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable
from pathlib import Path

import pandas as pd

from .. import layout
from ..config import VARY_AXES
from ..kernels.files import sha256
from ..methods.record import KINDS, REQUIRED_METRICS, ModelRecord
from ..registry import SOUP_METHODS

DENSE_ROW = "Dense"
ORACLE_PREFIX = "Best ingredient by test (oracle)"  # the authors' "best candidate": chosen on test data
ENSEMBLE_ROW = "Prediction ensemble (not sparse)"
# Scalar metrics carried into the tables; any of them may be absent from a file.
METRICS = (
    "test_accuracy", "validation_accuracy", "sparsity", "ece", "mce", "worst_class_accuracy",
    "ood_accuracy", "worst_group_accuracy", "test_miou", "validation_miou", "test_bleu",
    "validation_bleu", "budget_epochs",
)  # fmt: skip
# Nested per-row facts: OOD accuracy per corruption -> severity; accuracy per group; what a
# merging operator chose (grid point, learned coefficients, Model Stock's mean ratio) and the
# seconds its merge took (a timing, not a metric: it stays out of results.csv).
NESTED = ("ood", "groups", "merge")
MERGE_FACTS = ("chosen", "coefficients", "ratio_mean", "swa_from_step", "merge_seconds")
# Recipe fields an ingredient may vary in (`soup.vary`), as the checkpoint meta records them.
AXES = tuple(axis for axis in VARY_AXES if axis != "seed")

REQUIRED_FIELDS = ("experiment", "seed", "model_dir", "kind", "phase", *REQUIRED_METRICS)


def load_metrics(paths: Iterable[str | Path]) -> list[dict]:
    """Read metrics files, refusing damaged or incomplete ones, ones whose checkpoint
    changed since, and two files describing one model: each error names the file."""
    records, seen = [], {}
    for path in map(Path, paths):
        try:
            record = json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
            raise ValueError(f"cannot read metrics file {path}: {error}") from error
        if not isinstance(record, dict):
            raise ValueError(f"metrics file {path} holds a JSON {type(record).__name__}, not an object")
        missing = [field for field in REQUIRED_FIELDS if field not in record]
        if missing:
            raise ValueError(f"metrics file {path} lacks the fields {missing}")
        problem = record_problem(record)
        if problem is not None:
            raise ValueError(f"metrics file {path}: {problem}")
        identity = ModelRecord.from_meta(record)
        identity = (identity.experiment, identity.seed, identity.model_dir)
        if identity in seen:
            raise ValueError(f"metrics files {seen[identity]} and {path} both describe {identity}")
        seen[identity] = path
        checkpoint = path.with_name(layout.MODEL_FILE)
        if checkpoint.exists() and sha256(checkpoint) != record["checkpoint_sha256"]:
            raise ValueError(
                f"metrics file {path} describes another checkpoint than {checkpoint} "
                "(checksums differ): rerun its evaluation"
            )
        records.append(record | _timing(path))
    return records


def _timing(metrics_file: Path) -> dict:
    """What a merge took (`merge_seconds`), from the timing file the soup step writes beside
    its model: a measurement, kept out of the checkpoint and the metrics so that those are
    the same in every run of a config; empty where there is none (it is never required)."""
    try:
        timing = json.loads(metrics_file.with_name(layout.TIMING_FILE).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return {}
    seconds = timing.get("merge_seconds") if isinstance(timing, dict) else None
    return {"merge_seconds": float(seconds)} if isinstance(seconds, int | float) else {}


_MODEL_DIR = re.compile(r"[A-Za-z0-9_-]+(/[A-Za-z0-9_-]+)*")


def _is_fraction(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and 0 <= value <= 1


def record_problem(record: dict) -> str | None:
    """The first field of a metrics record with a wrong type or value, or None: a NaN
    accuracy or a string phase would otherwise surface as a pandas error, far from its file."""
    for field, kind in (("experiment", str), ("kind", str), ("model_dir", str)):
        if not isinstance(record[field], kind) or not record[field]:
            return f"'{field}' is {record[field]!r}, not a non-empty string"
    if record["kind"] not in KINDS:
        return f"'kind' is {record['kind']!r}, none of {', '.join(KINDS)}"
    for field in ("seed", "phase"):
        value = record[field]
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            return f"'{field}' is {value!r}, not a whole number >= 0"
    if not _MODEL_DIR.fullmatch(record["model_dir"]):
        return f"'model_dir' {record['model_dir']!r} is not a directory inside the run"
    for field in ("test_accuracy", "validation_accuracy", "sparsity"):
        if not _is_fraction(record[field]):
            return f"'{field}' is {record[field]!r}, not a number in [0, 1]"
    for field in METRICS:
        value = record.get(field)
        if value is not None and not (isinstance(value, int | float) and not isinstance(value, bool)):
            return f"'{field}' is {value!r}, not a number or null"
        if isinstance(value, float) and not math.isfinite(value):
            return f"'{field}' is {value!r}, not a finite number"
    checksum = record["checkpoint_sha256"]
    if checksum is not None and not isinstance(checksum, str):
        return f"'checkpoint_sha256' is {checksum!r}, not a string or null"
    return _ood_problem(record.get("ood"))


def _ood_problem(ood: object) -> str | None:
    if ood is None:
        return None
    if not isinstance(ood, dict) or not all(isinstance(row, dict) for row in ood.values()):
        return f"'ood' is {ood!r}, not a table of corruption -> severity -> accuracy"
    for corruption, row in ood.items():
        for severity, accuracy in row.items():
            if not _is_fraction(accuracy) or not str(severity).isdigit():
                return f"'ood.{corruption}.{severity}' is {accuracy!r}, not an accuracy in [0, 1]"
    return None


def _number(value: object) -> float:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else math.nan


def _row(method: str, phase: int, record: dict) -> dict:
    row: dict = {"method": method, "phase": phase}
    row.update({key: _number(record.get(key)) for key in METRICS})
    row["ood"] = record.get("ood") or None
    row["groups"] = record.get("group_accuracy") or None
    row["merge"] = {key: record[key] for key in MERGE_FACTS if key in record} or None
    return row


def _mean_groups(tables: list[dict | None]) -> dict | None:
    """Group-wise mean of several `group_accuracy` maps, or None unless all have the same groups."""
    if not tables or any(not t for t in tables) or any(set(t) != set(tables[0]) for t in tables):
        return None
    return {group: sum(_number(t[group]) for t in tables) / len(tables) for group in tables[0]}


def _mean_ood(tables: list[dict | None]) -> dict | None:
    """Cell-wise mean of several `ood` tables, or None unless all have the same cells."""
    if not tables or any(not t for t in tables):
        return None
    cells = {(c, s) for c, sev in tables[0].items() for s in sev}
    if any({(c, s) for c, sev in t.items() for s in sev} != cells for t in tables):
        return None
    out: dict = {}
    for corruption, severity in sorted(cells):
        values = [_number(t[corruption][severity]) for t in tables]
        out.setdefault(corruption, {})[severity] = sum(values) / len(values)
    return out


def chain_ingredients(chain: str, phase: int, by_dir: dict[str, dict]) -> list[dict]:
    """A chain's ingredients of one phase, in index order (stops at the first gap)."""
    ingredients = []
    while (record := by_dir.get(layout.ingredient_dir(chain, phase, len(ingredients)))) is not None:
        ingredients.append(record)
    return ingredients


def _ingredient_rows(chain: str, label: str, phase: int, by_dir: dict[str, dict]) -> list[dict]:
    ingredients = chain_ingredients(chain, phase, by_dir)
    if not ingredients:
        return []
    best = max(ingredients, key=lambda r: r["validation_accuracy"])  # chosen on validation
    oracle = max(ingredients, key=lambda r: r["test_accuracy"])  # the authors' "best candidate"
    rows = [_row("", phase, r) for r in ingredients]
    mean = {key: sum(r[key] for r in rows) / len(rows) for key in METRICS}
    mean["ood"] = _mean_ood([r["ood"] for r in rows])
    mean["groups"] = _mean_groups([r["groups"] for r in rows])
    return [
        _row(f"Best ingredient ({label})", phase, best),
        _row(f"{ORACLE_PREFIX} ({label})", phase, oracle),
        {"method": f"Mean ingredient ({label})", "phase": phase, **mean},
    ]


# Model directories of the methods that other parts of the package add (GMP, GMP with
# SMS, IMP with rewinding), relative to the run directory; absent ones are skipped.
def _extra_dirs(phase: int) -> dict[str, str]:
    return {
        "IMP (rewind)": layout.chain_model_dir(layout.IMP_REWIND, phase),
        "GMP": layout.gmp_dir(phase),
        "GMP + SMS": layout.gmp_sms_dir(phase),
    }


def subset_sizes(by_dir: dict[str, dict]) -> list[int]:
    """The k of the run's subset soups (first k of the uniform chain's m ingredients)."""
    names = {r.get("method", "") for r in by_dir.values() if r["kind"] == "soup"}
    return sorted(k for n in names if (k := layout.subset_size(n)) is not None)


def ablation_chains(by_dir: dict[str, dict]) -> list[str]:
    """The run's ablation chains over m (SMS uniform with k ingredients), by k."""
    names = {r.get("method", "") for r in by_dir.values() if r["kind"] == "soup"}
    return sorted((n for n in names if layout.ablation_size(n)), key=layout.ablation_size)


def subset_label(k: int) -> str:
    return f"Subset soup (first {k} of m, uniform chain)"


def ablation_label(k: int) -> str:
    return f"SMS uniform (m = {k})"


def imp_dir(phase: int, by_dir: dict[str, dict]) -> str:
    """IMP's model of a phase: its own phase-1 retrain when its recipe differed from
    ingredient 0's, else the shared one (see recipes.imp_shares_phase1)."""
    own = layout.chain_model_dir(layout.IMP, phase, imp_shared=False)
    return own if own in by_dir else layout.chain_model_dir(layout.IMP, phase)


def _phase_rows(phase: int, methods: list[str], by_dir: dict[str, dict]) -> list[dict]:
    """A phase's rows in the table's order: IMP baselines, each SMS chain (best and mean
    ingredient, soup, k-of-m soups), GMP, soup-at-end, Lottery Pools, the ensemble."""
    extra = _extra_dirs(phase)
    singles = [
        ("IMP", imp_dir(phase, by_dir)),
        ("IMP (rewind)", extra["IMP (rewind)"]),
        ("IMP (m x budget)", layout.chain_model_dir(layout.IMP_BUDGET, phase)),
    ]
    rows = [_row(label, phase, by_dir[d]) for label, d in singles if d in by_dir]
    for method in methods:
        label = SOUP_METHODS.label(method)
        rows += _ingredient_rows(method, label, phase, by_dir)
        if (record := by_dir.get(layout.chain_model_dir(method, phase))) is not None:
            rows.append(_row(label, phase, record))
        if method == "uniform":
            for k in subset_sizes(by_dir):
                if (record := by_dir.get(layout.soup_dir(layout.subset_soup(k), phase))) is not None:
                    rows.append(_row(subset_label(k), phase, record))
    for chain in ablation_chains(by_dir):
        if (record := by_dir.get(layout.chain_model_dir(chain, phase))) is not None:
            rows.append(_row(ablation_label(layout.ablation_size(chain)), phase, record))
    others = [
        ("GMP", extra["GMP"]),
        ("GMP + SMS", extra["GMP + SMS"]),
        ("Soup at end (IMP, last phase)", layout.soup_dir(layout.SOUP_AT_END, phase)),
        ("Lottery Pools (interp)", layout.lottery_pools_dir("interp", phase)),
        ("Lottery Pools (avg)", layout.lottery_pools_dir("avg", phase)),
        (ENSEMBLE_ROW, layout.ensemble_dir(phase)),
    ]
    return rows + [_row(label, phase, by_dir[d]) for label, d in others if d in by_dir]


_RANKS = {
    DENSE_ROW: 0, "IMP": 1, "IMP (rewind)": 2, "IMP (m x budget)": 3, "GMP": 5, "GMP + SMS": 6,
    "Soup at end (IMP, last phase)": 7, "Lottery Pools (interp)": 8, "Lottery Pools (avg)": 9,
    ENSEMBLE_ROW: 10,
}  # fmt: skip


def _rank(row: dict) -> int:
    """Table order: dense, IMP baselines, the SMS chains, GMP, then the other references."""
    return _RANKS.get(row["method"], 4)


def runs(records: list[dict]) -> dict[tuple[str, int], dict[str, dict]]:
    """The records of each (experiment, seed), by model directory."""
    out: dict[tuple[str, int], dict[str, dict]] = {}
    for record in records:
        out.setdefault((record["experiment"], record["seed"]), {})[record["model_dir"]] = record
    return dict(sorted(out.items()))


def soup_labels() -> list[str]:
    """The table labels of the registered soup methods (SMS uniform, ..., SWAMP)."""
    return [SOUP_METHODS.label(method) for method in layout.soup_methods()]


def soup_methods(by_dir: dict[str, dict]) -> list[str]:
    present = {r.get("method") for r in by_dir.values() if r["kind"] == "soup"}
    return [m for m in layout.soup_methods() if m in present]


def method_results(records: list[dict]) -> pd.DataFrame:
    """One row per (experiment, seed, method, phase), in the tables' row order."""
    rows = []
    for (experiment, seed), by_dir in runs(records).items():
        phases = max(r["phase"] for r in by_dir.values())
        run_rows = [_row(DENSE_ROW, 0, by_dir[layout.DENSE])] if layout.DENSE in by_dir else []
        for phase in range(1, phases + 1):
            run_rows += _phase_rows(phase, soup_methods(by_dir), by_dir)
        run_rows.sort(key=_rank)  # stable: the SMS rows keep their order
        rows += [{"experiment": experiment, "seed": seed, **row} for row in run_rows]
    return pd.DataFrame(rows, columns=["experiment", "seed", "method", "phase", *METRICS, *NESTED])


def varied_axis(recipes: list[dict]) -> str:
    """The recipe field in which a phase's ingredients differ (`soup.vary`), else the seed."""
    for axis in AXES:
        if len({str(r.get(axis)) for r in recipes}) > 1:
            return axis
    return "seed"


def ingredient_results(records: list[dict]) -> pd.DataFrame:
    """One row per ingredient of every SMS chain, with its value on the varied axis."""
    rows = []
    for (experiment, seed), by_dir in runs(records).items():
        phases = max(r["phase"] for r in by_dir.values())
        for chain in soup_methods(by_dir):
            for phase in range(1, phases + 1):
                ingredients = chain_ingredients(chain, phase, by_dir)
                recipes = [r.get("recipe") or {} for r in ingredients]
                axis = varied_axis(recipes)
                for index, (record, recipe) in enumerate(zip(ingredients, recipes, strict=True)):
                    value = recipe.get("seed_index", index) if axis == "seed" else recipe.get(axis)
                    rows.append({
                        "experiment": experiment, "seed": seed, "chain": chain, "phase": phase,
                        "index": index, "axis": axis, "value": value,
                        **{key: _number(record.get(key)) for key in METRICS},
                    })  # fmt: skip
    columns = ["experiment", "seed", "chain", "phase", "index", "axis", "value", *METRICS]
    return pd.DataFrame(rows, columns=columns)


def group_cells(results: pd.DataFrame) -> pd.DataFrame:
    """One row per (seed, method, phase, group) with the group's test accuracy."""
    rows = [
        {"experiment": row.experiment, "seed": row.seed, "method": row.method, "phase": row.phase,
         "group": group, "accuracy": _number(acc)}
        for row in results.itertuples(index=False)
        for group, acc in (row.groups or {}).items()
    ]  # fmt: skip
    return pd.DataFrame(rows, columns=["experiment", "seed", "method", "phase", "group", "accuracy"])


def ood_cells(results: pd.DataFrame) -> pd.DataFrame:
    """One row per (seed, method, phase, corruption, severity) with an OOD accuracy."""
    rows = []
    for row in results.itertuples(index=False):
        for corruption, severities in (row.ood or {}).items():
            for severity, acc in severities.items():
                rows.append({
                    "experiment": row.experiment, "seed": row.seed, "method": row.method,
                    "phase": row.phase, "corruption": corruption, "severity": int(severity),
                    "accuracy": _number(acc),
                })  # fmt: skip
    columns = ["experiment", "seed", "method", "phase", "corruption", "severity", "accuracy"]
    return pd.DataFrame(rows, columns=columns)
