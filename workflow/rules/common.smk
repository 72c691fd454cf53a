# Config validation, the settings of each experiment, and the input functions that
# encode the DAG: which checkpoint each retrain starts from, what each soup averages.
import copy

import os

from sparse_soups import layout
from sparse_soups.config import Settings, config_problems
from snakemake.exceptions import WorkflowError
from snakemake.utils import validate

# Name every bad key at once, then let Snakemake's validate fill in the defaults.
SCHEMA = os.path.join(workflow.basedir, "workflow", "schemas", "config.schema.yaml")
_problems = config_problems(config, SCHEMA)
if _problems:
    raise WorkflowError("Invalid config:\n  " + "\n  ".join(_problems))
validate(config, SCHEMA)

EXPERIMENTS = {
    name: Settings.from_dict({"name": name, **copy.deepcopy(raw)})
    for name, raw in config["experiments"].items()
}
RESOURCES = config["resources"]
ENV = "../../envs/sparse-soups.yaml"
RUN = "results/{experiment}/seed{seed}"


wildcard_constraints:
    experiment="|".join(EXPERIMENTS),
    seed=r"\d+",
    phase=r"\d+",
    index=r"\d+",
    lineage="|".join(
        [layout.DENSE, layout.IMP, layout.IMP_BUDGET, *layout.SOUP_METHODS]
    ),
    soup=r"uniform|greedy|soup_at_end|uniform_k\d+",
    variant="interp|avg",


def settings_of(wildcards) -> Settings:
    return EXPERIMENTS[wildcards.experiment]


def run_path(wildcards, model_dir: str, file: str = layout.MODEL_FILE) -> str:
    return f"{layout.run_dir(wildcards.experiment, wildcards.seed)}/{model_dir}/{file}"


def retrain_parent(wildcards) -> str:
    parent = layout.retrain_parent_dir(wildcards.lineage, int(wildcards.phase))
    return run_path(wildcards, parent)


def soup_method(wildcards) -> str:
    m = settings_of(wildcards).soup.ingredients
    return layout.soup_recipe(wildcards.soup, int(wildcards.phase), m)[0]


def soup_ingredients(wildcards) -> list[str]:
    m = settings_of(wildcards).soup.ingredients
    dirs = layout.soup_recipe(wildcards.soup, int(wildcards.phase), m)[1]
    return [run_path(wildcards, d) for d in dirs]


def ensemble_ingredients(wildcards) -> list[str]:
    settings = settings_of(wildcards)
    chain = layout.ensemble_chain(settings.soup.methods)
    phase = int(wildcards.phase)
    return [
        run_path(wildcards, layout.ingredient_dir(chain, phase, i))
        for i in range(settings.soup.ingredients)
    ]


def imp_tickets(wildcards) -> list[str]:
    phases = range(1, settings_of(wildcards).prune.phases + 1)
    return [run_path(wildcards, layout.chain_model_dir(layout.IMP, p)) for p in phases]


def experiment_metrics(wildcards) -> list[str]:
    settings = settings_of(wildcards)
    return [
        f"{layout.run_dir(wildcards.experiment, seed)}/{model_dir}/{layout.METRICS_FILE}"
        for seed in settings.seeds
        for model_dir in layout.experiment_metrics_dirs(settings)
    ]


def all_reports() -> list[str]:
    return [f"results/{name}/report/table.md" for name in EXPERIMENTS]
