"""The geometry of an embedding: alignment and uniformity on the hypersphere (Wang & Isola 2020),
measured on features of two views of the same images. Chapter 04 derives them from NT-Xent.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from ..losses import alignment, uniformity
from ._checks import _as_features


def feature_alignment_uniformity(z1: Tensor, z2: Tensor, alpha: float = 2.0, t: float = 2.0) -> dict:
    r"""Alignment and uniformity of features of two views of the same images (Wang & Isola 2020).

    Rows are first L2-normalised onto the unit sphere (the paper's setting, Sec 4.1), then

    .. math::
        \mathcal L_\text{align} = \mathbb E\,\|f(x) - f(y)\|_2^\alpha, \qquad
        \mathcal L_\text{uniform} = \log \mathbb E_{i \ne j}\, e^{-t \|f(x_i) - f(x_j)\|_2^2}

    (Eqs. 4 and 5 / Sec 4.1, alpha = t = 2). Uniformity is averaged over the two views, as in the
    paper's reference code. Lower is better for both. The formulas come from
    :func:`contrastive_lab.losses.alignment` and :func:`contrastive_lab.losses.uniformity`.
    """
    z1, z2 = _as_features(z1, "z1"), _as_features(z2, "z2")
    if z1.shape != z2.shape:
        raise ValueError(
            f"z1 and z2 must be paired views with the same shape, got {tuple(z1.shape)} and "
            f"{tuple(z2.shape)}."
        )
    if len(z1) < 2:
        raise ValueError("uniformity needs at least 2 feature rows.")
    z1, z2 = F.normalize(z1, dim=1), F.normalize(z2, dim=1)
    align = alignment(z1, z2, alpha=alpha)
    unif = (uniformity(z1, t=t) + uniformity(z2, t=t)) / 2
    return {"alignment": float(align), "uniformity": float(unif)}
