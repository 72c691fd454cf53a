"""Like-for-like comparisons: every evaluated model gets the same BatchNorm treatment, the
IMP baselines keep their recipe and checkpoints whatever the ingredients vary, datasets
are normalized per channel, and the authors' WRN-22-10 has their parameter count."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch

from sparse_soups import jobs
from sparse_soups.config import EvaluationSettings, Settings
from sparse_soups.kernels.checkpoints import Checkpoint
from sparse_soups.kernels.data import augment_batch, channel_statistics, load_prepared
from sparse_soups.kernels.metrics import expected_calibration_error, maximum_calibration_error
from sparse_soups.kernels.models import get_model


def _with_broken_statistics(path: Path, out: Path) -> None:
    """The checkpoint with BatchNorm running statistics that fit no data."""
    checkpoint = Checkpoint.load(path)
    state = {
        k: (v + 50.0 if k.endswith("running_mean") else v * 1e4 if k.endswith("running_var") else v)
        for k, v in checkpoint.state_dict.items()
    }
    Checkpoint(state, checkpoint.masks, checkpoint.meta).save(out)


@pytest.fixture(scope="module")
def chain(idx_dir: Path, prepared_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A dense model and two phase-1 ingredients of the tiny settings, trained once."""
    settings = Settings.from_dict(
        {"name": "tiny", "data": {"root": str(idx_dir)}, "model": {"width": 4},
         "pretrain": {"epochs": 2, "batch_size": 64}, "prune": {"sparsity": 0.75, "phases": 2},
         "retrain": {"epochs": 1}, "soup": {"ingredients": 3, "bn_recalibration_fraction": 0.5}}
    )  # fmt: skip
    directory = tmp_path_factory.mktemp("chain")
    jobs.pretrain(settings, prepared_path, 0, directory / "dense.pt")
    for i in range(2):
        jobs.retrain(
            settings, prepared_path, directory / "dense.pt", "dense", 1, i, 0, directory / f"i{i}.pt"
        )
    _with_broken_statistics(directory / "i0.pt", directory / "broken.pt")
    return directory


@pytest.fixture()
def broken_ingredient(chain: Path) -> Path:
    return chain / "broken.pt"


def test_every_evaluated_model_is_recalibrated(
    tiny_settings: Settings, prepared_path: Path, tmp_path: Path, broken_ingredient: Path
) -> None:
    """With `all` (the default) an ingredient's BatchNorm statistics are recomputed before
    scoring, so statistics that fit no data do not matter; with `soups` they do."""
    assert tiny_settings.evaluation.recalibrate == "all"
    every = jobs.evaluate(tiny_settings, prepared_path, broken_ingredient, tmp_path / "all.json")
    only_soups = dataclasses.replace(tiny_settings, evaluation=EvaluationSettings(recalibrate="soups"))
    soups = jobs.evaluate(only_soups, prepared_path, broken_ingredient, tmp_path / "soups.json")
    assert every["bn_recalibrated"] is True and soups["bn_recalibrated"] is False
    assert every["test_accuracy"] > soups["test_accuracy"] + 0.2
    assert json.loads((tmp_path / "all.json").read_text())["bn_recalibrated"] is True
    # the checkpoint itself is untouched: the next phase starts from what training produced
    assert Checkpoint.load(broken_ingredient).state_dict["features.0.1.running_mean"].mean() > 40


def test_ensemble_members_are_recalibrated_too(
    tiny_settings: Settings, prepared_path: Path, tmp_path: Path, broken_ingredient: Path
) -> None:
    metrics = jobs.ensemble(tiny_settings, prepared_path, [broken_ingredient] * 2, tmp_path / "e.json")
    only_soups = dataclasses.replace(tiny_settings, evaluation=EvaluationSettings(recalibrate="soups"))
    plain = jobs.ensemble(only_soups, prepared_path, [broken_ingredient] * 2, tmp_path / "p.json")
    assert metrics["bn_recalibrated"] is True and plain["bn_recalibrated"] is False
    assert metrics["test_accuracy"] > plain["test_accuracy"] + 0.2


def test_soups_record_their_recalibration_and_budget(
    tiny_settings: Settings, prepared_path: Path, tmp_path: Path, chain: Path
) -> None:
    paths = [chain / "i0.pt", chain / "i1.pt"]
    assert Checkpoint.load(paths[0]).meta["budget_epochs"] == tiny_settings.retrain.epochs
    soup = jobs.soup(tiny_settings, prepared_path, "uniform", paths, tmp_path / "soup.pt")
    assert soup.meta["bn_recalibrated"] is True
    assert soup.meta["budget_epochs"] == 2 * tiny_settings.retrain.epochs
    assert Checkpoint.load(chain / "dense.pt").meta["budget_epochs"] == tiny_settings.pretrain.epochs


def test_imp_budget_checkpoint_is_unchanged_by_soup_vary(
    tiny_settings: Settings, prepared_path: Path, tmp_path: Path, chain: Path
) -> None:
    """IMP (m x budget) trains with the experiment's recipe whatever the ingredients vary:
    the same file, byte for byte, under vary seed and vary weight_decay."""
    dense = chain / "dense.pt"
    varied = dataclasses.replace(
        tiny_settings,
        soup=dataclasses.replace(tiny_settings.soup, vary="weight_decay", values=(1e-2, 1e-3, 0.0)),
    )
    for name, settings in (("seed", tiny_settings), ("wd", varied)):
        jobs.retrain(settings, prepared_path, dense, "imp_budget", 1, 0, 0, tmp_path / f"{name}.pt")
        jobs.retrain(settings, prepared_path, dense, "imp", 1, 0, 0, tmp_path / f"imp_{name}.pt")
    assert (tmp_path / "seed.pt").read_bytes() == (tmp_path / "wd.pt").read_bytes()
    assert (tmp_path / "imp_seed.pt").read_bytes() == (tmp_path / "imp_wd.pt").read_bytes()
    recipe = Checkpoint.load(tmp_path / "wd.pt").meta["recipe"]
    assert recipe["weight_decay"] == tiny_settings.pretrain.weight_decay
    assert recipe["epochs"] == 3 * tiny_settings.retrain.epochs


def test_normalization_is_per_channel() -> None:
    """Each channel is scaled by its own training statistics (CIFAR's differ by channel)."""
    images = torch.zeros(4, 3, 2, 2, dtype=torch.uint8)
    images[:, 0] = 255
    images[:2, 1] = 255
    mean, std = channel_statistics(images)
    assert mean == pytest.approx((1.0, 0.5, 0.0))
    assert std[0] == pytest.approx(0.0) and std[1] == pytest.approx(0.5164, abs=1e-4)


def test_per_channel_padding_is_each_channels_black(prepared_path: Path, tiny_settings: Settings) -> None:
    """Crop padding fills each channel with its own normalized black."""
    images = torch.ones(2, 3, 4, 4)
    fill = (-1.0, -2.0, -3.0)
    padded = augment_batch(images, 2, False, fill, torch.Generator().manual_seed(0))
    border = padded == torch.tensor(fill).view(1, 3, 1, 1)
    assert border.any()
    assert ((padded == 1) | border).all()  # every pixel is an image pixel or its channel's fill
    dataset = load_prepared(prepared_path, tiny_settings.data)
    assert len(dataset.mean) == dataset.in_channels == 1
    assert dataset.train.images.mean().item() == pytest.approx(0.0, abs=1e-4)


def test_mce_is_the_largest_bin_gap() -> None:
    """Two bins: confidence 0.9 (all right: gap 0.1) and 0.6 (half right: gap 0.1 + 0.0)."""
    logits = torch.log(torch.tensor([[0.9, 0.1], [0.9, 0.1], [0.6, 0.4], [0.6, 0.4]]))
    labels = torch.tensor([0, 0, 0, 1])
    assert maximum_calibration_error(logits, labels) == pytest.approx(0.1)
    assert expected_calibration_error(logits, labels) == pytest.approx(0.5 * 0.1 + 0.5 * 0.1)
    confident_wrong = torch.log(torch.tensor([[0.95, 0.05]]))
    assert maximum_calibration_error(confident_wrong, torch.tensor([1])) == pytest.approx(0.95)


def test_wrn22_10_has_the_authors_parameter_count() -> None:
    """The authors' CIFAR-100 WideResNet (depth 22, width 10, dropout 0.3, conv biases):
    26,863,460 parameters, counted from their models/cifar100.py."""
    model = get_model("wrn22_10", 3, 100)
    assert sum(p.numel() for p in model.parameters()) == 26_863_460
    dropouts = [m.p for m in model.modules() if isinstance(m, torch.nn.Dropout)]
    assert dropouts and set(dropouts) == {0.3}
    assert model(torch.zeros(2, 3, 32, 32)).shape == (2, 100)
