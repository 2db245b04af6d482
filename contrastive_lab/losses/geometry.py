"""Alignment and uniformity, the two properties a contrastive loss optimises (Wang & Isola 2020):
:func:`alignment` and :func:`uniformity`, each with a loop twin.

Wang & Isola 2020, "Understanding Contrastive Representation Learning through Alignment and
Uniformity on the Hypersphere", Eq. 4 (alignment: positives close) and Eq. 5 (uniformity:
features spread over the sphere). Not training losses here but measurements: chapter 04 uses
them to read what NT-Xent does, and ``evaluate.feature_alignment_uniformity`` wraps them.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ._common import (
    _check_batch,
    _check_embeddings,
    _check_pair,
    _check_positive,
    _compute_dtype,
    _l2_normalize,
    _no_autocast,
)

__all__ = ["alignment", "alignment_reference", "uniformity", "uniformity_reference"]


def alignment(z1: Tensor, z2: Tensor, alpha: float = 2.0) -> Tensor:
    """Alignment of positive pairs: E ||f(x) - f(y)||_2^alpha (lower is better).

    Wang & Isola 2020, "Understanding Contrastive Representation Learning through Alignment
    and Uniformity on the Hypersphere", Eq. 4. Their code assumes L2-normalised features;
    here the inputs are **normalised inside**, so raw embeddings can be passed.

    Args:
        z1, z2: (N, D) embeddings, N >= 2; row i of each is a positive pair.
        alpha: exponent > 0 (paper default 2).
    """
    alpha = _check_positive(alpha, "alpha", " (paper default 2)")
    _check_pair(z1, z2, "z1", "z2")
    _check_batch(z1.shape[0], "alignment", f"N={z1.shape[0]} rows in z1 and z2")
    with _no_autocast(z1):
        dtype = _compute_dtype(z1, z2)
        return (_l2_normalize(z1, dtype) - _l2_normalize(z2, dtype)).norm(dim=1).pow(alpha).mean()


def alignment_reference(z1: Tensor, z2: Tensor, alpha: float = 2.0) -> Tensor:
    """Wang & Isola Eq. 4 with a loop over pairs (slow)."""
    terms = [(x / x.norm() - y / y.norm()).norm() ** alpha for x, y in zip(z1, z2)]
    return sum(terms) / len(terms)


def uniformity(z: Tensor, t: float = 2.0) -> Tensor:
    """Uniformity: log E_{x != y} exp(-t ||f(x) - f(y)||_2^2) (lower is better).

    Wang & Isola 2020, Eq. 5, over the N(N-1)/2 distinct pairs of the batch (``torch.pdist``
    as in their code), computed as logsumexp(-t d^2) - log(#pairs) for stability.
    Inputs are normalised inside.

    Args:
        z: (N, D) embeddings, N >= 2.
        t: > 0 (paper default 2).
    """
    t = _check_positive(t, "t", " (paper default 2)")
    _check_embeddings(z, "z")
    _check_batch(z.shape[0], "uniformity", f"N={z.shape[0]} rows in z; a pair needs 2")
    with _no_autocast(z):
        sq_dist = torch.pdist(_l2_normalize(z, _compute_dtype(z)), p=2).pow(2)
        return torch.logsumexp(-t * sq_dist, dim=0) - math.log(sq_dist.numel())


def uniformity_reference(z: Tensor, t: float = 2.0) -> Tensor:
    """Wang & Isola Eq. 5 with a loop over pairs i < j and plain exp/log (slow)."""
    u = [x / x.norm() for x in z]
    terms = [torch.exp(-t * (u[i] - u[j]).norm() ** 2) for i in range(len(u)) for j in range(i + 1, len(u))]
    return torch.log(sum(terms) / len(terms))
