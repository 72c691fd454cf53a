"""Hyperparameters of one experiment, one dataclass per concern.

The workflow validates `config/*.yaml` against `workflow/schemas/config.schema.yaml`
(which fills in defaults) and hands each job the resolved settings of its experiment as
JSON. The dataclass defaults here mirror the schema's so that the library can be used
without Snakemake; `tests/test_config.py` keeps the two in agreement.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


class SettingsError(ValueError):
    """A settings file or dict that does not describe a valid experiment."""


def _expand_user(settings: object, *names: str) -> None:
    """`~/data` means the home directory's data, wherever a job runs."""
    for name in names:
        value = getattr(settings, name)
        if isinstance(value, str) and value.startswith("~"):
            object.__setattr__(settings, name, str(Path(value).expanduser()))


@dataclass(frozen=True)
class DataSettings:
    dataset: str = "fashion_mnist"
    root: str | None = None  # searched first for the raw files
    download_root: str = "results/data/raw"  # where torchvision downloads as a last resort
    validation_fraction: float = 0.1
    split_seed: int = 0
    train_subset: int | None = None  # use only this many training images (None: all)
    crop_padding: int = 2
    horizontal_flip: bool = True
    rotation_degrees: float = 0.0  # random rotation in [-d, d] (the paper's CIFAR-100: 15)
    image_size: int = 224  # streamed datasets (ImageNet): the crop fed to the model
    loader_workers: int = 0  # streamed datasets: DataLoader worker processes decoding JPEGs

    def __post_init__(self) -> None:
        _expand_user(self, "root", "download_root")


@dataclass(frozen=True)
class ModelSettings:
    name: str = "cnn"
    width: int = 32  # cnn, mlp
    depth: int = 28  # wrn
    widen: int = 10  # wrn
    dropout: float = 0.0  # wrn, wrn28_10


@dataclass(frozen=True)
class OodSettings:
    """Out-of-distribution evaluation on corrupted test images (CIFAR-10-C style)."""

    enabled: bool = True
    source: str = "generate"  # generate | files (official CIFAR-10-C/100-C .npy under `root`)
    root: str | None = None  # the directory of the official files, for source "files"
    corruptions: tuple[str, ...] = ()  # empty: all 19
    severities: tuple[int, ...] = (1, 2, 3, 4, 5)
    test_subset: int | None = 1000  # test images per corruption and severity (None: all)
    seed: int = 0

    def __post_init__(self) -> None:
        _expand_user(self, "root")


@dataclass(frozen=True)
class PretrainSettings:
    epochs: int = 20
    batch_size: int = 128
    lr: float = 0.1
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 5e-4
    schedule: str = "linear"  # linear | cosine | step | constant
    warmup_fraction: float = 0.0
    step_milestones: tuple[float, ...] = (0.5, 0.75)  # fractions of training, for "step"
    step_gamma: float = 0.1


@dataclass(frozen=True)
class PruneSettings:
    sparsity: float = 0.9  # goal after the last phase
    phases: int = 3
    selection: str = "global"  # global | layerwise | random
    exclude: tuple[str, ...] = ()  # first_conv, classifier: never pruned


@dataclass(frozen=True)
class RetrainSettings:
    epochs: int = 4
    schedule: str = "llr"  # ft | lrw | slr | clr | llr | allr
    warmup_fraction: float = 0.1


@dataclass(frozen=True)
class SoupSettings:
    ingredients: int = 4  # m
    methods: tuple[str, ...] = ("uniform", "greedy")
    bn_recalibration_fraction: float = 0.2  # share of the training split forwarded
    vary: str = "seed"  # the axis ingredients differ on: seed | weight_decay | lr | epochs | schedule
    values: tuple[Any, ...] = ()  # one value per ingredient, for every axis but seed
    subset_sizes: tuple[int, ...] = ()  # k of m: extra soups of the first k ingredients (no retraining)
    ablation_m: tuple[int, ...] = ()  # k < m: a full SMS uniform chain with k ingredients per phase


@dataclass(frozen=True)
class BaselineSettings:
    """Reference rows beside SMS, each a config switch (see layout for their models)."""

    imp_budget: bool = True  # IMP retrained m times as long per phase (SMS's compute)
    soup_at_end: bool = True  # m IMP retrains of the last phase, averaged once
    ensemble: bool = True  # mean-softmax ensemble of each phase's SMS ingredients
    lottery_pools: str = "last"  # none | last | all: target phases of Lottery Pools (interp and avg)
    lottery_pools_tickets: str = "imp"  # imp | imp_rewind: the chain whose tickets Lottery Pools mixes
    gmp: str = "last"  # none | last | all: target phases of gradual magnitude pruning (see gmp.py)
    gmp_sms: str = "last"  # none | last | all: target phases of GMP + SMS
    imp_rewind: bool = False  # IMP with weight rewinding to the end of epoch `rewind_epoch`
    rewind_epoch: int = 1  # < pretrain.epochs; 0 rewinds to the initialization


@dataclass(frozen=True)
class GmpSettings:
    """Gradual magnitude pruning (Zhu & Gupta 2017) and its SMS rounds; see gmp.py."""

    epochs: int | None = None  # None: IMP's budget to the target phase, pretrain + phase * retrain
    start_fraction: float | None = None  # pruning starts here; None: after pretrain.epochs
    ramp_fraction: float = 0.75  # share of the steps after start over which sparsity ramps up
    prune_interval: int = 10  # steps between pruning steps
    rounds: int | None = None  # GMP + SMS rounds after pruning starts; None: prune.phases


@dataclass(frozen=True)
class EvaluationSettings:
    """How every model is scored. `all` recalibrates BatchNorm of every evaluated model on
    the same `soup.bn_recalibration_fraction` of the training split, as the authors' code
    does; `soups` only the models made by averaging (which always are)."""

    recalibrate: str = "all"  # all | soups


@dataclass(frozen=True)
class ComputeSettings:
    """How training runs, for speed on GPUs. bf16 changes the numbers; the rest should not."""

    precision: str = "fp32"  # fp32 | bf16 (autocast for forward and loss)
    channels_last: bool = False
    compile: bool = False  # torch.compile the model for training


@dataclass(frozen=True)
class Settings:
    """Everything that determines the results of one experiment (seeds aside)."""

    name: str = "default"
    seeds: tuple[int, ...] = (0,)
    data: DataSettings = field(default_factory=DataSettings)
    model: ModelSettings = field(default_factory=ModelSettings)
    pretrain: PretrainSettings = field(default_factory=PretrainSettings)
    prune: PruneSettings = field(default_factory=PruneSettings)
    retrain: RetrainSettings = field(default_factory=RetrainSettings)
    soup: SoupSettings = field(default_factory=SoupSettings)
    compute: ComputeSettings = field(default_factory=ComputeSettings)
    baselines: BaselineSettings = field(default_factory=BaselineSettings)
    gmp: GmpSettings = field(default_factory=GmpSettings)
    ood: OodSettings = field(default_factory=OodSettings)
    evaluation: EvaluationSettings = field(default_factory=EvaluationSettings)
    eval_batch_size: int = 1000

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> Settings:
        return _build(cls, raw, path="")

    @classmethod
    def from_json(cls, path: str | Path) -> Settings:
        try:
            raw = json.loads(Path(path).read_text())
        except (OSError, json.JSONDecodeError) as error:
            raise SettingsError(f"cannot read settings file {path}: {error}") from error
        try:
            return cls.from_dict(raw)
        except SettingsError as error:
            raise SettingsError(f"{path}: {error}") from error

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _build(cls: type, raw: dict[str, Any], path: str) -> Any:
    """Construct nested frozen dataclasses, naming any unknown key by its dotted path."""
    if not isinstance(raw, dict):
        raise SettingsError(f"'{path or 'settings'}' must be a mapping, got {raw!r}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - set(fields))
    if unknown:
        raise SettingsError(f"unknown key '{path}{unknown[0]}' (expected one of {sorted(fields)})")
    values = {}
    for name, value in raw.items():
        default = getattr(cls(), name)
        if dataclasses.is_dataclass(default):
            value = _build(type(default), value, f"{path}{name}.")
        elif isinstance(default, tuple):
            value = tuple(value)
        values[name] = value
    return cls(**values)


def config_problems(config: dict[str, Any], schema_path: str | Path) -> list[str]:
    """Every problem of a workflow config, one line each, naming the key and its value.

    Checks the JSON schema (types, ranges, known names, no unknown keys), then the rules
    it cannot express, each only on sections whose types the schema has confirmed, so a
    wrong type is named by the schema instead of crashing a later check. Runs before any
    job, so a typo never costs a run.
    """
    from . import validation  # torch-free checks

    if not isinstance(config, dict):
        return [f"config: expected a mapping with the key 'experiments', got {config!r}"]
    problems: list[str] = []
    experiments = config.get("experiments")
    if isinstance(experiments, dict):
        problems += validation.name_problems(experiments)
        experiments = {str(name): value for name, value in experiments.items()}
        config = {**config, "experiments": experiments}
    errors = validation.schema_errors(config, schema_path)
    problems += [message for _, message in errors]
    for name, experiment in (experiments if isinstance(experiments, dict) else {}).items():
        if isinstance(experiment, dict):
            own = [path for path, _ in errors if path[:2] == ("experiments", name)]
            dirty = {path[2] if len(path) > 2 else None for path in own}
            problems += _experiment_problems(name, experiment, dirty)
    return problems


def _experiment_problems(name: str, experiment: dict[str, Any], dirty: set[Any]) -> list[str]:
    """The cross-key checks of one experiment. Each runs only when the sections it reads
    passed the schema (`dirty` holds those that did not); the checks on the whole
    settings only when everything else holds, so each problem is named once."""
    from . import validation

    key = f"experiments.{name}"

    def clean(*sections: str) -> bool:
        return not dirty & set(sections)

    found = []
    if clean("data"):
        found += _root_problems(name, experiment.get("data", {}))
        found += _imagenet_problems(name, experiment.get("data", {}))
    if clean("ood"):
        found += _ood_problems(name, experiment.get("ood", {}))
    if clean("soup"):
        found += _soup_problems(name, experiment.get("soup", {}))
    if clean("model"):
        found += validation.model_problems(experiment.get("model", {}), key)
    if clean("baselines", "prune"):
        found += validation.lottery_pools_problems(experiment, key)
    if dirty or found:
        return found
    return _settings_problems(name, experiment)


def _root_problems(name: str, data: dict[str, Any]) -> list[str]:
    root = data.get("root")
    if isinstance(root, str) and not Path(root).expanduser().is_dir():
        return [f"experiments.{name}.data.root: directory '{root}' does not exist"]
    return []


def _settings_problems(name: str, experiment: dict[str, Any]) -> list[str]:
    """Checks on the typed settings: the size of the plan, GMP's and rewinding's epochs
    against pretraining's, and the splits' sizes against what the experiment reads."""
    from . import validation
    from .gmp import problems as gmp_problems  # gmp imports this module

    key = f"experiments.{name}"
    try:
        settings = Settings.from_dict({"name": name, **experiment})
    except SettingsError as error:  # the schema and the dataclasses disagree
        return [f"{key}: {error}"]
    soup, seeds = settings.soup, len(settings.seeds)
    found = validation.size_problems(settings.prune.phases, soup.ingredients, len(soup.methods), seeds, key)
    if found:
        return found  # the checks below walk the phases
    found += gmp_problems(settings, key)
    total = validation.training_set_size(settings.data.dataset, settings.data.root)
    if total is not None:
        found += validation.split_problems(settings, total, key)
    return found


def _imagenet_problems(name: str, data: dict[str, Any]) -> list[str]:
    """ImageNet is never downloaded: its ImageFolder root must hold train/ and val/."""
    if not isinstance(data, dict) or data.get("dataset") != "imagenet":
        return []
    root = data.get("root")
    if not isinstance(root, str):
        return [f"experiments.{name}.data.root: imagenet needs the directory holding train/ and val/ "
                "(ImageFolder layout), got null"]  # fmt: skip
    if not Path(root).expanduser().is_dir():
        return []  # named once, as a missing directory, by the caller
    missing = [folder for folder in ("train", "val") if not (Path(root).expanduser() / folder).is_dir()]
    return [f"experiments.{name}.data.root: '{root}' lacks {part}/ (ImageFolder layout)" for part in missing]


def _ood_problems(name: str, ood: dict[str, Any]) -> list[str]:
    """Official corrupted sets must be where `ood.root` says, before any job runs."""
    if not isinstance(ood, dict) or not ood.get("enabled", True) or ood.get("source") != "files":
        return []
    root = ood.get("root")
    if not isinstance(root, str):
        return [f"experiments.{name}.ood.root: source 'files' needs the directory of the official "
                "CIFAR-10-C/100-C .npy files (or ImageNet-C), got null"]  # fmt: skip
    if not Path(root).expanduser().is_dir():
        return [f"experiments.{name}.ood.root: directory '{root}' does not exist"]
    return []


_AXIS_TYPES: dict[str, tuple[type, ...]] = {
    "weight_decay": (int, float), "lr": (int, float), "epochs": (int,), "schedule": (str,),
}  # fmt: skip
RETRAIN_SCHEDULES = ("ft", "lrw", "slr", "clr", "llr", "allr")


def _soup_problems(name: str, soup: dict[str, Any]) -> list[str]:
    """Cross-key checks the schema cannot express: one value per ingredient, of the axis' type."""
    if not isinstance(soup, dict):
        return []
    key = f"experiments.{name}.soup"
    axis, values, m = soup.get("vary", "seed"), soup.get("values", []), soup.get("ingredients", 4)
    problems = [
        f"{key}.{name}: {k} is more than the {m} ingredients"
        for name in ("subset_sizes", "ablation_m")
        for k in soup.get(name, []) or []
        if isinstance(m, int) and isinstance(k, int) and k > m
    ]
    if axis == "seed" or axis not in _AXIS_TYPES or not isinstance(values, list):
        if axis == "seed" and values:
            problems.append(f"{key}.values: must be empty when vary is 'seed' (got {values!r})")
        return problems
    if isinstance(m, int) and len(values) != m:
        problems.append(f"{key}.values: {len(values)} values for {m} ingredients (need one each)")
    for value in values:
        wrong_type = not isinstance(value, _AXIS_TYPES[axis]) or isinstance(value, bool)
        if wrong_type or (axis == "schedule" and value not in RETRAIN_SCHEDULES):
            problems.append(f"{key}.values: {value!r} is not a valid {axis}")
        elif axis != "schedule" and (value < 0 or (axis != "weight_decay" and value == 0)):
            problems.append(f"{key}.values: {value!r} is out of range for {axis}")
    return problems
