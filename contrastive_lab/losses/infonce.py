"""MoCo's InfoNCE with a queue of negatives: :func:`info_nce`, its loop twin and :class:`InfoNCELoss`.

MoCo (He, Fan, Wu, Xie & Girshick 2019, "Momentum Contrast for Unsupervised Visual Representation
Learning"), Eq. 1 and Algorithm 1: each query q has one positive key k+ and K negative keys
(MoCo's queue, or memory-bank entries), scored by dot products of unit vectors over tau. The
same softmax over 1 + K candidates is the InfoNCE of van den Oord et al. 2018. Chapter 07
compares where the negatives come from (batch, memory bank, queue); chapter 08 trains MoCo.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ._common import (
    _check_batch,
    _check_embeddings,
    _check_pair,
    _check_temperature,
    _compute_dtype,
    _l2_normalize,
    _no_autocast,
)

__all__ = ["info_nce", "info_nce_reference", "InfoNCELoss"]


def _check_info_nce_inputs(query: Tensor, key: Tensor, negatives: Tensor) -> None:
    """Queries and positive keys (N, D), N >= 2, and negatives (K, D) with K >= 1 of the same D."""
    _check_pair(query, key, "query", "key")
    _check_batch(query.shape[0], "info_nce", f"N={query.shape[0]} rows in query and key")
    _check_embeddings(negatives, "negatives")
    if negatives.shape[0] < 1 or negatives.shape[1] != query.shape[1]:
        raise ValueError(
            f"negatives must have shape (K, D) with K >= 1 and D = {query.shape[1]} "
            f"(the query's dim), got {tuple(negatives.shape)}"
        )


def info_nce(query: Tensor, key: Tensor, negatives: Tensor, temperature: float = 0.07) -> Tensor:
    """MoCo's InfoNCE: one positive key vs a queue of K negatives, mean over N queries.

    MoCo (He et al. 2019), Eq. 1 and Algorithm 1 (``logits = cat([l_pos, l_neg])``, label 0)::

        L_q = -log  exp(q . k+ / tau) / sum_{i=0..K} exp(q . k_i / tau)

    where k_0 = k+ (positive logit at index 0) and k_1..k_K are the queue's negatives.

    Args:
        query: (N, D) queries q from the encoder being trained, N >= 2.
        key: (N, D) positive keys k+; in MoCo they come from the momentum encoder under
            ``no_grad`` -- this function does not detach them, the caller decides.
        negatives: (K, D) negative keys (MoCo's queue, K = 65536 in the paper).
        temperature: tau > 0 (MoCo: 0.07; MoCo v2: 0.2).
        All three are L2-normalised here (MoCo's encoders output normalised vectors).

    Returns:
        Scalar loss in float32 (float64 if an input is float64).
    """
    temperature = _check_temperature(temperature)
    _check_info_nce_inputs(query, key, negatives)
    with _no_autocast(query):
        dtype = _compute_dtype(query, key, negatives)
        q, k, neg = (_l2_normalize(x, dtype) for x in (query, key, negatives))
        q = q / temperature  # dividing (N, D) is cheaper than dividing the (N, 1+K) logits
        l_pos = (q * k).sum(dim=1, keepdim=True)  # (N, 1)
        l_neg = q @ neg.T  # (N, K)
        logits = torch.cat([l_pos, l_neg], dim=1)
        labels = torch.zeros(q.shape[0], dtype=torch.long, device=q.device)  # positive at 0
        return F.cross_entropy(logits, labels)


def info_nce_reference(query: Tensor, key: Tensor, negatives: Tensor, temperature: float = 0.07) -> Tensor:
    """MoCo Eq. 1 with a loop over queries and plain exp/log (slow)."""
    losses = []
    for q, k_pos in zip(F.normalize(query, dim=1), F.normalize(key, dim=1)):
        keys = [k_pos] + list(F.normalize(negatives, dim=1))  # k_0 = k+
        den = sum(torch.exp(torch.dot(q, k_i) / temperature) for k_i in keys)
        losses.append(-torch.log(torch.exp(torch.dot(q, k_pos) / temperature) / den))
    return torch.stack(losses).mean()


class InfoNCELoss(nn.Module):
    """Module form of :func:`info_nce` (MoCo, He et al. 2019, Eq. 1).

    Args:
        temperature: tau > 0, finite (MoCo default 0.07).
    """

    def __init__(self, temperature: float = 0.07) -> None:
        super().__init__()
        self.temperature = _check_temperature(temperature)

    def forward(self, query: Tensor, key: Tensor, negatives: Tensor) -> Tensor:
        return info_nce(query, key, negatives, self.temperature)

    def extra_repr(self) -> str:
        return f"temperature={self.temperature}"
