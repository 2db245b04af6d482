"""Plausible wrong answers to chapter 09's checked exercises, with the problem the checker must name."""

import math

import torch
import torch.nn.functional as F


def _rows(x):
    return x.reshape(-1, x.shape[-1])


def all_candidates(latents, contexts, w, k):
    steps = latents.shape[1]
    p, pos, z = _rows(contexts[:, : steps - k] @ w.T), _rows(latents[:, k:]), _rows(latents)
    return (torch.logsumexp(p @ z.T, 1) - (p * pos).sum(1)).mean()


def one_step_short(latents, contexts, w, k):
    j = k - 1 if k > 1 else 2
    steps = latents.shape[1]
    p, z = _rows(contexts[:, : steps - j] @ w.T), _rows(latents[:, j:])
    return F.cross_entropy(p @ z.T, torch.arange(len(p)))


def cosine_scores(latents, contexts, w, k):
    steps = latents.shape[1]
    p, z = F.normalize(_rows(contexts[:, : steps - k] @ w.T), dim=1), F.normalize(_rows(latents[:, k:]), dim=1)
    return F.cross_entropy(p @ z.T, torch.arange(len(p)))


def own_sequence_only(latents, contexts, w, k):  # negatives only from the same sequence (and column)
    steps = latents.shape[1]
    p, z = contexts[:, : steps - k] @ w.T, latents[:, k:]
    p, z = p.movedim(1, -2).reshape(-1, steps - k, w.shape[0]), z.movedim(1, -2).reshape(-1, steps - k, w.shape[0])
    logits = p @ z.transpose(1, 2)
    return F.cross_entropy(logits.reshape(-1, steps - k), torch.arange(steps - k).repeat(len(p)))


MISTAKES = {
    "09.7": [
        (all_candidates, "the candidates include the first k latents"),
        (one_step_short, "not exactly k steps ahead"),
        (cosine_scores, "cosine similarities instead of"),
        (own_sequence_only, None),
    ],
    "09.8": [(math.log(8 * 20), None), (math.log(8 * 16 - 1), None), (math.log(16), None)],
}
