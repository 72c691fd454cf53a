from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest
import torch
import torchvision

from sparse_soups.config import DataSettings
from sparse_soups.kernels import datasets, stopwatch
from sparse_soups.kernels.checkpoints import load_torch_file
from sparse_soups.kernels.data import (
    DataNotFoundError,
    Split,
    augment_batch,
    iterate_batches,
    load_prepared,
    prepare_dataset,
)
from sparse_soups.kernels.datasets import find_raw_dir
from tests.conftest import make_idx_dataset


def test_raw_files_found_plain_gzipped_or_in_torchvision_layout(tmp_path: Path) -> None:
    gz = make_idx_dataset(tmp_path / "gz", n_train=20, n_test=10)
    plain = make_idx_dataset(tmp_path / "plain", n_train=20, n_test=10, compress=False)
    nested = tmp_path / "tv" / "FashionMNIST" / "raw"
    shutil.copytree(gz, nested)
    assert find_raw_dir(gz) == gz
    assert find_raw_dir(plain) == plain
    assert find_raw_dir(tmp_path / "tv") == nested
    (gz / "t10k-labels-idx1-ubyte.gz").unlink()
    assert find_raw_dir(gz) is None


def test_prepare_reads_idx_through_torchvision_and_holds_out_validation(
    idx_dir: Path, tmp_path: Path
) -> None:
    settings = DataSettings(root=str(idx_dir), validation_fraction=0.1, split_seed=3)
    prepared = prepare_dataset(settings, tmp_path / "a.pt")
    reference = torchvision.datasets.mnist.read_image_file  # the loader torchvision uses
    assert prepared["source"] == str(idx_dir)
    assert len(prepared["val_labels"]) == 60 and len(prepared["train_labels"]) == 540
    assert len(prepared["test_labels"]) == 200
    assert prepared["train_images"].dtype == torch.uint8
    assert prepared["train_images"].shape[1:] == (1, 28, 28)
    # the split is a partition of the original training set
    staged = tmp_path / "plain"
    make_idx_dataset(staged, compress=False)  # same seed: the same files, uncompressed
    original = reference(str(staged / "train-images-idx3-ubyte"))
    together = torch.cat([prepared["train_images"], prepared["val_images"]]).squeeze(1)
    assert sorted(map(bytes, together.flatten(1).numpy())) == sorted(map(bytes, original.flatten(1).numpy()))
    # same seed: the same split; another seed: another split
    again = prepare_dataset(settings, tmp_path / "b.pt")
    assert torch.equal(again["val_images"], prepared["val_images"])
    other = prepare_dataset(DataSettings(root=str(idx_dir), split_seed=4), tmp_path / "c.pt")
    assert not torch.equal(other["val_images"], prepared["val_images"])
    assert torch.equal(load_torch_file(tmp_path / "a.pt")["test_labels"], prepared["test_labels"])


def test_missing_data_fails_with_instructions(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(datasets, "DEBIAN_FASHION_MNIST", tmp_path / "no-debian-package")
    # a mirror on the loopback interface that refuses connections: the download fails fast
    monkeypatch.setattr(torchvision.datasets.FashionMNIST, "mirrors", ["http://127.0.0.1:9/"])
    settings = DataSettings(root=None, download_root=str(tmp_path / "dl"))
    with pytest.raises(DataNotFoundError) as error:
        prepare_dataset(settings, tmp_path / "out.pt")
    message = str(error.value)
    assert "apt-get install dataset-fashion-mnist" in message
    assert "data.root" in message and str(tmp_path / "no-debian-package") in message
    assert not (tmp_path / "out.pt").exists()


def test_prepared_data_is_normalized_and_subset(prepared_path: Path) -> None:
    full = load_prepared(prepared_path, DataSettings())
    assert abs(full.train.images.mean().item()) < 1e-4
    assert full.train.images.std().item() == pytest.approx(1.0, abs=1e-3)
    subset = load_prepared(prepared_path, DataSettings(train_subset=100))
    assert len(subset.train) == 100 and len(subset.val) == len(full.val)
    assert torch.equal(subset.train.labels, full.train.labels[:100])
    black = full.pad_value[0]
    assert black == pytest.approx(full.train.images.min().item(), abs=1e-2) or black < 0


def test_splits_convert_on_first_use(prepared_path: Path) -> None:
    settings = DataSettings(train_subset=90)
    raw = load_torch_file(prepared_path, what="prepared dataset")
    dataset = load_prepared(prepared_path, settings)
    head = dataset.train.head(0.1)  # before the split itself is converted
    test_images = dataset.test.images
    assert torch.equal(test_images, dataset.normalize(raw["test_images"]))
    assert len(head) == 9 and torch.equal(head.images, dataset.train.images[:9])
    assert dataset.train.images.shape == (90, 1, 28, 28)
    assert dataset.test.images is test_images  # converted once


def test_converting_a_split_inside_a_timed_step_is_not_counted_as_its_arithmetic() -> None:
    def slow_normalize(images: torch.Tensor) -> torch.Tensor:
        start = time.process_time()
        while time.process_time() - start < 0.2:  # CPU spent loading
            pass
        return images.float()

    split = Split(torch.zeros(4, 1, 2, 2, dtype=torch.uint8), torch.zeros(4), slow_normalize)
    before = stopwatch.totals()["evaluation"]
    with stopwatch.arithmetic("evaluation"):
        assert split.images.dtype == torch.float32
    assert stopwatch.totals()["evaluation"] - before < 0.1


def test_batch_augmentation_is_seeded_and_a_crop_or_flip_of_the_image() -> None:
    images = torch.arange(2 * 1 * 6 * 6, dtype=torch.float32).view(2, 1, 6, 6)
    first = augment_batch(images, 2, True, -1.0, torch.Generator().manual_seed(0))
    second = augment_batch(images, 2, True, -1.0, torch.Generator().manual_seed(0))
    assert torch.equal(first, second) and first.shape == images.shape
    assert torch.equal(augment_batch(images, 0, False, -1.0, torch.Generator()), images)
    flips = augment_batch(images, 0, True, -1.0, torch.Generator().manual_seed(1))
    for original, out in zip(images, flips, strict=True):
        assert torch.equal(out, original) or torch.equal(out, original.flip(-1))
    padded = torch.nn.functional.pad(images, [2] * 4, value=-1.0)
    crops = augment_batch(images, 2, False, -1.0, torch.Generator().manual_seed(2))
    for source, crop in zip(padded, crops, strict=True):
        windows = source.unfold(1, 6, 1).unfold(2, 6, 1)  # every 6x6 window of the padded image
        assert any(torch.equal(windows[:, y, x], crop) for y in range(5) for x in range(5))


def test_batches_cover_the_split_once_per_epoch(dataset) -> None:
    seen = torch.cat(
        [labels for _, labels in iterate_batches(dataset.train, 64, torch.Generator().manual_seed(0))]
    )
    assert len(seen) == len(dataset.train)
    assert torch.equal(seen.sort().values, dataset.train.labels.sort().values)
