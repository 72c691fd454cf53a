"""A plugin module as a researcher would write one (README, "Extending"): it registers a
soup method, a pruning criterion, a dataset and a model, each in a few lines, without
touching the package. tests/test_architecture.py names it under `plugins:`."""

from __future__ import annotations

from sparse_soups.registry import DATASETS, MODELS, PRUNING_CRITERIA, SOUP_METHODS


@SOUP_METHODS.register("best_two", label="SMS best two")
def best_two(count: int, soup_accuracy) -> list[int]:
    """The two ingredients with the best validation accuracy of their own."""
    ranked = sorted(range(count), key=lambda i: -soup_accuracy([i]))
    return sorted(ranked[:2])


@PRUNING_CRITERIA.register("squared", scope="global")
def squared(params, generator):
    """Squared magnitude: ranks like magnitude, a criterion in two lines."""
    return {name: p.detach() ** 2 for name, p in params.items()}


# A torchvision dataset with the (root, train, download) API: one line.
DATASETS.register(
    "kmnist", "sparse_soups.kernels.datasets:load_torchvision", torchvision_class="KMNIST",
    train_size=60_000, augmentation=(0, False, 0.0), streamed=False,
)  # fmt: skip


@MODELS.register("tiny_mlp", options=("width",))
def tiny_mlp(in_channels: int, num_classes: int, width: int = 8):
    """One hidden layer over 28x28 images (torch is imported when a job builds it)."""
    from torch import nn

    return nn.Sequential(
        nn.Flatten(), nn.Linear(in_channels * 28 * 28, width), nn.ReLU(), nn.Linear(width, num_classes)
    )
