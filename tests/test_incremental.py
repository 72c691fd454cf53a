"""A study grows by its new jobs only: on a finished smoke run, `snakemake -n` after each
kind of change plans exactly the jobs whose settings or inputs changed (stages.py)."""

from __future__ import annotations

import copy
import json
import re
import subprocess
from pathlib import Path

import pytest
import yaml

from sparse_soups.config import LoggingSettings, Settings
from sparse_soups.stages import STAGES, read_settings, stage_settings, with_logging
from tests.conftest import REPO, worker_copy

TRAINING = {"prepare_data", "pretrain", "retrain", "rewind_point", "imp_rewind", "gmp", "gmp_sms_ingredient"}
# Cheap records re-written on any change: the experiment's full settings (and provenance),
# and a stage's settings file where that stage's keys changed or it is newly needed.
REPORTS = {"report", "report_ood", "report_ablation_m", "report_subset_soups", "report_ablation_vary", "all",
           "report_training", "report_training_gmp", "report_merging", "settings",
           "stage_settings"}  # fmt: skip


@pytest.fixture(scope="module")
def finished(smoke_run: tuple[Path, str], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A private copy of the finished smoke run (mtimes and Snakemake's records kept)."""
    return worker_copy(tmp_path_factory, smoke_run[0], "incremental")


def _plan(directory: Path, change) -> list[tuple[str, str]]:
    """(rule, outputs) of every job `snakemake -n` plans after `change(config)`."""
    config = yaml.safe_load((directory / "smoke.yaml").read_text())
    change(config)
    path = directory / "changed.yaml"
    path.write_text(yaml.safe_dump(config))
    run = subprocess.run(
        ["snakemake", "-n", "--snakefile", str(REPO / "Snakefile"), "-d", str(directory),
         "--configfile", str(path)],
        capture_output=True, text=True,
    )  # fmt: skip
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    jobs = re.findall(r"^(?:local)?rule (\w+):\n(?:    .*\n)*?    output: (.*)$", run.stdout, re.M)
    assert jobs or "Nothing to be done" in run.stdout
    return jobs


def test_the_finished_run_plans_nothing(finished: Path) -> None:
    assert _plan(finished, lambda config: None) == []


def test_adding_a_seed_plans_only_that_seeds_jobs_and_the_report(finished: Path) -> None:
    jobs = _plan(finished, lambda config: config["experiments"]["smoke"]["seeds"].append(2))
    assert {rule for rule, _ in jobs} >= {"pretrain", "retrain", "soup", "evaluate"}
    assert all("/seed2/" in outputs or rule in REPORTS for rule, outputs in jobs)


def test_adding_an_experiment_plans_only_its_own_jobs(finished: Path) -> None:
    def add(config: dict) -> None:
        config["experiments"]["extra"] = copy.deepcopy(config["experiments"]["smoke_uniform"])

    jobs = _plan(finished, add)
    assert {rule for rule, _ in jobs} >= {"prepare_data", "pretrain", "gmp", "report"}
    assert all("results/extra/" in outputs for rule, outputs in jobs if rule != "all")


def test_switching_a_baseline_on_plans_only_its_jobs_and_the_report(finished: Path) -> None:
    jobs = _plan(finished, lambda config: config["experiments"]["smoke"]["baselines"].update(gmp="last"))
    assert {rule for rule, _ in jobs} - REPORTS == {"gmp", "evaluate"}
    assert all("/gmp/phase2/" in outputs for rule, outputs in jobs if rule not in REPORTS)


def test_adding_a_merging_operator_plans_only_its_chain_and_the_report(finished: Path) -> None:
    def add(config: dict) -> None:
        config["experiments"]["smoke"]["soup"]["methods"] = ["uniform", "greedy", "ties"]

    jobs = _plan(finished, add)
    assert {rule for rule, _ in jobs} - REPORTS == {"retrain", "soup", "evaluate"}
    assert all("/ties/" in outputs for rule, outputs in jobs if rule not in REPORTS)
    assert ("stage_settings", "results/smoke/settings/merge.json (update)") in jobs
    assert "report_merging" in {rule for rule, _ in jobs}


def test_operator_settings_rerun_nothing_that_does_not_read_them(finished: Path) -> None:
    """`merging` is read by the operators' soups and SWAMP's retrains only: with none of
    them in the study, changing it re-runs only the full settings record."""
    change = {"ties_density": [0.3], "swa_fraction": 0.25}
    jobs = _plan(finished, lambda config: config["experiments"]["smoke"].update(merging=change))
    assert {rule for rule, _ in jobs} <= {"all", "settings"}


def test_changing_the_ood_subset_reruns_evaluations_never_training(finished: Path) -> None:
    jobs = _plan(finished, lambda config: config["experiments"]["smoke"]["ood"].update(test_subset=50))
    rules = {rule for rule, _ in jobs}
    assert {"corrupt_test_set", "evaluate", "ensemble"} <= rules
    assert rules <= {"corrupt_test_set", "evaluate", "ensemble"} | REPORTS
    assert all("results/smoke/" in outputs for rule, outputs in jobs if rule != "all")


def test_changing_retrain_epochs_reruns_retrains_and_what_follows_never_pretraining(finished: Path) -> None:
    jobs = _plan(finished, lambda config: config["experiments"]["smoke"]["retrain"].update(epochs=2))
    rules = {rule for rule, _ in jobs}
    assert {"retrain", "soup", "evaluate", "lottery_pools"} <= rules
    assert not rules & {"prepare_data", "pretrain", "corrupt_test_set"}
    assert all("results/smoke/" in outputs for rule, outputs in jobs if rule != "all")


def test_changing_how_training_is_logged_retrains_nothing(finished: Path) -> None:
    """The logging stage's file is ancient to the training jobs: new jobs record as it
    says (TensorBoard on, validation more often), finished ones stay."""
    change = {"validate_every_steps": 2, "validation_images": 10, "tensorboard": True}
    jobs = _plan(finished, lambda config: config["experiments"]["smoke"].update(logging=change))
    assert [(rule, outputs) for rule, outputs in jobs if rule not in {"all", "settings"}] == [
        ("stage_settings", "results/smoke/settings/logging.json (update)")
    ]  # and the experiment's full settings record


def test_a_training_job_reads_logging_from_its_own_file(tmp_path: Path) -> None:
    settings = Settings.from_dict({"name": "x", "logging": {"validate_every_steps": 5}})
    for stage in ("retrain", "logging"):
        (tmp_path / f"{stage}.json").write_text(json.dumps(stage_settings(settings, stage)))
    retrain = read_settings(tmp_path / "retrain.json")
    with pytest.raises(ValueError, match=r"stage 'retrain' does not read 'logging'"):
        _ = retrain.logging
    assert with_logging(retrain, tmp_path / "logging.json").logging.validate_every_steps == 5
    assert with_logging(retrain, None).logging == LoggingSettings()  # no file: the defaults
    assert with_logging(retrain, None).retrain == settings.retrain


def test_a_step_cannot_read_outside_its_stage(tmp_path: Path) -> None:
    """Every stage file reads back with its keys and refuses the others by name."""
    settings = Settings.from_dict({"name": "x", "retrain": {"epochs": 3}, "soup": {"ingredients": 5}})
    for stage in STAGES:
        path = tmp_path / f"{stage}.json"
        path.write_text(json.dumps(stage_settings(settings, stage)))
        read = read_settings(path)
        assert read.name == "x"
    gmp = read_settings(tmp_path / "gmp.json")
    assert (
        gmp.retrain.epochs == 3
        and gmp.soup.bn_recalibration_fraction == settings.soup.bn_recalibration_fraction
    )
    with pytest.raises(ValueError, match=r"stage 'gmp' does not read 'retrain\.schedule'"):
        _ = gmp.retrain.schedule
    with pytest.raises(ValueError, match=r"stage 'soup' does not read 'pretrain'"):
        _ = read_settings(tmp_path / "soup.json").pretrain
    assert read_settings(tmp_path / "retrain.json").soup.ingredients == 5
