from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from torch import nn

from sparse_soups import jobs
from sparse_soups.config import DataSettings, PretrainSettings, RetrainSettings
from sparse_soups.kernels.checkpoints import Checkpoint
from sparse_soups.kernels.data import Split
from sparse_soups.kernels.evaluation import accuracy
from sparse_soups.kernels.models import SmallCNN
from sparse_soups.kernels.pruning import (
    apply_masks,
    dense_masks,
    global_magnitude_masks,
    masks_equal,
    prunable_parameters,
)
from sparse_soups.kernels.schedules import retrain_schedule
from sparse_soups.kernels.soups import (
    MaskMismatchError,
    average_state_dicts,
    greedy_selection,
    recalibrate_batchnorm,
)
from sparse_soups.kernels.training import train


def _sparse_ingredients(count: int, density: float = 0.3) -> tuple[list[nn.Module], dict]:
    """Models that share one mask but have different surviving weights."""
    torch.manual_seed(0)
    base = SmallCNN(width=4)
    masks = global_magnitude_masks(base, dense_masks(base), density)
    models = []
    for i in range(count):
        torch.manual_seed(100 + i)
        model = SmallCNN(width=4)
        apply_masks(model, masks)
        models.append(model)
    return models, masks


def test_uniform_soup_keeps_exactly_the_shared_mask() -> None:
    models, masks = _sparse_ingredients(3)
    soup = SmallCNN(width=4)
    soup.load_state_dict(average_state_dicts([m.state_dict() for m in models], [masks] * 3))
    for name, param in prunable_parameters(soup).items():
        assert torch.equal(param != 0, masks[name])  # zero exactly where pruned, nowhere else
    expected = torch.stack([m.classifier.weight for m in models]).mean(0)
    assert torch.equal(soup.classifier.weight, expected)


def test_averaging_different_masks_raises() -> None:
    models, masks = _sparse_ingredients(2)
    other = copy.deepcopy(masks)
    name = next(iter(other))
    flat = other[name].view(-1)
    flat[flat.nonzero()[0]] = False  # one weight fewer in one layer
    with pytest.raises(MaskMismatchError, match="ingredient 1"):
        average_state_dicts([m.state_dict() for m in models], [masks, other])


def test_greedy_keeps_the_right_subset_on_a_constructed_case() -> None:
    individual = [0.50, 0.90, 0.70, 0.80]  # visit order: 1, 3, 2, 0
    soup_accuracy = {(1, 3): 0.92, (1, 2, 3): 0.85, (0, 1, 3): 0.93}
    calls = []

    def evaluate(indices: list[int]) -> float:
        calls.append(sorted(indices))
        return soup_accuracy[tuple(sorted(indices))]

    assert greedy_selection(individual, evaluate) == [0, 1, 3]
    assert calls == [[1, 3], [1, 2, 3], [0, 1, 3]]


def test_greedy_keeps_an_ingredient_that_ties() -> None:
    assert greedy_selection([0.8, 0.8], lambda indices: 0.8) == [0, 1]
    assert greedy_selection([0.8, 0.7], lambda indices: 0.79) == [0]


def _bn_model(momentum: float | None = 0.1) -> nn.Module:
    return nn.Sequential(nn.Identity(), nn.BatchNorm2d(3, momentum=momentum))


def test_bn_recalibration_reproduces_full_pass_statistics_and_restores_momentum() -> None:
    torch.manual_seed(0)
    images = torch.randn(64, 3, 5, 5) * 3 + 2
    split = Split(images, torch.zeros(64, dtype=torch.long))
    full_pass = _bn_model()
    full_pass.train()
    full_pass[1].momentum = 1.0  # one batch of everything: exactly the data's statistics
    full_pass(images)
    for batch_size in (64, 16):  # one batch, and four equal batches averaged cumulatively
        model = _bn_model(momentum=0.3)
        model[1].running_mean.fill_(10.0)
        recalibrate_batchnorm(model, split, batch_size)
        norm = model[1]
        assert norm.momentum == 0.3
        assert not model.training
        assert norm.num_batches_tracked.item() == 64 // batch_size
        torch.testing.assert_close(norm.running_mean, images.mean(dim=(0, 2, 3)))
        torch.testing.assert_close(norm.running_mean, full_pass[1].running_mean)
    torch.testing.assert_close(_recalibrated_var(split, 64), images.var(dim=(0, 2, 3), unbiased=True))


def _recalibrated_var(split: Split, batch_size: int) -> torch.Tensor:
    model = _bn_model()
    recalibrate_batchnorm(model, split, batch_size)
    return model[1].running_var


def _save_ingredients(models: list[nn.Module], masks: dict, directory: Path) -> list[Path]:
    paths = []
    for i, model in enumerate(models):
        path = directory / f"ingredient{i}.pt"
        meta = {"experiment": "tiny", "seed": 0, "phase": 1, "target_sparsity": 0.5}
        Checkpoint(model.state_dict(), masks, meta).save(path)
        paths.append(path)
    return paths


def test_greedy_soup_step_writes_the_soup_not_an_ingredient(
    tiny_settings, prepared_path, dataset, tmp_path: Path
) -> None:
    """The authors' code saved the last kept ingredient when 2 <= k < m were kept."""
    torch.manual_seed(0)
    good = SmallCNN(in_channels=1, num_classes=10, width=4)
    masks = global_magnitude_masks(good, dense_masks(good), 0.5)
    train(
        good, masks, dataset, optim=PretrainSettings(batch_size=32), peak_lr=0.1, epochs=3,
        schedule=retrain_schedule(RetrainSettings()), seed=0, augment=DataSettings(),
    )  # fmt: skip
    assert accuracy(good, dataset.val, 1000) > 0.3  # chance is 0.1
    twin = copy.deepcopy(good)  # the same model up to tiny noise: the soup ties, so kept
    with torch.no_grad():
        for name, param in prunable_parameters(twin).items():
            param.add_(1e-6 * torch.randn_like(param) * masks[name])
    bad = copy.deepcopy(good)  # same mask, useless weights: lowers the soup, so dropped
    with torch.no_grad():
        for param in prunable_parameters(bad).values():
            param.copy_(-50 * param.abs())
    paths = _save_ingredients([good, twin, bad], masks, tmp_path)
    out = tmp_path / "soup.pt"
    soup = jobs.soup(tiny_settings, prepared_path, "greedy", paths, out)
    assert soup.meta["kept"] == [0, 1]
    saved = Checkpoint.load(out)
    for name in prunable_parameters(good):
        expected = torch.stack([good.state_dict()[name], twin.state_dict()[name]]).mean(0)
        assert torch.equal(saved.state_dict[name], expected)
        assert not torch.equal(saved.state_dict[name], twin.state_dict()[name])
    assert masks_equal(saved.masks, masks)


def test_soup_step_refuses_ingredients_of_different_phases(
    tiny_settings, prepared_path, tmp_path: Path
) -> None:
    models, masks = _sparse_ingredients(2)
    paths = _save_ingredients(models, masks, tmp_path)
    second = Checkpoint.load(paths[1])
    second.meta["phase"] = 2
    second.save(paths[1])
    with pytest.raises(ValueError, match="different phases"):
        jobs.soup(tiny_settings, prepared_path, "uniform", paths, tmp_path / "soup.pt")
    assert not (tmp_path / "soup.pt").exists()
