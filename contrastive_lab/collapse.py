"""Collapse, measured on a batch of embeddings: the per-dimension spread of the l2-normalised rows and
the effective rank of the matrix. Chapter 11 (methods without negatives) plots both.

A Siamese network that only pulls two views together has a trivial optimum: map every image to one
constant vector. The loss is then perfect and the representation useless. Two numbers tell such a
*collapse* from a healthy embedding, and both are cheap enough to log at every training step:

=================================  ===========================================================
:func:`normalized_std`             SimSiam (Chen & He 2021), Fig. 2 and Sec. 4.1: the standard
                                   deviation over the batch of each dimension of z / ||z||,
                                   averaged over the d dimensions. 0 for a collapsed batch,
                                   1/sqrt(d) for an isotropic one (derivation below)
:func:`effective_rank`             RankMe (Garrido, Balestriero, Najman & LeCun 2023, Eq. 1):
                                   exp of the entropy of the normalised singular values. 1 for a
                                   collapsed batch, close to d for an isotropic one
:func:`collapse_logs`              both, as the training logs of the chapter-11 methods
=================================  ===========================================================

Why 1/sqrt(d): if z ~ N(0, I_d), u = z / ||z|| is uniform on the unit sphere; by symmetry
E[u_j] = 0 and E[u_j^2] = E[sum_j u_j^2] / d = 1/d, so every coordinate has standard deviation
1/sqrt(d). SimSiam's Fig. 2 shows the healthy run near that line and the run without stop-gradient
at 0. The effective rank tells the two kinds of "dimensional" collapse apart that the std averages
over: all rows on one line (rank 1) and rows spread in a k-dimensional subspace (rank ~k).

Each function has a NumPy twin (``*_reference``) for the tests.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "collapse_logs", "effective_rank", "effective_rank_reference", "normalized_std", "normalized_std_reference",
]  # fmt: skip

RANKME_EPS = 1e-7  # RankMe Eq. 1 adds epsilon to p_k so that log(0) never happens


def _check_batch(z: Tensor, name: str = "z") -> Tensor:
    """A finite (N, d) float tensor with N >= 2, as float32 (float64 stays float64)."""
    if not isinstance(z, Tensor) or z.ndim != 2 or not z.is_floating_point():
        raise ValueError(f"{name} must be a 2-D float tensor (N, d), got "
                         f"{tuple(z.shape) if isinstance(z, Tensor) else type(z).__name__}")
    if z.shape[0] < 2:
        raise ValueError(f"{name} needs at least 2 rows to have a spread, got {z.shape[0]}")
    if not bool(torch.isfinite(z).all()):
        raise ValueError(f"{name} holds NaN or inf: the run diverged before collapse could be measured")
    return z if z.dtype == torch.float64 else z.float()


def normalized_std(z: Tensor) -> Tensor:
    """mean_j std_i(z_ij / ||z_i||): the spread of the l2-normalised embeddings (SimSiam Fig. 2).

    The std is the unbiased one over the N rows, per dimension j, then averaged over the d
    dimensions. A collapsed batch (all rows equal, or all on one ray) gives 0; rows uniform on the
    sphere give 1/sqrt(d) (module docstring).
    """
    u = F.normalize(_check_batch(z), dim=1)
    return u.std(dim=0).mean()


def normalized_std_reference(z: Tensor) -> float:
    """:func:`normalized_std` in NumPy, one dimension at a time."""
    x = z.detach().double().cpu().numpy()
    u = x / np.linalg.norm(x, axis=1, keepdims=True)
    return float(np.mean([np.std(u[:, j], ddof=1) for j in range(u.shape[1])]))


def effective_rank(z: Tensor, eps: float = RANKME_EPS) -> Tensor:
    """RankMe: exp(-sum_k p_k log p_k) with p_k = sigma_k / ||sigma||_1 + eps (Garrido et al. 2023, Eq. 1).

    sigma_k are the singular values of the (N, d) embedding matrix itself (not centred, as in RankMe).
    It lies between 1 (one non-zero singular value: every row on one line, a collapse) and
    min(N, d) (all singular values equal). Computed with ``torch.linalg.svdvals``.
    """
    sigma = torch.linalg.svdvals(_check_batch(z))
    p = sigma / sigma.sum().clamp_min(torch.finfo(sigma.dtype).tiny) + eps
    return torch.exp(-(p * torch.log(p)).sum())


def effective_rank_reference(z: Tensor, eps: float = RANKME_EPS) -> float:
    """:func:`effective_rank` in NumPy with an explicit sum over the singular values."""
    sigma = np.linalg.svd(z.detach().double().cpu().numpy(), compute_uv=False)
    total = sigma.sum()
    entropy = 0.0
    for s in sigma:
        p = s / total + eps
        entropy -= p * np.log(p)
    return float(np.exp(entropy))


@torch.no_grad()
def collapse_logs(z: Tensor, prefix: str = "z") -> dict[str, Tensor]:
    """``{prefix_std: normalized_std(z), prefix_rank: effective_rank(z)}`` of one batch of embeddings,
    without gradient: the two collapse curves a method logs at every step (chapter 11)."""
    z = z.detach()
    return {f"{prefix}_std": normalized_std(z), f"{prefix}_rank": effective_rank(z)}
