"""Batch norm across devices: shuffling BN, split ("ghost") BN and global BN.

Batch norm computes its statistics over the batch, so in contrastive learning it can *leak*:
a query and its positive key normalised together share information through the batch
statistics, and the model learns a shortcut instead of a representation. Three fixes:

=====================================  ===========================================================
:func:`batch_shuffle`                  MoCo Sec. 3.3 "Shuffling BN": encode the keys in a shuffled
                                       order across ranks (undone by :func:`batch_unshuffle`)
:class:`SplitBatchNorm`                MoCo CIFAR-10 demo: BN over sub-batches, simulating several
                                       GPUs on one (:func:`split_batch_norm_reference`,
                                       :func:`convert_to_split_batchnorm`)
:class:`GlobalBatchNorm`               SimCLR Sec. 2.2 "Global BN": statistics over the global
                                       batch of all ranks, on any backend
                                       (:func:`convert_to_global_batchnorm`)
=====================================  ===========================================================

Chapter 08 teaches shuffling and split BN with MoCo; chapter 13 (scaling up) uses global BN
(``SyncBatchNorm`` on GPUs, :class:`GlobalBatchNorm` on CPU processes). The shuffles draw from
the CPU generator passed in, or torch's default CPU generator, whose state the engine saves.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

from .distributed import all_gather_no_grad, get_rank, is_distributed
from .momentum import _check_int

__all__ = [
    "GlobalBatchNorm", "SplitBatchNorm", "batch_shuffle", "batch_unshuffle", "convert_to_global_batchnorm",
    "convert_to_split_batchnorm", "split_batch_norm_reference",
]  # fmt: skip


# --------------------------------------------------------------------------- shuffling BN


def _check_batch(x: Tensor, name: str = "x") -> None:
    """A tensor with a batch dimension (dim 0), the axis that is shuffled."""
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


# --------------------------------------------------------------------------- global BN


class GlobalBatchNorm(torch.nn.modules.batchnorm._BatchNorm):
    """Batch norm whose statistics span the *global* batch over all ranks, on any backend.

    SimCLR normalises over the whole global batch ("Global BN", Chen et al. 2020, Sec. 2.2):
    with per-device statistics, the two views of an image that sit on one device can
    "leak" local information and the model cheats the contrastive task. PyTorch's
    ``SyncBatchNorm`` does this but only on GPUs; this module does the same with
    autograd-aware all-reduces, so it also runs on CPU processes (gloo).

    Training forward, with n the global count per channel and sums over ranks r:
        mu = (1/n) sum_r sum_i x_ri,   var = (1/n) sum_r sum_i (x_ri - mu)^2,
        y  = (x - mu) / sqrt(var + eps) * weight + bias.
    ``torch.distributed.nn.functional.all_reduce`` sums gradients back to every rank, so
    the backward pass is the single-process BN gradient (same convention as
    :func:`all_gather_with_grad`). Running statistics use the unbiased global variance.
    Not distributed, or in eval mode, it is plain ``F.batch_norm``.
    """

    def _check_input_dim(self, x: Tensor) -> None:
        if x.dim() < 2:
            raise ValueError(f"GlobalBatchNorm expects (N, C, ...) input, got shape {tuple(x.shape)}")

    def forward(self, x: Tensor) -> Tensor:
        self._check_input_dim(x)
        if not (self.training and is_distributed()):
            return super().forward(x)
        from torch.distributed.nn.functional import all_reduce

        dims = [0, *range(2, x.dim())]
        shape = [1, -1] + [1] * (x.dim() - 2)
        count = all_reduce(torch.tensor([x.numel() / x.shape[1]], dtype=x.dtype, device=x.device))
        mean = all_reduce(x.sum(dims)) / count
        var = all_reduce(((x - mean.view(shape)) ** 2).sum(dims)) / count
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked += 1
                m = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
                unbiased = var * count / (count - 1).clamp(min=1)
                self.running_mean.mul_(1 - m).add_(m * mean.detach())
                self.running_var.mul_(1 - m).add_(m * unbiased.detach())
        y = (x - mean.view(shape)) / torch.sqrt(var.view(shape) + self.eps)
        if self.affine:
            y = y * self.weight.view(shape) + self.bias.view(shape)
        return y


def convert_to_global_batchnorm(module: torch.nn.Module) -> torch.nn.Module:
    """Replace every BatchNorm{1,2,3}d in ``module`` by :class:`GlobalBatchNorm` (weights kept).

    The CPU counterpart of ``nn.SyncBatchNorm.convert_sync_batchnorm``; parameter and buffer
    names are unchanged, so state dicts load either way.
    """
    if isinstance(module, torch.nn.modules.batchnorm._BatchNorm) and not isinstance(module, GlobalBatchNorm):
        new = GlobalBatchNorm(module.num_features, module.eps, module.momentum, module.affine,
                              module.track_running_stats)
        new.load_state_dict(module.state_dict())
        new.train(module.training)
        return new
    for name, child in module.named_children():
        module.add_module(name, convert_to_global_batchnorm(child))
    return module
