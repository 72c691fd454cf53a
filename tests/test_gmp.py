"""GMP (cubic schedule), GMP + SMS rounds, and IMP with weight rewinding."""

from __future__ import annotations

import dataclasses
import re
import subprocess
from pathlib import Path

import pytest
import torch
import yaml

from sparse_soups import jobs, layout
from sparse_soups.config import Settings
from sparse_soups.kernels import gradual as gmp
from sparse_soups.kernels.checkpoints import Checkpoint
from sparse_soups.kernels.data import load_prepared
from sparse_soups.kernels.models import SmallCNN, build_model
from sparse_soups.kernels.pruning import (
    dense_masks,
    prunable_parameters,
    rewind_to,
    select_masks,
    target_density,
)
from sparse_soups.kernels.schedules import pretrain_schedule
from sparse_soups.kernels.seeds import derive_seed
from sparse_soups.kernels.soups import MaskMismatchError, average_state_dicts, recalibrate_batchnorm
from sparse_soups.kernels.training import train
from sparse_soups.validation import config_problems
from tests.conftest import REPO

SCHEMA = REPO / "workflow" / "schemas" / "config.schema.yaml"


def test_cubic_schedule_at_hand_computed_steps() -> None:
    # start 10, end 20, final 0.8: s = 0.8 * (1 - (1 - (t - 10) / 10) ** 3)
    assert gmp.cubic_sparsity(5, 10, 20, 0.8) == 0.0
    assert gmp.cubic_sparsity(10, 10, 20, 0.8) == 0.0
    assert gmp.cubic_sparsity(12, 10, 20, 0.8) == pytest.approx(0.8 * (1 - 0.512))  # 0.3904
    assert gmp.cubic_sparsity(15, 10, 20, 0.8) == pytest.approx(0.7)
    assert gmp.cubic_sparsity(20, 10, 20, 0.8) == 0.8
    assert gmp.cubic_sparsity(30, 10, 20, 0.8) == 0.8


def test_plan_prunes_on_the_interval_and_at_the_ramp_end() -> None:
    plan = gmp.GmpPlan(
        steps_per_epoch=4, epochs=5, dense_epochs=1, end_step=15, interval=3, final_sparsity=0.5, rounds=2
    )
    assert [t for t in range(plan.total_steps + 1) if plan.is_pruning_step(t)] == [7, 10, 13, 15]
    assert plan.sparsity_at(6) == 0.0
    assert plan.sparsity_at(9) == gmp.cubic_sparsity(7, 4, 15, 0.5)  # the last pruning step's
    assert plan.sparsity_at(15) == plan.sparsity_at(20) == 0.5
    assert [plan.round_epochs(r) for r in (1, 2)] == [(1, 3), (3, 5)]
    with pytest.raises(ValueError, match=r"gmp\.rounds"):
        plan.round_epochs(3)


def test_default_plan_matches_imp_budget_and_rounds() -> None:
    settings = Settings()  # 20 pretrain + 3 x 4 retrain epochs, 3 phases to 90%
    plan = gmp.plan(settings, 3, steps_per_epoch=47)
    assert (plan.epochs, plan.dense_epochs, plan.rounds) == (32, 20, 3)
    assert plan.end_step == 20 * 47 + round(0.75 * 12 * 47)
    assert plan.final_sparsity == pytest.approx(0.9)
    assert [plan.round_epochs(r) for r in (1, 2, 3)] == [(20, 24), (24, 28), (28, 32)]


def _prunable_zero_where_pruned(model, masks) -> bool:
    return all(not p.detach()[~masks[n]].any() for n, p in prunable_parameters(model).items())


def test_gradual_pruning_keeps_masks_zero_and_reaches_the_target_exactly(
    tiny_settings: Settings, prepared_path: Path
) -> None:
    dataset = load_prepared(prepared_path, tiny_settings.data)
    spe = gmp.steps_per_epoch(len(dataset.train), tiny_settings.pretrain.batch_size)
    plan = gmp.GmpPlan(
        spe, epochs=3, dense_epochs=1, end_step=2 * spe, interval=2, final_sparsity=0.8, rounds=1
    )
    torch.manual_seed(0)
    model = SmallCNN(width=4)
    masks = dense_masks(model)
    pruner = gmp.GradualPruner(model, masks, plan, exclude=("first_conv",))
    seen: list[tuple[int, int]] = []
    previous = {n: m.clone() for n, m in masks.items()}

    def check(step: int) -> None:
        pruner(step)
        assert _prunable_zero_where_pruned(model, masks), step  # zero at every step
        assert all(not (masks[n] & ~previous[n]).any() for n in masks), step  # never revived
        previous.update({n: m.clone() for n, m in masks.items()})
        seen.append((step, sum(int(m.sum()) for m in masks.values())))

    train(
        model, masks, dataset, optim=tiny_settings.pretrain, peak_lr=0.1, epochs=plan.epochs,
        schedule=pretrain_schedule(tiny_settings.pretrain), seed=1, augment=tiny_settings.data, on_step=check,
    )  # fmt: skip
    names = list(prunable_parameters(model))
    assert masks[names[0]].all()  # prune.exclude honoured
    pruned_total = sum(masks[n].numel() for n in names[1:])
    kept = sum(int(masks[n].sum()) for n in names[1:])
    assert kept == round(0.2 * pruned_total)  # exactly the target at the ramp's end ...
    counts = dict(seen)
    assert counts[plan.end_step] == counts[plan.total_steps]  # ... and kept to the end
    assert counts[plan.start_step] == sum(m.numel() for m in masks.values())  # dense until t0
    assert len({c for _, c in seen}) > 3  # gradually, over several pruning steps


def test_gmp_step_writes_prefix_and_model_at_target(
    tiny_settings: Settings, prepared_path: Path, tmp_path: Path
) -> None:
    result = jobs.gmp_train(tiny_settings, prepared_path, 2, 0, tmp_path / "gmp.pt", tmp_path / "prefix.pt")
    prefix = Checkpoint.load(tmp_path / "prefix.pt")
    total = sum(m.numel() for m in result.masks.values())
    assert sum(int(m.sum()) for m in result.masks.values()) == round(target_density(0.75, 2, 2) * total)
    assert result.meta["kind"] == "gmp" and result.meta["model_dir"] == "gmp/phase2"
    assert result.meta["target_sparsity"] == pytest.approx(0.75)
    assert result.meta["gmp_epochs"] == 2 + 2 * 1  # IMP's budget to phase 2
    assert all(m.all() for m in prefix.masks.values())  # dense when pruning starts
    assert prefix.meta["train_steps"] == result.meta["prune_start_step"] > 0
    # GMP starts from the dense model's initialization: with no dense stretch the prefix is it
    at_init = dataclasses.replace(
        tiny_settings, gmp=dataclasses.replace(tiny_settings.gmp, start_fraction=0.0)
    )
    jobs.gmp_train(at_init, prepared_path, 1, 0, tmp_path / "gmp0.pt", tmp_path / "prefix0.pt")
    torch.manual_seed(derive_seed(0, "init"))
    init = build_model(tiny_settings.model, 1, 10).state_dict()
    prefix0 = Checkpoint.load(tmp_path / "prefix0.pt").state_dict
    assert all(torch.equal(prefix0[k], init[k]) for k in init)


def test_round_average_reprunes_to_the_density_and_recalibrates_bn(
    tiny_settings: Settings, prepared_path: Path, tmp_path: Path
) -> None:
    settings = dataclasses.replace(
        tiny_settings, gmp=dataclasses.replace(tiny_settings.gmp, prune_interval=1)
    )
    jobs.gmp_train(settings, prepared_path, 2, 0, tmp_path / "gmp.pt", tmp_path / "prefix.pt")
    copies = [tmp_path / f"copy{i}.pt" for i in range(2)]
    for i, path in enumerate(copies):
        jobs.gmp_sms_ingredient(settings, prepared_path, tmp_path / "prefix.pt", 2, 1, i, 0, path)
    loaded = [Checkpoint.load(p) for p in copies]
    assert not all(torch.equal(loaded[0].masks[n], loaded[1].masks[n]) for n in loaded[0].masks)
    with pytest.raises(MaskMismatchError):  # SMS's own soup still refuses them
        average_state_dicts([c.state_dict for c in loaded], [c.masks for c in loaded])
    soup = jobs.gmp_sms_average(settings, prepared_path, 2, 1, copies, tmp_path / "round1.pt")
    assert soup.meta["kind"] == "gmp_sms_round" and soup.meta["model_dir"] == "gmp_sms/phase2/round1/soup"
    total = sum(m.numel() for m in soup.masks.values())
    kept = sum(int(m.sum()) for m in soup.masks.values())
    assert kept == round((1 - soup.meta["target_sparsity"]) * total)
    assert 0 < soup.meta["target_sparsity"] < 0.75  # round 1 of 2 ends before the target
    assert all(not soup.state_dict[n][~m].any() for n, m in soup.masks.items())
    mean = (
        loaded[0].state_dict["features.0.1.running_mean"] + loaded[1].state_dict["features.0.1.running_mean"]
    ) / 2
    assert not torch.allclose(soup.state_dict["features.0.1.running_mean"], mean)  # recomputed ...
    dataset = load_prepared(prepared_path, settings.data)
    model = SmallCNN(width=4)
    model.load_state_dict(soup.state_dict)
    recalibrate_batchnorm(model, dataset.train.head(0.5), settings.eval_batch_size)
    assert torch.allclose(
        model.state_dict()["features.0.1.running_mean"], soup.state_dict["features.0.1.running_mean"]
    )
    # the last round's average is GMP + SMS's result, a soup row of the table
    last = [tmp_path / f"last{i}.pt" for i in range(2)]
    for i, path in enumerate(last):
        jobs.gmp_sms_ingredient(settings, prepared_path, tmp_path / "round1.pt", 2, 2, i, 0, path)
    final = jobs.gmp_sms_average(settings, prepared_path, 2, 2, last, tmp_path / "final.pt")
    assert (final.meta["kind"], final.meta["method"], final.meta["model_dir"]) == (
        "soup",
        "gmp_sms",
        "gmp_sms/phase2",
    )
    assert final.meta["target_sparsity"] == pytest.approx(0.75)
    with pytest.raises(ValueError, match="round 1"):  # copies of another round are refused
        jobs.gmp_sms_average(settings, prepared_path, 2, 1, last, tmp_path / "wrong.pt")


def test_average_dense_and_reprune_keeps_the_largest_averaged_magnitudes() -> None:
    torch.manual_seed(0)
    a, b = SmallCNN(width=4), SmallCNN(width=4)
    model = SmallCNN(width=4)
    masks = gmp.average_dense_and_reprune([a.state_dict(), b.state_dict()], model, 0.3, ())
    name = "features.0.0.weight"
    mean = (a.state_dict()[name] + b.state_dict()[name]) / 2
    assert torch.equal(model.state_dict()[name][masks[name]], mean[masks[name]])
    every = torch.cat([((a.state_dict()[n] + b.state_dict()[n]) / 2).abs().flatten() for n in masks])
    kept = torch.cat([masks[n].flatten() for n in masks])
    assert int(kept.sum()) == round(0.3 * kept.numel())
    assert every[kept].min() >= every[~kept].max()


def test_rewind_point_replays_pretraining_exactly(
    tiny_settings: Settings, prepared_path: Path, tmp_path: Path
) -> None:
    settings = dataclasses.replace(
        tiny_settings, baselines=dataclasses.replace(tiny_settings.baselines, rewind_epoch=1)
    )
    point = jobs.rewind_point(settings, prepared_path, 0, tmp_path / "rewind.pt")
    dataset = load_prepared(prepared_path, settings.data)
    spe = gmp.steps_per_epoch(len(dataset.train), settings.pretrain.batch_size)
    torch.manual_seed(derive_seed(0, "init"))
    model = SmallCNN(width=4)
    captured = {}

    def capture(step: int) -> None:
        if step == spe:
            captured.update({k: v.detach().clone() for k, v in model.state_dict().items()})

    train(
        model, dense_masks(model), dataset, optim=settings.pretrain, peak_lr=settings.pretrain.lr,
        epochs=settings.pretrain.epochs, schedule=pretrain_schedule(settings.pretrain),
        seed=derive_seed(0, "pretrain"), augment=settings.data, on_step=capture,
    )  # fmt: skip
    assert point.meta["train_steps"] == spe
    assert all(torch.equal(point.state_dict[k], captured[k]) for k in captured)  # bitwise


def test_rewinding_resets_survivors_to_the_rewind_point_and_keeps_the_mask(
    tiny_settings: Settings, prepared_path: Path, tmp_path: Path
) -> None:
    torch.manual_seed(0)
    early, late = SmallCNN(width=4), SmallCNN(width=4)
    masks = select_masks(late, dense_masks(late), 0.4, "global")
    rewind_to(late, early.state_dict(), masks)
    for name, p in late.state_dict().items():
        keep = masks.get(name, torch.ones_like(p, dtype=torch.bool))
        assert torch.equal(p[keep], early.state_dict()[name][keep]), name
        assert not p[~keep].any(), name
    # the step: prune the parent by magnitude, rewind, train the rest of pretraining
    jobs.pretrain(tiny_settings, prepared_path, 0, tmp_path / "dense.pt")
    jobs.rewind_point(tiny_settings, prepared_path, 0, tmp_path / "rewind.pt")
    ticket = jobs.imp_rewind(
        tiny_settings, prepared_path, tmp_path / "dense.pt", tmp_path / "rewind.pt", 1, 0, tmp_path / "t1.pt"
    )
    parent = SmallCNN(width=4)
    parent.load_state_dict(Checkpoint.load(tmp_path / "dense.pt").state_dict)
    expected = select_masks(parent, dense_masks(parent), target_density(0.75, 2, 1), "global")
    assert all(torch.equal(ticket.masks[n], expected[n]) for n in expected)
    assert all(not ticket.state_dict[n][~m].any() for n, m in ticket.masks.items())
    dense = Checkpoint.load(tmp_path / "dense.pt")
    assert ticket.meta["train_steps"] == dense.meta["train_steps"] // 2  # epochs 1..2 of 2
    assert (ticket.meta["lineage"], ticket.meta["model_dir"]) == (
        "imp_rewind",
        "imp_rewind/phase1/ingredient0",
    )


@pytest.mark.parametrize(
    ("experiment", "expected"),
    [
        (
            {"pretrain": {"epochs": 3}, "baselines": {"imp_rewind": True, "rewind_epoch": 3}},
            "experiments.bad.baselines.rewind_epoch: 3 must be less than pretrain.epochs (3)",
        ),
        (
            {
                "pretrain": {"epochs": 3},
                "baselines": {"lottery_pools_tickets": "imp_rewind", "rewind_epoch": 5},
            },
            "experiments.bad.baselines.rewind_epoch: 5 must be less than pretrain.epochs (3)",
        ),
        ({"baselines": {"gmp": "sometimes"}}, "experiments.bad.baselines.gmp: 'sometimes' is not one of"),
        (
            {"baselines": {"lottery_pools_tickets": "gmp"}},
            "experiments.bad.baselines.lottery_pools_tickets: 'gmp'",
        ),
        ({"baselines": {"rewind_epoch": -1}}, "experiments.bad.baselines.rewind_epoch: -1 is less than"),
        ({"gmp": {"rounds": 13}}, "experiments.bad.gmp.rounds: 13 rounds need at least as many epochs"),
        ({"gmp": {"epochs": 10}}, "experiments.bad.gmp.start_fraction: pruning would start at epoch 10"),
        ({"gmp": {"ramp_fraction": 0}}, "experiments.bad.gmp.ramp_fraction: 0 is less than or equal"),
    ],
)
def test_bad_gmp_and_rewind_configs_name_the_key(experiment: dict, expected: str) -> None:
    problems = config_problems({"experiments": {"bad": experiment}}, SCHEMA)
    assert any(expected in p for p in problems), problems


def test_rewind_epoch_is_only_checked_when_rewinding() -> None:
    config = {
        "experiments": {"ok": {"pretrain": {"epochs": 1}, "baselines": {"gmp": "none", "gmp_sms": "none"}}}
    }
    assert config_problems(config, SCHEMA) == []
    settings = Settings.from_dict({"pretrain": {"epochs": 1}})
    with pytest.raises(ValueError, match=r"baselines\.rewind_epoch: 1 must be in 0\.\.0"):
        jobs.rewind_point(settings, Path("unused.pt"), 0, Path("unused-out.pt"))


def _dry_run_jobs(tmp_path: Path, experiment: dict) -> list[tuple[str, list[str], list[str]]]:
    """(rule, inputs, outputs) of every job of a dry run of one experiment."""
    (tmp_path / "data").mkdir(exist_ok=True)
    config = {"experiments": {"g": {"data": {"root": str(tmp_path / "data")}, **experiment}}}
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    run = subprocess.run(
        ["snakemake", "-n", "--snakefile", str(REPO / "Snakefile"), "-d", str(tmp_path),
         "--configfile", str(tmp_path / "config.yaml")],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    jobs = []
    for block in re.split(r"\n(?=(?:local)?rule \w+:)", run.stdout):
        match = re.match(r"(?:local)?rule (\w+):", block)
        if not match:
            continue
        fields = dict(re.findall(r"^\s+(input|output): (.*)$", block, re.MULTILINE))
        split = [f.strip() for f in fields.get("input", "").split(",") if f.strip()]
        outputs = [f.strip().removesuffix(" (update)") for f in fields.get("output", "").split(",")]
        jobs.append((match.group(1), split, outputs))
    return jobs


def test_dry_run_chains_gmp_rounds_and_rewound_tickets_without_duplicates(tmp_path: Path) -> None:
    jobs = _dry_run_jobs(
        tmp_path,
        {
            "pretrain": {"epochs": 2},
            "prune": {"phases": 2},
            "retrain": {"epochs": 1},
            "soup": {"ingredients": 2, "methods": ["uniform"]},
            "baselines": {
                "gmp": "all", "gmp_sms": "last", "imp_rewind": True, "rewind_epoch": 1,
                "lottery_pools_tickets": "imp_rewind", "imp_budget": False, "soup_at_end": False,
            },
            "gmp": {"rounds": 2},
        },
    )  # fmt: skip
    outputs = [o for _, _, outs in jobs for o in outs]
    assert len(outputs) == len(set(outputs))  # no job twice
    by_output = {o: (rule, inputs) for rule, inputs, outs in jobs for o in outs}
    run = "results/g/seed0"
    assert [r for r, _, _ in jobs].count("gmp") == 2 and [r for r, _, _ in jobs].count("rewind_point") == 1
    for i in range(2):
        _, inputs = by_output[f"{run}/gmp_sms/phase2/round1/ingredient{i}/model.pt"]
        assert f"{run}/gmp/phase2/dense_prefix/model.pt" in inputs
        _, inputs = by_output[f"{run}/gmp_sms/phase2/round2/ingredient{i}/model.pt"]
        assert f"{run}/gmp_sms/phase2/round1/soup/model.pt" in inputs
    rule, inputs = by_output[f"{run}/gmp_sms/phase2/model.pt"]
    assert rule == "gmp_sms" and {
        f"{run}/gmp_sms/phase2/round2/ingredient{i}/model.pt" for i in (0, 1)
    } <= set(inputs)
    assert f"{run}/gmp_sms/phase2/round2/soup/model.pt" not in by_output  # the last round is the result
    assert f"{run}/gmp_sms/phase1/model.pt" not in by_output  # gmp_sms: last
    _, inputs = by_output[f"{run}/imp_rewind/phase2/ingredient0/model.pt"]
    assert {f"{run}/imp_rewind/phase1/ingredient0/model.pt", f"{run}/rewind/model.pt"} <= set(inputs)
    _, inputs = by_output[f"{run}/imp_rewind/phase1/ingredient0/model.pt"]
    assert f"{run}/dense/model.pt" in inputs
    _, inputs = by_output[f"{run}/lottery_pools_interp/phase2/model.pt"]
    assert (
        f"{run}/imp_rewind/phase1/ingredient0/model.pt" in inputs
        and f"{run}/imp/phase2/ingredient0/model.pt" not in inputs
    )
    evaluated = {
        o.removeprefix(f"{run}/").removesuffix("/metrics.json")
        for r, _, outs in jobs
        if r == "evaluate"
        for o in outs
    }
    assert {"gmp/phase1", "gmp/phase2", "gmp_sms/phase2", "imp_rewind/phase1/ingredient0",
            "imp_rewind/phase2/ingredient0"} <= evaluated  # fmt: skip
    assert not any("round" in d or "dense_prefix" in d for d in evaluated)  # rounds are no rows
    settings = Settings.from_dict({"name": "g", "pretrain": {"epochs": 2}, "prune": {"phases": 2}})
    assert layout.gmp_sms_parent_dir(2, 1, 2) == "gmp/phase2/dense_prefix" and settings.gmp.rounds is None
