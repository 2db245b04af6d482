"""Chapter 05's checked exercises: NT-Xent with Algorithm 1's interleaved ordering (05.1), one LARS
update of one weight tensor (05.6), and the batch size at which SimCLR's two learning-rate rules
agree (05.7), against ``losses.nt_xent`` and ``optim.LARS`` / ``optim.scale_lr``."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..losses import nt_xent
from ..optim import LARS, scale_lr
from .core import Case, Diagnosis, Exercise, ValueExercise, register

# --------------------------------------------------------------------------------------------
# 05.1 interleaved NT-Xent
# --------------------------------------------------------------------------------------------


def library_interleaved(z: torch.Tensor, temperature: float) -> torch.Tensor:
    """The library's NT-Xent on interleaved rows: rows 2k and 2k + 1 are the two views of image k."""
    return nt_xent(z[0::2], z[1::2], temperature)


def _interleaved(n: int, d: int, seed: int, dtype=torch.float32, scale: float = 1.0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    z1 = scale * torch.randn(n, d, generator=g)
    z2 = z1 + 0.5 * scale * torch.randn(n, d, generator=g)
    return torch.stack([z1, z2], dim=1).reshape(2 * n, d).to(dtype)  # z1[0], z2[0], z1[1], z2[1], ...


def _interleaved_cases() -> list[Case]:
    return [
        Case("8 pairs, T=0.5", (_interleaved(8, 16, 0), 0.5)),
        Case("batch of 2 (one negative pair)", (_interleaved(2, 4, 1), 0.5)),
        Case("small temperature T=0.1", (_interleaved(16, 8, 2), 0.1)),
        Case("unnormalised rows (norm ~50)", (_interleaved(8, 16, 3, scale=50.0), 0.2)),
        Case("bf16 input", (_interleaved(8, 16, 4, dtype=torch.bfloat16), 0.5)),
    ]


def _loss(z, temperature, targets, mask=True):
    z = F.normalize(z.double(), dim=1)
    logits = z @ z.T / temperature
    if mask:
        logits.fill_diagonal_(float("-inf"))
    return F.cross_entropy(logits, targets)


register(Exercise(
    id="05.1",
    title="NT-Xent with the interleaved ordering of Algorithm 1",
    cases=_interleaved_cases,
    reference=library_interleaved,
    hint="the (2N, 2N) cosine matrix over all rows, divided by T, diagonal set to -inf; the positive of row i "
         "is its neighbour in the same pair: i + 1 for even i, i - 1 for odd i (i XOR 1).",
    diagnoses=(
        Diagnosis("the targets are the concatenated layout's (i + N): with interleaved rows the partner is i XOR 1",
                  lambda z, t: _loss(z, t, (torch.arange(len(z)) + len(z) // 2) % len(z))),
        Diagnosis("the diagonal (each anchor against itself) is not excluded",
                  lambda z, t: _loss(z, t, torch.arange(len(z)) ^ 1, mask=False)),
        Diagnosis("every row's target is the next row (i + 1): for odd rows the partner is the previous row",
                  lambda z, t: _loss(z, t, (torch.arange(len(z)) + 1) % len(z))),
    ),
))


# --------------------------------------------------------------------------------------------
# 05.6 one LARS update
# --------------------------------------------------------------------------------------------


def library_lars_step(w, grad, buf, lr, momentum, weight_decay, trust_coefficient=1e-3, eps=1e-8):
    """One ``optim.LARS`` step on a single weight tensor: returns (new weight, new momentum buffer)."""
    p = torch.nn.Parameter(w.detach().clone())
    p.grad = grad.detach().clone()
    opt = LARS([p], lr=lr, momentum=momentum, weight_decay=weight_decay, trust_coefficient=trust_coefficient,
               eps=eps)
    opt.state[p]["momentum_buffer"] = buf.detach().clone()
    opt.step()
    return p.detach().clone(), opt.state[p]["momentum_buffer"].clone()


def _tensors(shape, seed, w_scale=1.0, g_scale=1e-3, buf_scale=0.0):
    g = torch.Generator().manual_seed(seed)
    w = w_scale * torch.randn(*shape, generator=g, dtype=torch.float64)
    grad = g_scale * torch.randn(*shape, generator=g, dtype=torch.float64)
    buf = buf_scale * torch.randn(*shape, generator=g, dtype=torch.float64)
    return w, grad, buf


def _lars_cases() -> list[Case]:
    return [
        Case("first step of a conv kernel (buffer 0)", (*_tensors((8, 3, 3, 3), 0), 4.8, 0.9, 1e-6)),
        Case("a later step (buffer != 0)", (*_tensors((16, 8), 1, buf_scale=0.05), 0.3, 0.9, 1e-6)),
        Case("strong weight decay (wd=0.1) with a tiny gradient",
             (*_tensors((16, 8), 2, g_scale=1e-5, buf_scale=0.01), 1.0, 0.9, 0.1)),
        Case("all-zero weight (trust ratio 1)", (torch.zeros(4, 4, dtype=torch.float64),
                                                 *_tensors((4, 4), 3, buf_scale=0.01)[1:], 0.5, 0.9, 1e-6)),
        Case("zero gradient, no weight decay (trust ratio 1)",
             (_tensors((4, 4), 4)[0], torch.zeros(4, 4, dtype=torch.float64), *_tensors((4, 4), 4, buf_scale=0.01)[2:],
              0.5, 0.9, 0.0)),
        Case("eta = 0.02, eps = 0", (*_tensors((6, 5), 5, buf_scale=0.02), 0.1, 0.8, 1e-4), dict(trust_coefficient=0.02,
                                                                                              eps=0.0)),
    ]


def _lars_variant(w, grad, buf, lr, momentum, weight_decay, trust_coefficient=1e-3, eps=1e-8, *,
                  decay_after_trust=False, no_decay=False, lr_in_momentum=False, no_guard=False):
    g = grad if no_decay or decay_after_trust else grad + weight_decay * w
    w_norm, g_norm = w.norm(), g.norm()
    trust = trust_coefficient * w_norm / (g_norm + eps)
    if not no_guard:
        trust = torch.where((w_norm > 0) & (g_norm > 0), trust, torch.ones_like(trust))
    step = trust * g
    if decay_after_trust:
        step = step + weight_decay * w
    if lr_in_momentum:
        new_buf = momentum * buf + lr * step
        return w - new_buf, new_buf
    new_buf = momentum * buf + step
    return w - lr * new_buf, new_buf


register(Exercise(
    id="05.6",
    title="one LARS update of one weight tensor",
    cases=_lars_cases,
    reference=library_lars_step,
    hint="g <- grad + wd * w first; trust = eta * ||w|| / (||g|| + eps), or 1 when either norm is 0; "
         "v <- momentum * v + trust * g; w <- w - lr * v. Return (w, v).",
    diagnoses=(
        Diagnosis("the weight decay is added after the trust ratio (it must be part of g before ||g||)",
                  lambda *a, **k: _lars_variant(*a, **k, decay_after_trust=True)),
        Diagnosis("the weight decay is missing", lambda *a, **k: _lars_variant(*a, **k, no_decay=True)),
        Diagnosis("lr is inside the momentum buffer (SimCLR TF's convention, v <- m v + lr trust g); this "
                  "exercise returns PyTorch's buffer, v <- m v + trust g",
                  lambda *a, **k: _lars_variant(*a, **k, lr_in_momentum=True)),
        Diagnosis("the trust ratio is not 1 when ||w|| or ||g|| is 0",
                  lambda *a, **k: _lars_variant(*a, **k, no_guard=True)),
    ),
    rtol=1e-9, atol=1e-12,
))


# --------------------------------------------------------------------------------------------
# 05.7 the batch size where the linear and the square-root rule agree
# --------------------------------------------------------------------------------------------


def rules_agree_at() -> float:
    """B with 0.3 B / 256 = 0.075 sqrt(B), from the library's two rules at B = 1: B = (sqrt / linear)^2."""
    return (scale_lr(0.075, 1, "sqrt") / scale_lr(0.3, 1, "linear")) ** 2


register(ValueExercise(
    id="05.7",
    title="the batch size at which lr = 0.3 x B/256 and lr = 0.075 x sqrt(B) agree",
    band=lambda: (rules_agree_at() - 0.5, rules_agree_at() + 0.5),
    hint="set the two learning rates equal and solve for B (divide both sides by sqrt(B) first).",
))
