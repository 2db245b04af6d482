"""Datasets as uint8 image tensors: CIFAR-10/100, STL-10, image folders and an offline synthetic set.

Every loader hands out ``(image, label)`` pairs where ``image`` is a ``uint8`` tensor of shape
``3 x H x W`` and ``label`` an ``int`` (``-1`` = unlabeled). Turning one image into two augmented
views is the job of ``contrastive_lab.augment``; :class:`TwoViewDataset` applies such a transform
twice and returns the sample index as well, which the memory bank of InstDisc needs (Wu et al.
2018, Sec. 3.1, "Learning with a memory bank").

Where the files live (:func:`data_root`): an explicit ``root`` argument, else the environment
variable ``CONTRASTIVE_LAB_DATA``, else ``<repo>/data``. Each dataset sits in its official
archive layout below that root (``cifar-10-batches-py/``, ``cifar-100-python/``, ``stl10_binary/``),
see ``data/README.md``. Missing archives are downloaded (md5-checked, atomically renamed); when
that is impossible the error says where to put the files by hand, or to use ``load_dataset("synthetic")``.
"""

from __future__ import annotations

import codecs
import hashlib
import logging
import math
import operator
import os
import pickle
import shutil
import tarfile
import tempfile
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

log = logging.getLogger(__name__)

DATA_ENV = "CONTRASTIVE_LAB_DATA"
DOWNLOAD_TIMEOUT_S = 30.0  # seconds without a byte from the server before we give up
_CHUNK = 1 << 20


class DatasetNotFoundError(FileNotFoundError):
    """The dataset's files are not under the data root and could not be downloaded."""


class DatasetCorruptError(RuntimeError):
    """A dataset file exists but is truncated, unreadable, or has the wrong structure or checksum."""


def data_root(root: str | os.PathLike | None = None) -> Path:
    """The datasets' folder: ``root`` if given, else ``$CONTRASTIVE_LAB_DATA``, else ``<repo>/data``.

    ``<repo>`` is the parent of the ``contrastive_lab`` package directory. CI points the variable at
    ``shared/data/cifar10-mini``, which holds ``cifar-10-batches-py/`` like the official archive.
    """
    if root is not None:
        return Path(root).expanduser()
    env = os.environ.get(DATA_ENV, "").strip()
    if env:
        return Path(env).expanduser()
    return Path(__file__).resolve().parent.parent / "data"


def _check_split(dataset: str, split: str, valid: Sequence[str] | dict) -> Any:
    """Return ``valid[split]`` (or ``split``), raising a ValueError that lists the valid splits."""
    if split not in valid:
        raise ValueError(f"unknown split {split!r} for {dataset}; valid splits: {', '.join(valid)}")
    return valid[split] if isinstance(valid, dict) else split


def _check_index(index: int, length: int) -> int:
    """Normalise a (possibly negative) integer index, with a clear IndexError when out of range."""
    i = operator.index(index)
    if not -length <= i < length:
        raise IndexError(f"index {index} out of range for a dataset of {length} images")
    return i % length


# --------------------------------------------------------------------------------------------------
# The in-memory dataset every loader returns
# --------------------------------------------------------------------------------------------------


@dataclass(repr=False, eq=False)
class ImageTensorDataset:
    """Images held in memory: ``images`` uint8 ``N x 3 x H x W`` (contiguous), ``labels`` int64 ``N``.

    ``labels[i] == -1`` marks an unlabeled image (STL-10's unlabeled split); otherwise
    ``0 <= labels[i] < len(classes)``. ``ds[i]`` returns ``(images[i], int(labels[i]))``.
    """

    images: torch.Tensor
    labels: torch.Tensor
    classes: list[str]
    name: str
    split: str

    def __post_init__(self) -> None:
        img, lab = self.images, self.labels
        if (
            not isinstance(img, torch.Tensor)
            or img.dtype != torch.uint8
            or img.ndim != 4
            or img.shape[1] != 3
        ):
            raise ValueError(f"images must be a uint8 tensor N x 3 x H x W, got {_describe(img)}")
        if not isinstance(lab, torch.Tensor) or lab.dtype != torch.int64 or lab.shape != (img.shape[0],):
            raise ValueError(
                f"labels must be an int64 tensor of shape ({img.shape[0]},), got {_describe(lab)}"
            )
        if not all(isinstance(c, str) for c in self.classes):
            raise ValueError(f"classes must be a list of str, got {self.classes!r}")
        if lab.numel() and (lab.min() < -1 or lab.max() >= len(self.classes)):
            raise ValueError(
                f"labels must lie in -1..{len(self.classes) - 1} ({len(self.classes)} classes), "
                f"got {int(lab.min())}..{int(lab.max())}"
            )
        self.images, self.labels, self.classes = img.contiguous(), lab.contiguous(), list(self.classes)

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        i = _check_index(index, len(self))
        return self.images[i], int(self.labels[i])

    def __repr__(self) -> str:
        _, c, h, w = self.images.shape
        return (
            f"ImageTensorDataset(name={self.name!r}, split={self.split!r}, "
            f"{len(self)} images of {c}x{h}x{w}, {len(self.classes)} classes)"
        )


def _describe(x: Any) -> str:
    if isinstance(x, torch.Tensor | np.ndarray):
        return f"{type(x).__name__} of dtype {x.dtype} and shape {tuple(x.shape)}"
    return type(x).__name__


# --------------------------------------------------------------------------------------------------
# Download, checksum, extraction
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ArchiveSpec:
    """Where an official archive comes from and what it unpacks to (``folder`` under the data root)."""

    title: str
    url: str
    filename: str
    md5: str
    folder: str
    size: str


# URLs and md5 sums as in torchvision.datasets (cifar.py, stl10.py), checked against torchvision 0.29.
ARCHIVES: dict[str, ArchiveSpec] = {
    "cifar10": ArchiveSpec(
        "CIFAR-10",
        "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
        "cifar-10-python.tar.gz",
        "c58f30108f718f92721af3b95e74349a",
        "cifar-10-batches-py",
        "170 MB",
    ),
    "cifar100": ArchiveSpec(
        "CIFAR-100",
        "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
        "cifar-100-python.tar.gz",
        "eb9058c3a382ffc7106e4002c42a8d85",
        "cifar-100-python",
        "169 MB",
    ),
    "stl10": ArchiveSpec(
        "STL-10",
        "http://ai.stanford.edu/~acoates/stl10/stl10_binary.tar.gz",
        "stl10_binary.tar.gz",
        "91f7769df0f17e558f3565bffb0c7dfb",
        "stl10_binary",
        "2.6 GB",
    ),
}


def file_md5(path: Path) -> str:
    """Hex md5 of a file, read in 1 MiB chunks."""
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def download_url(url: str, dest: str | os.PathLike, md5: str, timeout: float = DOWNLOAD_TIMEOUT_S) -> Path:
    """Download ``url`` to ``dest`` and check its md5; ``dest`` appears only when complete and correct.

    The bytes stream into a temporary file beside ``dest`` and are renamed over it atomically after
    the checksum matched, so an interrupted or corrupted download never leaves a half-written file.
    Network errors propagate (``urllib.error.URLError``/``OSError``); a wrong checksum raises
    :class:`DatasetCorruptError`.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
    tmp = Path(tmp_name)
    try:
        digest = hashlib.md5(usedforsecurity=False)
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as response:
            while chunk := response.read(_CHUNK):
                out.write(chunk)
                digest.update(chunk)
        if digest.hexdigest() != md5:
            raise DatasetCorruptError(
                f"checksum mismatch for {url}: md5 {digest.hexdigest()}, expected {md5}; "
                f"nothing was saved to {dest}. Try again later, or download it by hand (see data/README.md)."
            )
        os.replace(tmp, dest)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return dest


def _safe_extractall(tar: tarfile.TarFile, dest: Path) -> None:
    """Extract with the tar "data" filter; on Pythons without it (< 3.10.12 / 3.11.4) refuse the same
    dangerous members by hand: absolute paths, ``..``, links and device files."""
    if hasattr(tarfile, "data_filter"):
        tar.extractall(dest, filter="data")
        return
    for member in tar.getmembers():
        if (
            member.name.startswith("/")
            or ".." in Path(member.name).parts
            or not (member.isfile() or member.isdir())
        ):
            raise DatasetCorruptError(f"refusing to extract the unsafe archive member {member.name!r}")
    tar.extractall(dest)


def extract_archive(archive: Path, root: Path, folder: str) -> Path:
    """Unpack ``folder/`` from the tar archive into ``root``; nothing appears unless it all worked.

    Extraction goes to a staging directory in ``root`` that is renamed to ``root/folder`` at the end.
    Unsafe members (absolute paths, ``..``, links that leave the archive) are refused.
    """
    staging = Path(tempfile.mkdtemp(prefix=f".{folder}.", suffix=".extracting", dir=root))
    try:
        try:
            with tarfile.open(archive, "r:*") as tar:
                _safe_extractall(tar, staging)
        except Exception as err:  # tarfile/gzip/zlib raise many types for a damaged archive
            raise DatasetCorruptError(
                f"cannot extract {archive} ({type(err).__name__}: {err}); delete it and download it again"
            ) from err
        if not (staging / folder).is_dir():
            raise DatasetCorruptError(
                f"{archive} does not contain the folder {folder}/ (is it the right archive?)"
            )
        os.replace(staging / folder, root / folder)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return root / folder


def _missing_message(spec: ArchiveSpec, root: Path, reason: str) -> str:
    """The one message for 'dataset not here': expected path, manual step, alternative."""
    folder = root / spec.folder
    return (
        f"{spec.title} not found: expected the folder {folder}/ ({reason}).\n"
        f"  By hand: download {spec.url} ({spec.size}, md5 {spec.md5}) and either put the archive "
        f"into {root}/ (it is extracted on the next call) or extract it there yourself: "
        f"tar -xzf {spec.filename} -C {root}\n"
        f"  Data stored elsewhere: set {DATA_ENV}=<folder that contains {spec.folder}/> or pass root=...\n"
        f"  No data at all: use the offline synthetic dataset instead (dataset=synthetic, "
        f'i.e. load_dataset("synthetic")).'
    )


def _ensure_folder(spec: ArchiveSpec, root: Path, required: Sequence[str], download: bool) -> Path:
    """``root/spec.folder`` with all ``required`` files; extracts (and downloads) the archive if needed."""
    folder = root / spec.folder
    if not folder.is_dir():
        archive = root / spec.filename
        if archive.is_file():  # placed by hand: check it before trusting it
            if (got := file_md5(archive)) != spec.md5:
                raise DatasetCorruptError(
                    f"{archive} has md5 {got}, expected {spec.md5}; delete it and download again"
                )
        elif not download:
            raise DatasetNotFoundError(_missing_message(spec, root, "download=False"))
        else:
            try:
                log.info("downloading %s (%s) to %s", spec.url, spec.size, archive)
                download_url(spec.url, archive, spec.md5)
            except OSError as err:  # URLError, timeouts, refused connections, no disk space
                raise DatasetNotFoundError(
                    _missing_message(spec, root, f"the download failed: {err}")
                ) from err
        extract_archive(archive, root, spec.folder)
    missing = [name for name in required if not (folder / name).is_file()]
    if missing:
        raise DatasetNotFoundError(
            f"{folder}/ exists but lacks {', '.join(missing)}. Put the missing files there, or delete the "
            f"folder to extract/download {spec.filename} again.\n"
            + _missing_message(spec, root, "incomplete")
        )
    return folder


# --------------------------------------------------------------------------------------------------
# CIFAR-10 / CIFAR-100 (Krizhevsky 2009): python pickles of (n, 3072) uint8 rows, channel-major 3x32x32
# --------------------------------------------------------------------------------------------------

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


def _read_labels(raw: Any, n: int, num_classes: int, low: int, where: str) -> np.ndarray:
    """Check a 1-D integer label vector of length ``n`` with values in ``low .. low + num_classes - 1``."""
    labels = np.asarray(raw)
    if labels.size == 0:
        labels = labels.astype(np.int64)
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
        raise DatasetCorruptError(f"{where}: labels must be a 1-D integer list, got {_describe(labels)}")
    if len(labels) != n:
        raise DatasetCorruptError(f"{where}: {len(labels)} labels for {n} images")
    if n and (labels.min() < low or labels.max() >= low + num_classes):
        raise DatasetCorruptError(
            f"{where}: labels range {labels.min()}..{labels.max()}, expected {low}..{low + num_classes - 1} "
            f"({num_classes} classes)"
        )
    return labels.astype(np.int64)


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


# --------------------------------------------------------------------------------------------------
# STL-10 (Coates, Ng & Lee 2011): raw uint8 binaries, each image 3x96x96 stored column-major
# --------------------------------------------------------------------------------------------------

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


# --------------------------------------------------------------------------------------------------
# Image folders: root/<class>/<image> (ImageNet, Imagenette, your own photos), decoded lazily
# --------------------------------------------------------------------------------------------------

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")


def _scan_image_folder(root: Path, extensions: tuple[str, ...]) -> tuple[list[str], list[tuple[Path, int]]]:
    """Sorted class folders and their image files (searched recursively, matched by extension)."""
    if not root.is_dir():
        raise DatasetNotFoundError(f"image folder {root} does not exist; expected {root}/<class>/<image>.jpg")
    class_dirs = sorted(d for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    if not class_dirs:
        raise DatasetNotFoundError(f"{root} has no class sub-folders; expected {root}/<class>/<image>.jpg")
    samples, empty = [], []
    for label, d in enumerate(class_dirs):
        files = sorted(p for p in d.rglob("*") if p.is_file() and p.suffix.lower() in extensions)
        empty += [] if files else [d.name]
        samples += [(p, label) for p in files]
    if empty:
        raise DatasetNotFoundError(
            f"no images ({', '.join(extensions)}) in the class folder(s) {empty} of {root}"
        )
    return [d.name for d in class_dirs], samples


def read_image(path: str | os.PathLike) -> torch.Tensor:
    """Decode an image file to a uint8 RGB tensor 3 x H x W; unreadable files raise DatasetCorruptError."""
    try:
        with Image.open(path) as img:
            rgb = np.array(img.convert("RGB"))
    except Exception as err:  # PIL plugins raise OSError, SyntaxError, ValueError... on damaged files
        raise DatasetCorruptError(f"cannot read image {path}: {type(err).__name__}: {err}") from err
    return torch.from_numpy(np.ascontiguousarray(rgb.transpose(2, 0, 1)))


class ImageFolderDataset:
    """Images in ``root/<class>/<file>``, decoded on access (PIL, converted to RGB).

    ``classes`` are the sorted sub-folder names; ``samples`` the (path, label) pairs; ``ds[i]``
    returns ``(transform(image) if transform else image, label)`` with ``image`` a uint8 tensor
    3 x H x W (the same input type the in-memory datasets hand to a transform). Files whose
    extension is not in ``extensions`` (case-insensitive) are not part of the dataset.
    """

    def __init__(
        self,
        root: str | os.PathLike,
        transform: Callable[[torch.Tensor], Any] | None = None,
        extensions: Sequence[str] = IMAGE_EXTENSIONS,
    ) -> None:
        if (
            isinstance(extensions, str)
            or not extensions
            or not all(str(e).startswith(".") for e in extensions)
        ):
            raise ValueError(f"extensions must be a non-empty list like ('.jpg', '.png'), got {extensions!r}")
        if transform is not None and not callable(transform):
            raise TypeError(f"transform must be callable or None, got {type(transform).__name__}")
        self.root, self.transform = Path(root), transform
        self.extensions = tuple(e.lower() for e in extensions)
        self.classes, self.samples = _scan_image_folder(self.root, self.extensions)
        self.labels = torch.tensor([label for _, label in self.samples], dtype=torch.int64)
        self.name, self.split = "imagefolder", self.root.name

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[Any, int]:
        path, label = self.samples[_check_index(index, len(self))]
        image = read_image(path)
        return (self.transform(image) if self.transform is not None else image), label

    def __repr__(self) -> str:
        return f"ImageFolderDataset(root='{self.root}', {len(self)} images, {len(self.classes)} classes)"


def _load_image_folder(
    split: str = "train", root: str | os.PathLike | None = None, **kwargs: Any
) -> ImageFolderDataset:
    """``load_dataset("imagefolder")``: the folder ``<root>/<split>`` (e.g. imagenette2-160/train)."""
    base = data_root(root)
    if base.is_dir() and not (base / split).is_dir():
        found = sorted(d.name for d in base.iterdir() if d.is_dir() and not d.name.startswith("."))
        _check_split(f"imagefolder {base}", split, found)
    return ImageFolderDataset(base / split, **kwargs)


# --------------------------------------------------------------------------------------------------
# Synthetic textures: offline, deterministic, any size, class = texture family (not colour)
# --------------------------------------------------------------------------------------------------

SYNTHETIC_CLASSES = (
    "hstripes",
    "vstripes",
    "checker",
    "diamonds",
    "rings",
    "spokes",
    "dots",
    "blobs",
    "waves",
    "grid",
)
SYNTHETIC_SPLITS = ("train", "val", "test")


def _square_wave(t: torch.Tensor) -> torch.Tensor:
    """Soft square wave with period 1 and values in (0, 1) (soft edges avoid aliasing at low resolution)."""
    return 0.5 + 0.5 * torch.tanh(3.0 * torch.sin(2 * math.pi * t))


def _checker(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    return 0.5 + 0.5 * torch.tanh(4.0 * torch.sin(2 * math.pi * u) * torch.sin(2 * math.pi * v))


def _lattice_dist(t: torch.Tensor) -> torch.Tensor:
    """Distance to the nearest integer (lattice line), in periods."""
    return t - torch.round(t)


def _blobs(u: torch.Tensor, v: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Smooth random field (bicubic upsampling of 4x4 noise), soft-thresholded: aperiodic blobs."""
    n, h, w = u.shape
    field = F.interpolate(
        torch.rand(n, 1, 4, 4, generator=gen), size=(h, w), mode="bicubic", align_corners=False
    )[:, 0]
    lo, hi = field.amin((1, 2), keepdim=True), field.amax((1, 2), keepdim=True)
    return torch.sigmoid(12.0 * ((field - lo) / (hi - lo + 1e-6) - 0.5))


# Each family maps per-image pattern coordinates (u, v in periods, centred at a random point) to [0, 1].
# None is a mirror image of another (SimCLR's horizontal flip would make such a pair inseparable).
_PATTERNS: dict[str, Callable[..., torch.Tensor]] = {
    "hstripes": lambda u, v, g: _square_wave(v),
    "vstripes": lambda u, v, g: _square_wave(u),
    "checker": lambda u, v, g: _checker(u, v),
    "diamonds": lambda u, v, g: _checker((u + v) / math.sqrt(2), (u - v) / math.sqrt(2)),
    "rings": lambda u, v, g: _square_wave(torch.sqrt(u**2 + v**2)),
    "spokes": lambda u, v, g: _square_wave(3.0 * torch.atan2(v, u) / math.pi),  # 6 bright sectors
    "dots": lambda u, v, g: torch.exp(-(_lattice_dist(u) ** 2 + _lattice_dist(v) ** 2) / (2 * 0.16**2)),
    "blobs": _blobs,
    "waves": lambda u, v, g: _square_wave(v + 0.3 * torch.sin(math.pi * u)),
    "grid": lambda u, v, g: torch.exp(-((_lattice_dist(u) / 0.12) ** 2)).maximum(
        torch.exp(-((_lattice_dist(v) / 0.12) ** 2))
    ),
}


def _split_seed(seed: int, split: str) -> int:
    """A 63-bit generator seed from (seed, split), stable across runs and machines (unlike hash())."""
    digest = hashlib.sha256(f"contrastive_lab.synthetic:{seed}:{split}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)


def _uniform(n: int, low: float, high: float, gen: torch.Generator) -> torch.Tensor:
    return low + (high - low) * torch.rand(n, 1, 1, generator=gen)


def _pattern_coords(n: int, size: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-image coordinates in periods: random centre, +-10 deg rotation, 3-5.3 periods per image width."""
    axis = torch.linspace(-1, 1, size)
    y, x = axis.view(1, size, 1), axis.view(1, 1, size)
    x, y = x - _uniform(n, -0.5, 0.5, gen), y - _uniform(n, -0.5, 0.5, gen)
    theta, periods = _uniform(n, -0.18, 0.18, gen), 4.0 * torch.exp(_uniform(n, -0.29, 0.29, gen))
    scale = periods / 2.0  # the image spans 2 units
    u = (torch.cos(theta) * x + torch.sin(theta) * y) * scale
    v = (-torch.sin(theta) * x + torch.cos(theta) * y) * scale
    return u, v


def _colorize(pattern: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Blend a dark and a light random colour by the pattern (random polarity), add noise, to uint8."""
    n = pattern.shape[0]
    dark = (_uniform(n, 0.05, 0.4, gen) + 0.3 * (torch.rand(n, 3, 1, generator=gen) - 0.5)).unsqueeze(-1)
    light = (_uniform(n, 0.6, 0.95, gen) + 0.3 * (torch.rand(n, 3, 1, generator=gen) - 0.5)).unsqueeze(-1)
    flip = torch.rand(n, 1, 1, 1, generator=gen) < 0.5
    fg, bg = torch.where(flip, dark, light), torch.where(flip, light, dark)
    noise = torch.randn(n, 3, *pattern.shape[1:], generator=gen).mul_(
        _uniform(n, 0.01, 0.06, gen).unsqueeze(1)
    )
    image = noise.addcmul_(pattern.unsqueeze(1), fg - bg).add_(bg)  # in place: bg + (fg - bg) * p + noise
    return image.clamp_(0, 1).mul_(255).round_().to(torch.uint8)


def make_synthetic(
    n: int = 2000, image_size: int = 32, num_classes: int = 10, seed: int = 0, split: str = "train"
) -> ImageTensorDataset:
    """Procedural texture dataset: class = texture family, everything else random per image.

    Families (in class order): horizontal / vertical stripes, checkerboard, diamonds (45 deg checker),
    concentric rings, spokes, dot lattice, aperiodic blobs, wavy stripes, grid lines. Each image draws
    its own centre, +-10 deg rotation, scale, two colours (dark and light, random polarity) and
    Gaussian noise, so texture and not colour carries the class, and the class survives the SimCLR
    augmentations (crop, flip, colour jitter, grayscale; Chen et al. 2020, Sec. 3 and App. A).
    Deterministic given ``(seed, split)``; splits are independent draws of the same distribution.
    Labels are balanced (class counts differ by at most one).
    """
    _check_split("synthetic", split, SYNTHETIC_SPLITS)
    for arg, value, low in (("n", n, 1), ("image_size", image_size, 8), ("num_classes", num_classes, 2)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ValueError(f"{arg} must be an int >= {low}, got {value!r}")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"seed must be an int, got {seed!r}")
    if num_classes > len(SYNTHETIC_CLASSES):
        raise ValueError(
            f"num_classes must be <= {len(SYNTHETIC_CLASSES)} (texture families), got {num_classes}"
        )
    gen = torch.Generator().manual_seed(_split_seed(seed, split))
    labels = (torch.arange(n) % num_classes)[torch.randperm(n, generator=gen)]
    pattern = torch.empty(n, image_size, image_size)
    for c, family in enumerate(SYNTHETIC_CLASSES[:num_classes]):
        idx = (labels == c).nonzero().squeeze(1)
        u, v = _pattern_coords(len(idx), image_size, gen)
        pattern[idx] = _PATTERNS[family](u, v, gen)
    images = _colorize(pattern, gen)
    return ImageTensorDataset(images, labels, list(SYNTHETIC_CLASSES[:num_classes]), "synthetic", split)


# --------------------------------------------------------------------------------------------------
# Two views per image, and one entry point by name
# --------------------------------------------------------------------------------------------------


class TwoViewDataset:
    """``(transform(x), transform(x), label, index)`` for each ``(x, label)`` of ``dataset``.

    The two calls draw their random augmentations independently: the positive pair of SimCLR
    (Chen et al. 2020, Sec. 2.1, Alg. 1). ``index`` (always >= 0) addresses the sample's slot in a
    memory bank (Wu et al. 2018, Sec. 3.1).
    """

    def __init__(self, dataset: Any, transform: Callable[[Any], Any]) -> None:
        if not callable(transform):
            raise TypeError(f"transform must be callable, got {type(transform).__name__}")
        self.dataset, self.transform = dataset, transform

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> tuple[Any, Any, int, int]:
        i = _check_index(index, len(self))
        image, label = self.dataset[i]
        return self.transform(image), self.transform(image), label, i

    def __repr__(self) -> str:
        return f"TwoViewDataset({self.dataset!r}, transform={self.transform!r})"


DATASETS: dict[str, Callable[..., Any]] = {
    "cifar10": load_cifar10,
    "cifar100": load_cifar100,
    "stl10": load_stl10,
    "synthetic": make_synthetic,
    "imagefolder": _load_image_folder,
}


def load_dataset(
    name: str, split: str = "train", root: str | os.PathLike | None = None, **kwargs: Any
) -> Any:
    """Load a dataset by name: ``cifar10``, ``cifar100``, ``stl10``, ``synthetic`` or ``imagefolder``.

    ``kwargs`` go to the loader (e.g. ``download=False``, ``label_type="coarse"``, ``n=5000`` for
    synthetic, ``transform=`` for imagefolder, whose folder is ``<root>/<split>``). The synthetic set
    is generated, so passing a ``root`` with it is an error rather than silently ignored.
    """
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; valid names: {', '.join(DATASETS)}")
    if name == "synthetic":
        if root is not None:
            raise ValueError(
                f"the synthetic dataset is generated in memory and reads no files; got root={root!r}"
            )
        return make_synthetic(split=split, **kwargs)
    return DATASETS[name](split=split, root=root, **kwargs)
