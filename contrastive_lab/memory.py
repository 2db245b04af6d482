"""Where the negatives come from: a memory bank, a queue, and the machinery that keeps keys consistent.

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
:func:`momentum_update_`       MoCo Eq. 2: theta_k <- m theta_k + (1 - m) theta_q
:func:`cosine_momentum`        BYOL (Grill et al. 2020) Sec. 3.2: m_t rising from m_0 to 1
:func:`batch_shuffle`          MoCo Sec. 3.3 "Shuffling BN" (and its inverse, :func:`batch_unshuffle`)
:class:`SplitBatchNorm`        MoCo CIFAR-10 demo: BN over sub-batches, simulating several GPUs
=============================  ===========================================================

Everything that must survive a checkpoint (the bank, the queue and its pointer) is a registered
buffer, so ``state_dict()`` holds it and a resumed run continues bit for bit. Randomness (initial
keys, negative sampling, shuffles) comes from the CPU generator passed in, or torch's default CPU
generator, whose state the engine saves: so it is reproducible on any device.
"""

from __future__ import annotations

import copy
import math

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

from .distributed import all_gather_no_grad, get_rank, is_distributed

__all__ = [
    "KeyQueue", "MemoryBank", "SplitBatchNorm", "batch_shuffle", "batch_unshuffle", "check_momentum",
    "convert_to_split_batchnorm", "cosine_momentum", "momentum_copy", "momentum_update_",
    "momentum_update_reference_", "split_batch_norm_reference",
]  # fmt: skip


# --------------------------------------------------------------------------- validation


def _check_int(value: object, name: str, minimum: int = 1, hint: str = "") -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {value!r} ({type(value).__name__}){hint}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}{hint}")
    return value


def check_momentum(value: object, name: str = "momentum") -> float:
    """A number m with 0 <= m <= 1 (an EMA coefficient), else TypeError/ValueError."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a float in [0, 1], got {value!r} ({type(value).__name__})")
    if not (math.isfinite(value) and 0.0 <= value <= 1.0):
        raise ValueError(f"{name} must lie in [0, 1] (m = 0 copies, m = 1 freezes), got {value}")
    return float(value)


def _check_features(x: Tensor, dim: int, name: str) -> None:
    if not isinstance(x, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.ndim != 2 or x.shape[1] != dim:
        raise ValueError(f"{name} must have shape (B, {dim}), got {tuple(x.shape)}")
    if not x.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got dtype {x.dtype}")


def _check_index(index: Tensor, size: int, name: str = "index") -> None:
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


# --------------------------------------------------------------------------- momentum encoder


def momentum_copy(module: nn.Module) -> nn.Module:
    """A deep copy of ``module`` that no optimizer or gradient can touch (MoCo's key encoder).

    The official code builds a second encoder and copies the query weights in
    (``param_k.data.copy_(param_q.data); param_k.requires_grad = False``); a deep copy does the same
    and also starts the BN buffers equal.
    """
    twin = copy.deepcopy(module)
    twin.requires_grad_(False)
    return twin


def _paired_params(target: nn.Module, source: nn.Module) -> tuple[list[Tensor], list[Tensor]]:
    t, s = dict(target.named_parameters()), dict(source.named_parameters())
    if t.keys() != s.keys() or any(t[n].shape != s[n].shape for n in t):
        raise ValueError("momentum update: target and source must have the same parameter names and shapes")
    names = list(t)
    return [t[n] for n in names], [s[n].detach() for n in names]


@torch.no_grad()
def momentum_update_(target: nn.Module, source: nn.Module, m: float) -> None:
    """theta_k <- m theta_k + (1 - m) theta_q for every parameter, in place (MoCo Eq. 2).

    Parameters only, as the official ``_momentum_update_key_encoder``: the key encoder's buffers
    (BN running statistics) are *not* copied or averaged; they evolve on their own from the key
    batches it sees in train mode. m = 0 copies the query encoder, m = 1 freezes the key encoder.
    Vectorised with ``torch._foreach_*``; :func:`momentum_update_reference_` is the plain loop.
    """
    m = check_momentum(m)
    t, s = _paired_params(target, source)
    torch._foreach_mul_(t, m)
    torch._foreach_add_(t, s, alpha=1.0 - m)


@torch.no_grad()
def momentum_update_reference_(target: nn.Module, source: nn.Module, m: float) -> None:
    """:func:`momentum_update_` as a loop over parameter pairs (readable, for tests)."""
    for p_k, p_q in zip(*_paired_params(target, source)):
        p_k.copy_(m * p_k + (1.0 - m) * p_q)


def cosine_momentum(step: int, total_steps: int, base: float) -> float:
    """m_t = 1 - (1 - m_0) (cos(pi t / T) + 1) / 2: from m_0 at t = 0 up to 1 at t = T.

    BYOL (Grill et al. 2020), Sec. 3.2 ("tau = 1 - (1 - tau_base)(cos(pi k/K) + 1)/2"). Steps past T
    stay at 1. The key encoder freezes as the learning rate (cosine) goes to zero.
    """
    _check_int(step, "step", minimum=0)
    _check_int(total_steps, "total_steps", hint=" (length of the momentum schedule)")
    base = check_momentum(base, "base momentum")
    t = min(step, total_steps) / total_steps
    return 1.0 - (1.0 - base) * (math.cos(math.pi * t) + 1.0) / 2.0


# --------------------------------------------------------------------------- shuffling BN


def _check_batch(x: Tensor, name: str = "x") -> None:
    if not isinstance(x, Tensor) or x.ndim < 1:
        raise TypeError(f"{name} must be a tensor with a batch dimension, got {x!r:.80}")


@torch.no_grad()
def batch_shuffle(x: Tensor, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
    """Shuffle the key batch across all ranks; return (this rank's shuffled slice, unshuffle index).

    MoCo Sec. 3.3, "Shuffling BN": per-GPU batch norm lets a query and its positive key, computed
    from the same sub-batch, communicate through the batch statistics ("leak"), and the model finds
    a shortcut. So before the *key* encoder, the global batch is shuffled and re-split over the GPUs,
    and shuffled back afterwards; the query batch keeps its order. As the official
    ``_batch_shuffle_ddp``: gather all ranks' x, draw a permutation on every rank and use rank 0's
    (broadcast), take this rank's slice. On a single process: one random permutation of the batch
    (the MoCo CIFAR demo's ``_batch_shuffle_single_gpu``, which matters with :class:`SplitBatchNorm`).
    The permutation comes from the CPU ``generator`` (default: torch's global one).
    """
    _check_batch(x)
    x_all = all_gather_no_grad(x)
    perm = torch.randperm(x_all.shape[0], generator=generator).to(x.device)
    if is_distributed():
        dist.broadcast(perm, src=0)
    n, rank = x.shape[0], get_rank()
    return x_all[perm[rank * n : (rank + 1) * n]], torch.argsort(perm)


@torch.no_grad()
def batch_unshuffle(x: Tensor, idx_unshuffle: Tensor) -> Tensor:
    """Undo :func:`batch_shuffle`: gather the shuffled outputs, put them back in the original global
    order, and return this rank's slice (official ``_batch_unshuffle_ddp``)."""
    _check_batch(x)
    x_all = all_gather_no_grad(x)
    if idx_unshuffle.shape != (x_all.shape[0],):
        raise ValueError(
            f"idx_unshuffle has shape {tuple(idx_unshuffle.shape)}, expected ({x_all.shape[0]},): "
            "pass the index returned by batch_shuffle for this very batch"
        )
    n, rank = x.shape[0], get_rank()
    return x_all[idx_unshuffle[rank * n : (rank + 1) * n]]


# --------------------------------------------------------------------------- split ("ghost") BN


class SplitBatchNorm(nn.BatchNorm2d):
    """Batch norm over ``num_splits`` sub-batches, simulating that many GPUs on one device.

    MoCo's CIFAR-10 demo (Colab notebook by Kaiming He, ``SplitBatchNorm``, ``--bn-splits 8``): the
    original MoCo trains on 8 GPUs, each normalising its own 32 images; shuffling BN only makes sense
    if BN statistics are per sub-batch. Here sub-batch s is the s-th contiguous chunk of the batch,
    i.e. exactly what rank s of ``num_splits`` would receive.

    Training mode: each split is normalised with its own mean and (biased) variance; the weight and
    bias are shared. The running statistics are updated as if every split had updated its own copy
    of them, and then averaged over the splits (the demo's rule):

        running <- (1 - momentum) running + momentum * mean_s(stat_s)

    with the unbiased per-split variance for ``running_var``. Eval mode: plain BN with the running
    statistics. Parameter and buffer names are nn.BatchNorm2d's, so state dicts load either way.
    """

    def __init__(self, num_features: int, num_splits: int, **kwargs) -> None:
        super().__init__(num_features, **kwargs)
        self.num_splits = _check_int(num_splits, "num_splits", hint=" (number of simulated devices)")

    def forward(self, x: Tensor) -> Tensor:
        self._check_input_dim(x)
        if not self.training or self.num_splits == 1:
            return super().forward(x)
        n, c, h, w = x.shape
        s = self.num_splits
        if n % s:
            raise ValueError(
                f"SplitBatchNorm: batch of {n} cannot be cut into num_splits={s} equal sub-batches; "
                "use a batch size divisible by bn_splits"
            )
        factor = self.momentum
        if self.track_running_stats:
            self.num_batches_tracked.add_(1)
            if factor is None:  # cumulative moving average, as nn.BatchNorm2d
                factor = 1.0 / float(self.num_batches_tracked)
        # (N, C, H, W) -> (N/s, s*C, H, W): channel block j holds split j, so one batch_norm call
        # normalises every split separately.
        xs = x.reshape(s, n // s, c, h, w).transpose(0, 1).reshape(n // s, s * c, h, w)
        stats = (self.running_mean.repeat(s), self.running_var.repeat(s)) if self.track_running_stats else (None,) * 2
        weight = self.weight.repeat(s) if self.affine else None
        bias = self.bias.repeat(s) if self.affine else None
        y = F.batch_norm(xs, *stats, weight, bias, True, factor or 0.0, self.eps)
        if self.track_running_stats:
            with torch.no_grad():
                self.running_mean.copy_(stats[0].view(s, c).mean(0))
                self.running_var.copy_(stats[1].view(s, c).mean(0))
        return y.reshape(n // s, s, c, h, w).transpose(0, 1).reshape(n, c, h, w)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, num_splits={self.num_splits}"


def split_batch_norm_reference(x: Tensor, bn: SplitBatchNorm) -> Tensor:
    """What :class:`SplitBatchNorm` computes in train mode, written as one ``nn.BatchNorm2d`` per split.

    Each split s gets its own BN copy (same weight, bias and running statistics), normalises its
    chunk, and updates its copy's running statistics; ``bn``'s running statistics become the mean
    of the copies'. For tests and the chapter; the class is the fast version.
    """
    copies, outs = [], []
    for chunk in x.chunk(bn.num_splits):
        one = nn.BatchNorm2d(bn.num_features, bn.eps, bn.momentum, bn.affine, bn.track_running_stats)
        one.load_state_dict({k: v for k, v in bn.state_dict().items()})
        one.to(x.device).train()
        outs.append(one(chunk))
        copies.append(one)
    if bn.track_running_stats:
        with torch.no_grad():
            bn.running_mean.copy_(torch.stack([c.running_mean for c in copies]).mean(0))
            bn.running_var.copy_(torch.stack([c.running_var for c in copies]).mean(0))
            bn.num_batches_tracked.add_(1)
    return torch.cat(outs)


def convert_to_split_batchnorm(module: nn.Module, num_splits: int) -> nn.Module:
    """Replace every ``nn.BatchNorm2d`` in ``module`` by :class:`SplitBatchNorm` (weights kept).

    Returns the module (converted in place where possible). ``num_splits=1`` returns it unchanged.
    """
    _check_int(num_splits, "num_splits")
    if num_splits == 1:
        return module
    if type(module) is nn.BatchNorm2d:
        new = SplitBatchNorm(module.num_features, num_splits, eps=module.eps, momentum=module.momentum,
                             affine=module.affine, track_running_stats=module.track_running_stats)
        state = module.state_dict()
        new.load_state_dict(state)
        if state:
            new.to(next(iter(state.values())).device)
        return new.train(module.training)
    for name, child in module.named_children():
        module.add_module(name, convert_to_split_batchnorm(child, num_splits))
    return module

