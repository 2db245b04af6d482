"""Collapse of a trained encoder, measured on a set of images: the spread of the l2-normalised
features and their effective rank, on h = f(x) and on z = g(h). Chapter 11 reads it beside the kNN
monitor, after training and for every ablation.

The formulas are :func:`contrastive_lab.collapse.normalized_std` (SimSiam, Chen & He 2021, Fig. 2:
0 for a collapsed output, 1/sqrt(d) for an isotropic one) and
:func:`contrastive_lab.collapse.effective_rank` (RankMe, Garrido et al. 2023, Eq. 1). They live one
layer below, in :mod:`contrastive_lab.collapse`, so that the methods can log them on every training
batch; here they run on a frozen encoder's features of a whole split (eval-mode BN, no views).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..collapse import effective_rank, normalized_std
from ._checks import Transform
from .features import extract_features, has_projection, project_features

__all__ = ["collapse_metrics", "feature_collapse"]


def collapse_metrics(features: Tensor) -> dict[str, float]:
    """``{"std": normalized_std, "std_isotropic": 1/sqrt(d), "rank": effective_rank, "dim": d}`` of
    (N, d) features: the spread next to the value of an isotropic embedding of the same size, and the
    effective rank next to its maximum d."""
    d = features.shape[1]
    return {"std": float(normalized_std(features)), "std_isotropic": d**-0.5,
            "rank": float(effective_rank(features)), "dim": d}


@torch.no_grad()
def feature_collapse(encoder: nn.Module, images, head: nn.Module | None = None,
                     transform: Transform | None = None, device: torch.device | str | None = None,
                     autocast: bool = True) -> dict[str, dict[str, float]]:
    """:func:`collapse_metrics` of h = f(x) (key ``"h"``) and, when ``head`` projects, of z = g(h)
    (key ``"z"``), for the images (a uint8 (N, 3, H, W) tensor or a dataset with ``.images``)."""
    h = extract_features(encoder, images, device=device, transform=transform, autocast=autocast)
    out = {"h": collapse_metrics(h)}
    if has_projection(head):
        out["z"] = collapse_metrics(project_features(head, h))
    return out
