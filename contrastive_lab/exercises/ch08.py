"""Chapter 08's checked exercises: MoCo's momentum update, Eq. 2 (08.7), and the cosine momentum
schedule (08.8)."""

from __future__ import annotations

import math

import torch
from torch import nn

from ..momentum import cosine_momentum, momentum_update_
from .core import Case, Diagnosis, Exercise, register

# --------------------------------------------------------------------------- 08.7


def _params(shapes: list[tuple[int, ...]], seed: int) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(s, generator=g) for s in shapes], [torch.randn(s, generator=g) for s in shapes]


def reference_momentum_update(key_params, query_params, m):
    """:func:`momentum_update_` on modules holding copies of the tensors; returns the new key parameters."""
    key = nn.ParameterList([nn.Parameter(p.detach().clone(), requires_grad=False) for p in key_params])
    query = nn.ParameterList([nn.Parameter(p.detach().clone()) for p in query_params])
    momentum_update_(key, query, m)
    return [p.detach().clone() for p in key]


def _update_cases() -> list[Case]:
    conv = [(8, 3, 3, 3), (8,), (8,)]  # a conv kernel, a BN weight and bias
    return [
        Case("m=0.999 (MoCo), a conv layer and its BN", (*_params(conv, 0), 0.999)),
        Case("m=0.99 (the CIFAR demo), linear layers", (*_params([(16, 8), (16,), (4, 16)], 1), 0.99)),
        Case("m=0: the key encoder becomes a copy", (*_params([(5, 4), (5,)], 2), 0.0)),
        Case("m=1: the key encoder is frozen", (*_params([(5, 4), (5,)], 3), 1.0)),
        Case("a scalar parameter (a learnable temperature), m=0.9", (*_params([(), (3,)], 4), 0.9)),
    ]


def _swapped(key_params, query_params, m):
    """m weighs the query encoder and 1 - m the key encoder."""
    return [m * q + (1 - m) * k for k, q in zip(key_params, query_params)]


def _query_unchanged_copy(key_params, query_params, m):
    """The key encoder is replaced by the query encoder (no averaging)."""
    return [q.clone() for q in query_params]


def _no_one_minus(key_params, query_params, m):
    """theta_k <- m theta_k + theta_q: the query weights are not scaled by (1 - m)."""
    return [m * k + q for k, q in zip(key_params, query_params)]


register(Exercise(
    id="08.7",
    title="MoCo's momentum update (Eq. 2)",
    cases=_update_cases,
    reference=reference_momentum_update,
    hint="For every pair of tensors: theta_k <- m theta_k + (1 - m) theta_q. m close to 1 means the key "
         "encoder moves slowly; m = 0 copies the query encoder, m = 1 freezes the key encoder. Return a list "
         "of the new key tensors, in order.",
    diagnoses=(
        Diagnosis("m and 1 - m are swapped (m weighs the query encoder)", _swapped),
        Diagnosis("the key encoder is a plain copy of the query encoder (no moving average)", _query_unchanged_copy),
        Diagnosis("the query weights are not multiplied by (1 - m)", _no_one_minus),
    ),
))

# --------------------------------------------------------------------------- 08.8


def _schedule_cases() -> list[Case]:
    return [
        Case("first step, m_0=0.99", (0, 1000, 0.99)),
        Case("middle step, m_0=0.99", (500, 1000, 0.99)),
        Case("a quarter of the way, m_0=0.996 (BYOL)", (250, 1000, 0.996)),
        Case("last step, m_0=0.99", (1000, 1000, 0.99)),
        Case("past the end of the schedule", (1500, 1000, 0.9)),
        Case("one-step schedule, m_0=0", (1, 3, 0.0)),
    ]


def _decreasing(step, total_steps, base):
    """The schedule runs the wrong way: from 1 down to m_0."""
    t = min(step, total_steps) / total_steps
    return base + (1 - base) * (1 + math.cos(math.pi * t)) / 2


def _no_clamp(step, total_steps, base):
    """Steps past T are not held at 1: the cosine turns back down."""
    return 1 - (1 - base) * (math.cos(math.pi * step / total_steps) + 1) / 2


def _missing_half(step, total_steps, base):
    """(cos + 1) is not halved."""
    t = min(step, total_steps) / total_steps
    return 1 - (1 - base) * (math.cos(math.pi * t) + 1)


register(Exercise(
    id="08.8",
    title="the cosine momentum schedule",
    cases=_schedule_cases,
    reference=cosine_momentum,
    hint="m_t = 1 - (1 - m_0) (cos(pi t / T) + 1) / 2: m_0 at t = 0, (1 + m_0) / 2 halfway, 1 at t = T; "
         "steps past T stay at 1.",
    diagnoses=(
        Diagnosis("the schedule runs the wrong way (from 1 down to m_0)", _decreasing),
        Diagnosis("steps past the end are not held at m = 1", _no_clamp),
        Diagnosis("(cos + 1) is not divided by 2", _missing_half),
    ),
))
