"""envs/*.yaml (conda) lists the same packages as pyproject.toml, with compatible versions."""

from __future__ import annotations

import re
import tomllib

import pytest
import yaml

from tests.conftest import REPO

# conda-forge names of PyPI packages whose names differ.
CONDA_NAME = {"torch": "pytorch", "matplotlib": "matplotlib-base"}
REQUIREMENT = re.compile(r"^\s*([A-Za-z0-9_.\-]+)\s*(.*?)\s*$")


def _parse(requirement: str) -> tuple[str, str]:
    name, spec = REQUIREMENT.match(requirement).groups()
    return name.lower().replace("_", "-"), spec.replace(" ", "")


def _pyproject() -> tuple[dict[str, str], str]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    deps = dict(_parse(d) for d in project["dependencies"])
    return {CONDA_NAME.get(name, name): spec for name, spec in deps.items()}, project["requires-python"]


ENV_FILES = sorted((REPO / "envs").glob("*.yaml"))


def test_there_is_an_environment_file() -> None:
    assert ENV_FILES


@pytest.mark.parametrize("path", ENV_FILES, ids=lambda p: p.name)
def test_environment_lists_the_dependencies_of_pyproject(path) -> None:
    expected, python = _pyproject()
    listed = dict(_parse(d) for d in yaml.safe_load(path.read_text())["dependencies"] if isinstance(d, str))
    assert listed.pop("python") == python
    assert listed == expected, f"{path.name} and pyproject.toml disagree"
