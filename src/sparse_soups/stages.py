"""Per-stage settings: each job reads only the settings its stage uses.

The workflow writes one small file per stage (`results/{experiment}/settings/{stage}.json`)
holding just the keys listed in `STAGES`, and each rule takes its stage's file as input.
So a change reruns only the jobs whose settings changed: adding a seed, an experiment or
a baseline plans only their own jobs; `ood.test_subset` reruns the evaluations, never
training; `retrain.epochs` reruns the retrains and what follows, never pretraining.

A step cannot read outside its stage: `read_settings` fills the sections a stage does not
list with `Withheld` stand-ins that raise on use, naming the stage and the key, rather than
silently taking a default (`tests/test_incremental.py` runs every stage's steps this way).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from .config import LoggingSettings, Settings, SettingsError

# The keys each stage reads: a whole section ("data") or one key of it ("pretrain.batch_size").
# `name` (the experiment) is in every stage; `seeds` in none, as each job gets its seed.
_MODEL = ("data", "model", "compute")
_TRAINING = (*_MODEL, "pretrain")
_SCORING = ("soup.bn_recalibration_fraction", "eval_batch_size")
STAGES: dict[str, tuple[str, ...]] = {
    "data": ("data", "pretrain.batch_size"),
    "ood": ("ood", "data.image_size"),
    "pretrain": _TRAINING,
    "retrain": (*_TRAINING, "prune", "retrain", "soup.ingredients", "soup.vary", "soup.values"),
    "rewind": (*_TRAINING, "prune", "baselines.rewind_epoch"),
    "soup": (*_MODEL, *_SCORING),
    # The merging operators (learned, Model Stock, TIES, DARE, Fisher) and SWAMP's retrains.
    "merge": (*_MODEL, *_SCORING, "merging", "pretrain.batch_size"),
    "retrain_swa": (
        *_TRAINING,
        "prune",
        "retrain",
        "soup.ingredients",
        "soup.vary",
        "soup.values",
        "soup.bn_recalibration_fraction",
        "eval_batch_size",
        "merging.swa_fraction",
    ),
    "lottery_pools": (*_MODEL, "prune", *_SCORING),
    "gmp": (*_TRAINING, "prune", "retrain.epochs", "gmp", *_SCORING),
    "evaluate": (*_MODEL, "ood", "evaluation", *_SCORING),
    # How training jobs record (history.csv, TensorBoard): their second settings file,
    # which the workflow marks ancient, so a change applies to new jobs and reruns none.
    "logging": ("logging",),
}
TRAINING_STAGES = ("pretrain", "retrain", "retrain_swa", "rewind", "gmp")


def stage_settings(settings: Settings, stage: str) -> dict[str, Any]:
    """What the stage's settings file holds: its keys of `settings`, nested as in the config."""
    full = settings.to_dict()
    out: dict[str, Any] = {"stage": stage, "name": settings.name}
    for key in STAGES[stage]:
        section, _, field = key.partition(".")
        if not field:
            out[section] = full[section]
        else:
            out.setdefault(section, {})[field] = full[section][field]
    return out


def write_stage_settings(keys: dict[str, Any], out: str | Path, log: str | Path) -> None:
    """The `stage_settings` rule: the file, and a log line naming the keys it holds."""
    from .kernels.files import write_json

    write_json(keys, out)
    Path(log).write_text(f"wrote {out}: {', '.join(STAGES[keys['stage']])}\n")


@dataclasses.dataclass(frozen=True)
class Withheld:
    """A section (or the rest of one) that the stage does not read."""

    stage: str
    section: str
    given: dict[str, Any] = dataclasses.field(default_factory=dict)

    def __getattr__(self, name: str) -> Any:
        if name in self.given:
            return self.given[name]
        key, stage = f"{self.section}.{name}", self.stage
        raise SettingsError(
            f"stage '{stage}' does not read '{key}': add it to stages.STAGES['{stage}'] "
            "so that changing it reruns this stage"
        )


_FIELDS = tuple(field.name for field in dataclasses.fields(Settings))


@dataclasses.dataclass(frozen=True)
class StageSettings(Settings):
    """Settings of one stage: a key the stage does not list raises instead of defaulting."""

    stage: str = ""
    readable: frozenset[str] = frozenset()

    def __getattribute__(self, name: str) -> Any:
        if name in _FIELDS and name not in object.__getattribute__(self, "readable"):
            stage = object.__getattribute__(self, "stage")
            raise SettingsError(
                f"stage '{stage}' does not read '{name}': add it to stages.STAGES['{stage}'] "
                "so that changing it reruns this stage"
            )
        return object.__getattribute__(self, name)


def read_settings(path: str | Path) -> Settings:
    """A job's settings: a stage file (only its keys readable) or a full settings file."""
    try:
        raw = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise SettingsError(f"cannot read settings file {path}: {error}") from error
    if not isinstance(raw, dict) or "stage" not in raw:
        return Settings.from_json(path)
    stage = raw.pop("stage")
    if stage not in STAGES:
        raise SettingsError(f"{path}: unknown stage '{stage}' (known: {', '.join(STAGES)})")
    try:
        settings = Settings.from_dict(raw)
    except SettingsError as error:
        raise SettingsError(f"{path}: {error}") from error
    values = {name: getattr(settings, name) for name in _FIELDS}
    for key in STAGES[stage]:
        section, _, field = key.partition(".")
        if field:  # only some keys of this section: the others are withheld
            given = {name: getattr(values[section], name) for name in raw[section]}
            values[section] = Withheld(stage, section, given)
    readable = frozenset(["name", *(key.partition(".")[0] for key in STAGES[stage])])
    return StageSettings(**values, stage=stage, readable=readable)


def with_logging(settings: Settings, path: str | Path | None) -> Settings:
    """A training job's settings with `logging` from the logging stage's file (defaults
    when none is given): recording is kept out of the training stages, so that turning on
    TensorBoard or validating more often retrains nothing already trained."""
    logging = read_settings(path).logging if path is not None else LoggingSettings()
    values = {name: object.__getattribute__(settings, name) for name in _FIELDS}
    values["logging"] = logging
    if isinstance(settings, StageSettings):
        return StageSettings(**values, stage=settings.stage, readable=settings.readable | {"logging"})
    return Settings(**values) if path is not None else settings
