"""Evaluation metrics beyond accuracy: calibration, worst-class accuracy, FLOPs, soup geometry.

All are pure functions of logits, labels or models, so the workflow can call them on any
checkpoint without state.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn


def expected_calibration_error(logits: torch.Tensor, labels: torch.Tensor, n_bins: int = 15) -> float:
    """ECE with `n_bins` equal-width confidence bins: sum_b |B|/N * |acc(B) - conf(B)|.

    Bins are (lo, hi], as in Guo et al. (2017); a confidence of exactly 0 cannot occur.
    """
    probabilities = torch.softmax(logits.double(), dim=1)
    confidence, predicted = probabilities.max(dim=1)
    correct = (predicted == labels).double()
    bins = torch.clamp(torch.ceil(confidence * n_bins).long() - 1, 0, n_bins - 1)
    total = 0.0
    for b in range(n_bins):
        in_bin = bins == b
        if in_bin.any():
            total += in_bin.double().mean().item() * abs(
                correct[in_bin].mean().item() - confidence[in_bin].mean().item()
            )
    return total


def maximum_calibration_error(logits: torch.Tensor, labels: torch.Tensor, n_bins: int = 15) -> float:
    """MCE: the largest |acc(B) - conf(B)| over the non-empty bins of the ECE binning."""
    probabilities = torch.softmax(logits.double(), dim=1)
    confidence, predicted = probabilities.max(dim=1)
    correct = (predicted == labels).double()
    bins = torch.clamp(torch.ceil(confidence * n_bins).long() - 1, 0, n_bins - 1)
    gaps = [
        abs(correct[bins == b].mean().item() - confidence[bins == b].mean().item())
        for b in range(n_bins)
        if (bins == b).any()
    ]
    return max(gaps, default=0.0)


def per_class_accuracy(
    logits: torch.Tensor, labels: torch.Tensor, num_classes: int | None = None
) -> torch.Tensor:
    """Accuracy of each class present in `labels` (NaN for classes without examples)."""
    num_classes = num_classes or int(max(logits.shape[1], int(labels.max()) + 1))
    correct = (logits.argmax(1) == labels).double()
    hits = torch.zeros(num_classes, dtype=torch.float64).index_add_(0, labels, correct)
    counts = torch.bincount(labels, minlength=num_classes).double()
    return hits / counts  # 0/0 -> NaN for absent classes


def worst_class_accuracy(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """The lowest per-class accuracy over the classes that occur in `labels`."""
    accuracies = per_class_accuracy(logits, labels)
    return float(accuracies[~accuracies.isnan()].min())


def group_accuracy(
    logits: torch.Tensor, labels: torch.Tensor, groups: torch.Tensor, num_groups: int
) -> torch.Tensor:
    """Accuracy within each group (NaN for groups without examples): a group is any
    partition of the images, e.g. Celeb-A's target attribute crossed with a sensitive one."""
    correct = (logits.argmax(1) == labels).double()
    hits = torch.zeros(num_groups, dtype=torch.float64).index_add_(0, groups, correct)
    counts = torch.bincount(groups, minlength=num_groups).double()
    return hits / counts


def worst_group_accuracy(
    logits: torch.Tensor, labels: torch.Tensor, groups: torch.Tensor, num_groups: int
) -> float:
    """The lowest accuracy over the groups that occur: the fairness studies' headline number,
    which an average over a majority group can hide."""
    accuracies = group_accuracy(logits, labels, groups, num_groups)
    return float(accuracies[~accuracies.isnan()].min())


def _layer_macs(
    model: nn.Module, input_shape: Sequence[int], example: tuple[torch.Tensor, ...] | None = None
) -> list[tuple[torch.Tensor, int]]:
    """Dense multiply-adds of each Conv2d / Linear weight for one input of `input_shape`
    (C, H, W), or for `example` (the inputs of one item, e.g. a sentence pair). Attention
    (nn.MultiheadAttention, which uses its projection weights without calling them as
    modules) counts its input and output projections; the attention products themselves,
    like BN, ReLU and pooling, are not counted."""
    counts: list[tuple[torch.Tensor, int]] = []

    def hook(module: nn.Module, args: tuple, output: torch.Tensor) -> None:
        if isinstance(module, nn.MultiheadAttention):
            query, key = args[0], args[1]
            axis = 1 if module.batch_first else 0
            tokens_q, tokens_k, width = query.shape[axis], key.shape[axis], module.embed_dim
            if module.in_proj_weight is not None:
                weight = module.in_proj_weight
                counts.append((weight[:width], tokens_q * width * width))
                counts.append((weight[width:], 2 * tokens_k * width * width))
            counts.append((module.out_proj.weight, tokens_q * width * width))
        elif isinstance(module, nn.Conv2d):  # each output element costs (C_in / groups) * kh * kw MACs
            counts.append((module.weight, output[0].numel() * module.weight[0].numel()))
        else:  # Linear: every output element costs in_features MACs
            counts.append((module.weight, output[0].numel() * module.weight.shape[1]))

    kinds = nn.Conv2d | nn.Linear | nn.MultiheadAttention
    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, kinds)]
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            parameter = next(model.parameters())
            if example is None:
                example = (torch.zeros(1, *input_shape, device=parameter.device, dtype=parameter.dtype),)
            model(*example)
    finally:
        model.train(was_training)
        for handle in handles:
            handle.remove()
    return counts


def theoretical_flops(
    model: nn.Module, input_shape: Sequence[int], sparse: bool = True, example: tuple | None = None
) -> int:
    """Multiply-adds of the Conv2d, Linear and attention projection weights for one input
    (BN, ReLU, pooling and the attention products ignored).

    With `sparse`, each layer's count is scaled by its weight density (nonzeros / size), the
    theoretical cost of a sparse kernel that skips zero weights, as in the pruning literature.
    """
    total = 0.0
    for weight, macs in _layer_macs(model, input_shape, example):
        density = float((weight != 0).sum()) / weight.numel() if sparse else 1.0
        total += macs * density
    return round(total)


def theoretical_speedup(model: nn.Module, input_shape: Sequence[int]) -> float:
    """Dense over sparse theoretical FLOPs (1.0 for a dense model)."""
    sparse = theoretical_flops(model, input_shape, sparse=True)
    dense = theoretical_flops(model, input_shape, sparse=False)
    return math.inf if sparse == 0 else dense / sparse


def flatten_weights(model: nn.Module | dict[str, torch.Tensor]) -> torch.Tensor:
    """All floating-point parameters (not BN buffers) as one float64 vector, in name order."""
    if isinstance(model, nn.Module):
        tensors = dict(model.named_parameters())
    else:
        tensors = {k: v for k, v in model.items() if v.is_floating_point() and "running_" not in k}
    return torch.cat([tensors[k].detach().double().flatten().cpu() for k in sorted(tensors)])


def soup_geometry(
    ingredients: Sequence[nn.Module | dict[str, torch.Tensor]], soup: nn.Module | dict[str, torch.Tensor]
) -> dict[str, object]:
    """Pairwise L2 distances and angles (degrees) between ingredients, and each one's distance to
    the soup, with their means (over pairs i < j; 0 for a single ingredient): how far apart
    retraining drives models that share a mask, and where the average lies.
    """
    vectors = [flatten_weights(m) for m in ingredients]
    center = flatten_weights(soup)
    n = len(vectors)
    distance = [[0.0] * n for _ in range(n)]
    angle = [[0.0] * n for _ in range(n)]
    for i in range(n):
        for j in range(i + 1, n):
            d = float(torch.linalg.vector_norm(vectors[i] - vectors[j]))
            cosine = float(vectors[i] @ vectors[j] / (vectors[i].norm() * vectors[j].norm()))
            a = math.degrees(math.acos(max(-1.0, min(1.0, cosine))))
            distance[i][j] = distance[j][i] = d
            angle[i][j] = angle[j][i] = a
    to_soup = [float(torch.linalg.vector_norm(v - center)) for v in vectors]
    pairs = [(i, j) for i in range(n) for j in range(i + 1, n)]
    return {
        "pairwise_l2": distance,
        "pairwise_angle_deg": angle,
        "distance_to_soup": to_soup,
        "mean_pairwise_l2": sum(distance[i][j] for i, j in pairs) / len(pairs) if pairs else 0.0,
        "mean_pairwise_angle_deg": sum(angle[i][j] for i, j in pairs) / len(pairs) if pairs else 0.0,
        "mean_distance_to_soup": sum(to_soup) / n,
    }
