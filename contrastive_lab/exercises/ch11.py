"""Chapter 11's checked exercises: SimSiam's collapse meter, the std of the l2-normalised output (11.1,
against ``collapse.normalized_std``), the limit of that std on a line with random signs (11.2, a band
from ``collapse.normalized_std``), DINO's loss with its centre and two temperatures (11.3, against
``losses.dino_loss``) and the Barlow Twins loss with its lambda (11.4, against
``losses.barlow_twins_loss`` on one process)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from ..collapse import normalized_std
from ..losses import barlow_twins_loss, dino_loss
from ..losses.barlow import BN_EPS
from .core import Case, Diagnosis, Exercise, ValueExercise, register


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# --------------------------------------------------------------------------- 11.1 the std of z / ||z||


def _std_cases() -> list[Case]:
    g = _gen(110)
    ray = torch.randn(1, 16, generator=g)
    return [
        Case("64 isotropic rows, d = 16", (torch.randn(64, 16, generator=g),)),
        Case("batch of 2", (torch.randn(2, 8, generator=g),)),
        Case("collapsed: every row on one ray (std 0)", (ray * (0.1 + torch.rand(32, 1, generator=g)),)),
        Case("one line with random signs (rank 1, std not 0)",
             (ray * (2 * torch.randint(0, 2, (48, 1), generator=g) - 1),)),
        Case("unnormalised rows with an offset (norm ~1000)", (300 * (torch.randn(32, 12, generator=g) + 2),)),
        Case("bf16 input", (torch.randn(32, 16, generator=g).to(torch.bfloat16),)),
    ]


def _unit(z: Tensor, dim: int = 1) -> Tensor:
    return F.normalize(z.double(), dim=dim)


register(Exercise(
    id="11.1",
    title="the std of the l2-normalised output (SimSiam Fig. 2)",
    cases=_std_cases,
    reference=normalized_std,
    hint="divide every row by its own norm (F.normalize(z, dim=1), in float32 or float64), take the unbiased "
         "std over the N rows of each of the d columns (std(dim=0)), then the mean of those d numbers.",
    diagnoses=(
        Diagnosis("the biased std (divide by N): SimSiam's meter, like torch.std, uses the unbiased one (N - 1)",
                  lambda z: _unit(z).std(0, unbiased=False).mean()),
        Diagnosis("the rows are not l2-normalised (the std of z, not of z / ||z||)", lambda z: z.double().std(0).mean()),
        Diagnosis("the std is taken along each row (over the d dimensions) instead of over the batch",
                  lambda z: _unit(z).std(1).mean()),
        Diagnosis("each column is normalised over the batch (dim=0) instead of each row over its dimensions",
                  lambda z: _unit(z, dim=0).std(0).mean()),
    ),
))

# --------------------------------------------------------------------------- 11.2 the signed line

SIGNED_LINE_SEED, SIGNED_LINE_DIM = 5, 256


def signed_line_direction() -> Tensor:
    """The exercise's a: ``torch.randn(1, 256)`` in float64 from ``torch.Generator().manual_seed(5)``."""
    return torch.randn(1, SIGNED_LINE_DIM, generator=_gen(SIGNED_LINE_SEED), dtype=torch.float64)


def signed_line_std(rows: int = 20_000) -> float:
    """``normalized_std`` of z_i = s_i a with exactly balanced signs: the N -> infinity limit up to the
    unbiased std's sqrt(N / (N - 1)), a relative 2.5e-5 at N = 20000."""
    signs = torch.ones(rows, 1, dtype=torch.float64)
    signs[1::2] = -1
    return float(normalized_std(signs * signed_line_direction()))


register(ValueExercise(
    id="11.2",
    title="the N -> infinity std of the signed line z_i = s_i a for the seeded a",
    band=lambda: (signed_line_std() - 1e-4, signed_line_std() + 1e-4),  # sqrt(2/pi)/16 is 1.1e-3 away
    hint="z_i / ||z_i|| = s_i a / ||a||: coordinate j takes the values +-a_j / ||a|| with equal frequency, so its "
         "mean tends to 0 and its std to |a_j| / ||a||; average that over j for this a (not its expectation "
         "over Gaussian a).",
))

# --------------------------------------------------------------------------- 11.3 DINO's loss


def _dino_case(views: int, globals_: int, n: int, k: int, seed: int, scale: float = 1.0,
               dtype: torch.dtype = torch.float32) -> tuple[Tensor, Tensor, Tensor]:
    g = _gen(seed)
    student = scale * torch.randn(views, n, k, generator=g)
    teacher = scale * torch.randn(globals_, n, k, generator=g)
    center = 0.5 * scale * torch.randn(k, generator=g)
    return student.to(dtype), teacher.to(dtype), center.to(dtype)


def _dino_cases() -> list[Case]:
    s, _, c = _dino_case(2, 2, 6, 10, 114)
    return [
        Case("2 global views, 8 images, K = 16, tau_s = 0.1, tau_t = 0.04", (*_dino_case(2, 2, 8, 16, 111), 0.1, 0.04)),
        Case("multi-crop: 2 global + 3 local views", (*_dino_case(5, 2, 8, 16, 112), 0.1, 0.04)),
        Case("batch of 2 images, one teacher view (G = 1)", (*_dino_case(3, 1, 2, 8, 113), 0.1, 0.07)),
        Case("uniform teacher: its scores equal the centre (the log K fixed point)",
             (s, c.expand(2, 6, 10).clone(), c, 0.1, 0.04)),
        Case("small temperatures (tau_t = 0.01, tau_s = 0.02) on scores of size ~5",
             (*_dino_case(2, 2, 8, 16, 115, scale=5.0), 0.02, 0.01)),
        Case("large temperatures (tau_s = tau_t = 5)", (*_dino_case(4, 2, 8, 16, 116), 5.0, 5.0)),
        Case("bf16 input", (*_dino_case(4, 2, 8, 16, 117, dtype=torch.bfloat16), 0.1, 0.04)),
    ]


def _dino_variant(student, teacher, center, tau_s, tau_t, *, self_pairs=False, mean_over_k=False):
    p_t = torch.softmax((teacher.double() - center.double()) / tau_t, dim=-1)
    log_p_s = torch.log_softmax(student.double() / tau_s, dim=-1)
    ce = -torch.einsum("gnk,vnk->gvn", p_t, log_p_s) / (p_t.shape[-1] if mean_over_k else 1)
    ce = ce.mean(-1)  # (G, V): mean over the images
    if self_pairs:
        return ce.mean()
    keep = ~torch.eye(*ce.shape, dtype=torch.bool)
    return ce[keep].mean()


register(Exercise(
    id="11.3",
    title="DINO's loss with its centre and two temperatures",
    cases=_dino_cases,
    reference=dino_loss,
    hint="P_t = softmax((teacher - center) / tau_t) and log P_s = log_softmax(student / tau_s), over the K "
         "prototypes (log_softmax, not exp then log: small temperatures overflow); for every teacher view g and "
         "every student view v != g take -sum_k P_t log P_s averaged over the N images; return the mean over "
         "those G (V - 1) pairs. Upcast bf16 to float32.",
    diagnoses=(
        Diagnosis("the centre is not subtracted from the teacher's scores", lambda s, t, c, ts, tt: dino_loss(
            s, t, torch.zeros_like(c), ts, tt)),
        Diagnosis("the teacher's temperature is used for the student (tau_t divides both)",
                  lambda s, t, c, ts, tt: dino_loss(s, t, c, tt, tt)),
        Diagnosis("the two temperatures are swapped (the teacher must be the sharper one, tau_t < tau_s)",
                  lambda s, t, c, ts, tt: dino_loss(s, t, c, tt, ts)),
        Diagnosis("each global view is also compared with itself (the pairs need v != g)",
                  lambda *a: _dino_variant(*a, self_pairs=True)),
        Diagnosis("the cross-entropy is averaged over the K prototypes instead of summed",
                  lambda *a: _dino_variant(*a, mean_over_k=True)),
    ),
))

# --------------------------------------------------------------------------- 11.4 Barlow Twins


def library_barlow(z1: Tensor, z2: Tensor, lambd: float) -> Tensor:
    """``losses.barlow_twins_loss`` on one process (``gather=False``), BatchNorm's eps = 1e-5."""
    return barlow_twins_loss(z1, z2, lambd, gather=False)


def _views(n: int, d: int, seed: int, scale: float = 1.0, offset: float = 0.0,
           dtype: torch.dtype = torch.float32) -> tuple[Tensor, Tensor]:
    g = _gen(seed)
    z1 = torch.randn(n, d, generator=g)
    z2 = z1 + 0.7 * torch.randn(n, d, generator=g)
    return (scale * z1 + offset).to(dtype), (scale * z2 - offset).to(dtype)


def _barlow_cases() -> list[Case]:
    copies = torch.randn(32, 1, generator=_gen(121)).expand(32, 6).contiguous()
    constant = torch.full((16, 6), 0.3)
    return [
        Case("32 pairs, d = 8, lambda = 5.1e-3", (*_views(32, 8, 120), 5.1e-3)),
        Case("batch of 2", (*_views(2, 4, 122), 5.1e-3)),
        Case("six copies of one feature in both views (lambda d (d - 1))", (copies, copies, 5.1e-3)),
        Case("a collapsed batch (every row equal: C = 0, eps keeps it finite)", (constant, constant + 1.0, 5.1e-3)),
        Case("lambda = 0 (invariance only)", (*_views(32, 8, 123), 0.0)),
        Case("lambda = 1 (the off-diagonal weighted like the diagonal)", (*_views(32, 8, 124), 1.0)),
        Case("unnormalised views with an offset (std 100, mean +-50)", (*_views(32, 8, 125, 100.0, 50.0), 5.1e-3)),
        Case("small-scale views (std 0.01: BatchNorm's eps matters)", (*_views(32, 8, 126, 0.01), 5.1e-3)),
        Case("bf16 input", (*_views(32, 8, 127, dtype=torch.bfloat16), 5.1e-3)),
    ]


def _barlow_variant(z1, z2, lambd, *, standardise=True, unbiased=False, swap=False, diag_in_off=False):
    def prep(z):
        z = z.double()
        if not standardise:
            return z
        return (z - z.mean(0)) / torch.sqrt(z.var(0, unbiased=unbiased) + BN_EPS)

    a, b = prep(z1), prep(z2)
    c = a.T @ b / len(a)
    diag = torch.diagonal(c)
    on = (1 - diag).pow(2).sum()
    off = c.pow(2).sum() - (0 if diag_in_off else diag.pow(2).sum())
    return lambd * on + off if swap else on + lambd * off


register(Exercise(
    id="11.4",
    title="the Barlow Twins loss with its lambda",
    cases=_barlow_cases,
    reference=library_barlow,
    hint="standardise each column of each view over the batch like BatchNorm1d(affine=False): "
         "(z - mean) / sqrt(var + 1e-5) with the biased variance (divide by N); C = zA^T zB / N (d x d); "
         "loss = sum_i (1 - C_ii)^2 + lambda * sum over i != j of C_ij^2. Upcast bf16 to float32.",
    diagnoses=(
        Diagnosis("the embeddings are not standardised over the batch before C", lambda *a: _barlow_variant(
            *a, standardise=False)),
        Diagnosis("the unbiased variance (N - 1) in the standardisation: BatchNorm divides by N",
                  lambda *a: _barlow_variant(*a, unbiased=True)),
        Diagnosis("lambda weights the diagonal (invariance) term instead of the off-diagonal one",
                  lambda *a: _barlow_variant(*a, swap=True)),
        Diagnosis("the off-diagonal sum includes the diagonal (lambda applied to C_ii^2 too)",
                  lambda *a: _barlow_variant(*a, diag_in_off=True)),
    ),
))
