"""SimSiam's loss: the negative cosine with a stop-gradient, :func:`negative_cosine`, the symmetrised
:func:`simsiam_loss`, their loop twins and :class:`SimSiamLoss`.

Chen & He 2021, "Exploring Simple Siamese Representation Learning", Eq. 1-4: with p = h(f(x)) the
predictor's output and z = f(x') the projection of the other view,

    D(p, z) = - p/||p|| . z/||z||                                     Eq. 1
    L = D(p1, stopgrad(z2)) / 2 + D(p2, stopgrad(z1)) / 2             Eq. 3-4

The stop-gradient is what keeps SimSiam from collapsing (Sec. 4.1, Fig. 2): without it the
optimiser finds the constant solution within a few epochs. ``stop_gradient=False`` is that
ablation (chapter 11 trains it).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ._common import _check_batch, _check_pair, _compute_dtype, _cosine_reference, _l2_normalize, _no_autocast

__all__ = ["SimSiamLoss", "negative_cosine", "negative_cosine_reference", "simsiam_loss", "simsiam_loss_reference"]


def negative_cosine(p: Tensor, z: Tensor, stop_gradient: bool = True) -> Tensor:
    """D(p, stopgrad(z)) = -cos(p_i, z_i), the mean over rows (SimSiam Eq. 1 and 3).

    Args:
        p: (N, D) predictions, N >= 2.
        z: (N, D) projections of the other view; detached here when ``stop_gradient``.
    Returns a scalar in float32 (float64 for float64 input), between -1 and 1.
    """
    _check_pair(p, z, "p", "z")
    _check_batch(p.shape[0], "negative_cosine", f"N={p.shape[0]} rows")
    with _no_autocast(p):
        dtype = _compute_dtype(p, z)
        target = z.detach() if stop_gradient else z
        return -(_l2_normalize(p, dtype) * _l2_normalize(target, dtype)).sum(dim=1).mean()


def simsiam_loss(p1: Tensor, p2: Tensor, z1: Tensor, z2: Tensor, stop_gradient: bool = True) -> Tensor:
    """L = D(p1, z2)/2 + D(p2, z1)/2 (SimSiam Eq. 4): each view's prediction against the other's projection."""
    return 0.5 * negative_cosine(p1, z2, stop_gradient) + 0.5 * negative_cosine(p2, z1, stop_gradient)


def negative_cosine_reference(p: Tensor, z: Tensor, stop_gradient: bool = True) -> Tensor:
    """SimSiam Eq. 1 with a loop over rows (slow); ``stop_gradient`` detaches z."""
    target = z.detach() if stop_gradient else z
    return -torch.stack([_cosine_reference(a, b) for a, b in zip(p, target)]).mean()


def simsiam_loss_reference(p1: Tensor, p2: Tensor, z1: Tensor, z2: Tensor, stop_gradient: bool = True) -> Tensor:
    """SimSiam Eq. 4 from :func:`negative_cosine_reference`."""
    return 0.5 * negative_cosine_reference(p1, z2, stop_gradient) + 0.5 * negative_cosine_reference(p2, z1, stop_gradient)


class SimSiamLoss(nn.Module):
    """Module form of :func:`simsiam_loss`; ``stop_gradient=False`` is SimSiam's collapsing ablation."""

    def __init__(self, stop_gradient: bool = True) -> None:
        super().__init__()
        self.stop_gradient = bool(stop_gradient)

    def forward(self, p1: Tensor, p2: Tensor, z1: Tensor, z2: Tensor) -> Tensor:
        return simsiam_loss(p1, p2, z1, z2, self.stop_gradient)

    def extra_repr(self) -> str:
        return f"stop_gradient={self.stop_gradient}"
