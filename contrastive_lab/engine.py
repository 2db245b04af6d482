"""The training engine: one loop for every method, on a CPU, one GPU, or many GPUs under torchrun.

Read :func:`train` top to bottom: it is the whole algorithm. Everything else here is a small
helper it calls. The design choices, and why:

* **Data on the device.** CIFAR-sized datasets live as one uint8 tensor on the device; each step
  indexes a batch and :class:`~contrastive_lab.augment.BatchedViews` draws two views for every
  image in one call. No DataLoader workers fight the model for a laptop's two cores.
  ImageFolder data (ImageNet) instead streams through persistent DataLoader workers, either with
  the per-image torchvision pipeline or (``gpu_views``) decoding to fixed-size uint8 and drawing
  the views in batches on the device (:class:`LoaderBatches`).
* **Exact resume.** The batch order of epoch e is a permutation drawn from ``seed + e``, and the
  view generator's state is saved, so a resumed run replays the same batches and the same views:
  2 epochs straight equal 1 epoch + resume + 1 epoch, bit for bit (on the CPU). ImageFolder
  views are seeded per image from (seed, epoch, index) instead (:func:`sample_seed`).
* **Safe checkpoints.** Written to a temporary file, flushed, then renamed over ``last.pt``: a
  crash or SIGKILL mid-write leaves the previous checkpoint intact. Loaded with
  ``weights_only=True``.
* **Failures are loud.** A non-finite loss stops the run with :class:`TrainingDiverged` before the
  bad update is applied, keeping the last good checkpoint. Ctrl-C finishes the current step,
  saves, and exits cleanly.
* **DDP, not a custom engine.** Under torchrun the method is wrapped in
  ``DistributedDataParallel``; ``batch_size`` is the *global* batch, split evenly over ranks, so
  the lr (computed from the global batch) does not depend on the number of GPUs. Rank 0 writes
  ``metrics.csv`` and checkpoints; every rank resumes from the same ``last.pt``. Where the global
  batch does not fit, ``accum_steps`` splits each rank's batch into micro-batches
  (:func:`forward_backward` says what that changes for NT-Xent).
* **Linear evaluation and fine-tuning** run through the same loop (``method=linear|finetune``,
  :class:`Classifier`), so ImageNet-scale evaluation gets DDP, checkpoints and resume too.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import math
import os
import signal
import sys
import time
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torchvision.transforms import v2

from . import distributed as dist_utils
from .augment import (
    BatchedViews,
    ViewParams,
    ViewRecipe,
    build_torchvision_pipeline,
    get_recipe,
    simclr_jitter,
)
from .data import ImageTensorDataset, data_root, load_dataset, make_synthetic
from .encoders import build_encoder, use_gemm_weight_grad_
from .evaluate import extract_features, knn_accuracy, label_subset, project_features
from .heads import IdentityHead
from .methods import build_method, encoder_kwargs
from .optim import build_optimizer, build_scheduler, scale_lr
from .presets import Config, _check_view_ops, parse_milestones, validate
from .runtime import autocast_dtype

CHECKPOINT_VERSION = 1


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the last good checkpoint was kept."""


# ----------------------------------------------------------------------------------------
# Checkpoints
# ----------------------------------------------------------------------------------------


def save_checkpoint(state: dict[str, Any], path: str | Path) -> Path:
    """Write ``state`` atomically: temp file in the same folder, fsync, then ``os.replace``.

    ``os.replace`` is atomic on POSIX and Windows, so readers see either the old file or the new
    one, never a half-written mix, even if the process is killed during the write.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint written by :func:`save_checkpoint` (``weights_only=True``: no code runs)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}; train first or pass the path to a last.pt file")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # truncated zip, wrong format, pickled code ...
        raise RuntimeError(f"cannot read checkpoint {path}: {err}. It is corrupt or not ours.") from err
    if not isinstance(state, dict) or state.get("version") != CHECKPOINT_VERSION:
        raise RuntimeError(f"{path} is not a contrastive_lab checkpoint (version {CHECKPOINT_VERSION})")
    return state


def config_from_checkpoint(state: dict[str, Any]) -> Config:
    return validate(Config(**state["config"]))


# ----------------------------------------------------------------------------------------
# Data
# ----------------------------------------------------------------------------------------


def load_split(cfg: Config, split: str):
    """The dataset named in the config (synthetic data is generated, others read from disk)."""
    if cfg.dataset == "synthetic":
        # generated at the size evaluation sees (the data's own size); the views resample it
        return make_synthetic(n=cfg.synthetic_size, image_size=cfg.evaluation_size(), seed=cfg.seed, split=split)
    return load_dataset(cfg.dataset, split=split, root=cfg.data_root)


def view_recipe(cfg: Config) -> ViewRecipe:
    """The config's view recipe at ``image_size`` (crop area from ``crop_min_scale`` and jitter
    from ``color_strength`` when > 0), with the ops not in ``view_ops`` switched off.

    Switching an op off sets it to its identity: crop -> the whole image (scale and aspect 1),
    flip/jitter/gray/blur -> probability 0. This is how SimCLR's composition study (Fig. 5)
    keeps one or two operations at a time.
    """
    keep = _check_view_ops(cfg.view_ops)
    off = {
        "crop": {"crop_scale": (1.0, 1.0), "crop_ratio": (1.0, 1.0)},
        "flip": {"flip_p": 0.0},
        "jitter": {"jitter_p": 0.0},
        "gray": {"gray_p": 0.0},
        "blur": {"blur_p": 0.0},
    }
    overrides: dict[str, Any] = {"size": cfg.image_size}
    if cfg.crop_min_scale > 0:
        overrides["crop_scale"] = (cfg.crop_min_scale, 1.0)
    if cfg.color_strength > 0:
        overrides["jitter"] = simclr_jitter(cfg.color_strength)
    for op, identity in off.items():
        if op not in keep:
            overrides.update(identity)
    return get_recipe(cfg.recipe, **overrides)


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
    """Batches of a uint8 image tensor held on the device, with two views drawn on the device.

    Each rank takes its contiguous slice of every global batch (``rank * B/W : (rank+1) * B/W``).
    The view parameters are drawn for the *global* batch from one CPU generator that every rank
    seeds alike (cheap: a few numbers per image), and each rank applies its slice. So W ranks
    see exactly the views one process would see, which makes multi-process runs comparable
    (and testable) against a single process.
    """

    def __init__(self, images: Tensor, labels: Tensor, views: BatchedViews, cfg: Config, device, rank, world):
        if cfg.batch_size % world:
            raise ValueError(f"batch_size={cfg.batch_size} must be divisible by the {world} processes")
        if cfg.batch_size > len(images):
            raise ValueError(
                f"batch_size={cfg.batch_size} exceeds the {len(images)} training images; lower batch_size"
            )
        self.images, self.labels = images.to(device), labels.to(device)
        self.views, self.cfg, self.rank, self.world = views, cfg, rank, world
        self.generator = torch.Generator().manual_seed(cfg.seed * 7919)

    def __len__(self) -> int:
        return len(self.images) // self.cfg.batch_size  # drop_last: every step has a full batch

    def epoch(self, epoch: int, start: int = 0) -> Iterator[tuple[Tensor, Tensor, Tensor, Tensor]]:
        order = epoch_order(len(self.images), self.cfg.seed, epoch)
        size = self.cfg.batch_size
        lo, hi = self.rank * size // self.world, (self.rank + 1) * size // self.world
        for step in range(start, len(self)):
            index = order[step * size : (step + 1) * size][lo:hi].to(self.images.device)
            batch = self.images[index]
            yield self._view(batch, lo, hi), self._view(batch, lo, hi), self.labels[index], index

    def _view(self, batch: Tensor, lo: int, hi: int) -> Tensor:
        height, width = batch.shape[-2:]
        params = self.views.sample_params(self.cfg.batch_size, height, width, self.generator, device=batch.device)
        return self.views.apply(batch, slice_params(params, lo, hi) if self.world > 1 else params)

    def rng_state(self) -> Tensor:
        return self.generator.get_state()

    def set_rng_state(self, state: Tensor) -> None:
        self.generator.set_state(state)


def sample_seed(seed: int, epoch: int, index: int) -> int:
    """The RNG seed of image ``index``'s views in epoch ``epoch`` (or of global batch ``index``).

    A function of these three numbers only, so the views an image gets do not depend on which
    worker or rank decodes it, on how many there are, or on where a run was resumed.
    """
    return ((seed * 1_000_003 + epoch) * 2_654_435_761 + index) % (2**63)


class SeededViews(torch.utils.data.Dataset):
    """``ds[(epoch, i)] = (*views, label, i)`` for item ``i`` of ``dataset``, reproducibly random.

    ``transform`` (a torchvision v2 pipeline) draws from torch's global RNG; it is seeded with
    :func:`sample_seed` inside ``fork_rng``, so the caller's RNG stream is left alone (which matters
    with ``num_workers=0``, where this runs in the training process). ``num_views`` is 2 for
    contrastive methods (two independent draws, SimCLR Alg. 1), 1 for classifiers and for the
    deterministic decode of ``gpu_views``.
    """

    def __init__(self, dataset, transform, seed: int, num_views: int = 2):
        if num_views not in (1, 2):
            raise ValueError(f"num_views must be 1 or 2, got {num_views}")
        self.dataset, self.transform, self.seed, self.num_views = dataset, transform, seed, num_views

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: tuple[int, int]):
        epoch, index = key
        image, label = self.dataset[index]
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(sample_seed(self.seed, epoch, index))
            views = [self.transform(image) for _ in range(self.num_views)]
        return (*views, label, index)


class EpochBatchSampler:
    """This rank's part of every global batch of an epoch, as ``(epoch, index)`` keys.

    Global batch ``s`` of epoch ``e`` is ``epoch_order(n, seed, e)[s*B:(s+1)*B]`` (drop_last) and
    rank ``r`` of ``W`` takes its contiguous slice ``[r*B/W, (r+1)*B/W)``. ``set_epoch(e, start)``
    plays the role of ``DistributedSampler.set_epoch`` (see :class:`LoaderBatches`).
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
    """ImageFolder-style data (ImageNet): persistent DataLoader workers decode the files.

    **Sharding.** Epoch ``e`` is the permutation ``epoch_order(n, seed, e)``, the same on every
    rank; global batch ``s`` is a contiguous block of it and rank ``r`` takes its slice
    (:class:`EpochBatchSampler`). ``DistributedSampler(shuffle=True, seed=seed, drop_last=True)``
    with ``set_epoch(e)`` does the same job: a fresh permutation per epoch that all ranks agree on,
    cut into disjoint per-rank shards that cover the epoch once. It differs in *how* it cuts: it
    strides the whole epoch (rank ``r`` gets ``perm[r::W]``), so which images meet in a global
    batch depends on W. Here global batch ``s`` holds the same images for any W (W ranks reproduce
    one process, and a run may resume on another number of GPUs), and an epoch can begin at step
    ``start`` (exact mid-epoch resume; DistributedSampler always starts an epoch from the top).

    **Views.** ``gpu_views=False``: each worker runs the per-image torchvision pipeline, seeded per
    image (:class:`SeededViews`). ``gpu_views=True``: workers only decode and resize to a fixed
    ``decode_size`` square of uint8 (shorter side, centre crop: 4x less to copy than float); the
    batch goes to the device (pinned memory, non-blocking copy) and :class:`BatchedViews` draws both
    views there, with parameters drawn for the *global* batch from a generator seeded by
    ``(seed, epoch, step)`` and sliced per rank, as :class:`TensorBatches` does. The crops then come
    from the central square of each image, a small departure from the per-image pipeline.

    All randomness derives from ``(seed, epoch, index or step)``: nothing to save for resume.
    """

    def __init__(self, dataset, cfg: Config, rank: int, world: int, device=None, num_views: int = 2):
        if cfg.batch_size % world:
            raise ValueError(f"batch_size={cfg.batch_size} must be divisible by the {world} processes")
        self.cfg, self.rank, self.world = cfg, rank, world
        self.device = torch.device(device) if device is not None else torch.device("cpu")
        self.num_views, self.gpu_views = num_views, cfg.gpu_views
        recipe = view_recipe(cfg)
        if cfg.gpu_views:
            self.decode_size = cfg.decode_size or cfg.image_size * 8 // 7
            self.views = BatchedViews(recipe)
            self.dataset = SeededViews(dataset, decode_transform(self.decode_size), cfg.seed, num_views=1)
        else:
            self.dataset = SeededViews(dataset, build_torchvision_pipeline(recipe), cfg.seed, num_views)
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

    def epoch(self, epoch: int, start: int = 0):
        self.sampler.set_epoch(epoch, start)
        self.loader = self.loader or self._build_loader()
        for step, batch in enumerate(self.loader, start):
            if not self.gpu_views:
                view1, *rest = batch
                yield (view1, view1, *rest) if self.num_views == 1 else batch
                continue
            images, labels, index = batch
            images = images.to(self.device, non_blocking=True)
            g = torch.Generator().manual_seed(sample_seed(self.cfg.seed + 7919, epoch, step))
            view1 = self._view(images, g)
            yield view1, (view1 if self.num_views == 1 else self._view(images, g)), labels, index

    def _view(self, images: Tensor, generator: torch.Generator) -> Tensor:
        size = self.decode_size
        params = self.views.sample_params(self.cfg.batch_size, size, size, generator, device=images.device)
        return self.views.apply(images, slice_params(params, self.lo, self.hi))

    def rng_state(self) -> Tensor:
        return torch.zeros(0, dtype=torch.uint8)

    def set_rng_state(self, state: Tensor) -> None:
        pass


def build_batches(cfg: Config, dataset, device, rank: int, world: int):
    """In-memory datasets -> :class:`TensorBatches`; ImageFolder-style ones -> :class:`LoaderBatches`."""
    if hasattr(dataset, "images"):
        views = BatchedViews(view_recipe(cfg))
        images, labels = dataset.images, dataset.labels
        if cfg.subset:
            images, labels = images[: cfg.subset], labels[: cfg.subset]
        return TensorBatches(images, labels, views, cfg, device, rank, world)
    return LoaderBatches(dataset, cfg, rank, world, device, num_views=1 if cfg.method in CLASSIFIERS else 2)


# ----------------------------------------------------------------------------------------
# Labelled subsets (semi-supervised fine-tuning)
# ----------------------------------------------------------------------------------------


def read_subset_file(path: str | Path) -> list[str]:
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


def resolve_subset_file(cfg: Config) -> Path:
    """``label_subset_file`` as given (absolute, or relative to the working directory), else under the data root."""
    given = Path(cfg.label_subset_file).expanduser()
    candidates = [given] if given.is_absolute() else [given, data_root(cfg.data_root) / given]
    for path in candidates:
        if path.is_file():
            return path
    raise FileNotFoundError(
        f"label_subset_file {cfg.label_subset_file!r} not found (looked at {', '.join(map(str, candidates))}); "
        "SimCLR's lists are imagenet_subsets/1percent.txt and 10percent.txt in google-research/simclr"
    )


class LabelledSubset:
    """The items of an ImageFolder-style dataset at ``indices`` (same classes and item format)."""

    def __init__(self, dataset, indices: list[int]):
        self.dataset, self.indices = dataset, list(indices)
        self.classes, self.labels = dataset.classes, dataset.labels[self.indices]
        self.samples = [dataset.samples[i] for i in self.indices]
        self.name, self.split = dataset.name, getattr(dataset, "split", "train")

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int):
        return self.dataset[self.indices[i]]


def select_labelled(dataset, cfg: Config):
    """The labelled training images of a classifier run: the files named in ``label_subset_file`` (by
    file name, as SimCLR's subset lists), or a class-balanced ``label_fraction``
    (:func:`~contrastive_lab.evaluate.label_subset`, drawn from ``cfg.seed``), or all of them."""
    if cfg.label_subset_file and cfg.label_fraction < 1:
        raise ValueError("set label_subset_file or label_fraction, not both")
    if cfg.label_subset_file:
        if not hasattr(dataset, "samples"):
            raise ValueError(
                f"label_subset_file selects images by file name, which needs dataset=imagefolder; "
                f"for {cfg.dataset} use label_fraction (e.g. label_fraction=0.01)"
            )
        path = resolve_subset_file(cfg)
        names = read_subset_file(path)
        by_name: dict[str, list[int]] = {}
        for i, (file, _) in enumerate(dataset.samples):
            by_name.setdefault(Path(file).name, []).append(i)
        missing = [n for n in names if n not in by_name]
        if missing:
            raise ValueError(
                f"{len(missing)} of the {len(names)} names in {path} are not in the {cfg.train_split} images "
                f"(e.g. {missing[:3]}); is it the subset file of this dataset?"
            )
        ambiguous = [n for n in names if len(by_name[n]) > 1]
        if ambiguous:
            raise ValueError(f"file names {ambiguous[:3]} occur in several class folders; cannot select by name")
        indices = sorted({by_name[n][0] for n in names})
    elif cfg.label_fraction < 1:
        indices = label_subset(dataset.labels, cfg.label_fraction, seed=cfg.seed).tolist()
    else:
        return dataset
    if hasattr(dataset, "images"):
        subset = ImageTensorDataset(
            dataset.images[indices], dataset.labels[indices], dataset.classes, dataset.name, dataset.split
        )
        return subset
    return LabelledSubset(dataset, indices)


# ----------------------------------------------------------------------------------------
# Evaluation during training
# ----------------------------------------------------------------------------------------


def eval_transform(cfg: Config):
    """uint8 images -> float, resized to ``eval_size`` (default: the training size), normalised like
    the training views.

    Random-resized-crop training magnifies objects (a crop of area fraction ``a`` is blown up by
    ``1/sqrt(a)``), so evaluating at a *larger* size than the views sees objects at the scale
    training saw them (Touvron et al. 2019, "FixRes", Sec. 3); ``eval_size`` allows that.
    """
    recipe = view_recipe(cfg)
    size = cfg.evaluation_size()
    mean = torch.tensor(recipe.mean).view(1, 3, 1, 1)
    std = torch.tensor(recipe.std).view(1, 3, 1, 1)

    def transform(x: Tensor) -> Tensor:
        x = x.float() / 255.0 if x.dtype == torch.uint8 else x
        if x.shape[-1] != size or x.shape[-2] != size:
            x = nn.functional.interpolate(x, size=(size, size), mode="bilinear", antialias=True)
        return (x - mean.to(x.device)) / std.to(x.device)

    return transform


def encode(encoder: nn.Module, images: Tensor, cfg: Config, device) -> Tensor:
    """Features h of uint8 images, preprocessed like the training views, in the run's precision."""
    transform, dtype = eval_transform(cfg), model_dtype(cfg)
    return extract_features(
        encoder, images, device=device, transform=lambda x: transform(x).to(dtype),
        autocast=cfg.precision not in ("fp32", "fp64"),
    )


def knn_eval(encoder: nn.Module, train_ds, test_ds, cfg: Config, device) -> float:
    """Weighted kNN top-1 (Wu et al. 2018; k=200, T=0.1) of the encoder's features h."""
    return knn_eval_hz(encoder, None, train_ds, test_ds, cfg, device)["h"]


def projects(head: nn.Module | None) -> bool:
    """True when a method's head g maps h to a different space z (not absent, not the identity)."""
    return head is not None and not isinstance(head, (nn.Identity, IdentityHead))


def knn_eval_hz(encoder: nn.Module, head: nn.Module | None, train_ds, test_ds, cfg: Config,
                device) -> dict[str, float]:
    """Weighted kNN top-1 on h = f(x) (key ``h``) and, when there is a head, on z = g(h) (key ``z``).

    The same protocol on both (Wu et al. 2018 Sec. 3.4: k=200, T=0.1, cosine). h is SimCLR's
    representation; z is the feature Wu et al.'s and MoCo's kNN monitors evaluate, whose networks end
    in the 128-d linear layer that our linear head is (``evaluate.project_features``).
    """
    train_images, train_labels = train_ds.images, train_ds.labels
    if cfg.subset:
        train_images, train_labels = train_images[: cfg.subset], train_labels[: cfg.subset]
    if cfg.knn_max_train and len(train_images) > cfg.knn_max_train:
        train_images, train_labels = train_images[: cfg.knn_max_train], train_labels[: cfg.knn_max_train]
    h_train = encode(encoder, train_images, cfg, device)
    h_test = encode(encoder, test_ds.images, cfg, device)
    return knn_h_and_z(h_train, train_labels, h_test, test_ds.labels, head, cfg)


def knn_h_and_z(h_train: Tensor, train_labels: Tensor, h_test: Tensor, test_labels: Tensor,
                head: nn.Module | None, cfg: Config) -> dict[str, float]:
    """The kNN of :func:`knn_eval_hz` on precomputed features h: {"h": ..., "z": ... if ``projects(head)``};
    k = min(``cfg.knn_k``, training images), T = ``cfg.knn_t``."""
    k = min(cfg.knn_k, len(h_train))
    features = {"h": (h_train, h_test)}
    if projects(head):
        features["z"] = (project_features(head, h_train), project_features(head, h_test))
    return {name: knn_accuracy(f_train, train_labels, f_test, test_labels, k=k, temperature=cfg.knn_t)
            for name, (f_train, f_test) in features.items()}


# ----------------------------------------------------------------------------------------
# Linear evaluation and fine-tuning (method=linear | finetune)
# ----------------------------------------------------------------------------------------

CLASSIFIERS = ("linear", "finetune")


class Classifier(nn.Module):
    """A linear classifier ``fc`` on the features h of an encoder f: linear evaluation (``freeze``) or
    fine-tuning of the whole network, trained by the engine like any method.

    Linear evaluation (SimCLR Sec. 2.3 / App. B.6; MoCo Sec. 4.1): f is frozen, no gradient reaches
    it and its BN stays in eval mode (running statistics, as MoCo's ``main_lincls.py``), only
    ``fc`` learns. Fine-tuning (SimCLR Sec. 6 / App. B.5): f and ``fc`` learn together. The loss is
    the cross-entropy of ``fc(f(x))`` with the labels; ``fc`` starts at zero (SimCLR's
    ``zero_init_logits_layer``). The engine passes the labels where contrastive methods get the
    dataset indices (``uses_labels``); the second view is not used.
    """

    uses_labels = True
    log_keys = ("train_top1", "val_top1")

    def __init__(self, encoder: nn.Module, num_classes: int, freeze: bool):
        super().__init__()
        if num_classes < 2:
            raise ValueError(f"a classifier needs at least 2 classes, got {num_classes}")
        self.encoder, self.freeze = encoder, freeze
        self.fc = nn.Linear(encoder.feature_dim, num_classes)
        nn.init.zeros_(self.fc.weight)
        nn.init.zeros_(self.fc.bias)
        if freeze:
            self.encoder.requires_grad_(False)

    def train(self, mode: bool = True) -> Classifier:
        super().train(mode)
        if self.freeze:
            self.encoder.eval()  # frozen BN statistics
        return self

    def logits(self, x: Tensor) -> Tensor:
        if self.freeze:
            with torch.no_grad():
                h = self.encoder(x)
        else:
            h = self.encoder(x)
        return self.fc(h.to(self.fc.weight.dtype))  # bf16 under autocast -> float32 (float64 under fp64)

    def forward(self, view1: Tensor, view2: Tensor | None = None, labels: Tensor | None = None):
        if labels is None:
            raise ValueError("Classifier needs the labels of the batch (the engine passes them as the 3rd argument)")
        logits = self.logits(view1)
        loss = nn.functional.cross_entropy(logits, labels)
        top1 = (logits.detach().argmax(1) == labels).float().mean()
        return loss, {"loss": loss.detach(), "train_top1": top1}


def load_pretrained_encoder(path: str | Path) -> tuple[nn.Module, Config]:
    """The encoder f of a pre-training checkpoint (any method: its ``encoder.*`` weights) and its config."""
    state = load_checkpoint(path)
    pre = config_from_checkpoint(state)
    encoder = build_encoder(pre.encoder, **encoder_kwargs(pre))
    weights = {k[len("encoder.") :]: v for k, v in state["method"].items() if k.startswith("encoder.")}
    if not weights:
        raise RuntimeError(f"{path} holds no encoder.* weights; is it a contrastive_lab training checkpoint?")
    encoder.load_state_dict(weights)
    return encoder, pre


def build_classifier(cfg: Config, num_classes: int) -> Classifier:
    """:class:`Classifier` on the encoder of ``cfg.init_checkpoint`` (architecture from that checkpoint's
    config), or on an untrained ``cfg.encoder`` when ``init_checkpoint=random`` (the baseline)."""
    if not cfg.init_checkpoint:
        raise ValueError(
            f"method={cfg.method} evaluates a pre-trained encoder: set init_checkpoint=RUN/checkpoints/last.pt "
            "(or init_checkpoint=random for the random-encoder baseline)"
        )
    if cfg.init_checkpoint == "random":
        encoder = build_encoder(cfg.encoder, **encoder_kwargs(cfg))
    else:
        encoder, _ = load_pretrained_encoder(cfg.init_checkpoint)
    return Classifier(encoder, num_classes, freeze=cfg.method == "linear")


def center_crop_pipeline(cfg: Config):
    """Test-time preprocessing of ImageFolder images: resize the shorter side to 8/7 of the
    evaluation size (``eval_size`` or ``image_size``; 256 for 224), centre crop, normalise
    (SimCLR App. B.5; MoCo ``main_lincls.py``)."""
    recipe = view_recipe(cfg)
    size = cfg.evaluation_size()
    return v2.Compose([
        v2.Resize(size * 8 // 7, antialias=True),
        v2.CenterCrop(size),
        v2.ToDtype(torch.float32, scale=True),
        v2.Normalize(mean=list(recipe.mean), std=list(recipe.std)),
    ])


class _Transformed(torch.utils.data.Dataset):
    def __init__(self, dataset, transform, indices):
        self.dataset, self.transform, self.indices = dataset, transform, indices

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int):
        image, label = self.dataset[self.indices[i]]
        return self.transform(image), label


@torch.no_grad()
def classifier_top1(method: Classifier, test_ds, cfg: Config, device, rank: int, world: int) -> float:
    """Top-1 accuracy of ``fc(f(x))`` on the test split. Rank r scores items r, r+W, r+2W, ...;
    the (correct, total) counts are summed over ranks, so every rank returns the same number."""
    method.eval()
    indices = list(range(rank, len(test_ds), world))
    batch = max(1, min(256, cfg.batch_size // world))
    if hasattr(test_ds, "images"):
        transform = eval_transform(cfg)
        batches = (
            (transform(test_ds.images[chunk].to(device)), test_ds.labels[chunk])
            for chunk in torch.tensor(indices, dtype=torch.long).split(batch)
        )
    else:
        batches = torch.utils.data.DataLoader(
            _Transformed(test_ds, center_crop_pipeline(cfg), indices), batch_size=batch,
            num_workers=cfg.num_workers, pin_memory=device.type == "cuda", generator=torch.Generator(),
        )
    amp = resolve_precision(cfg, device)
    counts = torch.zeros(2, dtype=torch.float64, device=device)
    for x, y in batches:
        with torch.autocast(device.type, dtype=amp, enabled=amp is not None):
            logits = method.logits(x.to(device, model_dtype(cfg), non_blocking=True))
        counts[0] += (logits.argmax(1).cpu() == y).sum().item()
        counts[1] += len(y)
    if dist_utils.is_distributed():
        torch.distributed.all_reduce(counts)
    return float(counts[0] / counts[1].clamp(min=1))


# ----------------------------------------------------------------------------------------
# Logging
# ----------------------------------------------------------------------------------------

METRIC_FIELDS = ["step", "epoch", "time_s", "lr", "loss", "images_per_s", "gpu_mem_gb", "knn_top1", "knn_top1_z"]


class MetricsLog:
    """Appends rows to ``metrics.csv``; on resume, rows after the resumed step are dropped."""

    def __init__(self, path: Path, resume_step: int | None, extra: list[str] | None = None):
        self.path = path
        self.fields = METRIC_FIELDS + [k for k in (extra or []) if k not in METRIC_FIELDS]
        rows = []
        if resume_step is not None and path.exists():
            with open(path, newline="") as f:
                rows = [r for r in csv.DictReader(f) if int(r["step"]) <= resume_step]
        with open(path, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=self.fields, extrasaction="ignore")
            writer.writeheader()
            writer.writerows(rows)
        self.tb = None

    def write(self, row: dict[str, Any]) -> None:
        with open(self.path, "a", newline="") as f:
            csv.DictWriter(f, fieldnames=self.fields, extrasaction="ignore").writerow(row)
        if self.tb is not None:
            for key, value in row.items():
                if key != "step" and isinstance(value, (int, float)):
                    self.tb.add_scalar(key, value, row["step"])


def read_metrics(path: str | Path) -> list[dict[str, float]]:
    """metrics.csv as a list of dicts of floats (empty cells left out)."""
    with open(path, newline="") as f:
        return [{k: float(v) for k, v in row.items() if v not in ("", None)} for row in csv.DictReader(f)]


# ----------------------------------------------------------------------------------------
# Setup helpers
# ----------------------------------------------------------------------------------------


def resolve_device(cfg: Config, local_rank: int) -> torch.device:
    if cfg.device == "auto":
        return torch.device(f"cuda:{local_rank}") if torch.cuda.is_available() else torch.device("cpu")
    if cfg.device.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError("device=cuda was requested but no CUDA GPU is visible; use device=cpu or auto")
    return torch.device(cfg.device)


def resolve_precision(cfg: Config, device: torch.device) -> torch.dtype | None:
    """None = fp32. ``auto`` picks bf16 where the hardware runs it natively (runtime.autocast_dtype)."""
    if cfg.precision == "auto":
        return autocast_dtype(device)
    if cfg.precision == "fp16" and device.type == "cpu":
        raise ValueError("precision=fp16 is for GPUs; on the CPU use bf16 (if supported) or fp32")
    return {"fp32": None, "fp64": None, "bf16": torch.bfloat16, "fp16": torch.float16}[cfg.precision]


def model_dtype(cfg: Config) -> torch.dtype:
    """The dtype of the weights, buffers and views: float64 for ``precision=fp64``, else float32
    (bf16/fp16 run under autocast on float32 weights)."""
    return torch.float64 if cfg.precision == "fp64" else torch.float32


def resolve_lr(cfg: Config) -> float:
    """An explicit ``lr`` wins; else SimCLR's rule, base_lr x B/256 (App. B.1), on the global batch."""
    return cfg.lr if cfg.lr > 0 else scale_lr(cfg.base_lr, cfg.batch_size, rule=cfg.lr_scaling)


class StepDecay:
    """Picklable lr multiplier: linear warmup over ``warmup_steps``, then x``gamma`` at each milestone
    step (MoCo Sec. 4.1, ``main_lincls.py``: lr x0.1 at epochs 60 and 80)."""

    def __init__(self, milestones: list[int], warmup_steps: int = 0, gamma: float = 0.1):
        self.milestones, self.warmup_steps, self.gamma = list(milestones), warmup_steps, gamma

    def __call__(self, step: int) -> float:
        if step < self.warmup_steps:
            return (step + 1) / self.warmup_steps
        return self.gamma ** sum(step >= m for m in self.milestones)


def steps_that_fit(step: int, elapsed_s: float, seconds_per_step: float, budget_s: float,
                   margin: float = 0.03) -> int:
    """Length of a schedule that ends within a time budget, from the speed measured so far.

        T = t + floor((1 - margin) (B - e) / s)

    with t steps done in e seconds, s seconds per step (measured) and budget B; at least t + 1.
    The margin absorbs drift in the machine's speed; the time budget still stops the run if the
    estimate was too long. Why fit the schedule rather than cut it: a learning rate that decays to
    zero exactly at the budget beats a longer schedule cut off by it (Li, Yumer & Ramanan 2020,
    "Budgeted Training", ICLR, Sec. 4), and a cut-off cosine ends with the lr still high.
    """
    if not seconds_per_step > 0:
        raise ValueError(f"seconds_per_step must be > 0, got {seconds_per_step}")
    if not 0 <= margin < 1:
        raise ValueError(f"margin must be in [0, 1), got {margin}")
    left = max(budget_s - elapsed_s, 0.0) * (1 - margin)
    return step + max(int(left // seconds_per_step), 1)


class ScheduleFitter:
    """``fit_to_budget``: keeps a cosine schedule's length fitted to a time budget as the run goes.

    The first fit times steps ``first_from .. first_at`` (the warmup, whose lr does not depend on the
    schedule's length); then every ``every`` steps the length is fitted again from the mean speed,

        s = (e_t - e_{t0}) / (t - t0),   T = min(steps_that_fit(t, e_t, s, B), cap),

    with e_t the training seconds after step t and t0 = ``first_from``, because a machine's speed
    drifts: one fit from the first 40 steps of a benchmark
    run overestimated the run's speed by ~20 % and the budget cut the cosine at 84 % of its length.
    The mean over all steps so far, not the last epoch's speed, because that speed swung between 200
    and 330 ms per step from one epoch to the next on the development machine, and the schedule with
    it. Refitting stops once the run is past ``until`` of its schedule, so the last stretch keeps one
    decay and a resumed run (which keeps the saved length and never refits) matches a straight one.
    ``elapsed_s`` must exclude pauses such as kNN evaluation.
    """

    def __init__(self, budget_s: float, cap: int, first_from: int, first_at: int, every: int,
                 until: float = 0.8, margin: float = 0.03):
        if not budget_s > 0:
            raise ValueError(f"budget_s must be > 0, got {budget_s}")
        if not 0 <= first_from < first_at:
            raise ValueError(f"need 0 <= first_from < first_at, got {first_from}, {first_at}")
        if every < 1 or not 0 < until <= 1:
            raise ValueError(f"every must be >= 1 step and until in (0, 1], got every={every}, until={until}")
        self.budget_s, self.cap, self.every, self.until, self.margin = budget_s, cap, every, until, margin
        self.fit_from, self.fit_at, self.t_from = first_from, first_at, 0.0
        self.seconds_per_step = float("nan")  # the last fit's mean, for the log

    def update(self, step: int, elapsed_s: float, agree=lambda n: n) -> int | None:
        """After step ``step``: the new schedule length when this step refits, else None.

        ``agree`` combines the ranks' proposals (the engine passes the minimum over ranks)."""
        if step == self.fit_from:
            self.t_from = elapsed_s
        if step != self.fit_at:
            return None
        per_step = (elapsed_s - self.t_from) / (step - self.fit_from)
        total = agree(min(steps_that_fit(step, elapsed_s, per_step, self.budget_s, self.margin), self.cap))
        self.seconds_per_step = per_step
        nxt = step + self.every
        self.fit_at = nxt if nxt < self.until * total else -1
        return total


def build_lr_schedule(optimizer, cfg: Config, total_steps: int, steps_per_epoch: int):
    """``cfg.lr_schedule``: warmup + cosine (SimCLR Sec. 2.3) or warmup + step decay at ``lr_milestones``."""
    warmup = min(round(cfg.warmup_epochs * steps_per_epoch), total_steps)
    if cfg.lr_schedule == "step":
        milestones = [round(e * steps_per_epoch) for e in parse_milestones(cfg.lr_milestones)]
        return torch.optim.lr_scheduler.LambdaLR(optimizer, StepDecay(milestones, warmup))
    return build_scheduler(optimizer, total_steps=total_steps, warmup_steps=warmup)


def forward_backward(
    model: nn.Module, view1: Tensor, view2: Tensor, target: Tensor, accum_steps: int, autocast, check_loss
) -> tuple[Tensor, dict[str, Tensor]]:
    """Forward and backward of this rank's batch as ``accum_steps`` equal micro-batches.

    Micro-batch ``a`` has loss L_a; ``L_a / A`` is back-propagated, so the accumulated gradient is

        g = (1/A) sum_a grad L_a,

    the mean of the micro-batch gradients. For a loss that is a mean over independent samples, in a
    network without batch-coupled layers, that is exactly the full-batch gradient. **NT-Xent is not
    such a loss**: each micro-batch contrasts only within itself (under DDP, within the global
    micro-batch gathered over ranks), so an anchor sees 2B/A - 2 negatives instead of 2B - 2, and
    BN normalises over micro-batches. Accumulation saves memory, not the large-batch effect
    (SimCLR Fig. 9 is about negatives). MoCo runs its momentum update and enqueue once per
    micro-batch. Under DDP the gradient all-reduce runs once, with the last micro-batch
    (``no_sync`` on the others). ``check_loss(loss)`` runs before each backward (NaN guard).
    Returns the mean micro-batch loss (detached) and the mean of each log.
    """
    no_sync = getattr(model, "no_sync", None)
    total, logs_sum = torch.zeros((), dtype=torch.float64), {}
    parts = list(zip(view1.chunk(accum_steps), view2.chunk(accum_steps), target.chunk(accum_steps)))
    for a, (x1, x2, t) in enumerate(parts):
        last = a == len(parts) - 1
        with contextlib.nullcontext() if (last or no_sync is None) else no_sync():
            with autocast:
                loss, logs = model(x1, x2, t)
            check_loss(loss)
            (loss if accum_steps == 1 else loss / accum_steps).backward()
        total = total + loss.detach().double().cpu()  # float64 sums: logs averaged over ranks stay exact
        for k, v in logs.items():
            logs_sum[k] = logs_sum.get(k, 0.0) + torch.as_tensor(v).detach().double()
    n = len(parts)
    return total / n, {k: v / n for k, v in logs_sum.items()}


def prepare_model(method: nn.Module, cfg: Config, device: torch.device, world: int) -> nn.Module:
    """Move to the device, convert BN for multi-GPU, GEMM weight gradients (CPU bf16), channels_last."""
    frozen = {name for name, p in method.named_parameters() if not p.requires_grad}
    if world > 1 and device.type == "cuda":
        method = nn.SyncBatchNorm.convert_sync_batchnorm(method)  # global BN (SimCLR Sec. 2.2)
    elif world > 1:
        method = dist_utils.convert_to_global_batchnorm(method)  # the same on CPU processes
    for name, p in method.named_parameters():  # the conversion builds new BN parameters: keep frozen
        if name in frozen:  # ones frozen (MoCo's key encoder), or DDP waits for their gradients
            p.requires_grad_(False)
    method = method.to(device, model_dtype(cfg))
    if cfg.gemm_weight_grad and not cfg.compile:  # same parameters; only the backward's arithmetic differs
        use_gemm_weight_grad_(method)
    if cfg.channels_last:
        method = method.to(memory_format=torch.channels_last)
    return method


def wrap_ddp(method: nn.Module, device: torch.device, world: int) -> nn.Module:
    if world == 1:
        return method
    ids = [device.index] if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(method, device_ids=ids, broadcast_buffers=False)


class StopFlag:
    """Ctrl-C sets a flag; the loop finishes the step, saves and exits. A second Ctrl-C aborts."""

    def __init__(self):
        self.requested = False
        self._previous = None

    def __enter__(self):
        if sys.platform != "win32" and _in_main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def _handle(self, signum, frame):
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        print("\nCtrl-C: finishing this step, saving a checkpoint, then stopping.", flush=True)

    def __exit__(self, *exc):
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
        return False


def _in_main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


def progress(iterable, total: int, desc: str, enabled: bool):
    """tqdm bars on a terminal; no bar (one summary line per epoch instead) when piped or in CI."""
    if not enabled or not sys.stderr.isatty():
        return iterable
    from tqdm.auto import tqdm

    return tqdm(iterable, total=total, desc=desc, leave=False, dynamic_ncols=True)


# ----------------------------------------------------------------------------------------
# The training loop
# ----------------------------------------------------------------------------------------


def train(
    cfg: Config, out_dir: str | Path, resume: bool = False, verbose: bool = True, stop_at_step: int = 0
) -> dict[str, Any]:
    """Train ``cfg.method`` and return a summary dict. The run folder ``out_dir`` receives
    ``config.json``, ``metrics.csv``, ``checkpoints/last.pt`` and ``figures/``.

    ``stop_at_step`` (tests, notebooks) stops as if Ctrl-C had been pressed after that step:
    the schedule still spans the whole run, so a later ``resume=True`` continues it exactly.
    """
    cfg = validate(cfg)
    rank, local_rank, world = dist_utils.init_distributed()
    is_main = rank == 0
    say = print if (verbose and is_main) else (lambda *a, **k: None)
    out = Path(out_dir)
    ckpt_path = out / "checkpoints" / "last.pt"
    device = resolve_device(cfg, local_rank)
    amp_dtype = resolve_precision(cfg, device)

    # --- data -> views ---------------------------------------------------------------------
    train_ds, test_ds = load_split(cfg, cfg.train_split), load_split(cfg, cfg.test_split)
    supervised = cfg.method in CLASSIFIERS
    if supervised:
        train_ds = select_labelled(train_ds, cfg)
    elif cfg.label_subset_file or cfg.label_fraction < 1:
        raise ValueError("label_subset_file / label_fraction select labelled images for method=linear|finetune")
    if (cfg.batch_size // world) % cfg.accum_steps or cfg.batch_size % world:
        raise ValueError(
            f"batch_size={cfg.batch_size} must split into {world} ranks x accum_steps={cfg.accum_steps} "
            "equal micro-batches"
        )
    batches = build_batches(cfg, train_ds, device, rank, world)
    data_name = getattr(train_ds, "name", cfg.dataset)  # e.g. "cifar10-mini": numbers carry the data's name
    steps_per_epoch = len(batches)
    if steps_per_epoch == 0:
        raise ValueError(f"batch_size={cfg.batch_size} leaves no full batch in {len(train_ds)} images")
    total_steps = cfg.epochs * steps_per_epoch
    if cfg.max_steps:
        total_steps = min(total_steps, cfg.max_steps)

    # --- encoder -> head -> loss (the method), optimiser, schedule ---------------------------
    torch.manual_seed(cfg.seed)  # identical initial weights on every rank
    built = build_classifier(cfg, len(train_ds.classes)) if supervised else build_method(cfg)
    method = prepare_model(built, cfg, device, world)
    model = wrap_ddp(method, device, world)
    if cfg.compile:
        model = torch.compile(model)
    lr = resolve_lr(cfg)
    optimizer = build_optimizer(
        cfg.optimizer, method, lr=lr, weight_decay=cfg.weight_decay, momentum=cfg.momentum,
        **({"nesterov": True} if cfg.nesterov else {}),
    )
    scheduler = build_lr_schedule(optimizer, cfg, total_steps, steps_per_epoch)

    step, fitted_steps = 0, 0
    if resume:
        if not ckpt_path.is_file():
            raise FileNotFoundError(f"--resume: no checkpoint at {ckpt_path}; run without --resume to start")
        state = load_checkpoint(ckpt_path, map_location="cpu")
        method.load_state_dict(state["method"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        batches.set_rng_state(state["rng"]["views"])
        torch.set_rng_state(state["rng"]["torch"])
        step = int(state["step"])
        fitted_steps = int(state.get("fitted_steps", 0))  # fit_to_budget's schedule, once fixed, stays
        total_steps = fitted_steps or total_steps
        say(f"resumed from {ckpt_path} at step {step}")
    elif ckpt_path.exists():  # checked on every rank (a shared filesystem), so no rank is left waiting
        raise FileExistsError(f"{out} already holds a run; pass --resume to continue it or choose another --out")

    if is_main:
        out.mkdir(parents=True, exist_ok=True)
        (out / "config.json").write_text(cfg.to_json())
    extra_logs = list(getattr(method, "log_keys", ()))  # the method's own metrics (e.g. pos_cos)
    log = MetricsLog(out / "metrics.csv", step if resume else None, extra=extra_logs) if is_main else None
    if is_main and cfg.tensorboard:
        from torch.utils.tensorboard import SummaryWriter

        log.tb = SummaryWriter(out / "tensorboard")

    def checkpoint() -> None:
        if is_main:
            save_checkpoint(
                {
                    "version": CHECKPOINT_VERSION,
                    "config": asdict(cfg),
                    "step": step,
                    "method": method.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(),
                    "fitted_steps": fitted_steps,
                    "rng": {"torch": torch.get_rng_state(), "views": batches.rng_state()},
                },
                ckpt_path,
            )

    def evaluate_knn(tag: str) -> dict[str, float]:
        """{"knn_top1": on h, "knn_top1_z": on z when the method has a head}, printed and written as a
        row of metrics.csv; {} without test images."""
        if test_ds is None or not hasattr(test_ds, "images"):
            return {}
        head = getattr(method, "head", None)
        accs = knn_eval_hz(method.encoder, head, train_ds, test_ds, cfg, device) if is_main else {
            "h": 0.0, **({"z": 0.0} if projects(head) else {})}
        say(f"kNN top-1 ({tag}, k={cfg.knn_k}, T={cfg.knn_t}, {data_name} {cfg.test_split}): {accs['h']:.4f}"
            + (f"  (on z = g(h): {accs['z']:.4f})" if "z" in accs else ""))
        row = {"knn_top1": accs["h"], **({"knn_top1_z": accs["z"]} if "z" in accs else {})}
        if log:
            log.write({"step": step, "epoch": step / steps_per_epoch, **row})
        return row

    def record_knn(key: str, accs: dict[str, float]) -> None:
        """results[key] (h) and results[key + "_z"] (z)."""
        results[key] = accs.get("knn_top1")
        if "knn_top1_z" in accs:
            results[key + "_z"] = accs["knn_top1_z"]

    results: dict[str, Any] = {"out_dir": str(out), "lr": lr, "steps_per_epoch": steps_per_epoch}
    if step == 0:
        record_knn("knn_random", evaluate_knn("random init"))
    say(
        f"training {cfg.method} on {data_name} ({len(batches) * cfg.batch_size} images per epoch) for "
        f"{total_steps} steps, "
        f"batch {cfg.batch_size} = {world} x {device.type} x {cfg.accum_steps} x {cfg.batch_size // world // cfg.accum_steps}, "
        "precision "
        f"{str(amp_dtype).replace('torch.', '') if amp_dtype else 'fp32'}, lr {lr:g}"
    )
    if cfg.max_steps and cfg.max_steps < cfg.epochs * steps_per_epoch:
        say(f"note: max_steps={cfg.max_steps} caps the {cfg.epochs}-epoch schedule "
            f"({cfg.epochs * steps_per_epoch} steps); pass max_steps=0 to train every epoch")
    if cfg.time_budget_s:
        say(f"note: training stops after time_budget_s={cfg.time_budget_s:g} s if it has not finished "
            "(pass time_budget_s=0 for no limit)")
    # fit_to_budget: time the warmup steps (whose lr does not depend on the schedule's length), end the
    # cosine at the budget, refit every epoch or so: the run's length depends on the machine's speed.
    fitter = None
    if cfg.fit_to_budget and not fitted_steps:
        fit_at = max(step + 15, scheduler.lr_lambdas[0].warmup_steps)
        every = steps_per_epoch * math.ceil(20 / steps_per_epoch)  # whole epochs, >= 20 steps: a steady estimate
        fitter = ScheduleFitter(cfg.time_budget_s, total_steps, step + 5, fit_at, every=every)
        # every rank must run the same schedule: the slowest rank's estimate
        agree = (lambda n: min_over_ranks(n, device)) if world > 1 else (lambda n: n)
        say(f"note: fit_to_budget: the schedule's length is set after step {fit_at} from the measured speed "
            f"(at most {total_steps} steps) and refitted every {every} steps until {fitter.until:.0%} of it")

    model.train()
    start_time, images_seen, timed = time.perf_counter(), 0, 0.0
    stop_reason = "finished"
    autocast = (
        torch.autocast(device_type=device.type, dtype=amp_dtype) if amp_dtype else contextlib.nullcontext()
    )

    def check_loss(loss: Tensor) -> None:
        if not torch.isfinite(loss):
            raise TrainingDiverged(
                f"loss is {loss.item()} at step {step} (epoch {step // steps_per_epoch + 1}); the update was not "
                f"applied and the last good checkpoint {ckpt_path} was kept. Try a lower lr (now "
                f"{scheduler.get_last_lr()[0]:.3g}), more warmup, grad_clip=1.0, or precision=fp32."
            )

    with StopFlag() as stop:
        while step < total_steps:
            epoch, start = divmod(step, steps_per_epoch)
            epoch_loss, epoch_n, t0 = 0.0, 0, time.perf_counter()
            bar = progress(batches.epoch(epoch, start), steps_per_epoch - start, f"epoch {epoch + 1}", is_main)
            for view1, view2, labels, index in bar:
                dtype = model_dtype(cfg)
                view1, view2 = view1.to(device, dtype, non_blocking=True), view2.to(device, dtype, non_blocking=True)
                if cfg.channels_last:
                    view1 = view1.contiguous(memory_format=torch.channels_last)
                    view2 = view2.contiguous(memory_format=torch.channels_last)
                target = (labels if supervised else index).to(device)  # classifiers get labels, methods indices
                optimizer.zero_grad(set_to_none=True)
                loss, logs = forward_backward(model, view1, view2, target, cfg.accum_steps, autocast, check_loss)
                if cfg.grad_clip:
                    nn.utils.clip_grad_norm_(method.parameters(), cfg.grad_clip)
                optimizer.step()
                scheduler.step()
                step += 1
                if fitter:
                    fitted = fitter.update(step, time.perf_counter() - start_time - timed, agree)
                    if fitted and (not fitted_steps or abs(fitted - total_steps) > 0.01 * total_steps):
                        say(f"fit_to_budget: {1000 * fitter.seconds_per_step:.0f} ms/step -> a schedule of "
                            f"{fitted} steps ({fitted / steps_per_epoch:.1f} epochs) ending within "
                            f"{cfg.time_budget_s:g} s")
                    if fitted:
                        total_steps = fitted_steps = fitted
                        scheduler.lr_lambdas[0].total_steps = total_steps  # saved with the scheduler's state
                epoch_loss += loss.item()
                epoch_n += 1
                images_seen += cfg.batch_size
                if step % 10 == 0 or step == total_steps:
                    logged = mean_over_ranks(logs, device)  # every rank takes part; the global mean is logged
                    elapsed = time.perf_counter() - start_time
                    if log:
                        log.write(
                            {
                                "step": step,
                                "epoch": step / steps_per_epoch,
                                "time_s": round(elapsed, 3),
                                "lr": scheduler.get_last_lr()[0],
                                "images_per_s": round(images_seen / max(elapsed - timed, 1e-9), 1),
                                "gpu_mem_gb": gpu_memory_gb(device),
                                **logged,
                            }
                        )
                if step % cfg.checkpoint_every == 0:
                    checkpoint()
                over_budget = cfg.time_budget_s and time.perf_counter() - start_time - timed > cfg.time_budget_s
                stop.requested |= step == stop_at_step
                if world > 1:  # Ctrl-C or the budget may reach the ranks at different steps: stop together
                    stop.requested, over_budget = any_rank(stop.requested, device), any_rank(over_budget, device)
                if stop.requested or over_budget or step >= total_steps:
                    if stop.requested:
                        stop_reason = "interrupted"
                    elif over_budget and step < total_steps:  # a schedule that ends on the budget finished
                        stop_reason = "time budget"
                    break
            seconds = time.perf_counter() - t0
            epoch_mean = mean_over_ranks({"loss": torch.tensor(epoch_loss / max(epoch_n, 1))}, device)["loss"]
            say(
                f"epoch {epoch + 1}/{math.ceil(total_steps / steps_per_epoch)}  step {step}  "
                f"loss {epoch_mean:.4f}  {epoch_n * cfg.batch_size / seconds:.0f} img/s"
            )
            if stop_reason != "finished":
                break
            if cfg.knn_every and (epoch + 1) % cfg.knn_every == 0 and step < total_steps:
                t_eval = time.perf_counter()
                evaluate_knn(f"epoch {epoch + 1}")
                timed += time.perf_counter() - t_eval
                model.train()

    checkpoint()
    train_seconds = time.perf_counter() - start_time - timed
    results.update(step=step, schedule_steps=total_steps, stop_reason=stop_reason, train_seconds=train_seconds)
    if stop_reason == "interrupted":
        say(f"stopped by Ctrl-C at step {step}; resume with --resume (checkpoint {ckpt_path})")
        dist_utils.cleanup_distributed()
        return results
    record_knn("knn_final", evaluate_knn("trained"))
    if supervised and test_ds is not None:
        results["top1"] = classifier_top1(method, test_ds, cfg, device, rank, world)
        say(f"{cfg.method} top-1 on {data_name} {cfg.test_split}: {results['top1']:.4f}")
        if log:
            log.write({"step": step, "epoch": step / steps_per_epoch, "val_top1": results["top1"]})
    if is_main and cfg.figures:
        from .plots import run_figures

        run_figures(out, method.encoder, train_ds, test_ds, device, cfg)
    if is_main:
        (out / "results.json").write_text(_json(results))
    dist_utils.cleanup_distributed()
    return results


def mean_over_ranks(values: dict[str, Tensor], device: torch.device) -> dict[str, float]:
    """Each scalar averaged over all ranks with one all-reduce (rank r's loss is the mean over its
    own images; the mean over ranks is the loss of the global batch). Plain floats when not distributed."""
    keys = sorted(values)
    if not keys:
        return {}
    stacked = torch.stack([torch.as_tensor(values[k]).detach().double().reshape(()).to(device) for k in keys])
    if dist_utils.is_distributed():
        torch.distributed.all_reduce(stacked)
        stacked /= dist_utils.get_world_size()
    return dict(zip(keys, stacked.tolist()))


def min_over_ranks(value: int, device: torch.device) -> int:
    """The smallest of the ranks' integers, on every rank."""
    tensor = torch.tensor([-float(value)], device=device, dtype=torch.float64)
    torch.distributed.all_reduce(tensor, op=torch.distributed.ReduceOp.MAX)
    return int(-tensor.item())


def any_rank(flag: bool, device: torch.device) -> bool:
    """True on every rank if ``flag`` is true on any rank (so all ranks leave the loop at the same step)."""
    value = torch.tensor([float(bool(flag))], device=device)
    torch.distributed.all_reduce(value, op=torch.distributed.ReduceOp.MAX)
    return bool(value.item())


def gpu_memory_gb(device: torch.device) -> float | str:
    """Peak GPU memory of this process so far in GiB (``torch.cuda.max_memory_allocated``); "" on CPU."""
    if device.type != "cuda":
        return ""
    return round(torch.cuda.max_memory_allocated(device) / 2**30, 3)


def _json(obj: dict) -> str:
    import json

    return json.dumps(obj, indent=2, sort_keys=True, default=str)
