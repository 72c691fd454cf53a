"""The merging operators on hand-made cases, and the invariant SMS rests on: a weight outside
the ingredients' shared mask stays exactly zero whatever the operator. (Through Snakemake,
each as an SMS chain: tests/test_merging_workflow.py.)"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from sparse_soups import jobs
from sparse_soups.config import Settings
from sparse_soups.kernels.checkpoints import Checkpoint
from sparse_soups.kernels.files import sha256
from sparse_soups.kernels.merging import (
    dare_merge,
    diagonal_fisher,
    fisher_merge,
    learned_soup,
    mean_pairwise_cosine,
    model_stock,
    model_stock_ratio,
    ties_merge,
)
from sparse_soups.methods.context import Job
from sparse_soups.methods.imp import WeightAverage


def _one(values: list[float]) -> dict[str, torch.Tensor]:
    return {"w": torch.tensor(values)}


def test_ties_trims_elects_signs_and_averages_the_agreeing_updates() -> None:
    base = _one([0.0, 0.0, 0.0, 0.0])
    # density 0.5 keeps each update's two largest entries: [3, ., ., 2], [., 4, ., -3], [-1.5, -2, ., .];
    # summed signs (+, +, 0, -); the agreeing kept entries average to 3, 4, nothing, -3.
    ingredients = [_one([3.0, -1.0, 0.5, 2.0]), _one([2.0, 4.0, -0.2, -3.0]), _one([-1.5, -2.0, 0.1, 1.0])]
    merged = ties_merge(ingredients, base, density=0.5, scale=1.0)["w"]
    assert merged.tolist() == [3.0, 4.0, 0.0, -3.0]
    shifted = ties_merge([{"w": v["w"] + 1} for v in ingredients], _one([1.0] * 4), density=0.5, scale=0.5)
    assert shifted["w"].tolist() == [2.5, 3.0, 1.0, -0.5]  # theta_0 + scale * merged


def test_dare_is_the_uniform_soup_in_expectation() -> None:
    generator = torch.Generator().manual_seed(0)
    base = {"w": torch.randn(50)}
    ingredients = [{"w": base["w"] + torch.randn(50)} for _ in range(3)]
    uniform = torch.stack([i["w"] for i in ingredients]).mean(0)
    draws = torch.stack([dare_merge(ingredients, base, 0.7, generator)["w"] for _ in range(4000)])
    standard_error = draws.std(0) / len(draws) ** 0.5
    assert bool(((draws.mean(0) - uniform).abs() <= 5 * standard_error).all())  # within 5 s.e. everywhere
    assert (draws[0] - uniform).abs().max() > 10 * standard_error.max()  # one draw is far from the mean
    again = dare_merge(ingredients, base, 0.7, torch.Generator().manual_seed(5))["w"]
    assert torch.equal(again, dare_merge(ingredients, base, 0.7, torch.Generator().manual_seed(5))["w"])


def test_model_stock_ratio_for_orthogonal_identical_and_partial_updates() -> None:
    assert model_stock_ratio(2, 0.0) == 0.0 and model_stock_ratio(2, 1.0) == 1.0
    assert model_stock_ratio(2, 0.5) == pytest.approx(2 / 3)
    assert model_stock_ratio(3, -0.2) == 0.0
    base = _one([1.0, 1.0])
    orthogonal = [_one([2.0, 1.0]), _one([1.0, 2.0])]  # updates (1, 0) and (0, 1)
    merged, ratios = model_stock(orthogonal, base)
    assert mean_pairwise_cosine(torch.tensor([[1.0, 0.0], [0.0, 1.0]])) == 0.0
    assert ratios == {"w": 0.0} and merged["w"].tolist() == [1.0, 1.0]  # stays at theta_0
    same = [_one([2.0, 3.0]), _one([2.0, 3.0])]
    assert model_stock(same, base)[0]["w"].tolist() == [2.0, 3.0]  # the mean


def test_fisher_merge_weights_each_entry_by_its_fisher() -> None:
    ingredients = [_one([1.0, 1.0, 1.0]), _one([3.0, 3.0, 3.0])]
    fishers = [_one([3.0, 1.0, 0.0]), _one([1.0, 1.0, 0.0])]
    merged = fisher_merge(ingredients, fishers)["w"]
    assert merged.tolist() == [1.5, 2.0, 2.0]  # (3 + 3) / 4, equal weights, all-zero: the mean


def test_every_operator_keeps_the_shared_mask() -> None:
    torch.manual_seed(0)
    mask = torch.rand(8, 8) > 0.7
    base = {"w": torch.randn(8, 8) * mask, "bn.num_batches_tracked": torch.tensor(3)}
    ingredients = [{"w": (base["w"] + torch.randn(8, 8)) * mask, "bn.num_batches_tracked": torch.tensor(4)}
                   for _ in range(3)]  # fmt: skip
    fishers = [{"w": torch.rand(8, 8)} for _ in range(3)]
    merges = {
        "model_stock": model_stock(ingredients, base)[0],
        "ties": ties_merge(ingredients, base, density=0.3),
        "dare": dare_merge(ingredients, base, 0.5, torch.Generator().manual_seed(1)),
        "fisher": fisher_merge(ingredients, fishers),
    }
    for name, merged in merges.items():
        assert bool((merged["w"][~mask] == 0).all()), name
        assert bool((merged["w"][mask] != 0).any()), name
        assert merged["bn.num_batches_tracked"].item() == 4, name


def test_bad_operator_parameters_are_refused() -> None:
    one = [_one([1.0])]
    with pytest.raises(ValueError, match="density"):
        ties_merge(one, _one([0.0]), density=0.0)
    with pytest.raises(ValueError, match="drop rate"):
        dare_merge(one, _one([0.0]), 1.0, torch.Generator())


def test_learned_soup_converges_to_the_best_ingredient_when_the_others_are_useless() -> None:
    generator = torch.Generator().manual_seed(0)
    inputs = torch.randn(512, 2, generator=generator)
    targets = (inputs[:, 0] > 0).long()
    model = torch.nn.Linear(2, 2)
    good = {"weight": torch.tensor([[-4.0, 0.0], [4.0, 0.0]]), "bias": torch.zeros(2)}
    useless = [
        {"weight": 4 * torch.randn(2, 2, generator=generator), "bias": torch.randn(2, generator=generator)}
        for _ in range(2)
    ]
    ingredients = [useless[0], good, useless[1]]

    def batches():
        return [(inputs[i : i + 64], targets[i : i + 64]) for i in range(0, 512, 64)]

    soup, coefficients, history = learned_soup(
        model, ingredients, batches, torch.nn.functional.cross_entropy, epochs=20, lr=0.2
    )
    assert coefficients.shape == (3,) and coefficients[1] > 0.9, coefficients
    assert history[-1] < history[0]
    assert torch.allclose(
        soup["weight"], sum(c * i["weight"] for c, i in zip(coefficients, ingredients, strict=True))
    )
    _, per_layer, _ = learned_soup(
        model, ingredients, batches, torch.nn.functional.cross_entropy, per_layer=True
    )
    assert per_layer.shape == (3, 2) and torch.allclose(per_layer.sum(0), torch.ones(2))


def test_learned_soup_keeps_the_shared_mask() -> None:
    torch.manual_seed(0)
    model = torch.nn.Linear(6, 3)
    mask = torch.rand(3, 6) > 0.5
    ingredients = [{"weight": torch.randn(3, 6) * mask, "bias": torch.randn(3)} for _ in range(3)]
    inputs, targets = torch.randn(32, 6), torch.randint(0, 3, (32,))
    soup, _, _ = learned_soup(
        model, ingredients, lambda: [(inputs, targets)], torch.nn.functional.cross_entropy
    )
    assert bool((soup["weight"][~mask] == 0).all()) and bool((soup["weight"][mask] != 0).any())


def test_the_diagonal_fisher_is_the_mean_squared_per_example_gradient() -> None:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 5), torch.nn.BatchNorm1d(5), torch.nn.Linear(5, 3))
    model.eval()
    state = {key: value.clone() for key, value in model.state_dict().items()}
    inputs, targets = torch.randn(10, 4), torch.randint(0, 3, (10,))
    loss = torch.nn.functional.cross_entropy
    batches = [(inputs[:6], targets[:6]), (inputs[6:], targets[6:])]  # chunks do not change it
    fisher = diagonal_fisher(model, state, batches, loss)
    expected = {name: torch.zeros_like(p) for name, p in model.named_parameters()}
    for x, y in zip(inputs, targets, strict=True):
        model.zero_grad()
        loss(model(x[None]), y[None]).backward()
        for name, p in model.named_parameters():
            expected[name] += p.grad.pow(2) / len(inputs)
    assert fisher.keys() == expected.keys()  # parameters only: BatchNorm's statistics have none
    for name in expected:
        assert torch.allclose(fisher[name], expected[name], atol=1e-6), name


def test_the_learned_soup_mixes_batchnorm_statistics_without_gradient() -> None:
    """A model with BatchNorm: its running statistics are mixed with the coefficients but are
    not differentiated (torch refuses a running_mean that requires grad)."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 5), torch.nn.BatchNorm1d(5), torch.nn.Linear(5, 3))
    ingredients = []
    for _ in range(2):
        state = {key: value.clone() for key, value in model.state_dict().items()}
        state["1.running_mean"] = torch.randn(5)
        ingredients.append(state)
    inputs, targets = torch.randn(16, 4), torch.randint(0, 3, (16,))
    soup, coefficients, history = learned_soup(
        model, ingredients, lambda: [(inputs, targets)], torch.nn.functional.cross_entropy, epochs=2
    )
    mixed = (
        coefficients[0] * ingredients[0]["1.running_mean"]
        + coefficients[1] * ingredients[1]["1.running_mean"]
    )
    assert torch.allclose(soup["1.running_mean"], mixed) and not soup["1.running_mean"].requires_grad
    assert len(history) == 2


def test_swamp_weight_average_is_the_mean_over_the_last_share_of_steps(
    tiny_settings: Settings, prepared_path: Path
) -> None:
    model = torch.nn.Linear(2, 2)  # no BatchNorm: finishing recalibrates nothing
    average = WeightAverage(model, fraction=0.5, total_steps=4)
    with torch.no_grad():
        for step in range(1, 5):
            model.weight.fill_(float(step))
            average.on_step(step)
    average.finish(Job(tiny_settings, prepared_path))
    assert average.start == 2 and torch.all(model.weight == 3.5)  # the mean of steps 3 and 4


def test_model_stock_merges_updates_from_the_phase_s_pruned_starting_model(
    tiny_settings: Settings, prepared_path: Path, tmp_path: Path
) -> None:
    """theta_0 is the parent pruned to the ingredients' mask, which is what each ingredient was
    retrained from; the soup's weights are theta_0 + t * (mean - theta_0) with its recorded t."""
    dense = tmp_path / "dense.pt"
    jobs.pretrain(tiny_settings, prepared_path, 0, dense)
    paths = [tmp_path / f"i{i}.pt" for i in range(2)]
    for i, path in enumerate(paths):
        jobs.retrain(tiny_settings, prepared_path, dense, "dense", 1, i, 0, path)
    soup = jobs.soup(tiny_settings, prepared_path, "model_stock", paths, tmp_path / "s.pt", base=dense)
    parent, states = Checkpoint.load(dense).state_dict, [Checkpoint.load(p).state_dict for p in paths]
    for name, mask in soup.masks.items():
        base = parent[name] * mask
        mean = (states[0][name] + states[1][name]) / 2
        expected = base + soup.meta["ratios"][name] * (mean - base)
        assert torch.allclose(soup.state_dict[name], expected, atol=1e-6), name
    assert 0 < soup.meta["ratio_mean"] < 1 and soup.meta["base_sha256"] == sha256(dense)
    with pytest.raises(ValueError, match="--base"):
        jobs.soup(tiny_settings, prepared_path, "ties", paths, tmp_path / "t.pt")
    assert not (tmp_path / "t.pt").exists()
