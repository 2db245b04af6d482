"""Chapter 09's checked exercises: CPC's InfoNCE for one offset k (09.7) and the loss of a predictor
at chance level (09.8)."""

from __future__ import annotations

import torch

from ..losses import cpc_info_nce, cpc_loss_reference
from .core import Case, Diagnosis, Exercise, ValueExercise, register

# --------------------------------------------------------------------------- 09.7


def reference_offset_loss(latents: torch.Tensor, contexts: torch.Tensor, w: torch.Tensor, k: int) -> torch.Tensor:
    """L_k of :func:`cpc_loss_reference` for the one offset k with W_k = ``w`` (D, C).

    ``cpc_loss_reference`` averages offsets 1..K; offset k alone is its offset 1 on the shifted
    axes: latents from position k - 1 on (so the candidates are z_s with s >= k) and contexts up to
    position T - k (so every prediction c_t, t < T - k, has its future z_{t+k})."""
    steps = latents.shape[1]
    return cpc_loss_reference(latents[:, k - 1:], contexts[:, : steps - k + 1], [lambda c: c @ w.T])


def _cpc_case(shape: tuple[int, ...], d: int, c: int, k: int, seed: int, scale: float = 0.5) -> tuple:
    g = torch.Generator().manual_seed(seed)
    latents = scale * torch.randn(*shape, d, generator=g)
    contexts = torch.randn(*shape, c, generator=g)
    w = scale * torch.randn(d, c, generator=g) / c ** 0.5
    return latents, contexts, w, k


def _cpc_cases() -> list[Case]:
    return [
        Case("4 sequences of 8 steps, k=1", _cpc_case((4, 8), 6, 5, 1, 0)),
        Case("4 sequences of 8 steps, k=3", _cpc_case((4, 8), 6, 5, 3, 1)),
        Case("k = T - 1 (one prediction per sequence)", _cpc_case((3, 5), 4, 4, 4, 2)),
        Case("one sequence (negatives from its own other steps only), k=2", _cpc_case((1, 9), 4, 3, 2, 3)),
        Case("a 2 x 5 x 3 grid of image patches (rows predicted), k=2", _cpc_case((2, 5, 3), 4, 6, 2, 4)),
    ]


def _flat(x: torch.Tensor) -> torch.Tensor:
    return x.reshape(-1, x.shape[-1])


def _all_candidates(latents, contexts, w, k):
    """The candidates include the first k latents of each sequence (every z_s, not just s >= k)."""
    steps = latents.shape[1]
    p, z = _flat(contexts[:, : steps - k] @ w.T), _flat(latents)
    pos = _flat(latents[:, k:])
    logits = p @ z.T
    return (torch.logsumexp(logits, 1) - (p * pos).sum(1)).mean()


def _off_by_one(latents, contexts, w, k):
    """The positive is k - 1 steps ahead instead of k (or k + 1)."""
    j = k - 1 if k > 1 else k + 1
    steps = latents.shape[1]
    return cpc_info_nce(_flat(contexts[:, : steps - j] @ w.T), _flat(latents[:, j:]))


def _cosine(latents, contexts, w, k):
    """Cosine similarities instead of CPC's raw dot products z^T W_k c_t."""
    steps = latents.shape[1]
    return cpc_info_nce(_flat(contexts[:, : steps - k] @ w.T), _flat(latents[:, k:]), normalize=True)


register(Exercise(
    id="09.7",
    title="CPC's InfoNCE for one offset k",
    cases=_cpc_cases,
    reference=reference_offset_loss,
    hint="Predict p = W_k c_t (c @ w.T) for every position t < T - k of every sequence (and column); the "
         "positive of p is z_{t+k} of the same sequence and column; the candidates are every z_s with s >= k "
         "of every sequence and column in the batch. Scores are raw dot products (Eq. 3); return the mean of "
         "-log softmax over the candidates at the positive (Eq. 4).",
    diagnoses=(
        Diagnosis("the candidates include the first k latents of each sequence (all z_s, not s >= k)",
                  _all_candidates),
        Diagnosis("the positive is not exactly k steps ahead (off by one)", _off_by_one),
        Diagnosis("cosine similarities instead of CPC's raw dot products", _cosine),
    ),
    rtol=1e-4,
    atol=1e-4,
))

# --------------------------------------------------------------------------- 09.8

CHANCE_SEQUENCES, CHANCE_STEPS, CHANCE_K = 8, 20, 4


def chance_loss(batch: int = CHANCE_SEQUENCES, steps: int = CHANCE_STEPS, k: int = CHANCE_K) -> float:
    """The library's CPC loss at offset k with W_k = 0, which scores every candidate alike."""
    g = torch.Generator().manual_seed(0)
    latents = torch.randn(batch, steps - k, 3, generator=g)  # the candidates z_s, s >= k
    predictions = torch.zeros(batch * (steps - k), 3)  # W_k c_t = 0 for every t < T - k
    return float(cpc_info_nce(predictions, latents.reshape(-1, 3)))


register(ValueExercise(
    id="09.8",
    title=f"the CPC loss at chance level ({CHANCE_SEQUENCES} sequences of {CHANCE_STEPS} steps, k={CHANCE_K})",
    band=lambda: (chance_loss() - 1e-4, chance_loss() + 1e-4),
    hint="A W_k that scores every candidate the same gives -log(1 / N) for every prediction: count N, the "
         "candidates z_s (s >= k) of every sequence in the batch.",
))
