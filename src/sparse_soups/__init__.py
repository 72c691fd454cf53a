"""Sparse Model Soups (SMS) and IMP baselines: the library behind the Snakemake workflow."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pathlib import Path

    from torch import nn

    from .export import SettingsLike

from ._version import __version__ as __version__


def load_model(path: str | Path, settings: SettingsLike = None) -> nn.Module:
    """A checkpoint or an export as its `nn.Module`, with `model.masks` and `model.meta`
    (see `sparse_soups.export.load_model`). Imported on call: importing the package stays
    light (the warm worker's client imports nothing heavy)."""
    from .export import load_model as load

    return load(path, settings)
