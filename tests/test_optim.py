"""Tests for contrastive_lab.optim: LARS against a NumPy re-implementation, groups, schedules."""

from __future__ import annotations

import copy
import io
import math

import numpy as np
import pytest
import torch
from torch import nn

from contrastive_lab.optim import (
    LARS,
    build_optimizer,
    build_scheduler,
    clip_grad,
    param_groups,
    scale_lr,
    warmup_cosine,
)


# ----------------------------------------------------------------------------- NumPy reference
def lars_numpy(w, grads, lrs, momentum, wd, eta, eps, exclude, lr_in_momentum=False):
    """Independent LARS: written from You et al. 2017 Alg. 1 + SimCLR's lars_optimizer.py."""
    w = np.array(w, dtype=np.float64)
    v = np.zeros_like(w)
    for g, lr in zip(grads, lrs):
        g = np.asarray(g, dtype=np.float64) + wd * w
        trust = 1.0
        if not exclude:
            wn, gn = np.sqrt((w**2).sum()), np.sqrt((g**2).sum())
            if wn > 0 and gn > 0:
                trust = eta * wn / (gn + eps)
        if lr_in_momentum:
            v = momentum * v + lr * trust * g
            w = w - v
        else:
            v = momentum * v + trust * g
            w = w - lr * v
    return w


def run_lars(w0, grads, lrs, exclude=False, **kw):
    p = nn.Parameter(torch.tensor(w0, dtype=torch.float64))
    opt = LARS([{"params": [p], "lars_exclude": exclude}], lr=lrs[0], **kw)
    for g, lr in zip(grads, lrs):
        opt.param_groups[0]["lr"] = lr
        p.grad = torch.tensor(g, dtype=torch.float64)
        opt.step()
    return p.detach().numpy()


@pytest.fixture
def problem():
    rng = np.random.default_rng(0)
    w0 = rng.normal(size=(4, 3))
    grads = [rng.normal(size=(4, 3)) * s for s in (1.0, 0.1, 5.0, 0.5, 2.0)]
    return w0, grads


def test_lars_single_step_by_hand():
    # w = (3, 4), ||w|| = 5 ; g = (0, 2), wd = 0 -> trust = 0.1 * 5 / 2 = 0.25 ; v = 0.25 g ; w -= lr v
    p = nn.Parameter(torch.tensor([3.0, 4.0], dtype=torch.float64))
    opt = LARS([p], lr=2.0, momentum=0.9, weight_decay=0.0, trust_coefficient=0.1, eps=0.0)
    p.grad = torch.tensor([0.0, 2.0], dtype=torch.float64)
    opt.step()
    torch.testing.assert_close(p.detach(), torch.tensor([3.0, 4.0 - 2.0 * 0.25 * 2.0], dtype=torch.float64))


@pytest.mark.parametrize("lr_in_momentum", [False, True])
def test_lars_matches_numpy_multi_step(problem, lr_in_momentum):
    w0, grads = problem
    lrs = [0.5, 1.0, 2.0, 0.3, 0.1]  # a changing lr is where the two momentum conventions differ
    kw = dict(momentum=0.9, weight_decay=1e-2, trust_coefficient=0.01, eps=1e-8)
    got = run_lars(w0, grads, lrs, lr_in_momentum=lr_in_momentum, **kw)
    want = lars_numpy(w0, grads, lrs, 0.9, 1e-2, 0.01, 1e-8, exclude=False, lr_in_momentum=lr_in_momentum)
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)


def test_lars_momentum_conventions_agree_at_constant_lr_and_differ_otherwise(problem):
    w0, grads = problem
    kw = dict(momentum=0.9, weight_decay=1e-3, trust_coefficient=0.01)
    const = [0.7] * len(grads)
    np.testing.assert_allclose(
        run_lars(w0, grads, const, **kw), run_lars(w0, grads, const, lr_in_momentum=True, **kw), rtol=1e-12
    )
    varying = [0.7, 0.1, 2.0, 0.5, 1.0]
    assert not np.allclose(
        run_lars(w0, grads, varying, **kw), run_lars(w0, grads, varying, lr_in_momentum=True, **kw)
    )


def test_lars_zero_weight_gives_trust_one():
    p = nn.Parameter(torch.zeros(3, dtype=torch.float64))
    opt = LARS([p], lr=0.1, weight_decay=0.0)
    p.grad = torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64)
    opt.step()
    torch.testing.assert_close(p.detach(), -0.1 * torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64))


def test_lars_excluded_group_is_plain_momentum_sgd(problem):
    w0, grads = problem
    p = nn.Parameter(torch.tensor(w0))
    q = nn.Parameter(torch.tensor(w0))
    lars = LARS([{"params": [p], "lars_exclude": True, "weight_decay": 0.0}], lr=0.3, weight_decay=0.5)
    sgd = torch.optim.SGD([q], lr=0.3, momentum=0.9)
    for g in grads:
        p.grad, q.grad = torch.tensor(g), torch.tensor(g)
        lars.step()
        sgd.step()
    torch.testing.assert_close(p.detach(), q.detach(), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(
        p.detach().numpy(), lars_numpy(w0, grads, [0.3] * 5, 0.9, 0.0, 1e-3, 1e-8, exclude=True)
    )


def test_lars_skips_params_without_grad_and_supports_closure():
    p, q = nn.Parameter(torch.ones(2)), nn.Parameter(torch.ones(2))
    opt = LARS([p, q], lr=0.1)
    loss = opt.step(lambda: (p**2).sum().backward() or torch.tensor(1.0))
    assert float(loss) == 1.0
    assert torch.equal(q.detach(), torch.ones(2)) and not torch.equal(p.detach(), torch.ones(2))


class Small(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, bias=False)
        self.bn = nn.BatchNorm2d(4)
        self.fc = nn.Linear(4, 5)
        self.ln = nn.LayerNorm(5)
        self.gn = nn.GroupNorm(1, 4)
        self.frozen = nn.Linear(2, 2)
        self.frozen.requires_grad_(False)

    def forward(self, x):
        x = self.gn(self.bn(self.conv(x))).mean((2, 3))
        return self.ln(self.fc(x))


def test_param_groups_classification():
    m = Small()
    groups = param_groups(m, weight_decay=1e-4)
    decay, excl = groups
    assert decay["weight_decay"] == 1e-4 and decay["lars_exclude"] is False
    assert excl["weight_decay"] == 0.0 and excl["lars_exclude"] is True
    ids = lambda ps: {id(p) for p in ps}
    assert ids(decay["params"]) == ids([m.conv.weight, m.fc.weight])
    assert ids(excl["params"]) == ids(
        [m.bn.weight, m.bn.bias, m.fc.bias, m.ln.weight, m.ln.bias, m.gn.weight, m.gn.bias]
    )
    assert param_groups(nn.Linear(3, 2, bias=False), 0.1)[0]["params"][0].shape == (2, 3)
    assert len(param_groups(nn.Linear(3, 2, bias=False), 0.1)) == 1  # empty group dropped


def test_param_groups_errors():
    with pytest.raises(TypeError, match="nn.Module"):
        param_groups([torch.zeros(2)], 0.1)
    with pytest.raises(ValueError, match="weight_decay must be a finite number >= 0"):
        param_groups(nn.Linear(2, 2), -1.0)
    with pytest.raises(ValueError, match="no trainable parameters"):
        param_groups(nn.Linear(2, 2).requires_grad_(False), 0.1)


def test_build_optimizer_lars_excludes_bn_and_bias_from_adaptation():
    torch.manual_seed(0)
    m = Small()
    opt = build_optimizer("lars", m, lr=0.5, weight_decay=0.1)
    ref = copy.deepcopy(m)
    x = torch.randn(2, 3, 6, 6)
    m(x).sum().backward()
    ref(x).sum().backward()
    opt.step()
    # BN weight: plain SGD, first momentum step is -lr * g, no wd.
    torch.testing.assert_close(m.bn.weight.detach(), ref.bn.weight.detach() - 0.5 * ref.bn.weight.grad)
    torch.testing.assert_close(m.fc.bias.detach(), ref.fc.bias.detach() - 0.5 * ref.fc.bias.grad)
    # Linear weight: LARS with wd, checked against NumPy.
    want = lars_numpy(
        ref.fc.weight.detach().numpy(),
        [ref.fc.weight.grad.numpy()],
        [0.5],
        0.9,
        0.1,
        1e-3,
        1e-8,
        exclude=False,
    )
    np.testing.assert_allclose(m.fc.weight.detach().numpy(), want, rtol=1e-5, atol=1e-7)


def test_build_optimizer_kinds_and_kwargs():
    m = Small()
    sgd = build_optimizer("SGD", m, lr=0.1, weight_decay=1e-4, nesterov=True)
    assert isinstance(sgd, torch.optim.SGD) and sgd.param_groups[0]["nesterov"] is True
    assert sgd.param_groups[0]["momentum"] == 0.9 and sgd.param_groups[1]["weight_decay"] == 0.0
    adamw = build_optimizer("adamw", m, lr=1e-3, weight_decay=0.05, betas=(0.9, 0.95))
    assert isinstance(adamw, torch.optim.AdamW) and adamw.param_groups[0]["betas"] == (0.9, 0.95)
    assert [g["weight_decay"] for g in adamw.param_groups] == [0.05, 0.0]
    adamw = build_optimizer("adamw", m, lr=1e-3, weight_decay=0.05, momentum=0.8)  # momentum -> beta1
    assert adamw.param_groups[0]["betas"] == (0.8, 0.999)
    assert build_optimizer("adamw", m, lr=1e-3, weight_decay=0.0).param_groups[0]["betas"] == (0.9, 0.999)
    lars = build_optimizer("lars", m, lr=1.0, weight_decay=1e-6, momentum=0.8, trust_coefficient=0.02)
    assert isinstance(lars, LARS) and lars.param_groups[0]["trust_coefficient"] == 0.02
    assert lars.param_groups[0]["momentum"] == 0.8


def test_build_optimizer_errors():
    m = nn.Linear(2, 2)
    with pytest.raises(ValueError, match="unknown optimizer 'adam'; valid names are sgd, adamw, lars"):
        build_optimizer("adam", m, lr=0.1, weight_decay=0.0)
    with pytest.raises(ValueError, match="lr must be > 0"):
        build_optimizer("sgd", m, lr=0.0, weight_decay=0.0)
    with pytest.raises(ValueError, match="lr must be a finite number"):
        build_optimizer("sgd", m, lr=float("nan"), weight_decay=0.0)
    with pytest.raises(ValueError, match="weight_decay must be a finite number >= 0"):
        build_optimizer("lars", m, lr=0.1, weight_decay=-1e-4)
    with pytest.raises(TypeError, match="lr must be a number"):
        build_optimizer("sgd", m, lr="0.1", weight_decay=0.0)
    with pytest.raises(ValueError, match="either momentum"):
        build_optimizer("adamw", m, lr=0.1, weight_decay=0.0, momentum=0.9, betas=(0.9, 0.99))
    with pytest.raises(TypeError, match=r"sgd does not accept \['betas'\]"):
        build_optimizer("sgd", m, lr=0.1, weight_decay=0.0, betas=(0.9, 0.99))
    with pytest.raises(ValueError, match="momentum must be in"):
        LARS(m.parameters(), lr=0.1, momentum=1.0)
    with pytest.raises(ValueError, match="trust_coefficient must be > 0"):
        LARS(m.parameters(), lr=0.1, trust_coefficient=0.0)


def test_lars_state_dict_round_trip_gives_identical_steps():
    torch.manual_seed(0)
    m = Small()
    opt = build_optimizer("lars", m, lr=0.3, weight_decay=1e-4)
    sched = build_scheduler(opt, total_steps=10, warmup_steps=3)
    x = torch.randn(4, 3, 6, 6)

    def train_step(model, o, s):
        o.zero_grad()
        model(x).pow(2).mean().backward()
        o.step()
        s.step()

    for _ in range(3):
        train_step(m, opt, sched)
    m2 = copy.deepcopy(m)
    opt2 = build_optimizer("lars", m2, lr=0.3, weight_decay=1e-4)
    sched2 = build_scheduler(opt2, total_steps=10, warmup_steps=3)
    buffer = io.BytesIO()  # a real checkpoint round trip (load_state_dict alone may share tensors)
    torch.save({"opt": opt.state_dict(), "sched": sched.state_dict()}, buffer)
    buffer.seek(0)
    ckpt = torch.load(buffer)
    opt2.load_state_dict(ckpt["opt"])
    sched2.load_state_dict(ckpt["sched"])
    assert ckpt["sched"]["lr_lambdas"][0] == {"total_steps": 10, "warmup_steps": 3, "final_lr_ratio": 0.0}
    for _ in range(3):
        train_step(m, opt, sched)
        train_step(m2, opt2, sched2)
    for a, b in zip(m.parameters(), m2.parameters()):
        assert torch.equal(a, b)
    assert opt.param_groups[0]["lr"] == opt2.param_groups[0]["lr"]


# ----------------------------------------------------------------------------- schedules
def test_warmup_cosine_hand_values():
    # total 110, warmup 10, base 1.0, final 0.1
    f = lambda t: warmup_cosine(t, 110, 10, 1.0, 0.1)
    assert f(0) == pytest.approx(0.1)  # (0+1)/10
    assert f(4) == pytest.approx(0.5)
    assert f(9) == pytest.approx(1.0)  # end of warmup
    assert f(10) == pytest.approx(1.0)  # cosine starts at base
    assert f(60) == pytest.approx(0.55)  # middle of the cosine: (1 + 0.1) / 2
    assert f(35) == pytest.approx(0.1 + 0.45 * (1 + math.cos(math.pi / 4)))
    assert f(110) == pytest.approx(0.1) and f(500) == pytest.approx(0.1)
    assert warmup_cosine(0, 4, 0, 2.0) == pytest.approx(2.0)  # no warmup
    assert warmup_cosine(3, 4, 4, 2.0) == pytest.approx(2.0) and warmup_cosine(4, 4, 4, 2.0) == 0.0
    values = [f(t) for t in range(10, 111)]
    assert all(a >= b for a, b in zip(values, values[1:]))  # monotone decay


def test_warmup_cosine_errors():
    with pytest.raises(ValueError, match="step must be an integer >= 0"):
        warmup_cosine(-1, 10, 2, 1.0)
    with pytest.raises(ValueError, match="total_steps must be an integer >= 1"):
        warmup_cosine(0, 0, 0, 1.0)
    with pytest.raises(ValueError, match=r"warmup_steps must be an integer in \[0, total_steps=10\]"):
        warmup_cosine(0, 10, 11, 1.0)
    with pytest.raises(ValueError, match="base_lr must be a finite number >= 0"):
        warmup_cosine(0, 10, 1, -1.0)


def test_lambda_lr_matches_warmup_cosine():
    p = nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([{"params": [p], "lr": 0.4}, {"params": [nn.Parameter(torch.zeros(1))], "lr": 0.2}])
    sched = build_scheduler(opt, total_steps=20, warmup_steps=5, final_lr_ratio=0.25)
    for t in range(25):
        assert opt.param_groups[0]["lr"] == pytest.approx(warmup_cosine(t, 20, 5, 0.4, 0.1))
        assert opt.param_groups[1]["lr"] == pytest.approx(warmup_cosine(t, 20, 5, 0.2, 0.05))
        opt.step()
        sched.step()
    with pytest.raises(ValueError, match=r"final_lr_ratio must be in \[0, 1\]"):
        build_scheduler(opt, 20, 5, final_lr_ratio=2.0)
    with pytest.raises(TypeError, match="torch.optim.Optimizer"):
        build_scheduler("sgd", 20, 5)


def test_scale_lr():
    assert scale_lr(0.3, 4096) == pytest.approx(4.8)  # SimCLR Sec 2.3
    assert scale_lr(0.075, 4096, "sqrt") == pytest.approx(4.8)  # App. B.1: 0.075 * 64
    assert scale_lr(0.075, 256, "sqrt") == pytest.approx(1.2)
    with pytest.raises(ValueError, match="unknown scaling rule 'log'"):
        scale_lr(0.3, 256, "log")
    with pytest.raises(ValueError, match="batch_size must be an integer >= 1"):
        scale_lr(0.3, 0)


def test_clip_grad():
    p = nn.Parameter(torch.zeros(2))
    q = nn.Parameter(torch.zeros(1))
    p.grad, q.grad = torch.tensor([3.0, 0.0]), torch.tensor([4.0])  # global norm 5
    assert clip_grad([p, q], 1.0) == pytest.approx(5.0)
    torch.testing.assert_close(p.grad, torch.tensor([0.6, 0.0]), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(q.grad, torch.tensor([0.8]), rtol=1e-5, atol=1e-6)
    m = nn.Linear(1, 1)
    m.weight.grad, m.bias.grad = torch.tensor([[0.3]]), torch.tensor([0.4])
    assert clip_grad(m, 10.0) == pytest.approx(0.5)
    assert m.weight.grad.item() == pytest.approx(0.3)  # under the limit: unchanged
    m.weight.grad = torch.tensor([[float("nan")]])
    with pytest.raises(RuntimeError, match="non-finite"):
        clip_grad(m, 1.0)
    with pytest.raises(ValueError, match="max_norm must be > 0"):
        clip_grad(m, 0.0)
