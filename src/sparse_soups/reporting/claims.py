"""The paper's claims as paired tests over seeds: does SMS beat IMP, at equal compute, and
its own ingredients, in distribution and out of distribution?

Methods are compared *paired by seed*: both rows of a seed share the dense model and the
data order, so most of the seed-to-seed variance cancels in their difference. With n
seeds the 95% interval is the paired t interval, mean +- t(0.975, n - 1) * sd / sqrt(n):
wide at small n (t = 4.30 at n = 3), which is the honest answer with few seeds. A claim
is "better" or "worse" only when the interval excludes zero.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

from ..layout import soup_methods
from ..registry import SOUP_METHODS
from .parts import TABLE_FORMATS
from .tables import BUDGET_COLUMN, budgets, latex_escape

LEVEL = 0.95
INTERVAL = "paired t, 95%"
METRICS = {
    "test_accuracy": "accuracy",
    "ood_accuracy": "OOD accuracy",
    "worst_group_accuracy": "worst-group accuracy",  # data with groups (Celeb-A)
    "test_miou": "mIoU",  # segmentation (Cityscapes)
    "test_bleu": "BLEU",  # translation (WMT16)
}
COLUMNS = [
    "experiment", "metric", "phase", "sparsity", "claim", "method", "reference",
    "budget_method", "budget_reference", "seeds", "difference", "ci_low", "ci_high", "interval", "verdict",
]  # fmt: skip


@dataclass(frozen=True)
class Interval:
    mean: float
    low: float  # NaN with fewer than two seeds: no interval
    high: float
    n: int


def paired_interval(differences: list[float] | np.ndarray, level: float = LEVEL) -> Interval:
    """Mean of paired differences and its t confidence interval (n - 1 degrees of freedom)."""
    values = np.asarray(differences, dtype=float)
    n = len(values)
    if n == 0:
        return Interval(math.nan, math.nan, math.nan, 0)
    mean = float(values.mean())
    if n < 2:
        return Interval(mean, math.nan, math.nan, n)
    half = float(stats.t.ppf(0.5 + level / 2, n - 1)) * float(values.std(ddof=1)) / math.sqrt(n)
    return Interval(mean, mean - half, mean + half, n)


def verdict(interval: Interval) -> str:
    if interval.n < 2:
        return f"no interval ({interval.n} seed{'s' if interval.n != 1 else ''})"
    if interval.low > 0:
        return "better"
    if interval.high < 0:
        return "worse"
    return "not distinguishable"


def comparisons(methods: set[str]) -> list[tuple[str, str, str]]:
    """(claim, method, reference) of every claim whose two rows the results have."""
    pairs = []
    for chain in soup_methods():
        soup = SOUP_METHODS.label(chain)
        pairs += [
            (f"{soup} vs IMP", soup, "IMP"),
            (f"{soup} vs IMP (m x budget)", soup, "IMP (m x budget)"),
            (f"{soup} vs best ingredient", soup, f"Best ingredient ({soup})"),
            (f"{soup} vs mean ingredient", soup, f"Mean ingredient ({soup})"),
        ]
        if chain != "uniform":  # every other merge against the paper's own soup
            pairs.append((f"{soup} vs SMS uniform", soup, SOUP_METHODS.label("uniform")))
    pairs.append(("GMP + SMS vs GMP", "GMP + SMS", "GMP"))
    return [p for p in pairs if p[1] in methods and p[2] in methods]


def claims_table(results: pd.DataFrame) -> pd.DataFrame:
    """One row per (metric, phase, claim): the paired difference in points and its verdict."""
    experiment = str(results.experiment.iloc[0]) if not results.empty else ""
    spent = budgets(results)
    rows = []
    for metric, metric_name in METRICS.items():
        if metric not in results:
            continue
        data = results.dropna(subset=[metric])
        for phase in sorted(data.phase.unique()):
            at = data[data.phase == phase]
            wide = at.pivot_table(index="seed", columns="method", values=metric, aggfunc="first")
            sparsity = float(at.sparsity.mean())
            for claim, method, reference in comparisons(set(wide.columns)):
                paired = wide[[method, reference]].dropna()
                interval = paired_interval(100 * (paired[method] - paired[reference]).to_numpy())
                if interval.n == 0:
                    continue
                rows.append({
                    "experiment": experiment, "metric": metric_name, "phase": int(phase),
                    "sparsity": sparsity, "claim": claim, "method": method, "reference": reference,
                    "budget_method": spent.get(method, math.nan),
                    "budget_reference": spent.get(reference, math.nan),
                    "seeds": interval.n, "difference": interval.mean, "ci_low": interval.low,
                    "ci_high": interval.high, "interval": INTERVAL, "verdict": verdict(interval),
                })  # fmt: skip
    return pd.DataFrame(rows, columns=COLUMNS)


def _number(value: float, signed: bool = True) -> str:
    return "" if np.isnan(value) else (f"{value:+.2f}" if signed else f"{value:.3g}")


def display(claims: pd.DataFrame) -> pd.DataFrame:
    """The table as a reader sees it: points, the interval in brackets, the verdict."""
    return pd.DataFrame({
        "metric": claims.metric,
        "phase (sparsity)": [f"{p} ({100 * s:.1f}%)"
                             for p, s in zip(claims.phase, claims.sparsity, strict=True)],
        "claim": claims.claim,
        BUDGET_COLUMN: [f"{_number(a, False)} vs {_number(b, False)}"
                        for a, b in zip(claims.budget_method, claims.budget_reference, strict=True)],
        "seeds": claims.seeds,
        "difference (points)": claims.difference.map(_number),
        "95% CI": [f"[{_number(lo)}, {_number(hi)}]" if not np.isnan(lo) else ""
                   for lo, hi in zip(claims.ci_low, claims.ci_high, strict=True)],
        "verdict": claims.verdict,
    })  # fmt: skip


def title(claims: pd.DataFrame) -> str:
    experiment = claims.experiment.iloc[0] if not claims.empty else ""
    return (
        f"{experiment}: the paper's claims, method minus reference in percentage points, per phase, "
        f"paired by seed; 95% interval: {INTERVAL} (n - 1 degrees of freedom); verdict better/worse "
        f"only when the interval excludes 0. '{BUDGET_COLUMN}': training epochs per phase of method "
        "vs reference."
    )


def write_claims(claims: pd.DataFrame, out_dir: Path) -> dict[str, Path]:
    """`claims.{csv,md,tex,html}`; with no comparable rows, a note saying so."""
    paths = {fmt: Path(out_dir) / f"claims.{fmt}" for fmt in TABLE_FORMATS}
    claims.to_csv(paths["csv"], index=False)
    if claims.empty:
        note = "No claim can be tested: the metrics files lack one of each compared pair of methods."
        shown = pd.DataFrame({"note": [note]})
        heading = note
    else:
        shown, heading = display(claims), title(claims)
    paths["md"].write_text(f"{heading}\n\n{shown.to_markdown(index=False)}\n")
    styler = shown.style.hide(axis="index").format(escape="latex").format_index(escape="latex", axis=1)
    paths["tex"].write_text(
        styler.to_latex(
            hrules=True, caption=latex_escape(heading), label="tab:claims", position_float="centering"
        )
    )
    html = shown.style.hide(axis="index").set_uuid("claims").set_caption(heading)
    html = html.format(escape="html").format_index(escape="html", axis=1)
    paths["html"].write_text(html.to_html(doctype_html=True))
    return {f"claims.{fmt}": path for fmt, path in paths.items()}
