"""Where the negatives come from: a memory bank and a queue of keys.

A contrastive loss compares a query q with one positive key and many negative keys. Think of the
keys as a *dictionary* the query looks itself up in (MoCo, He et al. 2019, Sec. 1 and 3.1). The
dictionary should be **large** (more negatives sample the data better) and **consistent** (all keys
encoded by the same, or a very similar, encoder). The three classic designs trade one for the other
(MoCo Fig. 2):

* end-to-end (SimCLR): the keys are the current batch, perfectly consistent, as large as the batch;
* memory bank (Wu et al. 2018): one stored feature per training image, as large as the dataset, but
  each entry was written by the encoder of the step that last saw that image (up to an epoch ago);
* queue + momentum encoder (MoCo): the keys of the last K/B batches, written by a slowly moving
  average of the query encoder, so they are both many and nearly consistent.

This module holds the parts of the last two:

=============================  ===========================================================
:class:`MemoryBank`            Wu et al. 2018 Sec. 3.2: per-image features, momentum-updated
:class:`KeyQueue`              MoCo Sec. 3.2: FIFO of the K most recent keys, gathered under DDP
=============================  ===========================================================

and chapter 07 teaches both. The machinery that keeps the keys consistent lives next door:
the momentum (EMA) encoder in :mod:`contrastive_lab.momentum` (MoCo Eq. 2) and shuffling / split
batch norm in :mod:`contrastive_lab.batchnorm` (MoCo Sec. 3.3); chapter 08 uses all three.

Everything that must survive a checkpoint (the bank, the queue and its pointer) is a registered
buffer, so ``state_dict()`` holds it and a resumed run continues bit for bit. Randomness (initial
keys, negative sampling) comes from the CPU generator passed in, or torch's default CPU
generator, whose state the engine saves: so it is reproducible on any device.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .distributed import all_gather_no_grad
from .momentum import _check_int, check_momentum

__all__ = ["KeyQueue", "MemoryBank"]


# --------------------------------------------------------------------------- validation


def _check_features(x: Tensor, dim: int, name: str) -> None:
    """A (B, dim) floating-point tensor of features or keys."""
    if not isinstance(x, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.ndim != 2 or x.shape[1] != dim:
        raise ValueError(f"{name} must have shape (B, {dim}), got {tuple(x.shape)}")
    if not x.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got dtype {x.dtype}")


def _check_index(index: Tensor, size: int, name: str = "index") -> None:
    """A 1-D int tensor of dataset indices, each in 0..size-1 (a row of the memory bank)."""
    if not isinstance(index, Tensor) or index.dtype not in (torch.int64, torch.int32):
        raise TypeError(f"{name} must be an int64 tensor of dataset indices, got {index!r:.80}")
    if index.ndim != 1:
        raise ValueError(f"{name} must be 1-D (one dataset index per sample), got shape {tuple(index.shape)}")
    if index.numel() and (int(index.min()) < 0 or int(index.max()) >= size):
        raise ValueError(
            f"{name} holds values in [{int(index.min())}, {int(index.max())}] but the memory bank has "
            f"{size} entries (valid 0..{size - 1}); was the bank sized for another dataset or subset?"
        )


# --------------------------------------------------------------------------- memory bank


class MemoryBank(nn.Module):
    """One L2-normalised feature per training image (Wu et al. 2018, "Unsupervised Feature
    Learning via Non-Parametric Instance Discrimination", Sec. 3.2).

    The bank ``V = {v_1..v_n}`` replaces a classifier's weight matrix: image i is its own class and
    v_i is its "prototype". After each step the batch's features f_i are written back with momentum
    (official code, lemniscate.pytorch ``NCEAverage``, default ``--nce-m 0.5``)::

        v_i <- normalize(m v_i + (1 - m) f_i),     f_i = normalize(network output)

    (The paper's Sec. 3.2 writes plain replacement, v_i <- f_i, i.e. m = 0.)

    Initialisation follows the official code, uniform in [-a, a] with a = 1/sqrt(D/3) so that
    E||v||^2 = 1; we then L2-normalise every row so that old and updated entries live on the same
    unit sphere (the official code leaves the initial rows unnormalised).

    Negatives are drawn uniformly *excluding the positive* (:meth:`sample_negatives`). The official
    code draws from all n images (the positive can be its own negative with probability K/n,
    negligible for ImageNet's n = 1.28M but not for a 5k-image dataset).

    Buffers: ``bank`` (n, D) float32.
    """

    def __init__(self, size: int, dim: int, momentum: float = 0.5, generator: torch.Generator | None = None):
        super().__init__()
        self.size = _check_int(size, "size", minimum=2, hint=" (the number of training images)")
        self.dim = _check_int(dim, "dim")
        self.momentum = check_momentum(momentum, "bank momentum")
        a = 1.0 / math.sqrt(dim / 3)
        init = torch.rand(size, dim, generator=generator).mul_(2 * a).sub_(a)
        self.register_buffer("bank", F.normalize(init, dim=1))

    def forward(self, index: Tensor) -> Tensor:
        """The stored features v_i of ``index`` (B,) as a new (B, D) tensor without gradient."""
        _check_index(index, self.size)
        return self.bank[index].detach()

    @torch.no_grad()
    def update(self, index: Tensor, features: Tensor, gather: bool = True) -> None:
        """v_i <- normalize(m v_i + (1 - m) normalize(f_i)) for every i in ``index``.

        Under DDP (``gather=True``) indices and features of all ranks are gathered first, so every
        rank writes the whole global batch and all ranks keep identical banks. An index may appear
        only once per update (a batch never holds the same image twice).
        """
        _check_features(features, self.dim, "features")
        _check_index(index, self.size)
        if features.shape[0] != index.shape[0]:
            raise ValueError(f"features has {features.shape[0]} rows but index has {index.shape[0]} entries")
        if gather:
            index, features = all_gather_no_grad(index), all_gather_no_grad(features)
        if index.unique().numel() != index.numel():
            raise ValueError("index holds duplicates; each image may be written once per memory-bank update")
        f = F.normalize(features.detach().to(self.bank.dtype), dim=1)
        v = self.bank[index] * self.momentum + f * (1.0 - self.momentum)
        self.bank.index_copy_(0, index, F.normalize(v, dim=1))

    @torch.no_grad()
    def update_reference(self, index: Tensor, features: Tensor) -> None:
        """:meth:`update` written as the paper's per-sample rule, one row at a time (slow, tests)."""
        for i, f in zip(index.tolist(), features.float()):
            v = self.momentum * self.bank[i] + (1.0 - self.momentum) * (f / f.norm())
            self.bank[i] = v / v.norm()

    def sample_negatives(self, index: Tensor, k: int, generator: torch.Generator | None = None) -> Tensor:
        """(B, k) indices, row b drawn uniformly with replacement from {0..n-1} minus {index[b]}.

        Draw r ~ U{0..n-2} and shift the values >= index[b] up by one: a bijection onto the n-1
        other images, so every negative has probability exactly 1/(n-1) and none is the positive.
        This is the per-sample noise set of Wu et al. Eq. 6 (``NCEAverage`` draws (B, K+1) indices).
        """
        _check_index(index, self.size)
        _check_int(k, "k (number of negatives)")
        r = torch.randint(0, self.size - 1, (index.shape[0], k), generator=generator).to(index.device)
        return r + (r >= index[:, None]).long()

    def sample_shared_negatives(
        self, exclude: Tensor, k: int, generator: torch.Generator | None = None
    ) -> Tensor:
        """(k,) indices drawn uniformly with replacement from the images *not* in ``exclude``.

        One set of negatives shared by the whole batch (like MoCo's queue), for the InfoNCE loss;
        ``exclude`` is the batch's own indices, so no query meets its own entry as a negative.
        """
        _check_index(exclude, self.size, "exclude")
        _check_int(k, "k (number of negatives)")
        allowed = torch.ones(self.size, dtype=torch.bool)
        allowed[exclude.cpu()] = False
        candidates = allowed.nonzero().squeeze(1)
        if candidates.numel() == 0:
            raise ValueError(f"every one of the {self.size} bank entries is excluded; no negatives left")
        pick = torch.randint(0, candidates.numel(), (k,), generator=generator)
        return candidates[pick].to(exclude.device)

    def extra_repr(self) -> str:
        return f"size={self.size}, dim={self.dim}, momentum={self.momentum}"


# --------------------------------------------------------------------------- queue


class KeyQueue(nn.Module):
    """MoCo's dictionary: a first-in first-out queue of the K most recent keys (He et al. 2019,
    "Momentum Contrast for Unsupervised Visual Representation Learning", Sec. 3.2, Algorithm 1).

    Each step the current keys are enqueued *after* the loss (the queue's K keys are the negatives of
    this step, the current batch's keys become negatives of the next ones) and the oldest leave.
    Stored as a ring buffer: ``keys`` (K, D) and ``ptr``, the slot the next key goes to (which is
    also the oldest key). Initialised like the official code (moco/builder.py): Gaussian random
    keys, L2-normalised; they act as random negatives until the first K real keys have arrived.

    The official ``_dequeue_and_enqueue`` asserts ``K % batch_size == 0``. Here any K works: a write
    that runs past the end wraps around in two pieces, and a batch larger than K keeps its newest K
    keys, exactly as if the keys had been pushed one by one into a ``deque(maxlen=K)``.

    Under DDP (``gather=True``) the keys of all ranks are gathered (rank order) before they are
    enqueued, so every rank holds the same queue of global-batch keys (official ``concat_all_gather``).
    """

    def __init__(self, size: int, dim: int, generator: torch.Generator | None = None) -> None:
        super().__init__()
        self.size = _check_int(size, "size", hint=" (the number of keys K the queue holds)")
        self.dim = _check_int(dim, "dim")
        self.register_buffer("keys", F.normalize(torch.randn(size, dim, generator=generator), dim=1))
        self.register_buffer("ptr", torch.zeros((), dtype=torch.long))

    @torch.no_grad()
    def enqueue(self, keys: Tensor, gather: bool = True) -> None:
        """Push ``keys`` (B, D) in row order (newest last); the oldest keys fall out."""
        _check_features(keys, self.dim, "keys")
        if gather:
            keys = all_gather_no_grad(keys)
        n, ptr = keys.shape[0], int(self.ptr)
        if n >= self.size:  # only the newest K survive; they land where one-by-one writes would put them
            keys, start = keys[n - self.size :], (ptr + n - self.size) % self.size
        else:
            start = ptr
        first = min(keys.shape[0], self.size - start)  # up to the end of the buffer ...
        self.keys[start : start + first] = keys[:first].detach().to(self.keys.dtype)
        self.keys[: keys.shape[0] - first] = keys[first:].detach().to(self.keys.dtype)  # ... then from 0
        self.ptr.fill_((ptr + n) % self.size)

    def ordered(self) -> Tensor:
        """The K keys from oldest to newest (a copy); ``ordered()[-B:]`` is the last enqueued batch."""
        p = int(self.ptr)
        return torch.cat([self.keys[p:], self.keys[:p]])

    def extra_repr(self) -> str:
        return f"size={self.size}, dim={self.dim}"
