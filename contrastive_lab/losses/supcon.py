"""The supervised contrastive loss: :func:`supcon_loss` (L_out), its loop twin and :class:`SupConLoss`.

Khosla et al. 2020, "Supervised Contrastive Learning" (SupCon), Eq. 2. Chapter 12 teaches it. The
batch holds N images in V views each, 2N "augmented samples" for V = 2, indexed by i in I. For the
anchor i, A(i) = I \\ {i} are all other samples and P(i) = {p in A(i) : y_p = y_i} those of its class::

    L_out = sum_{i in I}  -1/|P(i)|  sum_{p in P(i)}  log  exp(z_i . z_p / tau) / sum_{a in A(i)} exp(z_i . z_a / tau)

So every image of the anchor's class is a positive, not only the anchor's other view. With one
positive per anchor (all labels distinct) P(i) is the other view alone and L_out is SimCLR's NT-Xent
(Eq. 1 of the paper; tests check it). The paper also analyses L_in, with the 1/|P(i)| inside the
log, and finds it worse (Sec. 3.2.2, Table 1); only L_out is here.

Conventions (as the other losses here): the result is the **mean** over anchors (the official code
``losses.py`` does the same); an anchor with no positive in the batch (possible only with V = 1) has
nothing to be pulled towards and is left out of that mean (the official code counts it as 0).
The official code also multiplies by tau / base_tau (both 0.07 by default, so 1): not done here.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from contrastive_lab.distributed import all_gather_no_grad, all_gather_with_grad, get_rank, get_world_size

from ._common import _check_embeddings, _check_temperature, _compute_dtype, _l2_normalize, _no_autocast

__all__ = ["SupConLoss", "supcon_loss", "supcon_loss_reference"]


def _check_supcon(features: Tensor, labels: Tensor) -> None:
    """(N, V, D) features and (N,) integer labels."""
    _check_embeddings(features, "features", ndims=(3,))
    if not isinstance(labels, Tensor) or labels.shape != (features.shape[0],) or labels.is_floating_point():
        raise ValueError(f"labels must be an integer tensor of shape ({features.shape[0]},) (one per image), "
                         f"got {labels.shape if isinstance(labels, Tensor) else type(labels).__name__}")


def supcon_loss(features: Tensor, labels: Tensor, temperature: float = 0.1, gather: bool = False) -> Tensor:
    """SupCon's L_out (Khosla et al. 2020, Eq. 2), mean over the anchors that have a positive.

    Args:
        features: (N, V, D) embeddings z of N images in V views (the official ``[bsz, n_views, dim]``),
            unnormalised; normalised here.
        labels: (N,) class labels; images of one label are each other's positives. Give an image a
            label no other image has and its only positives are its own other views (SimCLR).
        temperature: tau > 0 (SupCon: 0.1, Sec. 4 and the official CIFAR commands).
        gather: under DDP the candidates A(i) are the samples of all ranks (features all-gathered
            with gradient, labels without); the anchors are this rank's, and the result is this
            rank's mean (with V >= 2 every anchor has a positive, so the mean over ranks is exact).

    Returns:
        Scalar loss in float32 (float64 if an input is float64).
    """
    temperature = _check_temperature(temperature)
    _check_supcon(features, labels)
    n, v, _ = features.shape
    world = get_world_size() if gather else 1
    with _no_autocast(features):
        dtype = _compute_dtype(features)
        unit = _l2_normalize(features, dtype)
        z = unit.transpose(0, 1).reshape(v * n, -1)  # view-major: sample a*N + k is view a of image k
        anchor_labels = labels.repeat(v)
        candidates, cand_labels, offset = z, anchor_labels, 0
        if world > 1:
            gathered = all_gather_with_grad(unit.flatten(1))  # (W*N, V*D): one collective
            candidates = gathered.view(world * n, v, -1).transpose(0, 1).reshape(v * world * n, -1)
            all_labels = all_gather_no_grad(labels)
            cand_labels, offset = all_labels.repeat(v), get_rank() * n
        rows = torch.arange(v * n, device=z.device)
        self_col = (rows // n) * (world * n) + offset + rows % n  # the anchor itself among the candidates
        logits = (z / temperature) @ candidates.T
        logits[rows, self_col] = float("-inf")  # A(i) excludes i
        log_prob = F.log_softmax(logits, dim=1).clone()
        log_prob[rows, self_col] = 0.0
        positive = anchor_labels[:, None] == cand_labels[None, :]
        positive[rows, self_col] = False
        count = positive.sum(1)
        if not bool((count > 0).any()):
            raise ValueError("no anchor has a positive: every label occurs once and V = 1; use V >= 2 views "
                             "(each anchor's other view is then a positive) or a batch with repeated labels")
        per_anchor = -(log_prob * positive).sum(1) / count.clamp_min(1)
        return per_anchor[count > 0].mean()


def supcon_loss_reference(features: Tensor, labels: Tensor, temperature: float = 0.1) -> Tensor:
    """SupCon Eq. 2 with loops over anchors i, positives p and candidates a (slow)."""
    n, v, _ = features.shape
    z = [F.normalize(features[k, a], dim=0) for a in range(v) for k in range(n)]
    y = [int(labels[k]) for _ in range(v) for k in range(n)]
    losses = []
    for i in range(len(z)):
        others = [a for a in range(len(z)) if a != i]
        positives = [p for p in others if y[p] == y[i]]
        if not positives:
            continue
        denominator = sum(torch.exp(torch.dot(z[i], z[a]) / temperature) for a in others)
        terms = [torch.log(torch.exp(torch.dot(z[i], z[p]) / temperature) / denominator) for p in positives]
        losses.append(-sum(terms) / len(positives))
    return torch.stack(losses).mean()


class SupConLoss(nn.Module):
    """Module form of :func:`supcon_loss` (Khosla et al. 2020, Eq. 2)."""

    def __init__(self, temperature: float = 0.1, gather: bool = False) -> None:
        super().__init__()
        self.temperature = _check_temperature(temperature)
        self.gather = bool(gather)

    def forward(self, features: Tensor, labels: Tensor) -> Tensor:
        return supcon_loss(features, labels, self.temperature, self.gather)

    def extra_repr(self) -> str:
        return f"temperature={self.temperature}, gather={self.gather}"
