"""CLIP's symmetric image-text loss: :func:`clip_loss`, its loop twin and :class:`ClipLoss`,
which learns the temperature.

Radford et al. 2021, "Learning Transferable Visual Models From Natural Language Supervision"
(CLIP), Fig. 3 and Sec. 2.5: N matching image-text pairs give an N x N similarity matrix whose
rows (image -> text) and columns (text -> image) are both N-way classifications of the diagonal.
Chapter 04 mentions its learnt temperature; chapter 12 (more views, labels and modalities: CMC,
AMDIM, SupCon, CLIP) teaches it and trains CLIP with it. CMC's two-view loss with in-batch
negatives is the same loss at a fixed temperature (``losses.cmc``). Under DDP (``gather=True``)
every rank contrasts its own images and texts against those of all ranks.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from contrastive_lab.distributed import all_gather_with_grad, get_rank, get_world_size

from ._common import _check_batch, _check_pair, _check_positive, _compute_dtype, _l2_normalize, _no_autocast

__all__ = ["clip_loss", "clip_loss_reference", "ClipLoss"]


def _check_logit_scale(logit_scale: float | Tensor) -> None:
    """s = exp(t) > 0 and finite, as a Python number or a 1-element float tensor."""
    if isinstance(logit_scale, Tensor):
        if logit_scale.numel() != 1 or not logit_scale.is_floating_point():
            raise ValueError(f"logit_scale must be a float or a 1-element float tensor, got {logit_scale!r}")
        value = float(logit_scale.detach())
        if not math.isfinite(value) or value <= 0:
            raise ValueError(f"logit_scale must be a finite number > 0 (= 1/temperature), got {value}")
    else:
        _check_positive(logit_scale, "logit_scale", " (= 1/temperature; CLIP starts at 1/0.07)")


def clip_loss(image_emb: Tensor, text_emb: Tensor, logit_scale: float | Tensor, gather: bool = False) -> Tensor:
    """CLIP's symmetric cross-entropy over an N x N image-text similarity matrix.

    Radford et al. 2021, Fig. 3 (numpy-like pseudocode)::

        logits = s * normalize(I) @ normalize(T).T          # s = exp(t), the logit scale
        loss = (CE(logits, arange(N), axis=0) + CE(logits, arange(N), axis=1)) / 2

    i.e. the mean of the image->text (rows) and text->image (columns) cross-entropies.

    Args:
        image_emb, text_emb: (N, D) embeddings, N >= 2 (over all ranks with ``gather``), row i of
            each a matching pair; normalised here.
        logit_scale: s = exp(t) > 0, the multiplier (not its log); a float or a 0-dim
            tensor (which receives gradient). :class:`ClipLoss` learns it.
        gather: under ``torch.distributed``, this rank's N images are scored against the texts of
            *all* ranks and its N texts against all images (both all-gathered with gradient,
            :func:`~contrastive_lab.distributed.all_gather_with_grad`, one collective); the result
            is this rank's mean, and the mean over ranks is the single-process loss of the global
            batch (the ``nt_xent`` convention). Identity when not distributed.

    Returns:
        Scalar loss in float32 (float64 if an input is float64).
    """
    _check_logit_scale(logit_scale)
    _check_pair(image_emb, text_emb, "image_emb", "text_emb")
    n, world = image_emb.shape[0], (get_world_size() if gather else 1)
    _check_batch(n * world, "clip_loss", f"N={n} rows in image_emb and text_emb on {world} rank(s)")
    with _no_autocast(image_emb):
        dtype = _compute_dtype(image_emb, text_emb)
        i_e, t_e = _l2_normalize(image_emb, dtype), _l2_normalize(text_emb, dtype)
        scale = logit_scale.to(dtype).reshape(()) if isinstance(logit_scale, Tensor) else logit_scale
        all_i, all_t, offset = i_e, t_e, 0
        if world > 1:
            both = all_gather_with_grad(torch.cat([i_e, t_e], dim=1))  # (W*N, 2D)
            all_i, all_t, offset = *both.chunk(2, dim=1), get_rank() * n
        labels = torch.arange(offset, offset + n, device=image_emb.device)  # the diagonal of the global matrix
        image_to_text = F.cross_entropy(scale * i_e @ all_t.T, labels)  # rows: my images vs every text
        text_to_image = F.cross_entropy(scale * t_e @ all_i.T, labels)  # columns: my texts vs every image
        return (image_to_text + text_to_image) / 2


def clip_loss_reference(image_emb: Tensor, text_emb: Tensor, logit_scale: float | Tensor) -> Tensor:
    """CLIP Fig. 3 with explicit loops over images (rows) and texts (columns) (slow)."""
    i_e, t_e = F.normalize(image_emb, dim=1), F.normalize(text_emb, dim=1)
    n = i_e.shape[0]
    e = [[torch.exp(logit_scale * torch.dot(i_e[a], t_e[b])) for b in range(n)] for a in range(n)]
    loss_img = sum(-torch.log(e[a][a] / sum(e[a][b] for b in range(n))) for a in range(n)) / n
    loss_txt = sum(-torch.log(e[b][b] / sum(e[a][b] for a in range(n))) for b in range(n)) / n
    return (loss_img + loss_txt) / 2


class ClipLoss(nn.Module):
    """CLIP loss with a learnable temperature (Radford et al. 2021, Sec. 2.5 and Fig. 3).

    The log logit scale t is a parameter initialised to log(1/0.07); the scale used is
    ``exp(t)`` clamped to at most 100 ("clipped to prevent scaling the logits by more than
    100", Sec. 2.5). While clamped, t gets no gradient.

    Args:
        init_temperature: initial temperature, so t_0 = log(1/init_temperature).
        max_logit_scale: upper bound on exp(t).
        gather: contrast against the images and texts of all ranks (see :func:`clip_loss`).
    """

    def __init__(self, init_temperature: float = 0.07, max_logit_scale: float = 100.0, gather: bool = False) -> None:
        super().__init__()
        init_temperature = _check_positive(init_temperature, "init_temperature")
        self.max_logit_scale = _check_positive(max_logit_scale, "max_logit_scale")
        self.log_logit_scale = nn.Parameter(torch.tensor(math.log(1.0 / init_temperature)))
        self.gather = bool(gather)

    def logit_scale(self) -> Tensor:
        """The current multiplier min(exp(t), max_logit_scale)."""
        return self.log_logit_scale.exp().clamp(max=self.max_logit_scale)

    def forward(self, image_emb: Tensor, text_emb: Tensor) -> Tensor:
        return clip_loss(image_emb, text_emb, self.logit_scale(), gather=self.gather)

    def extra_repr(self) -> str:
        return f"max_logit_scale={self.max_logit_scale}, gather={self.gather}"
