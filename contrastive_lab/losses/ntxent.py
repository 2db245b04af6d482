"""SimCLR's NT-Xent loss: the fast :func:`nt_xent`, its loop twin and the module :class:`NTXentLoss`.

SimCLR (Chen, Kornblith, Norouzi & Hinton 2020, "A Simple Framework for Contrastive Learning of
Visual Representations"), Eq. 1 and Algorithm 1: every one of the 2N views in a batch is an
anchor whose positive is the other view of its image and whose 2(N-1) negatives are all the
other views. Chapter 04 builds it by hand and checks it against :func:`nt_xent`; chapter 05
trains SimCLR with it, chapter 13 contrasts against the negatives of all ranks (``gather=True``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from contrastive_lab.distributed import all_gather_with_grad, get_rank, get_world_size

from ._common import (
    _check_batch,
    _check_pair,
    _check_temperature,
    _compute_dtype,
    _cosine_reference,
    _l2_normalize,
    _no_autocast,
)

__all__ = ["nt_xent", "nt_xent_reference", "NTXentLoss"]


def _nt_xent_targets(n: int, world: int, rank: int, device: torch.device) -> tuple[Tensor, Tensor]:
    """Column of each local anchor's own entry and of its positive among the 2*W*N candidates.

    Local anchors are ``[z1; z2]`` (2N rows). Candidates are ``[Z1; Z2]`` gathered from all
    ranks (rank-major), so local row i of z1 sits at global row ``rank*N + i`` of Z1.
    """
    total = world * n
    a = torch.arange(2 * n, device=device)
    view, row = a // n, rank * n + a % n
    return view * total + row, (1 - view) * total + row


def nt_xent(z1: Tensor, z2: Tensor, temperature: float = 0.5, gather: bool = False) -> Tensor:
    """SimCLR's normalised temperature-scaled cross-entropy (NT-Xent), mean over 2N anchors.

    SimCLR (Chen et al. 2020), Eq. 1 and Algorithm 1. With z_{2k-1}, z_{2k} the two views
    of example k and sim(u, v) = u^T v / (||u|| ||v||)::

        l(i, j) = -log  exp(sim(z_i, z_j)/tau) / sum_{k=1..2N, k != i} exp(sim(z_i, z_k)/tau)
        L = 1/(2N) sum_{k=1..N} [ l(2k-1, 2k) + l(2k, 2k-1) ]

    so every one of the 2N anchors has 1 positive and 2(N-1) negatives. Computed as a
    cross-entropy over a (2N, 2N) logit matrix whose diagonal (self-similarity) is -inf,
    i.e. with log-sum-exp, stable down to tiny temperatures.

    Note: the official TF code (``add_contrastive_loss``) returns ``loss_a + loss_b``, each
    a mean over N anchors, which is **2x** this value. Gradients differ by the same factor.

    Args:
        z1, z2: (N, D) *unnormalised* embeddings of the two views (row k of each is a
            positive pair), N >= 2 (over all ranks with ``gather``); normalised here. Any float dtype; fp16/bf16 are upcast.
        temperature: tau > 0 (SimCLR's code defaults to 0.1 for ImageNet; App. B.9 uses
            0.5 on CIFAR-10).
        gather: under ``torch.distributed``, contrast against the negatives of *all* ranks:
            the embeddings are all-gathered with gradient (:func:`all_gather_with_grad`),
            the anchors stay this rank's 2N, and the positive sits at this rank's offset.
            The result is this rank's mean; see ``all_gather_with_grad`` for why DDP then
            yields exactly the single-process gradient. Identity when not distributed.

    Returns:
        Scalar loss in float32 (float64 if an input is float64).
    """
    temperature = _check_temperature(temperature)
    _check_pair(z1, z2, "z1", "z2")
    n, world = z1.shape[0], (get_world_size() if gather else 1)
    _check_batch(n * world, "nt_xent", f"N={n} pairs in z1, z2 on {world} rank(s); one pair has no negatives")
    with _no_autocast(z1):
        dtype = _compute_dtype(z1, z2)
        z1n, z2n = _l2_normalize(z1, dtype), _l2_normalize(z2, dtype)
        anchors = torch.cat([z1n, z2n])  # (2N, D)
        rank, candidates = 0, anchors
        if world > 1:
            both = all_gather_with_grad(torch.cat([z1n, z2n], dim=1))  # one collective: (W*N, 2D)
            rank, candidates = get_rank(), torch.cat(both.chunk(2, dim=1))  # (2*W*N, D)
        self_col, pos_col = _nt_xent_targets(n, world, rank, z1.device)
        logits = (anchors / temperature) @ candidates.T  # (2N, 2WN); scaling (2N, D) is cheaper
        rows = torch.arange(2 * n, device=z1.device)
        logits.index_put_((rows, self_col), logits.new_tensor(float("-inf")))  # k != i in Eq. 1
        return F.cross_entropy(logits, pos_col)


def nt_xent_reference(z1: Tensor, z2: Tensor, temperature: float = 0.5) -> Tensor:
    """NT-Xent written as SimCLR's Algorithm 1: loops over anchors, plain exp/log (slow)."""
    n = z1.shape[0]
    z = [z1[k // 2] if k % 2 == 0 else z2[k // 2] for k in range(2 * n)]  # z_{2k-1}, z_{2k}

    def ell(i: int, j: int) -> Tensor:
        num = torch.exp(_cosine_reference(z[i], z[j]) / temperature)
        den = sum(torch.exp(_cosine_reference(z[i], z[k]) / temperature) for k in range(2 * n) if k != i)
        return -torch.log(num / den)

    return sum(ell(2 * k, 2 * k + 1) + ell(2 * k + 1, 2 * k) for k in range(n)) / (2 * n)


class NTXentLoss(nn.Module):
    """Module form of :func:`nt_xent` (SimCLR, Chen et al. 2020, Eq. 1).

    Args:
        temperature: tau > 0, finite.
        gather: contrast against negatives from all ranks under torch.distributed.
    """

    def __init__(self, temperature: float = 0.5, gather: bool = False) -> None:
        super().__init__()
        self.temperature = _check_temperature(temperature)
        self.gather = bool(gather)

    def forward(self, z1: Tensor, z2: Tensor) -> Tensor:
        return nt_xent(z1, z2, self.temperature, self.gather)

    def extra_repr(self) -> str:
        return f"temperature={self.temperature}, gather={self.gather}"
