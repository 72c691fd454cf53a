"""Tables, figures and the data behind them, rebuilt from the metrics JSON files alone.

`write_report` (in `build`) writes one experiment's report in parts, each a fixed set of
files (`parts`). This package's top level imports only `parts`, so that the Snakefile
can read the file lists cheaply; pandas, matplotlib and torch load on first use of the
other names.
"""

from __future__ import annotations

from typing import Any

from .parts import FIGURE_FORMATS, PARTS, TABLE_FORMATS, part_files

__all__ = [
    "FIGURE_FORMATS", "PARTS", "TABLE_FORMATS", "load_metrics", "method_results", "part_files",
    "write_report",
]  # fmt: skip
_LAZY = {"load_metrics": "records", "method_results": "records", "write_report": "build"}


def __getattr__(name: str) -> Any:
    """Import the heavy modules only when one of their functions is asked for."""
    if name in _LAZY:
        from importlib import import_module

        return getattr(import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
