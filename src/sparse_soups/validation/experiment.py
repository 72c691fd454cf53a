"""Checks of one experiment that the schema cannot express: cross-key rules, the size of
the plan, and the splits against what the experiment reads.

Each check reads the experiment with its defaults filled in from the dataclasses of
`config.py` (the only place defaults are declared), and runs only on sections whose
types the schema has confirmed, so a check never guards against a string where a number
belongs and each problem is named once.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

from ..config import VARY_AXES, Settings, SettingsError, dense_epochs, gmp_epochs, gmp_rounds, target_phases
from ..kernels.schedules import RETRAIN_SCHEDULES
from ..registry import DATASETS
from .datasets import dataset_problems, task_problems, training_set_size

MAX_RETRAINS = 10_000  # SMS retrains one experiment may plan: the paper's need about 100


def with_defaults(experiment: dict[str, Any]) -> dict[str, Any]:
    """The experiment's sections with every missing key taken from its dataclass."""
    defaults = Settings().to_dict()
    filled = {**defaults, **experiment}
    for section, default in defaults.items():
        if isinstance(default, dict) and isinstance(experiment.get(section), dict):
            filled[section] = {**default, **experiment[section]}
    return filled


def experiment_problems(
    name: str, experiment: dict[str, Any], dirty: set[Any], files: bool = True
) -> list[str]:
    """The cross-key checks of one experiment; those on the whole typed settings only
    when everything else holds. `dirty` names the sections that failed the schema;
    `files`: also whether the data and corrupted-set files it names exist."""
    key, exp = f"experiments.{name}", with_defaults(experiment)

    def clean(*sections: str) -> bool:
        return not dirty & set(sections)

    found = []
    if clean("data"):
        found += _root_problems(key, exp["data"]) if files else []
        found += dataset_problems(key, exp["data"], files)
    if clean("ood"):
        found += _ood_problems(key, exp["ood"], files)
    if clean("data", "model", "ood", "baselines"):
        found += task_problems(key, exp, files)
    if clean("soup"):
        found += _soup_problems(key, exp["soup"])
    if clean("model"):
        found += _model_problems(key, exp["model"])
    if clean("logging"):
        found += _logging_problems(key, exp["logging"])
    if clean("baselines", "prune"):
        found += _lottery_pools_problems(
            key, exp, asked=(experiment.get("baselines") or {}).get("lottery_pools")
        )
    if dirty or found:
        return found
    return _settings_problems(name, experiment)


def _root_problems(key: str, data: dict[str, Any]) -> list[str]:
    root = data["root"]
    if isinstance(root, str) and not Path(root).expanduser().is_dir():
        return [f"{key}.data.root: directory '{root}' does not exist"]
    return []


def _ood_problems(key: str, ood: dict[str, Any], files: bool) -> list[str]:
    """Official corrupted sets must be where `ood.root` says, before any job runs."""
    if not ood["enabled"] or ood["source"] != "files":
        return []
    root = ood["root"]
    if not isinstance(root, str):
        return [f"{key}.ood.root: source 'files' needs the directory of the official "
                "CIFAR-10-C/100-C .npy files (or ImageNet-C), got null"]  # fmt: skip
    if files and not Path(root).expanduser().is_dir():
        return [f"{key}.ood.root: directory '{root}' does not exist"]
    return []


def _soup_problems(key: str, soup: dict[str, Any]) -> list[str]:
    """One value per ingredient, of the varied axis' type; k of m no more than m."""
    key, axis, values, m = f"{key}.soup", soup["vary"], list(soup["values"]), soup["ingredients"]
    problems = [
        f"{key}.{name}: {k} is more than the {m} ingredients"
        for name in ("subset_sizes", "ablation_m")
        for k in soup[name]
        if k > m
    ]
    if axis == "seed":
        if values:
            problems.append(f"{key}.values: must be empty when vary is 'seed' (got {values!r})")
        return problems
    if len(values) != m:
        problems.append(f"{key}.values: {len(values)} values for {m} ingredients (need one each)")
    for value in values:
        wrong_type = not isinstance(value, VARY_AXES[axis]) or isinstance(value, bool)
        if wrong_type or (axis == "schedule" and value not in RETRAIN_SCHEDULES):
            problems.append(f"{key}.values: {value!r} is not a valid {axis}")
        elif axis != "schedule" and (value < 0 or (axis != "weight_decay" and value == 0)):
            problems.append(f"{key}.values: {value!r} is out of range for {axis}")
    return problems


def _model_problems(key: str, model: dict[str, Any]) -> list[str]:
    """WideResNet's depth is 6n + 4 (n blocks per stage); known before any job runs."""
    depth = model["depth"]
    if model["name"] == "wrn" and ((depth - 4) % 6 or depth < 10):
        return [f"{key}.model.depth: {depth} is not 6n + 4 with n >= 1 (WideResNet: e.g. 16, 22, 28, 40)"]
    return []


def _logging_problems(key: str, logging: dict[str, Any]) -> list[str]:
    """TensorBoard is an optional extra: asked for without it, say what to install."""
    if logging["tensorboard"] and importlib.util.find_spec("tensorboard") is None:
        return [
            f"{key}.logging.tensorboard: true needs the tensorboard package, which is not "
            "installed: pip install 'sparse-soups[tensorboard]' (or pip install tensorboard)"
        ]
    return []


def _lottery_pools_problems(key: str, experiment: dict[str, Any], asked: str | None) -> list[str]:
    """Lottery Pools mixes tickets of several phases: asked for (not merely left at its
    default) with one phase, say so; the default is skipped with one phase."""
    phases = experiment["prune"]["phases"]
    if asked not in (None, "none") and phases < 2:
        return [
            f"{key}.baselines.lottery_pools: '{asked}' needs prune.phases >= 2 (it mixes tickets "
            f"of several phases; prune.phases is {phases}): set it to none"
        ]
    return []


def _settings_problems(name: str, experiment: dict[str, Any]) -> list[str]:
    """Checks on the typed settings: the size of the plan, GMP's and rewinding's epochs
    against pretraining's, and the splits' sizes against what the experiment reads."""
    key = f"experiments.{name}"
    try:
        settings = Settings.from_dict({"name": name, **experiment})
    except SettingsError as error:  # the schema and the dataclasses disagree
        return [f"{key}: {error}"]
    soup, seeds = settings.soup, len(settings.seeds)
    found = size_problems(settings.prune.phases, soup.ingredients, len(soup.methods), seeds, key)
    if found:
        return found  # the checks below walk the phases
    found += gmp_problems(settings, key)
    total = training_set_size(settings.data.dataset, settings.data.root)
    if total is not None:
        found += split_problems(settings, total, key)
    return found


def size_problems(phases: int, ingredients: int, methods: int, seeds: int, key: str) -> list[str]:
    """A plan of millions of retrains would take Snakemake minutes just to build: refuse it
    in constant time, before anything walks the phases."""
    retrains = phases * ingredients * max(methods, 1) * seeds
    if retrains > MAX_RETRAINS:
        return [
            f"{key}.prune.phases: {phases} phases x {ingredients} ingredients (soup.ingredients) x "
            f"{methods} soup method(s) x {seeds} seed(s) plan {retrains} retrains, more than "
            f"{MAX_RETRAINS}"
        ]
    return []


def gmp_problems(settings: Settings, key: str) -> list[str]:
    """GMP must start pruning before its last epoch, GMP + SMS needs an epoch per round,
    and rewinding needs an epoch of pretraining to return to."""
    found = []
    baselines, pretrain_epochs = settings.baselines, settings.pretrain.epochs
    rewinding = baselines.imp_rewind or baselines.lottery_pools_tickets == "imp_rewind"
    if rewinding and baselines.rewind_epoch >= pretrain_epochs:
        found.append(
            f"{key}.baselines.rewind_epoch: {baselines.rewind_epoch} must be less than "
            f"pretrain.epochs ({pretrain_epochs}): rewinding needs an epoch of pretraining to return to"
        )
    sms_phases = set(target_phases(baselines.gmp_sms, settings.prune.phases))
    phases = sms_phases | set(target_phases(baselines.gmp, settings.prune.phases))
    gmp = settings.gmp
    for phase in sorted(phases):
        epochs, start = gmp_epochs(settings, phase), dense_epochs(settings, phase)
        if start >= epochs:
            found.append(
                f"{key}.gmp.start_fraction: pruning would start at epoch {start} of GMP's {epochs} "
                f"(gmp.epochs {gmp.epochs}, start_fraction {gmp.start_fraction}) for phase {phase}: "
                "it must start before the last epoch"
            )
        elif phase in sms_phases and epochs - start < gmp_rounds(settings):
            found.append(
                f"{key}.gmp.rounds: {gmp_rounds(settings)} rounds need at least as many epochs after "
                f"pruning starts, but GMP aimed at phase {phase} has {epochs - start} "
                f"(gmp.epochs {epochs}, pruning from epoch {start})"
            )
    return found


def split_sizes(total: int, validation_fraction: float, train_subset: int | None) -> tuple[int, int]:
    """(training, validation) images, as `data.prepare_dataset` and `load_prepared` make them."""
    n_val = round(validation_fraction * total)
    n_train = total - n_val
    return (n_train if train_subset is None else min(train_subset, n_train)), n_val


def split_problems(settings: Any, total: int, key: str) -> list[str]:
    """The splits must hold what the experiment reads: a batch of training images, and
    validation images for every model's validation accuracy, greedy soups and Lottery Pools."""
    data = settings.data
    n_train, n_val = split_sizes(total, data.validation_fraction, data.train_subset)
    official = DATASETS.info(data.dataset).get("official_splits")  # its own validation split
    if official:
        n_train, n_val = (total if data.train_subset is None else min(data.train_subset, total)), 1
    users = ["evaluation", *(["greedy soup"] if "greedy" in settings.soup.methods else [])]
    if settings.baselines.lottery_pools != "none" and settings.prune.phases > 1:
        users.append("Lottery Pools")
    problems = []
    if n_val < 1:
        problems.append(
            f"{key}.data.validation_fraction: {data.validation_fraction} of {total} training images "
            f"leaves no validation image, which {', '.join(users)} need(s)"
        )
    batch = settings.pretrain.batch_size
    if n_train < batch:
        limited = data.train_subset is not None and data.train_subset < (total if official else total - n_val)
        if limited:
            cause = f"data.train_subset: {data.train_subset}"
        elif official:
            cause = f"data.root: the official training split of {data.dataset} holds {n_train}"
        else:
            cause = f"data.validation_fraction: {data.validation_fraction} leaves {n_train} of {total}"
        problems.append(
            f"{key}.{cause} training images, fewer than one batch (pretrain.batch_size {batch})"
        )  # fmt: skip
    return problems
