"""Image folders ``root/<class>/<image>`` (ImageNet, Imagenette, your own photos), decoded lazily.

Holds :class:`ImageFolderDataset` (sorted class folders, files matched by :data:`IMAGE_EXTENSIONS`,
decoded on access), :func:`read_image` (PIL to a uint8 RGB tensor; a damaged file raises
:class:`~contrastive_lab.data.DatasetCorruptError` naming it) and the ``load_dataset("imagefolder")``
loader, whose folder is ``<root>/<split>``. Chapter 00 lists it among the datasets; chapter 13
streams ImageNet through it with DataLoader workers.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from .download import data_root
from .tensor import DatasetCorruptError, DatasetNotFoundError, _check_index, _check_split

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")


def _scan_class_folders(
    root: Path, extensions: tuple[str, ...]
) -> tuple[list[str], list[tuple[Path, int]], list[str]]:
    """Sorted class folders, their image files (searched recursively, matched by extension) and the
    names of the class folders that hold no image; a missing ``root`` or one without class folders raises."""
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
    return [d.name for d in class_dirs], samples, empty


def _scan_image_folder(root: Path, extensions: tuple[str, ...]) -> tuple[list[str], list[tuple[Path, int]]]:
    """Sorted class folders and their image files; a class folder without images is an error."""
    classes, samples, empty = _scan_class_folders(root, extensions)
    if empty:
        raise DatasetNotFoundError(
            f"no images ({', '.join(extensions)}) in the class folder(s) {empty} of {root}"
        )
    return classes, samples


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


def _split_folder(split: str, root: str | os.PathLike | None = None) -> Path:
    """``<root>/<split>``; when the data root exists but that split does not, the error lists the splits."""
    base = data_root(root)
    if base.is_dir() and not (base / split).is_dir():
        found = sorted(d.name for d in base.iterdir() if d.is_dir() and not d.name.startswith("."))
        _check_split(f"imagefolder {base}", split, found)
    return base / split


def _load_image_folder(
    split: str = "train", root: str | os.PathLike | None = None, **kwargs: Any
) -> ImageFolderDataset:
    """``load_dataset("imagefolder")``: the folder ``<root>/<split>`` (e.g. imagenette2-160/train)."""
    return ImageFolderDataset(_split_folder(split, root), **kwargs)
