"""CMC's multiview InfoNCE: :func:`cmc_loss` over two or more views, its loop twin, and
:func:`cmc_edges`, which pairs of views are contrasted ("core view" or "full graph").

Tian, Krishnan & Isola 2019, "Contrastive Multiview Coding" (CMC), Sec. 3. Chapter 12 teaches it.
For two views V1, V2 of the same scenes (here: the L and ab channels of one image), the anchor
v1_i from V1 must pick its own scene's v2_i among k + 1 candidates from V2 (Eq. 2)::

    L^{V1,V2} = -E log  h(v1_i, v2_i) / sum_j h(v1_i, v2_j),   h(u, v) = exp(u.v / (|u| |v| tau))

and the loss is symmetric, L(V1, V2) = L^{V1,V2} + L^{V2,V1} (Eq. 3). With M > 2 views the pairs
are either every view against a "core" view V1 (Eq. 5, L_C = sum_{j>1} L(V1, Vj)) or all pairs
(Eq. 6, the "full graph", L_F = sum_{i<j} L(Vi, Vj)).

The candidates come from one of two places:

* the **batch** (``keys=None``): v2_j are the other images' V2 embeddings of this step. Then
  L(Vi, Vj) is exactly twice CLIP's symmetric loss at the fixed logit scale 1/tau
  (:func:`~contrastive_lab.losses.clip_loss`), which is how it is computed (with ``gather`` under DDP);
* a **memory bank** per view (CMC's official code, ``NCEAverage``; chapter 07's
  :class:`~contrastive_lab.memory.MemoryBank`): the positive is the bank entry of image i in the
  other view and the negatives are K bank entries of other images, shared by the batch, so each
  direction is MoCo's :func:`~contrastive_lab.losses.info_nce` (CMC's "softmax-CE" variant of NCE).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from ._common import _check_embeddings, _check_temperature
from .clip import clip_loss
from .infonce import info_nce

__all__ = ["CMC_GRAPHS", "cmc_edges", "cmc_loss", "cmc_loss_reference"]

CMC_GRAPHS = ("core", "full")


def cmc_edges(num_views: int, graph: str = "core") -> list[tuple[int, int]]:
    """The view pairs (i, j), i < j, that CMC contrasts: ``core`` (0, j) for every j > 0 (Eq. 5), or
    ``full``, every pair (Eq. 6). Two views give one pair either way."""
    if graph not in CMC_GRAPHS:
        raise ValueError(f"graph must be one of {CMC_GRAPHS} (CMC Eq. 5 / Eq. 6), got {graph!r}")
    if isinstance(num_views, bool) or not isinstance(num_views, int) or num_views < 2:
        raise ValueError(f"CMC needs at least 2 views, got {num_views!r}")
    if graph == "core":
        return [(0, j) for j in range(1, num_views)]
    return [(i, j) for i in range(num_views) for j in range(i + 1, num_views)]


def _check_views(z: Sequence[Tensor], name: str) -> None:
    """Two or more (N, D) embeddings of one shape."""
    if isinstance(z, Tensor) or len(z) < 2:
        raise ValueError(f"{name} must be a list of at least 2 (N, D) tensors, one per view")
    for v, x in enumerate(z):
        _check_embeddings(x, f"{name}[{v}]")
        if x.shape != z[0].shape:
            raise ValueError(f"{name}[{v}] has shape {tuple(x.shape)}, {name}[0] has {tuple(z[0].shape)}")


def cmc_loss(z: Sequence[Tensor], temperature: float = 0.07, graph: str = "core",
             keys: Sequence[Tensor] | None = None, negatives: Sequence[Tensor] | None = None,
             gather: bool = False) -> Tensor:
    """CMC's loss over the view pairs of ``graph``: sum over pairs (i, j) of L^{Vi,Vj} + L^{Vj,Vi}
    (Eq. 3, 5, 6), each direction a mean over the N anchors.

    Args:
        z: M >= 2 tensors (N, D), view v of the batch's N images (unnormalised; normalised here).
        temperature: tau > 0 (CMC's code: 0.07 on ImageNet, 0.1 on STL-10).
        graph: ``core`` or ``full`` (see :func:`cmc_edges`).
        keys, negatives: memory-bank candidates, both or neither: ``keys[v]`` (N, D) the bank
            entries of these images in view v (the positives), ``negatives[v]`` (K, D) bank entries
            of K other images in view v. Without them the negatives are the batch's other images.
        gather: batch negatives of all ranks under DDP (see :func:`~contrastive_lab.losses.clip_loss`).

    Returns:
        Scalar loss in float32 (float64 if an input is float64).
    """
    temperature = _check_temperature(temperature)
    _check_views(z, "z")
    edges = cmc_edges(len(z), graph)
    if (keys is None) != (negatives is None):
        raise ValueError("pass both keys and negatives (memory-bank candidates) or neither (batch negatives)")
    if keys is None:
        return sum(2 * clip_loss(z[i], z[j], 1.0 / temperature, gather=gather) for i, j in edges)
    _check_views(keys, "keys")
    if len(keys) != len(z) or len(negatives) != len(z) or keys[0].shape != z[0].shape:
        raise ValueError(f"keys and negatives need one (N, D) / (K, D) tensor per view ({len(z)} views)")
    return sum(info_nce(z[i], keys[j], negatives[j], temperature) + info_nce(z[j], keys[i], negatives[i], temperature)
               for i, j in edges)


def _direction_reference(anchors: Tensor, positives: Tensor, candidates: list[list[Tensor]], tau: float) -> Tensor:
    """-mean_n log h(a_n, p_n) / sum_c h(a_n, c) over candidate lists ``candidates[n]`` (which hold p_n)."""
    losses = []
    for n, a in enumerate(F.normalize(anchors, dim=1)):
        h = [torch.exp(torch.dot(a, c) / tau) for c in candidates[n]]
        losses.append(-torch.log(torch.exp(torch.dot(a, F.normalize(positives[n], dim=0)) / tau) / sum(h)))
    return torch.stack(losses).mean()


def cmc_loss_reference(z: Sequence[Tensor], temperature: float = 0.07, graph: str = "core",
                       keys: Sequence[Tensor] | None = None, negatives: Sequence[Tensor] | None = None) -> Tensor:
    """CMC Eq. 2-6 with loops over pairs, directions and anchors, and plain exp/log (slow)."""
    total = 0
    for i, j in cmc_edges(len(z), graph):
        for a, b in ((i, j), (j, i)):
            if keys is None:
                pos = z[b]
                cands = [[F.normalize(x, dim=0) for x in z[b]]] * len(z[a])  # every image of view b
            else:
                pos = keys[b]
                cands = [[F.normalize(keys[b][n], dim=0)] + list(F.normalize(negatives[b], dim=1))
                         for n in range(len(z[a]))]
            total = total + _direction_reference(z[a], pos, cands, temperature)
    return total
