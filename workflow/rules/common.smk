# Config validation, the settings of each experiment, and the input functions that
# encode the DAG: which checkpoint each retrain starts from, what each soup averages.
import copy
import os
import threading
import sys
from types import SimpleNamespace

from sparse_soups import layout, plan
from sparse_soups.config import Settings, gmp_rounds
from sparse_soups.methods.recipes import imp_shares_phase1
from sparse_soups.registry import PLUGINS_VARIABLE, SOUP_METHODS, load_plugins
from sparse_soups.stages import stage_settings, write_stage_settings
from sparse_soups.reporting.parts import settings_parts
from sparse_soups.validation import (
    OVERRIDE_HINT,
    config_file_problems,
    config_problems,
    typed_overrides,
)
from snakemake.exceptions import WorkflowError
from snakemake.utils import update_config, validate

# `--config` values with their YAML types (Snakemake passes nested ones as strings);
# then name every bad key at once (experiments take their defaults from config.py;
# Snakemake's validate fills in those of `resources`).
update_config(config, typed_overrides(dict(workflow.config_settings.config)))
# Plugin modules register soup methods, pruning criteria, datasets or models (README,
# "Extending"); the jobs import them too, through the environment.
PLUGINS = load_plugins(config.get("plugins") or [])
if PLUGINS:
    shell.prefix(f"{JOB_PREFIX}export {PLUGINS_VARIABLE}={','.join(PLUGINS)}; ")
# The schema as a local file: this checkout's, or Snakemake's cached copy when it reads
# the workflow from a repository host (see BASEDIR in the Snakefile).
_SCHEMA = workflow.current_basedir.join(
    os.path.join("..", "schemas", "config.schema.yaml")
)
SCHEMA = os.fspath(_SCHEMA) if BASEDIR else workflow.sourcecache.get_path(_SCHEMA)
_problems = [
    *config_file_problems(workflow.configfiles),
    *config_problems(config, SCHEMA, files=False),
]
if _problems:
    raise WorkflowError(
        "Invalid config:\n  " + "\n  ".join(_problems) + "\n" + OVERRIDE_HINT
    )
validate(config, SCHEMA)
# Whether the data the config names exists: a dry run plans without it (the warning says
# what a run would stop at); a run checks it in `onstart`, before its first job.
MISSING_DATA = config_problems(config, SCHEMA)
if MISSING_DATA:
    print(
        "Data not found (a run stops here before its first job; a dry run plans anyway):\n  "
        + "\n  ".join(MISSING_DATA),
        file=sys.stderr,
    )

# The warm worker (worker.py): local jobs fork from a process with torch imported.
# Only with this checkout's client (SRC); used as a module, the onstart below is not run.
WARM_START = config["warm_start"] and workflow.local_exec and SRC is not None


onstart:
    if MISSING_DATA:
        raise WorkflowError(
            "Invalid config:\n  " + "\n  ".join(MISSING_DATA) + "\n" + OVERRIDE_HINT
        )
    if WARM_START:
        from sparse_soups import worker

        worker.start(
            ".snakemake/log/sparse_soups_worker.log", SRC, config["local_cpus"]
        )


def finish_run():
    """Stop the warm worker and drop the scheduler's pending wake-up timers.

    Snakemake's job-rate limiter arms a timer on every scheduling round (snakemake PR
    #3744); the profile's long timespan makes those rounds rare, and cancelling the
    timers here keeps Snakemake from waiting for them before it exits."""
    if WARM_START:
        from sparse_soups import worker

        worker.stop()
    for thread in threading.enumerate():
        if isinstance(thread, threading.Timer):
            thread.cancel()


onsuccess:
    finish_run()


onerror:
    finish_run()


EXPERIMENTS = {
    name: Settings.from_dict({"name": name, **copy.deepcopy(raw)})
    for name, raw in config["experiments"].items()
}
RESOURCES = config["resources"]
ENV = "../../envs/sparse-soups.yaml"


def stage_inputs(stage) -> dict:
    """A job's settings (only its stage's keys: see stages.py) and the prepared data.
    `stage` is a stage's name, or a function of the wildcards giving it (a rule whose
    jobs belong to different stages: retrain, soup)."""
    if callable(stage):
        settings = lambda wildcards: (
            f"results/{wildcards.experiment}/settings/{stage(wildcards)}.json"
        )
    else:
        settings = f"results/{{experiment}}/settings/{stage}.json"
    return {"settings": settings, "data": "results/{experiment}/data.pt"}


def training_inputs(stage: str) -> dict:
    """A training job's inputs, with the logging stage's settings marked ancient: turning
    on TensorBoard or changing validation applies to new jobs and retrains nothing."""
    return {
        **stage_inputs(stage),
        "logging": ancient("results/{experiment}/settings/logging.json"),
    }


wildcard_constraints:
    **layout.wildcard_constraints(),
    experiment="|".join(EXPERIMENTS),


def job_resources(kind: str) -> dict:
    """Memory, runtime (scaled by the attempt) and GPUs of one kind of job: pretrain,
    train or light, as the config's `resources` section sets them."""
    own = RESOURCES[kind]
    return {
        "mem_mb": own["mem_mb"],
        "runtime": lambda wildcards, attempt: own["runtime"] * attempt,
        "gpu": own["gpu"],
    }


def run_log(name: str) -> str:
    return f"{layout.RUN}/logs/{name}.log"


def experiment_log(name: str) -> str:
    return f"results/{{experiment}}/logs/{name}.log"


def settings_of(wildcards) -> Settings:
    return EXPERIMENTS[wildcards.experiment]


def run_path(wildcards, model_dir: str, file: str = layout.MODEL_FILE) -> str:
    return f"{layout.run_dir(wildcards.experiment, wildcards.seed)}/{model_dir}/{file}"


def imp_shared(wildcards) -> bool:
    """Whether IMP's phase 1 is the SMS chains' ingredient 0 (see recipes.py)."""
    return imp_shares_phase1(settings_of(wildcards))


def retrain_parent(wildcards) -> str:
    phase = int(wildcards.phase)
    parent = layout.retrain_parent_dir(wildcards.lineage, phase, imp_shared(wildcards))
    return run_path(wildcards, parent)


def retrain_stage(wildcards) -> str:
    """SWAMP's retrains read the weight-averaging keys too; the others do not."""
    return "retrain_swa" if layout.keeps_swa(wildcards.lineage) else "retrain"


def soup_stage(wildcards) -> str:
    """The merging operators read `merging`; the selection soups do not."""
    merges = SOUP_METHODS.info(soup_method(wildcards)).get("merges", False)
    return "merge" if merges else "soup"


def soup_base(wildcards) -> list[str]:
    """The model the soup's chain started the phase from, for the operators that merge
    updates (Model Stock, TIES, DARE); none for the others."""
    base = layout.soup_base(wildcards.soup, int(wildcards.phase))
    return [] if base is None else [run_path(wildcards, base)]


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
    """The tickets Lottery Pools mixes: the IMP chain's, or the rewound chain's."""
    settings = settings_of(wildcards)
    chain = settings.baselines.lottery_pools_tickets  # imp | imp_rewind
    phases = range(1, settings.prune.phases + 1)
    shared = imp_shared(wildcards)
    return [
        run_path(wildcards, layout.chain_model_dir(chain, p, shared)) for p in phases
    ]


def gmp_rounds_of(wildcards) -> int:
    return gmp_rounds(settings_of(wildcards))


def gmp_sms_parent(wildcards) -> str:
    """Round 1 starts from GMP's dense prefix, round r from round r - 1's average."""
    phase, round_index = int(wildcards.phase), int(wildcards.round)
    parent = layout.gmp_sms_parent_dir(phase, round_index, gmp_rounds_of(wildcards))
    return run_path(wildcards, parent)


def gmp_sms_copies(wildcards, round_index: int | None = None) -> list[str]:
    """The m copies of a GMP + SMS round (the wildcard's round, or the given one)."""
    phase = int(wildcards.phase)
    round_index = int(wildcards.round) if round_index is None else round_index
    m = settings_of(wildcards).soup.ingredients
    return [
        run_path(wildcards, layout.gmp_sms_ingredient_dir(phase, round_index, i))
        for i in range(m)
    ]


def gmp_sms_last_copies(wildcards) -> list[str]:
    return gmp_sms_copies(wildcards, gmp_rounds_of(wildcards))


def experiment_metrics(wildcards) -> list[str]:
    settings = settings_of(wildcards)
    return [
        f"{layout.run_dir(wildcards.experiment, seed)}/{model_dir}/{layout.METRICS_FILE}"
        for seed in settings.seeds
        for model_dir in plan.experiment_metrics_dirs(settings)
    ]


def all_reports() -> list[str]:
    from sparse_soups.reporting.parts import part_files

    return [
        f"results/{name}/report/{file}"
        for name, settings in EXPERIMENTS.items()
        for part in settings_parts(settings)
        for file in part_files(part)
    ]


def all_results() -> list[str]:
    """Every model, history and metrics file of every run, and each experiment's settings
    and data: targets of `all` beside the reports, so a plain `snakemake` rebuilds any of
    them that went missing (Snakemake skips a missing file that nothing out of date needs).
    """
    files = []
    for name, settings in EXPERIMENTS.items():
        metrics = experiment_metrics(SimpleNamespace(experiment=name))
        files += [f"results/{name}/settings.json", f"results/{name}/data.pt", *metrics]
        models = experiment_models(name, settings, metrics)
        files += models + layout.histories_of(models)
    return list(dict.fromkeys(files))


def experiment_models(name: str, settings: Settings, metrics: list[str]) -> list[str]:
    """Every model file of every run of an experiment, intermediate ones included."""
    files = []
    for seed in settings.seeds:
        run = layout.run_dir(name, seed)
        files += [
            f"{run}/{model_dir}/{layout.MODEL_FILE}"
            for model_dir in plan.experiment_model_dirs(settings)
        ]
        files += intermediate_models(name, settings, seed, metrics)
    return list(dict.fromkeys(files))


def experiment_histories(wildcards) -> list[str]:
    """The training curves of an experiment: what its training report parts read."""
    settings = settings_of(wildcards)
    metrics = experiment_metrics(wildcards)
    return layout.histories_of(
        experiment_models(wildcards.experiment, settings, metrics)
    )


def intermediate_models(name: str, settings: Settings, seed: int, metrics) -> list[str]:
    """Models no metrics file describes: what soups, Lottery Pools, GMP + SMS and
    rewinding start from (e.g. soup-at-end's IMP retrains, GMP + SMS's rounds)."""
    run = SimpleNamespace(experiment=name, seed=seed)
    prefix = layout.run_dir(name, seed) + "/"
    files = []
    for path in metrics:
        model_dir = path.removeprefix(prefix).rpartition("/")[0]  # drop the file name
        template, fields = layout.parse(model_dir) or (None, {})
        if path.startswith(prefix) and template == "soup":
            files += soup_ingredients(SimpleNamespace(**vars(run), **fields))
    baselines, phases = settings.baselines, settings.prune.phases
    if baselines.lottery_pools != "none" and phases > 1:
        files += imp_tickets(run)
    sms = layout.target_phases(baselines.gmp_sms, phases)
    for phase in sorted({*sms, *layout.target_phases(baselines.gmp, phases)}):
        files.append(run_path(run, layout.gmp_prefix_dir(phase)))
    rounds = gmp_rounds_of(run)
    for phase, round_index in ((p, r) for p in sms for r in range(1, rounds + 1)):
        files += gmp_sms_copies(
            SimpleNamespace(**vars(run), phase=phase, round=round_index)
        )
        files.append(
            run_path(run, layout.gmp_sms_round_dir(phase, round_index, rounds))
        )
    if baselines.imp_rewind or baselines.lottery_pools_tickets == layout.IMP_REWIND:
        files.append(run_path(run, layout.REWIND))
    return files


REPORT_DIR = "results/{experiment}/report"
REPORT_SECTIONS = {
    "main": "Accuracy",
    "ood": "Out-of-distribution",
    "ablation_m": "Ablations",
    "subset_soups": "Ablations",
    "ablation_vary": "Ablations",
    "training": "Training curves",
    "training_gmp": "Training curves",
    "fairness": "Fairness",
    "merging": "Merging operators",
}


def report_outputs(part: str) -> dict:
    """A report part's files as named outputs; the HTML table and PNG figure of each item
    go into `snakemake --report`, with the caption `workflow/report/{stem}.rst`. Like every
    output, they are flagged `update`: a failed rerun restores the previous files."""
    from sparse_soups.reporting.parts import FIGURE_FORMATS, PARTS, TABLE_FORMATS

    tables, figures = PARTS[part]
    outputs = {"results": f"{REPORT_DIR}/results.csv"} if part == "main" else {}
    items = [(t, TABLE_FORMATS, "html") for t in tables]
    items += [(f, FIGURE_FORMATS, "png") for f in figures]
    for stem, formats, shown in items:
        for fmt in formats:
            path = f"{REPORT_DIR}/{stem}.{fmt}"
            if fmt == shown:
                path = report(
                    path,
                    caption=f"../report/{stem}.rst",
                    category="{experiment}",
                    subcategory=REPORT_SECTIONS[part],
                    labels={
                        "item": stem,
                        "kind": "table" if fmt == "html" else "figure",
                    },
                )
            outputs[f"{stem}_{fmt}"] = path
    return {name: update(path) for name, path in outputs.items()}


def experiment_summary(wildcards) -> str:
    """The settings a report caption names: enough to tell which run an item shows."""
    s = settings_of(wildcards)
    vary = s.soup.vary + (f" {list(s.soup.values)}" if s.soup.values else "")
    return (
        f"{s.model.name} (width {s.model.width}) on {s.data.dataset}, seeds {list(s.seeds)}; "
        f"{s.prune.phases} IMP phase(s) to {100 * s.prune.sparsity:g}% sparsity "
        f"({s.prune.selection} magnitude pruning); retraining {s.retrain.epochs} epoch(s) "
        f"with {s.retrain.schedule.upper()}; m = {s.soup.ingredients} ingredients varying "
        f"{vary}; soups {', '.join(s.soup.methods)}"
    )


def ood_input(wildcards) -> list[str]:
    """The experiment's corrupted test set, for jobs that report OOD accuracy (none when off)."""
    if not settings_of(wildcards).ood.enabled:
        return []
    return [f"results/{wildcards.experiment}/ood"]


def ood_option(wildcards, input) -> str:
    return f"--ood {input.ood}" if input.ood else ""
