"""`sparse-soups export` and `sparse_soups.load_model`: a checkpoint as a plain state dict
that loads into the bare model with no package code, its masks and metadata beside it."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

import sparse_soups
from sparse_soups import cli, jobs
from sparse_soups.config import ModelSettings, Settings
from sparse_soups.export import constructor_kwargs, export, masks_path
from sparse_soups.kernels.checkpoints import Checkpoint, CheckpointError
from sparse_soups.kernels.models import SmallCNN, get_model
from sparse_soups.kernels.pruning import apply_masks
from sparse_soups.methods.context import Job
from sparse_soups.registry import MODELS

TINY = {
    "name": "tiny",
    "model": {"width": 4},
    "pretrain": {"epochs": 1, "batch_size": 64},
    "prune": {"sparsity": 0.75, "phases": 2},
    "retrain": {"epochs": 1},
    "soup": {"ingredients": 2},
}


@pytest.fixture(scope="module")
def run(
    idx_dir: Path, prepared_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Settings, Path]:
    """A phase-1 ingredient where the workflow puts it, its run's settings.json two levels above."""
    settings = Settings.from_dict({**TINY, "data": {"root": str(idx_dir)}})
    experiment = tmp_path_factory.mktemp("export") / "results" / "tiny"
    experiment.mkdir(parents=True)
    (experiment / "settings.json").write_text(json.dumps(settings.to_dict()))
    dense = experiment / "seed0" / "dense" / "model.pt"
    jobs.pretrain(settings, prepared_path, 0, dense)
    ingredient = experiment / "seed0" / "dense" / "phase1" / "ingredient0" / "model.pt"
    jobs.retrain(settings, prepared_path, dense, "dense", phase=1, index=0, seed=0, out=ingredient)
    return settings, ingredient


def _reference(
    settings: Settings, prepared_path: Path, checkpoint: Path
) -> tuple[torch.Tensor, torch.Tensor]:
    """Test images and the package's own model's logits on them (as evaluation loads it)."""
    job = Job(settings, prepared_path)
    _, model = job.load(checkpoint)
    images = job.dataset.test.images[:64]
    with torch.no_grad():
        return images, model.eval()(images)


def _logits(model: torch.nn.Module, images: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model.eval()(images)


def test_safetensors_export_loads_strictly_into_the_plain_model_with_equal_predictions(
    run: tuple[Settings, Path], prepared_path: Path, tmp_path: Path
) -> None:
    settings, checkpoint = run
    out = tmp_path / "model.safetensors"
    assert export(checkpoint, out) == [out, tmp_path / "model.masks.safetensors"]
    with safe_open(out, framework="pt") as handle:
        metadata = handle.metadata()
    kwargs = json.loads(metadata["model_kwargs"])
    assert metadata["model"] == "cnn" and kwargs == {"in_channels": 1, "num_classes": 10, "width": 4}
    plain = SmallCNN(**kwargs)
    plain.load_state_dict(load_file(out), strict=True)
    images, expected = _reference(settings, prepared_path, checkpoint)
    assert torch.equal(_logits(plain, images), expected)


def test_pruned_weights_are_zero_and_the_masks_file_holds_the_checkpoints_masks(
    run: tuple[Settings, Path], tmp_path: Path
) -> None:
    _, checkpoint = run
    out = tmp_path / "model.safetensors"
    export(checkpoint, out)
    state_dict, masks = load_file(out), load_file(masks_path(out))
    source = Checkpoint.load(checkpoint)
    assert masks.keys() == source.masks.keys() and masks.keys() <= state_dict.keys()
    for name, mask in masks.items():
        assert mask.dtype == torch.bool and torch.equal(mask, source.masks[name])
        assert not state_dict[name][~mask].any()
    pruned = sum(int((~mask).sum()) for mask in masks.values())
    assert pruned / sum(mask.numel() for mask in masks.values()) == pytest.approx(0.5, abs=0.01)


def test_metadata_names_the_model_its_lineage_and_the_source_files_sha256(
    run: tuple[Settings, Path], tmp_path: Path
) -> None:
    _, checkpoint = run
    out = tmp_path / "model.safetensors"
    export(checkpoint, out)
    digest = hashlib.sha256(checkpoint.read_bytes()).hexdigest()
    with safe_open(out, framework="pt") as handle:
        metadata = handle.metadata()
    with safe_open(masks_path(out), framework="pt") as handle:
        assert handle.metadata()["source_sha256"] == digest
    meta = Checkpoint.load(checkpoint).meta
    assert metadata["source_sha256"] == digest and metadata["source_checkpoint"] == "model.pt"
    assert (metadata["phase"], metadata["kind"], metadata["lineage"]) == ("1", "ingredient", "dense")
    assert metadata["model_dir"] == "dense/phase1/ingredient0"
    assert float(metadata["sparsity"]) == pytest.approx(0.5, abs=0.01)
    assert json.loads(metadata["checkpoint_meta"]) == meta
    assert metadata["masks_file"] == "model.masks.safetensors"


def test_torch_export_holds_the_state_dict_masks_and_metadata(
    run: tuple[Settings, Path], prepared_path: Path, tmp_path: Path
) -> None:
    settings, checkpoint = run
    out = tmp_path / "model.pt"
    assert export(checkpoint, out, "torch") == [out]
    raw = torch.load(out, weights_only=True)
    assert raw.keys() == {"state_dict", "masks", "metadata"}
    plain = SmallCNN(**json.loads(raw["metadata"]["model_kwargs"]))
    plain.load_state_dict(raw["state_dict"], strict=True)
    images, expected = _reference(settings, prepared_path, checkpoint)
    assert torch.equal(_logits(plain, images), expected)
    source = Checkpoint.load(checkpoint)
    assert all(torch.equal(raw["masks"][name], mask) for name, mask in source.masks.items())
    assert raw["metadata"]["source_sha256"] == hashlib.sha256(checkpoint.read_bytes()).hexdigest()
    assert all(isinstance(value, str) for value in raw["metadata"].values())


def test_cli_exports_with_found_or_given_settings(run: tuple[Settings, Path], tmp_path: Path, capsys) -> None:
    _, checkpoint = run
    out = tmp_path / "cli.safetensors"
    assert cli.main(["export", str(checkpoint), "--format", "safetensors", "--out", str(out)]) == 0
    assert out.is_file() and masks_path(out).is_file()
    moved = tmp_path / "elsewhere.pt"  # outside its run: the settings cannot be found
    shutil.copy(checkpoint, moved)
    assert cli.main(["export", str(moved), "--format", "torch", "--out", str(tmp_path / "x.pt")]) == 1
    assert str(moved) in capsys.readouterr().err and not (tmp_path / "x.pt").exists()
    given = ["--settings", str(checkpoint.parents[4] / "settings.json")]
    assert cli.main(["export", str(moved), "--format", "torch", "--out", str(tmp_path / "x.pt"), *given]) == 0
    assert torch.equal(
        torch.load(tmp_path / "x.pt", weights_only=True)["state_dict"]["classifier.weight"],
        load_file(out)["classifier.weight"],
    )


def test_load_model_reads_checkpoints_and_both_exports_alike(
    run: tuple[Settings, Path], prepared_path: Path, tmp_path: Path
) -> None:
    settings, checkpoint = run
    export(checkpoint, tmp_path / "model.safetensors")
    export(checkpoint, tmp_path / "model.pt", "torch")
    images, expected = _reference(settings, prepared_path, checkpoint)
    source = Checkpoint.load(checkpoint)
    for path in (checkpoint, tmp_path / "model.safetensors", tmp_path / "model.pt"):
        model = sparse_soups.load_model(path)
        assert isinstance(model, SmallCNN) and not model.training
        assert torch.equal(_logits(model, images), expected), path
        assert model.masks.keys() == source.masks.keys()
        assert all(torch.equal(model.masks[name], mask) for name, mask in source.masks.items())
        assert model.meta == source.meta


def test_missing_or_foreign_inputs_are_named(run: tuple[Settings, Path], tmp_path: Path, capsys) -> None:
    _, checkpoint = run
    missing, text, foreign = tmp_path / "missing.pt", tmp_path / "notes.txt", tmp_path / "foreign.pt"
    text.write_text("not a model\n")
    torch.save({"weights": torch.zeros(3)}, foreign)
    for path in (missing, text, foreign):
        with pytest.raises(CheckpointError, match=str(path)):
            sparse_soups.load_model(path)
        assert cli.main(["export", str(path), "--out", str(tmp_path / "out.safetensors")]) == 1
        assert str(path) in capsys.readouterr().err
    assert not (tmp_path / "out.safetensors").exists()
    out = tmp_path / "model.safetensors"
    export(checkpoint, out)
    masks_path(out).unlink()
    with pytest.raises(CheckpointError, match=str(masks_path(out))):
        sparse_soups.load_model(out)


def test_export_refuses_to_overwrite_its_checkpoint(run: tuple[Settings, Path], tmp_path: Path) -> None:
    _, checkpoint = run
    copy = tmp_path / "model.pt"
    shutil.copy(checkpoint, copy)
    before = copy.read_bytes()
    with pytest.raises(ValueError, match="overwrite"):
        export(copy, copy, "torch", settings=run[0])
    assert copy.read_bytes() == before


@pytest.mark.parametrize("shape", [(3, 7), (1, 100)])
@pytest.mark.parametrize("name", MODELS.names())
def test_channels_and_classes_are_read_off_the_shapes(name: str, shape: tuple[int, int]) -> None:
    settings = ModelSettings(name=name, width=8, depth=10, widen=2)
    options = {key: getattr(settings, key) for key in MODELS.info(name).get("options", ())}
    shape = (MODELS.info(name).get("in_channels") or shape[0], shape[1])
    with torch.device("meta"):
        state_dict = get_model(name, *shape, **options).state_dict()
    expected = {"in_channels": shape[0], "num_classes": shape[1], **options}
    assert constructor_kwargs(settings, state_dict) == expected


def test_a_torchvision_architecture_loads_into_torchvision_itself(tmp_path: Path) -> None:
    torchvision = pytest.importorskip("torchvision")
    torch.manual_seed(0)
    model = get_model("resnet50", in_channels=3, num_classes=10).eval()
    masks = {n: torch.rand_like(p) > 0.5 for n, p in model.named_parameters() if n.endswith("weight")}
    masks = {n: m for n, m in masks.items() if model.get_parameter(n).dim() > 1}
    apply_masks(model, masks)
    Checkpoint(model.state_dict(), masks, {"phase": 1, "kind": "ingredient"}).save(tmp_path / "model.pt")
    out = tmp_path / "resnet50.safetensors"
    export(tmp_path / "model.pt", out, settings=ModelSettings(name="resnet50"))
    plain = torchvision.models.resnet50(num_classes=10)
    plain.load_state_dict(load_file(out), strict=True)
    images = torch.randn(2, 3, 64, 64)
    assert torch.equal(_logits(plain, images), _logits(model, images))
    with safe_open(out, framework="pt") as handle:
        assert handle.metadata()["model_class"] == "torchvision.models.resnet.ResNet"
