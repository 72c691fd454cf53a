"""The architecture's promises: layers without import cycles, registries that the schema,
the workflow and the report all follow, one place that spells the results tree, and
extension by one registration (README, "Architecture" and "Extending")."""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from sparse_soups import layout
from sparse_soups.registry import PLUGINS_VARIABLE, REGISTRIES, SOUP_METHODS, load_plugins
from sparse_soups.reporting.records import method_results
from sparse_soups.validation import load_schema
from tests.conftest import REPO

PACKAGE = REPO / "src" / "sparse_soups"
PLUGINS = Path(__file__).parent / "plugins"
LONGEST = 390  # "about 350": the longest is corruptions.py, 19 corruption functions in 382 lines
# Which layer each top-level part of the package belongs to; a module imports only its own
# layer and the ones below.
LAYERS = {"config": 0, "registry": 0, "kernels": 1, "methods": 2}  # everything else: 3, glue


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_type_checking(node: ast.If) -> bool:
    return isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING"


def _imports(path: Path, modules: set[str]) -> set[str]:
    """Package modules that `path` imports anywhere (in functions too), except under
    `if TYPE_CHECKING:`, which never runs."""
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node):
            return
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name in modules)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([node.module] if node.module else [])])
            for alias in node.names:
                target = f"{base}.{alias.name}"
                found.add(target if target in modules else base)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(ast.parse(path.read_text()))
    return {m for m in found if m in modules and m != name}


def _graph() -> dict[str, set[str]]:
    paths = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    return {name: _imports(path, set(paths)) for name, path in paths.items()}


def test_the_package_has_no_import_cycle_even_through_lazy_imports() -> None:
    graph, state, stack = _graph(), {}, []

    def walk(module: str) -> None:
        state[module] = "open"
        stack.append(module)
        for target in sorted(graph[module]):
            if state.get(target) == "open":
                cycle = [*stack[stack.index(target) :], target]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if target not in state:
                walk(target)
        stack.pop()
        state[module] = "done"

    for module in sorted(graph):
        if module not in state:
            walk(module)
    assert "sparse_soups.kernels.data" in graph and graph["sparse_soups.cli"]  # the scan saw imports


def _layer(module: str) -> int:
    return LAYERS.get(module.split(".")[1], 3) if module.count(".") else 3


def test_layers_only_import_downwards() -> None:
    upward = [
        f"{module} (layer {_layer(module)}) imports {target} (layer {_layer(target)})"
        for module, targets in _graph().items()
        for target in targets
        if _layer(target) > _layer(module)
    ]
    assert upward == []


def test_no_module_exceeds_about_350_lines() -> None:
    long = {
        str(p.relative_to(PACKAGE)): n
        for p in PACKAGE.rglob("*.py")
        if (n := len(p.read_text().splitlines())) > LONGEST
    }
    assert long == {}


def test_schema_enums_wildcards_and_report_follow_the_registries() -> None:
    schema = load_schema(REPO / "workflow" / "schemas" / "config.schema.yaml")
    experiment = schema["$defs"]["experiment"]["properties"]
    enums = {
        "soup_methods": experiment["soup"]["properties"]["methods"]["items"]["enum"],
        "pruning_criteria": experiment["prune"]["properties"]["selection"]["enum"],
        "datasets": experiment["data"]["properties"]["dataset"]["enum"],
        "models": experiment["model"]["properties"]["name"]["enum"],
    }
    assert enums == {key: list(registry.names()) for key, registry in REGISTRIES.items()}
    constraints = layout.wildcard_constraints()
    for method in SOUP_METHODS.names():
        assert method in constraints["lineage"].split("|") and method in constraints["soup"].split("|")
    labels = set(method_results(_records()).method)
    assert {SOUP_METHODS.label(m) for m in SOUP_METHODS.names()} <= labels


def _records(phases: int = 1, m: int = 2) -> list[dict]:
    """Minimal metrics records of one run, with every directory from `layout`."""
    dirs = layout.run_model_dirs(phases, SOUP_METHODS.names(), m)
    return [
        {"experiment": "x", "seed": 0, "model_dir": d,
         "kind": "soup" if layout.parse(d)[0] == "soup" else "ingredient",
         "method": d.split("/")[0], "phase": 0 if d == layout.DENSE else int(d.split("phase")[1][0]),
         "sparsity": 0.5, "test_accuracy": 0.9, "validation_accuracy": 0.9, "checkpoint_sha256": None}
        for d in dirs
    ]  # fmt: skip


def _dry_run(directory: Path, config: dict, snakefile: Path, env: dict | None = None) -> str:
    path = directory / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    run = subprocess.run(
        ["snakemake", "-n", "-p", "--snakefile", str(snakefile), "-d", str(directory),
         "--configfile", str(path)],
        capture_output=True, text=True, env={**os.environ, **(env or {})},
    )  # fmt: skip
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    return run.stdout


SMALL = {
    "seeds": [0],
    "prune": {"phases": 1},
    "baselines": {"lottery_pools": "none", "gmp": "none", "gmp_sms": "none"},
}


def test_a_plugin_adds_a_soup_method_criterion_dataset_and_model(tmp_path: Path) -> None:
    """README "Extending": one plugin module registers all four; the workflow validates
    the config against them and plans the new soup's chain, and jobs import the plugin."""
    experiment = {
        **SMALL, "data": {"dataset": "kmnist"}, "model": {"name": "tiny_mlp", "width": 8},
        "prune": {"phases": 2, "selection": "squared"},
        "soup": {"ingredients": 3, "methods": ["uniform", "best_two"]},
    }  # fmt: skip
    config = {"plugins": ["toy_extensions"], "experiments": {"toy": experiment}}
    env = {"PYTHONPATH": f"{PLUGINS}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    plan = _dry_run(tmp_path, config, REPO / "Snakefile", env)
    assert "results/toy/seed0/best_two/phase2/soup/model.pt" in plan
    assert "--method best_two" in plan
    without = tmp_path / "without.yaml"  # the same config, the plugin not named
    without.write_text(yaml.safe_dump({"experiments": {"toy": experiment}}))
    run = subprocess.run(
        ["snakemake", "-n", "--snakefile", str(REPO / "Snakefile"), "-d", str(tmp_path),
         "--configfile", str(without)], capture_output=True, text=True,
    )  # fmt: skip
    assert run.returncode != 0 and "'best_two' is not one of" in run.stdout + run.stderr


def test_jobs_import_the_plugins_the_workflow_names(monkeypatch) -> None:
    """The workflow exports `plugins` to every job's environment; `load_plugins` there
    imports them before the command runs, so the job knows the new names."""
    monkeypatch.syspath_prepend(str(PLUGINS))
    monkeypatch.setenv(PLUGINS_VARIABLE, "toy_extensions")
    saved = {key: dict(registry._entries) for key, registry in REGISTRIES.items()}
    try:
        assert load_plugins() == ["toy_extensions"]
        assert SOUP_METHODS.get("best_two")(4, lambda kept: {0: 0.5, 1: 0.9, 2: 0.7, 3: 0.1}[kept[0]]) == [
            1,
            2,
        ]
        assert "squared" in REGISTRIES["pruning_criteria"] and "tiny_mlp" in REGISTRIES["models"]
    finally:
        for key, entries in saved.items():
            REGISTRIES[key]._entries = entries


def test_renaming_a_directory_template_moves_the_dag_and_the_report(tmp_path: Path, monkeypatch) -> None:
    """`layout.TREE` is the only spelling of the results tree: rename the soup directory
    there and the rules' outputs, the inputs they chain on, and the report all follow."""
    copy = tmp_path / "repo"
    copy.mkdir()
    for part in ("Snakefile", "workflow", "src", "config", "envs", "profiles"):
        source = REPO / part
        if source.is_dir():
            shutil.copytree(source, copy / part, ignore=shutil.ignore_patterns("__pycache__"))
        elif source.exists():
            shutil.copy(source, copy / part)
    layout_file = copy / "src" / "sparse_soups" / "layout.py"
    text = layout_file.read_text()
    assert '"soup": "{soup}/phase{phase}/soup",' in text
    layout_file.write_text(
        text.replace('"soup": "{soup}/phase{phase}/soup",', '"soup": "{soup}/phase{phase}/average",')
    )
    config = {"experiments": {"renamed": {**SMALL, "prune": {"phases": 2}, "soup": {"ingredients": 2}}}}
    (tmp_path / "run").mkdir()
    plan = _dry_run(tmp_path / "run", config, copy / "Snakefile", {"PYTHONPATH": str(copy / "src")})
    assert "seed0/uniform/phase2/average/model.pt" in plan and "/soup/model.pt" not in plan
    assert "--parent results/renamed/seed0/uniform/phase1/average/model.pt" in plan  # phase 2 chains on it
    monkeypatch.setitem(layout.TREE, "soup", "{soup}/phase{phase}/average")
    records = _records(phases=2)
    assert any(r["model_dir"] == "uniform/phase2/average" for r in records)
    rows = method_results(records)
    assert set(rows[rows.phase == 2].method) >= {"SMS uniform", "SMS greedy"}


def test_closed_vocabularies_are_declared_once_and_the_code_accepts_each_name() -> None:
    """Schedules come into the schema from the code (`x-names`); the corruption names
    are the schema's enum and the code's tuple, which must agree; each name is accepted."""
    from sparse_soups.config import PretrainSettings, RetrainSettings
    from sparse_soups.kernels.corruptions import ALL
    from sparse_soups.kernels.schedules import pretrain_schedule, retrain_schedule

    text = (REPO / "workflow" / "schemas" / "config.schema.yaml").read_text()
    assert "enum: [ft," not in text and "enum: [linear," not in text
    experiment = load_schema(REPO / "workflow" / "schemas" / "config.schema.yaml")["$defs"]["experiment"]
    properties = experiment["properties"]
    for name in properties["retrain"]["properties"]["schedule"]["enum"]:
        assert retrain_schedule(RetrainSettings(schedule=name))(0, 10) >= 0
    for name in properties["pretrain"]["properties"]["schedule"]["enum"]:
        assert pretrain_schedule(PretrainSettings(schedule=name))(0, 10) > 0
    with pytest.raises(ValueError, match=r"retrain\.schedule: unknown schedule 'x'"):
        retrain_schedule(RetrainSettings(schedule="x"))
    assert tuple(properties["ood"]["properties"]["corruptions"]["items"]["enum"]) == ALL
