"""Faults and bad files: clear errors naming the file, nothing half-written left behind."""

from __future__ import annotations

import errno
import gzip
import json
from pathlib import Path

import pytest
import torch

from sparse_soups import checkpoints, layout, steps
from sparse_soups.checkpoints import Checkpoint, sha256
from sparse_soups.config import DataSettings, Settings
from sparse_soups.data import DataError, DataNotFoundError, prepare_dataset
from sparse_soups.models import SmallCNN
from sparse_soups.pruning import dense_masks
from sparse_soups.reporting import load_metrics
from sparse_soups.soups import MaskMismatchError, average_state_dicts
from sparse_soups.training import DivergenceError
from tests.conftest import make_idx_dataset


def test_incomplete_data_root_names_the_missing_file(tmp_path: Path) -> None:
    root = make_idx_dataset(tmp_path / "idx", n_train=20, n_test=10)
    (root / "train-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DataNotFoundError, match=r"data.root .* lacks train-labels-idx1-ubyte"):
        prepare_dataset(DataSettings(root=str(root)), tmp_path / "out.pt")


def test_truncated_archive_names_the_file(tmp_path: Path) -> None:
    root = make_idx_dataset(tmp_path / "idx", n_train=20, n_test=10)
    archive = root / "t10k-images-idx3-ubyte.gz"
    archive.write_bytes(archive.read_bytes()[:100])
    with pytest.raises(DataError, match=f"cannot read {archive}"):
        prepare_dataset(DataSettings(root=str(root)), tmp_path / "out.pt")
    assert not (tmp_path / "out.pt").exists()


def test_idx_file_with_a_wrong_header_names_the_directory(tmp_path: Path) -> None:
    root = make_idx_dataset(tmp_path / "idx", n_train=20, n_test=10)
    (root / "train-images-idx3-ubyte.gz").write_bytes(gzip.compress(b"not an idx file at all"))
    with pytest.raises(DataError, match=f"IDX files in {root} cannot be read"):
        prepare_dataset(DataSettings(root=str(root)), tmp_path / "out.pt")


def test_diverging_loss_stops_with_the_step_and_writes_nothing(
    tiny_settings: Settings, prepared_path: Path, tmp_path: Path
) -> None:
    settings = Settings.from_dict({**tiny_settings.to_dict(), "pretrain": {"lr": 1e12, "epochs": 2}})
    with pytest.raises(DivergenceError, match=r"loss is (nan|inf) at step \d+ of \d+"):
        steps.pretrain(settings, prepared_path, seed=0, out=tmp_path / "model.pt")
    assert list(tmp_path.iterdir()) == []


def test_disk_full_mid_write_keeps_the_previous_checkpoint(tmp_path: Path, monkeypatch) -> None:
    path = tmp_path / "model.pt"
    model = SmallCNN(width=4)
    Checkpoint(model.state_dict(), dense_masks(model), {"phase": 0}).save(path)
    before = path.read_bytes()

    def write_half_then_fail(file: str, data: bytes) -> None:  # what a full disk does
        Path(file).write_bytes(data[: len(data) // 2])
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(checkpoints, "_write_bytes", write_half_then_fail)
    with pytest.raises(OSError, match="No space left"):
        Checkpoint(model.state_dict(), dense_masks(model), {"phase": 1}).save(path)
    assert path.read_bytes() == before
    assert list(tmp_path.iterdir()) == [path]


def test_soup_refuses_ingredients_of_another_architecture() -> None:
    narrow, wide = SmallCNN(width=4), SmallCNN(width=8)
    with pytest.raises(MaskMismatchError, match="ingredient 1 has a different architecture"):
        average_state_dicts(
            [narrow.state_dict(), wide.state_dict()], [dense_masks(narrow), dense_masks(wide)]
        )


def _evaluated_model(tiny_settings: Settings, prepared_path: Path, directory: Path) -> Path:
    model = SmallCNN(in_channels=1, num_classes=10, width=4)
    meta = {"experiment": "tiny", "seed": 0, "model_dir": layout.DENSE, "kind": "dense", "phase": 0}
    Checkpoint(model.state_dict(), dense_masks(model), meta).save(directory / layout.MODEL_FILE)
    steps.evaluate(tiny_settings, prepared_path, directory / layout.MODEL_FILE, directory / "metrics.json")
    return directory / "metrics.json"


def test_metrics_record_the_checkpoint_checksum_and_loads_verify_it(
    tiny_settings: Settings, prepared_path: Path, tmp_path: Path
) -> None:
    metrics_path = _evaluated_model(tiny_settings, prepared_path, tmp_path)
    record = json.loads(metrics_path.read_text())
    assert record["checkpoint_sha256"] == sha256(tmp_path / layout.MODEL_FILE)
    assert load_metrics([metrics_path])[0]["test_accuracy"] == record["test_accuracy"]
    other = SmallCNN(in_channels=1, num_classes=10, width=4)  # the checkpoint is replaced
    Checkpoint(other.state_dict(), dense_masks(other), {}).save(tmp_path / layout.MODEL_FILE)
    with pytest.raises(ValueError, match=f"{metrics_path} describes another checkpoint"):
        load_metrics([metrics_path])


def test_metrics_file_with_missing_fields_is_named(
    tiny_settings: Settings, prepared_path: Path, tmp_path: Path
) -> None:
    metrics_path = _evaluated_model(tiny_settings, prepared_path, tmp_path)
    record = json.loads(metrics_path.read_text())
    del record["test_accuracy"], record["phase"]
    metrics_path.write_text(json.dumps(record))
    with pytest.raises(ValueError, match=r"lacks the fields \['phase', 'test_accuracy'\]"):
        load_metrics([metrics_path])
    metrics_path.write_text('{"truncated": ')
    with pytest.raises(ValueError, match=f"cannot read metrics file {metrics_path}"):
        load_metrics([metrics_path])


def test_same_seed_gives_bitwise_identical_models_and_metrics(
    tiny_settings: Settings, prepared_path: Path, tmp_path: Path
) -> None:
    runs = []
    for name in ("a", "b"):
        out = tmp_path / name / layout.MODEL_FILE
        steps.pretrain(tiny_settings, prepared_path, seed=5, out=out)
        metrics = steps.evaluate(tiny_settings, prepared_path, out, tmp_path / name / "metrics.json")
        runs.append((Checkpoint.load(out), metrics))
    (first, first_metrics), (second, second_metrics) = runs
    assert all(torch.equal(v, second.state_dict[k]) for k, v in first.state_dict.items())
    assert first_metrics == second_metrics
    other = steps.pretrain(tiny_settings, prepared_path, seed=6, out=tmp_path / "c.pt")
    assert not torch.equal(other.state_dict["classifier.weight"], first.state_dict["classifier.weight"])
