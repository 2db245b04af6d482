"""Tests for contrastive_lab.losses: loop references, hand-worked values, gradcheck, invariants,
numerical stability, low precision and argument validation."""

from __future__ import annotations

import math
import re
from collections.abc import Callable

import pytest
import torch
import torch.nn.functional as F

from contrastive_lab.losses import (
    ClipLoss,
    CPCInfoNCELoss,
    InfoNCELoss,
    NCEMemoryBankLoss,
    NTXentLoss,
    alignment,
    alignment_reference,
    clip_loss,
    clip_loss_reference,
    cpc_accuracy,
    cpc_info_nce,
    cpc_info_nce_reference,
    info_nce,
    info_nce_reference,
    nce_memory_bank,
    nce_memory_bank_reference,
    nt_xent,
    nt_xent_reference,
    uniformity,
    uniformity_reference,
)

F64 = torch.float64
E1, E2 = [1.0, 0.0], [0.0, 1.0]


def randn(*shape: int, seed: int = 0, dtype: torch.dtype = F64, grad: bool = False) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=g, dtype=dtype).requires_grad_(grad)


def t(rows: list[list[float]]) -> torch.Tensor:
    return torch.tensor(rows, dtype=F64)


# ----------------------------------------------------------------- vectorised == loop reference

SHAPES = [(2, 3), (5, 4), (7, 16)]


@pytest.mark.parametrize("n,d", SHAPES)
@pytest.mark.parametrize("tau", [0.1, 0.5, 2.0])
def test_nt_xent_matches_reference(n: int, d: int, tau: float) -> None:
    z1, z2 = randn(n, d, seed=1), randn(n, d, seed=2)
    torch.testing.assert_close(nt_xent(z1, z2, tau), nt_xent_reference(z1, z2, tau))


@pytest.mark.parametrize("n,d,k", [(2, 3, 1), (4, 5, 9), (6, 8, 17)])
def test_info_nce_matches_reference(n: int, d: int, k: int) -> None:
    q, key, neg = randn(n, d, seed=1), randn(n, d, seed=2), randn(k, d, seed=3)
    for tau in (0.07, 0.2, 1.0):
        torch.testing.assert_close(info_nce(q, key, neg, tau), info_nce_reference(q, key, neg, tau))


@pytest.mark.parametrize("b,m,d", [(2, 1, 3), (4, 5, 6), (6, 9, 8)])
@pytest.mark.parametrize("z", [None, 123.0])
def test_nce_memory_bank_matches_reference(b: int, m: int, d: int, z: float | None) -> None:
    f, v, noise = randn(b, d, seed=1), randn(b, d, seed=2), randn(b, m, d, seed=3)
    for n in (m, 1000):
        loss, z_used = nce_memory_bank(f, v, noise, n, 0.2, z)
        loss_ref, z_ref = nce_memory_bank_reference(f, v, noise, n, 0.2, z)
        torch.testing.assert_close(loss, loss_ref)
        torch.testing.assert_close(z_used, z_ref)
        assert not z_used.requires_grad


def test_nce_memory_bank_shared_noise_equals_expanded_noise() -> None:
    f, v, noise = randn(4, 5, seed=1), randn(4, 5, seed=2), randn(7, 5, seed=3)
    shared = nce_memory_bank(f, v, noise, 50, 0.1)
    expanded = nce_memory_bank(f, v, noise.expand(4, -1, -1), 50, 0.1)
    torch.testing.assert_close(shared, expanded)


@pytest.mark.parametrize("m,d", [(2, 3), (5, 4), (9, 16)])
@pytest.mark.parametrize("normalize", [False, True])
def test_cpc_info_nce_matches_reference(m: int, d: int, normalize: bool) -> None:
    p, z = randn(m, d, seed=1), randn(m, d, seed=2)
    for tau in (0.1, 1.0):
        torch.testing.assert_close(
            cpc_info_nce(p, z, tau, normalize), cpc_info_nce_reference(p, z, tau, normalize)
        )


@pytest.mark.parametrize("normalize", [False, True])
def test_cpc_accuracy_matches_loop(normalize: bool) -> None:
    p, z = randn(12, 3, seed=4), randn(12, 3, seed=5)
    if normalize:
        scores = [[F.cosine_similarity(pi, zj, dim=0).item() for zj in z] for pi in p]
    else:
        scores = [[torch.dot(pi, zj).item() for zj in z] for pi in p]
    hits = sum(max(range(len(row)), key=row.__getitem__) == i for i, row in enumerate(scores))
    assert cpc_accuracy(p, z, normalize).item() == pytest.approx(hits / 12)


@pytest.mark.parametrize("n,d", SHAPES)
def test_clip_loss_matches_reference(n: int, d: int) -> None:
    i_e, t_e = randn(n, d, seed=1), randn(n, d, seed=2)
    for scale in (1.0, 1 / 0.07, 100.0):
        torch.testing.assert_close(clip_loss(i_e, t_e, scale), clip_loss_reference(i_e, t_e, scale))


@pytest.mark.parametrize("n,d", SHAPES)
def test_alignment_and_uniformity_match_reference(n: int, d: int) -> None:
    z1, z2 = randn(n, d, seed=1), randn(n, d, seed=2)
    for alpha in (1.0, 2.0, 3.5):
        torch.testing.assert_close(alignment(z1, z2, alpha), alignment_reference(z1, z2, alpha))
    for t_ in (0.5, 2.0, 10.0):
        torch.testing.assert_close(uniformity(z1, t_), uniformity_reference(z1, t_))


# ----------------------------------------------------------------- values worked out by hand


def test_nt_xent_hand_worked_orthogonal_and_antipodal() -> None:
    tau = 0.5
    # N=2, D=2, views identical up to scale: z1 = 3*[e1, e2], z2 = [e1, e2]. After normalising,
    # every anchor has cosine 1 with its positive and 0 with both negatives, so each of the
    # 4 anchors has l = -log(e^{1/tau} / (e^{1/tau} + 2 e^0)) = log(1 + 2 e^{-1/tau}).
    got = nt_xent(3 * t([E1, E2]), t([E1, E2]), tau)
    assert got.item() == pytest.approx(math.log(1 + 2 * math.exp(-1 / tau)), rel=1e-12)
    # z1 = z2 = [e1, -e1]: positive cosine 1, both negatives cosine -1:
    # l = -log(e^{1/tau} / (e^{1/tau} + 2 e^{-1/tau})) = log(1 + 2 e^{-2/tau}).
    got = nt_xent(t([E1, [-1.0, 0.0]]), t([E1, [-1.0, 0.0]]), tau)
    assert got.item() == pytest.approx(math.log(1 + 2 * math.exp(-2 / tau)), rel=1e-12)


def test_info_nce_hand_worked() -> None:
    # q = e1, k+ = 2 e1 (cosine 1), negatives e2 (0) and -e1 (-1):
    # L = -log(e^{1/tau} / (e^{1/tau} + e^0 + e^{-1/tau})) = log(1 + e^{-1/tau} + e^{-2/tau}).
    # The second query is the first one scaled (same cosines), so the batch mean is that value.
    tau = 0.2
    got = info_nce(t([E1, [3.0, 0.0]]), t([[2.0, 0.0], E1]), t([E2, [-1.0, 0.0]]), tau)
    assert got.item() == pytest.approx(math.log(1 + math.exp(-1 / tau) + math.exp(-2 / tau)), rel=1e-12)


def test_nce_memory_bank_hand_worked() -> None:
    # n = 10, m = 1, tau = 1, f = e1, v = e1 (score 1), noise v' = e2 (score 0).
    # Eq. 7: Z = n/m * exp(0) = 10. P(i|v) = e/10, m*P_n = 1/10, so h(i,v) = e/(e+1);
    # noise: P = 1/10, h = (1/10)/(2/10) = 1/2. Loss = -log(e/(e+1)) - log(1/2) = log(1+e^-1) + log 2.
    # The second sample is the first one scaled (same scores), so Z and the batch mean are unchanged.
    f, v, noise = t([E1, [2.0, 0.0]]), t([E1, [3.0, 0.0]]), torch.tensor([[E2], [E2]], dtype=F64)
    loss, z = nce_memory_bank(f, v, noise, dataset_size=10, temperature=1.0)
    assert z.item() == pytest.approx(10.0, rel=1e-12)
    assert loss.item() == pytest.approx(math.log(1 + math.exp(-1)) + math.log(2), rel=1e-12)


def test_cpc_hand_worked() -> None:
    # predictions 2*[e1, e2], targets [e1, e2]: dot-product logits [[2, 0], [0, 2]], so each row has
    # l = -log(e^2 / (e^2 + 1)) = log(1 + e^-2); normalised (cosines [[1, 0], [0, 1]]): log(1 + e^-1).
    p, z = t([[2.0, 0.0], [0.0, 2.0]]), t([E1, E2])
    assert cpc_info_nce(p, z).item() == pytest.approx(math.log(1 + math.exp(-2)), rel=1e-12)
    assert cpc_info_nce(p, z, normalize=True).item() == pytest.approx(math.log(1 + math.exp(-1)), rel=1e-12)
    # Accuracy: targets [e1, e2, -e1], predictions [e1, e2, e2]. Row scores: [1,0,-1] -> 0 (right),
    # [0,1,0] -> 1 (right), [0,1,0] -> 1 (wrong, should be 2): 2/3.
    acc = cpc_accuracy(t([E1, E2, E2]), t([E1, E2, [-1.0, 0.0]]))
    assert acc.item() == pytest.approx(2 / 3)


def test_clip_hand_worked() -> None:
    # Images = texts = [e1, e2], scale s: logits = s * I, each row/column CE = log(1 + e^{-s}).
    s = 10.0
    assert clip_loss(t([E1, E2]), t([E1, E2]), s).item() == pytest.approx(math.log1p(math.exp(-s)), rel=1e-12)


def test_alignment_uniformity_hand_worked() -> None:
    # Pairs (e1, e2) at distance sqrt(2) and (e1, e1) at 0: alpha=2 -> (2 + 0)/2 = 1; alpha=1 -> sqrt(2)/2.
    z1, z2 = t([E1, E1]), t([E2, [5.0, 0.0]])
    assert alignment(z1, z2, 2.0).item() == pytest.approx(1.0, rel=1e-12)
    assert alignment(z1, z2, 1.0).item() == pytest.approx(math.sqrt(2) / 2, rel=1e-12)
    # e1, -e1: one pair, d^2 = 4 -> log exp(-2*4) = -8. Add e2: d^2 = 4, 2, 2 -> log((e^-8 + 2e^-4)/3).
    assert uniformity(t([E1, [-1.0, 0.0]]), 2.0).item() == pytest.approx(-8.0, rel=1e-12)
    expected = math.log((math.exp(-8) + 2 * math.exp(-4)) / 3)
    assert uniformity(t([E1, [-1.0, 0.0], E2]), 2.0).item() == pytest.approx(expected, rel=1e-12)


# ----------------------------------------------------------------- invariants and conventions


def test_nt_xent_is_half_of_official_tf_sum() -> None:
    """Independent re-implementation of SimCLR's TF ``add_contrastive_loss`` (LARGE_NUM mask)."""
    z1, z2, tau = F.normalize(randn(6, 5, seed=1), dim=1), F.normalize(randn(6, 5, seed=2), dim=1), 0.3
    large, eye, labels = 1e9, torch.eye(6, dtype=F64), torch.arange(6)
    logits_aa, logits_bb = z1 @ z1.T / tau - large * eye, z2 @ z2.T / tau - large * eye
    logits_ab, logits_ba = z1 @ z2.T / tau, z2 @ z1.T / tau
    loss_a = F.cross_entropy(torch.cat([logits_ab, logits_aa], 1), labels)
    loss_b = F.cross_entropy(torch.cat([logits_ba, logits_bb], 1), labels)
    torch.testing.assert_close(loss_a + loss_b, 2 * nt_xent(z1, z2, tau))


def test_nt_xent_invariances() -> None:
    z1, z2 = randn(5, 4, seed=1), randn(5, 4, seed=2)
    base = nt_xent(z1, z2, 0.2)
    torch.testing.assert_close(nt_xent(z2, z1, 0.2), base)  # the two views play symmetric roles
    perm = torch.tensor([3, 0, 4, 1, 2])
    torch.testing.assert_close(nt_xent(z1[perm], z2[perm], 0.2), base)  # order of pairs is irrelevant
    scale = torch.rand(5, 1, dtype=F64) * 10 + 0.1
    torch.testing.assert_close(nt_xent(scale * z1, z2, 0.2), base)  # normalised inside
    torch.testing.assert_close(nt_xent(z1, z2, 0.2, gather=True), base)  # gather is identity on 1 process


def test_clip_loss_is_symmetric() -> None:
    i_e, t_e = randn(4, 3, seed=1), randn(4, 3, seed=2)
    torch.testing.assert_close(clip_loss(i_e, t_e, 5.0), clip_loss(t_e, i_e, 5.0))


# ----------------------------------------------------------------- gradients (float64 gradcheck)


def test_gradcheck_nt_xent() -> None:
    assert torch.autograd.gradcheck(
        lambda a, b: nt_xent(a, b, 0.3), (randn(4, 3, seed=1, grad=True), randn(4, 3, seed=2, grad=True))
    )


def test_gradcheck_info_nce() -> None:
    inputs = (randn(3, 4, seed=1, grad=True), randn(3, 4, seed=2, grad=True), randn(5, 4, seed=3, grad=True))
    assert torch.autograd.gradcheck(lambda q, k, n: info_nce(q, k, n, 0.2), inputs)


@pytest.mark.parametrize("noise_shape", [(3, 4, 5), (4, 5)])
def test_gradcheck_nce_memory_bank_fixed_z(noise_shape: tuple[int, ...]) -> None:
    inputs = (
        randn(3, 5, seed=1, grad=True),
        randn(3, 5, seed=2, grad=True),
        randn(*noise_shape, seed=3, grad=True),
    )
    assert torch.autograd.gradcheck(lambda f, v, w: nce_memory_bank(f, v, w, 20, 0.5, z=7.0)[0], inputs)


@pytest.mark.parametrize("normalize", [False, True])
def test_gradcheck_cpc_info_nce(normalize: bool) -> None:
    inputs = (randn(4, 3, seed=1, grad=True), randn(4, 3, seed=2, grad=True))
    assert torch.autograd.gradcheck(lambda p, z: cpc_info_nce(p, z, 0.5, normalize), inputs)


def test_gradcheck_clip_loss_including_scale() -> None:
    scale = torch.tensor(3.0, dtype=F64, requires_grad=True)
    inputs = (randn(4, 3, seed=1, grad=True), randn(4, 3, seed=2, grad=True), scale)
    assert torch.autograd.gradcheck(clip_loss, inputs)


def test_gradcheck_alignment_uniformity() -> None:
    assert torch.autograd.gradcheck(
        lambda a, b: alignment(a, b, 2.0), (randn(4, 3, seed=1, grad=True), randn(4, 3, seed=2, grad=True))
    )
    assert torch.autograd.gradcheck(lambda z: uniformity(z, 2.0), (randn(5, 3, seed=3, grad=True),))


# ----------------------------------------------------------------- numerical stability


def test_tiny_temperature_and_huge_norms_are_finite_and_match_reference() -> None:
    # float32 inputs with norms ~1e20 (||z||^2 would overflow float32) at tau = 0.01 (logits up to
    # 100: exp(100) overflows float32). The reference runs in float64 where neither overflows.
    z1, z2 = randn(6, 8, seed=1) * 1e20, randn(6, 8, seed=2) * 1e20
    neg = randn(10, 8, seed=3) * 1e20
    cases = [
        (nt_xent(z1.float(), z2.float(), 0.01), nt_xent_reference(z1, z2, 0.01)),
        (info_nce(z1.float(), z2.float(), neg.float(), 0.01), info_nce_reference(z1, z2, neg, 0.01)),
        (cpc_info_nce(z1.float(), z2.float(), 0.01, True), cpc_info_nce_reference(z1, z2, 0.01, True)),
        (clip_loss(z1.float(), z2.float(), 100.0), clip_loss_reference(z1, z2, 100.0)),
        (uniformity(z1.float(), 50.0), uniformity_reference(z1, 50.0)),
    ]
    for got, ref in cases:
        assert torch.isfinite(got)
        torch.testing.assert_close(got.double(), ref, rtol=1e-4, atol=1e-4)
    got, _ = nce_memory_bank(z1.float(), z2.float(), neg.float(), 100, 0.01)
    ref, _ = nce_memory_bank_reference(z1, z2, neg, 100, 0.01)
    torch.testing.assert_close(got.double(), ref, rtol=1e-4, atol=1e-4)


def test_tiny_temperature_gradients_are_finite() -> None:
    z1, z2 = (
        randn(8, 4, seed=1, dtype=torch.float32, grad=True),
        randn(8, 4, seed=2, dtype=torch.float32, grad=True),
    )
    nt_xent(z1, z2, 0.01).backward()
    assert torch.isfinite(z1.grad).all() and torch.isfinite(z2.grad).all()


# ----------------------------------------------------------------- low precision


LOW_PRECISION_LOSSES = {
    "nt_xent": lambda a, b, c: nt_xent(a, b, 0.5),
    "info_nce": lambda a, b, c: info_nce(a, b, c, 0.2),
    "nce_memory_bank": lambda a, b, c: nce_memory_bank(a, b, c, 100, 0.2, z=50.0)[0],
    "cpc_info_nce": lambda a, b, c: cpc_info_nce(a, b, 1.0),
    "clip_loss": lambda a, b, c: clip_loss(a, b, 10.0),
    "alignment": lambda a, b, c: alignment(a, b),
    "uniformity": lambda a, b, c: uniformity(a),
}


@pytest.mark.parametrize("name", LOW_PRECISION_LOSSES)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_inputs_are_close_to_fp32(name: str, dtype: torch.dtype) -> None:
    fn = LOW_PRECISION_LOSSES[name]
    a, b, c = (randn(16, 8, seed=s, dtype=torch.float32) for s in (1, 2, 3))
    low = [x.to(dtype).requires_grad_() for x in (a, b, c)]
    got = fn(*low)
    assert got.dtype == torch.float32
    torch.testing.assert_close(got, fn(a, b, c), rtol=0.03, atol=0.03)
    got.backward()
    assert low[0].grad.dtype == dtype and torch.isfinite(low[0].grad.float()).all()


def test_autocast_does_not_lower_the_loss_precision() -> None:
    z1, z2 = randn(64, 32, seed=1, dtype=torch.float32), randn(64, 32, seed=2, dtype=torch.float32)
    expected = nt_xent(z1, z2, 0.1)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = nt_xent(z1, z2, 0.1)
    assert got.dtype == torch.float32
    torch.testing.assert_close(got, expected, rtol=1e-6, atol=1e-6)  # a bf16 matmul would be off by ~1e-2


# ----------------------------------------------------------------- modules


def test_modules_equal_functions() -> None:
    a, b, c = randn(5, 4, seed=1), randn(5, 4, seed=2), randn(7, 4, seed=3)
    torch.testing.assert_close(NTXentLoss(0.2)(a, b), nt_xent(a, b, 0.2))
    torch.testing.assert_close(InfoNCELoss(0.1)(a, b, c), info_nce(a, b, c, 0.1))
    torch.testing.assert_close(CPCInfoNCELoss(0.5, True)(a, b), cpc_info_nce(a, b, 0.5, True))
    assert "temperature=0.2" in repr(NTXentLoss(0.2))


def test_nce_module_fixes_z_after_first_batch() -> None:
    loss_fn = NCEMemoryBankLoss(dataset_size=100, temperature=0.2)
    assert loss_fn.z.item() == -1.0
    f, v, noise1, noise2 = (
        randn(4, 5, seed=1),
        randn(4, 5, seed=2),
        randn(4, 6, 5, seed=3),
        randn(4, 6, 5, seed=4),
    )
    first = loss_fn(f, v, noise1)
    expected_loss, z1 = nce_memory_bank(f, v, noise1, 100, 0.2)
    torch.testing.assert_close(first, expected_loss)
    assert loss_fn.z.item() == pytest.approx(z1.item())
    second = loss_fn(f, v, noise2)  # uses the stored Z, not a new estimate
    torch.testing.assert_close(second, nce_memory_bank(f, v, noise2, 100, 0.2, z=z1.item())[0])
    assert not torch.allclose(second, nce_memory_bank(f, v, noise2, 100, 0.2)[0])
    assert "z" in loss_fn.state_dict()


def test_clip_module_learnable_scale_init_and_clamp() -> None:
    i_e, t_e = randn(4, 3, seed=1), randn(4, 3, seed=2)
    loss_fn = ClipLoss()
    assert loss_fn.logit_scale().item() == pytest.approx(1 / 0.07)
    loss = loss_fn(i_e, t_e)
    torch.testing.assert_close(loss, clip_loss(i_e, t_e, 1 / 0.07), rtol=1e-6, atol=1e-6)
    loss.backward()
    assert loss_fn.log_logit_scale.grad is not None and loss_fn.log_logit_scale.grad.abs() > 0
    with torch.no_grad():
        loss_fn.log_logit_scale.fill_(math.log(1000.0))
    loss_fn.log_logit_scale.grad = None
    assert loss_fn.logit_scale().item() == pytest.approx(100.0)
    loss = loss_fn(i_e, t_e)
    torch.testing.assert_close(loss, clip_loss(i_e, t_e, 100.0), rtol=1e-6, atol=1e-6)
    loss.backward()
    assert loss_fn.log_logit_scale.grad.item() == 0.0  # clamped: no gradient pushes it further


# ----------------------------------------------------------------- validation messages

GOOD = randn(4, 3, seed=9)
NAN = GOOD.clone().index_put_((torch.tensor(0), torch.tensor(1)), torch.tensor(float("nan"), dtype=F64))
INF = GOOD.clone().index_put_((torch.tensor(2), torch.tensor(0)), torch.tensor(float("inf"), dtype=F64))
NOISE = randn(4, 2, 3, seed=8)  # (B, m, D) noise entries matching GOOD for nce_memory_bank
TEMPERATURE = "temperature must be a finite number > 0"


def too_small(loss: str, rows: str, n: int = 1) -> str:
    """The message of a batch below 2: the batch size, the loss, where it was counted, and why."""
    why = "contrastive losses need at least 2 samples"
    return rf"batch size {n} is too small for {loss} \({re.escape(rows)}.*\): {why}"


def non_finite(name: str) -> str:
    """The message of NaN/inf in the input called ``name``."""
    return rf"^{name} contains non-finite values \(NaN or inf\)"


def clip_module_with_log_scale(value: float) -> ClipLoss:
    """A ClipLoss whose learnt log logit scale has become ``value`` (e.g. NaN after divergence)."""
    loss_fn = ClipLoss()
    with torch.no_grad():
        loss_fn.log_logit_scale.fill_(value)
    return loss_fn


def bad(id_: str, call: Callable[[], object], match: str, exc: type[Exception] = ValueError) -> object:
    """One row of the table below: ``call()`` raises ``exc`` whose message matches ``match``."""
    return pytest.param(call, exc, match, id=id_)


# Every loss and module: mismatched shapes, a batch below 2, a temperature (or other scale) <= 0 and
# NaN/inf in each input tensor, plus type and dimension errors.
@pytest.mark.parametrize(
    "call,exc,match",
    [
        # nt_xent
        bad(
            "nt_xent-shapes",
            lambda: nt_xent(GOOD, GOOD[:3]),
            r"z1 and z2 must have the same shape.*\(4, 3\) and \(3, 3\)",
        ),
        bad(
            "nt_xent-batch-1",
            lambda: nt_xent(GOOD[:1], GOOD[:1]),
            too_small("nt_xent", "N=1 pairs in z1, z2 on 1 rank(s)"),
        ),
        bad("nt_xent-batch-0", lambda: nt_xent(GOOD[:0], GOOD[:0]), too_small("nt_xent", "N=0 pairs", n=0)),
        bad("nt_xent-temp-0", lambda: nt_xent(GOOD, GOOD, 0.0), f"{TEMPERATURE}, got 0.0"),
        bad("nt_xent-temp-neg", lambda: nt_xent(GOOD, GOOD, -0.5), f"{TEMPERATURE}, got -0.5"),
        bad("nt_xent-temp-inf", lambda: nt_xent(GOOD, GOOD, float("inf")), f"{TEMPERATURE}, got inf"),
        bad("nt_xent-temp-nan", lambda: nt_xent(GOOD, GOOD, float("nan")), f"{TEMPERATURE}, got nan"),
        bad(
            "nt_xent-temp-str",
            lambda: nt_xent(GOOD, GOOD, "0.5"),
            "temperature must be a float, got str",
            TypeError,
        ),
        bad("nt_xent-nan-z1", lambda: nt_xent(NAN, GOOD), non_finite("z1")),
        bad("nt_xent-inf-z2", lambda: nt_xent(GOOD, INF), non_finite("z2")),
        bad("nt_xent-1d", lambda: nt_xent(GOOD[0], GOOD[1]), r"z1 must be a 2-D tensor, got shape \(3,\)"),
        bad(
            "nt_xent-int",
            lambda: nt_xent(GOOD.long(), GOOD.long()),
            "z1 must be a floating-point tensor",
            TypeError,
        ),
        bad(
            "nt_xent-list",
            lambda: nt_xent(GOOD.tolist(), GOOD),
            "z1 must be a torch.Tensor, got list",
            TypeError,
        ),
        # NTXentLoss
        bad("NTXentLoss-shapes", lambda: NTXentLoss()(GOOD, GOOD[:3]), "z1 and z2 must have the same shape"),
        bad("NTXentLoss-batch", lambda: NTXentLoss()(GOOD[:1], GOOD[:1]), too_small("nt_xent", "N=1 pairs")),
        bad("NTXentLoss-nan-z1", lambda: NTXentLoss()(NAN, GOOD), non_finite("z1")),
        bad("NTXentLoss-nan-z2", lambda: NTXentLoss()(GOOD, NAN), non_finite("z2")),
        # info_nce
        bad(
            "info_nce-shapes",
            lambda: info_nce(GOOD, GOOD[:2], GOOD),
            "query and key must have the same shape",
        ),
        bad(
            "info_nce-neg-dim",
            lambda: info_nce(GOOD, GOOD, randn(5, 2)),
            r"negatives must have shape \(K, D\).*\(5, 2\)",
        ),
        bad("info_nce-neg-empty", lambda: info_nce(GOOD, GOOD, GOOD[:0]), r"K >= 1.*got \(0, 3\)"),
        bad(
            "info_nce-batch",
            lambda: info_nce(GOOD[:1], GOOD[:1], GOOD),
            too_small("info_nce", "N=1 rows in query and key"),
        ),
        bad("info_nce-temp-0", lambda: info_nce(GOOD, GOOD, GOOD, 0), f"{TEMPERATURE}, got 0"),
        bad("info_nce-temp-neg", lambda: info_nce(GOOD, GOOD, GOOD, -0.1), f"{TEMPERATURE}, got -0.1"),
        bad("info_nce-nan-query", lambda: info_nce(NAN, GOOD, GOOD), non_finite("query")),
        bad("info_nce-nan-key", lambda: info_nce(GOOD, NAN, GOOD), non_finite("key")),
        bad("info_nce-inf-negatives", lambda: info_nce(GOOD, GOOD, INF), non_finite("negatives")),
        # InfoNCELoss
        bad(
            "InfoNCELoss-shapes",
            lambda: InfoNCELoss()(GOOD, GOOD[:2], GOOD),
            "query and key must have the same shape",
        ),
        bad(
            "InfoNCELoss-batch",
            lambda: InfoNCELoss()(GOOD[:1], GOOD[:1], GOOD),
            too_small("info_nce", "N=1 rows"),
        ),
        bad("InfoNCELoss-nan-query", lambda: InfoNCELoss()(NAN, GOOD, GOOD), non_finite("query")),
        bad("InfoNCELoss-nan-key", lambda: InfoNCELoss()(GOOD, NAN, GOOD), non_finite("key")),
        bad("InfoNCELoss-nan-negatives", lambda: InfoNCELoss()(GOOD, GOOD, NAN), non_finite("negatives")),
        # nce_memory_bank
        bad(
            "nce-shapes",
            lambda: nce_memory_bank(GOOD, GOOD[:2], NOISE, 10),
            r"features and positive_bank_feats must have the same shape.*\(4, 3\) and \(2, 3\)",
        ),
        bad(
            "nce-noise-dim",
            lambda: nce_memory_bank(GOOD, GOOD, randn(4, 2, 5), 10),
            r"noise_bank_feats must have shape",
        ),
        bad(
            "nce-noise-batch",
            lambda: nce_memory_bank(GOOD, GOOD, randn(3, 2, 3), 10),
            r"\(B, m, D\) = \(4, m, 3\)",
        ),
        bad(
            "nce-noise-1d",
            lambda: nce_memory_bank(GOOD, GOOD, randn(3), 10),
            "noise_bank_feats must be a 2-D or 3-D",
        ),
        bad(
            "nce-batch",
            lambda: nce_memory_bank(GOOD[:1], GOOD[:1], NOISE[:1], 10),
            too_small("nce_memory_bank", "B=1 rows in features and positive_bank_feats"),
        ),
        bad(
            "nce-dataset-size-0",
            lambda: nce_memory_bank(GOOD, GOOD, GOOD, 0),
            "dataset_size must be a positive int",
        ),
        bad(
            "nce-dataset-size-float",
            lambda: nce_memory_bank(GOOD, GOOD, GOOD, 10.0),
            "dataset_size must be a positive int",
        ),
        bad(
            "nce-z-neg",
            lambda: nce_memory_bank(GOOD, GOOD, GOOD, 10, z=-1.0),
            "z must be a finite number > 0",
        ),
        bad("nce-temp-0", lambda: nce_memory_bank(GOOD, GOOD, GOOD, 10, 0.0), f"{TEMPERATURE}, got 0.0"),
        bad("nce-temp-neg", lambda: nce_memory_bank(GOOD, GOOD, GOOD, 10, -1.0), f"{TEMPERATURE}, got -1.0"),
        bad("nce-nan-features", lambda: nce_memory_bank(NAN, GOOD, NOISE, 10), non_finite("features")),
        bad(
            "nce-nan-positive",
            lambda: nce_memory_bank(GOOD, NAN, NOISE, 10),
            non_finite("positive_bank_feats"),
        ),
        bad("nce-inf-noise", lambda: nce_memory_bank(GOOD, GOOD, INF, 10), non_finite("noise_bank_feats")),
        # NCEMemoryBankLoss
        bad(
            "NCEMemoryBankLoss-shapes",
            lambda: NCEMemoryBankLoss(10)(GOOD, GOOD[:2], NOISE),
            "features and positive_bank_feats must have the same shape",
        ),
        bad(
            "NCEMemoryBankLoss-batch",
            lambda: NCEMemoryBankLoss(10)(GOOD[:1], GOOD[:1], NOISE[:1]),
            too_small("nce_memory_bank", "B=1 rows"),
        ),
        bad(
            "NCEMemoryBankLoss-nan-features",
            lambda: NCEMemoryBankLoss(10)(NAN, GOOD, NOISE),
            non_finite("features"),
        ),
        bad(
            "NCEMemoryBankLoss-nan-positive",
            lambda: NCEMemoryBankLoss(10)(GOOD, NAN, NOISE),
            non_finite("positive_bank_feats"),
        ),
        bad(
            "NCEMemoryBankLoss-nan-noise",
            lambda: NCEMemoryBankLoss(10)(GOOD, GOOD, NAN),
            non_finite("noise_bank_feats"),
        ),
        # cpc_info_nce (and cpc_accuracy, which shares its checks)
        bad(
            "cpc-shapes",
            lambda: cpc_info_nce(GOOD, GOOD[:, :2]),
            "predictions and targets must have the same shape",
        ),
        bad(
            "cpc-batch",
            lambda: cpc_info_nce(GOOD[:1], GOOD[:1]),
            too_small("cpc_info_nce", "M=1 rows in predictions and targets; one row has no negatives"),
        ),
        bad("cpc-temp-0", lambda: cpc_info_nce(GOOD, GOOD, 0.0), f"{TEMPERATURE}, got 0.0"),
        bad("cpc-temp-neg", lambda: cpc_info_nce(GOOD, GOOD, -1.0), f"{TEMPERATURE}, got -1.0"),
        bad("cpc-temp-inf", lambda: cpc_info_nce(GOOD, GOOD, float("inf")), f"{TEMPERATURE}, got inf"),
        bad("cpc-nan-predictions", lambda: cpc_info_nce(NAN, GOOD), non_finite("predictions")),
        bad("cpc-inf-targets", lambda: cpc_info_nce(GOOD, INF), non_finite("targets")),
        bad(
            "cpc_accuracy-batch",
            lambda: cpc_accuracy(GOOD[:1], GOOD[:1]),
            too_small("cpc_accuracy", "M=1 rows"),
        ),
        bad("cpc_accuracy-nan-targets", lambda: cpc_accuracy(GOOD, NAN), non_finite("targets")),
        # CPCInfoNCELoss
        bad(
            "CPCInfoNCELoss-shapes",
            lambda: CPCInfoNCELoss()(GOOD, GOOD[:3]),
            "predictions and targets must have the same shape",
        ),
        bad(
            "CPCInfoNCELoss-batch",
            lambda: CPCInfoNCELoss()(GOOD[:1], GOOD[:1]),
            too_small("cpc_info_nce", "M=1 rows"),
        ),
        bad("CPCInfoNCELoss-nan-predictions", lambda: CPCInfoNCELoss()(NAN, GOOD), non_finite("predictions")),
        bad("CPCInfoNCELoss-nan-targets", lambda: CPCInfoNCELoss()(GOOD, NAN), non_finite("targets")),
        # clip_loss (its temperature is 1/logit_scale)
        bad(
            "clip-shapes",
            lambda: clip_loss(GOOD, GOOD[:2], 1.0),
            "image_emb and text_emb must have the same shape",
        ),
        bad(
            "clip-batch",
            lambda: clip_loss(GOOD[:1], GOOD[:1], 1.0),
            too_small("clip_loss", "N=1 rows in image_emb and text_emb"),
        ),
        bad("clip-scale-0", lambda: clip_loss(GOOD, GOOD, 0.0), "logit_scale must be a finite number > 0"),
        bad(
            "clip-scale-neg-tensor",
            lambda: clip_loss(GOOD, GOOD, torch.tensor(-1.0)),
            "logit_scale must be a finite number > 0",
        ),
        bad(
            "clip-scale-nan-tensor",
            lambda: clip_loss(GOOD, GOOD, torch.tensor(float("nan"))),
            "logit_scale must be a finite number > 0",
        ),
        bad("clip-scale-2-elements", lambda: clip_loss(GOOD, GOOD, torch.ones(2)), "1-element float tensor"),
        bad("clip-inf-image", lambda: clip_loss(INF, GOOD, 1.0), non_finite("image_emb")),
        bad("clip-nan-text", lambda: clip_loss(GOOD, NAN, 1.0), non_finite("text_emb")),
        # ClipLoss
        bad(
            "ClipLoss-shapes",
            lambda: ClipLoss()(GOOD, GOOD[:2]),
            "image_emb and text_emb must have the same shape",
        ),
        bad("ClipLoss-batch", lambda: ClipLoss()(GOOD[:1], GOOD[:1]), too_small("clip_loss", "N=1 rows")),
        bad("ClipLoss-nan-image", lambda: ClipLoss()(NAN, GOOD), non_finite("image_emb")),
        bad("ClipLoss-nan-text", lambda: ClipLoss()(GOOD, NAN), non_finite("text_emb")),
        bad(
            "ClipLoss-diverged-scale",
            lambda: clip_module_with_log_scale(float("nan"))(GOOD, GOOD),
            "logit_scale must be a finite number > 0 .*got nan",
        ),
        # alignment (no temperature: its exponent alpha must be > 0)
        bad("alignment-shapes", lambda: alignment(GOOD, GOOD[:3]), "z1 and z2 must have the same shape"),
        bad(
            "alignment-batch",
            lambda: alignment(GOOD[:1], GOOD[:1]),
            too_small("alignment", "N=1 rows in z1 and z2"),
        ),
        bad("alignment-alpha-0", lambda: alignment(GOOD, GOOD, 0.0), "alpha must be a finite number > 0"),
        bad("alignment-nan-z1", lambda: alignment(NAN, GOOD), non_finite("z1")),
        bad("alignment-inf-z2", lambda: alignment(GOOD, INF), non_finite("z2")),
        # uniformity (one input, so the shape check is its dimension; t must be > 0)
        bad("uniformity-1d", lambda: uniformity(GOOD[0]), r"z must be a 2-D tensor, got shape \(3,\)"),
        bad(
            "uniformity-batch",
            lambda: uniformity(GOOD[:1]),
            too_small("uniformity", "N=1 rows in z; a pair needs 2"),
        ),
        bad("uniformity-t-neg", lambda: uniformity(GOOD, -2.0), "t must be a finite number > 0"),
        bad("uniformity-nan-z", lambda: uniformity(NAN), non_finite("z")),
    ],
)
def test_bad_input_raises_clear_error(call: Callable[[], object], exc: type[Exception], match: str) -> None:
    with pytest.raises(exc, match=match):
        call()


@pytest.mark.parametrize(
    "make,match",
    [
        (lambda: NTXentLoss(temperature=0.0), f"{TEMPERATURE}, got 0.0"),
        (lambda: NTXentLoss(temperature=-0.5), f"{TEMPERATURE}, got -0.5"),
        (lambda: InfoNCELoss(temperature=0.0), f"{TEMPERATURE}, got 0.0"),
        (lambda: InfoNCELoss(temperature=-0.07), f"{TEMPERATURE}, got -0.07"),
        (lambda: InfoNCELoss(temperature=float("inf")), f"{TEMPERATURE}, got inf"),
        (lambda: CPCInfoNCELoss(temperature=0.0), f"{TEMPERATURE}, got 0.0"),
        (lambda: CPCInfoNCELoss(temperature=-1.0), f"{TEMPERATURE}, got -1.0"),
        (lambda: NCEMemoryBankLoss(0), "dataset_size must be a positive int"),
        (lambda: NCEMemoryBankLoss(10, temperature=0.0), f"{TEMPERATURE}, got 0.0"),
        (lambda: NCEMemoryBankLoss(10, temperature=-0.07), f"{TEMPERATURE}, got -0.07"),
        (lambda: NCEMemoryBankLoss(10, temperature=float("nan")), f"{TEMPERATURE}, got nan"),
        (lambda: ClipLoss(init_temperature=0.0), "init_temperature must be a finite number > 0, got 0.0"),
        (lambda: ClipLoss(init_temperature=-0.07), "init_temperature must be a finite number > 0, got -0.07"),
        (lambda: ClipLoss(max_logit_scale=-5.0), "max_logit_scale must be a finite number > 0"),
    ],
)
def test_modules_validate_at_construction(make: Callable[[], object], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        make()
