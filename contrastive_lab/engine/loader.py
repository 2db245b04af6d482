"""Batches of views for ImageFolder-style data (ImageNet, Imagenette, your photos): persistent
DataLoader workers decode the files. Chapter 13 explains the sharding; in-memory datasets use
``engine.batches`` instead.

**Sharding.** Epoch ``e`` is the permutation ``epoch_order(n, seed, e)``, the same on every rank;
global batch ``s`` is a contiguous block of it and rank ``r`` takes its slice
(:class:`EpochBatchSampler`). ``DistributedSampler(shuffle=True, seed=seed, drop_last=True)`` with
``set_epoch(e)`` does the same job: a fresh permutation per epoch that all ranks agree on, cut into
disjoint per-rank shards that cover the epoch once. It differs in *how* it cuts: it strides the
whole epoch (rank ``r`` gets ``perm[r::W]``), so which images meet in a global batch depends on W.
Here global batch ``s`` holds the same images for any W (W ranks reproduce one process, and a run
may resume on another number of GPUs), and an epoch can begin at step ``start`` (exact mid-epoch
resume; DistributedSampler always starts an epoch from the top).

**Views.** ``gpu_views=False``: each worker runs the per-image torchvision pipeline of every view,
seeded per image (:class:`SeededViews`). ``gpu_views=True``: workers only decode and resize to a
fixed ``decode_size`` square of uint8 (shorter side, centre crop: 4x less to copy than float); the
batch goes to the device (pinned memory, non-blocking copy) and :class:`BatchedViews` draws the
views there, with parameters drawn for the *global* batch from a generator seeded by ``(seed,
epoch, step)`` and sliced per rank, as ``engine.batches`` does. The crops then come from the central
square of each image, a small departure from the per-image pipeline.

All randomness derives from ``(seed, epoch, index or step)``: there is no state to save for resume.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import Tensor
from torchvision.transforms import v2

from ..config import Config
from ..methods import Batch
from ..views import BatchedViews, ViewRecipe, build_torchvision_pipeline
from .batches import epoch_order, slice_params


def sample_seed(seed: int, epoch: int, index: int) -> int:
    """The RNG seed of image ``index``'s views in epoch ``epoch`` (or of global batch ``index``).

    A function of these three numbers only, so the views an image gets do not depend on which
    worker or rank decodes it, on how many there are, or on where a run was resumed.
    """
    return ((seed * 1_000_003 + epoch) * 2_654_435_761 + index) % (2**63)


class SeededViews(torch.utils.data.Dataset):
    """``ds[(epoch, i)] = (*views, label, i)`` for item ``i`` of ``dataset``, reproducibly random.

    ``transforms`` (torchvision v2 pipelines, one per view) draw from torch's global RNG; it is
    seeded with :func:`sample_seed` inside ``fork_rng``, so the caller's RNG stream is left alone
    (which matters with ``num_workers=0``, where this runs in the training process). Two views of a
    contrastive method are two independent draws (SimCLR Alg. 1); classifiers and the fixed decode of
    ``gpu_views`` take one.
    """

    def __init__(self, dataset, transforms: list, seed: int):
        if not transforms:
            raise ValueError("SeededViews needs at least one transform (one per view)")
        self.dataset, self.transforms, self.seed = dataset, list(transforms), seed

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: tuple[int, int]):
        epoch, index = key
        image, label = self.dataset[index]
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(sample_seed(self.seed, epoch, index))
            views = [transform(image) for transform in self.transforms]
        return (*views, label, index)


class EpochBatchSampler:
    """This rank's part of every global batch of an epoch, as ``(epoch, index)`` keys.

    Global batch ``s`` of epoch ``e`` is ``epoch_order(n, seed, e)[s*B:(s+1)*B]`` (drop_last) and
    rank ``r`` of ``W`` takes its contiguous slice ``[r*B/W, (r+1)*B/W)``. ``set_epoch(e, start)``
    plays the role of ``DistributedSampler.set_epoch`` (see the module docstring).
    """

    def __init__(self, num_items: int, batch_size: int, seed: int, rank: int, world: int):
        self.n, self.batch_size, self.seed = num_items, batch_size, seed
        self.lo, self.hi = rank * batch_size // world, (rank + 1) * batch_size // world
        self.steps = num_items // batch_size
        self.epoch, self.start = 0, 0

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        self.epoch, self.start = epoch, start

    def __len__(self) -> int:
        return self.steps - self.start

    def __iter__(self):
        order = epoch_order(self.n, self.seed, self.epoch).tolist()
        for step in range(self.start, self.steps):
            first = step * self.batch_size
            yield [(self.epoch, i) for i in order[first + self.lo : first + self.hi]]


def decode_transform(size: int):
    """uint8 image -> uint8 ``size x size``: resize the shorter side to ``size``, centre crop (gpu_views)."""
    return v2.Compose([v2.Resize(size, antialias=True), v2.CenterCrop(size)])


class LoaderBatches:
    """ImageFolder batches through persistent DataLoader workers (see the module docstring)."""

    def __init__(self, dataset, recipes: list[ViewRecipe], cfg: Config, rank: int, world: int, device=None,
                 with_labels: bool = False, native: bool | None = None):
        self.cfg, self.rank, self.world, self.with_labels = cfg, rank, world, with_labels
        self.device = torch.device(device) if device is not None else torch.device("cpu")
        self.gpu_views = cfg.gpu_views
        if cfg.gpu_views:
            self.decode_size = cfg.decode_size or cfg.image_size * 8 // 7
            self.views = [BatchedViews(r, native=native) for r in recipes]
            self.dataset = SeededViews(dataset, [decode_transform(self.decode_size)], cfg.seed)
        else:
            self.dataset = SeededViews(dataset, [build_torchvision_pipeline(r) for r in recipes], cfg.seed)
        self.sampler = EpochBatchSampler(len(dataset), cfg.batch_size, cfg.seed, rank, world)
        self.lo, self.hi = self.sampler.lo, self.sampler.hi
        self.loader = None  # built on first use; its workers then live for the whole run

    def __len__(self) -> int:
        return len(self.dataset) // self.cfg.batch_size

    def _build_loader(self) -> torch.utils.data.DataLoader:
        workers = self.cfg.num_workers
        return torch.utils.data.DataLoader(
            self.dataset,
            batch_sampler=self.sampler,
            num_workers=workers,
            pin_memory=self.device.type == "cuda",
            persistent_workers=workers > 0,
            prefetch_factor=4 if workers > 0 else None,
            generator=torch.Generator().manual_seed(self.cfg.seed),  # keeps torch's global RNG untouched
        )

    def epoch(self, epoch: int, start: int = 0) -> Iterator[Batch]:
        self.sampler.set_epoch(epoch, start)
        self.loader = self.loader or self._build_loader()
        for step, batch in enumerate(self.loader, start):
            *views, labels, index = batch
            if self.gpu_views:
                images = views[0].to(self.device, non_blocking=True)
                g = torch.Generator().manual_seed(sample_seed(self.cfg.seed + 7919, epoch, step))
                views = [self._view(v, images, g) for v in self.views]
            yield Batch(list(views), index, labels if self.with_labels else None)

    def _view(self, views: BatchedViews, images: Tensor, generator: torch.Generator) -> Tensor:
        size = self.decode_size
        params = views.sample_params(self.cfg.batch_size, size, size, generator, device=images.device)
        return views.apply(images, slice_params(params, self.lo, self.hi))
