"""The momentum (EMA) encoder: a slowly moving average of the encoder being trained.

MoCo (He et al. 2019, Sec. 3.2, Eq. 2) keeps its keys consistent by encoding them with a copy of
the query encoder whose weights follow the query weights as an exponential moving average,

    theta_k <- m theta_k + (1 - m) theta_q,        m = 0.999 in MoCo,

and BYOL (Grill et al. 2020, Sec. 3.2) raises m from m_0 to 1 along a cosine schedule, so the
target network freezes as training ends. DINO's teacher is the same EMA.

=================================  ===========================================================
:func:`momentum_copy`              the key / target encoder: a deep copy without gradients
:func:`momentum_update_`           MoCo Eq. 2, vectorised (:func:`momentum_update_reference_`: a loop)
:func:`cosine_momentum`            BYOL Sec. 3.2: m_t rising from m_0 to 1
:func:`check_momentum`             an EMA coefficient must lie in [0, 1]
=================================  ===========================================================

Chapter 07 meets the momentum encoder (the queue's keys need it), chapter 08 trains MoCo with
it, and the coming chapter 11 (BYOL, DINO) uses the cosine schedule.
"""

from __future__ import annotations

import copy
import math

import torch
from torch import Tensor, nn

__all__ = [
    "check_momentum", "cosine_momentum", "momentum_copy", "momentum_update_", "momentum_update_reference_",
]  # fmt: skip


# --------------------------------------------------------------------------- validation


def _check_int(value: object, name: str, minimum: int = 1, hint: str = "") -> int:
    """An int >= ``minimum`` (a size, step or split count), else TypeError/ValueError."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {value!r} ({type(value).__name__}){hint}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}{hint}")
    return value


def check_momentum(value: object, name: str = "momentum") -> float:
    """A number m with 0 <= m <= 1 (an EMA coefficient), else TypeError/ValueError."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a float in [0, 1], got {value!r} ({type(value).__name__})")
    if not (math.isfinite(value) and 0.0 <= value <= 1.0):
        raise ValueError(f"{name} must lie in [0, 1] (m = 0 copies, m = 1 freezes), got {value}")
    return float(value)


# --------------------------------------------------------------------------- momentum encoder


def momentum_copy(module: nn.Module) -> nn.Module:
    """A deep copy of ``module`` that no optimizer or gradient can touch (MoCo's key encoder).

    The official code builds a second encoder and copies the query weights in
    (``param_k.data.copy_(param_q.data); param_k.requires_grad = False``); a deep copy does the same
    and also starts the BN buffers equal.
    """
    twin = copy.deepcopy(module)
    twin.requires_grad_(False)
    return twin


def _paired_params(target: nn.Module, source: nn.Module) -> tuple[list[Tensor], list[Tensor]]:
    """The parameters of ``target`` and (detached) of ``source``, paired by name; same names and shapes."""
    t, s = dict(target.named_parameters()), dict(source.named_parameters())
    if t.keys() != s.keys() or any(t[n].shape != s[n].shape for n in t):
        raise ValueError("momentum update: target and source must have the same parameter names and shapes")
    names = list(t)
    return [t[n] for n in names], [s[n].detach() for n in names]


@torch.no_grad()
def momentum_update_(target: nn.Module, source: nn.Module, m: float) -> None:
    """theta_k <- m theta_k + (1 - m) theta_q for every parameter, in place (MoCo Eq. 2).

    Parameters only, as the official ``_momentum_update_key_encoder``: the key encoder's buffers
    (BN running statistics) are *not* copied or averaged; they evolve on their own from the key
    batches it sees in train mode. m = 0 copies the query encoder, m = 1 freezes the key encoder.
    Vectorised with ``torch._foreach_*``; :func:`momentum_update_reference_` is the plain loop.
    """
    m = check_momentum(m)
    t, s = _paired_params(target, source)
    torch._foreach_mul_(t, m)
    torch._foreach_add_(t, s, alpha=1.0 - m)


@torch.no_grad()
def momentum_update_reference_(target: nn.Module, source: nn.Module, m: float) -> None:
    """:func:`momentum_update_` as a loop over parameter pairs (readable, for tests)."""
    for p_k, p_q in zip(*_paired_params(target, source)):
        p_k.copy_(m * p_k + (1.0 - m) * p_q)


def cosine_momentum(step: int, total_steps: int, base: float) -> float:
    """m_t = 1 - (1 - m_0) (cos(pi t / T) + 1) / 2: from m_0 at t = 0 up to 1 at t = T.

    BYOL (Grill et al. 2020), Sec. 3.2 ("tau = 1 - (1 - tau_base)(cos(pi k/K) + 1)/2"). Steps past T
    stay at 1. The key encoder freezes as the learning rate (cosine) goes to zero.
    """
    _check_int(step, "step", minimum=0)
    _check_int(total_steps, "total_steps", hint=" (length of the momentum schedule)")
    base = check_momentum(base, "base momentum")
    t = min(step, total_steps) / total_steps
    return 1.0 - (1.0 - base) * (math.cos(math.pi * t) + 1.0) / 2.0


EMA_SCHEDULES = ("constant", "cosine")


def ema_momentum(step: int, total_steps: int, base: float, schedule: str) -> float:
    """The EMA coefficient of the update after optimizer step ``step + 1`` (``step`` = 0, 1, ... K-1):
    ``base`` (constant), or BYOL's tau_k = 1 - (1 - base)(cos(pi k / K) + 1) / 2 (Sec. 3.2), so the
    first update uses tau_base and the coefficient reaches 1 at the end of the schedule."""
    if schedule == "constant":
        return check_momentum(base, "momentum_ema")
    if schedule != "cosine":
        raise ValueError(f"ema_schedule must be one of {EMA_SCHEDULES}, got {schedule!r}")
    return cosine_momentum(step, total_steps, base)
