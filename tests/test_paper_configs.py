"""Every shipped config validates and dry-runs, and builds the architecture it names."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import torch
import yaml

from sparse_soups.config import ModelSettings, Settings
from sparse_soups.kernels.data import load_prepared, prepare_dataset
from sparse_soups.kernels.models import build_model
from tests.conftest import (
    FASHION_MNIST_CONFIGS,
    REPO,
    make_celeba_dataset,
    make_cityscapes_dataset,
    make_wmt16_dataset,
)

PAPER_CONFIGS = sorted(
    p.name
    for p in (REPO / "config").glob("*.yaml")
    if p.name not in FASHION_MNIST_CONFIGS  # dry-run as shipped in tests/test_config.py
)
NUM_CLASSES = {"mnist": 10, "cifar10": 10, "cifar100": 100, "imagenet": 1000, "celeba": 2, "cityscapes": 19,
               "wmt16_de_en": 400}  # fmt: skip


def _local_config(name: str, directory: Path) -> dict:
    """The config with the directories a user must supply (ImageNet, official -C sets)
    pointed at empty stand-ins: a dry run needs them to exist, not their contents."""
    config = yaml.safe_load((REPO / "config" / name).read_text())
    for experiment in config["experiments"].values():
        if experiment["data"]["dataset"] == "celeba":  # its files are checked before any job
            experiment["data"]["root"] = str(make_celeba_dataset(directory / "celeba", (130, 2, 2)))
        elif experiment["data"]["dataset"] == "cityscapes":
            experiment["data"]["root"] = str(make_cityscapes_dataset(directory / "cityscapes", (12, 2)))
        elif experiment["data"]["dataset"] == "wmt16_de_en":
            experiment["data"]["root"] = str(make_wmt16_dataset(directory / "wmt16", (140, 4, 4)))
        elif experiment["data"].get("root") or experiment["data"]["dataset"] == "imagenet":
            for split in ("train", "val"):
                (directory / "data" / split).mkdir(parents=True, exist_ok=True)
            experiment["data"]["root"] = str(directory / "data")
        if experiment.get("ood", {}).get("root") or experiment.get("ood", {}).get("source") == "files":
            (directory / "ood").mkdir(exist_ok=True)
            experiment["ood"]["root"] = str(directory / "ood")
    return config


def test_the_paper_settings_are_all_shipped() -> None:
    assert {
        "cifar10_resnet18.yaml",
        "cifar100_wrn22x10.yaml",
        "imagenet_resnet50.yaml",
        "mnist_mlp.yaml",
    } <= set(PAPER_CONFIGS)


@pytest.mark.parametrize("name", PAPER_CONFIGS)
def test_paper_config_dry_runs(name: str, tmp_path: Path) -> None:
    config = _local_config(name, tmp_path)
    path = tmp_path / name
    path.write_text(yaml.safe_dump(config))
    run = subprocess.run(
        ["snakemake", "-n", "--snakefile", str(REPO / "Snakefile"), "-d", str(tmp_path),
         "--configfile", str(path)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert run.returncode == 0, (run.stdout + run.stderr)[-3000:]
    ((experiment_name, raw),) = config["experiments"].items()
    settings = Settings.from_dict({"name": experiment_name, **raw})
    jobs = dict(line.split()[:2] for line in run.stdout.splitlines() if len(line.split()) == 2)
    assert jobs.get("corrupt_test_set") == ("1" if settings.ood.enabled else None)
    assert int(jobs["evaluate"]) > 10 and jobs["pretrain"] == str(len(settings.seeds))
    assert not (tmp_path / "results").exists()


@pytest.mark.parametrize("name", PAPER_CONFIGS)
def test_paper_config_builds_its_architecture(name: str) -> None:
    (raw,) = yaml.safe_load((REPO / "config" / name).read_text())["experiments"].values()
    settings = Settings.from_dict(raw)
    channels = 1 if settings.data.dataset == "mnist" else 3
    model = build_model(settings.model, channels, NUM_CLASSES[settings.data.dataset])
    size = 28 if channels == 1 else settings.data.image_size if settings.data.dataset == "celeba" else 32
    classes = NUM_CLASSES[settings.data.dataset]
    if settings.data.dataset == "wmt16_de_en":  # a score per target token
        source, target = torch.full((2, 7), 5), torch.full((2, 4), 6)
        assert model(source, target).shape == (2, 4, classes)
    elif settings.data.dataset == "cityscapes":  # a class score per pixel
        assert model(torch.zeros(2, channels, size, 2 * size)).shape == (2, classes, size, 2 * size)
    else:
        assert model(torch.zeros(2, channels, size, size)).shape == (2, classes)


def test_wrn_options_reach_the_model() -> None:
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert count(build_model(ModelSettings(name="wrn", depth=28, widen=10), 3, 10)) == 36_479_194
    small = build_model(ModelSettings(name="wrn", depth=16, widen=2, dropout=0.3), 3, 10)
    assert len(small.blocks) == 6 and small.blocks[0].dropout.p == 0.3
    assert build_model(ModelSettings(name="wrn28_10", dropout=0.2), 3, 10).blocks[0].dropout.p == 0.2
    mlp = build_model(ModelSettings(name="mlp", width=300), 1, 10)
    assert [layer.out_features for layer in mlp.net if hasattr(layer, "out_features")] == [300, 100, 10]


def test_imagenet_config_streams_a_real_image_folder(tmp_path: Path) -> None:
    """The shipped ImageNet settings (224 crops, loader workers) on a tiny ImageFolder tree."""
    from tests.test_imagenet import make_image_folder

    (raw,) = yaml.safe_load((REPO / "config" / "imagenet_resnet50.yaml").read_text())["experiments"].values()
    raw["data"]["root"] = str(make_image_folder(tmp_path / "imagenet", {"train": 4, "val": 2}))
    settings = Settings.from_dict(raw)
    prepare_dataset(settings.data, tmp_path / "data.pt")
    dataset = load_prepared(tmp_path / "data.pt", settings.data)
    images, _ = next(dataset.training_batches(8, torch.Generator().manual_seed(0), settings.data))
    assert images.shape == (8, 3, 224, 224) and dataset.num_classes == 3
    assert settings.data.loader_workers > 0 and settings.ood.enabled and settings.ood.source == "files"
