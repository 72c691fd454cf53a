"""ImageNet, streamed: real JPEG folders in ImageFolder layout, indexed once, decoded per batch.

The tiny dataset has three WordNet-named classes whose images differ in colour, in several
sizes, with one grayscale JPEG, so RGB conversion, RandomResizedCrop and the evaluation
resize + centre crop all do real work.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from sparse_soups.config import DataSettings, OodSettings, PretrainSettings
from sparse_soups.kernels.data import DataNotFoundError, load_prepared, prepare_dataset
from sparse_soups.kernels.datasets import imagenet
from sparse_soups.kernels.evaluation import model_metrics
from sparse_soups.kernels.models import get_model
from sparse_soups.kernels.pruning import dense_masks, select_masks
from sparse_soups.kernels.schedules import pretrain_schedule
from sparse_soups.kernels.training import train
from sparse_soups.validation import config_problems

REPO = Path(__file__).resolve().parents[1]
SCHEMA = REPO / "workflow" / "schemas" / "config.schema.yaml"
CLASSES = ("n01440764", "n01443537", "n01484850")
COLOURS = ((200, 40, 40), (40, 200, 40), (40, 40, 200))


def make_image_folder(root: Path, per_class: dict[str, int], seed: int = 0) -> Path:
    """`<root>/<split>/<wnid>/<wnid>_<i>.JPEG`, coloured by class, sizes 36 to 64 pixels."""
    rng = np.random.default_rng(seed)
    for split, count in per_class.items():
        for label, wnid in enumerate(CLASSES):
            folder = root / split / wnid
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(count):
                height, width = rng.integers(36, 65, size=2)
                noise = rng.integers(-40, 41, size=(height, width, 3))
                pixels = np.clip(np.array(COLOURS[label]) + noise, 0, 255).astype(np.uint8)
                image = Image.fromarray(pixels)
                if i == 0 and split == "train":  # ImageNet has grayscale JPEGs too
                    image = image.convert("L")
                image.save(folder / f"{wnid}_{i}.JPEG", quality=90)
    return root


@pytest.fixture(scope="module")
def imagenet_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_image_folder(tmp_path_factory.mktemp("imagenet"), {"train": 16, "val": 4})


def _settings(root: Path, **overrides) -> DataSettings:
    values = {"dataset": "imagenet", "root": str(root), "validation_fraction": 0.25, "image_size": 28}
    return DataSettings(**{**values, **overrides})


@pytest.fixture(scope="module")
def prepared(imagenet_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("prepared") / "data.pt"
    prepare_dataset(_settings(imagenet_root), out)
    return out


def test_prepare_writes_an_index_with_a_seeded_validation_split(imagenet_root: Path, prepared: Path) -> None:
    raw = torch.load(prepared, weights_only=False)
    assert raw["streamed"] and raw["classes"] == list(CLASSES) and raw["num_classes"] == 3
    assert (len(raw["train_files"]), len(raw["val_files"]), len(raw["test_files"])) == (36, 12, 12)
    assert not set(raw["train_files"]) & set(raw["val_files"])  # validation is held out of train/
    for files, labels in ((raw["train_files"], raw["train_labels"]), (raw["test_files"], raw["test_labels"])):
        assert [CLASSES[label] for label in labels.tolist()] == [file.split("/")[0] for file in files]
    assert not any(isinstance(value, torch.Tensor) and value.dtype == torch.uint8 for value in raw.values())
    again = prepare_dataset(_settings(imagenet_root), prepared.with_name("again.pt"))
    assert again["val_files"] == raw["val_files"]  # the split seed fixes the split
    other = prepare_dataset(_settings(imagenet_root, split_seed=1), prepared.with_name("other.pt"))
    assert other["val_files"] != raw["val_files"]


def test_batches_are_normalized_crops_and_do_not_depend_on_workers(prepared: Path) -> None:
    def epoch(workers: int, seed: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
        dataset = load_prepared(prepared, _settings(Path("unused"), loader_workers=workers))
        return list(dataset.training_batches(8, torch.Generator().manual_seed(seed), DataSettings()))

    single, pooled, other = epoch(0, 0), epoch(2, 0), epoch(0, 1)
    assert [len(labels) for _, labels in single] == [8, 8, 8, 8, 4]
    assert single[0][0].shape == (8, 3, 28, 28) and single[0][0].dtype == torch.float32
    for (images_a, labels_a), (images_b, labels_b) in zip(single, pooled, strict=True):
        assert torch.equal(images_a, images_b) and torch.equal(labels_a, labels_b)
    assert not torch.equal(single[0][0], other[0][0])

    dataset = load_prepared(prepared, _settings(Path("unused")))
    images, labels = next(iter(dataset.test.batches(100)))
    assert labels.tolist() == [0] * 4 + [1] * 4 + [2] * 4  # evaluation keeps the file order
    expected = imagenet.eval_transform(28)(imagenet.read_image(dataset.test.root / dataset.test.files[5]))
    assert torch.allclose(images[5], imagenet.normalize(expected[None], torch.device("cpu"))[0])
    means = images.mean(dim=(2, 3))  # the colour of each class survives normalization
    assert all(int(means[i].argmax()) == labels[i] for i in range(len(labels)))
    assert dataset.input_shape == (3, 28, 28) and dataset.in_channels == 3
    grayscale = imagenet.read_image(dataset.train.root / "n01440764" / "n01440764_0.JPEG")
    assert grayscale.shape[0] == 3 and torch.equal(grayscale[0], grayscale[2])


def test_resnet50_trains_on_streamed_batches_bitwise_reproducibly(prepared: Path) -> None:
    def run(workers: int) -> tuple[dict[str, torch.Tensor], dict]:
        torch.manual_seed(0)
        dataset = load_prepared(prepared, _settings(Path("unused"), loader_workers=workers, train_subset=8))
        model = get_model("resnet50", 3, dataset.num_classes)
        masks = select_masks(model, dense_masks(model), 0.5, "global")
        optim = PretrainSettings(batch_size=4, lr=0.01)
        train(model, masks, dataset, optim=optim, peak_lr=0.01, epochs=1, schedule=pretrain_schedule(optim),
              seed=3, augment=DataSettings())  # fmt: skip
        return model.state_dict(), model_metrics(model, dataset, batch_size=6)

    weights, metrics = run(0)
    weights_pooled, metrics_pooled = run(2)
    assert all(torch.equal(weights[name], weights_pooled[name]) for name in weights)
    assert metrics == metrics_pooled
    assert metrics["sparsity"] == pytest.approx(0.5, abs=0.01) and 0 <= metrics["test_accuracy"] <= 1
    assert metrics["dense_flops"] / metrics["flops"] > 1.5  # FLOPs counted at the crop size


def test_bad_imagenet_layouts_are_named_before_any_job(imagenet_root: Path, tmp_path: Path) -> None:
    def problems(data: dict) -> list[str]:
        return config_problems({"experiments": {"in1k": {"data": {"dataset": "imagenet", **data}}}}, SCHEMA)

    assert any("experiments.in1k.data.root: imagenet needs the directory" in p for p in problems({}))
    (tmp_path / "train").mkdir()
    assert problems({"root": str(tmp_path)}) == [
        f"experiments.in1k.data.root: '{tmp_path}' lacks val/ (ImageFolder layout)"
    ]
    assert problems({"root": str(imagenet_root), "image_size": 224, "loader_workers": 4}) == []
    (tmp_path / "val" / "n09999999").mkdir(parents=True)
    (tmp_path / "train" / "n01440764").mkdir()
    with pytest.raises(DataNotFoundError, match="train holds no images"):
        prepare_dataset(_settings(tmp_path), tmp_path / "data.pt")
    image = imagenet_root / "train" / "n01440764" / "n01440764_1.JPEG"
    (tmp_path / "train" / "n01440764" / image.name).write_bytes(image.read_bytes())
    with pytest.raises(DataNotFoundError, match="class folder 'n09999999' is not a training class"):
        prepare_dataset(_settings(tmp_path), tmp_path / "data.pt")
    assert not (tmp_path / "data.pt").exists()


def test_imagenet_c_is_read_from_its_folders_or_generated(prepared: Path, tmp_path: Path) -> None:
    official = tmp_path / "imagenet-c"
    for name in ("fog", "contrast"):  # <corruption>/<severity>/<wnid>/*.JPEG
        make_image_folder(official / name, {"1": 5, "3": 5})
    raw = torch.load(prepared, weights_only=False)
    ood = OodSettings(source="files", root=str(official), corruptions=("fog", "contrast"), severities=(1, 3),
                      test_subset=6, seed=2)  # fmt: skip
    manifest = imagenet.write_ood_index(ood, raw, 28, tmp_path / "ood-files")
    assert manifest["corruptions"] == ["fog", "contrast"] and manifest["root"] == str(official.resolve())
    dataset = load_prepared(prepared, _settings(Path("unused")))
    fog = dataset.corrupted_split(tmp_path / "ood-files", "fog", 3)
    contrast = dataset.corrupted_split(tmp_path / "ood-files", "contrast", 3)
    assert len(fog) == 6 and fog.files == contrast.files  # the same positions in every cell
    images, labels = next(iter(fog.batches(6)))
    assert images.shape == (6, 3, 28, 28) and torch.equal(labels, fog.labels)
    with pytest.raises(ValueError, match="severity 5"):
        dataset.corrupted_split(tmp_path / "ood-files", "fog", 5)

    generated = OodSettings(corruptions=("gaussian_noise",), severities=(1, 5), test_subset=4, seed=0)
    imagenet.write_ood_index(generated, raw, 28, tmp_path / "ood-gen")
    mild, severe = (dataset.corrupted_split(tmp_path / "ood-gen", "gaussian_noise", s) for s in (1, 5))
    assert len(mild) == 4 and sorted(mild.files) == sorted(severe.files)
    assert len(list((tmp_path / "ood-gen" / "gaussian_noise" / "5").rglob("*.JPEG"))) == 4
    clean = {file: label for file, label in zip(raw["test_files"], raw["test_labels"].tolist(), strict=True)}
    assert mild.labels.tolist() == [clean[file] for file in mild.files]
    (mild_images, _), (severe_images, _) = next(iter(mild.batches(4))), next(iter(severe.batches(4)))
    assert (severe_images - mild_images).abs().mean() > 0.1  # severity 5 is noisier than 1


def test_workflow_runs_on_streamed_imagenet_with_ood(imagenet_root: Path, tmp_path: Path) -> None:
    config = {
        "experiments": {
            "in1k": {
                "seeds": [0],
                "data": {
                    "dataset": "imagenet",
                    "root": str(imagenet_root),
                    "validation_fraction": 0.25,
                    "image_size": 28,
                    "loader_workers": 1,
                },
                "model": {"name": "cnn", "width": 4},
                "pretrain": {"epochs": 1, "batch_size": 8},
                "prune": {"sparsity": 0.5, "phases": 1},
                "retrain": {"epochs": 1},
                "soup": {
                    "ingredients": 2,
                    "methods": ["uniform", "greedy"],
                    "bn_recalibration_fraction": 0.5,
                },
                "baselines": {
                    "imp_budget": False,
                    "soup_at_end": False,
                    "lottery_pools": "none",
                    "gmp": "none",
                    "gmp_sms": "none",
                },
                "ood": {"corruptions": ["contrast"], "severities": [1, 5], "test_subset": 6},
            }
        }
    }
    (tmp_path / "in1k.yaml").write_text(yaml.safe_dump(config))
    command = ["snakemake", "--snakefile", str(REPO / "Snakefile"), "-d", str(tmp_path),
               "--configfile", str(tmp_path / "in1k.yaml"), "--cores", "2"]  # fmt: skip
    run = subprocess.run(command, capture_output=True, text=True, check=False)
    assert run.returncode == 0, run.stderr[-3000:]
    results = tmp_path / "results" / "in1k"
    soup = json.loads((results / "seed0" / "uniform" / "phase1" / "soup" / "metrics.json").read_text())
    assert soup["sparsity"] == pytest.approx(0.5, abs=0.01)
    assert set(soup["ood"]["contrast"]) == {"1", "5"} and soup["ood_accuracy"] is not None
    assert soup["flops"] < soup["dense_flops"]
    table = (results / "report" / "table.md").read_text()
    assert "| SMS uniform " in table and "| IMP " in table and "| SMS greedy " in table
    assert soup["test_accuracy"] > 0.5  # the classes differ in colour: three-way chance is 1/3
