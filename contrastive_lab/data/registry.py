"""One entry point by name: :data:`DATASETS` maps each dataset's name to its loader, :func:`load_dataset`.

Names: ``cifar10``, ``cifar10_captions`` (CIFAR-10 with generated captions, :mod:`.captions`),
``cifar100``, ``stl10``, ``synthetic`` and ``imagefolder``; the engine and the CLI
load every run's data through :func:`load_dataset` (``dataset=`` in a config). It sits in its own
module, below the package ``__init__``, so that :mod:`~contrastive_lab.data.check` can use it without
an import circle. Chapter 00 introduces the datasets it names.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from .captions import load_cifar10_captions
from .cifar import load_cifar10, load_cifar100
from .folder import _load_image_folder
from .stl10 import load_stl10
from .synthetic import make_synthetic

DATASETS: dict[str, Callable[..., Any]] = {
    "cifar10": load_cifar10,
    "cifar10_captions": load_cifar10_captions,
    "cifar100": load_cifar100,
    "stl10": load_stl10,
    "synthetic": make_synthetic,
    "imagefolder": _load_image_folder,
}


def load_dataset(
    name: str, split: str = "train", root: str | os.PathLike | None = None, **kwargs: Any
) -> Any:
    """Load a dataset by name: ``cifar10``, ``cifar10_captions``, ``cifar100``, ``stl10``, ``synthetic``
    or ``imagefolder``.

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
