"""contrastive_lab.momentum: the EMA update (MoCo Eq. 2) exactly and against its loop, the
gradient-free copy, and BYOL's cosine momentum schedule worked by hand."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from contrastive_lab.momentum import (
    cosine_momentum,
    momentum_copy,
    momentum_update_,
    momentum_update_reference_,
)

# --------------------------------------------------------------------------- momentum encoder


def _net() -> nn.Module:
    return nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3), nn.Linear(3, 2))


def test_momentum_update_is_exactly_m_theta_k_plus_one_minus_m_theta_q():
    """Dyadic numbers and m = 0.75: every product and sum is exact in float32, so equality is exact."""
    q, k = _net(), _net()
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in (*q.parameters(), *k.parameters()):
            p.copy_(torch.randint(-64, 64, p.shape, generator=g).float() / 8)
    expected = {n: 0.75 * pk + 0.25 * dict(q.named_parameters())[n] for n, pk in k.named_parameters()}
    momentum_update_(k, q, 0.75)
    for name, p in k.named_parameters():
        assert torch.equal(p, expected[name]), name


def test_momentum_update_agrees_with_the_loop_and_leaves_buffers_alone():
    torch.manual_seed(0)
    q, k = _net(), _net()
    k[1].running_mean.fill_(3.0)
    k_ref = copy.deepcopy(k)
    momentum_update_(k, q, 0.999)
    momentum_update_reference_(k_ref, q, 0.999)
    for (name, a), b in zip(k.named_parameters(), k_ref.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7, msg=name)
    assert torch.equal(k[1].running_mean, torch.full((3,), 3.0)), "BN buffers must not be averaged"
    momentum_update_(k, q, 0.0)  # m = 0 copies the query encoder
    assert all(torch.equal(a, b) for a, b in zip(k.parameters(), q.parameters()))
    with pytest.raises(ValueError, match=r"must lie in \[0, 1\]"):
        momentum_update_(k, q, -0.1)
    with pytest.raises(ValueError, match="same parameter names and shapes"):
        momentum_update_(k, nn.Linear(4, 3), 0.9)


def test_momentum_copy_gets_no_gradient():
    q = _net()
    k = momentum_copy(q)
    assert all(not p.requires_grad for p in k.parameters())
    assert all(p.requires_grad for p in q.parameters())
    x = torch.randn(5, 4)
    (q(x).sum() + k(x).sum()).backward()
    assert all(p.grad is None for p in k.parameters())
    assert all(p.grad is not None for p in q.parameters())


def test_cosine_momentum_schedule_by_hand():
    assert cosine_momentum(0, 100, 0.99) == pytest.approx(0.99)
    assert cosine_momentum(50, 100, 0.99) == pytest.approx(0.995)  # cos(pi/2) = 0
    assert cosine_momentum(25, 75, 0.99) == pytest.approx(1 - 0.01 * 0.75)  # cos(pi/3) = 1/2
    assert cosine_momentum(100, 100, 0.99) == cosine_momentum(500, 100, 0.99) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="total_steps must be >= 1"):
        cosine_momentum(0, 0, 0.99)
