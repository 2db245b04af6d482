"""STL-10 (Coates, Ng & Lee 2011, AISTATS): 96x96-px raw uint8 binaries, labeled and unlabeled splits.

Holds :func:`load_stl10` and the readers of ``stl10_binary/``: the images are memory-mapped and
turned from MATLAB's column-major order into (channel, row, column) in the one copy to RAM; labels
are checked and moved from 1..10 on disk to 0..9. Chapter 00 introduces it (an exercise shows a
grid of its images); its ``train+unlabeled`` split is the self-supervised pre-training set of the
papers that use it.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from .download import ARCHIVES, _ensure_folder, data_root
from .tensor import DatasetCorruptError, ImageTensorDataset, _check_split, _read_labels

# STL-10: raw uint8 binaries, each image 3x96x96 stored column-major
STL10_PARTS = {
    "train": ["train"],
    "test": ["test"],
    "unlabeled": ["unlabeled"],
    "train+unlabeled": ["train", "unlabeled"],
}
STL10_SIZE = 96
_STL10_IMAGE_BYTES = 3 * STL10_SIZE * STL10_SIZE


def _stl10_images(path: Path) -> np.ndarray:
    """Memory-map ``*_X.bin`` as an (n, 3, 96, 96) view in (channel, row, column) order.

    On disk each channel is column-major (MATLAB order), so the C-order reshape gives
    (channel, column, row) and the last two axes are swapped.
    """
    size = path.stat().st_size
    if size == 0 or size % _STL10_IMAGE_BYTES:
        raise DatasetCorruptError(
            f"{path} has {size} bytes, not a positive multiple of 3*96*96 = {_STL10_IMAGE_BYTES} "
            f"(one image): the file is truncated or not an STL-10 image file; "
            f"delete stl10_binary/ and extract the archive again"
        )
    n = size // _STL10_IMAGE_BYTES
    return np.memmap(path, np.uint8, "r", shape=(n, 3, STL10_SIZE, STL10_SIZE)).transpose(0, 1, 3, 2)


def _stl10_labels(path: Path, n: int, num_classes: int) -> np.ndarray:
    """``*_y.bin``: one uint8 per image, 1..10 on disk, returned as 0..9."""
    if path.stat().st_size != n:
        raise DatasetCorruptError(
            f"{path} has {path.stat().st_size} bytes, expected {n} (one label per image)"
        )
    return _read_labels(np.fromfile(path, np.uint8), n, num_classes, 1, str(path)) - 1


def _stl10_class_names(path: Path) -> list[str]:
    """``class_names.txt``: one class name per line (blank lines skipped)."""
    try:
        names = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    except UnicodeDecodeError as err:
        raise DatasetCorruptError(f"{path} is not a text file of class names") from err
    if not names:
        raise DatasetCorruptError(f"{path} holds no class names")
    return names


def load_stl10(
    split: str = "train", root: str | os.PathLike | None = None, download: bool = True
) -> ImageTensorDataset:
    """STL-10 (Coates, Ng & Lee 2011, AISTATS): 96x96 px, 10 classes.

    Splits: ``train`` (5 000 labeled), ``test`` (8 000), ``unlabeled`` (100 000, label -1) and
    ``train+unlabeled`` (both, as used for self-supervised pre-training). Read from
    ``<root>/stl10_binary/``. The unlabeled split takes 2.8 GB of RAM once loaded.
    """
    parts = _check_split("stl10", split, STL10_PARTS)
    required = (
        ["class_names.txt"]
        + [f"{p}_X.bin" for p in parts]
        + [f"{p}_y.bin" for p in parts if p != "unlabeled"]
    )
    folder = _ensure_folder(ARCHIVES["stl10"], data_root(root), required, download)
    classes = _stl10_class_names(folder / "class_names.txt")
    views = [_stl10_images(folder / f"{p}_X.bin") for p in parts]
    images = np.empty((sum(len(v) for v in views), 3, STL10_SIZE, STL10_SIZE), np.uint8)
    labels, start = [], 0
    for part, view in zip(parts, views):
        images[start : start + len(view)] = view  # the one copy: memmap -> RAM, fixing the orientation
        start += len(view)
        unlabeled = np.full(len(view), -1, np.int64)
        labels.append(
            unlabeled
            if part == "unlabeled"
            else _stl10_labels(folder / f"{part}_y.bin", len(view), len(classes))
        )
    return ImageTensorDataset(
        torch.from_numpy(images), torch.from_numpy(np.concatenate(labels)), classes, "stl10", split
    )

