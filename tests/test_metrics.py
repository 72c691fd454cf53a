from __future__ import annotations

import math

import pytest
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from sparse_soups.kernels.metrics import (
    expected_calibration_error,
    per_class_accuracy,
    soup_geometry,
    theoretical_flops,
    theoretical_speedup,
    worst_class_accuracy,
)


def logits_with_confidence(confidences: list[float], predicted: list[int], classes: int = 2) -> torch.Tensor:
    """Two-class logits whose softmax maximum is exactly `confidence` on class `predicted`."""
    rows = []
    for p, k in zip(confidences, predicted, strict=True):
        row = torch.zeros(classes, dtype=torch.float64)
        row[k] = math.log(p / (1 - p))
        rows.append(row)
    return torch.stack(rows)


def test_ece_hand_computed() -> None:
    # bin (0.8667, 0.9333]: confidences 0.9, 0.9, accuracy 1/2 -> |0.5 - 0.9| * 2/4
    # bin (0.5333, 0.6]: confidences 0.6, 0.6, accuracy 2/2 -> |1 - 0.6| * 2/4
    logits = logits_with_confidence([0.9, 0.9, 0.6, 0.6], [0, 0, 1, 1])
    labels = torch.tensor([0, 1, 1, 1])
    assert expected_calibration_error(logits, labels) == pytest.approx(0.5 * 0.4 + 0.5 * 0.4)
    # perfectly calibrated: confidence 0.75 and 3 of 4 right
    logits = logits_with_confidence([0.75] * 4, [0] * 4)
    assert expected_calibration_error(logits, torch.tensor([0, 0, 0, 1])) == pytest.approx(0.0, abs=1e-12)


def test_worst_class_accuracy() -> None:
    logits = torch.eye(3)[[0, 0, 1, 2, 2, 0]] * 5  # predictions 0 0 1 2 2 0
    labels = torch.tensor([0, 0, 1, 1, 2, 2])
    assert per_class_accuracy(logits, labels).tolist() == [1.0, 0.5, 0.5]
    assert worst_class_accuracy(logits, labels) == 0.5
    # a class without examples does not count
    assert worst_class_accuracy(logits[:2], labels[:2]) == 1.0


def test_flops_dense_and_sparse() -> None:
    model = nn.Sequential(nn.Conv2d(2, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 5 * 5, 10))
    conv_macs = 4 * 5 * 5 * (2 * 3 * 3)  # outputs x MACs per output
    linear_macs = 100 * 10
    assert theoretical_flops(model, (2, 5, 5), sparse=False) == conv_macs + linear_macs
    reference = FlopCounterMode(display=False)
    with reference:
        model(torch.zeros(1, 2, 5, 5))
    assert reference.get_total_flops() == 2 * (conv_macs + linear_macs)  # FLOPs = 2 x MACs
    with torch.no_grad():
        model[0].weight.view(-1)[: 72 // 4 * 3].zero_()  # conv 25% dense
        model[3].weight.view(-1)[:500].zero_()  # linear 50% dense
    assert theoretical_flops(model, (2, 5, 5)) == conv_macs // 4 + linear_macs // 2
    assert theoretical_speedup(model, (2, 5, 5)) == pytest.approx(
        (conv_macs + linear_macs) / (conv_macs / 4 + linear_macs / 2)
    )


def test_soup_geometry_hand_computed() -> None:
    a = {"w": torch.tensor([1.0, 0.0]), "bn.running_mean": torch.tensor([9.0])}
    b = {"w": torch.tensor([0.0, 1.0]), "bn.running_mean": torch.tensor([-9.0])}
    soup = {"w": torch.tensor([0.5, 0.5]), "bn.running_mean": torch.tensor([0.0])}
    geometry = soup_geometry([a, b], soup)
    assert geometry["pairwise_l2"][0][1] == pytest.approx(math.sqrt(2))
    assert geometry["pairwise_angle_deg"][1][0] == pytest.approx(90.0)
    assert geometry["distance_to_soup"] == pytest.approx([math.sqrt(0.5)] * 2)
    assert geometry["mean_pairwise_l2"] == pytest.approx(math.sqrt(2))
    assert geometry["mean_pairwise_angle_deg"] == pytest.approx(90.0)
    assert geometry["mean_distance_to_soup"] == pytest.approx(math.sqrt(0.5))
    c = {"w": torch.tensor([-1.0, 0.0]), "bn.running_mean": torch.tensor([0.0])}
    three = soup_geometry([a, b, c], soup)  # pairs: sqrt 2 (90 deg), 2 (180 deg), sqrt 2 (90 deg)
    assert three["mean_pairwise_l2"] == pytest.approx((2 * math.sqrt(2) + 2) / 3)
    assert three["mean_pairwise_angle_deg"] == pytest.approx(120.0)
    linear = nn.Linear(2, 1, bias=False)
    assert soup_geometry([linear, linear], linear)["pairwise_l2"][0][1] == 0.0
    assert soup_geometry([linear], linear)["mean_pairwise_l2"] == 0.0


def test_dense_flops_match_torch_flop_counter_on_a_resnet() -> None:
    from sparse_soups.kernels.models import get_model

    model = get_model("resnet56", 3, 10)
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model.eval()(torch.zeros(1, 3, 32, 32))
    macs = theoretical_flops(model, (3, 32, 32), sparse=False)
    assert 2 * macs == counter.get_total_flops()
    assert 120e6 < macs < 130e6  # ResNet-56 on CIFAR: ~125M multiply-adds
    assert theoretical_speedup(model, (3, 32, 32)) == 1.0
