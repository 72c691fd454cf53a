"""Training you can watch: history.csv, progress lines and TensorBoard events of the
training jobs, on the tiny IDX dataset through the real steps."""

from __future__ import annotations

import csv
import dataclasses
import logging
import math
from pathlib import Path

import pytest
import torch

from sparse_soups import jobs, layout
from sparse_soups.config import Settings
from sparse_soups.kernels import history
from sparse_soups.kernels.data import load_prepared
from sparse_soups.kernels.history import HISTORY_COLUMNS, HistoryRow, Monitor, read_history, write_history
from sparse_soups.kernels.models import build_model
from sparse_soups.kernels.pruning import dense_masks
from sparse_soups.kernels.schedules import pretrain_schedule
from sparse_soups.kernels.training import train
from sparse_soups.validation import experiment


def _with_logging(settings: Settings, **logging_keys: object) -> Settings:
    return dataclasses.replace(settings, logging=dataclasses.replace(settings.logging, **logging_keys))


def _run_path(root: Path, settings: Settings, model_dir: str, seed: int = 0) -> Path:
    return root / layout.run_dir(settings.name, seed) / model_dir / layout.MODEL_FILE


def _train(settings: Settings, prepared_path: Path, monitor: Monitor | None) -> dict[str, torch.Tensor]:
    dataset = load_prepared(prepared_path, settings.data)
    torch.manual_seed(0)
    model = build_model(settings.model, dataset.in_channels, dataset.num_classes)
    train(
        model, dense_masks(model), dataset, optim=settings.pretrain, peak_lr=settings.pretrain.lr, epochs=2,
        schedule=pretrain_schedule(settings.pretrain), seed=1, augment=settings.data, monitor=monitor,
    )  # fmt: skip
    return model.state_dict()


def test_validation_while_training_leaves_the_model_bitwise_unchanged(tiny_settings, prepared_path) -> None:
    dataset = load_prepared(prepared_path, tiny_settings.data)
    plain = _train(tiny_settings, prepared_path, None)
    watched = _train(tiny_settings, prepared_path, Monitor(dataset.val, 50, every_steps=1))
    assert plain.keys() == watched.keys()
    assert all(torch.equal(plain[name], watched[name]) for name in plain)


def test_pretraining_writes_a_row_before_training_and_one_per_epoch(
    tiny_settings, prepared_path, tmp_path, caplog
) -> None:
    out = _run_path(tmp_path, tiny_settings, layout.DENSE)
    with caplog.at_level(logging.INFO, logger=history.__name__):
        checkpoint = jobs.pretrain(tiny_settings, prepared_path, 0, out)
    rows = read_history(out.with_name(layout.HISTORY_FILE))
    epochs = tiny_settings.pretrain.epochs
    steps = checkpoint.meta["train_steps"]
    assert [row.epoch for row in rows] == list(range(epochs + 1))
    assert [row.step for row in rows] == [steps * e // epochs for e in range(epochs + 1)]
    assert math.isnan(rows[0].train_loss) and all(0 < row.train_loss < 10 for row in rows[1:])
    assert all(0 <= row.val_accuracy <= 1 and row.sparsity == 0 for row in rows)
    assert rows[-1].lr == pytest.approx(pretrain_schedule(tiny_settings.pretrain)(steps - 1, steps) * 0.1)
    assert [row.seconds for row in rows] == sorted(row.seconds for row in rows)
    progress = [r.getMessage() for r in caplog.records if "left" in r.getMessage()]
    assert len(progress) == epochs + 1
    assert f"step {steps}/{steps}" in progress[-1] and "~0 s left" in progress[-1]


def test_every_n_steps_and_the_validation_head(tiny_settings, prepared_path, tmp_path) -> None:
    settings = _with_logging(tiny_settings, validate_every_steps=3, validation_images=7)
    out = _run_path(tmp_path, settings, layout.DENSE)
    steps = jobs.pretrain(settings, prepared_path, 0, out).meta["train_steps"]
    rows = read_history(out.with_name(layout.HISTORY_FILE))
    assert [row.step for row in rows] == sorted({*range(0, steps + 1, 3), steps})
    # accuracy on 7 images moves in steps of 1/7
    assert all(math.isclose(row.val_accuracy * 7, round(row.val_accuracy * 7), abs_tol=1e-4) for row in rows)


def test_a_retrain_records_its_phase_sparsity_from_right_after_pruning(
    tiny_settings, prepared_path, tmp_path
) -> None:
    dense = _run_path(tmp_path, tiny_settings, layout.DENSE)
    jobs.pretrain(tiny_settings, prepared_path, 0, dense)
    out = _run_path(tmp_path, tiny_settings, layout.ingredient_dir("uniform", 1, 1))
    checkpoint = jobs.retrain(tiny_settings, prepared_path, dense, "dense", 1, 1, 0, out)
    rows = read_history(out.with_name(layout.HISTORY_FILE))
    masks = checkpoint.masks
    kept = sum(int(m.sum()) for m in masks.values()) / sum(m.numel() for m in masks.values())
    assert len(rows) == tiny_settings.retrain.epochs + 1
    assert all(row.sparsity == pytest.approx(1 - kept) for row in rows)
    assert rows[0].sparsity == pytest.approx(0.5, abs=0.01)  # phase 1 of 75% in 2 phases


def test_gmp_history_shows_the_sparsity_ramp(tiny_settings, prepared_path, tmp_path) -> None:
    settings = dataclasses.replace(
        tiny_settings,
        gmp=dataclasses.replace(tiny_settings.gmp, epochs=4, start_fraction=0.25, prune_interval=1),
    )
    out = _run_path(tmp_path, settings, layout.gmp_dir(2))
    prefix = _run_path(tmp_path, settings, layout.gmp_prefix_dir(2))
    checkpoint = jobs.gmp_train(settings, prepared_path, 2, 0, out, prefix)
    rows = read_history(out.with_name(layout.HISTORY_FILE))
    sparsity = [row.sparsity for row in rows]
    assert sparsity[:2] == [0, 0]  # dense for the first epoch
    assert sparsity == sorted(sparsity) and sparsity[-1] == pytest.approx(
        checkpoint.meta["target_sparsity"], abs=0.01
    )
    assert not prefix.with_name(layout.HISTORY_FILE).exists()  # the prefix is part of GMP's run


def test_rewinding_to_the_initialization_writes_an_empty_history(
    tiny_settings, prepared_path, tmp_path
) -> None:
    settings = dataclasses.replace(
        tiny_settings, baselines=dataclasses.replace(tiny_settings.baselines, rewind_epoch=0)
    )
    out = _run_path(tmp_path, settings, layout.REWIND)
    jobs.rewind_point(settings, prepared_path, 0, out)
    with open(out.with_name(layout.HISTORY_FILE)) as file:
        assert list(csv.reader(file)) == [list(HISTORY_COLUMNS)]


def test_history_round_trips_and_refuses_other_columns(tmp_path) -> None:
    rows = [
        HistoryRow(0.0, 0, 0.1, math.nan, math.nan, 0.5, 0.25, 0.01),
        HistoryRow(1.5, 12, 0.05, 0.75, 0.625, 0.8125, 0.25, 1.5),
    ]
    path = tmp_path / "history.csv"
    write_history(rows, path)
    back = read_history(path)
    assert back[1] == rows[1] and math.isnan(back[0].train_loss) and back[0].val_accuracy == 0.5
    assert not list(tmp_path.glob(".*"))  # the temporary file of the atomic write is gone
    path.write_text("epoch,step,loss\n1,2,3\n")
    with pytest.raises(ValueError, match="columns"):
        read_history(path)


def test_tensorboard_lists_every_run_with_the_history_figures(tiny_settings, prepared_path, tmp_path) -> None:
    from tensorboard.backend.event_processing.event_multiplexer import EventMultiplexer

    settings = _with_logging(tiny_settings, tensorboard=True)
    dense = _run_path(tmp_path, settings, layout.DENSE)
    jobs.pretrain(settings, prepared_path, 0, dense)
    ingredient = _run_path(tmp_path, settings, layout.ingredient_dir("uniform", 1, 0))
    jobs.retrain(settings, prepared_path, dense, "dense", 1, 0, 0, ingredient)
    jobs.retrain(settings, prepared_path, dense, "dense", 1, 0, 0, ingredient)  # rerun: replaces the events
    logdir = tmp_path / "results"  # what `tensorboard --logdir results/` reads
    runs = EventMultiplexer().AddRunsFromDirectory(str(logdir)).Reload()
    expected = {
        f"{settings.name}/tensorboard/seed0/dense",
        f"{settings.name}/tensorboard/seed0/dense/phase1/ingredient0",
    }
    assert set(runs.Runs()) == expected
    for run, checkpoint in zip(sorted(expected), (dense, ingredient), strict=True):
        rows = read_history(checkpoint.with_name(layout.HISTORY_FILE))
        events = runs.Scalars(run, "val_accuracy")
        assert [e.step for e in events] == [row.step for row in rows]
        assert [e.value for e in events] == pytest.approx([row.val_accuracy for row in rows], abs=1e-6)
        assert [e.step for e in runs.Scalars(run, "train_loss")] == [row.step for row in rows[1:]]


def test_tensorboard_without_the_package_is_a_config_error_naming_the_extra(monkeypatch) -> None:
    real = experiment.importlib.util.find_spec
    monkeypatch.setattr(
        experiment.importlib.util,
        "find_spec",
        lambda name, *a: None if name == "tensorboard" else real(name, *a),
    )
    problems = experiment.experiment_problems("e", {"logging": {"tensorboard": True}}, set())
    assert problems == [
        "experiments.e.logging.tensorboard: true needs the tensorboard package, which is not installed: "
        "pip install 'sparse-soups[tensorboard]' (or pip install tensorboard)"
    ]
    assert experiment.experiment_problems("e", {"logging": {"tensorboard": False}}, set()) == []
