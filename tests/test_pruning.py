from __future__ import annotations

import pytest
import torch
from torch import nn

from sparse_soups.config import DataSettings, PretrainSettings, RetrainSettings
from sparse_soups.kernels.models import SmallCNN
from sparse_soups.kernels.pruning import (
    apply_masks,
    dense_masks,
    global_magnitude_masks,
    per_phase_rate,
    prunable_parameters,
    sparsity,
    target_density,
)
from sparse_soups.kernels.schedules import retrain_schedule
from sparse_soups.kernels.training import train


def _total(model: nn.Module) -> int:
    return sum(p.numel() for p in prunable_parameters(model).values())


@pytest.mark.parametrize(("goal", "phases"), [(0.9, 3), (0.98, 5), (0.5, 1), (0.75, 2), (0.95, 7)])
def test_phases_reach_goal_sparsity_to_one_weight(goal: float, phases: int) -> None:
    torch.manual_seed(0)
    model = SmallCNN(width=8)
    masks = dense_masks(model)
    total = _total(model)
    kept_per_phase = []
    for phase in range(1, phases + 1):
        masks = global_magnitude_masks(model, masks, target_density(goal, phases, phase))
        apply_masks(model, masks)
        kept_per_phase.append(sum(int(m.sum()) for m in masks.values()))
    assert abs(kept_per_phase[-1] - (1 - goal) * total) <= 1
    measured, _ = sparsity(model)
    assert abs(measured - goal) <= 1 / total
    q = per_phase_rate(goal, phases)
    for phase, kept in enumerate(kept_per_phase, start=1):  # each phase prunes q of the rest
        assert abs(kept - total * (1 - q) ** phase) <= 1


def test_paper_schedule_for_90_percent_in_three_phases() -> None:
    densities = [target_density(0.9, 3, p) for p in (1, 2, 3)]
    assert [round(100 * (1 - d), 1) for d in densities] == [53.6, 78.5, 90.0]


def test_global_pruning_keeps_largest_magnitudes_across_layers() -> None:
    model = nn.Sequential(nn.Linear(4, 2, bias=False), nn.Linear(2, 2, bias=False))
    with torch.no_grad():
        model[0].weight.copy_(torch.tensor([[1.0, -8.0, 3.0, 0.5], [7.0, -2.0, 0.1, 6.0]]))
        model[1].weight.copy_(torch.tensor([[-5.0, 0.2], [4.0, 0.3]]))
    masks = global_magnitude_masks(model, dense_masks(model), density=0.5)  # keep 6 of 12
    assert masks["0.weight"].tolist() == [[False, True, True, False], [True, False, False, True]]
    assert masks["1.weight"].tolist() == [[True, False], [True, False]]


def test_pruned_weights_never_come_back() -> None:
    model = nn.Sequential(nn.Linear(10, 10, bias=False))
    masks = global_magnitude_masks(model, dense_masks(model), density=0.5)
    with torch.no_grad():  # make a pruned weight the largest: it must stay pruned
        pruned = (~masks["0.weight"]).nonzero()[0]
        model[0].weight[tuple(pruned)] = 100.0
    masks2 = global_magnitude_masks(model, masks, density=0.3)
    assert not masks2["0.weight"][tuple(pruned)]
    assert not (masks2["0.weight"] & ~masks["0.weight"]).any()


def test_biases_and_batchnorm_are_not_pruned() -> None:
    names = set(prunable_parameters(SmallCNN(width=4)))
    assert names == {
        "features.0.0.weight",
        "features.1.0.weight",
        "features.2.0.weight",
        "classifier.weight",
    }


def test_masked_weights_exactly_zero_after_retraining_with_momentum_and_decay(dataset) -> None:
    torch.manual_seed(0)
    model = SmallCNN(in_channels=1, num_classes=10, width=4)
    masks = global_magnitude_masks(model, dense_masks(model), density=0.2)
    optim = PretrainSettings(momentum=0.9, nesterov=True, weight_decay=0.05, batch_size=32)
    result = train(
        model, masks, dataset, optim=optim, peak_lr=0.5, epochs=2,
        schedule=retrain_schedule(RetrainSettings()), seed=1, augment=DataSettings(),
    )  # fmt: skip
    assert result.steps > 10
    for name, param in prunable_parameters(model).items():
        assert torch.count_nonzero(param[~masks[name]]) == 0
        assert torch.count_nonzero(param[masks[name]]) > 0.9 * int(masks[name].sum())
