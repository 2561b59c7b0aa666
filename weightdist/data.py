"""Image datasets read from IDX files, offline first.

Fashion-MNIST comes from Debian's ``dataset-fashion-mnist`` by default; MNIST from a folder given
with ``data_dir`` (or Debian's path if present); any folder holding the four standard IDX files
(optionally gzipped) works through ``data_dir``, and any images/labels IDX pairs through
``load_idx_pair`` / ``load_images(idx_files=...)``.
"""
from __future__ import annotations

import gzip
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import DatasetError, UnknownNameError

DEFAULT_DIRS = {
    "fashion-mnist": ["/usr/share/datasets/fashion-mnist"],
    "mnist": ["/usr/share/datasets/mnist"],
}
INSTALL_HINTS = {
    "fashion-mnist": "install it with 'apt-get install -y dataset-fashion-mnist' or pass --data-dir DIR holding the IDX files",
    "mnist": "pass --data-dir DIR holding the MNIST IDX files (torchvision.datasets.MNIST(download=True) fetches them when online)",
}
FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


@dataclass(frozen=True)
class ImageSplit:
    images: np.ndarray  # uint8, (n, 28, 28)
    labels: np.ndarray  # int64, (n,)


def read_idx(path: Path) -> np.ndarray:
    """Parse one IDX file (the MNIST container format), gzipped or not."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError) as exc:
        raise DatasetError(f"{path}: cannot read IDX file ({exc}); reinstall the dataset") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise DatasetError(f"{path}: not an unsigned-byte IDX file; reinstall the dataset")
    ndim = raw[3]
    dims = np.frombuffer(raw, dtype=">u4", count=ndim, offset=4).astype(int)
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if data.size != int(np.prod(dims)):
        raise DatasetError(f"{path}: IDX header says {tuple(dims)} but holds {data.size} bytes; the file is truncated")
    return data.reshape(tuple(dims))


def _find(folder: Path, stem: str) -> Path | None:
    for candidate in (folder / stem, folder / f"{stem}.gz", folder / stem.replace("-idx", ".idx")):
        if candidate.is_file():
            return candidate
    return None


def dataset_dir(name: str, data_dir: str | os.PathLike | None = None) -> Path:
    """The folder holding ``name``'s IDX files, or a one-line error saying how to get them."""
    if name not in DEFAULT_DIRS:
        from .escape import error_value

        raise UnknownNameError(f"unknown dataset {error_value(name)}; choose one of {', '.join(DEFAULT_DIRS)}")
    folders = [Path(data_dir)] if data_dir else [Path(d) for d in DEFAULT_DIRS[name]]
    for folder in folders:
        if all(_find(folder, stem) for stem in FILES["train"] + FILES["test"]):
            return folder
    where = ", ".join(str(f) for f in folders)
    raise DatasetError(f"{name} IDX files not found in {where}; {INSTALL_HINTS[name]}")


def load_split(name: str, split: str, data_dir: str | os.PathLike | None = None) -> ImageSplit:
    if split not in FILES:
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    folder = dataset_dir(name, data_dir)
    image_stem, label_stem = FILES[split]
    images = read_idx(_find(folder, image_stem))
    labels = read_idx(_find(folder, label_stem)).astype(np.int64)
    if images.shape[0] != labels.shape[0]:
        raise DatasetError(f"{folder}: {split} images and labels differ in count; reinstall the dataset")
    return ImageSplit(images=images, labels=labels)


def load_idx_pair(images_path: str | os.PathLike, labels_path: str | os.PathLike) -> ImageSplit:
    """One split from an images IDX file and a labels IDX file given by path."""
    images_path, labels_path = Path(images_path), Path(labels_path)
    for path in (images_path, labels_path):
        if not path.is_file():
            raise DatasetError(f"{path}: no such IDX file; pass existing image and label files")
    images = read_idx(images_path)
    labels = read_idx(labels_path)
    if labels.ndim != 1:
        raise DatasetError(f"{labels_path}: a labels IDX file holds one number per image, got shape {labels.shape}")
    if images.shape[0] != labels.shape[0]:
        raise DatasetError(f"{images_path} holds {images.shape[0]} images but {labels_path} holds {labels.shape[0]} labels; "
                           "pass a matching pair")
    return ImageSplit(images=images, labels=labels.astype(np.int64))


def load_images(name: str = "fashion-mnist", data_dir: str | os.PathLike | None = None,
                idx_files: tuple[str, ...] | None = None, shape: tuple[int, int] = (28, 28)) -> tuple[ImageSplit, ImageSplit]:
    """(train, test) for a named dataset, or for ``idx_files`` = (train images, train labels, test
    images, test labels); every image must be ``shape`` (the VAE's input size)."""
    if idx_files is not None:
        if len(idx_files) != 4:
            raise DatasetError(f"--idx needs four files (train images, train labels, test images, test labels), "
                               f"got {len(idx_files)}")
        train, test = load_idx_pair(*idx_files[:2]), load_idx_pair(*idx_files[2:])
    else:
        train, test = load_split(name, "train", data_dir), load_split(name, "test", data_dir)
    for split in (train, test):
        if split.images.shape[1:] != shape:
            raise DatasetError(f"images of shape {split.images.shape[1:]} where {shape[0]}x{shape[1]} greyscale images "
                               "are needed; pass MNIST-format IDX files")
    return train, test
