from __future__ import annotations

import functools
import hashlib
import http.server
import io
import pickle
import tarfile
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision

from sparse_soups.kernels.data import DataError, DataNotFoundError
from sparse_soups.kernels.datasets import (
    Source,
    augment_for,
    load_torchvision_dataset,
    rotate_batch,
)
from sparse_soups.registry import DATASETS
from tests.conftest import write_idx


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def cifar_archive(kind: str, n: int = 6, seed: int = 0) -> tuple[bytes, dict[str, str], np.ndarray]:
    """A tiny archive laid out like cifar-10-python.tar.gz / cifar-100-python.tar.gz.

    Each batch is a pickled dict with 'data' (N, 3072) uint8 rows (R, G, B planes of 32x32)
    and 'labels' (CIFAR-10) or 'fine_labels' / 'coarse_labels' (CIFAR-100).
    """
    rng = np.random.default_rng(seed)
    if kind == "cifar10":
        folder, batches = "cifar-10-batches-py", [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
        meta_name, meta = "batches.meta", {"label_names": [f"c{i}" for i in range(10)]}
    else:
        folder, batches = "cifar-100-python", ["train", "test"]
        meta_name, meta = (
            "meta",
            {"fine_label_names": [f"f{i}" for i in range(100)], "coarse_label_names": []},
        )
    members, checksums, first = {}, {}, None
    for name in batches:
        data = rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)
        labels = rng.integers(0, 10 if kind == "cifar10" else 100, size=n).tolist()
        entry = {"batch_label": name, "data": data, "filenames": [f"{i}.png" for i in range(n)]}
        entry.update(
            {"labels": labels} if kind == "cifar10" else {"fine_labels": labels, "coarse_labels": labels}
        )
        members[name] = pickle.dumps(entry, protocol=2)
        first = data if first is None else first
    members[meta_name] = pickle.dumps(meta, protocol=2)
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, payload in members.items():
            info = tarfile.TarInfo(f"{folder}/{name}")
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))
    checksums = {name: md5(payload) for name, payload in members.items()}
    return buffer.getvalue(), checksums, first


@pytest.fixture()
def server(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """An HTTP server on 127.0.0.1 serving a temporary directory."""
    served = tmp_path / "served"
    served.mkdir()

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(served)))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", served
    httpd.shutdown()
    httpd.server_close()


@pytest.mark.parametrize(
    ("kind", "filename"), [("cifar10", "cifar-10-python.tar.gz"), ("cifar100", "cifar-100-python.tar.gz")]
)
def test_cifar_download_verified_from_local_server(server, tmp_path: Path, kind: str, filename: str) -> None:
    url, served = server
    archive, checksums, first = cifar_archive(kind)
    (served / filename).write_bytes(archive)
    source = Source(url=f"{url}/{filename}", md5=md5(archive), files=checksums)
    root = tmp_path / "data"
    train_x, train_y, test_x, test_y = load_torchvision_dataset(kind, root, download=True, source=source)
    expected_train = 30 if kind == "cifar10" else 6
    assert train_x.shape == (expected_train, 3, 32, 32) and train_x.dtype == torch.uint8
    assert test_x.shape == (6, 3, 32, 32) and train_y.dtype == torch.int64 and len(test_y) == 6
    # pixel (row 0, col 1) of image 0: the second byte of each colour plane
    assert train_x[0, :, 0, 1].tolist() == [int(first[0, 1]), int(first[0, 1025]), int(first[0, 2049])]
    (served / filename).unlink()  # the existing, verified copy is used without the server
    again = load_torchvision_dataset(kind, root, download=True, source=source)
    assert torch.equal(again[0], train_x)


def test_corrupted_archive_rejected_naming_the_file(server, tmp_path: Path) -> None:
    url, served = server
    archive, checksums, _ = cifar_archive("cifar10")
    damaged = bytearray(archive)
    damaged[len(damaged) // 2] ^= 0xFF
    (served / "cifar-10-python.tar.gz").write_bytes(bytes(damaged))
    source = Source(url=f"{url}/cifar-10-python.tar.gz", md5=md5(archive), files=checksums)
    with pytest.raises(DataError, match=r"checksum mismatch for .*cifar-10-python\.tar\.gz"):
        load_torchvision_dataset("cifar10", tmp_path / "data", download=True, source=source)


def test_missing_copy_without_download(tmp_path: Path) -> None:
    with pytest.raises(DataNotFoundError, match="download=True"):
        load_torchvision_dataset("cifar100", tmp_path)


def test_mnist_download_from_local_server(server, tmp_path: Path) -> None:
    url, served = server
    rng = np.random.default_rng(0)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, size=(5, 28, 28)),
        "train-labels-idx1-ubyte": rng.integers(0, 10, size=5),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, size=(3, 28, 28)),
        "t10k-labels-idx1-ubyte": rng.integers(0, 10, size=3),
    }
    for name, array in arrays.items():
        write_idx(served / name, array)
    files = {f"{name}.gz": md5((served / f"{name}.gz").read_bytes()) for name in arrays}
    train_x, train_y, test_x, _ = load_torchvision_dataset(
        "mnist", tmp_path / "data", download=True, source=Source(url=url, files=files)
    )
    assert train_x.shape == (5, 1, 28, 28) and test_x.shape == (3, 1, 28, 28)
    assert train_y.tolist() == arrays["train-labels-idx1-ubyte"].tolist()
    assert torch.equal(train_x[:, 0], torch.from_numpy(arrays["train-images-idx3-ubyte"]).to(torch.uint8))


def test_cifar100_augmentation_rotates_per_sample_deterministically() -> None:
    images = torch.randn(8, 3, 32, 32)
    a = augment_for("cifar100", images, -2.0, torch.Generator().manual_seed(0))
    b = augment_for("cifar100", images, -2.0, torch.Generator().manual_seed(0))
    c = augment_for("cifar10", images, -2.0, torch.Generator().manual_seed(0))
    assert a.shape == images.shape and torch.equal(a, b) and not torch.allclose(a, c)
    # a constant image equal to the fill value is unchanged; corners of a rotated image get the fill
    flat = torch.full((4, 1, 16, 16), -2.0)
    assert torch.allclose(rotate_batch(flat, 15, -2.0, torch.Generator().manual_seed(1)), flat)
    ones = rotate_batch(torch.ones(64, 1, 16, 16), 15, -2.0, torch.Generator().manual_seed(1))
    assert ones[:, 0, 0, 0].min() < 0 and torch.allclose(ones[:, 0, 8, 8], torch.ones(64))
    # at 0 degrees the rotation is the identity
    assert torch.allclose(rotate_batch(images, 0, 0.0, torch.Generator()), images, atol=1e-5)


def test_prepare_dataset_reads_cifar_copy(server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from sparse_soups.config import DataSettings
    from sparse_soups.kernels.data import prepare_dataset

    url, served = server
    archive, checksums, _ = cifar_archive("cifar10")
    (served / "cifar-10-python.tar.gz").write_bytes(archive)
    source = Source(url=f"{url}/cifar-10-python.tar.gz", md5=md5(archive), files=checksums)
    root = tmp_path / "data"
    load_torchvision_dataset("cifar10", root, download=True, source=source)  # now an existing copy
    settings = DataSettings(dataset="cifar10", root=str(root))
    # the prepare step checks the real CIFAR-10 checksums, which the tiny files fail
    with pytest.raises(DataError, match=r"checksum mismatch for .*data_batch_1.*batches\.meta"):
        prepare_dataset(settings, tmp_path / "bad.pt")
    cifar = (
        torchvision.datasets.CIFAR10
    )  # give it the tiny files' checksums, as real files pass the real ones
    monkeypatch.setattr(cifar, "train_list", [[f, checksums[f]] for f, _ in cifar.train_list])
    monkeypatch.setattr(cifar, "test_list", [[f, checksums[f]] for f, _ in cifar.test_list])
    monkeypatch.setattr(cifar, "meta", {**cifar.meta, "md5": checksums["batches.meta"]})
    prepared = prepare_dataset(settings, tmp_path / "data.pt")
    assert prepared["train_images"].shape == (27, 3, 32, 32) and prepared["val_images"].shape == (
        3,
        3,
        32,
        32,
    )
    assert prepared["test_images"].shape == (6, 3, 32, 32) and prepared["train_images"].dtype == torch.uint8


class Toy(torchvision.datasets.MNIST):
    """A torchvision-style dataset of its own: MNIST's reader on files under `<root>/Toy/raw`."""


def test_registered_torchvision_dataset_is_prepared(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from sparse_soups.config import DataSettings
    from sparse_soups.kernels.data import load_prepared, prepare_dataset

    monkeypatch.setattr(DATASETS, "_entries", dict(DATASETS._entries))  # the registration is undone
    DATASETS.register(
        "toy", "sparse_soups.kernels.datasets:load_torchvision", torchvision_class=Toy, train_size=12,
        augmentation=(1, True, 0.0), streamed=False,
    )  # fmt: skip
    rng = np.random.default_rng(0)
    raw = tmp_path / "toy" / "Toy" / "raw"
    raw.mkdir(parents=True)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, size=(12, 8, 8)),
        "train-labels-idx1-ubyte": np.arange(12) % 3,
        "t10k-images-idx3-ubyte": rng.integers(0, 256, size=(5, 8, 8)),
        "t10k-labels-idx1-ubyte": np.arange(5) % 3,
    }
    for name, array in arrays.items():
        write_idx(raw / name, array, compress=False)
    settings = DataSettings(dataset="toy", root=str(tmp_path / "toy"), validation_fraction=0.25)
    prepared = prepare_dataset(settings, tmp_path / "toy.pt")
    assert prepared["source"] == str(tmp_path / "toy") and prepared["num_classes"] == 3
    assert prepared["train_images"].shape == (9, 1, 8, 8) and prepared["val_images"].shape == (3, 1, 8, 8)
    assert prepared["test_images"].dtype == torch.uint8
    assert torch.equal(
        prepared["test_images"][:, 0], torch.from_numpy(arrays["t10k-images-idx3-ubyte"]).byte()
    )
    assert prepared["test_labels"].tolist() == [0, 1, 2, 0, 1]
    together = torch.cat([prepared["train_labels"], prepared["val_labels"]])
    assert sorted(together.tolist()) == sorted(arrays["train-labels-idx1-ubyte"].tolist())
    dataset = load_prepared(tmp_path / "toy.pt", settings)
    assert dataset.input_shape == (1, 8, 8) and len(dataset.train) == 9
    assert augment_for("toy", dataset.train.images, -1.0, torch.Generator()).shape == (9, 1, 8, 8)
    # a torchvision loader on a dataset without a torchvision class, and an unknown name
    with pytest.raises(ValueError, match="dataset 'imagenet' has no torchvision_class"):
        load_torchvision_dataset("imagenet", tmp_path)
    with pytest.raises(ValueError, match=r"data.dataset: unknown dataset 'nope' \(known: .*toy"):
        prepare_dataset(DataSettings(dataset="nope"), tmp_path / "nope.pt")
