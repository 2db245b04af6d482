"""The in-memory dataset every loader returns, the data errors, and the small shared input checks.

Holds :class:`ImageTensorDataset` (``uint8`` images ``N x 3 x H x W`` and ``int64`` labels, ``-1`` =
unlabeled), :class:`DatasetNotFoundError` and :class:`DatasetCorruptError`, and the checks that every
reader uses (:func:`_check_split`, :func:`_check_index`, :func:`_read_labels`, :func:`_describe`).
Chapter 00 introduces this format: every chapter's data is one such tensor pair in memory.
"""

from __future__ import annotations

import operator
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch


class DatasetNotFoundError(FileNotFoundError):
    """The dataset's files are not under the data root and could not be downloaded."""


class DatasetCorruptError(RuntimeError):
    """A dataset file exists but is truncated, unreadable, or has the wrong structure or checksum."""


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


def _describe(x: Any) -> str:
    """``"Tensor of dtype torch.uint8 and shape (2, 3)"`` for arrays, else the type's name (for errors)."""
    if isinstance(x, torch.Tensor | np.ndarray):
        return f"{type(x).__name__} of dtype {x.dtype} and shape {tuple(x.shape)}"
    return type(x).__name__


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


@dataclass(repr=False, eq=False)
class ImageTensorDataset:
    """Images held in memory: ``images`` uint8 ``N x 3 x H x W`` (contiguous), ``labels`` int64 ``N``.

    ``labels[i] == -1`` marks an unlabeled image (STL-10's unlabeled split); otherwise
    ``0 <= labels[i] < len(classes)``. ``ds[i]`` returns ``(images[i], int(labels[i]))``.
    ``extras``: other per-image tensors (first dimension N) that travel with the images, e.g. the
    caption tokens of a captioned set; :meth:`subset` keeps them aligned.
    """

    images: torch.Tensor
    labels: torch.Tensor
    classes: list[str]
    name: str
    split: str
    extras: dict[str, torch.Tensor] = field(default_factory=dict)

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
        for key, value in self.extras.items():
            if not isinstance(value, torch.Tensor) or value.ndim < 1 or value.shape[0] != img.shape[0]:
                raise ValueError(f"extras[{key!r}] must be a tensor with one row per image ({img.shape[0]}), "
                                 f"got {_describe(value)}")
        self.images, self.labels, self.classes = img.contiguous(), lab.contiguous(), list(self.classes)

    def subset(self, indices) -> ImageTensorDataset:
        """The images (labels, extras) at ``indices``, in that order: a new dataset of the same name."""
        index = torch.as_tensor(indices, dtype=torch.long)
        return ImageTensorDataset(self.images[index], self.labels[index], self.classes, self.name, self.split,
                                  {k: v[index] for k, v in self.extras.items()})

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
