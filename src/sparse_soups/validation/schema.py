"""The config schema (`workflow/schemas/config.schema.yaml`), applied strictly: integers
that are ints, numbers that are finite, names that a registry holds."""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from ..config import BASELINE_TARGETS, VARY_AXES
from ..kernels.schedules import PRETRAIN_SCHEDULES, RETRAIN_SCHEDULES
from ..registry import REGISTRIES

# Closed vocabularies declared in the code (torch-free), filled in where the schema says `x-names`.
NAMES = {
    "vary_axes": tuple(VARY_AXES),
    "baseline_targets": BASELINE_TARGETS,
    "pretrain_schedules": PRETRAIN_SCHEDULES,
    "retrain_schedules": RETRAIN_SCHEDULES,
}


def _is_integer(_checker: Any, instance: object) -> bool:
    """YAML's 2.0 is a float: jsonschema would take it as an integer, torch would not."""
    return isinstance(instance, int) and not isinstance(instance, bool)


def _is_number(_checker: Any, instance: object) -> bool:
    """`.nan` and `.inf` parse as floats but are no valid setting."""
    return isinstance(instance, int | float) and not isinstance(instance, bool) and math.isfinite(instance)


_TYPES = jsonschema.Draft202012Validator.TYPE_CHECKER.redefine_many(
    {"integer": _is_integer, "number": _is_number}
)
StrictValidator = jsonschema.validators.extend(jsonschema.Draft202012Validator, type_checker=_TYPES)


def _fill_registries(node: Any) -> Any:
    """The schema with each `x-registry: name` given that registry's names as its enum,
    and each `x-names: name` the names `NAMES` holds."""
    if isinstance(node, list):
        return [_fill_registries(item) for item in node]
    if not isinstance(node, dict):
        return node
    filled = {key: _fill_registries(value) for key, value in node.items()}
    if "x-registry" in filled:
        filled["enum"] = list(REGISTRIES[filled["x-registry"]].names())
    if "x-names" in filled:
        filled["enum"] = list(NAMES[filled["x-names"]])
    return filled


def load_schema(schema_path: str | Path) -> dict[str, Any]:
    """The config schema as the validator applies it: registry enums filled in."""
    return _fill_registries(yaml.safe_load(Path(schema_path).read_text()))


@functools.lru_cache(maxsize=4)
def _validator(schema_path: str, mtime_ns: int, registered: tuple) -> jsonschema.protocols.Validator:
    return StrictValidator(load_schema(schema_path))


def _registered() -> tuple:
    """What the registries hold now: a plugin may have added names since the last call."""
    return tuple(registry.names() for registry in REGISTRIES.values())


def key_path(config: object, elements: Sequence[object]) -> str:
    """`experiments.x.seeds[1]`: dict keys dotted, list indices in brackets."""
    out, node = "", config
    for element in elements:
        if isinstance(node, list):
            out += f"[{element}]"
            node = node[element] if isinstance(element, int) and element < len(node) else None
        else:
            out += f".{element}" if out else str(element)
            node = node.get(element) if isinstance(node, dict) else None
    return out


def schema_errors(config: object, schema_path: str | Path) -> list[tuple[tuple[object, ...], str]]:
    """(path, 'key: message') of every schema violation, in key order."""
    path = Path(schema_path)
    validator = _validator(str(path), path.stat().st_mtime_ns, _registered())
    found = [
        (tuple(error.absolute_path), f"{key_path(config, error.absolute_path) or 'config'}: {error.message}")
        for error in validator.iter_errors(config)
    ]
    return sorted(found, key=lambda item: (item[1].partition(": ")[0], item[1]))
