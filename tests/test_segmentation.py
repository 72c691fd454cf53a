"""Cityscapes segmentation: torchvision's layout read in its real formats, label ids mapped to
the 19 training classes, image and mask augmented together, IoU by hand, bad files and
settings named before anything trains, and the whole DAG through Snakemake with mIoU."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest
import torch

from sparse_soups.config import DataSettings
from sparse_soups.kernels.augment import augment_segmentation
from sparse_soups.kernels.data import DataError, DataNotFoundError, load_prepared, prepare_dataset
from sparse_soups.kernels.models import get_model
from sparse_soups.kernels.tasks import Segmentation, iou_per_class, mean_iou, pixel_accuracy
from sparse_soups.validation import config_problems
from tests.conftest import REPO, make_cityscapes_dataset, run_smoke_config

SCHEMA = REPO / "workflow" / "schemas" / "config.schema.yaml"
ROAD, SKY, CAR, IGNORE = 0, 10, 13, 255  # train ids of label ids 7, 23, 26; 0 is unlabelled


@pytest.fixture(scope="module")
def cityscapes_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_cityscapes_dataset(tmp_path_factory.mktemp("cityscapes"))


def test_label_ids_become_train_ids_and_val_is_the_test_set(cityscapes_root: Path, tmp_path: Path) -> None:
    settings = DataSettings(
        dataset="cityscapes", root=str(cityscapes_root), image_size=32, validation_fraction=0.25
    )
    prepared = prepare_dataset(settings, tmp_path / "data.pt")
    assert prepared["num_classes"] == 19 and prepared["class_names"][SKY] == "sky"
    assert prepared["train_images"].shape == (18, 3, 32, 64) and prepared["val_labels"].shape == (6, 32, 64)
    assert prepared["test_images"].shape == (8, 3, 32, 64)  # the official val split
    masks = prepared["test_labels"]
    assert set(masks.unique().tolist()) == {ROAD, SKY, CAR, IGNORE}
    assert bool((masks[:, 0] == IGNORE).all()) and bool((masks[:, 8] == SKY).all())
    # each class keeps its colour: sky is blue, the car red (resized with its mask)
    images = prepared["test_images"].float()
    blue, red = images[:, 2][masks == SKY].mean(), images[:, 0][masks == CAR].mean()
    assert blue > 180 and red > 150 and images[:, 2][masks == CAR].mean() < 80


def test_loaded_dataset_scores_by_miou(cityscapes_root: Path, tmp_path: Path) -> None:
    settings = DataSettings(dataset="cityscapes", root=str(cityscapes_root), image_size=16)
    prepare_dataset(settings, tmp_path / "data.pt")
    dataset = load_prepared(tmp_path / "data.pt", settings)
    assert isinstance(dataset.task, Segmentation) and dataset.val.task is dataset.task
    perfect = torch.nn.functional.one_hot(dataset.test.labels.clamp(max=18), 19).permute(0, 3, 1, 2).float()

    def oracle(images: torch.Tensor) -> torch.Tensor:  # the test masks, in order
        return perfect[: len(images)]

    confusion = dataset.task.confusion(oracle, dataset.test, batch_size=100, num_classes=19)
    assert mean_iou(confusion) == 1.0 and pixel_accuracy(confusion) == 1.0
    assert int(confusion.sum()) == int((dataset.test.labels != IGNORE).sum())


def test_iou_by_hand() -> None:
    # true x predicted over 3 classes: class 0 IoU 2/(3+2-2)=2/3, class 1 1/(1+2-1)=1/2, class 2 absent
    confusion = torch.tensor([[2, 1, 0], [0, 1, 0], [0, 0, 0]])
    iou = iou_per_class(confusion)
    assert iou[0].item() == pytest.approx(2 / 3) and iou[1].item() == pytest.approx(1 / 2) and iou[2].isnan()
    assert mean_iou(confusion) == pytest.approx((2 / 3 + 1 / 2) / 2)
    assert pixel_accuracy(confusion) == pytest.approx(3 / 4)
    task = Segmentation()
    logits = torch.tensor([[[[5.0, 0.0]], [[0.0, 5.0]]]])  # (1, 2 classes, 1, 2): predicts 0, 1
    targets = torch.tensor([[[0, IGNORE]]])
    assert task.correct(logits, targets) == (1, 1)
    assert task.loss(logits, targets).item() == pytest.approx(
        torch.nn.functional.cross_entropy(logits[..., :1], targets[..., :1]).item()
    )


def test_augmentation_moves_image_and_mask_together() -> None:
    generator = torch.Generator().manual_seed(0)
    # the label is the column index and so is every image channel: a ramp, which bilinear
    # resizing keeps within a column of the nearest-neighbour mask
    masks = torch.arange(40).expand(6, 20, 40).clone()
    images = masks[:, None].float().expand(6, 3, 20, 40).clone()
    for _ in range(5):
        out_images, out_masks = augment_segmentation(images, masks, True, -1.0, IGNORE, generator, (0.5, 2.0))
        assert out_images.shape == images.shape and out_masks.shape == masks.shape
        labelled = out_masks != IGNORE
        assert bool((out_images[:, 0][labelled] - out_masks[labelled].float()).abs().max() < 1.0)
        assert bool((out_images[:, 0][~labelled] == -1.0).all())  # padding: image fill, mask ignored
    first = augment_segmentation(images, masks, True, 0.0, IGNORE, torch.Generator().manual_seed(3))
    again = augment_segmentation(images, masks, True, 0.0, IGNORE, torch.Generator().manual_seed(3))
    assert torch.equal(first[0], again[0]) and torch.equal(first[1], again[1])


def test_segmentation_models_give_a_logit_per_pixel() -> None:
    model = get_model("deeplabv3_resnet50", 3, 19).eval()
    with torch.no_grad():
        assert model(torch.zeros(1, 3, 64, 128)).shape == (1, 19, 64, 128)
    assert get_model("seg_cnn", 3, 19, width=4)(torch.zeros(2, 3, 16, 32)).shape == (2, 19, 16, 32)


def test_missing_and_damaged_files_are_named(cityscapes_root: Path, tmp_path: Path) -> None:
    root = tmp_path / "copy"
    shutil.copytree(cityscapes_root, root)
    settings = DataSettings(dataset="cityscapes", root=str(root), image_size=16)
    mask = next((root / "gtFine" / "val").glob("*/*_labelIds.png"))
    mask.write_bytes(mask.read_bytes()[:30])
    with pytest.raises(DataError, match=mask.name):
        prepare_dataset(settings, tmp_path / "data.pt")
    mask.unlink()
    with pytest.raises(DataNotFoundError, match="label files are missing"):
        prepare_dataset(settings, tmp_path / "data.pt")
    assert not (tmp_path / "data.pt").exists()


def _problems(experiment: dict) -> list[str]:
    return config_problems({"experiments": {"c": experiment}}, SCHEMA)


def test_bad_settings_are_config_errors_naming_the_key(cityscapes_root: Path, tmp_path: Path) -> None:
    data = {"dataset": "cityscapes", "root": str(cityscapes_root)}
    good = {
        "data": data,
        "model": {"name": "seg_cnn"},
        "ood": {"enabled": False},
        "pretrain": {"batch_size": 4},
    }
    assert _problems(good) == []
    (problem,) = _problems({**good, "model": {"name": "cnn"}})
    assert "experiments.c.model.name: cnn is a classification model" in problem and "seg_cnn" in problem
    (problem,) = _problems({**good, "ood": {"enabled": True}})
    assert "experiments.c.ood.enabled" in problem
    (problem,) = _problems({**good, "data": {**data, "scale_range": [2.0, 0.5]}})
    assert "experiments.c.data.scale_range" in problem
    (tmp_path / "leftImg8bit" / "train").mkdir(parents=True)
    problems = _problems({**good, "data": {**data, "root": str(tmp_path)}})
    assert sorted(p.split(" lacks ")[1] for p in problems) == [
        "gtFine/train/",
        "gtFine/val/",
        "leftImg8bit/val/",
    ]
    (problem,) = _problems({**good, "data": {"dataset": "cityscapes"}})
    assert "experiments.c.data.root: cityscapes needs" in problem


def test_smoke_cityscapes_runs_end_to_end_with_miou_tables(cityscapes_root: Path, tmp_path: Path) -> None:
    report = run_smoke_config("smoke_cityscapes", cityscapes_root, tmp_path)
    table = pd.read_csv(report / "table.csv").set_index("method")
    rows = (
        "IMP",
        "SMS uniform",
        "SMS greedy",
        "Mean ingredient (SMS uniform)",
        "Best ingredient (SMS uniform)",
    )
    for row in rows:
        assert 0 <= table.loc[row, "phase2_test_miou"] <= 1, row
    assert "Test mIoU (%)" in (report / "table.md").read_text()
    assert "mIoU" in set(pd.read_csv(report / "claims.csv").metric)
    soup = tmp_path / "results/smoke_cityscapes/seed0/uniform/phase2/soup"
    metrics = json.loads((soup / "metrics.json").read_text())
    assert 0 <= metrics["test_miou"] <= 1 and set(metrics["class_iou"]) <= {"road", "sky", "car"}
    assert metrics["sparsity"] == pytest.approx(0.75, abs=0.01)
    history = pd.read_csv(tmp_path / "results/smoke_cityscapes/seed0/dense/history.csv")
    assert history.val_accuracy.notna().all()  # validation mIoU, every epoch
