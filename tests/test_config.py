from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml

from sparse_soups.config import Settings, SettingsError
from sparse_soups.validation import config_problems
from tests.conftest import FASHION_MNIST_CONFIGS, REPO

SCHEMA = REPO / "workflow" / "schemas" / "config.schema.yaml"


def _keys(schema: dict) -> dict:
    """The experiment's keys as the schema declares them (nested sections as dicts)."""
    return {
        key: _keys(spec) if spec.get("type") == "object" and "properties" in spec else None
        for key, spec in schema["properties"].items()
    }


def _defaults_in(schema: object) -> list[object]:
    if isinstance(schema, dict):
        return ["default" in schema] + [d for v in schema.values() for d in _defaults_in(v)]
    return [d for v in schema for d in _defaults_in(v)] if isinstance(schema, list) else []


def test_defaults_are_declared_once_in_the_dataclasses() -> None:
    """The schema names every settings key and declares no default for any of them: a
    default lives in its dataclass only, and validation fills it in from there."""
    schema = yaml.safe_load(SCHEMA.read_text())
    experiment = schema["$defs"]["experiment"]
    assert not any(_defaults_in(experiment))
    defaults = Settings().to_dict()
    defaults.pop("name")
    assert _keys(experiment) == {
        k: ({kk: None for kk in v} if isinstance(v, dict) else None) for k, v in defaults.items()
    }


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


def test_a_run_stops_at_missing_data_before_its_first_job(tmp_path: Path) -> None:
    config = yaml.safe_load((REPO / "config" / "smoke_wmt16.yaml").read_text())
    config["experiments"]["smoke_wmt16"]["data"]["root"] = str(tmp_path / "nowhere")
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    run = subprocess.run(
        ["snakemake", "--cores", "1", "--snakefile", str(REPO / "Snakefile"), "-d", str(tmp_path),
         "--configfile", str(path)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert run.returncode != 0
    assert (
        f"experiments.smoke_wmt16.data.root: directory '{tmp_path / 'nowhere'}' does not exist" in run.stderr
    )
    assert not (tmp_path / "results").exists()  # not even the settings files were written


BAD_EXPERIMENTS = [
    ({"prune": {"sparsity": 1.0}}, "experiments.bad.prune.sparsity: 1.0 is greater than or equal"),
    ({"prune": {"sparsity": -0.1}}, "experiments.bad.prune.sparsity: -0.1 is less than the minimum"),
    ({"prune": {"phases": 0}}, "experiments.bad.prune.phases: 0 is less than the minimum of 1"),
    ({"prune": {"phases": 2.5}}, "experiments.bad.prune.phases: 2.5 is not of type 'integer'"),
    ({"soup": {"ingredients": 0}}, "experiments.bad.soup.ingredients: 0 is less than the minimum"),
    ({"soup": {"ingredients": "four"}}, "experiments.bad.soup.ingredients: 'four' is not of type"),
    ({"soup": {"methods": ["soupy"]}}, "experiments.bad.soup.methods[0]: 'soupy' is not one of"),
    (
        {"soup": {"methods": ["greedy", "greedy"]}},
        "experiments.bad.soup.methods: ['greedy', 'greedy'] has non-unique",
    ),
    (
        {"soup": {"bn_recalibration_fraction": 0}},
        "experiments.bad.soup.bn_recalibration_fraction: 0 is less than",
    ),
    ({"data": {"dataset": "imagenet22k"}}, "experiments.bad.data.dataset: 'imagenet22k' is not one of"),
    ({"data": {"validation_fraction": 1.0}}, "experiments.bad.data.validation_fraction: 1.0 is greater"),
    ({"data": {"train_subset": 0}}, "experiments.bad.data.train_subset: 0 is less than the minimum"),
    (
        {"data": {"root": "/no/such/directory"}},
        "experiments.bad.data.root: directory '/no/such/directory' does not exist",
    ),
    (
        {"data": {"horizontal_flip": "yes"}},
        "experiments.bad.data.horizontal_flip: 'yes' is not of type 'boolean'",
    ),
    ({"model": {"name": "resnet9000"}}, "experiments.bad.model.name: 'resnet9000' is not one of"),
    ({"model": {"width": 0}}, "experiments.bad.model.width: 0 is less than the minimum"),
    (
        {"pretrain": {"schedule": "exponential"}},
        "experiments.bad.pretrain.schedule: 'exponential' is not one of",
    ),
    ({"pretrain": {"lr": 0}}, "experiments.bad.pretrain.lr: 0 is less than or equal to the minimum"),
    ({"pretrain": {"momentum": 1.5}}, "experiments.bad.pretrain.momentum: 1.5 is greater than the maximum"),
    ({"pretrain": {"epochs": "ten"}}, "experiments.bad.pretrain.epochs: 'ten' is not of type 'integer'"),
    (
        {"pretrain": {"step_milestones": [0.5, 1.5]}},
        "experiments.bad.pretrain.step_milestones[1]: 1.5 is greater",
    ),
    ({"retrain": {"schedule": "sgdr"}}, "experiments.bad.retrain.schedule: 'sgdr' is not one of"),
    ({"retrain": {"epochs": -1}}, "experiments.bad.retrain.epochs: -1 is less than the minimum"),
    (
        {"retrian": {"epochs": 2}},
        "experiments.bad: Additional properties are not allowed ('retrian' was unexpected)",
    ),
    ({"seeds": []}, "experiments.bad.seeds: [] should be non-empty"),
    ({"seeds": [0, 0]}, "experiments.bad.seeds: [0, 0] has non-unique elements"),
    ({"eval_batch_size": 0}, "experiments.bad.eval_batch_size: 0 is less than the minimum"),
    # the merging operators' settings (issue: a bad operator setting names its key)
    (
        {"merging": {"dare_drop_rate": [0.5, 1.0]}},
        "experiments.bad.merging.dare_drop_rate[1]: 1.0 is greater than or equal to the maximum of 1",
    ),
    (
        {"merging": {"ties_density": [-0.2]}},
        "experiments.bad.merging.ties_density[0]: -0.2 is less than or equal to the minimum of 0",
    ),
    ({"soup": {"methods": ["uniform", "tie"]}}, "experiments.bad.soup.methods[1]: 'tie' is not one of"),
    ({"merging": {"swa_fraction": 1.5}}, "experiments.bad.merging.swa_fraction: 1.5 is greater than"),
]


@pytest.mark.parametrize(("experiment", "message"), BAD_EXPERIMENTS)
def test_each_bad_experiment_is_named_with_key_value_and_expectation(experiment: dict, message: str) -> None:
    problems = config_problems({"experiments": {"bad": experiment}}, SCHEMA)
    assert len(problems) == 1, problems
    assert problems[0].startswith(message), problems[0]


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({}, "'experiments' is a required property"),
        ({"experiments": {}}, "experiments: {} should be non-empty"),
        ({"experiments": {"bad name!": {}}}, "experiments: 'bad name!' does not match"),
        (
            {"experiments": {"x": {}}, "resources": {"train": {"threads": 0}}},
            "resources.train.threads: 0 is less",
        ),
        ({"experiments": {"x": {}}, "resouces": {}}, "Additional properties are not allowed ('resouces'"),
    ],
)
def test_bad_top_level_config_is_named(config: dict, message: str) -> None:
    problems = config_problems(config, SCHEMA)
    assert any(message in problem for problem in problems), problems


def test_all_problems_are_reported_at_once() -> None:
    config = {"experiments": {"a": {"prune": {"phases": 0}}, "b": {"soup": {"ingredients": 0}}}}
    assert len(config_problems(config, SCHEMA)) == 2


@pytest.mark.parametrize(
    ("experiment", "named"),
    [
        ({"prune": {"sparsity": 1.5}}, "experiments.bad.prune.sparsity: 1.5"),
        ({"retrian": {"epochs": 2}}, "'retrian' was unexpected"),
        ({"model": {"name": "seg_cnn"}}, "experiments.bad.model.name: seg_cnn is a segmentation model"),
    ],
)
def test_snakemake_rejects_bad_config_before_any_job(experiment: dict, named: str, tmp_path: Path) -> None:
    result = _dry_run({"experiments": {"bad": experiment}}, tmp_path)
    assert result.returncode != 0
    output = result.stdout + result.stderr
    assert "Invalid config" in output and named in output
    assert not (tmp_path / "results").exists()


# Configs whose data is never downloaded: the directory named in them is the user's to supply,
# so a dry run plans them with a warning.
NOT_DOWNLOADED = (
    "celeba_resnet18.yaml", "smoke_celeba.yaml", "cityscapes_deeplabv3.yaml", "smoke_cityscapes.yaml",
    "wmt16_transformer.yaml", "smoke_wmt16.yaml",
)  # fmt: skip


def test_every_config_dry_runs_and_fills_defaults(tmp_path: Path) -> None:
    """The Fashion-MNIST configs as shipped; of the others (each dry-run with its data in
    tests/test_paper_configs.py), ImageNet's and one whose data is never downloaded."""
    for config in sorted((REPO / "config").glob("*.yaml")):
        if config.name not in (*FASHION_MNIST_CONFIGS, "imagenet_resnet50.yaml", NOT_DOWNLOADED[-1]):
            continue
        result = _dry_run(yaml.safe_load(config.read_text()), tmp_path)
        if config.name == "imagenet_resnet50.yaml":  # ImageNet is never downloaded: say so at once
            assert result.returncode != 0
            output = result.stdout + result.stderr
            assert "data.root: imagenet needs the directory holding train/ and val/" in output
            assert "ood.root: source 'files' needs the directory" in output
            continue  # with the directories given it dry-runs: tests/test_paper_configs.py
        if config.name in NOT_DOWNLOADED:  # planned; a run would stop at the data it names
            assert result.returncode == 0, result.stderr[-3000:]
            assert "Data not found (a run stops here" in result.stderr
            assert "data.root: directory" in result.stderr
        assert result.returncode == 0, result.stderr
        assert "rule report" in result.stdout + result.stderr
