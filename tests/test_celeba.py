"""Celeb-A: torchvision's files read in their real formats, groups and worst-group accuracy,
bad files and settings named before anything trains, and the whole DAG through Snakemake."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml

from sparse_soups.config import DataSettings
from sparse_soups.kernels.data import DataError, DataNotFoundError, load_prepared, prepare_dataset
from sparse_soups.kernels.dataset_files import ATTRIBUTES
from sparse_soups.kernels.metrics import group_accuracy, worst_group_accuracy
from sparse_soups.validation import config_problems
from tests.conftest import REPO, make_celeba_dataset, run_smoke_config

SCHEMA = REPO / "workflow" / "schemas" / "config.schema.yaml"
PER_SPLIT = (160, 60, 80)


@pytest.fixture(scope="module")
def celeba_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_celeba_dataset(tmp_path_factory.mktemp("celeba"), PER_SPLIT)


def _attributes(root: Path) -> pd.DataFrame:
    """list_attr_celeba.txt read independently of torchvision: image -> {-1, 1} per attribute."""
    lines = (root / "celeba" / "list_attr_celeba.txt").read_text().splitlines()
    rows = [line.split() for line in lines[2:]]
    table = pd.DataFrame([r[1:] for r in rows], index=[r[0] for r in rows], columns=lines[1].split())
    return table.astype(int)


def test_official_splits_labels_and_groups_follow_the_files(celeba_root: Path, tmp_path: Path) -> None:
    settings = DataSettings(dataset="celeba", root=str(celeba_root), image_size=24)
    prepared = prepare_dataset(settings, tmp_path / "data.pt")
    assert [len(prepared[f"{s}_labels"]) for s in ("train", "val", "test")] == list(PER_SPLIT)
    assert prepared["test_images"].shape == (PER_SPLIT[2], 3, 24, 24)
    assert prepared["test_images"].dtype == torch.uint8
    # The test split is in file order: its labels and groups are the files' columns.
    attributes = _attributes(celeba_root).iloc[sum(PER_SPLIT[:2]) :]
    blond, male = (torch.tensor(((attributes[a] + 1) // 2).to_numpy()) for a in ("Blond_Hair", "Male"))
    assert torch.equal(prepared["test_labels"], blond)
    assert torch.equal(prepared["test_groups"], 2 * blond + male)
    assert prepared["group_names"][3] == "Blond_Hair, Male"
    # The training split is shuffled (train_subset takes a prefix), with labels kept aligned.
    train_attributes = _attributes(celeba_root).iloc[: PER_SPLIT[0]]
    train_blond = torch.tensor(((train_attributes["Blond_Hair"] + 1) // 2).to_numpy())
    assert not torch.equal(prepared["train_labels"], train_blond)
    assert sorted(prepared["train_labels"].tolist()) == sorted(train_blond.tolist())
    # The band that marks blond images survives the crop and resize: labels match images.
    images, labels = prepared["train_images"].float(), prepared["train_labels"]
    band = images[:, :, 2:6].mean((1, 2, 3)) - images[:, :, 10:].mean((1, 2, 3))
    assert band[labels == 1].mean() > band[labels == 0].mean() + 20


def test_loaded_splits_carry_groups_and_validation_is_the_official_one(
    celeba_root: Path, tmp_path: Path
) -> None:
    settings = DataSettings(
        dataset="celeba", root=str(celeba_root), image_size=16, target_attribute="Smiling",
        group_attribute="Young", validation_fraction=0.5, train_subset=100,
    )  # fmt: skip
    prepare_dataset(settings, tmp_path / "data.pt")
    dataset = load_prepared(tmp_path / "data.pt", settings)
    assert (len(dataset.train), len(dataset.val), len(dataset.test)) == (100, PER_SPLIT[1], PER_SPLIT[2])
    assert dataset.group_names == (
        "not Smiling, not Young",
        "not Smiling, Young",
        "Smiling, not Young",
        "Smiling, Young",
    )
    assert dataset.test.groups is not None and len(dataset.test.groups) == PER_SPLIT[2]
    assert torch.equal(dataset.test.groups // 2, dataset.test.labels)
    head = dataset.val.head(0.5)
    assert torch.equal(head.groups, dataset.val.groups[: len(head)])


def test_worst_group_accuracy_by_hand() -> None:
    # 4 groups: group 0 all right (2/2), group 1 one of two, group 2 none of one, group 3 empty.
    labels = torch.tensor([0, 0, 1, 1, 0])
    predicted = torch.tensor([0, 0, 1, 0, 1])
    logits = torch.nn.functional.one_hot(predicted, 2).float()
    groups = torch.tensor([0, 0, 1, 1, 2])
    per_group = group_accuracy(logits, labels, groups, 4)
    assert per_group[:3].tolist() == [1.0, 0.5, 0.0] and per_group[3].isnan()
    assert worst_group_accuracy(logits, labels, groups, 4) == 0.0
    assert worst_group_accuracy(logits[:4], labels[:4], groups[:4], 4) == 0.5


def test_missing_and_damaged_files_are_named(celeba_root: Path, tmp_path: Path) -> None:
    import shutil

    root = tmp_path / "copy"
    shutil.copytree(celeba_root, root)
    settings = DataSettings(dataset="celeba", root=str(root), image_size=16)
    image = root / "celeba" / "img_align_celeba" / "000007.jpg"
    image.write_bytes(image.read_bytes()[:40])  # truncated JPEG
    with pytest.raises(DataError, match=r"000007\.jpg"):
        prepare_dataset(settings, tmp_path / "data.pt")
    attributes = root / "celeba" / "list_attr_celeba.txt"
    lines = attributes.read_text().splitlines()
    attributes.write_text("\n".join([*lines[:5], lines[5].replace("-1", "x", 1), *lines[6:]]) + "\n")
    with pytest.raises(DataError, match=r"attribute or partition lists"):
        prepare_dataset(settings, tmp_path / "data.pt")
    (root / "celeba" / "list_eval_partition.txt").unlink()
    with pytest.raises(DataNotFoundError, match=r"list_eval_partition\.txt"):
        prepare_dataset(settings, tmp_path / "data.pt")
    assert not (tmp_path / "data.pt").exists()


def _problems(data: dict) -> list[str]:
    data = {"dataset": "celeba", "image_size": 64, **data}
    return config_problems({"experiments": {"c": {"data": data}}}, SCHEMA)


def test_bad_settings_are_config_errors_naming_the_key(celeba_root: Path, tmp_path: Path) -> None:
    assert _problems({"root": str(celeba_root), "image_size": 64}) == []
    (problem,) = _problems({"root": str(celeba_root), "image_size": 224})
    assert "experiments.c.data.image_size" in problem and "GB" in problem
    (problem,) = _problems({"root": str(celeba_root), "target_attribute": "Male"})
    assert "data.group_attribute" in problem
    assert any(
        "target_attribute" in p and "Blonde" in p
        for p in _problems({"root": str(celeba_root), "target_attribute": "Blonde"})
    )
    (problem,) = _problems({"root": None})
    assert "experiments.c.data.root" in problem and "celeba/" in problem
    (tmp_path / "celeba").mkdir()
    problems = _problems({"root": str(tmp_path)})
    assert len(problems) == 6 and all("list_" in p or "identity" in p or "img_align" in p for p in problems)


def test_schema_lists_exactly_the_40_attributes() -> None:
    schema = yaml.safe_load(SCHEMA.read_text())
    data = schema["$defs"]["experiment"]["properties"]["data"]["properties"]
    assert tuple(data["target_attribute"]["enum"]) == ATTRIBUTES == tuple(data["group_attribute"]["enum"])
    assert len(ATTRIBUTES) == 40


def test_smoke_celeba_runs_end_to_end_with_worst_group_rows(celeba_root: Path, tmp_path: Path) -> None:
    report = run_smoke_config("smoke_celeba", celeba_root, tmp_path)
    table = pd.read_csv(report / "worst_group.csv").set_index("method")
    for row in (
        "IMP",
        "SMS uniform",
        "SMS greedy",
        "Mean ingredient (SMS uniform)",
        "Best ingredient (SMS uniform)",
    ):
        assert 0 <= table.loc[row, "phase2_worst_group_accuracy"] <= 1, row
    groups = (report / "group_accuracy.md").read_text()
    assert "worst group" in groups and "Blond Hair, Male" in groups
    claims = pd.read_csv(report / "claims.csv")
    assert "worst-group accuracy" in set(claims.metric)
    metrics = json.loads(
        (tmp_path / "results/smoke_celeba/seed0/uniform/phase2/soup/metrics.json").read_text()
    )
    worst = metrics["worst_group_accuracy"]
    assert worst == min(metrics["group_accuracy"].values()) and 0 <= worst <= metrics["test_accuracy"] + 1e-9
    assert (report / "worst_group_vs_sparsity.png").stat().st_size > 0
