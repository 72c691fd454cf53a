from __future__ import annotations

from pathlib import Path

import pytest
import torch

from sparse_soups import jobs
from sparse_soups.config import Settings
from sparse_soups.kernels.checkpoints import (
    Checkpoint,
    CheckpointError,
    atomic_torch_save,
    pack_sparse,
    unpack_sparse,
)
from sparse_soups.kernels.models import SmallCNN
from sparse_soups.kernels.pruning import apply_masks, dense_masks, global_magnitude_masks


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
        jobs.evaluate(settings, prepared_path, path, tmp_path / "metrics.json")
    assert not (tmp_path / "metrics.json").exists()


def test_sparse_packing_round_trips_exactly() -> None:
    torch.manual_seed(0)
    weight = torch.randn(7, 5, 3)
    mask = torch.rand(7, 5, 3) > 0.8
    weight = weight * mask
    weight[mask.nonzero()[0].tolist()] = 0.0  # a kept weight that happens to be zero
    restored, restored_mask = unpack_sparse(pack_sparse(weight, mask))
    assert torch.equal(restored, weight) and torch.equal(restored_mask, mask)


def test_sparse_checkpoints_are_much_smaller_than_dense(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = SmallCNN(width=32)
    dense = dense_masks(model)
    Checkpoint(model.state_dict(), dense, {}).save(tmp_path / "dense.pt")
    sparse = global_magnitude_masks(model, dense, density=0.1)
    apply_masks(model, sparse)
    Checkpoint(model.state_dict(), sparse, {}).save(tmp_path / "sparse.pt")
    dense_size, sparse_size = (tmp_path / "dense.pt").stat().st_size, (tmp_path / "sparse.pt").stat().st_size
    assert sparse_size < 0.25 * dense_size
    loaded = Checkpoint.load(tmp_path / "sparse.pt")
    assert all(torch.equal(loaded.state_dict[k], v) for k, v in model.state_dict().items())
    assert all(torch.equal(loaded.masks[k], v) for k, v in sparse.items())


def test_checkpoint_of_unknown_format_is_named(tmp_path: Path) -> None:
    path = tmp_path / "old.pt"
    torch.save({"state_dict": {}, "masks": {}, "meta": {}}, path)
    with pytest.raises(CheckpointError, match=f"{path} is not in format"):
        Checkpoint.load(path)
