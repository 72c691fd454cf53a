"""config/README.md is generated from the config schema, and the files the Snakemake
workflow catalog reads are where and as it expects them."""

from __future__ import annotations

import subprocess
import sys

import yaml

from sparse_soups import schema_docs
from sparse_soups.validation import load_schema
from tests.conftest import REPO


def test_config_readme_is_generated_from_the_schema() -> None:
    """Regenerating config/README.md changes nothing: edit the schema, then regenerate."""
    committed = (REPO / "config" / "README.md").read_text()
    generated = schema_docs.render(REPO / "workflow" / "schemas" / "config.schema.yaml", REPO / "config")
    assert committed == generated, f"config/README.md is stale; regenerate it with: {schema_docs.COMMAND}"


def test_config_readme_documents_every_key_with_its_description() -> None:
    text = (REPO / "config" / "README.md").read_text()
    schema = load_schema(REPO / "workflow" / "schemas" / "config.schema.yaml")
    for path, node, _ in schema_docs.sections(schema, "", schema):
        assert (f"### `{path}`" if path else "### Top level") in text
        for key, child in node["properties"].items():
            described = " ".join(schema_docs.resolve(child, schema).get("description", "").split())
            rows = [line for line in text.splitlines() if line.startswith(f"| `{key}` |")]
            assert any(described in row for row in rows), (path, key)
    assert "| `seeds` | list of integer | `[0]` |" in text  # the dataclass default
    assert "`cnn`, `mlp`, `resnet18`" in text  # a registry's names as the enum
    assert "| `config/smoke.yaml` |" in text  # each config of config/


def test_check_mode_names_the_command_that_regenerates(tmp_path) -> None:
    stale = tmp_path / "README.md"
    stale.write_text("# old\n")
    command = [sys.executable, "-m", "sparse_soups.schema_docs", "--check", str(stale)]
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    assert result.returncode == 1 and schema_docs.COMMAND in result.stderr
    assert schema_docs.main(["--out", str(stale)]) == 0
    assert schema_docs.main(["--check", str(stale)]) == 0


def test_catalog_settings_and_layout() -> None:
    """`.snakemake-workflow-catalog.yml` as the catalog reads it, and the standardized
    layout: workflow/Snakefile, rules in workflow/rules/*.smk, config/README.md."""
    usage = yaml.safe_load((REPO / ".snakemake-workflow-catalog.yml").read_text())["usage"]
    assert set(usage) == {"mandatory-flags", "software-stack-deployment", "report"}
    assert usage["mandatory-flags"]["desc"] and isinstance(usage["mandatory-flags"]["flags"], list | str)
    deployment = usage["software-stack-deployment"]
    assert set(deployment) <= {"conda", "apptainer", "apptainer+conda"} and deployment["conda"] is True
    assert all(isinstance(value, bool) for value in deployment.values())
    assert usage["report"] is True
    assert (REPO / "workflow" / "Snakefile").is_file() and (REPO / "config" / "README.md").is_file()
    assert list((REPO / "workflow" / "rules").glob("*.smk"))


def test_catalog_lint_and_format_checks_pass() -> None:
    """The catalog shows `snakemake --lint` and `snakefmt --check` of workflow/Snakefile and
    workflow/rules/*.smk on the workflow's page."""
    files = [
        REPO / "Snakefile",
        REPO / "workflow" / "Snakefile",
        *sorted((REPO / "workflow" / "rules").glob("*.smk")),
    ]
    formatting = subprocess.run(
        ["snakefmt", "--check", *map(str, files)], capture_output=True, text=True, check=False
    )
    assert formatting.returncode == 0, formatting.stderr
    lint = subprocess.run(["snakemake", "--lint"], cwd=REPO, capture_output=True, text=True, check=False)
    assert lint.returncode == 0, lint.stdout + lint.stderr
