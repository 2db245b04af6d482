"""CPC's InfoNCE: one batch of predictions (:func:`cpc_info_nce`, :func:`cpc_accuracy`,
:class:`CPCInfoNCELoss`) and the loss over K predictors W_1..W_K (:func:`cpc_loss`), each with a loop twin.

van den Oord, Li & Vinyals 2018, "Representation Learning with Contrastive Predictive Coding",
Eq. 3-4: a prediction W_k c_t must pick its true future latent z_{t+k} among N candidates with
the log-bilinear score exp(z^T W_k c_t). :func:`cpc_loss` averages this over the offsets
k = 1..K for latents and contexts of shape (B, T, ..., D); the models that produce them live in
:mod:`contrastive_lab.cpc`. Chapter 09 teaches CPC (1-D signals, then image patches, CPC v2).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ._common import (
    _check_batch,
    _check_pair,
    _check_temperature,
    _compute_dtype,
    _l2_normalize,
    _no_autocast,
)

__all__ = [
    "cpc_info_nce", "cpc_info_nce_reference", "cpc_accuracy", "CPCInfoNCELoss",
    "cpc_loss", "cpc_loss_reference",
]  # fmt: skip


# --------------------------------------------------------------------------- one batch of predictions


def _cpc_rows(predictions: Tensor) -> str:
    """Where the M samples were counted, for the batch-size error message."""
    return f"M={predictions.shape[0]} rows in predictions and targets; one row has no negatives"


def _cpc_scores(predictions: Tensor, targets: Tensor, normalize: bool) -> Tensor:
    """(M, M) scores s_ij = (W_k c_t)_i . z_j in the compute dtype (cosines if ``normalize``)."""
    dtype = _compute_dtype(predictions, targets)
    if normalize:
        return _l2_normalize(predictions, dtype) @ _l2_normalize(targets, dtype).T
    return predictions.to(dtype) @ targets.to(dtype).T


def cpc_info_nce(
    predictions: Tensor, targets: Tensor, temperature: float = 1.0, normalize: bool = False
) -> Tensor:
    """CPC's InfoNCE: pick the true future latent among M candidates, mean over rows.

    van den Oord, Li & Vinyals 2018, Eq. 3-4. The score is the log-bilinear
    f_k(x_{t+k}, c_t) = exp(z_{t+k}^T W_k c_t); with predictions p_i = W_k c_t (row i) and
    targets z_j (row j), row i's positive is z_i and the other M-1 targets are negatives::

        L_N = -mean_i log  exp(p_i . z_i / tau) / sum_{j=1..M} exp(p_i . z_j / tau)

    Args:
        predictions: (M, D) predicted latents W_k c_t, rows aligned with ``targets``, M >= 2.
        targets: (M, D) actual latents z_{t+k}.
        temperature: tau > 0; 1.0 (no scaling) is the paper's form.
        normalize: use cosine similarity instead of raw dot products (off in the paper).

    Returns:
        Scalar loss in float32 (float64 if an input is float64).
    """
    temperature = _check_temperature(temperature)
    _check_pair(predictions, targets, "predictions", "targets")
    _check_batch(predictions.shape[0], "cpc_info_nce", _cpc_rows(predictions))
    with _no_autocast(predictions):
        logits = _cpc_scores(predictions, targets, normalize) / temperature
        return F.cross_entropy(logits, torch.arange(logits.shape[0], device=logits.device))


def cpc_info_nce_reference(
    predictions: Tensor, targets: Tensor, temperature: float = 1.0, normalize: bool = False
) -> Tensor:
    """CPC Eq. 4 with a loop over rows and plain exp/log (slow)."""
    if normalize:
        predictions, targets = F.normalize(predictions, dim=1), F.normalize(targets, dim=1)
    losses = []
    for i, p in enumerate(predictions):
        f = [torch.exp(torch.dot(z_j, p) / temperature) for z_j in targets]  # Eq. 3
        losses.append(-torch.log(f[i] / sum(f)))
    return torch.stack(losses).mean()


@torch.no_grad()
def cpc_accuracy(predictions: Tensor, targets: Tensor, normalize: bool = False) -> Tensor:
    """Fraction of rows whose highest-scoring target is their own (argmax_j s_ij == i).

    The accuracy of CPC's M-way classification task (van den Oord et al. 2018, Sec. 2.3);
    temperature does not change the argmax. Ties count as correct only if index i wins.
    """
    _check_pair(predictions, targets, "predictions", "targets")
    _check_batch(predictions.shape[0], "cpc_accuracy", _cpc_rows(predictions))
    with _no_autocast(predictions):
        scores = _cpc_scores(predictions, targets, normalize)
        return (scores.argmax(dim=1) == torch.arange(scores.shape[0], device=scores.device)).float().mean()


class CPCInfoNCELoss(nn.Module):
    """Module form of :func:`cpc_info_nce` (van den Oord et al. 2018, Eq. 4).

    Args:
        temperature: tau > 0, finite (1.0 = the paper's unscaled scores).
        normalize: cosine instead of dot-product scores.
    """

    def __init__(self, temperature: float = 1.0, normalize: bool = False) -> None:
        super().__init__()
        self.temperature = _check_temperature(temperature)
        self.normalize = bool(normalize)

    def forward(self, predictions: Tensor, targets: Tensor) -> Tensor:
        return cpc_info_nce(predictions, targets, self.temperature, self.normalize)

    def extra_repr(self) -> str:
        return f"temperature={self.temperature}, normalize={self.normalize}"


# --------------------------------------------------------------------------- over offsets k = 1..K


def _check_cpc_inputs(latents: Tensor, contexts: Tensor, predictors: Sequence[nn.Module]) -> int:
    """Shapes (B, T, ..., D) and (B, T, ..., C) with T > K; returns K."""
    for name, x in (("latents", latents), ("contexts", contexts)):
        if not isinstance(x, Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
        if x.ndim < 3:
            raise ValueError(
                f"{name} must be a (B, T, ..., dim) tensor (axis 1 = the predicted axis), got {tuple(x.shape)}"
            )
    if latents.shape[:-1] != contexts.shape[:-1]:
        raise ValueError(
            f"latents {tuple(latents.shape)} and contexts {tuple(contexts.shape)} must agree on every axis "
            "but the last (one context per latent position)"
        )
    k_max = len(predictors)
    if k_max < 1:
        raise ValueError("predictors is empty: pass one W_k per offset k = 1..K")
    if latents.shape[1] <= k_max:
        raise ValueError(
            f"cannot predict {k_max} steps ahead along an axis of length {latents.shape[1]}: "
            f"use at most {latents.shape[1] - 1} predictors (offsets)"
        )
    return k_max


def cpc_loss(
    latents: Tensor, contexts: Tensor, predictors: Sequence[nn.Module], temperature: float = 1.0
) -> tuple[Tensor, Tensor]:
    """CPC's InfoNCE (van den Oord et al. 2018, Eq. 3-4), averaged over offsets k = 1..K.

    ``latents`` z and ``contexts`` c have shape (B, T, ..., D) and (B, T, ..., C): axis 1 is the
    axis we predict along (time for signals, rows for images); the axes in "..." (columns) are
    positions that are predicted in parallel. ``predictors[k-1]`` is W_k, a map from C to D on
    the last axis. For each offset k::

        prediction   p = W_k c[:, t, ...]            for every t < T - k
        positive       z[:, t + k, ...]              (the same sequence / column, k steps ahead)
        candidates     every z[:, s, ...] with s >= k, from every sequence in the batch
        L_k = mean over predictions of  -log exp(p . z_pos / tau) / sum_candidates exp(p . z_j / tau)

    so the negatives are latents at other time steps of the same sequence *and* of the other
    sequences (CPC Sec. 2.3; for images: other patches of the same image and of other images,
    as in CPC v2, Hénaff et al. 2020, Sec. 2.1). The result is
    ``L = (1/K) sum_k L_k``. The paper sums over k; the mean keeps the loss on the scale of
    log N whatever K is, and only rescales the gradient. tau = 1 is the paper's plain dot product.

    Returns ``(loss, accuracy)``: ``accuracy[k-1]`` is the fraction of predictions whose highest
    score is the true future latent (chance: 1 / number of candidates). The loss is computed by
    :func:`contrastive_lab.losses.cpc_info_nce` in float32 (float64 for float64 inputs).
    """
    k_max = _check_cpc_inputs(latents, contexts, predictors)
    steps = latents.shape[1]
    losses, accuracies = [], []
    for k, w_k in enumerate(predictors, start=1):
        prediction = w_k(contexts[:, : steps - k])  # from every position that has a row k ahead
        target = latents[:, k:]  # row i of `target` is the future of row i of `prediction`
        p, z = prediction.reshape(-1, prediction.shape[-1]), target.reshape(-1, target.shape[-1])
        losses.append(cpc_info_nce(p, z, temperature=temperature))
        accuracies.append(cpc_accuracy(p, z))
    return torch.stack(losses).sum() / k_max, torch.stack(accuracies)


def cpc_loss_reference(
    latents: Tensor, contexts: Tensor, predictors: Sequence[nn.Module], temperature: float = 1.0
) -> Tensor:
    """:func:`cpc_loss` written position by position with exp/log (slow; for tests and reading).

    For each offset k and each position (b, t, j) that has a future, it lists the candidate set
    X_k = {z[b', s, j'] : s >= k} explicitly and evaluates Eq. 4 term by term.
    """
    k_max = _check_cpc_inputs(latents, contexts, predictors)
    batch, steps, rest = latents.shape[0], latents.shape[1], latents.shape[2:-1]
    columns = list(itertools.product(*(range(n) for n in rest)))  # [()] for 1-D sequences
    per_offset = []
    for k, w_k in enumerate(predictors, start=1):
        candidates = [latents[(b, s, *j)] for b in range(batch) for s in range(k, steps) for j in columns]
        terms = []
        for b in range(batch):
            for t in range(steps - k):
                for j in columns:
                    prediction = w_k(contexts[(b, t, *j)])  # W_k c_t
                    f_pos = torch.exp(torch.dot(latents[(b, t + k, *j)], prediction) / temperature)  # Eq. 3
                    f_all = sum(torch.exp(torch.dot(z_j, prediction) / temperature) for z_j in candidates)
                    terms.append(-torch.log(f_pos / f_all))  # Eq. 4, one term
        per_offset.append(torch.stack(terms).mean())
    return torch.stack(per_offset).sum() / k_max
