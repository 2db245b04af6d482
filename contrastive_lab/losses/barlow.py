"""Barlow Twins' redundancy-reduction loss: :func:`cross_correlation`, :func:`barlow_twins_loss`, their
loop twin and :class:`BarlowTwinsLoss`.

Zbontar, Jing, Misra, LeCun & Deny 2021, "Barlow Twins: Self-Supervised Learning via Redundancy
Reduction", Eq. 1-2. Each view's embeddings are standardised along the batch (mean 0, std 1 per
dimension: the official code's ``BatchNorm1d(affine=False)``), and their cross-correlation matrix

    C_ij = sum_b zA_bi zB_bj / N                                     Eq. 2 (standardised z)

is driven towards the identity:

    L = sum_i (1 - C_ii)^2  +  lambda sum_i sum_{j != i} C_ij^2        Eq. 1

The diagonal term makes the embedding invariant to the views; the off-diagonal term decorrelates
its dimensions, so no two carry the same information, and a constant (collapsed) embedding is
impossible: its standardised dimensions would be 0 / 0. With lambda = 0 only invariance is left and
the dimensions become redundant copies (chapter 11's ablation).

**Over ranks** (``gather=True``, the default): the means, variances and C are sums over the global
batch, all-reduced with gradient (:func:`~contrastive_lab.distributed.all_reduce_sum_with_grad`), as
the official code all-reduces C; so W ranks compute the single-process loss and, after DDP's
average, its gradient.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..distributed import all_reduce_sum_with_grad
from ._common import _check_batch, _check_pair, _check_positive, _compute_dtype, _no_autocast

__all__ = ["BarlowTwinsLoss", "barlow_twins_loss", "barlow_twins_loss_reference", "cross_correlation",
           "redundancy_reduction"]

BN_EPS = 1e-5  # nn.BatchNorm1d's eps, as in the official code's affine-free BN


def _standardize(z: Tensor, n: Tensor, eps: float, gather: bool) -> Tensor:
    """(z - mean) / sqrt(var + eps) per dimension over the (global) batch of n rows, biased variance (BN)."""
    reduce = all_reduce_sum_with_grad if gather else (lambda x: x)
    mean = reduce(z.sum(dim=0)) / n
    var = reduce(((z - mean) ** 2).sum(dim=0)) / n
    return (z - mean) / torch.sqrt(var + eps)


def cross_correlation(z1: Tensor, z2: Tensor, eps: float = BN_EPS, gather: bool = True) -> Tensor:
    """C = zA^T zB / N of the batch-standardised embeddings (Barlow Twins Eq. 2), (D, D), in float32
    (float64 for float64 input); over every rank's rows when ``gather`` and distributed."""
    _check_pair(z1, z2, "z1", "z2")
    _check_batch(z1.shape[0], "cross_correlation", f"N={z1.shape[0]} rows; a batch std needs 2")
    eps = _check_positive(eps, "eps")
    with _no_autocast(z1):
        dtype = _compute_dtype(z1, z2)
        count = torch.tensor(float(z1.shape[0]), dtype=dtype, device=z1.device)
        n = all_reduce_sum_with_grad(count) if gather else count
        a, b = (_standardize(z.to(dtype), n, eps, gather) for z in (z1, z2))
        c = a.T @ b
        return (all_reduce_sum_with_grad(c) if gather else c) / n


def redundancy_reduction(c: Tensor, lambd: float = 5.1e-3) -> Tensor:
    """sum_i (1 - C_ii)^2 + lambda sum_{i != j} C_ij^2 of a cross-correlation matrix C (Barlow Twins Eq. 1)."""
    if isinstance(lambd, bool) or not isinstance(lambd, (int, float)) or not lambd >= 0:
        raise ValueError(f"lambd must be a number >= 0 (Barlow Twins: 5.1e-3), got {lambd!r}")
    if c.ndim != 2 or c.shape[0] != c.shape[1]:
        raise ValueError(f"c must be a square (D, D) cross-correlation matrix, got shape {tuple(c.shape)}")
    diag = torch.diagonal(c)
    on_diag = (1.0 - diag).pow(2).sum()
    off_diag = c.pow(2).sum() - diag.pow(2).sum()
    return on_diag + lambd * off_diag


def barlow_twins_loss(z1: Tensor, z2: Tensor, lambd: float = 5.1e-3, eps: float = BN_EPS,
                      gather: bool = True) -> Tensor:
    """Barlow Twins' loss (Eq. 1) of two views' embeddings: :func:`redundancy_reduction` of
    :func:`cross_correlation`.

    Args:
        z1, z2: (N, D) projector outputs of the two views (not standardised; done here), N >= 2.
        lambd: lambda >= 0, the weight of the off-diagonal terms (Sec. 2: 5e-3; official code: 0.0051).
        gather: reduce over all ranks (see the module docstring).
    """
    return redundancy_reduction(cross_correlation(z1, z2, eps, gather), lambd)


def barlow_twins_loss_reference(z1: Tensor, z2: Tensor, lambd: float = 5.1e-3, eps: float = BN_EPS) -> Tensor:
    """Barlow Twins Eq. 1-2 with explicit loops over the D x D entries (slow; one process)."""
    n, d = z1.shape
    a = (z1 - z1.mean(0)) / torch.sqrt(z1.var(0, unbiased=False) + eps)
    b = (z2 - z2.mean(0)) / torch.sqrt(z2.var(0, unbiased=False) + eps)
    loss = z1.new_zeros(())
    for i in range(d):
        for j in range(d):
            c_ij = sum(a[k, i] * b[k, j] for k in range(n)) / n
            loss = loss + ((1.0 - c_ij) ** 2 if i == j else lambd * c_ij**2)
    return loss


class BarlowTwinsLoss(nn.Module):
    """Module form of :func:`barlow_twins_loss` with its lambda."""

    def __init__(self, lambd: float = 5.1e-3, gather: bool = True) -> None:
        super().__init__()
        self.lambd, self.gather = float(lambd), bool(gather)

    def forward(self, z1: Tensor, z2: Tensor) -> Tensor:
        return barlow_twins_loss(z1, z2, self.lambd, gather=self.gather)

    def extra_repr(self) -> str:
        return f"lambd={self.lambd}, gather={self.gather}"
