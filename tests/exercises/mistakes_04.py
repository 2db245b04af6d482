"""Plausible wrong answers to chapter 04's checked exercises, with the problem the checker must name."""

import math

import torch
import torch.nn.functional as F


def _logits(z1, z2, temperature):
    z = F.normalize(torch.cat([z1, z2]).float(), dim=1)
    return z @ z.T / temperature


def _targets(n):
    return torch.cat([torch.arange(n, 2 * n), torch.arange(n)])


def diagonal_kept(z1, z2, temperature):
    return F.cross_entropy(_logits(z1, z2, temperature), _targets(len(z1)))


def not_normalised(z1, z2, temperature):
    z = torch.cat([z1, z2]).float()
    logits = z @ z.T / temperature
    logits.fill_diagonal_(float("-inf"))
    return F.cross_entropy(logits, _targets(len(z1)))


def summed_over_views(z1, z2, temperature):
    logits = _logits(z1, z2, temperature)
    logits.fill_diagonal_(float("-inf"))
    n = len(z1)
    return F.cross_entropy(logits[:n], _targets(n)[:n]) + F.cross_entropy(logits[n:], _targets(n)[n:])


def wrong_positive(z1, z2, temperature):
    logits = _logits(z1, z2, temperature)
    logits.fill_diagonal_(float("-inf"))
    return F.cross_entropy(logits, torch.arange(2 * len(z1)).roll(1))  # an off-by-one target


MISTAKES = {
    "04.2": [
        (diagonal_kept, "the diagonal (each anchor against itself) is not excluded"),
        (not_normalised, "not L2-normalised"),
        (summed_over_views, "summed over the two views"),
        (wrong_positive, None),  # no diagnosis for this one: the checker must still fail it, with the hint
    ],
    "04.6": [(math.log(4096), None), (math.log(2 * 4096), None)],  # N candidates; 2N (the anchor counted)
}
