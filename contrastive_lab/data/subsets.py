"""Labelled subsets for semi-supervised evaluation: a class-balanced fraction, or a list of file names.

Holds :func:`label_subset` (a seeded, class-balanced random fraction of the examples, nested across
fractions), :func:`read_subset_file` and :func:`resolve_subset_file` (SimCLR's ``1percent.txt`` /
``10percent.txt`` lists of ImageNet file names), :class:`LabelledSubset` (the selected items of an
ImageFolder-style dataset) and :func:`select_labelled`, which picks the labelled training images of a
``method=linear|finetune`` run by either rule (Chen et al. 2020, Sec. 6 and App. B.5). No chapter
teaches it yet; the fine-tuning presets (``finetune-simclr-imagenet-1pct`` / ``-10pct``) and
``evaluate.finetune`` use it.
"""

from __future__ import annotations

import numbers
import os
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from . import download


def _as_class_labels(labels: Any) -> Tensor:
    """``labels`` as a CPU int64 vector of class indices: 1-D, integer, none negative."""
    y = torch.as_tensor(labels)
    if y.ndim != 1 or y.dtype.is_floating_point or y.dtype == torch.bool:
        raise ValueError(f"labels must be a 1-D integer tensor, got {y.dtype} of shape {tuple(y.shape)}.")
    y = y.long().cpu()
    if len(y) and y.min() < 0:
        raise ValueError(f"labels contains negative class {int(y.min())}; labels must be 0..num_classes-1.")
    return y


def label_subset(labels: Any, fraction: float, seed: int = 0, per_class: bool = True) -> Tensor:
    """Sorted indices of a random ``fraction`` of the examples, class-balanced by default.

    ``per_class=True``: from each class with n_c examples keep round(fraction x n_c) (half rounds up,
    at least 1), like SimCLR's 1% / 10% ImageNet subsets "sampled in a class-balanced way" (Sec 6;
    SimCLR ships fixed subset files, here the subset is drawn from ``seed``). ``per_class=False``: a
    uniform random subset of round(fraction x N) examples. Each class (or the whole set) is shuffled
    once with the seed and a prefix is kept, so for one seed smaller fractions are subsets of larger ones.
    """
    labels = _as_class_labels(labels)
    if len(labels) == 0:
        raise ValueError("labels is empty; there is nothing to subsample.")
    if isinstance(fraction, bool) or not (isinstance(fraction, numbers.Real) and 0 < fraction <= 1):
        raise ValueError(f"fraction must be in (0, 1], got {fraction!r} (e.g. 0.01 for the 1% subset).")
    generator = torch.Generator().manual_seed(seed)
    keep = lambda n: max(1, int(fraction * n + 0.5))
    if not per_class:
        return torch.randperm(len(labels), generator=generator)[: keep(len(labels))].sort().values
    picked = []
    for c in labels.unique(sorted=True):
        members = (labels == c).nonzero().flatten()
        picked.append(members[torch.randperm(len(members), generator=generator)][: keep(len(members))])
    return torch.cat(picked).sort().values


def read_subset_file(path: str | os.PathLike) -> list[str]:
    """Image file names, one per line: SimCLR's ``1percent.txt`` / ``10percent.txt`` (Chen et al. 2020,
    Sec. 6; e.g. ``n01440764_10026.JPEG``). Blank lines and ``#`` comments are skipped."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no label subset file at {path}")
    lines = [line.split("#", 1)[0].strip() for line in path.read_text().splitlines()]
    names = [line for line in lines if line]
    if not names:
        raise ValueError(f"{path} lists no image file names; expected one name per line (n01440764_10026.JPEG)")
    return names


def resolve_subset_file(subset_file: str | os.PathLike, data_root: str | os.PathLike | None = None) -> Path:
    """``subset_file`` as given (absolute, or relative to the working directory), else under the data
    root (:func:`~contrastive_lab.data.data_root` of ``data_root``)."""
    given = Path(subset_file).expanduser()
    candidates = [given] if given.is_absolute() else [given, download.data_root(data_root) / given]
    for path in candidates:
        if path.is_file():
            return path
    raise FileNotFoundError(
        f"label_subset_file {str(subset_file)!r} not found (looked at {', '.join(map(str, candidates))}); "
        "SimCLR's lists are imagenet_subsets/1percent.txt and 10percent.txt in google-research/simclr"
    )


class LabelledSubset:
    """The items of an ImageFolder-style dataset at ``indices`` (same classes and item format)."""

    def __init__(self, dataset: Any, indices: list[int]) -> None:
        self.dataset, self.indices = dataset, list(indices)
        self.classes, self.labels = dataset.classes, dataset.labels[self.indices]
        self.samples = [dataset.samples[i] for i in self.indices]
        self.name, self.split = dataset.name, getattr(dataset, "split", "train")

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> Any:
        return self.dataset[self.indices[i]]


def _indices_by_file_name(dataset: Any, path: Path) -> list[int]:
    """Sorted indices of the ``dataset.samples`` whose file names the subset file at ``path`` lists."""
    names = read_subset_file(path)
    by_name: dict[str, list[int]] = {}
    for i, (file, _) in enumerate(dataset.samples):
        by_name.setdefault(Path(file).name, []).append(i)
    missing = [n for n in names if n not in by_name]
    if missing:
        split = getattr(dataset, "split", "train")
        raise ValueError(
            f"{len(missing)} of the {len(names)} names in {path} are not in the {split} images "
            f"(e.g. {missing[:3]}); is it the subset file of this dataset?"
        )
    ambiguous = [n for n in names if len(by_name[n]) > 1]
    if ambiguous:
        raise ValueError(f"file names {ambiguous[:3]} occur in several class folders; cannot select by name")
    return sorted({by_name[n][0] for n in names})


def select_labelled(
    dataset: Any,
    *,
    fraction: float = 1.0,
    subset_file: str | os.PathLike | None = None,
    seed: int = 0,
    data_root: str | os.PathLike | None = None,
) -> Any:
    """The labelled training images of a classifier run: the files named in ``subset_file`` (by file
    name, as SimCLR's subset lists; found as given or under ``data_root``), or a class-balanced
    ``fraction`` (:func:`label_subset`, drawn from ``seed``), or all of them (``dataset`` itself).

    An in-memory dataset gives an :class:`~contrastive_lab.data.ImageTensorDataset` of the chosen
    images, an ImageFolder-style one a :class:`LabelledSubset`. Selecting by file name needs the
    ``samples`` (path, label) list of an ImageFolder; asking for both rules at once is an error.
    """
    if subset_file and fraction < 1:
        raise ValueError("set label_subset_file or label_fraction, not both")
    if subset_file:
        if not hasattr(dataset, "samples"):
            raise ValueError(
                f"label_subset_file selects images by file name, which needs dataset=imagefolder; "
                f"for {getattr(dataset, 'name', type(dataset).__name__)} use label_fraction "
                f"(e.g. label_fraction=0.01)"
            )
        indices = _indices_by_file_name(dataset, resolve_subset_file(subset_file, data_root))
    elif fraction < 1:
        indices = label_subset(dataset.labels, fraction, seed=seed).tolist()
    else:
        return dataset
    if hasattr(dataset, "images"):
        return dataset.subset(indices)  # extras (e.g. caption tokens) stay aligned
    return LabelledSubset(dataset, indices)
