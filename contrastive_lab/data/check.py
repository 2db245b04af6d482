"""Check a dataset before training: decode every image of a folder, or load and count an in-memory set.

Holds :func:`check_dataset` and its :class:`DatasetReport`. A damaged JPEG deep inside an ImageNet
folder otherwise stops a run hours in; here every file of an ``imagefolder`` split is decoded with
:func:`~contrastive_lab.data.read_image` and each failure is collected as (file, error) instead of
stopping at the first, and class folders without images are reported as warnings. The in-memory
datasets (``cifar10``, ``cifar100``, ``stl10``, ``synthetic``) are loaded, which checks their
structure, and counted. Nothing is downloaded. Chapter 00 introduces the datasets; the CLI offers
this check before training (issue 17, item 7).
"""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .download import ARCHIVES, data_root
from .folder import IMAGE_EXTENSIONS, _scan_class_folders, _split_folder, read_image
from .registry import load_dataset
from .tensor import DatasetCorruptError

_LISTED_CLASSES = 20  # summary(): above this many classes only the smallest and largest are named


@dataclass
class DatasetReport:
    """What :func:`check_dataset` found in one split.

    ``root`` is the folder that was read (``<root>/<split>`` for an image folder, the data root for
    the others, None for the generated synthetic set); ``count`` the images found (bad ones included),
    ``class_counts`` the images per class name, ``unlabeled`` those with label -1 (STL-10), ``bad``
    the (file, error) pairs of what could not be read, ``warnings`` what is odd but not broken.
    """

    name: str
    split: str
    root: Path | None
    count: int
    class_counts: dict[str, int]
    bad: list[tuple[str, str]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    unlabeled: int = 0

    @property
    def ok(self) -> bool:
        """True when every file could be read (warnings do not count)."""
        return not self.bad

    def _class_line(self) -> str:
        """The per-class counts in one line; with many classes only the smallest and the largest."""
        counts = self.class_counts
        if len(counts) <= _LISTED_CLASSES:
            return ", ".join(f"{c} {n}" for c, n in counts.items())
        low, high = min(counts, key=counts.get), max(counts, key=counts.get)
        return f"{counts[low]} ({low}) to {counts[high]} ({high}) images per class"

    def summary(self) -> str:
        """A few lines for a person: what was read, the counts, every bad file, the warnings, a verdict."""
        where = f" at {self.root}" if self.root is not None else ""
        lines = [f"{self.name} {self.split}{where}: {self.count} images, {len(self.class_counts)} classes"]
        if self.class_counts:
            lines.append(f"  per class: {self._class_line()}")
        if self.unlabeled:
            lines.append(f"  unlabeled: {self.unlabeled}")
        if self.bad:
            lines.append(f"{len(self.bad)} bad file(s):")
            lines += [f"  {file}: {error}" for file, error in self.bad]
        lines += [f"warning: {w}" for w in self.warnings]
        lines.append("OK" if self.ok else f"NOT OK: {len(self.bad)} file(s) cannot be read")
        return "\n".join(lines)


def _check_image_folder(split: str, root: str | os.PathLike | None) -> DatasetReport:
    """Decode every image of ``<root>/<split>``; collect the failures and the empty class folders."""
    folder = _split_folder(split, root)
    classes, samples, empty = _scan_class_folders(folder, IMAGE_EXTENSIONS)
    bad = []
    for path, _ in samples:
        try:
            read_image(path)
        except DatasetCorruptError as err:
            cause = err.__cause__ or err
            bad.append((str(path), f"{type(cause).__name__}: {cause}"))
    per_label = Counter(label for _, label in samples)
    warnings = (
        [f"class folder(s) {empty} of {folder} hold no images ({', '.join(IMAGE_EXTENSIONS)})"] if empty else []
    )
    class_counts = {c: per_label[i] for i, c in enumerate(classes)}
    return DatasetReport("imagefolder", split, folder, len(samples), class_counts, bad, warnings)


def _check_in_memory(name: str, split: str, root: str | os.PathLike | None) -> DatasetReport:
    """Load the split without downloading (the loaders check the structure) and count its labels."""
    where = None if name == "synthetic" else data_root(root)
    try:
        ds = load_dataset(name, split=split, root=root, **({} if name == "synthetic" else {"download": False}))
    except DatasetCorruptError as err:
        file = where / ARCHIVES[name].folder if name in ARCHIVES else where
        return DatasetReport(name, split, where, 0, {}, [(str(file), str(err))])
    labels = ds.labels
    counts = torch.bincount(labels[labels >= 0], minlength=len(ds.classes)).tolist()
    class_counts = dict(zip(ds.classes, counts))
    return DatasetReport(ds.name, split, where, len(ds), class_counts, unlabeled=int((labels < 0).sum()))


def check_dataset(name: str, split: str = "train", root: str | os.PathLike | None = None) -> DatasetReport:
    """Check one split of a dataset before training and return a :class:`DatasetReport`.

    ``imagefolder``: every file under ``<root>/<split>/<class>/`` whose extension is an image's is
    decoded with :func:`~contrastive_lab.data.read_image`; each one that fails is listed in ``bad``
    as (path, error) and the check goes on; class folders with no images are warnings. ``cifar10``,
    ``cifar100``, ``stl10``, ``synthetic``: the split is loaded (``download=False``), which checks
    the structure of its files, and counted; a corrupt file gives one ``bad`` entry. A missing
    dataset raises :class:`~contrastive_lab.data.DatasetNotFoundError` with the loader's
    instructions, an unknown name or split a ValueError listing the valid ones.
    """
    if name == "imagefolder":
        return _check_image_folder(split, root)
    return _check_in_memory(name, split, root)
