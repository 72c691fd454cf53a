"""Hyperparameters of one experiment, one dataclass per concern.

Every default is declared here and nowhere else: the workflow checks `config/*.yaml`
against `workflow/schemas/config.schema.yaml` (types, ranges, names; no defaults), builds
each experiment's settings from these dataclasses, and hands each job the resolved
settings as JSON. Also here: what the settings imply without torch (GMP's epochs, the
phases a baseline switch aims at), which the workflow plans with.
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
    scale_range: tuple[float, float] = (0.5, 2.0)  # segmentation: random scale before the crop
    image_size: int = 224  # ImageNet: the crop fed to the model; Celeb-A: the resized faces
    loader_workers: int = 0  # streamed datasets: DataLoader worker processes decoding JPEGs
    target_attribute: str = "Blond_Hair"  # Celeb-A: the label
    group_attribute: str = "Male"  # Celeb-A: crossed with the label, the groups of worst-group accuracy
    vocab_size: int = 32_000  # translation: the joint BPE vocabulary, trained when the data is prepared
    max_length: int = 128  # translation: tokens per sentence (longer ones are truncated)
    label_smoothing: float = 0.1  # translation: of the loss (part of the task, as in Vaswani et al.)

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
    optimizer: str = "sgd"  # sgd (the paper's image tasks) | adamw (Transformers)
    momentum: float = 0.9  # sgd
    nesterov: bool = True  # sgd
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
class MergingSettings:
    """The merging operators beyond uniform and greedy soups (kernels/merging.py); each
    grid is searched on the validation split, the best point kept."""

    ties_density: tuple[float, ...] = (0.2, 0.5, 0.8)  # TIES: share of each update kept (1 - trim)
    ties_scale: tuple[float, ...] = (1.0,)  # TIES: lambda, the merged update's scale
    dare_drop_rate: tuple[float, ...] = (0.1, 0.5, 0.9)  # DARE: probability of dropping an update entry
    learned_per_layer: bool = False  # learned soup: one coefficient per ingredient and tensor
    learned_epochs: int = 5  # learned soup: passes over the validation split
    learned_lr: float = 0.05  # learned soup: AdamW's step on the mixing logits
    fisher_fraction: float = 0.1  # Fisher: share of the training split for the diagonal Fisher
    swa_fraction: float = 0.5  # SWAMP: the late share of each retrain averaged into its weights


@dataclass(frozen=True)
class BaselineSettings:
    """Reference rows beside SMS, each a config switch (see layout for their models)."""

    imp_budget: bool = True  # IMP retrained m times as long per phase (SMS's compute)
    soup_at_end: bool = True  # m IMP retrains of the last phase, averaged once
    ensemble: bool = True  # mean-softmax ensemble of each phase's SMS ingredients
    lottery_pools: str = "last"  # none | last | all: target phases of Lottery Pools (interp and avg)
    lottery_pools_tickets: str = "imp"  # imp | imp_rewind: the chain whose tickets Lottery Pools mixes
    gmp: str = "last"  # none | last | all: target phases of GMP (see kernels/gradual.py)
    gmp_sms: str = "last"  # none | last | all: target phases of GMP + SMS
    imp_rewind: bool = False  # IMP with weight rewinding to the end of epoch `rewind_epoch`
    rewind_epoch: int = 1  # < pretrain.epochs; 0 rewinds to the initialization


@dataclass(frozen=True)
class GmpSettings:
    """Gradual magnitude pruning (Zhu & Gupta 2017) and its SMS rounds; see kernels/gradual.py."""

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
class LoggingSettings:
    """What each training job records as it runs (history.csv, its log, TensorBoard).
    Validation does not touch the training state, so these change no model: they are
    in the training stages' settings only so that a change rewrites the histories."""

    validate_every_steps: int | None = None  # None: at the end of every epoch
    validation_images: int | None = 1000  # the validation split's first n (None: all)
    tensorboard: bool = False


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
    merging: MergingSettings = field(default_factory=MergingSettings)
    compute: ComputeSettings = field(default_factory=ComputeSettings)
    baselines: BaselineSettings = field(default_factory=BaselineSettings)
    gmp: GmpSettings = field(default_factory=GmpSettings)
    ood: OodSettings = field(default_factory=OodSettings)
    evaluation: EvaluationSettings = field(default_factory=EvaluationSettings)
    logging: LoggingSettings = field(default_factory=LoggingSettings)
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


# --- what the settings imply, without torch (the workflow plans with these) ---------


LOTTERY_POOLS_VARIANTS = ("interp", "avg")  # alpha grid search, and alpha = 0.5
BASELINE_TARGETS = ("none", "last", "all")  # the phases a baseline switch aims at
# What an ingredient's recipe may vary in (`soup.vary`), with the type of its values.
VARY_AXES: dict[str, tuple[type, ...]] = {
    "seed": (int,), "weight_decay": (int, float), "lr": (int, float), "epochs": (int,), "schedule": (str,),
}  # fmt: skip


def target_phases(switch: str, phases: int) -> list[int]:
    """The phases a `none | last | all` baseline switch aims at."""
    targets = dict(zip(BASELINE_TARGETS, ([], [phases], list(range(1, phases + 1))), strict=True))
    return targets[switch]


def gmp_epochs(settings: Settings, phase: int) -> int:
    """GMP's length: `gmp.epochs`, or IMP's budget to reach phase `phase`."""
    if settings.gmp.epochs is not None:
        return settings.gmp.epochs
    return settings.pretrain.epochs + phase * settings.retrain.epochs


def dense_epochs(settings: Settings, phase: int) -> int:
    """Epochs before pruning starts: `start_fraction` of GMP's, or pretraining's length."""
    epochs = gmp_epochs(settings, phase)
    if settings.gmp.start_fraction is None:
        return min(settings.pretrain.epochs, epochs)
    return round(settings.gmp.start_fraction * epochs)


def gmp_rounds(settings: Settings) -> int:
    return settings.gmp.rounds if settings.gmp.rounds is not None else settings.prune.phases


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
