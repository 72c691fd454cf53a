"""Metrics of one model: accuracy on each split and measured sparsity."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from .data import Dataset, Split, iterate_batches
from .pruning import sparsity


@torch.no_grad()
def accuracy(model: nn.Module, split: Split, batch_size: int) -> float:
    """Plain top-1 accuracy (not class-balanced), in eval mode."""
    model.eval()
    correct = sum(
        int((model(images).argmax(1) == labels).sum())
        for images, labels in iterate_batches(split, batch_size)
    )
    return correct / len(split)


@torch.no_grad()
def ensemble_accuracy(models: list[nn.Module], split: Split, batch_size: int) -> float:
    """Top-1 accuracy of the mean softmax of `models`, against the split's true labels
    (not agreement with one member, the defect of the authors' code)."""
    for model in models:
        model.eval()
    correct = 0
    for images, labels in iterate_batches(split, batch_size):
        probabilities = torch.stack([model(images).softmax(1) for model in models]).mean(0)
        correct += int((probabilities.argmax(1) == labels).sum())
    return correct / len(split)


def model_metrics(model: nn.Module, dataset: Dataset, batch_size: int) -> dict[str, Any]:
    global_sparsity, layer_sparsity = sparsity(model)
    return {
        "test_accuracy": accuracy(model, dataset.test, batch_size),
        "validation_accuracy": accuracy(model, dataset.val, batch_size),
        "sparsity": global_sparsity,
        "layer_sparsity": layer_sparsity,
    }
