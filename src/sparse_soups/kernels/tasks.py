"""What a task brings to the shared pipeline: its loss, its training accuracy, the score that
selects models on validation data (greedy soups, Lottery Pools, the training monitor), and
its test metrics.

Everything else (pruning, soups, schedules, the DAG) is the same for every task. A dataset
names its task in its registration (`registry.DATASETS`, `task=`); `load_prepared` puts the
task on the dataset and on each split, so scoring a split needs nothing else.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

if TYPE_CHECKING:
    from .data import Dataset, Split

Predict = Callable[[torch.Tensor], torch.Tensor]  # inputs -> logits (or log-probabilities)


class Classification:
    """One label per image: cross entropy, top-1 accuracy (the paper's image tasks)."""

    name = "classification"
    metric, label = "test_accuracy", "accuracy"  # the headline metric of the report's main table

    def forward(self, model: Callable, inputs: torch.Tensor, targets: torch.Tensor) -> tuple:
        """The outputs for a training batch, and the targets the loss compares them with."""
        return model(inputs), targets

    def loss(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return nn.functional.cross_entropy(outputs, targets)

    def correct(self, outputs: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, int]:
        """Correct predictions (a device tensor: no GPU sync per step) and how many were counted."""
        return (outputs.argmax(1) == targets).sum(), targets.numel()


class Segmentation(Classification):
    """A class per pixel, `ignore_index` for pixels without one: cross entropy over labelled
    pixels; models are selected and reported by mean IoU, the standard segmentation score,
    with pixel accuracy beside it (as `test_accuracy`)."""

    name = "segmentation"
    metric, label = "test_miou", "mIoU"

    def __init__(self, ignore_index: int = 255) -> None:
        self.ignore_index = ignore_index

    def loss(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return nn.functional.cross_entropy(outputs, targets, ignore_index=self.ignore_index)

    def correct(self, outputs: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, int]:
        labelled = targets != self.ignore_index
        return ((outputs.argmax(1) == targets) & labelled).sum(), int(labelled.sum())

    @torch.no_grad()
    def confusion(self, predict: Predict, split: Split, batch_size: int, num_classes: int) -> torch.Tensor:
        """(true class, predicted class) pixel counts over the split, ignored pixels left out;
        accumulated batch by batch, as a split's logits would not fit in memory."""
        counts = torch.zeros(num_classes * num_classes, dtype=torch.int64)
        for images, masks in split.batches(batch_size):
            predicted = predict(images).argmax(1).cpu().flatten()
            masks = masks.cpu().flatten()
            keep = masks != self.ignore_index
            counts += torch.bincount(masks[keep] * num_classes + predicted[keep], minlength=num_classes**2)
        return counts.view(num_classes, num_classes)


def iou_per_class(confusion: torch.Tensor) -> torch.Tensor:
    """Intersection over union of each class (NaN for a class in neither labels nor
    predictions), from a (true, predicted) confusion matrix."""
    confusion = confusion.double()
    intersection = confusion.diagonal()
    union = confusion.sum(0) + confusion.sum(1) - intersection
    return intersection / union


def mean_iou(confusion: torch.Tensor) -> float:
    """Mean IoU over the classes present in labels or predictions (Cityscapes' convention
    evaluates all 19; a class absent from both is left out rather than counted as 0 or 1)."""
    iou = iou_per_class(confusion)
    return float(iou[~iou.isnan()].mean())


def pixel_accuracy(confusion: torch.Tensor) -> float:
    return float(confusion.diagonal().sum()) / max(1, int(confusion.sum()))


def segmentation_metrics(predict: Predict, dataset: Dataset, batch_size: int) -> dict[str, Any]:
    """Test and validation mIoU and pixel accuracy, and the test IoU of each class."""
    task = dataset.task
    test = task.confusion(predict, dataset.test, batch_size, dataset.num_classes)
    val = task.confusion(predict, dataset.val, batch_size, dataset.num_classes)
    names = dataset.class_names or tuple(str(c) for c in range(dataset.num_classes))
    iou = iou_per_class(test)
    return {
        "test_accuracy": pixel_accuracy(test),
        "validation_accuracy": pixel_accuracy(val),
        "test_miou": mean_iou(test),
        "validation_miou": mean_iou(val),
        "class_iou": {name: float(v) for name, v in zip(names, iou, strict=True) if not v.isnan()},
    }


class Translation(Classification):
    """Sentence pairs as token ids: the model reads the source and the target shifted right
    (teacher forcing), the loss is label-smoothed cross entropy over target tokens (PAD
    ignored), training accuracy counts tokens, and models are selected and reported by
    corpus BLEU (sacrebleu, detokenized) of their greedy translations, as a fraction
    (BLEU 27.3 is 0.273) like every score here. The tokenizer travels with the data."""

    name = "translation"
    metric, label = "test_bleu", "BLEU"

    def __init__(self, tokenizer_json: str, max_length: int, smoothing: float) -> None:
        self.tokenizer_json, self.max_length, self.smoothing = tokenizer_json, max_length, smoothing
        self._tokenizer = None

    @property
    def tokenizer(self) -> Any:  # tokenizers.Tokenizer, imported when first used
        if self._tokenizer is None:
            from tokenizers import Tokenizer

            self._tokenizer = Tokenizer.from_str(self.tokenizer_json)
        return self._tokenizer

    def forward(self, model: Callable, inputs: torch.Tensor, targets: torch.Tensor) -> tuple:
        return model(inputs, targets[:, :-1]), targets[:, 1:]

    def loss(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        from .translation import label_smoothed_loss

        return label_smoothed_loss(outputs, targets, self.smoothing)

    def correct(self, outputs: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, int]:
        from .translation import PAD

        real = targets != PAD
        return ((outputs.argmax(-1) == targets) & real).sum(), int(real.sum())

    def bleu(self, model: nn.Module, split: Split, batch_size: int) -> tuple[float, str]:
        """Corpus BLEU (0-100) of the model's greedy translations of the split's sources
        against its reference sentences (the raw text, not the truncated token ids)."""
        from .translation import bleu, greedy_decode

        hypotheses = []
        for sources, _ in split.batches(batch_size):
            ids = greedy_decode(model, sources, self.max_length)
            hypotheses += self.tokenizer.decode_batch(ids.tolist(), skip_special_tokens=True)
        return bleu(hypotheses, list(split.references))

    @torch.no_grad()
    def teacher_forced(self, model: nn.Module, split: Split, batch_size: int) -> tuple[float, float]:
        """Mean token cross entropy (no smoothing) and token accuracy with the reference prefix."""
        from .translation import PAD

        model.eval()
        loss_sum, correct, counted = 0.0, 0, 0
        for sources, targets in split.batches(batch_size):
            logits, shifted = self.forward(model, sources, targets)
            real = shifted != PAD
            loss = nn.functional.cross_entropy(
                logits.flatten(0, 1), shifted.flatten(), ignore_index=PAD, reduction="sum"
            )
            loss_sum += float(loss)
            correct += int(((logits.argmax(-1) == shifted) & real).sum())
            counted += int(real.sum())
        return loss_sum / max(1, counted), correct / max(1, counted)


def translation_metrics(model: nn.Module, dataset: Dataset, batch_size: int) -> dict[str, Any]:
    """Test and validation BLEU (with sacrebleu's signature), and the teacher-forced test
    loss, perplexity and token accuracy (as `test_accuracy`)."""
    import math

    task = dataset.task
    test_bleu, signature = task.bleu(model, dataset.test, batch_size)
    val_bleu, _ = task.bleu(model, dataset.val, batch_size)
    test_loss, test_tokens = task.teacher_forced(model, dataset.test, batch_size)
    _, val_tokens = task.teacher_forced(model, dataset.val, batch_size)
    return {
        "test_bleu": test_bleu / 100,
        "validation_bleu": val_bleu / 100,
        "bleu_signature": signature,
        "test_loss": test_loss,
        "test_perplexity": math.exp(min(test_loss, 50.0)),
        "test_accuracy": test_tokens,
        "validation_accuracy": val_tokens,
    }


CLASSIFICATION = Classification()
TASKS: dict[str, Classification] = {
    "classification": CLASSIFICATION,
    "segmentation": Segmentation(),
}


def task_of(split_or_dataset: object) -> Classification:
    """The task a split or dataset was loaded for (classification unless it says otherwise)."""
    return getattr(split_or_dataset, "task", None) or CLASSIFICATION
