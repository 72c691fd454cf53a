from __future__ import annotations

from pathlib import Path

import pytest
import torch

from sparse_soups import steps
from sparse_soups.checkpoints import Checkpoint, CheckpointError, atomic_torch_save
from sparse_soups.config import Settings
from sparse_soups.models import SmallCNN
from sparse_soups.pruning import dense_masks


def _checkpoint(width: int = 4) -> Checkpoint:
    model = SmallCNN(width=width)
    return Checkpoint(model.state_dict(), dense_masks(model), {"phase": 0, "seed": 0})


def test_round_trip_keeps_weights_masks_and_meta(tmp_path: Path) -> None:
    original = _checkpoint()
    original.save(tmp_path / "model.pt")
    loaded = Checkpoint.load(tmp_path / "model.pt")
    assert loaded.meta == original.meta
    assert all(torch.equal(loaded.state_dict[k], v) for k, v in original.state_dict.items())
    assert list(tmp_path.iterdir()) == [tmp_path / "model.pt"]  # no temporary file left


def test_failed_write_leaves_previous_file_intact(tmp_path: Path) -> None:
    path = tmp_path / "model.pt"
    _checkpoint().save(path)
    before = path.read_bytes()
    with pytest.raises(Exception):  # noqa: B017 - whatever pickling raises
        atomic_torch_save({"unpicklable": lambda: None}, path)
    assert path.read_bytes() == before
    assert list(tmp_path.iterdir()) == [path]


def test_truncated_checkpoint_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "model.pt"
    _checkpoint().save(path)
    path.write_bytes(path.read_bytes()[:500])
    with pytest.raises(CheckpointError, match=str(path)):
        Checkpoint.load(path)


def test_code_in_a_checkpoint_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "evil.pt"
    torch.save({"state_dict": {}, "masks": {}, "meta": {"x": Path("/tmp")}}, path)  # needs unpickling a class
    with pytest.raises(CheckpointError, match="cannot be read"):
        Checkpoint.load(path)


def test_checkpoint_of_another_architecture_is_named(
    tmp_path: Path, prepared_path: Path, idx_dir: Path
) -> None:
    path = tmp_path / "wide.pt"
    _checkpoint(width=8).save(path)
    settings = Settings.from_dict({"data": {"root": str(idx_dir)}, "model": {"width": 4}})
    with pytest.raises(CheckpointError, match=f"{path}.*does not fit model 'cnn'"):
        steps.evaluate(settings, prepared_path, path, tmp_path / "metrics.json")
    assert not (tmp_path / "metrics.json").exists()
