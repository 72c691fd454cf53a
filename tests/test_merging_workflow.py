"""Every merging operator as an SMS chain through Snakemake (config/smoke_merging.yaml):
each soup keeps its ingredients' mask and the phase's sparsity, each chain's next phase
starts from its own soup, each operator records what it chose, and the report has its rows."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml

from sparse_soups import layout
from sparse_soups.kernels.checkpoints import Checkpoint
from sparse_soups.kernels.files import sha256
from sparse_soups.kernels.pruning import masks_equal
from sparse_soups.registry import SOUP_METHODS
from tests.conftest import REPO, make_idx_dataset, run_smoke_config

CONFIG = yaml.safe_load((REPO / "config" / "smoke_merging.yaml").read_text())["experiments"]["smoke_merging"]
METHODS = CONFIG["soup"]["methods"]
PHASES = (1, 2)


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("merging")
    data = make_idx_dataset(directory / "idx", n_train=800, n_test=300)
    run_smoke_config("smoke_merging", data, directory)
    return directory / "results" / "smoke_merging" / "seed0"


def _metrics(run: Path, model_dir: str) -> dict:
    return json.loads((run / model_dir / layout.METRICS_FILE).read_text())


def test_the_smoke_config_runs_every_registered_operator_but_greedy() -> None:
    """greedy runs in config/smoke.yaml; every other soup method runs here."""
    assert set(METHODS) == set(SOUP_METHODS.names()) - {"greedy"}


def test_every_soup_keeps_its_ingredients_mask_and_the_phase_sparsity(run: Path) -> None:
    for method in METHODS:
        for phase in PHASES:
            soup = Checkpoint.load(run / layout.soup_dir(method, phase) / layout.MODEL_FILE)
            for path in soup.meta["ingredients"]:  # relative to the workflow's directory
                ingredient = Checkpoint.load(run.parents[2] / path)
                assert masks_equal(ingredient.masks, soup.masks), (method, phase, path)
            for name, mask in soup.masks.items():
                assert torch.all(soup.state_dict[name][~mask] == 0), (method, phase, name)
            metrics = _metrics(run, layout.soup_dir(method, phase))
            assert metrics["sparsity"] == pytest.approx(metrics["target_sparsity"], abs=2e-3), (method, phase)


def test_each_chain_starts_its_next_phase_from_its_own_soup(run: Path) -> None:
    for method in METHODS:
        soup = run / layout.soup_dir(method, 1) / layout.MODEL_FILE
        for index in range(CONFIG["soup"]["ingredients"]):
            ingredient = Checkpoint.load(run / layout.ingredient_dir(method, 2, index) / layout.MODEL_FILE)
            assert ingredient.meta["parent_sha256"] == sha256(soup), (method, index)
        if layout.merges_updates(method):  # merged relative to the model the phase started from
            assert _metrics(run, layout.soup_dir(method, 2))["base_sha256"] == sha256(soup)
            dense = run / layout.DENSE / layout.MODEL_FILE
            assert _metrics(run, layout.soup_dir(method, 1))["base_sha256"] == sha256(dense)


def test_each_operator_records_what_it_chose(run: Path) -> None:
    merging = CONFIG["merging"]
    for phase in PHASES:
        ties = _metrics(run, layout.soup_dir("ties", phase))
        assert ties["chosen"]["density"] in merging["ties_density"]
        assert [point["density"] for point in ties["grid"]] == merging["ties_density"]
        assert ties["validation_accuracy"] == pytest.approx(
            max(point["validation_score"] for point in ties["grid"]), abs=1e-9
        )  # the kept grid point is the soup that was saved and evaluated
        dare = _metrics(run, layout.soup_dir("dare", phase))
        assert dare["chosen"]["drop_rate"] in merging["dare_drop_rate"]
        stock = _metrics(run, layout.soup_dir("model_stock", phase))
        assert 0 <= stock["ratio_min"] <= stock["ratio_mean"] <= stock["ratio_max"] <= 1
        assert _metrics(run, layout.soup_dir("fisher", phase))["fisher_examples"] > 0
        learned = _metrics(run, layout.soup_dir("learned", phase))
        assert sum(learned["coefficients"]) == pytest.approx(1, abs=1e-5)
        with open(run / layout.soup_dir("learned", phase) / layout.HISTORY_FILE) as file:
            history = list(csv.DictReader(file))
        assert [int(row["epoch"]) for row in history] == list(range(1, merging["learned_epochs"] + 1))


def test_swamp_particles_average_their_late_weights(run: Path) -> None:
    """SWAMP's retrains are its own from phase 1 on (they differ from the plain retrains),
    and each one's checkpoint is the mean of its weights over the last swa_fraction of steps."""
    for index in range(CONFIG["soup"]["ingredients"]):
        particle = _metrics(run, layout.ingredient_dir("swamp", 1, index))
        plain = _metrics(run, layout.ingredient_dir("uniform", 1, index))  # the shared dense/phase1
        assert particle["model_dir"] == f"swamp/phase1/ingredient{index}"
        assert plain["model_dir"] == f"dense/phase1/ingredient{index}"
        assert particle["recipe"]["swa_fraction"] == CONFIG["merging"]["swa_fraction"]
        assert 0 < particle["swa_from_step"] < particle["train_steps"]
        assert particle["bn_recalibrated"] and particle["checkpoint_sha256"] != plain["checkpoint_sha256"]


def test_the_report_has_rows_and_claims_for_every_operator(run: Path) -> None:
    report = run.parent / "report"
    labels = [SOUP_METHODS.label(method) for method in METHODS]
    table = pd.read_csv(report / "table.csv")
    assert set(labels) <= set(table.method)
    claims = pd.read_csv(report / "claims.csv")
    for label in labels:
        if label != "SMS uniform":
            assert f"{label} vs SMS uniform" in set(claims.claim), label
        assert f"{label} vs IMP" in set(claims.claim), label
    merging = pd.read_csv(report / "merging.csv")
    assert set(zip(merging.method, merging.phase, strict=True)) == {(lb, p) for lb in labels for p in PHASES}
    assert (merging.merge_seconds > 0).all()
