"""Sparse Model Soups: average a phase's ingredients, which share one mask, and
recalibrate BatchNorm; and the mean-softmax ensemble of the same ingredients, the
reference that costs m times the inference.

A soup method (`registry.SOUP_METHODS`) either chooses which ingredients to average from
the validation score of candidate soups (uniform, greedy, swamp, or a plugin's), or, with
`merges=True`, is a merging operator (learned, Model Stock, TIES, DARE, Fisher; operators.py).
Every soup keeps its ingredients' mask: the step checks it before saving.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from torch import nn

from ..kernels.checkpoints import Checkpoint
from ..kernels.evaluation import accuracy, ensemble_predict, ood_metrics, prediction_metrics
from ..kernels.files import sha256, write_json
from ..kernels.history import write_rows
from ..kernels.metrics import soup_geometry
from ..kernels.pruning import sparsity
from ..kernels.soups import average_state_dicts, check_keeps_mask, check_shared_mask
from ..registry import SOUP_METHODS
from .context import Job
from .operators import Pot
from .record import total_budget

log = logging.getLogger(__name__)


def soup(
    job: Job,
    method: str,
    ingredients: list[Path],
    out: Path,
    name: str | None = None,
    base: Path | None = None,
    timing_out: Path | None = None,
) -> Checkpoint:
    """Merge the ingredients as `method` says and recalibrate BN. `name` is the soup's
    name in the run (e.g. `soup_at_end`, `uniform_k2`), the method's by default; `base` the
    chain's model the phase started from, for the operators that merge updates (registry
    info `base`). The merge's seconds go to `timing_out`, never into the checkpoint or
    its metrics, which must be the same in every run."""
    name = name or method
    loaded = [Checkpoint.load(path) for path in ingredients]
    phases = {c.meta.get("phase") for c in loaded}
    if len(phases) != 1:
        raise ValueError(f"ingredients come from different phases {sorted(phases)}: {ingredients}")
    states = [c.state_dict for c in loaded]
    check_shared_mask(states, [c.masks for c in loaded])
    _ = job.dataset  # loaded before the model is built, as for every step
    model = job.new_model()
    first = loaded[0].meta
    started = time.perf_counter()
    if SOUP_METHODS.info(method).get("merges"):
        pot = Pot(job, states, loaded[0].masks, model, first["seed"], first["phase"], base)
        merged = SOUP_METHODS.get(method)(pot)
        details: dict[str, Any] = {"kept": list(range(len(loaded))), **merged.details}
        model.load_state_dict(merged.state)
        job.recalibrate(model)
        if merged.history is not None:
            write_rows(
                merged.history, job.history_out or Path(out).with_name(f"{Path(out).stem}.history.csv")
            )
    else:
        kept = _selected_average(job, method, loaded, model)
        details = {"kept": kept}
    seconds = time.perf_counter() - started
    check_keeps_mask(model.state_dict(), loaded[0].masks)
    record = job.record(
        first["seed"], "soup", method=name, phase=first["phase"], target_sparsity=first["target_sparsity"],
        **details, ingredients=[str(p) for p in ingredients],
        ingredient_sha256=[sha256(p) for p in ingredients],
        geometry=soup_geometry(states, model.state_dict()),
        budget_epochs=total_budget(c.meta for c in loaded), bn_recalibrated=True,
        **({"base_sha256": sha256(base)} if base is not None else {}),
    )  # fmt: skip
    log.info("%s soup of %d ingredients in %.1f s: %s", method, len(loaded), seconds, details.get("kept"))
    checkpoint = job.save(model.state_dict(), loaded[0].masks, record.to_meta(), out)
    if timing_out is not None:
        write_json({"merge_seconds": seconds}, timing_out)
    return checkpoint


def _selected_average(job: Job, method: str, loaded: list[Checkpoint], model: nn.Module) -> list[int]:
    """A selection method (uniform, greedy, a plugin's): it picks which ingredients to
    average from the validation score of candidate soups; `model` ends as its soup."""
    select = SOUP_METHODS.get(method)

    def build(indices: list[int]) -> nn.Module:
        model.load_state_dict(
            average_state_dicts([loaded[i].state_dict for i in indices], [loaded[i].masks for i in indices])
        )
        job.recalibrate(model)
        return model

    kept = select(len(loaded), lambda indices: accuracy(build(indices), job.dataset.val, job.batch_size))
    build(kept)
    return kept


def ensemble(job: Job, ingredients: list[Path], out: Path, ood_dir: Path | None = None) -> dict[str, Any]:
    """Metrics of the mean-softmax ensemble of a phase's ingredients, against the true labels.

    Not a sparse model: its inference cost is the sum of its members' nonzero weights,
    recorded as `inference_cost` relative to one dense model.
    """
    loaded = [(Checkpoint.load(path), path) for path in ingredients]
    models = [job.load_model(c, path) for c, path in loaded]
    recalibrated = [
        job.recalibrate_for_evaluation(m, c.meta) for m, (c, _) in zip(models, loaded, strict=True)
    ]
    member_sparsity = [sparsity(model)[0] for model in models]
    first = loaded[0][0].meta
    predict, settings = ensemble_predict(models), job.settings
    record = job.record(
        first["seed"], "ensemble", phase=first["phase"], target_sparsity=first["target_sparsity"],
        sparsity=sum(member_sparsity) / len(models),
        **prediction_metrics(predict, job.dataset, job.batch_size),
        **ood_metrics(predict, job.dataset, ood_dir, settings.ood, job.batch_size),
        inference_cost=sum(1 - s for s in member_sparsity),
        bn_recalibrated=all(recalibrated), budget_epochs=total_budget(c.meta for c, _ in loaded),
        members=[str(p) for p in ingredients], checkpoint_sha256=None,
        member_sha256=[sha256(p) for p in ingredients],
    )  # fmt: skip
    metrics = record.to_meta()
    write_json(metrics, out)
    return metrics
