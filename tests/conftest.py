"""Shared fixtures: a tiny dataset in the real IDX format that torchvision reads, and the
smoke config run once through Snakemake for every test module that compares against it."""

from __future__ import annotations

import gzip
import os
import shutil
import struct
import subprocess
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from filelock import FileLock

from sparse_soups.config import DataSettings, Settings
from sparse_soups.kernels.data import Dataset, load_prepared, prepare_dataset

REPO = Path(__file__).resolve().parents[1]
# The shipped configs on Fashion-MNIST, which a dry run finds as they are (the others need
# their data directories: tests/test_paper_configs.py points them at stand-ins).
FASHION_MNIST_CONFIGS = ("config.yaml", "merging.yaml", "smoke.yaml", "smoke_merging.yaml")


# Test modules by their duration, longest first, as `pytest --durations=0` measured them on
# the 2-core machine before this ordering (later changes made some shorter). pyproject.toml
# runs the suite on pytest-xdist workers, each taking the next whole module in collection
# order (`--dist loadfile --no-loadscope-reorder`): putting these first keeps one long
# module from starting last and running alone at the end.
LONGEST_FIRST = (
    "test_slurm.py", "test_faults.py", "test_incremental.py", "test_worker.py", "test_workflow.py",
    "test_celeba.py", "test_translation.py", "test_reporting.py", "test_imagenet.py", "test_gpu_check.py",
    "test_paper_configs.py", "test_merging_workflow.py", "test_segmentation.py", "test_config.py",
)  # fmt: skip


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: the rest keep their order


def write_idx(path: Path, array: np.ndarray, compress: bool = True) -> None:
    """Write an unsigned-byte IDX file (magic 0x08, then big-endian dimension sizes)."""
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    payload = header + array.astype(np.uint8).tobytes()
    if compress:
        path = path.with_name(path.name + ".gz")
        path.write_bytes(gzip.compress(payload))
    else:
        path.write_bytes(payload)


def make_idx_dataset(
    directory: Path, n_train: int = 600, n_test: int = 200, seed: int = 0, compress: bool = True
) -> Path:
    """Ten learnable classes: a bright square whose position encodes the label, plus noise."""
    rng = np.random.default_rng(seed)
    directory.mkdir(parents=True, exist_ok=True)

    def images(labels: np.ndarray) -> np.ndarray:
        out = rng.integers(0, 60, size=(len(labels), 28, 28))
        for i, label in enumerate(labels):
            row, col = divmod(int(label), 5)
            out[i, 4 + 12 * row : 12 + 12 * row, 1 + 5 * col : 6 + 5 * col] += 180
        return out.clip(0, 255)

    for prefix, n in (("train", n_train), ("t10k", n_test)):
        labels = rng.integers(0, 10, size=n)
        write_idx(directory / f"{prefix}-images-idx3-ubyte", images(labels), compress)
        write_idx(directory / f"{prefix}-labels-idx1-ubyte", labels, compress)
    return directory


@pytest.fixture(scope="session")
def idx_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_idx_dataset(tmp_path_factory.mktemp("idx"))


@pytest.fixture(scope="session")
def prepared_path(idx_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("prepared") / "data.pt"
    prepare_dataset(DataSettings(root=str(idx_dir)), out)
    return out


@pytest.fixture()
def tiny_settings(idx_dir: Path) -> Settings:
    return Settings.from_dict(
        {
            "name": "tiny",
            "data": {"root": str(idx_dir)},
            "model": {"width": 4},
            "pretrain": {"epochs": 2, "batch_size": 64},
            "prune": {"sparsity": 0.75, "phases": 2},
            "retrain": {"epochs": 1},
            "soup": {"ingredients": 3, "bn_recalibration_fraction": 0.5},
        }
    )


@pytest.fixture()
def dataset(prepared_path: Path, tiny_settings: Settings) -> Dataset:
    torch.manual_seed(0)
    return load_prepared(prepared_path, tiny_settings.data)


def make_celeba_dataset(
    directory: Path, per_split: tuple[int, int, int] = (160, 60, 80), seed: int = 0
) -> Path:
    """torchvision's celeba/ folder in the official formats: 178 x 218 JPEG faces and the five
    text files. Blond_Hair is learnable but not at once (a faint bright band across the top of
    a face of random brightness) and correlated with not-Male, so the four groups differ in
    size as in the real data."""
    from PIL import Image

    from sparse_soups.kernels.dataset_files import ATTRIBUTES

    rng = np.random.default_rng(seed)
    folder = directory / "celeba"
    (folder / "img_align_celeba").mkdir(parents=True, exist_ok=True)
    names, partition, rows = [], [], []
    for split, count in enumerate(per_split):
        for _ in range(count):
            name = f"{len(names) + 1:06d}.jpg"
            attributes = rng.integers(0, 2, size=len(ATTRIBUTES))
            blond = int(rng.random() < 0.4)
            attributes[ATTRIBUTES.index("Blond_Hair")] = blond
            attributes[ATTRIBUTES.index("Male")] = int(rng.random() < (0.2 if blond else 0.6))
            pixels = rng.integers(40, 160, size=(218, 178, 3)) + rng.integers(-40, 40)
            pixels[20:80] += 40 if blond else 0
            Image.fromarray(pixels.clip(0, 255).astype(np.uint8)).save(folder / "img_align_celeba" / name)
            names.append(name)
            partition.append(f"{name} {split}")
            rows.append(name + " " + " ".join(f"{2 * int(a) - 1:2d}" for a in attributes))
    n = len(names)

    def write(file: str, lines: list[str]) -> None:
        (folder / file).write_text("\n".join(lines) + "\n")

    write("list_attr_celeba.txt", [str(n), " ".join(ATTRIBUTES) + " ", *rows])
    write("list_eval_partition.txt", partition)
    write("identity_CelebA.txt", [f"{name} {1 + i % 7}" for i, name in enumerate(names)])
    bbox = [f"{name} 95 71 226 313" for name in names]
    write("list_bbox_celeba.txt", [str(n), "image_id x_1 y_1 width height", *bbox])
    points = ("lefteye", "righteye", "nose", "leftmouth", "rightmouth")
    header = " ".join(f"{point}_{axis}" for point in points for axis in "xy")
    landmarks = [f"{name} 69 109 106 113 77 142 73 152 108 154" for name in names]
    write("list_landmarks_align_celeba.txt", [str(n), header, *landmarks])
    return directory


def make_cityscapes_dataset(directory: Path, per_split: tuple[int, int] = (24, 8), seed: int = 0) -> Path:
    """Cityscapes as its archives unpack: 64 x 128 RGB PNGs under leftImg8bit/{train,val}/<city>/
    and grey *_gtFine_labelIds.png masks under gtFine/. Each scene is sky (label id 23) over
    road (7) with a red car (26) at a random place, and unlabelled pixels (0) along the top
    edge, so the mapping to train ids, the ignore index and the colours can all be checked."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    for split, count in zip(("train", "val"), per_split, strict=True):
        for index in range(count):
            city = ("aachen", "bremen")[index % 2]
            stem = f"{city}_{index:06d}_000019"
            labels = np.full((64, 128), 7, dtype=np.uint8)
            labels[:28] = 23
            labels[:3] = 0
            top, left = int(rng.integers(28, 50)), int(rng.integers(0, 100))
            labels[top : top + 12, left : left + 24] = 26
            colours = {7: (90, 90, 90), 23: (70, 130, 220), 26: (200, 30, 30), 0: (0, 0, 0)}
            pixels = np.zeros((64, 128, 3), dtype=np.int64)
            for label, colour in colours.items():
                pixels[labels == label] = colour
            pixels = (pixels + rng.integers(-25, 25, size=pixels.shape)).clip(0, 255).astype(np.uint8)
            images = directory / "leftImg8bit" / split / city
            masks = directory / "gtFine" / split / city
            images.mkdir(parents=True, exist_ok=True)
            masks.mkdir(parents=True, exist_ok=True)
            Image.fromarray(pixels).save(images / f"{stem}_leftImg8bit.png")
            Image.fromarray(labels, mode="L").save(masks / f"{stem}_gtFine_labelIds.png")
    return directory


LEXICON = {
    "das": "the", "haus": "house", "ist": "is", "groß": "big", "klein": "small", "der": "the",
    "hund": "dog", "läuft": "runs", "schnell": "fast", "die": "the", "katze": "cat", "schläft": "sleeps",
    "heute": "today", "hier": "here", "und": "and", "rot": "red", "blau": "blue", "auto": "car",
    "fährt": "drives", "nicht": "not", "garten": "garden", "grün": "green", "alt": "old", "neu": "new",
}  # fmt: skip


def make_wmt16_dataset(
    directory: Path, per_split: tuple[int, int, int] = (400, 40, 40), seed: int = 0
) -> Path:
    """WMT16's six plain-text files (train, newstest2015, newstest2016; .de and .en, one
    sentence per line, UTF-8): German sentences of 3-6 words from a small lexicon and their
    word-by-word English, capitalised and with a full stop, so a tiny model can learn them."""
    rng = np.random.default_rng(seed)
    words = list(LEXICON)
    directory.mkdir(parents=True, exist_ok=True)
    for stem, count in zip(("train", "newstest2015", "newstest2016"), per_split, strict=True):
        german, english = [], []
        for _ in range(count):
            sentence = [words[i] for i in rng.integers(0, len(words), size=int(rng.integers(3, 7)))]
            german.append(" ".join(sentence).capitalize() + ".")
            english.append(" ".join(LEXICON[w] for w in sentence).capitalize() + ".")
        (directory / f"{stem}.de").write_text("\n".join(german) + "\n", encoding="utf-8")
        (directory / f"{stem}.en").write_text("\n".join(english) + "\n", encoding="utf-8")
    return directory


def run_smoke_config(name: str, data_root: Path, directory: Path) -> Path:
    """config/<name>.yaml (one experiment, also called <name>) with its data read from
    `data_root`, run through Snakemake in `directory`; the experiment's report directory."""
    config = yaml.safe_load((REPO / "config" / f"{name}.yaml").read_text())
    config["experiments"][name]["data"]["root"] = str(data_root)
    (directory / "smoke.yaml").write_text(yaml.safe_dump(config))
    run = smoke_snakemake(directory)
    assert run.returncode == 0, (run.stdout + run.stderr)[-3000:]
    return directory / "results" / name / "report"


def write_smoke_config(directory: Path, idx_dir: Path) -> Path:
    """config/smoke.yaml with its data read from `idx_dir`, as `directory`/smoke.yaml."""
    config = yaml.safe_load((REPO / "config" / "smoke.yaml").read_text())
    for experiment in config["experiments"].values():
        experiment.setdefault("data", {})["root"] = str(idx_dir)
    path = directory / "smoke.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def smoke_snakemake(directory: Path, *args: str, **kwargs) -> subprocess.CompletedProcess | subprocess.Popen:
    command = ["snakemake", "--snakefile", str(REPO / "Snakefile"), "-d", str(directory),
               "--configfile", str(directory / "smoke.yaml"), "--cores", "2", *args]  # fmt: skip
    if kwargs.pop("background", False):
        return subprocess.Popen(
            command, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
    return subprocess.run(command, capture_output=True, text=True, check=False, **kwargs)


def metrics_files(directory: Path, experiment: str = "") -> dict[str, str]:
    """Every metrics.json under results/ (of one experiment, if named), by relative path."""
    return {
        str(path.relative_to(directory)): path.read_text()
        for path in sorted((directory / "results" / experiment).rglob("metrics.json"))
    }


def built_once(tmp_path_factory: pytest.TempPathFactory, name: str, build: Callable[[Path], None]) -> Path:
    """The directory `name`, made by `build` once per test session. Under pytest-xdist the
    workers share one temporary root, so the first worker to ask builds it (under a file
    lock) and the others wait for it instead of computing it again."""
    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):  # an xdist worker: share with the others
        root = root.parent
    directory, done = root / name, root / f"{name}.done"
    with FileLock(str(root / f"{name}.lock")):
        if not done.exists():
            shutil.rmtree(directory, ignore_errors=True)
            directory.mkdir()
            build(directory)
            done.touch()
    return directory


def worker_copy(tmp_path_factory: pytest.TempPathFactory, directory: Path, name: str) -> Path:
    """A private copy of a shared run directory (mtimes and Snakemake's records kept), so a
    test that changes files for a moment cannot disturb another worker's tests."""
    copy = tmp_path_factory.mktemp(name) / "run"
    shutil.copytree(directory, copy, symlinks=True)
    return copy


@pytest.fixture(scope="session")
def smoke_idx(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return built_once(tmp_path_factory, "smoke-idx", lambda d: make_idx_dataset(d, n_train=800, n_test=300))


def _run_smoke(directory: Path, idx_dir: Path) -> None:
    write_smoke_config(directory, idx_dir)
    dry = smoke_snakemake(directory, "-n")
    assert dry.returncode == 0, dry.stderr
    assert not (directory / "results").exists()  # a dry run computes nothing
    run = smoke_snakemake(directory)
    assert run.returncode == 0, run.stderr[-3000:]
    (directory / "dry-run.log").write_text(dry.stdout + dry.stderr)


@pytest.fixture(scope="session")
def smoke_run(tmp_path_factory: pytest.TempPathFactory, smoke_idx: Path) -> tuple[Path, str]:
    """The whole smoke config run once locally (the reference for the SLURM and restart
    tests), as this worker's copy, and the output of its dry run."""
    shared = built_once(tmp_path_factory, "smoke-run", lambda d: _run_smoke(d, smoke_idx))
    directory = worker_copy(tmp_path_factory, shared, "smoke-run")
    return directory, (directory / "dry-run.log").read_text()
