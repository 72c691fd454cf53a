"""Everything wrong with a workflow config, named key by key before any job runs.

Kept free of torch, so the Snakefile runs it in a blink before it plans a job: the
schema (`schema.py`, with the registries' names as enums), then the rules it cannot
express (`experiment.py`) on the experiment with its defaults filled in, and the config
files themselves (`files.py`: keys given twice, `--config` values typed as YAML).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .datasets import training_set_size
from .experiment import MAX_RETRAINS, experiment_problems, split_sizes, with_defaults
from .files import OVERRIDE_HINT, config_file_problems, typed_overrides
from .schema import load_schema, schema_errors

__all__ = [
    "MAX_RETRAINS", "OVERRIDE_HINT", "config_file_problems", "config_problems", "load_schema",
    "schema_errors", "split_sizes", "training_set_size", "typed_overrides", "with_defaults",
]  # fmt: skip


def name_problems(experiments: dict[Any, Any]) -> list[str]:
    """YAML reads `12345:` as a number; experiment names become paths and must be strings."""
    return [
        f"experiments: the name {name!r} must be a string (quote it in YAML: '{name}')"
        for name in experiments
        if not isinstance(name, str)
    ]


def config_problems(config: dict[str, Any], schema_path: str | Path, files: bool = True) -> list[str]:
    """Every problem of a workflow config, one line each, naming the key and its value;
    without `files`, all but whether the data files it names exist (a dry run plans
    without them; a run checks them before its first job: workflow/rules/common.smk).

    Checks the JSON schema (types, ranges, known names, no unknown keys), then the rules
    it cannot express, each only on sections whose types the schema has confirmed, so a
    wrong type is named by the schema instead of crashing a later check.
    """
    if not isinstance(config, dict):
        return [f"config: expected a mapping with the key 'experiments', got {config!r}"]
    problems: list[str] = []
    experiments = config.get("experiments")
    if isinstance(experiments, dict):
        problems += name_problems(experiments)
        experiments = {str(name): value for name, value in experiments.items()}
        config = {**config, "experiments": experiments}
    errors = schema_errors(config, schema_path)
    problems += [message for _, message in errors]
    for name, experiment in (experiments if isinstance(experiments, dict) else {}).items():
        if isinstance(experiment, dict):
            own = [path for path, _ in errors if path[:2] == ("experiments", name)]
            dirty = {path[2] if len(path) > 2 else None for path in own}
            problems += experiment_problems(name, experiment, dirty, files)
    return problems
