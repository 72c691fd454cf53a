"""Sparse Model Soups (SMS) and IMP baselines: the library behind the Snakemake workflow."""

__version__ = "0.1.0"
