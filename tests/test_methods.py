"""Retrain schedules, ingredient axes, pruning selections and the baselines beside SMS."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import pytest
import torch
from torch import nn

from sparse_soups import jobs, layout, plan
from sparse_soups.config import PretrainSettings, RetrainSettings, Settings
from sparse_soups.kernels.checkpoints import Checkpoint
from sparse_soups.kernels.data import Split
from sparse_soups.kernels.evaluation import ensemble_accuracy
from sparse_soups.kernels.models import SmallCNN
from sparse_soups.kernels.pruning import dense_masks, prunable_parameters, select_masks
from sparse_soups.kernels.schedules import allr_scale, retrain_schedule
from sparse_soups.methods import recipes
from sparse_soups.validation import config_problems
from tests.conftest import REPO

LINEAR = PretrainSettings(schedule="linear", warmup_fraction=0.0)
P = 100  # pretraining steps: factor(s) = 1 - s/100, so its last LR factor is 0.01


def _schedule(name: str, allr_peak: float = 1.0):
    return retrain_schedule(RetrainSettings(schedule=name, warmup_fraction=0.1), LINEAR, P, allr_peak)


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("ft", {0: 0.01, 9: 0.01, 19: 0.01}),  # the last pretraining LR, throughout
        ("lrw", {0: 0.2, 10: 0.1, 19: 0.01}),  # replays pretraining steps 80..99
        ("slr", {0: 0.5, 1: 1.0, 2: 1.0, 11: 0.5}),  # 2 warm-up steps, then linear over 18
        ("clr", {1: 1.0, 2: 1.0, 11: 0.505, 19: 0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * 17 / 18))}),
        ("llr", {0: 0.5, 1: 1.0, 2: 1.0, 11: 0.5, 19: 1 / 18}),
        ("allr", {1: 0.4, 11: 0.2}),  # llr with its peak at 0.4
    ],
)
def test_retrain_schedule_values_at_given_steps(name: str, expected: dict[int, float]) -> None:
    schedule = _schedule(name, allr_peak=0.4)
    for step, factor in expected.items():
        assert schedule(step, 20) == pytest.approx(factor), (name, step)


def test_lrw_longer_than_pretraining_starts_at_its_first_rate() -> None:
    assert _schedule("lrw")(0, 150) == pytest.approx(1.0)
    assert _schedule("lrw")(149, 150) == pytest.approx(0.01)


def test_allr_peak_is_norm_drop_over_root_fraction_clipped() -> None:
    assert allr_scale(0.1, 0.25, 4, 20) == pytest.approx(0.2)  # 0.1 / 0.5
    assert allr_scale(0.01, 0.25, 4, 20) == pytest.approx(0.2)  # clipped up to 4/20
    assert allr_scale(0.01, 0.25, 2, 20) == pytest.approx(0.1)
    assert allr_scale(0.9, 0.25, 4, 20) == 1.0  # clipped down to the peak


def _model() -> nn.Module:
    torch.manual_seed(0)
    return SmallCNN(width=4)


def test_layerwise_selection_keeps_the_density_in_every_layer() -> None:
    model = _model()
    masks = select_masks(model, dense_masks(model), 0.3, "layerwise")
    for name, p in prunable_parameters(model).items():
        assert int(masks[name].sum()) == round(0.3 * p.numel()), name
        kept = p.detach().abs()[masks[name]]
        assert kept.min() >= p.detach().abs()[~masks[name]].max(), name


def test_global_selection_differs_from_layerwise_per_layer() -> None:
    model = _model()
    masks = select_masks(model, dense_masks(model), 0.3, "global")
    shares = [float(m.float().mean()) for m in masks.values()]
    assert max(shares) - min(shares) > 0.05
    total = sum(m.numel() for m in masks.values())
    assert sum(int(m.sum()) for m in masks.values()) == round(0.3 * total)


def test_random_selection_is_seeded_and_keeps_pruned_weights_pruned() -> None:
    model = _model()
    first = select_masks(model, dense_masks(model), 0.5, "random", generator=torch.Generator().manual_seed(1))
    again = select_masks(model, dense_masks(model), 0.5, "random", generator=torch.Generator().manual_seed(1))
    other = select_masks(model, dense_masks(model), 0.5, "random", generator=torch.Generator().manual_seed(2))
    assert all(torch.equal(first[n], again[n]) for n in first)
    assert not all(torch.equal(first[n], other[n]) for n in first)
    second = select_masks(model, first, 0.25, "random", generator=torch.Generator().manual_seed(3))
    assert all(not (second[n] & ~first[n]).any() for n in first)
    # not by magnitude: some kept weights are smaller than some pruned ones
    weights = torch.cat([p.detach().abs().flatten() for p in prunable_parameters(model).values()])
    kept = torch.cat([first[n].flatten() for n in first])
    assert weights[kept].min() < weights[~kept].max()


def test_excluded_layers_stay_dense_and_the_rest_reach_the_density() -> None:
    model = _model()
    names = list(prunable_parameters(model))
    masks = select_masks(model, dense_masks(model), 0.2, "global", ("first_conv", "classifier"))
    assert masks[names[0]].all() and masks[names[-1]].all()
    rest = [masks[n] for n in names[1:-1]]
    assert sum(int(m.sum()) for m in rest) == round(0.2 * sum(m.numel() for m in rest))


def test_ingredient_recipes_vary_one_axis_and_inherit_the_rest() -> None:
    settings = Settings.from_dict(
        {"pretrain": {"weight_decay": 1e-3}, "soup": {"ingredients": 2, "vary": "lr", "values": [0.05, 0.2]}}
    )
    first, second = (plan.retrain_recipe(settings, "uniform", i) for i in range(2))
    assert (first.lr, second.lr) == (0.05, 0.2)
    assert first.weight_decay == second.weight_decay == 1e-3  # carried from pretraining
    assert first.seed_index == second.seed_index == 0  # only the LR differs
    by_seed = Settings.from_dict({"soup": {"ingredients": 3}})
    assert [plan.retrain_recipe(by_seed, "uniform", i).seed_index for i in range(3)] == [0, 1, 2]


AXES = {
    "seed": [],
    "weight_decay": [1e-4, 5e-4, 1e-3],
    "lr": [0.05, 0.1, 0.2],
    "epochs": [1, 2, 5],
    "schedule": ["clr", "llr", "ft"],
}


@pytest.mark.parametrize("axis", list(AXES))
def test_imp_recipes_ignore_the_varied_axis(axis: str) -> None:
    """IMP and IMP (m x budget) use the experiment's own hyperparameters, whatever the
    ingredients vary; with vary: epochs, m x budget is still m times retrain.epochs."""
    base = {"pretrain": {"weight_decay": 2e-4, "lr": 0.08}, "retrain": {"epochs": 3, "schedule": "slr"}}
    plain = Settings.from_dict({**base, "soup": {"ingredients": 3}})
    varied = Settings.from_dict({**base, "soup": {"ingredients": 3, "vary": axis, "values": AXES[axis]}})
    expected = recipes.Recipe(weight_decay=2e-4, lr=0.08, epochs=3, schedule="slr", seed_index=0)
    assert plan.retrain_recipe(varied, layout.IMP, 0) == expected
    # soup-at-end's extra retrains of IMP's last phase vary like the ingredients
    assert plan.retrain_recipe(varied, layout.IMP, 2) == plan.retrain_recipe(varied, "uniform", 2)
    assert plan.retrain_recipe(varied, layout.IMP_BUDGET, 0) == dataclasses.replace(expected, epochs=9)
    for lineage in (layout.IMP, layout.IMP_BUDGET):
        assert plan.retrain_recipe(varied, lineage, 0) == plan.retrain_recipe(plain, lineage, 0)
    if axis != "seed":  # the ingredients do take the axis' values
        taken = [getattr(plan.retrain_recipe(varied, "uniform", i), axis) for i in range(3)]
        assert taken == AXES[axis]
    # IMP shares ingredient 0's phase-1 retrain only when their recipes agree
    assert recipes.imp_shares_phase1(varied) == (axis == "seed")
    dirs = plan.experiment_model_dirs(varied)
    own = "imp/phase1/ingredient0"
    assert (own in dirs) == (axis != "seed")


def test_imp_shares_phase1_when_ingredient_0_has_its_recipe() -> None:
    same = Settings.from_dict(
        {
            "pretrain": {"weight_decay": 5e-4},
            "soup": {"ingredients": 2, "vary": "weight_decay", "values": [5e-4, 1e-3]},
        }
    )
    assert recipes.imp_shares_phase1(same)
    assert "imp/phase1/ingredient0" not in plan.experiment_model_dirs(same)
    assert "dense/phase1/ingredient0" in plan.experiment_model_dirs(same)


def test_ablation_chains_start_each_phase_from_their_own_soup() -> None:
    settings = Settings.from_dict(
        {"prune": {"phases": 3}, "soup": {"ingredients": 4, "methods": ["uniform"], "ablation_m": [2, 3, 4]}}
    )
    dirs = plan.experiment_model_dirs(settings)
    assert "uniform_m4/phase1/soup" not in dirs  # k = m is SMS uniform itself
    for k in (2, 3):
        chain = layout.ablation_chain(k)
        assert layout.soup_recipe(chain, 1, 4) == (
            "uniform",
            [f"dense/phase1/ingredient{i}" for i in range(k)],
        )
        assert layout.soup_recipe(chain, 2, 4) == (
            "uniform",
            [f"{chain}/phase2/ingredient{i}" for i in range(k)],
        )
        assert layout.retrain_parent_dir(chain, 2) == f"{chain}/phase1/soup"
        assert layout.retrain_parent_dir(chain, 3) == f"{chain}/phase2/soup"
        assert f"{chain}/phase3/ingredient{k - 1}" in dirs and f"{chain}/phase3/ingredient{k}" not in dirs
        assert f"{chain}/phase3/soup" in dirs
    # the ablation chains' phase-2 ingredients are k of their own, not the m chain's
    assert layout.retrain_parent_dir("uniform", 2) == "uniform/phase1/soup"


def test_axis_values_must_match_the_ingredients_and_their_type(tmp_path: Path) -> None:
    schema = REPO / "workflow" / "schemas" / "config.schema.yaml"
    config = {
        "experiments": {
            "x": {
                "soup": {
                    "ingredients": 3,
                    "vary": "schedule",
                    "values": ["llr", "bogus"],
                    "subset_sizes": [5],
                }
            }
        }
    }
    problems = "\n".join(config_problems(config, schema))
    assert "experiments.x.soup.values: 2 values for 3 ingredients" in problems
    assert "'bogus' is not a valid schedule" in problems
    assert "experiments.x.soup.subset_sizes: 5 is more than the 3 ingredients" in problems


def test_imp_with_m_times_budget_takes_exactly_m_times_the_steps(
    tiny_settings: Settings, prepared_path: Path, tmp_path: Path
) -> None:
    dense = jobs.pretrain(tiny_settings, prepared_path, 0, tmp_path / "dense.pt")
    imp = jobs.retrain(
        tiny_settings, prepared_path, tmp_path / "dense.pt", "dense", 1, 0, 0, tmp_path / "i.pt"
    )
    budget = jobs.retrain(
        tiny_settings, prepared_path, tmp_path / "dense.pt", layout.IMP_BUDGET, 1, 0, 0, tmp_path / "b.pt"
    )
    m = tiny_settings.soup.ingredients
    assert imp.meta["train_steps"] > 0 and dense.meta["train_steps"] > 0
    assert budget.meta["train_steps"] == m * imp.meta["train_steps"]
    assert all(torch.equal(imp.masks[n], budget.masks[n]) for n in imp.masks)  # same prune


class _Constant(nn.Module):
    """A 'model' that always outputs the same logits."""

    def __init__(self, logits: list[list[float]]) -> None:
        super().__init__()
        self.logits = torch.tensor(logits)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.logits[: len(images)]


def test_ensemble_accuracy_is_against_true_labels_by_mean_softmax() -> None:
    labels = torch.tensor([0, 1, 1])
    split = Split(torch.zeros(3, 1, 2, 2), labels)
    a = _Constant([[2.0, 0.0], [0.0, 2.0], [3.0, 0.0]])  # P(class 0): 0.881, 0.119, 0.953
    b = _Constant([[0.0, 1.0], [0.0, 2.0], [0.0, 1.0]])  # P(class 0): 0.269, 0.119, 0.269
    # mean P(class 0): 0.575 (-> 0, right), 0.119 (-> 1, right), 0.611 (-> 0, wrong)
    assert ensemble_accuracy([a, b], split, batch_size=3) == pytest.approx(2 / 3)
    # the ensemble agrees with member a on all three: agreement would read 100%
    assert ensemble_accuracy([a], split, batch_size=3) == pytest.approx(2 / 3)
    # mean softmax, not mean logits: (3, 0), (0, 1), (0, 1) give mean P(class 0) = 0.497,
    # so class 1, while the mean logits (1, 0.67) would pick class 0
    c = _Constant([[3.0, 0.0]])
    d = _Constant([[0.0, 1.0]])
    one = Split(torch.zeros(1, 1, 2, 2), torch.tensor([1]))
    assert ensemble_accuracy([c, d, d], one, batch_size=1) == 1.0  # mean logits would pick 0


def test_soup_recipes_for_subsets_and_soup_at_end() -> None:
    method, dirs = layout.soup_recipe("uniform_k2", 3, 4)
    assert method == "uniform" and dirs == ["uniform/phase3/ingredient0", "uniform/phase3/ingredient1"]
    method, dirs = layout.soup_recipe(layout.SOUP_AT_END, 3, 2)
    assert method == "uniform" and dirs == ["imp/phase3/ingredient0", "imp/phase3/ingredient1"]
    assert layout.retrain_parent_dir(layout.IMP_BUDGET, 1) == layout.DENSE
    assert layout.retrain_parent_dir(layout.IMP, 2, imp_shared=False) == "imp/phase1/ingredient0"
    assert layout.retrain_parent_dir(layout.IMP, 2) == "dense/phase1/ingredient0"
    assert layout.retrain_parent_dir(layout.IMP_BUDGET, 2) == "imp_budget/phase1/ingredient0"


def test_k_of_m_soup_averages_exactly_the_first_k(
    tiny_settings: Settings, prepared_path: Path, tmp_path
) -> None:
    jobs.pretrain(tiny_settings, prepared_path, 0, tmp_path / "dense.pt")
    paths = []
    for i in range(3):
        paths.append(tmp_path / f"i{i}.pt")
        jobs.retrain(tiny_settings, prepared_path, tmp_path / "dense.pt", "dense", 1, i, 0, paths[-1])
    soup = jobs.soup(
        tiny_settings, prepared_path, "uniform", paths[:2], tmp_path / "k2.pt", name="uniform_k2"
    )
    assert soup.meta["model_dir"] == "uniform_k2/phase1/soup" and soup.meta["kept"] == [0, 1]
    states = [Checkpoint.load(p).state_dict for p in paths]
    for name in prunable_parameters(SmallCNN(width=4)):
        assert torch.allclose(soup.state_dict[name], (states[0][name] + states[1][name]) / 2)
        assert not torch.allclose(
            soup.state_dict[name], (states[0][name] + states[1][name] + states[2][name]) / 3
        )


def test_lottery_pools_candidates_go_by_distance_earlier_first() -> None:
    from sparse_soups.kernels.lottery_pools import candidate_order

    assert candidate_order(3, [1, 2, 3, 4, 5]) == [2, 4, 1, 5]
    assert candidate_order(1, [1, 2, 3]) == [2, 3]


def test_lottery_pools_search_finds_the_known_best_alpha() -> None:
    from sparse_soups.kernels.lottery_pools import ALPHAS, lottery_pool

    # Score = -distance to an optimum at 0.3 * ticket2 + 0.7 * ticket1, so interpolating
    # the target (phase 1) with phase 2 at alpha 0.3 is best; ticket 3 then cannot help.
    tickets = {p: {"w": torch.tensor([float(p), 0.0]), "n": torch.tensor(7)} for p in (1, 2, 3)}
    optimum = 0.3 * tickets[2]["w"] + 0.7 * tickets[1]["w"]
    calls = []

    def score(state):
        calls.append(state)
        return -float((state["w"] - optimum).norm()), state

    result = lottery_pool(1, tickets, score)
    assert [(c, a) for c, a, _ in result.accepted] == [(2, 0.3)]
    assert torch.allclose(result.state["w"], optimum)
    assert int(result.state["n"]) == 7  # counters are not interpolated
    assert result.trials == 2 * len(ALPHAS) and len(calls) == 1 + 2 * len(ALPHAS)


def test_lottery_pools_keeps_the_target_when_no_mix_beats_it() -> None:
    from sparse_soups.kernels.lottery_pools import lottery_pool

    tickets = {p: {"w": torch.tensor([float(p)])} for p in (1, 2)}
    result = lottery_pool(2, tickets, lambda s: (-abs(float(s["w"]) - 2.0), s), alphas=(0.5,))
    assert result.accepted == [] and float(result.state["w"]) == 2.0


def test_lottery_pools_step_reprunes_to_the_target_density(
    tiny_settings: Settings, prepared_path: Path, tmp_path: Path
) -> None:
    from sparse_soups.kernels.pruning import target_density

    jobs.pretrain(tiny_settings, prepared_path, 0, tmp_path / "dense.pt")
    jobs.retrain(tiny_settings, prepared_path, tmp_path / "dense.pt", "dense", 1, 0, 0, tmp_path / "t1.pt")
    jobs.retrain(tiny_settings, prepared_path, tmp_path / "t1.pt", "imp", 2, 0, 0, tmp_path / "t2.pt")
    tickets = [tmp_path / "t1.pt", tmp_path / "t2.pt"]
    for variant in ("interp", "avg"):
        pool = jobs.lottery_pools(
            tiny_settings, prepared_path, 1, tickets, variant, tmp_path / f"{variant}.pt"
        )
        kept = sum(int(m.sum()) for m in pool.masks.values())
        total = sum(m.numel() for m in pool.masks.values())
        assert kept <= round(target_density(0.75, 2, 1) * total)
        assert pool.meta["trials"] == (11 if variant == "interp" else 1)
        assert pool.meta["model_dir"] == f"lottery_pools_{variant}/phase1"
