"""Chapter 04's checked exercises: NT-Xent written by hand (04.2) and the mutual information a batch
can certify (04.6)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ..losses import nt_xent
from .core import Case, Diagnosis, Exercise, ValueExercise, register


def _pairs(n: int, d: int, seed: int, dtype=torch.float32, scale: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    z1 = scale * torch.randn(n, d, generator=g)
    return z1.to(dtype), (z1 + 0.5 * scale * torch.randn(n, d, generator=g)).to(dtype)


def _cases() -> list[Case]:
    return [
        Case("8 pairs, T=0.5", (*_pairs(8, 16, 0), 0.5)),
        Case("batch of 2 (one negative pair)", (*_pairs(2, 4, 1), 0.5)),
        Case("small temperature T=0.05", (*_pairs(16, 8, 2), 0.05)),
        Case("large temperature T=10", (*_pairs(16, 8, 3), 10.0)),
        Case("unnormalised inputs (norm ~100)", (*_pairs(8, 16, 4, scale=100.0), 0.2)),
        Case("bf16 input", (*_pairs(8, 16, 5, dtype=torch.bfloat16), 0.5)),
    ]


def _logits(z1: torch.Tensor, z2: torch.Tensor, temperature: float, normalise: bool = True) -> torch.Tensor:
    z = torch.cat([z1, z2]).double()
    z = F.normalize(z, dim=1) if normalise else z
    return z @ z.T / temperature


def _targets(n: int) -> torch.Tensor:
    return torch.cat([torch.arange(n, 2 * n), torch.arange(n)])


def _with_diagonal(z1, z2, temperature):
    """Forgot to exclude k == i: each anchor also competes with itself."""
    return F.cross_entropy(_logits(z1, z2, temperature), _targets(len(z1)))


def _unnormalised(z1, z2, temperature):
    """Dot products instead of cosines: no L2 normalisation."""
    logits = _logits(z1, z2, temperature, normalise=False)
    logits.fill_diagonal_(float("-inf"))
    return F.cross_entropy(logits, _targets(len(z1)))


def _sum_of_views(z1, z2, temperature):
    """The official TF code's convention: loss_a + loss_b, twice the mean over 2N anchors."""
    return 2 * nt_xent(z1, z2, temperature)


def _times_temperature(z1, z2, temperature):
    """Multiplied by the temperature instead of divided."""
    logits = _logits(z1, z2, 1.0) * temperature
    logits.fill_diagonal_(float("-inf"))
    return F.cross_entropy(logits, _targets(len(z1)))


register(Exercise(
    id="04.2",
    title="NT-Xent by hand",
    cases=_cases,
    reference=nt_xent,
    hint="L2-normalise the rows, divide the cosine matrix by T, set the diagonal to -inf (k != i in Eq. 1), "
         "and take the cross-entropy of each of the 2N rows with the column of its other view; return the mean.",
    diagnoses=(
        Diagnosis("the diagonal (each anchor against itself) is not excluded", _with_diagonal),
        Diagnosis("the embeddings are not L2-normalised (dot products, not cosines)", _unnormalised),
        Diagnosis("the loss is summed over the two views (2x the mean over 2N anchors)", _sum_of_views),
        Diagnosis("the similarities are multiplied by T instead of divided", _times_temperature),
    ),
))


def mi_bound(batch_pairs: int) -> float:
    """log(2N - 1): the most mutual information (nats) NT-Xent can certify with N pairs, the log of the
    number of candidates each anchor picks its positive from (van den Oord et al. 2018, Sec. 2.3)."""
    return math.log(2 * batch_pairs - 1)


register(ValueExercise(
    id="04.6",
    title="the largest mutual information NT-Xent certifies at batch 4096 (nats)",
    band=lambda: (mi_bound(4096) - 2e-5, mi_bound(4096) + 2e-5),  # log(8192) is 1.2e-4 away: not 2N
    hint="InfoNCE bounds I(x; y) >= log(number of candidates) - loss; count the candidates of one anchor.",
))
