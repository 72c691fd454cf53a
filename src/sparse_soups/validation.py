"""Config checks beyond types: split sizes, architecture rules, the size of the plan,
duplicate keys in config files, and typed `--config` overrides.

Kept free of torch, so the Snakefile runs them in a blink before it plans any job.
`config.config_problems` calls these only on values whose type the schema has confirmed,
so a check here never has to guard against a string where a number belongs.
"""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import jsonschema
import yaml

# Training images of each dataset's official training set (before the validation split);
# a `data.root` with IDX files of another size (Fashion-MNIST) is read for its own count.
NOMINAL_TRAIN_SIZES = {
    "fashion_mnist": 60_000, "mnist": 60_000, "cifar10": 50_000, "cifar100": 50_000,
    "imagenet": 1_281_167,
}  # fmt: skip
MAX_RETRAINS = 10_000  # SMS retrains one experiment may plan: the paper's need about 100
OVERRIDE_HINT = (
    "To override a value, give a small extra config file after the main one, which "
    "Snakemake merges over it (snakemake --configfile config/config.yaml mine.yaml), or "
    "--config 'experiments={name: {prune: {sparsity: 0.5}}}'; see README, Configuration."
)


# --- the schema, with integers that are ints and numbers that are finite -------------


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


@functools.lru_cache(maxsize=4)
def _validator(schema_path: str, mtime_ns: int) -> jsonschema.protocols.Validator:
    return StrictValidator(yaml.safe_load(Path(schema_path).read_text()))


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
    validator = _validator(str(path), path.stat().st_mtime_ns)
    found = [
        (tuple(error.absolute_path), f"{key_path(config, error.absolute_path) or 'config'}: {error.message}")
        for error in validator.iter_errors(config)
    ]
    return sorted(found, key=lambda item: (item[1].partition(": ")[0], item[1]))


def name_problems(experiments: dict[Any, Any]) -> list[str]:
    """YAML reads `12345:` as a number; experiment names become paths and must be strings."""
    return [
        f"experiments: the name {name!r} must be a string (quote it in YAML: '{name}')"
        for name in experiments
        if not isinstance(name, str)
    ]


# --- checks on typed settings ----------------------------------------------------------


def _idx_count(path: Path) -> int | None:
    """The item count in an IDX file's header (gzip or plain), None if unreadable."""
    import gzip

    try:
        opener = gzip.open if path.suffix == ".gz" else open
        with opener(path, "rb") as handle:
            header = handle.read(8)
    except (OSError, EOFError):
        return None  # prepare-data names the file
    return int.from_bytes(header[4:8], "big") if len(header) == 8 else None


def training_set_size(dataset: str, root: str | None) -> int | None:
    """Images of the full training set: read from IDX headers under `root` for
    Fashion-MNIST, else the official size (None if unknown)."""
    if dataset == "fashion_mnist" and root:
        for directory in (Path(root), Path(root) / "FashionMNIST" / "raw"):
            for name in ("train-labels-idx1-ubyte", "train-labels-idx1-ubyte.gz"):
                if (directory / name).is_file():
                    return _idx_count(directory / name)
    return NOMINAL_TRAIN_SIZES.get(dataset)


def split_sizes(total: int, validation_fraction: float, train_subset: int | None) -> tuple[int, int]:
    """(training, validation) images, as `data.prepare_dataset` and `load_prepared` make them."""
    n_val = round(validation_fraction * total)
    n_train = total - n_val
    return (n_train if train_subset is None else min(train_subset, n_train)), n_val


def split_problems(settings: Any, total: int, key: str) -> list[str]:
    """The splits must hold what the experiment reads: a batch of training images, and
    validation images for every model's validation accuracy, greedy soups and Lottery Pools."""
    data = settings.data
    n_train, n_val = split_sizes(total, data.validation_fraction, data.train_subset)
    users = ["evaluation", *(["greedy soup"] if "greedy" in settings.soup.methods else [])]
    if settings.baselines.lottery_pools != "none" and settings.prune.phases > 1:
        users.append("Lottery Pools")
    problems = []
    if n_val < 1:
        problems.append(
            f"{key}.data.validation_fraction: {data.validation_fraction} of {total} training images "
            f"leaves no validation image, which {', '.join(users)} need(s)"
        )
    batch = settings.pretrain.batch_size
    if n_train < batch:
        limited = data.train_subset is not None and data.train_subset < total - n_val
        cause = (
            f"data.train_subset: {data.train_subset}"
            if limited
            else f"data.validation_fraction: {data.validation_fraction} leaves {n_train} of {total}"
        )
        problems.append(
            f"{key}.{cause} training images, fewer than one batch (pretrain.batch_size {batch})"
        )  # fmt: skip
    return problems


def model_problems(model: dict[str, Any], key: str) -> list[str]:
    """WideResNet's depth is 6n + 4 (n blocks per stage); known before any job runs."""
    depth = model.get("depth", 28)
    if model.get("name") == "wrn" and (depth - 4) % 6:
        return [f"{key}.model.depth: {depth} is not 6n + 4 (WideResNet: e.g. 16, 22, 28, 40)"]
    return []


def lottery_pools_problems(experiment: dict[str, Any], key: str) -> list[str]:
    """Lottery Pools mixes tickets of several phases: asked for with one phase, say so."""
    asked = (experiment.get("baselines") or {}).get("lottery_pools")
    phases = (experiment.get("prune") or {}).get("phases", 3)
    if asked in ("last", "all") and phases < 2:
        return [
            f"{key}.baselines.lottery_pools: '{asked}' needs prune.phases >= 2 (it mixes tickets "
            f"of several phases; prune.phases is {phases}): set it to none"
        ]
    return []


def size_problems(phases: int, ingredients: int, methods: int, seeds: int, key: str) -> list[str]:
    """A plan of millions of retrains would take Snakemake minutes just to build: refuse it
    in constant time, before anything walks the phases."""
    retrains = phases * ingredients * max(methods, 1) * seeds
    if retrains > MAX_RETRAINS:
        return [
            f"{key}.prune.phases: {phases} phases x {ingredients} ingredients (soup.ingredients) x "
            f"{methods} soup method(s) x {seeds} seed(s) plan {retrains} retrains, more than "
            f"{MAX_RETRAINS}"
        ]
    return []


# --- config files and command-line overrides ------------------------------------------


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
