"""OOD evaluation end to end: the corrupted test set written by the workflow step, read back
by the CIFAR-10-C reader, and every metrics field of the contract from evaluate and ensemble."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from sparse_soups import cli, jobs
from sparse_soups.config import OodSettings, Settings
from sparse_soups.kernels.corruptions import ALL
from sparse_soups.kernels.data import load_prepared
from sparse_soups.kernels.ood_sets import read_corrupted, write_corrupted_dataset, write_ood_set

CORRUPTIONS = ["gaussian_noise", "contrast", "impulse_noise", "defocus_blur"]


@pytest.fixture(scope="module")
def ood_settings(idx_dir: Path) -> Settings:
    return Settings.from_dict(
        {
            "name": "ood",
            "data": {"root": str(idx_dir)},
            "model": {"width": 8},
            "pretrain": {"epochs": 8, "batch_size": 32, "lr": 0.05},
            "prune": {"sparsity": 0.5, "phases": 1},
            "retrain": {"epochs": 1},
            "ood": {"corruptions": CORRUPTIONS, "severities": [1, 3, 5], "test_subset": 150},
        }
    )


@pytest.fixture(scope="module")
def ood_dir(ood_settings: Settings, prepared_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("ood") / "ood"
    jobs.corrupt_test_set(ood_settings, prepared_path, out)
    return out


@pytest.fixture(scope="module")
def trained(ood_settings: Settings, prepared_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dense") / "model.pt"
    jobs.pretrain(ood_settings, prepared_path, 0, out)
    return out


def test_generated_set_has_the_official_layout_and_is_deterministic(
    ood_settings: Settings, prepared_path: Path, ood_dir: Path, tmp_path: Path
) -> None:
    manifest = json.loads((ood_dir / "manifest.json").read_text())
    assert manifest["corruptions"] == CORRUPTIONS and manifest["images_per_severity"] == 150
    for name in CORRUPTIONS:
        stacked = np.load(ood_dir / f"{name}.npy")
        assert stacked.dtype == np.uint8 and stacked.shape == (5 * 150, 28, 28, 1)
        images, labels = read_corrupted(ood_dir, name, 5)
        assert images.shape == (150, 1, 28, 28) and images.dtype == torch.uint8
    labels = np.load(ood_dir / "labels.npy")
    assert labels.shape == (750,) and (labels[:150] == labels[600:]).all()
    # the labels are those of the seeded subset of the test split, in order
    test_labels = torch.load(prepared_path, weights_only=True)["test_labels"].numpy()
    assert np.isin(labels[:150], test_labels).all()
    again = tmp_path / "again"
    jobs.corrupt_test_set(ood_settings, prepared_path, again)
    for name in [*CORRUPTIONS, "labels"]:
        assert (ood_dir / f"{name}.npy").read_bytes() == (again / f"{name}.npy").read_bytes()
    other_seed = dataclasses.replace(ood_settings, ood=dataclasses.replace(ood_settings.ood, seed=1))
    jobs.corrupt_test_set(other_seed, prepared_path, tmp_path / "seed1")
    assert not np.array_equal(np.load(ood_dir / "labels.npy"), np.load(tmp_path / "seed1" / "labels.npy"))


def test_evaluate_writes_every_contract_field(
    ood_settings: Settings, prepared_path: Path, trained: Path, ood_dir: Path, tmp_path: Path
) -> None:
    metrics = jobs.evaluate(ood_settings, prepared_path, trained, tmp_path / "m.json", ood_dir=ood_dir)
    assert json.loads((tmp_path / "m.json").read_text()) == metrics
    assert set(metrics["ood"]) == set(CORRUPTIONS)
    cells = [acc for row in metrics["ood"].values() for acc in row.values()]
    assert all(set(row) == {"1", "3", "5"} for row in metrics["ood"].values())
    assert all(0 <= acc <= 1 for acc in cells) and len(cells) == 12
    assert metrics["ood_accuracy"] == pytest.approx(sum(cells) / len(cells))
    assert 0 <= metrics["ece"] <= 1 and 0 <= metrics["worst_class_accuracy"] <= metrics["test_accuracy"]
    assert metrics["flops"] == metrics["dense_flops"] > 0 and metrics["speedup"] == 1.0  # dense
    # the model learned the task, and corruptions hurt it more the stronger they are
    assert metrics["test_accuracy"] > 0.6  # 10 classes
    for name in ("contrast", "impulse_noise"):
        assert metrics["ood"][name]["5"] < metrics["ood"][name]["1"], name
    mean_at = {s: np.mean([metrics["ood"][c][s] for c in CORRUPTIONS]) for s in ("1", "3", "5")}
    assert mean_at["1"] > mean_at["3"] > mean_at["5"]


def test_clean_accuracy_on_the_identity_corruption_matches_the_test_split(
    ood_settings: Settings, prepared_path: Path, trained: Path, tmp_path: Path
) -> None:
    """`saturate` leaves gray images unchanged: its OOD accuracy is the subset's clean accuracy,
    so the OOD path normalizes exactly as the test split is normalized."""
    settings = dataclasses.replace(
        ood_settings, ood=OodSettings(corruptions=("saturate",), severities=(2,), test_subset=None)
    )
    jobs.corrupt_test_set(settings, prepared_path, tmp_path / "ood")
    metrics = jobs.evaluate(settings, prepared_path, trained, tmp_path / "m.json", ood_dir=tmp_path / "ood")
    assert metrics["ood"]["saturate"]["2"] == metrics["test_accuracy"] == metrics["ood_accuracy"]


def test_ood_off_gives_null_fields(
    ood_settings: Settings, prepared_path: Path, trained: Path, tmp_path: Path
) -> None:
    off = dataclasses.replace(ood_settings, ood=OodSettings(enabled=False))
    metrics = jobs.evaluate(off, prepared_path, trained, tmp_path / "m.json", ood_dir=tmp_path)
    assert metrics["ood"] is None and metrics["ood_accuracy"] is None
    assert jobs.evaluate(ood_settings, prepared_path, trained, tmp_path / "n.json")["ood"] is None


def test_pruned_model_flops_and_speedup(
    ood_settings: Settings, prepared_path: Path, trained: Path, tmp_path: Path
) -> None:
    retrained = tmp_path / "pruned.pt"
    jobs.retrain(ood_settings, prepared_path, trained, "dense", 1, 0, 0, retrained)
    metrics = jobs.evaluate(ood_settings, prepared_path, retrained, tmp_path / "m.json")
    assert metrics["flops"] < metrics["dense_flops"]
    assert metrics["speedup"] == pytest.approx(metrics["dense_flops"] / metrics["flops"])
    assert metrics["speedup"] > 1.2  # half the weights gone, globally


def test_ensemble_metrics_carry_calibration_and_ood(
    ood_settings: Settings, prepared_path: Path, trained: Path, ood_dir: Path, tmp_path: Path
) -> None:
    metrics = jobs.ensemble(
        ood_settings, prepared_path, [trained, trained], tmp_path / "e.json", ood_dir=ood_dir
    )
    single = jobs.evaluate(ood_settings, prepared_path, trained, tmp_path / "m.json", ood_dir=ood_dir)
    # an ensemble of one model twice predicts exactly what the model does
    assert metrics["test_accuracy"] == single["test_accuracy"]
    assert metrics["ece"] == pytest.approx(single["ece"], abs=1e-6)
    assert metrics["worst_class_accuracy"] == single["worst_class_accuracy"]
    assert metrics["ood"] == single["ood"] and metrics["ood_accuracy"] == single["ood_accuracy"]
    assert "flops" not in metrics and "geometry" not in metrics


def test_official_files_are_validated_and_subsampled(prepared_path: Path, tmp_path: Path) -> None:
    """Official-format files (written here for the whole test split, like CIFAR-10-C's 10,000
    images per severity) are subsampled at the same positions as a generated set would be."""
    raw = torch.load(prepared_path, weights_only=True)
    official = tmp_path / "official"
    write_corrupted_dataset(raw["test_images"], raw["test_labels"], official, ["fog", "brightness"], seed=3)
    ood = OodSettings(source="files", root=str(official), corruptions=("fog",), test_subset=40, seed=2)
    manifest = write_ood_set(ood, raw["test_images"], raw["test_labels"], tmp_path / "out")
    assert manifest["images_per_severity"] == 40
    n = len(raw["test_labels"])
    index = np.sort(np.random.default_rng(2).permutation(n)[:40])
    full = np.load(official / "fog.npy")
    subset = np.load(tmp_path / "out" / "fog.npy")
    assert subset.shape == (200, 28, 28, 1)
    for severity in range(5):
        assert np.array_equal(subset[severity * 40 : (severity + 1) * 40], full[severity * n + index])
    assert np.array_equal(
        read_corrupted(tmp_path / "out", "fog", 4)[1].numpy(), raw["test_labels"].numpy()[index]
    )

    with pytest.raises(FileNotFoundError, match=r"lacks snow\.npy"):
        missing = OodSettings(source="files", root=str(official), corruptions=("snow",))
        write_ood_set(missing, raw["test_images"], raw["test_labels"], tmp_path / "x")
    wrong_shape = torch.zeros(len(raw["test_labels"]), 3, 32, 32, dtype=torch.uint8)
    with pytest.raises(ValueError, match=r"fog\.npy: expected uint8 \(1000, 32, 32, 3\)"):
        write_ood_set(ood, wrong_shape, raw["test_labels"], tmp_path / "y")
    with pytest.raises(ValueError, match="unknown corruption 'fgo'"):
        write_ood_set(
            OodSettings(corruptions=("fgo",)), raw["test_images"], raw["test_labels"], tmp_path / "z"
        )


def test_cli_writes_the_set_and_evaluates_with_it(
    ood_settings: Settings, prepared_path: Path, trained: Path, tmp_path: Path
) -> None:
    settings_path = tmp_path / "settings.json"
    small = dataclasses.replace(ood_settings, ood=OodSettings(corruptions=("brightness",), test_subset=20))
    settings_path.write_text(json.dumps(small.to_dict()))
    common = ["--settings", str(settings_path), "--data", str(prepared_path), "--device", "cpu"]
    assert cli.main(["corrupt-test-set", *common, "--out", str(tmp_path / "ood")]) == 0
    assert cli.main(["evaluate", *common, "--checkpoint", str(trained), "--ood", str(tmp_path / "ood"),
                     "--out", str(tmp_path / "m.json")]) == 0  # fmt: skip
    metrics = json.loads((tmp_path / "m.json").read_text())
    assert list(metrics["ood"]) == ["brightness"] and list(metrics["ood"]["brightness"]) == [
        "1",
        "2",
        "3",
        "4",
        "5",
    ]


def test_default_covers_all_nineteen_corruptions() -> None:
    from sparse_soups.kernels.ood_sets import ood_corruptions

    assert ood_corruptions(OodSettings()) == ALL and len(ALL) == 19


def test_normalize_matches_the_prepared_splits(prepared_path: Path, ood_settings: Settings) -> None:
    dataset = load_prepared(prepared_path, ood_settings.data)
    raw = torch.load(prepared_path, weights_only=True)
    assert torch.allclose(dataset.normalize(raw["test_images"]), dataset.test.images)
