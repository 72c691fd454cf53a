from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml

from sparse_soups.config import Settings, SettingsError
from tests.conftest import REPO

SCHEMA = REPO / "workflow" / "schemas" / "config.schema.yaml"


def _schema_defaults(schema: dict) -> dict:
    """The defaults the schema fills into an empty experiment."""
    defaults = {}
    for key, spec in schema["properties"].items():
        if spec.get("type") == "object":
            defaults[key] = _schema_defaults(spec)
        else:
            defaults[key] = spec["default"]
    return defaults


def _lists(value):
    if isinstance(value, dict):
        return {k: _lists(v) for k, v in value.items()}
    return list(value) if isinstance(value, tuple) else value


def test_schema_defaults_match_dataclass_defaults() -> None:
    schema = yaml.safe_load(SCHEMA.read_text())
    from_schema = _schema_defaults(schema["$defs"]["experiment"])
    from_dataclasses = _lists(Settings().to_dict())
    from_dataclasses.pop("name")
    assert from_schema == from_dataclasses


def test_unknown_key_is_named_with_its_path() -> None:
    with pytest.raises(SettingsError, match=r"'prune\.sparsty'"):
        Settings.from_dict({"prune": {"sparsty": 0.5}})


def test_settings_round_trip_through_json(tmp_path: Path) -> None:
    settings = Settings.from_dict({"name": "x", "soup": {"methods": ["greedy"]}, "seeds": [3, 4]})
    path = tmp_path / "settings.json"
    import json

    path.write_text(json.dumps(settings.to_dict()))
    assert Settings.from_json(path) == settings


def _dry_run(config: dict, tmp_path: Path) -> subprocess.CompletedProcess:
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return subprocess.run(
        ["snakemake", "-n", "--snakefile", str(REPO / "Snakefile"), "-d", str(tmp_path),
         "--configfile", str(path)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("experiment", "named"),
    [
        ({"prune": {"sparsity": 1.5}}, "['prune']['sparsity']"),
        ({"prune": {"phases": 0}}, "['prune']['phases']"),
        ({"soup": {"ingredients": "four"}}, "['soup']['ingredients']"),
        ({"pretrain": {"schedule": "exponential"}}, "['pretrain']['schedule']"),
        ({"retrian": {"epochs": 2}}, "'retrian' was unexpected"),
    ],
)
def test_bad_config_is_rejected_before_any_job_naming_the_key(
    experiment: dict, named: str, tmp_path: Path
) -> None:
    result = _dry_run({"experiments": {"bad": experiment}}, tmp_path)
    assert result.returncode != 0
    assert named in result.stderr + result.stdout
    assert not (tmp_path / "results").exists()


def test_every_config_dry_runs_and_fills_defaults(tmp_path: Path) -> None:
    for config in sorted((REPO / "config").glob("*.yaml")):
        result = _dry_run(yaml.safe_load(config.read_text()), tmp_path)
        assert result.returncode == 0, result.stderr
        assert "rule report" in result.stdout + result.stderr
