"""The smoke config through real Snakemake, on data written in the real IDX format."""

from __future__ import annotations

import importlib.metadata
import json
import os
import signal
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

from sparse_soups import layout, plan
from sparse_soups.config import Settings
from sparse_soups.kernels.checkpoints import Checkpoint
from sparse_soups.kernels.files import sha256
from sparse_soups.kernels.history import read_history
from sparse_soups.kernels.pruning import target_density
from sparse_soups.reporting.parts import PARTS
from tests.conftest import REPO, metrics_files, smoke_snakemake, write_smoke_config


@pytest.fixture(scope="module")
def smoke_config() -> dict:
    return yaml.safe_load((REPO / "config" / "smoke.yaml").read_text())


def test_dry_run_lists_every_job_before_any_runs(smoke_run, smoke_config) -> None:
    _, dry_output = smoke_run
    expected_models = 0
    for name, experiment in smoke_config["experiments"].items():
        settings = Settings.from_dict({"name": name, **experiment})
        expected_models += len(plan.experiment_model_dirs(settings)) * len(settings.seeds)
    counts = dict(
        line.split()[:2] for line in dry_output.splitlines() if line.split()[:1] and line.split()[0] in
        {"evaluate", "retrain", "soup", "pretrain", "report", "total"}
    )  # fmt: skip
    assert int(counts["evaluate"]) == expected_models
    assert int(counts["pretrain"]) == 3  # one dense model per (experiment, seed)
    assert int(counts["report"]) == 2


def test_report_has_every_method_and_soups_have_their_phase_sparsity(smoke_run, smoke_config) -> None:
    directory, _ = smoke_run
    table = (directory / "results/smoke/report/table.md").read_text()
    for row in ["Dense", "IMP", "SMS uniform", "SMS greedy", "Best ingredient (SMS uniform)",
                "Mean ingredient (SMS greedy)"]:  # fmt: skip
        assert f"| {row} " in table
    assert "2 seed(s), mean ± std" in table
    assert "SMS greedy" not in (directory / "results/smoke_uniform/report/table.md").read_text()
    wide = pd.read_csv(directory / "results/smoke/report/table.csv")
    assert list(wide.method) == [
        "Dense", "IMP", "IMP (m x budget)", "Best ingredient (SMS uniform)",
        "Best ingredient by test (oracle) (SMS uniform)", "Mean ingredient (SMS uniform)", "SMS uniform",
        "Subset soup (first 2 of m, uniform chain)", "Best ingredient (SMS greedy)",
        "Best ingredient by test (oracle) (SMS greedy)", "Mean ingredient (SMS greedy)", "SMS greedy",
        "SMS uniform (m = 2)", "Soup at end (IMP, last phase)", "Lottery Pools (interp)",
        "Lottery Pools (avg)", "Prediction ensemble (not sparse)",
    ]  # fmt: skip
    assert wide.loc[wide.method == "Soup at end (IMP, last phase)", "phase1_test_accuracy"].isna().all()
    assert wide.loc[wide.method == "Soup at end (IMP, last phase)", "phase2_test_accuracy"].notna().all()
    assert (directory / "results/smoke/report/accuracy_vs_sparsity.png").stat().st_size > 10_000
    soups = 0
    for path in (directory / "results").rglob("soup/metrics.json"):
        metrics = json.loads(path.read_text())
        experiment = smoke_config["experiments"][metrics["experiment"]]["prune"]
        goal = 1 - target_density(experiment["sparsity"], experiment["phases"], metrics["phase"])
        total = 1 / min(v for v in metrics["layer_sparsity"].values() if v > 0)  # resolution bound
        assert abs(metrics["sparsity"] - goal) < 1e-3, path
        assert metrics["sparsity"] == pytest.approx(metrics["target_sparsity"], abs=1e-3)
        assert total > 0
        soups += 1
    # smoke: (uniform, greedy, uniform_k2, uniform_m2) x 2 phases x 2 seeds + soup_at_end x 2
    # seeds; smoke_uniform: the uniform soup of its one phase (soup-at-end would be the same)
    assert soups == 4 * 2 * 2 + 2 + 1
    # soup-at-end averages IMP with m - 1 other retrains, so it is not IMP itself
    for seed in (0, 1):
        run = directory / f"results/smoke/seed{seed}"
        soup_at_end = json.loads((run / "soup_at_end/phase2/soup/metrics.json").read_text())
        assert len(set(soup_at_end["ingredient_sha256"])) == 3


def test_every_evaluated_model_was_recalibrated_and_claims_are_tested(smoke_run) -> None:
    """The same BatchNorm treatment for every row, and the claims table of two seeds."""
    directory, _ = smoke_run
    records = [json.loads(p.read_text()) for p in (directory / "results").rglob("metrics.json")]
    assert records and all(r["bn_recalibrated"] is True for r in records)
    claims = pd.read_csv(directory / "results/smoke/report/claims.csv")
    assert {"SMS uniform vs IMP", "SMS greedy vs IMP (m x budget)"} <= set(claims.claim)
    assert (claims.seeds == 2).all() and claims.ci_low.notna().all()
    assert set(claims.verdict) <= {"better", "worse", "not distinguishable"}
    # smoke_uniform's ingredient 0 retrains with another schedule than IMP: IMP has its own phase 1
    run = directory / "results/smoke_uniform/seed0"
    imp = json.loads((run / "imp/phase1/ingredient0/metrics.json").read_text())
    assert imp["recipe"]["schedule"] == "allr" and imp["lineage"] == "imp"
    first = json.loads((run / "dense/phase1/ingredient0/metrics.json").read_text())
    assert first["recipe"]["schedule"] == "lrw"


def test_metrics_carry_checksums_and_runs_carry_provenance(smoke_run) -> None:
    directory, _ = smoke_run
    for path in (directory / "results").rglob("metrics.json"):
        record = json.loads(path.read_text())
        if record["kind"] == "ensemble":  # no model of its own: the checksums of its members
            members = [sha256(directory / member) for member in record["members"]]
            assert record["member_sha256"] == members and len(members) > 1, path
            assert 0 < record["inference_cost"] <= len(members)
            continue
        assert record["checkpoint_sha256"] == sha256(path.with_name("model.pt")), path
    for experiment in ("smoke", "smoke_uniform"):
        assert (directory / f"results/{experiment}/ood/manifest.json").is_file()
        provenance = json.loads((directory / f"results/{experiment}/provenance.json").read_text())
        settings = json.loads((directory / f"results/{experiment}/settings.json").read_text())
        assert provenance["settings"] == settings
        assert provenance["seeds"] == settings["seeds"]
        assert provenance["packages"]["torch"] == importlib.metadata.version("torch")
        assert len(provenance["git"]["commit"]) == 40


def test_gmp_gmp_sms_and_imp_rewind_rows_were_evaluated(smoke_run) -> None:
    directory, _ = smoke_run
    run = directory / "results/smoke_uniform/seed0"
    expected = {"gmp/phase1": ("gmp", None), "gmp_sms/phase1": ("soup", "gmp_sms"),
                "imp_rewind/phase1/ingredient0": ("ingredient", None)}  # fmt: skip
    for model_dir, (kind, method) in expected.items():
        metrics = json.loads((run / model_dir / "metrics.json").read_text())
        assert (metrics["kind"], metrics.get("method")) == (kind, method), model_dir
        assert metrics["sparsity"] == pytest.approx(metrics["target_sparsity"], abs=1e-2), model_dir
    assert not list(run.glob("gmp_sms/phase1/round*/**/metrics.json"))  # rounds are not rows


def test_second_run_does_nothing(smoke_run) -> None:
    directory, _ = smoke_run
    again = smoke_snakemake(directory, "-n")
    assert again.returncode == 0
    assert "Nothing to be done" in again.stdout + again.stderr


def test_changed_metrics_rerun_only_that_experiments_report_jobs(smoke_run) -> None:
    directory, _ = smoke_run
    path = directory / "results/smoke/seed1/greedy/phase2/soup/metrics.json"
    text, stat = path.read_text(), path.stat()
    # New results for one method. Snakemake compares checksums too: a bare touch reruns nothing.
    path.write_text(json.dumps({**json.loads(text), "test_accuracy": 0.5}))
    try:
        dry = smoke_snakemake(directory, "-n")
    finally:
        path.write_text(text)
        os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert dry.returncode == 0, dry.stderr
    log = dry.stdout + dry.stderr
    stats = log[log.index("Job stats:") :].split("\n\n")[0].splitlines()[3:]
    counts = {line.split()[0]: int(line.split()[1]) for line in stats}
    total = counts.pop("total")
    assert counts == {
        "report": 1,
        "report_ood": 1,
        "report_ablation_m": 1,
        "report_subset_soups": 1,
        "all": 1,
    }
    assert total == 5  # four report parts and all
    outputs = [line for line in log.splitlines() if line.strip().startswith("output:")]
    assert outputs and all("results/smoke/report/" in line for line in outputs)
    assert smoke_snakemake(directory, "-n").stdout.count("Nothing to be done") == 1  # restored


def test_html_report_holds_every_table_and_figure_with_its_caption(smoke_run) -> None:
    directory, _ = smoke_run
    result = smoke_snakemake(directory, "--report", "report.html")
    assert result.returncode == 0, result.stderr[-3000:]
    html = (directory / "report.html").read_text()
    items = {
        "smoke": ["main", "ood", "ablation_m", "training"],
        "smoke_uniform": ["main", "ood", "ablation_vary", "training", "training_gmp"],
    }
    for experiment, parts in items.items():
        for part in parts:
            tables, figures = PARTS[part]
            for name in [f"{t}.html" for t in tables] + [f"{f}.png" for f in figures]:
                assert f"results/{experiment}/report/{name}" in html, name
    assert "m = 3 ingredients varying seed" in html  # the caption names smoke's settings
    assert "varying schedule" in html  # and smoke_uniform's
    assert "how far retraining recovered it" in html  # the training curves' caption


def test_every_training_job_left_its_history(smoke_run, smoke_config) -> None:
    """One row before training and one per epoch, ending at the checkpoint's steps and sparsity."""
    directory, _ = smoke_run

    def template(model: Path) -> str:  # results/{experiment}/seed{n}/{model dir}/model.pt
        model_dir = model.parent.relative_to(directory / "results").as_posix().split("/", 2)[2]
        return (layout.parse(model_dir) or ("",))[0]

    models = (directory / "results").rglob(layout.MODEL_FILE)
    trained = [path for path in models if template(path) in layout.TRAINED]
    kinds = {Checkpoint.load(path).meta["kind"] for path in trained}
    assert kinds == {"dense", "ingredient", "rewind", "gmp", "gmp_sms_ingredient"}
    for path in trained:
        meta = Checkpoint.load(path).meta
        rows = read_history(path.with_name(layout.HISTORY_FILE))
        if meta.get("train_steps", 0) == 0:  # smoke_uniform rewinds to the initialization
            assert rows == [], path
            continue
        assert rows[0].step == 0 and rows[-1].step == meta["train_steps"], path
        assert [row.epoch for row in rows] == list(range(len(rows))), path
        assert all(0 <= row.val_accuracy <= 1 for row in rows), path


def test_killed_run_restarts_and_gives_identical_metrics(smoke_run, smoke_idx, tmp_path: Path) -> None:
    """SIGKILL mid-job, unlock, rerun: the one-seed experiment (a few dozen jobs) suffices."""
    reference, _ = smoke_run
    target = "results/smoke_uniform/report/table.md"
    write_smoke_config(tmp_path, smoke_idx)
    process = smoke_snakemake(tmp_path, target, background=True)
    deadline = time.monotonic() + 300
    mid_run = tmp_path / "results/smoke_uniform/seed0/dense/phase1/ingredient0/model.pt"
    while not mid_run.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    os.killpg(process.pid, signal.SIGKILL)  # Snakemake and its running jobs, mid-job
    process.wait()
    assert mid_run.exists() and not (tmp_path / target).exists()
    assert smoke_snakemake(tmp_path, "--unlock").returncode == 0
    resumed = smoke_snakemake(tmp_path, target)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert metrics_files(tmp_path, "smoke_uniform") == metrics_files(reference, "smoke_uniform")
    assert (tmp_path / target).read_text() == (reference / target).read_text()


def test_metrics_carry_calibration_costs_ood_and_soup_geometry(smoke_run, smoke_config) -> None:
    """Every metrics file has the contract's fields (ECE, worst class, OOD per corruption and
    severity); models add FLOPs, soups their geometry."""
    directory, _ = smoke_run
    for path in (directory / "results").rglob("metrics.json"):
        record = json.loads(path.read_text())
        ood = smoke_config["experiments"][record["experiment"]]["ood"]
        assert 0 <= record["ece"] <= 1 and 0 <= record["worst_class_accuracy"] <= record["test_accuracy"], (
            path
        )
        assert set(record["ood"]) == set(ood["corruptions"]), path
        cells = [acc for row in record["ood"].values() for acc in row.values()]
        assert all(sorted(row) == [str(s) for s in ood["severities"]] for row in record["ood"].values())
        assert record["ood_accuracy"] == pytest.approx(sum(cells) / len(cells)), path
        assert all(0 <= a <= 1 for a in cells)
        if record["kind"] == "ensemble":
            continue
        assert 0 < record["flops"] <= record["dense_flops"]
        assert record["speedup"] == record["dense_flops"] / record["flops"]
        assert (record["speedup"] > 1) == (record["sparsity"] > 0), path
        if record["kind"] == "soup":
            n = len(record["geometry"]["distance_to_soup"])
            assert n >= 2 and len(record["geometry"]["pairwise_l2"]) == n, path
            assert record["geometry"]["mean_pairwise_l2"] > 0
