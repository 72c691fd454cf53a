"""The smoke config on a real single-node SLURM cluster, through `profiles/slurm`.

A private cluster (munged, slurmctld, slurmd from Debian's slurm-wlm and munge; see
tests/slurm_cluster.py) runs most of one experiment (TARGET) with the SLURM profile, overriding only the
partition, the account, the status command and the status polling interval. The test
checks that every job went through sbatch, that training jobs asked for and got a GPU
generic resource, that a job failing once is resubmitted with twice the runtime, and that
the metrics equal those of a local run of the same config byte for byte.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import pytest

from tests.conftest import REPO, metrics_files, write_smoke_config
from tests.slurm_cluster import PACKAGES, SlurmCluster, missing_programs

# The smoke config's one-seed experiment, its whole DAG up to the report but for the GMP,
# GMP + SMS and rewinding chains (`--omit-from`): data, the corrupted test set, pretraining,
# a phase of ingredients, IMP, the soup, the ensemble and their grouped evaluations. Those
# chains are more of the same rules under the same profile, and at ~20 s of SLURM and
# Snakemake start-up per job on 2 cores they would double the test's time.
TARGET = "results/smoke_uniform/report/table.md"
OMITTED = ("gmp", "gmp_sms_ingredient", "rewind_point")
# The one job made to fail on its first attempt: a retrain (a GPU job).
FAILING_OUT = "results/smoke_uniform/seed0/dense/phase1/ingredient1/model.pt"
FAILING_COMMENT = "rule_retrain_wildcards_smoke_uniform_0_dense_1_1"

# Imported by every Python process of the SLURM run (it is first on PYTHONPATH, and
# sbatch exports the submitting environment): the first `sparse_soups retrain` writing
# FAILING_OUT creates the marker and exits 1 before doing anything; later ones run.
SITECUSTOMIZE = """\
import os
import sys

argv = list(getattr(sys, "orig_argv", []))
if "sparse_soups" in argv and "retrain" in argv and "--out" in argv:
    if argv[argv.index("--out") + 1] == {out!r}:
        try:
            os.close(os.open({marker!r}, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
        except FileExistsError:
            pass
        else:
            os._exit(1)
"""


@pytest.fixture(scope="module")
def cluster():
    missing = missing_programs()
    if missing:
        pytest.fail(
            f"SLURM programs missing: {', '.join(missing)}. Install them with "
            f"`apt-get install {PACKAGES}` (CI does this in .ci/run)."
        )
    cluster = SlurmCluster(partition="smoke", gpus=2).start()
    yield cluster
    cluster.stop()


def _snakemake(directory: Path, *args: str) -> list[str]:
    return [
        "snakemake", "--snakefile", str(REPO / "Snakefile"), "-d", str(directory),
        "--configfile", str(directory / "smoke.yaml"), "--omit-from", *OMITTED, *args, TARGET,
    ]  # fmt: skip


@pytest.fixture(scope="module")
def runs(
    cluster: SlurmCluster,
    smoke_idx: Path,
    tmp_path_factory: pytest.TempPathFactory,
    request: pytest.FixtureRequest,
):
    slurm_dir = tmp_path_factory.mktemp("slurm-run")
    write_smoke_config(slurm_dir, smoke_idx)

    hook = tmp_path_factory.mktemp("hook")
    marker = hook / "failed-once"
    (hook / "sitecustomize.py").write_text(SITECUSTOMIZE.format(out=FAILING_OUT, marker=str(marker)))
    env = dict(cluster.env)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(hook), env.get("PYTHONPATH")]))
    profile_overrides = [
        "--workflow-profile", str(REPO / "profiles" / "slurm"),
        # The only settings a user changes for their cluster (see the README) ...
        "--default-resources", f"slurm_partition={cluster.partition}",
        "--slurm-no-account",
        "--slurm-status-command", "squeue",
        # ... and how often to poll squeue (default 40 s before the first check, then every
        # 10 s; this cluster answers at once, and each job waited a poll to be seen finished).
        "--slurm-init-seconds-before-status-checks", "2",
        "--seconds-between-status-checks", "2",
    ]  # fmt: skip
    dry = subprocess.run(
        _snakemake(slurm_dir, *profile_overrides, "-n"), env=env, capture_output=True, text=True, check=False
    )
    slurm = subprocess.run(
        _snakemake(slurm_dir, *profile_overrides), env=env, capture_output=True, text=True, check=False
    )
    assert dry.returncode == 0, dry.stderr[-3000:]
    assert slurm.returncode == 0, (slurm.stderr[-5000:], cluster.diagnostics())
    # The reference: the same config run locally (tests/conftest.py). Asked for only now, so
    # that under pytest-xdist another worker computes it while the cluster runs.
    local_dir, _ = request.getfixturevalue("smoke_run")
    return {"local": local_dir, "slurm": slurm_dir, "marker": marker, "dry": dry, "log": slurm.stderr}


def _planned_jobs(dry_output: str) -> dict[str, int]:
    table = re.search(r"Job stats:\n(.*?)\n\n", dry_output, re.S)
    assert table, dry_output[-3000:]
    rows = [line.split() for line in table.group(1).splitlines()[2:]]
    return {row[0]: int(row[1]) for row in rows if len(row) == 2 and row[0] != "total"}


def test_every_job_went_through_sbatch(cluster: SlurmCluster, runs) -> None:
    planned = _planned_jobs(runs["dry"].stdout + runs["dry"].stderr)
    jobs = cluster.jobs()
    submitted = cluster.submissions()
    assert [int(job["JobID"]) for job in jobs] == submitted  # slurmctld saw each one
    by_rule: dict[str, int] = {}
    for job in jobs:
        # A job's comment names its rule and wildcards, a group job's its group and rules.
        name = re.sub(r"_wildcards_.*$", "", job["Comment"]).removeprefix("rule_")
        by_rule[name] = by_rule.get(name, 0) + 1
        assert job["Partition"] == cluster.partition
    # The settings files are local rules; every other job was submitted (the failed one twice) ...
    assert planned.pop("stage_settings") >= 1 and "stage_settings" not in by_rule
    assert planned.pop("settings", 0) <= 1 and "settings" not in by_rule
    evaluations = planned.pop("evaluate")
    assert {"prepare_data", "corrupt_test_set", "pretrain", "retrain", "soup", "ensemble"} <= set(planned)
    assert not {*OMITTED, "report"} & set(planned)
    for rule, count in planned.items():
        assert by_rule.get(rule, 0) == count + (rule == "retrain"), (rule, by_rule)
    # ... and evaluations in group jobs of up to 8: fewer submissions than evaluations.
    assert by_rule["evaluation_evaluate"] == -(-evaluations // 8) < evaluations
    assert sum(by_rule.values()) == len(submitted)


# The rules profiles/slurm gives a GPU (set-resources); everything else asks for none.
TRAINING_RULES = {"pretrain", "retrain", "gmp", "gmp_sms_ingredient", "rewind_point", "imp_rewind"}


def test_training_jobs_got_a_gpu_and_others_did_not(cluster: SlurmCluster, runs) -> None:
    for job in cluster.jobs():
        gpu = "gres:gpu:1" in job["tres-per-job"]
        rule = re.sub(r"_wildcards_.*$", "", job["Comment"]).removeprefix("rule_")
        training = rule in TRAINING_RULES
        assert gpu == training, job
        # slurmctld accepted the GPU request and ran the job (the one injected failure aside).
        assert job["State"] == "COMPLETED" or job["Comment"] == FAILING_COMMENT, job


def test_failed_job_was_retried_with_longer_runtime(cluster: SlurmCluster, runs) -> None:
    assert runs["marker"].exists()  # the injected failure happened
    attempts = [job for job in cluster.jobs() if job["Comment"] == FAILING_COMMENT]
    assert [job["State"] for job in attempts] == ["FAILED", "COMPLETED"]
    limits = []
    for job in attempts:
        shown = cluster.run("scontrol", "show", "job", job["JobID"]).stdout
        limits.append(re.search(r"TimeLimit=(\S+)", shown).group(1))
    assert limits == ["01:00:00", "02:00:00"]  # runtime * attempt, from the config's 60 min
    assert all(job["State"] == "COMPLETED" for job in cluster.jobs() if job not in attempts[:1])


def test_metrics_equal_those_of_a_local_run(runs) -> None:
    local = metrics_files(runs["local"], "smoke_uniform")
    slurm = metrics_files(runs["slurm"], "smoke_uniform")
    # One per evaluation, plus those other rules (the ensemble baseline) write ...
    assert len(slurm) >= _planned_jobs(runs["dry"].stdout + runs["dry"].stderr)["evaluate"]
    # ... every one the local run wrote, those of the omitted chains aside.
    assert set(slurm) == {name for name in local if not re.search(r"/(gmp|gmp_sms|imp_rewind)/", name)}
    assert slurm == {name: local[name] for name in slurm}
    for text in slurm.values():
        assert json.loads(text)["test_accuracy"] > 0.2
