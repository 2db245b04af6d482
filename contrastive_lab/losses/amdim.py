"""AMDIM's local-global InfoNCE: a global summary of one view must pick out the local features of
the *other* view of its image among the local features of every other image in the batch.
:func:`amdim_nce`, its loop twin :func:`amdim_nce_reference`, and :func:`tanh_clip`.

Bachman, Hjelm & Buchwalter 2019, "Learning Representations by Maximizing Mutual Information
Across Views" (AMDIM); the constants are the official code's (``amdim-public``, ``costs.py``).
Chapter 12 teaches it. With g_n the global feature of view 1 of image n and l_{m,p} the local
feature at position p of view 2 of image m, both D-dimensional::

    s_{n,m,p} = g_n . l_{m,p} / sqrt(D)                         raw score
    s'        = c tanh(s / c)                                   soft clipping (c = 10 in LossMultiNCE)
    L_nce     = -mean_{n,p} log  exp(s'_{n,n,p}) / (exp(s'_{n,n,p}) + sum_{m != n, q} exp(s'_{n,m,q}))
    L         = L_nce + lambda mean_{n,m,p} s^2                  lambda = 0.05: a penalty on the raw scores

Every position p of the image's own other view is a positive, each scored against the same
negatives: all positions of all other images. That is Deep InfoMax's local objective (Hjelm et
al. 2019) with the global and local features taken from *different* views, and CPC's InfoNCE
(chapter 09) with "predict the patch k rows below" replaced by "predict every patch of the other view".
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from contrastive_lab.distributed import all_gather_with_grad, get_rank, get_world_size

from ._common import _check_batch, _check_embeddings, _check_positive, _compute_dtype, _no_autocast

__all__ = ["amdim_nce", "amdim_nce_reference", "tanh_clip"]


def tanh_clip(x: Tensor, clip: float) -> Tensor:
    """Soft clipping to (-clip, clip): ``clip * tanh(x / clip)`` (AMDIM's ``tanh_clip``)."""
    return clip * torch.tanh(x / clip)


def _check_amdim(global_emb: Tensor, local_emb: Tensor) -> None:
    _check_embeddings(global_emb, "global_emb")
    _check_embeddings(local_emb, "local_emb", ndims=(3,))
    if local_emb.shape[0] != global_emb.shape[0] or local_emb.shape[2] != global_emb.shape[1]:
        raise ValueError(f"local_emb must be (N, P, D) for global_emb (N, D) = {tuple(global_emb.shape)}, "
                         f"got {tuple(local_emb.shape)}")


def amdim_nce(global_emb: Tensor, local_emb: Tensor, clip: float = 10.0, penalty: float = 0.05,
              gather: bool = False) -> Tensor:
    """AMDIM's NCE of global features predicting local ones (see the module docstring).

    Args:
        global_emb: (N, D) global features of one view (the "source", AMDIM's r1).
        local_emb: (N, P, D) local features of the other view at P positions (the "targets", r5 or r7).
            Neither is normalised (AMDIM scores raw dot products over sqrt(D)).
        clip: c of the soft clipping, > 0 (``LossMultiNCE(tclip=10.)``).
        penalty: lambda >= 0 of the squared-score penalty (``5e-2`` in ``NCE_MI_MULTI``); 0 = off.
        gather: under DDP, the local features of all ranks are the candidates (all-gathered with
            gradient); the result is this rank's mean, as in ``nt_xent``.

    Returns:
        Scalar loss in float32 (float64 if an input is float64).
    """
    clip = _check_positive(clip, "clip", " (AMDIM: 10 or 20)")
    if isinstance(penalty, bool) or not (isinstance(penalty, (int, float)) and penalty >= 0):
        raise ValueError(f"penalty must be a number >= 0 (AMDIM: 0.05), got {penalty!r}")
    _check_amdim(global_emb, local_emb)
    n, p, d = local_emb.shape
    world = get_world_size() if gather else 1
    _check_batch(n * world, "amdim_nce", f"N={n} images on {world} rank(s); one image has no negatives")
    with _no_autocast(global_emb):
        dtype = _compute_dtype(global_emb, local_emb)
        g, local = global_emb.to(dtype), local_emb.to(dtype)
        rank = 0
        if world > 1:
            local, rank = all_gather_with_grad(local), get_rank()
        raw = torch.einsum("nd,mpd->nmp", g, local) / math.sqrt(d)  # (N, W*N, P)
        reg = penalty * raw.pow(2).mean()
        scores = tanh_clip(raw, clip)
        own = torch.arange(n, device=g.device) + rank * n
        pos = scores[torch.arange(n, device=g.device), own]  # (N, P): every position of the own image
        neg = scores.clone()
        neg[torch.arange(n, device=g.device), own] = float("-inf")  # the own image is no negative
        neg_lse = torch.logsumexp(neg.flatten(1), dim=1, keepdim=True)  # (N, 1): shared by the N's positives
        nce = pos - torch.logaddexp(pos, neg_lse)
        return -nce.mean() + reg


def amdim_nce_reference(global_emb: Tensor, local_emb: Tensor, clip: float = 10.0, penalty: float = 0.05) -> Tensor:
    """:func:`amdim_nce` with loops over anchors and positive positions, plain exp/log (slow)."""
    n, p, d = local_emb.shape
    raw = [[[torch.dot(global_emb[a], local_emb[m, q]) / math.sqrt(d) for q in range(p)] for m in range(n)]
           for a in range(n)]
    reg = penalty * sum(s**2 for row in raw for col in row for s in col) / (n * n * p)
    total = 0
    for a in range(n):
        negatives = sum(torch.exp(tanh_clip(raw[a][m][q], clip)) for m in range(n) if m != a for q in range(p))
        for q in range(p):
            positive = torch.exp(tanh_clip(raw[a][a][q], clip))
            total = total - torch.log(positive / (positive + negatives))
    return total / (n * p) + reg
