"""BYOL's regression loss: :func:`byol_loss`, its loop twin and :class:`BYOLLoss`.

Grill et al. 2020, "Bootstrap Your Own Latent: A New Approach to Self-Supervised Learning", Eq. 2:
the online network's prediction q(z) of one view regresses the target network's projection z' of
the other view, both l2-normalised ("normalized MSE"),

    L(p, z') = || p/||p|| - z'/||z'|| ||^2 = 2 - 2 <p, z'> / (||p|| ||z'||),

and BYOL symmetrises it over the two views (Eq. 3, L + L~). There are no negatives: nothing in
this loss stops a constant output, which is what chapter 11 is about. The target z' gets no
gradient in BYOL; the function does not detach it (the caller computes it under ``no_grad``).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ._common import _check_batch, _check_pair, _compute_dtype, _l2_normalize, _no_autocast

__all__ = ["BYOLLoss", "byol_loss", "byol_loss_reference"]


def byol_loss(prediction: Tensor, target: Tensor) -> Tensor:
    """2 - 2 cos(p_i, z'_i), the mean over the N rows (BYOL Eq. 2), in float32 (float64 for float64 input).

    Args:
        prediction: (N, D) online predictions q(g(f(x))), N >= 2.
        target: (N, D) target projections g'(f'(x')) of the other view (not detached here).
    """
    _check_pair(prediction, target, "prediction", "target")
    _check_batch(prediction.shape[0], "byol_loss", f"N={prediction.shape[0]} rows")
    with _no_autocast(prediction):
        dtype = _compute_dtype(prediction, target)
        p, z = _l2_normalize(prediction, dtype), _l2_normalize(target, dtype)
        return (2.0 - 2.0 * (p * z).sum(dim=1)).mean()


def byol_loss_reference(prediction: Tensor, target: Tensor) -> Tensor:
    """BYOL Eq. 2 as the squared distance of the normalised vectors, one row at a time (slow)."""
    terms = [((p / p.norm() - z / z.norm()) ** 2).sum() for p, z in zip(prediction, target)]
    return torch.stack(terms).mean()


class BYOLLoss(nn.Module):
    """Module form of :func:`byol_loss` (no settings: the loss has no temperature)."""

    def forward(self, prediction: Tensor, target: Tensor) -> Tensor:
        return byol_loss(prediction, target)
