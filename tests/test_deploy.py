"""The README's deployment recipe, run on a clone of this repository: snakedeploy writes
a workflow that uses this one as a Snakemake module, and it plans the same jobs as the
repository itself; and `snakemake --report report.zip` packs a finished run."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import zipfile
from collections import Counter
from pathlib import Path

import pytest
import yaml

from sparse_soups.config import Settings
from sparse_soups.reporting.parts import PARTS, settings_parts
from tests.conftest import REPO, smoke_snakemake

# The repository to clone: this checkout's committed HEAD, or (to try uncommitted work) a
# git repository named by this variable.
SOURCE = Path(os.environ.get("SPARSE_SOUPS_DEPLOY_REPO", REPO))
MODULE = "sparse_soups"


def run(command: list[str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(command, cwd=cwd, capture_output=True, text=True, check=False)


@pytest.fixture(scope="module")
def clone(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh `git clone` of SOURCE: what a user of a release gets."""
    if shutil.which("git") is None or run(["git", "rev-parse", "HEAD"], SOURCE).returncode:
        pytest.skip(f"{SOURCE} is not a git repository")
    path = tmp_path_factory.mktemp("clone") / "sparse-soups"
    result = run(["git", "clone", "--quiet", str(SOURCE), str(path)], SOURCE)
    assert result.returncode == 0, result.stderr
    return path


def smoke_config(idx_dir: Path) -> dict:
    """config/smoke.yaml, its data read from `idx_dir`."""
    config = yaml.safe_load((REPO / "config" / "smoke.yaml").read_text())
    for experiment in config["experiments"].values():
        experiment.setdefault("data", {})["root"] = str(idx_dir)
    return config


def planned_jobs(output: str) -> dict[str, int]:
    """The job counts of a dry run's table ("rule  count" lines), without the target rule."""
    table = output.split("Job stats:", 1)[1].split("\n\n", 1)[0]
    counts = dict(re.findall(r"^(\w+)\s+(\d+)$", table, re.MULTILINE))
    return {rule: int(n) for rule, n in counts.items() if rule not in {"all", "default", "total"}}


def test_snakedeploy_module_plans_the_workflow(clone: Path, smoke_idx: Path, tmp_path: Path) -> None:
    """`snakedeploy deploy-workflow` copies config/ and profiles/ and writes a module
    Snakefile; pointed at the clone (the README's local recipe), `snakemake -n` in the
    deployed directory plans the same jobs as the repository's own Snakefile."""
    dest = tmp_path / "deployed"
    branch = run(["git", "rev-parse", "--abbrev-ref", "HEAD"], clone).stdout.strip()
    deploy = ["snakedeploy", "deploy-workflow", str(clone), str(dest), "--branch", branch, "--name", MODULE]
    result = run(deploy, tmp_path)
    assert result.returncode == 0, result.stderr
    for copied in ("config/README.md", "config/smoke.yaml", "profiles/default/config.yaml"):
        assert (dest / copied).is_file(), copied
    snakefile = dest / "workflow" / "Snakefile"
    text = snakefile.read_text()
    assert 'configfile: "config/config.yaml"' in text and f"use rule * from {MODULE}" in text
    declared = re.search(rf'module {MODULE}:\s+snakefile:\s+("workflow/Snakefile")\s+config:\s+config', text)
    assert declared, text  # a local source is declared relative to the deployment: point it at the clone
    snakefile.write_text(text.replace(declared.group(1), f'"{clone / "workflow" / "Snakefile"}"'))
    config = smoke_config(smoke_idx)
    (dest / "config" / "config.yaml").write_text(yaml.safe_dump(config))

    deployed = run(["snakemake", "-n", "--cores", "2"], dest)
    assert deployed.returncode == 0, deployed.stderr[-3000:]
    assert "default" in deployed.stdout and not (dest / "results").exists()
    own_dir = tmp_path / "own"
    own_dir.mkdir()
    (own_dir / "smoke.yaml").write_text(yaml.safe_dump(config))
    own = ["snakemake", "-n", "--cores", "2", "-s", str(clone / "Snakefile"), "--configfile", "smoke.yaml"]
    reference = run(own, own_dir)
    assert reference.returncode == 0, reference.stderr[-3000:]
    assert planned_jobs(deployed.stdout) == planned_jobs(reference.stdout)
    seeds = sum(len(experiment["seeds"]) for experiment in config["experiments"].values())
    assert planned_jobs(deployed.stdout)["pretrain"] == seeds


def test_report_zip_holds_the_html_and_every_flagged_item(smoke_run) -> None:
    """The zip holds report/report.html, which names every table and figure flagged with
    `report()`, and one copy of each under report/data/ (stored by hash, not by path)."""
    directory, _ = smoke_run
    result = smoke_snakemake(directory, "--report", "report.zip")
    assert result.returncode == 0, result.stderr[-3000:]
    with zipfile.ZipFile(directory / "report.zip") as archive:
        assert archive.testzip() is None
        names = archive.namelist()
        html = archive.read("report/report.html").decode()
    stored = Counter(name.rpartition("/")[2] for name in names if name.startswith("report/data/"))
    expected: Counter[str] = Counter()
    config = yaml.safe_load((directory / "smoke.yaml").read_text())
    for experiment, raw in config["experiments"].items():
        for part in settings_parts(Settings.from_dict({"name": experiment, **raw})):
            tables, figures = PARTS[part]
            for item in [f"{t}.html" for t in tables] + [f"{f}.png" for f in figures]:
                assert f"results/{experiment}/report/{item}" in html, (experiment, item)
                expected[item] += 1
    assert stored == expected
