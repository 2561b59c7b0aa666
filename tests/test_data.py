"""IDX reading and the missing-dataset message."""
from __future__ import annotations

import gzip
import struct

import numpy as np
import pytest

from weightdist.data import FILES, load_split, read_idx
from weightdist.errors import DatasetError


def write_idx(path, array: np.ndarray, gz: bool = False) -> None:
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    data = header + array.astype(np.uint8).tobytes()
    (gzip.open if gz else open)(path, "wb").write(data)


def make_dataset(folder, n=5):
    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        images, labels = FILES[split]
        write_idx(folder / f"{images}.gz", rng.integers(0, 256, (n, 28, 28)), gz=True)
        write_idx(folder / labels, rng.integers(0, 10, n))


def test_round_trip(tmp_path):
    make_dataset(tmp_path)
    split = load_split("fashion-mnist", "test", data_dir=tmp_path)
    assert split.images.shape == (5, 28, 28) and split.images.dtype == np.uint8
    assert split.labels.shape == (5,)


def test_truncated_file_is_named(tmp_path):
    path = tmp_path / "x-idx1-ubyte"
    write_idx(path, np.arange(10))
    path.write_bytes(path.read_bytes()[:-3])
    with pytest.raises(DatasetError, match="x-idx1-ubyte.*truncated"):
        read_idx(path)


def test_missing_dataset_says_how_to_install(tmp_path):
    with pytest.raises(DatasetError, match="not found in .*--data-dir"):
        load_split("fashion-mnist", "train", data_dir=tmp_path)


def test_real_fashion_mnist_when_installed():
    try:
        test = load_split("fashion-mnist", "test")
    except DatasetError as exc:
        pytest.skip(f"Debian's dataset-fashion-mnist is not installed: {exc}")
    assert test.images.shape == (10_000, 28, 28)
    assert np.bincount(test.labels).tolist() == [1000] * 10
