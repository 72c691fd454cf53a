"""Metrics of one model (or a mean-softmax ensemble): accuracy, calibration, worst class,
out-of-distribution accuracy, sparsity and theoretical FLOPs.

Each split is forwarded once; accuracy, ECE and worst-class accuracy all come from the
collected logits. OOD cells are read one at a time from the corrupted set (memory-mapped
`.npy` files, or streamed ImageNet-C JPEGs), normalized like the test split, and forwarded
at `eval_batch_size`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.fx.experimental.optimization import fuse

from ..config import OodSettings
from .checkpoints import NonFiniteError
from .data import Dataset, Split, iterate_batches
from .metrics import (
    expected_calibration_error,
    group_accuracy,
    maximum_calibration_error,
    theoretical_flops,
    worst_class_accuracy,
    worst_group_accuracy,
)
from .ood_sets import ood_corruptions
from .pruning import sparsity
from .stopwatch import arithmetic
from .tasks import Segmentation, Translation, mean_iou, segmentation_metrics, task_of, translation_metrics

Predict = Callable[[torch.Tensor], torch.Tensor]  # images -> logits (or log-probabilities)
ECE_BINS = 15


def inference_model(model: nn.Module) -> nn.Module:
    """`model` in eval mode with each BatchNorm folded into the convolution before it
    (torch.fx's `fuse`, on a copy): the same function up to rounding (outputs within 1e-6),
    and 1.45x faster to evaluate on CPU, where BatchNorm took a third of inference. A model
    that fx cannot trace is evaluated as it is."""
    model.eval()
    if not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules()):
        return model  # nothing to fold (e.g. the Transformer, whose decoding needs its methods)
    try:
        return fuse(model, inplace=False)
    except Exception:  # any tracing failure just means no folding
        return model


def model_predict(model: nn.Module) -> Predict:
    return inference_model(model)


def ensemble_predict(models: Sequence[nn.Module]) -> Predict:
    """Log of the mean softmax: its argmax and softmax are the ensemble's prediction and
    confidence, so every logit-based metric applies to the ensemble unchanged."""
    models = [inference_model(model) for model in models]

    def predict(images: torch.Tensor) -> torch.Tensor:
        return torch.stack([model(images).softmax(1) for model in models]).mean(0).log()

    return predict


@torch.no_grad()
@arithmetic("evaluation")
def collect_logits(predict: Predict, split: Split, batch_size: int) -> torch.Tensor:
    """Outputs for the whole split in order, on the CPU in float32; NaN outputs stop here,
    since accuracy would count them as wrong answers and ECE would become NaN."""
    outputs = [predict(images).float().cpu() for images, _ in iterate_batches(split, batch_size)]
    if not outputs:
        raise ValueError("the split to evaluate holds no images (see data.validation_fraction)")
    logits = torch.cat(outputs)
    if bool(logits.isnan().any()):  # -inf is fine: an ensemble's log of a zero probability
        bad = int(logits.isnan().any(1).sum())
        raise NonFiniteError(f"the model's outputs are NaN for {bad} of {len(logits)} images")
    return logits


def _accuracy(logits: torch.Tensor, labels: torch.Tensor) -> float:
    return int((logits.argmax(1) == labels.cpu()).sum()) / len(labels)


def score(predict: Predict, split: Split, batch_size: int) -> float:
    """The split's task's selection score: plain top-1 accuracy (not class-balanced) for
    classification, mean IoU for segmentation, BLEU / 100 for translation (tasks.py; there
    `predict` is the model, which decodes)."""
    task = task_of(split)
    if isinstance(task, Translation):
        return task.bleu(predict, split, batch_size)[0] / 100
    if isinstance(task, Segmentation):
        return mean_iou(task.confusion(predict, split, batch_size, _num_classes(predict, split)))
    return _accuracy(collect_logits(predict, split, batch_size), split.labels)


def _num_classes(predict: Predict, split: Split) -> int:
    with torch.no_grad():
        return int(predict(split.images[:1]).shape[1])


def accuracy(model: nn.Module, split: Split, batch_size: int) -> float:
    """The model's score on `split` in eval mode: top-1 accuracy, or mIoU (segmentation)."""
    return score(model_predict(model), split, batch_size)


def ensemble_accuracy(models: list[nn.Module], split: Split, batch_size: int) -> float:
    """The score of the mean softmax of `models`, against the split's true labels (not
    agreement with one member, the defect of the authors' code)."""
    return score(ensemble_predict(models), split, batch_size)


def prediction_metrics(predict: Predict, dataset: Dataset, batch_size: int) -> dict[str, float]:
    """Test and validation accuracy, test ECE and MCE (15 bins), test worst-class accuracy
    and, where the data has groups, per-group and worst-group test accuracy. Segmentation:
    mIoU and pixel accuracy (tasks.py)."""
    if isinstance(dataset.task, Segmentation):
        return segmentation_metrics(predict, dataset, batch_size)
    if isinstance(dataset.task, Translation):
        return translation_metrics(predict, dataset, batch_size)
    test_logits = collect_logits(predict, dataset.test, batch_size)
    test_labels = dataset.test.labels.cpu()
    val_logits = collect_logits(predict, dataset.val, batch_size)
    metrics = {
        "test_accuracy": _accuracy(test_logits, test_labels),
        "validation_accuracy": _accuracy(val_logits, dataset.val.labels),
        "ece": expected_calibration_error(test_logits, test_labels, ECE_BINS),
        "mce": maximum_calibration_error(test_logits, test_labels, ECE_BINS),
        "worst_class_accuracy": worst_class_accuracy(test_logits, test_labels),
    }
    return metrics | group_metrics(test_logits, dataset)


def group_metrics(test_logits: torch.Tensor, dataset: Dataset) -> dict[str, Any]:
    """Test accuracy per group and of the worst group, for data with groups (Celeb-A)."""
    groups = getattr(dataset.test, "groups", None)
    if groups is None or not dataset.group_names:
        return {}
    labels, groups, n = dataset.test.labels.cpu(), groups.cpu(), len(dataset.group_names)
    per_group = group_accuracy(test_logits, labels, groups, n)
    return {
        "worst_group_accuracy": worst_group_accuracy(test_logits, labels, groups, n),
        "group_accuracy": {
            name: float(acc)
            for name, acc in zip(dataset.group_names, per_group, strict=True)
            if not acc.isnan()
        },
    }


@torch.no_grad()
def ood_metrics(
    predict: Predict, dataset: Dataset, ood_dir: Path | None, ood: OodSettings, batch_size: int
) -> dict[str, Any]:
    """`ood`: {corruption: {"severity": accuracy}} and `ood_accuracy`, their mean over all
    cells; both None when OOD is off or no corrupted set is given."""
    if ood_dir is None or not ood.enabled:
        return {"ood": None, "ood_accuracy": None}
    table: dict[str, dict[str, float]] = {}
    for name in ood_corruptions(ood):
        table[name] = {}
        for severity in ood.severities:
            split = dataset.corrupted_split(Path(ood_dir), name, severity)
            table[name][str(severity)] = _accuracy(collect_logits(predict, split, batch_size), split.labels)
    cells = [acc for row in table.values() for acc in row.values()]
    return {"ood": table, "ood_accuracy": sum(cells) / len(cells)}


@arithmetic("evaluation")
def cost_metrics(model: nn.Module, dataset: Dataset) -> dict[str, Any]:
    """Measured sparsity and theoretical multiply-adds per image, sparse and dense."""
    global_sparsity, layer_sparsity = sparsity(model)
    shape, example = dataset.input_shape, None
    if isinstance(dataset.task, Translation):  # per sentence pair: the first test pair
        sources, targets = dataset.test.images[:1], dataset.test.labels[:1]
        example = dataset.task.forward(lambda *inputs: inputs, sources, targets)[0]
    flops = theoretical_flops(model, shape, sparse=True, example=example)
    dense_flops = theoretical_flops(model, shape, sparse=False, example=example)
    return {
        "sparsity": global_sparsity,
        "layer_sparsity": layer_sparsity,
        "flops": flops,
        "dense_flops": dense_flops,
        "speedup": dense_flops / flops if flops else float("inf"),
    }


def model_metrics(
    model: nn.Module,
    dataset: Dataset,
    batch_size: int,
    ood_dir: Path | None = None,
    ood: OodSettings | None = None,
) -> dict[str, Any]:
    predict = model_predict(model)
    return {
        **prediction_metrics(predict, dataset, batch_size),
        **cost_metrics(model, dataset),
        **ood_metrics(predict, dataset, ood_dir, ood or OodSettings(), batch_size),
    }
