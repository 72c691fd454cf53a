"""Config files and `--config` overrides: keys given twice, and values typed as YAML."""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml

OVERRIDE_HINT = (
    "To override a value, give a small extra config file after the main one, which "
    "Snakemake merges over it (snakemake --configfile config/config.yaml mine.yaml), or "
    "--config 'experiments={name: {prune: {sparsity: 0.5}}}'; see README, Configuration."
)


class _DuplicateKeyLoader(yaml.SafeLoader):
    """SafeLoader that records every key given twice in one mapping."""

    duplicates: list[str]

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[object] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            if isinstance(key, str | int | float | bool) or key is None:
                if key in seen:
                    self.duplicates.append(f"line {key_node.start_mark.line + 1}: duplicate key {key!r}")
                seen.add(key)
        return super().construct_mapping(node, deep=deep)


def _json_duplicates(text: str) -> list[str]:
    found: list[str] = []

    def hook(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        keys = [key for key, _ in pairs]
        found.extend(f"duplicate key {key!r}" for key in sorted({k for k in keys if keys.count(k) > 1}))
        return dict(pairs)

    json.loads(text, object_pairs_hook=hook)
    return found


def config_file_problems(paths: Iterable[str | Path]) -> list[str]:
    """Keys given twice in a config file: YAML and JSON keep the last silently."""
    problems = []
    for path in map(Path, paths):
        try:
            text = path.read_text()
        except (OSError, UnicodeDecodeError):
            continue  # Snakemake has already read it, or says why not
        try:
            duplicates = _json_duplicates(text)
        except ValueError:
            loader = _DuplicateKeyLoader(text)
            loader.duplicates = []
            try:
                loader.get_single_data()
            except yaml.YAMLError:
                continue  # Snakemake reports syntax errors itself
            finally:
                loader.dispose()
            duplicates = loader.duplicates
        problems += [f"{path}: {duplicate} (YAML keeps only the last)" for duplicate in duplicates]
    return problems


def typed_overrides(overrides: Any) -> Any:
    """`--config` values with their YAML types: Snakemake reads nested values as strings
    (`{prune: {sparsity: 0.5}}` gives '0.5'), which the schema would then refuse."""
    if isinstance(overrides, dict):
        return {key: typed_overrides(value) for key, value in overrides.items()}
    if isinstance(overrides, list):
        return [typed_overrides(value) for value in overrides]
    if isinstance(overrides, str):
        try:
            value = yaml.safe_load(overrides)
        except yaml.YAMLError:
            return overrides
        return overrides if isinstance(value, dict | list) else value
    return overrides
