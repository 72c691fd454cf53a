"""Hostile configs: every key of the schema fed every wrong type, and the reproductions of
issue 14, each rejected before any job with a message naming the key, never a traceback.

The keys come from `workflow/schemas/config.schema.yaml` itself, so a key added later is
swept too. The sweep calls the validation that the Snakefile runs (in-process, fast); a
few real `snakemake -n` runs check what a user sees on the command line.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from sparse_soups.validation import MAX_RETRAINS, config_problems
from tests.conftest import REPO

SCHEMA_PATH = REPO / "workflow" / "schemas" / "config.schema.yaml"
SCHEMA = yaml.safe_load(SCHEMA_PATH.read_text())
NAME = "x"  # the experiment every swept value is put into


def _resolve(node: dict) -> dict:
    while "$ref" in node:
        node = SCHEMA["$defs"][node["$ref"].removeprefix("#/$defs/")]
    return node


def schema_keys(node: dict = SCHEMA, path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], dict]]:
    """Every key the schema defines, with its (resolved) definition; the experiments
    mapping's entries appear under the name `NAME`."""
    node = _resolve(node)
    for key, child in node.get("properties", {}).items():
        yield (*path, key), _resolve(child)
        yield from schema_keys(child, (*path, key))
    extra = node.get("additionalProperties")
    if isinstance(extra, dict):
        yield (*path, NAME), _resolve(extra)
        yield from schema_keys(extra, (*path, NAME))


def _types(spec: dict) -> set[str]:
    kind = spec.get("type", [])
    return {kind} if isinstance(kind, str) else set(kind)


def _is(value: Any, kind: str) -> bool:
    """Whether `value` is of a JSON-schema type as the workflow reads it (2.0 is no integer)."""
    number = isinstance(value, int | float) and not isinstance(value, bool)
    return {
        "integer": isinstance(value, int) and not isinstance(value, bool),
        "number": number and value == value and abs(value) != float("inf"),
        "string": isinstance(value, str),
        "boolean": isinstance(value, bool),
        "null": value is None,
        "array": isinstance(value, list),
        "object": isinstance(value, dict),
    }[kind]


CANDIDATES = [1.5, 2.0, 7, "3", "text", True, False, None, [], {}, float("nan"), float("inf")]


def wrong_values(spec: dict) -> list[Any]:
    """Values of none of the key's types; for lists, also one with a member of a wrong type."""
    types = _types(spec)
    values = [value for value in CANDIDATES if not any(_is(value, kind) for kind in types)]
    items = _resolve(spec.get("items", {}))
    if "array" in types and items:
        values += [[value] for value in wrong_values(items)[:3]]
    if "string" in types and "enum" in spec:
        values.append("no-such-choice")
    return values


def _config(path: tuple[str, ...], value: Any) -> dict:
    """A config whose key `path` holds `value` (the experiment exists in any case)."""
    config: dict = {"experiments": {NAME: {}}}
    node = config
    for key in path[:-1]:
        node = node.setdefault(key, {})
    node[path[-1]] = value
    return config


KEYS = list(schema_keys())


def test_the_sweep_covers_every_section_and_leaf() -> None:
    dotted = {".".join(path) for path, _ in KEYS}
    assert {"experiments", "resources.train.threads", f"experiments.{NAME}.prune.phases"} <= dotted
    assert f"experiments.{NAME}.soup.values" in dotted and len(dotted) > 80
    assert all(_types(spec) for _, spec in KEYS), "every key declares its type"


@pytest.mark.parametrize(("path", "spec"), KEYS, ids=[".".join(path) for path, _ in KEYS])
def test_every_schema_key_rejects_every_wrong_type(path: tuple[str, ...], spec: dict) -> None:
    key = ".".join(path)
    for value in wrong_values(spec):
        problems = config_problems(_config(path, value), SCHEMA_PATH)  # raises nothing
        assert any(p.startswith(key) for p in problems), (key, value, problems)


@pytest.mark.parametrize(
    ("config", "named"),
    [  # issue 14, point 2: the cross-key checks once crashed on these
        ({"experiments": {"x": {"data": None}}}, "experiments.x.data: None is not of type 'object'"),
        ({"experiments": {"x": {"data": "fashion_mnist"}}}, "experiments.x.data: 'fashion_mnist' is not"),
        ({"experiments": ["a", "b"]}, "experiments: ['a', 'b'] is not of type 'object'"),
        ({"experiments": "smoke"}, "experiments: 'smoke' is not of type 'object'"),
        ({"experiments": None}, "experiments: None is not of type 'object'"),
        ({"experiments": {"x": {"soup": {"subset_sizes": 2}}}}, "experiments.x.soup.subset_sizes: 2 is not"),
        ({"experiments": {12345: {}}}, "experiments: the name 12345 must be a string"),
        ({"experiments": {"x": {"soup": {"vary": "lr", "values": "abc"}}}}, "experiments.x.soup.values:"),
        # point 3: values the schema let through that crashed later
        (
            {"experiments": {"x": {"prune": {"phases": 2.0}}}},
            "experiments.x.prune.phases: 2.0 is not of type",
        ),
        ({"experiments": {"x": {"soup": {"ingredients": 3.0}}}}, "experiments.x.soup.ingredients: 3.0"),
        ({"experiments": {"x": {"seeds": [0, 1.0]}}}, "experiments.x.seeds[1]: 1.0 is not of type 'integer'"),
        (
            {"experiments": {"x": {"soup": {"methods": []}}}},
            "experiments.x.soup.methods: [] should be non-empty",
        ),
        ({"experiments": {"x": {"retrain": {"epochs": 1.0}}}}, "experiments.x.retrain.epochs: 1.0 is not"),
        ({"experiments": {"x": {"prune": {"sparsity": float("nan")}}}}, "experiments.x.prune.sparsity: nan"),
        ({"experiments": {"x": {"data": {"split_seed": 2**70}}}}, "experiments.x.data.split_seed: "),
        # point 4: splits too small for what the experiment reads
        (
            {"experiments": {"x": {"data": {"validation_fraction": 0.999999}}}},
            "experiments.x.data.validation_fraction: 0.999999 leaves 0 of 60000 training images",
        ),
        (
            {"experiments": {"x": {"data": {"validation_fraction": 1e-6}}}},
            "experiments.x.data.validation_fraction: 1e-06 of 60000 training images leaves no validation",
        ),
        (
            {"experiments": {"x": {"data": {"train_subset": 10}, "pretrain": {"batch_size": 64}}}},
            "experiments.x.data.train_subset: 10 training images, fewer than one batch",
        ),
        # point 10: the smaller ones
        (
            {"experiments": {"x": {"prune": {"phases": 1}, "baselines": {"lottery_pools": "last"}}}},
            "experiments.x.baselines.lottery_pools: 'last' needs prune.phases >= 2",
        ),
        ({"experiments": {"x": {"data": {"root": ""}}}}, "experiments.x.data.root: '' should be non-empty"),
        (
            {"experiments": {"x": {"model": {"name": "wrn", "depth": 27}}}},
            "experiments.x.model.depth: 27 is not",
        ),
        ({"experiments": {"x": {"prune": {"phases": 100000}}}}, "experiments.x.prune.phases: 100000 phases"),
        (
            {"experiments": {"x": {"seeds": list(range(2000))}}},
            f"more than {MAX_RETRAINS}",
        ),
    ],
)
def test_reproductions_of_issue_14_are_named(config: dict, named: str) -> None:
    problems = config_problems(config, SCHEMA_PATH)
    assert any(named in problem for problem in problems), problems


def test_default_lottery_pools_with_one_phase_is_no_error() -> None:
    """Only Lottery Pools asked for is refused with one phase; the default just has no row."""
    assert config_problems({"experiments": {"x": {"prune": {"phases": 1}}}}, SCHEMA_PATH) == []


def test_home_directory_is_expanded_in_roots(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from sparse_soups.config import Settings

    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / "c10").mkdir()
    config = {"experiments": {"x": {"data": {"root": "~/c10", "dataset": "cifar10"}}}}
    assert config_problems(config, SCHEMA_PATH) == []
    assert Settings.from_dict(config["experiments"]["x"]).data.root == str(tmp_path / "c10")


# --- what a user sees: real `snakemake -n` -------------------------------------------


def _snakemake(directory: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["snakemake", "-n", "--snakefile", str(REPO / "Snakefile"), "-d", str(directory), *args],
        capture_output=True, text=True, check=False, timeout=300,
    )  # fmt: skip


@pytest.fixture()
def computed(tmp_path: Path) -> Path:
    """A results file from an earlier run, which no rejected config may touch."""
    path = tmp_path / "results" / "old" / "seed0" / "dense" / "metrics.json"
    path.parent.mkdir(parents=True)
    path.write_text('{"test_accuracy": 0.9}\n')
    return path


def test_snakemake_names_every_hostile_key_of_a_file_at_once(tmp_path: Path, computed: Path) -> None:
    text = """\
experiments:
  12345: {}
  a:
    prune: {phases: 2.0}
    prune: {phases: 3}
  b:
    data: fashion_mnist
  c:
    soup: {subset_sizes: 2, methods: []}
    seeds: [0, 1.0]
"""
    (tmp_path / "hostile.yaml").write_text(text)
    before = computed.read_bytes()
    result = _snakemake(tmp_path, "--configfile", str(tmp_path / "hostile.yaml"))
    log = result.stdout + result.stderr
    assert result.returncode == 1
    for named in [
        "hostile.yaml: line 5: duplicate key 'prune'",
        "experiments: the name 12345 must be a string",
        "experiments.b.data: 'fashion_mnist' is not of type 'object'",
        "experiments.c.soup.subset_sizes: 2 is not of type 'array'",
        "experiments.c.soup.methods: [] should be non-empty",
        "experiments.c.seeds[1]: 1.0 is not of type 'integer'",
        "--configfile config/config.yaml mine.yaml",  # how to override a value
    ]:
        assert named in log, named
    assert "Traceback" not in log
    assert computed.read_bytes() == before
    assert sorted(p.name for p in (tmp_path / "results").iterdir()) == ["old"]


def test_snakemake_rejects_a_null_experiments_override(tmp_path: Path, computed: Path) -> None:
    result = _snakemake(
        tmp_path, "--configfile", str(REPO / "config" / "smoke.yaml"), "--config", "experiments=null"
    )
    log = result.stdout + result.stderr
    assert result.returncode == 1
    assert "experiments: None is not of type 'object'" in log and "Traceback" not in log
    assert computed.exists()


def test_nested_config_override_keeps_its_type(tmp_path: Path) -> None:
    """`--config` passes nested values as strings; the workflow reads them as YAML."""
    smoke = str(REPO / "config" / "smoke.yaml")
    result = _snakemake(
        tmp_path, "--configfile", smoke, "--config", "experiments={smoke: {prune: {phases: 3}}}"
    )
    log = result.stdout + result.stderr
    assert result.returncode == 0, log[-2000:]
    assert "results/smoke/seed0/uniform/phase3/soup/model.pt" in log  # a third phase is planned
    assert "results/smoke_uniform/seed0/uniform/phase2" not in log  # the other experiment untouched
