"""CPU seconds a job spends in arithmetic, by kind, so that the rest is measurable.

`benchmarks/default_run.py` sets these against the whole run's CPU time: what is not
training, evaluation, merging or data arithmetic, or drawing the report, is overhead (process start, imports,
loading and saving files, Snakemake). Only the outermost timed call counts, so a
timed function that calls another (a greedy soup scoring its candidates) counts once;
loading done lazily inside a timed call (`not_arithmetic`) is left out of it.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator

KINDS = ("training", "evaluation", "merging", "data", "reporting")
_totals: dict[str, float] = dict.fromkeys(KINDS, 0.0)
_running = False
_excluded = 0.0  # CPU seconds of `not_arithmetic` blocks inside the running timed call


@contextlib.contextmanager
def arithmetic(kind: str) -> Iterator[None]:
    """Count the CPU time of the block (all threads) as `kind`; usable as a decorator."""
    global _running, _excluded
    if _running:
        yield
        return
    _running, _excluded, start = True, 0.0, time.process_time()
    try:
        yield
    finally:
        _running = False
        _totals[kind] += time.process_time() - start - _excluded


@contextlib.contextmanager
def not_arithmetic() -> Iterator[None]:
    """Leave the block's CPU time out of the timed call it runs in (lazy loading)."""
    global _excluded
    if not _running:
        yield
        return
    start = time.process_time()
    try:
        yield
    finally:
        _excluded += time.process_time() - start


def totals() -> dict[str, float]:
    """CPU seconds per kind so far in this process."""
    return dict(_totals)
