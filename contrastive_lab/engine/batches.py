"""Batches of views for in-memory datasets (CIFAR, STL-10, synthetic): the data lives on the device
as one uint8 tensor, each step indexes a batch and draws the views of every image in one call.
No DataLoader workers fight the model for a laptop's two cores. (Chapter 05; ImageFolder data
streams through ``engine.loader`` instead.)

**Exact resume.** The batch order of epoch e is a permutation drawn from ``seed`` and ``e`` only
(:func:`epoch_order`), and the views come from one CPU generator whose state the checkpoint saves,
so a resumed run replays the same batches and the same views: 2 epochs straight equal 1 epoch +
resume + 1 epoch, bit for bit (on the CPU).

**Ranks.** Each rank takes its contiguous slice of every global batch (``rank * B/W : (rank+1) *
B/W``). The view parameters are drawn for the *global* batch from a generator every rank seeds
alike (cheap: a few numbers per image), and each rank applies its slice. So W ranks see exactly
the views one process would see, which makes multi-process runs comparable (and testable) against
a single process.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

import torch
from torch import Tensor

from ..config import Config
from ..methods import Batch
from ..views import BatchedViews, ViewParams, ViewRecipe


def check_batch_split(cfg: Config, world: int, num_images: int) -> None:
    """The one check of how a global batch splits: over ``world`` ranks, each rank's part into
    ``accum_steps`` micro-batches, and at least one full batch in the ``num_images`` training images."""
    if cfg.batch_size % world or (cfg.batch_size // world) % cfg.accum_steps:
        raise ValueError(
            f"batch_size={cfg.batch_size} must split into {world} ranks x accum_steps={cfg.accum_steps} "
            "equal micro-batches"
        )
    if cfg.batch_size > num_images:
        raise ValueError(f"batch_size={cfg.batch_size} exceeds the {num_images} training images (no full batch); "
                         "lower batch_size")


def training_images(cfg: Config, dataset):
    """The images a run trains on: the training split, cut to its first ``subset`` images for
    in-memory datasets (the one place ``subset`` is applied)."""
    if cfg.subset and hasattr(dataset, "images") and cfg.subset < len(dataset):
        return dataset.subset(range(cfg.subset))
    return dataset


def epoch_order(num_items: int, seed: int, epoch: int) -> Tensor:
    """The shuffled order of epoch ``epoch``: a permutation drawn from ``seed`` and ``epoch`` only.

    Deriving it (instead of carrying a generator along) is what makes a mid-epoch resume exact.
    """
    g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return torch.randperm(num_items, generator=g)


def slice_params(params: ViewParams, start: int, stop: int) -> ViewParams:
    """Rows ``start:stop`` of a batch's view parameters."""
    return ViewParams(**{f.name: getattr(params, f.name)[start:stop] for f in dataclasses.fields(params)})


class TensorBatches:
    """This rank's part of every global batch of an in-memory dataset, with one view per recipe.

    ``epoch(e, start)`` yields :class:`~contrastive_lab.methods.Batch` objects from step ``start`` on;
    ``generator`` is the views' random state (saved in checkpoints). ``with_labels``: put the class
    labels in the batch (only for methods that need them). A dataset's ``extras`` (a dict of tensors
    with one row per image, e.g. caption tokens) come along, sliced like the images.
    """

    def __init__(self, dataset, recipes: list[ViewRecipe], cfg: Config, device, rank: int, world: int,
                 with_labels: bool = False, native: bool | None = None):
        self.images, self.labels = dataset.images.to(device), dataset.labels.to(device)
        self.extras = {k: v.to(device) for k, v in getattr(dataset, "extras", {}).items()}  # e.g. caption tokens
        self.views = [BatchedViews(r, native=native) for r in recipes]
        self.cfg, self.rank, self.world, self.with_labels = cfg, rank, world, with_labels
        self.generator = torch.Generator().manual_seed(cfg.seed * 7919)

    def __len__(self) -> int:
        return len(self.images) // self.cfg.batch_size  # drop_last: every step has a full batch

    def epoch(self, epoch: int, start: int = 0) -> Iterator[Batch]:
        order = epoch_order(len(self.images), self.cfg.seed, epoch)
        size = self.cfg.batch_size
        lo, hi = self.rank * size // self.world, (self.rank + 1) * size // self.world
        for step in range(start, len(self)):
            index = order[step * size : (step + 1) * size][lo:hi].to(self.images.device)
            images = self.images[index]
            views = [self._view(v, images, lo, hi) for v in self.views]
            yield Batch(views, index, self.labels[index] if self.with_labels else None,
                        {k: v[index] for k, v in self.extras.items()})

    def _view(self, views: BatchedViews, images: Tensor, lo: int, hi: int) -> Tensor:
        height, width = images.shape[-2:]
        params = views.sample_params(self.cfg.batch_size, height, width, self.generator, device=images.device)
        return views.apply(images, slice_params(params, lo, hi) if self.world > 1 else params)
