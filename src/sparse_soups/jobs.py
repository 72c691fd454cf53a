"""One function per workflow job: the method step with the workflow's names filled in.

A method step (`methods/`) is told where its model lives in the run and which recipe it
follows; these functions decide both, from `layout` and `plan`, so a job can be run by
name from the command line (`cli.COMMANDS`), from a Snakemake rule or from a test, e.g.

    jobs.retrain(settings, "results/x/data.pt", parent, "dense", phase=1, index=0, seed=0, out=...)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from . import layout, plan
from .config import Settings, gmp_rounds
from .kernels.checkpoints import Checkpoint
from .methods import evaluation, gmp, imp, sms
from .methods import lottery_pools as pools
from .methods.context import Job

prepare_data = evaluation.prepare_data
corrupt_test_set = evaluation.corrupt_test_set


def _phase_of(path: Path) -> int:
    """The phase of a step that merges checkpoints: its first input's."""
    return Checkpoint.load(path).meta.get("phase")


def _training(settings: Settings, data: Path, device: str, model_dir: str, out: Path) -> Job:
    """A training job's context: its history.csv beside the checkpoint and its TensorBoard
    run under the experiment's `tensorboard/`, where `layout` puts them."""
    out = Path(out)
    history, tensorboard = layout.history_path(out), layout.tensorboard_dir(out, model_dir)
    return Job(settings, data, device, model_dir, history_out=history, tensorboard_dir=tensorboard)


def pretrain(settings: Settings, data: Path, seed: int, out: Path, device: str = "cpu") -> Checkpoint:
    return imp.pretrain(_training(settings, data, device, layout.DENSE, out), seed, out)


def retrain(
    settings: Settings, data: Path, parent: Path, lineage: str, phase: int, index: int, seed: int, out: Path,
    device: str = "cpu",
) -> Checkpoint:  # fmt: skip
    """The retrain in `{lineage}/phase{phase}/ingredient{index}`, with the recipe `plan` gives it."""
    model_dir = layout.path("ingredient", lineage=lineage, phase=phase, index=index)
    job = _training(settings, data, device, model_dir, out)
    recipe = plan.retrain_recipe(settings, lineage, index)
    return imp.retrain(job, parent, lineage, phase, index, seed, recipe, out)


def rewind_point(settings: Settings, data: Path, seed: int, out: Path, device: str = "cpu") -> Checkpoint:
    return imp.rewind_point(_training(settings, data, device, layout.REWIND, out), seed, out)


def imp_rewind(
    settings: Settings,
    data: Path,
    parent: Path,
    rewind: Path,
    phase: int,
    seed: int,
    out: Path,
    device: str = "cpu",
) -> Checkpoint:
    job = _training(settings, data, device, layout.ingredient_dir(layout.IMP_REWIND, phase, 0), out)
    return imp.imp_rewind(job, parent, rewind, layout.IMP_REWIND, phase, seed, out)


def soup(
    settings: Settings, data: Path, method: str, ingredients: list[Path], out: Path, device: str = "cpu",
    name: str | None = None, base: Path | None = None,
) -> Checkpoint:  # fmt: skip
    """The soup `name` (see `layout.soup_recipe`; the method's name by default); an
    optimized soup (the learned one) writes its history.csv beside it."""
    model_dir = layout.soup_dir(name or method, _phase_of(ingredients[0]))
    job = Job(settings, data, device, model_dir, history_out=layout.history_path(Path(out)))
    timing = Path(out).with_name(layout.TIMING_FILE) if Path(out).name == layout.MODEL_FILE else None
    return sms.soup(job, method, ingredients, out, name, base, timing)


def ensemble(
    settings: Settings, data: Path, ingredients: list[Path], out: Path, device: str = "cpu",
    ood_dir: Path | None = None,
) -> dict[str, Any]:  # fmt: skip
    job = Job(settings, data, device, layout.ensemble_dir(_phase_of(ingredients[0])))
    return sms.ensemble(job, ingredients, out, ood_dir)


def lottery_pools(
    settings: Settings, data: Path, target_phase: int, tickets: list[Path], variant: str, out: Path,
    device: str = "cpu",
) -> Checkpoint:  # fmt: skip
    job = Job(settings, data, device, layout.lottery_pools_dir(variant, target_phase))
    return pools.lottery_pools(job, target_phase, tickets, variant, out)


def gmp_train(
    settings: Settings, data: Path, phase: int, seed: int, out: Path, prefix_out: Path, device: str = "cpu"
) -> Checkpoint:
    job = _training(settings, data, device, layout.gmp_dir(phase), out)
    return gmp.gmp_train(job, phase, seed, out, prefix_out, layout.gmp_prefix_dir(phase))


def gmp_sms_ingredient(
    settings: Settings, data: Path, parent: Path, phase: int, round_index: int, index: int, seed: int,
    out: Path, device: str = "cpu",
) -> Checkpoint:  # fmt: skip
    job = _training(settings, data, device, layout.gmp_sms_ingredient_dir(phase, round_index, index), out)
    return gmp.gmp_sms_ingredient(job, parent, phase, round_index, index, seed, out)


def gmp_sms_average(
    settings: Settings, data: Path, phase: int, round_index: int, ingredients: list[Path], out: Path,
    device: str = "cpu",
) -> Checkpoint:  # fmt: skip
    job = Job(settings, data, device, layout.gmp_sms_round_dir(phase, round_index, gmp_rounds(settings)))
    return gmp.gmp_sms_average(job, phase, round_index, ingredients, out)


def evaluate(
    settings: Settings,
    data: Path,
    checkpoint_path: Path,
    out: Path,
    device: str = "cpu",
    ood_dir: Path | None = None,
) -> dict[str, Any]:
    return evaluation.evaluate(Job(settings, data, device), checkpoint_path, out, ood_dir)
