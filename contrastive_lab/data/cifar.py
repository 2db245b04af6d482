"""CIFAR-10 and CIFAR-100 (Krizhevsky 2009): the official python pickles, read without running code.

Holds :func:`load_cifar10`, :func:`load_cifar100`, the numpy-only unpickler that refuses every other
global (so a doctored file cannot run code), the structure checks of each batch, :func:`cifar10_name`
(``cifar10`` / ``cifar10-mini`` / ``cifar10-partial``, so numbers measured on a subset are never
reported as CIFAR-10) with :data:`CIFAR10_SIZES`, and :func:`load_book_data`, the chapters' data
(CIFAR-10, or the synthetic textures when it is unavailable). Chapter 00 introduces CIFAR-10, the
book's running example; every later chapter loads it through :func:`load_book_data`.
"""

from __future__ import annotations

import codecs
import os
import pickle
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .download import ARCHIVES, _ensure_folder, data_root
from .synthetic import make_synthetic
from .tensor import (
    DatasetCorruptError,
    DatasetNotFoundError,
    ImageTensorDataset,
    _check_split,
    _describe,
    _read_labels,
)

# CIFAR-10 / CIFAR-100: python pickles of (n, 3072) uint8 rows, channel-major 3x32x32
CIFAR10_FILES = {"train": [f"data_batch_{i}" for i in range(1, 6)], "test": ["test_batch"]}
CIFAR100_FILES = {"train": ["train"], "test": ["test"]}
CIFAR100_LABEL_TYPES = ("fine", "coarse")


def _numpy_pickle_globals() -> dict[tuple[str, str], Any]:
    """The only globals a CIFAR pickle may reference: numpy's array/dtype reconstructors, codecs.encode."""
    a = np.zeros(1, np.uint8)
    reconstruct, frombuffer, scalar = a.__reduce__()[0], a.__reduce_ex__(5)[0], np.int64(0).__reduce__()[0]
    allowed = {("numpy", "ndarray"): np.ndarray, ("numpy", "dtype"): np.dtype}
    allowed[("_codecs", "encode")] = codecs.encode  # protocol-2 pickles store bytes through it
    for core in ("numpy.core", "numpy._core"):  # py2-era files say numpy.core, numpy 2 writes numpy._core
        allowed[(f"{core}.multiarray", "_reconstruct")] = reconstruct
        allowed[(f"{core}.multiarray", "scalar")] = scalar
        allowed[(f"{core}.numeric", "_frombuffer")] = frombuffer
    return allowed


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickler that refuses every global except numpy arrays, so a doctored file cannot run code."""

    _allowed = _numpy_pickle_globals()

    def find_class(self, module: str, name: str) -> Any:
        """The allowed global ``module.name``; anything else raises pickle.UnpicklingError."""
        try:
            return self._allowed[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(
                f"refusing to load {module}.{name} (only numpy arrays allowed)"
            ) from None


def _unpickle(path: Path) -> dict:
    """Load one CIFAR pickle (``encoding="latin1"`` for the Python-2 files) as a dict."""
    try:
        with open(path, "rb") as f:
            obj = _NumpyOnlyUnpickler(f, encoding="latin1").load()
    except Exception as err:  # pickle raises EOFError, UnpicklingError, ValueError... on bad bytes
        raise DatasetCorruptError(
            f"cannot read {path}: {type(err).__name__}: {err}. The file is truncated or not a CIFAR "
            f"python batch; delete the folder and extract the archive again."
        ) from err
    if not isinstance(obj, dict):
        raise DatasetCorruptError(
            f"{path} holds a {type(obj).__name__}, expected a dict (a CIFAR python batch)"
        )
    return obj


def _require_keys(obj: dict, keys: Sequence[str], path: Path) -> None:
    """Raise DatasetCorruptError listing the ``keys`` that the unpickled dict ``obj`` lacks."""
    missing = [k for k in keys if k not in obj]
    if missing:
        raise DatasetCorruptError(f"{path} lacks the key(s) {missing}; it has {sorted(map(str, obj))}")


def _read_class_names(path: Path, key: str) -> list[str]:
    """Class names from ``batches.meta`` (CIFAR-10) or ``meta`` (CIFAR-100)."""
    meta = _unpickle(path)
    _require_keys(meta, [key], path)
    names = meta[key]
    if not isinstance(names, list | tuple) or not names or not all(isinstance(n, str) for n in names):
        raise DatasetCorruptError(f"{path}: {key!r} must be a non-empty list of str, got {names!r:.200}")
    return list(names)



def _read_cifar_batch(path: Path, label_key: str, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """One python batch -> (data uint8 (n, 3072), labels int64 (n,)), structure checked."""
    batch = _unpickle(path)
    _require_keys(batch, ["data", label_key], path)
    data = batch["data"]
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        raise DatasetCorruptError(
            f"{path}: 'data' must be a uint8 array of shape (n, 3072), got {_describe(data)}"
        )
    return data, _read_labels(batch[label_key], len(data), num_classes, 0, f"{path} ({label_key!r})")


def _read_cifar(
    files: list[Path], label_key: str, classes: list[str], name: str, split: str
) -> ImageTensorDataset:
    """Concatenate python batches into one dataset; row layout is R(1024) G(1024) B(1024), row-major."""
    parts = [_read_cifar_batch(p, label_key, len(classes)) for p in files]
    data = np.concatenate([d for d, _ in parts]).reshape(-1, 3, 32, 32)
    labels = np.concatenate([lab for _, lab in parts])
    return ImageTensorDataset(torch.from_numpy(data), torch.from_numpy(labels), classes, name, split)


def load_cifar10(
    split: str = "train", root: str | os.PathLike | None = None, download: bool = True
) -> ImageTensorDataset:
    """CIFAR-10 (Krizhevsky 2009, tech. report "Learning Multiple Layers of Features from Tiny Images").

    50 000 train / 10 000 test RGB images of 32x32 px in 10 classes, read from
    ``<root>/cifar-10-batches-py/`` (official python layout; partial sets such as cifar10-mini load too,
    since only the structure is checked, not the md5 of each batch).
    """
    files = _check_split("cifar10", split, CIFAR10_FILES)
    folder = _ensure_folder(ARCHIVES["cifar10"], data_root(root), [*files, "batches.meta"], download)
    classes = _read_class_names(folder / "batches.meta", "label_names")
    ds = _read_cifar([folder / f for f in files], "labels", classes, "cifar10", split)
    ds.name = cifar10_name(len(ds), split, folder)
    return ds


CIFAR10_SIZES = {"train": 50_000, "test": 10_000}


def cifar10_name(count: int, split: str, folder: Path) -> str:
    """"cifar10" for the full split, else "cifar10-mini" (the shared subset) or "cifar10-partial".

    Numbers measured on a subset must never be reported as CIFAR-10; the dataset's name
    carries the distinction into every printout, log and figure title.
    """
    if count == CIFAR10_SIZES[split]:
        return "cifar10"
    return "cifar10-mini" if "cifar10-mini" in str(folder) else "cifar10-partial"


def load_book_data(split: str = "train", root: str | os.PathLike | None = None, synthetic_size: int = 2000):
    """The chapters' data: CIFAR-10 (downloaded on first use), or the synthetic textures when it
    is not there and cannot be downloaded (offline), with a one-line note saying so."""
    try:
        return load_cifar10(split, root=root)
    except DatasetNotFoundError as err:
        print(f"CIFAR-10 unavailable ({str(err).splitlines()[0]}); using the synthetic dataset instead.")
        return make_synthetic(n=synthetic_size, split="test" if split == "test" else "train")


def load_cifar100(
    split: str = "train",
    root: str | os.PathLike | None = None,
    download: bool = True,
    label_type: str = "fine",
) -> ImageTensorDataset:
    """CIFAR-100 (Krizhevsky 2009): 50 000 / 10 000 images of 32x32 px, 100 fine or 20 coarse classes.

    Read from ``<root>/cifar-100-python/{train,test,meta}``; ``label_type`` picks ``fine_labels`` or
    ``coarse_labels`` (the 20 superclasses).
    """
    files = _check_split("cifar100", split, CIFAR100_FILES)
    if label_type not in CIFAR100_LABEL_TYPES:
        raise ValueError(f"unknown label_type {label_type!r}; valid: {', '.join(CIFAR100_LABEL_TYPES)}")
    folder = _ensure_folder(ARCHIVES["cifar100"], data_root(root), [*files, "meta"], download)
    classes = _read_class_names(folder / "meta", f"{label_type}_label_names")
    return _read_cifar([folder / f for f in files], f"{label_type}_labels", classes, "cifar100", split)

