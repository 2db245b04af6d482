"""Chapter 03's checked exercises: the part of h that a linear head's z cannot see (03.2, the null
space of ``heads.LinearHead``'s W, from its SVD), the features after the first Linear(-BN)-ReLU block
of an MLP head in eval mode (03.4, against the head's own ``layers``), and the parameter count of a
head (03.5, against ``heads.build_head``)."""

from __future__ import annotations

import copy

import torch
from torch import Tensor, nn

from ..heads import LinearHead, MLPHead, build_head
from .core import Case, Diagnosis, Exercise, register

# --------------------------------------------------------------------------------------------
# 03.2 the part of h in the null space of W
# --------------------------------------------------------------------------------------------


def _row_space_basis(weight: Tensor) -> Tensor:
    """Orthonormal rows spanning the row space of W (float64 SVD; singular values below
    max(m, n) * eps * s_max count as 0, ``torch.linalg.pinv``'s default)."""
    w = weight.detach().double()
    _, s, vh = torch.linalg.svd(w, full_matrices=False)
    rank = int((s > max(w.shape) * torch.finfo(torch.float32).eps * s.max()).sum()) if len(s) else 0
    return vh[:rank]


def library_invisible_part(h: Tensor, head: LinearHead) -> Tensor:
    """h - V V^T h with V an orthonormal basis of W's row space: the component of each row of h in
    the null space of W, which z = W h + b does not depend on. (B, in_dim) float64."""
    v = _row_space_basis(head.linear.weight)
    x = h.double()
    return x - (x @ v.T) @ v


def _linear_head(in_dim: int, out_dim: int, seed: int, duplicate_rows: bool = False) -> LinearHead:
    g = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng():  # the reader's global RNG stream is left as it was
        head = LinearHead(in_dim, out_dim)
    with torch.no_grad():
        w = torch.randn(out_dim, in_dim, generator=g) / in_dim ** 0.5
        if duplicate_rows:  # rank out_dim - 2, exactly in float32: one row repeated, one twice another
            w[-1], w[-2] = w[0], 2 * w[1]  # (a sum of two rows would round, leaving a tiny singular value)
        head.linear.weight.copy_(w)
        head.linear.bias.copy_(torch.randn(out_dim, generator=g))
    return head


def _h(n: int, d: int, seed: int, scale: float = 1.0, dtype=torch.float32) -> Tensor:
    return (scale * torch.randn(n, d, generator=torch.Generator().manual_seed(seed))).to(dtype)


def _null_space_cases() -> list[Case]:
    row_head = _linear_head(12, 4, 5)
    in_row_space = _h(6, 4, 6) @ row_head.linear.weight.detach()  # combinations of W's rows: all visible
    return [
        Case("8 rows, h 16-d -> z 4-d", (_h(8, 16, 0), _linear_head(16, 4, 1))),
        Case("batch of 1", (_h(1, 10, 2), _linear_head(10, 3, 3))),
        Case("z as wide as h or wider (null space {0})", (_h(5, 6, 4), _linear_head(6, 8, 4))),
        Case("rank-deficient W (a repeated row, a row twice another)",
             (_h(8, 12, 7), _linear_head(12, 6, 8, duplicate_rows=True))),
        Case("h inside W's row space (nothing invisible)", (in_row_space, row_head)),
        Case("bf16 h, unnormalised (norm ~100)", (_h(8, 16, 9, scale=25.0, dtype=torch.bfloat16),
                                                   _linear_head(16, 5, 10))),
    ]


def _pinv(head: LinearHead) -> tuple[Tensor, Tensor, Tensor]:
    w = head.linear.weight.detach().double()
    return w, head.linear.bias.detach().double(), torch.linalg.pinv(w)


register(Exercise(
    id="03.2",
    title="the part of h that a linear head's z cannot see",
    cases=_null_space_cases,
    reference=library_invisible_part,
    hint="the projector onto W's row space is P = W^+ W (torch.linalg.pinv; or V^T V from the SVD's right "
         "singular vectors with non-zero singular values); the invisible part is h - P h, row by row "
         "(h - h @ P.T for a (B, d) batch). The bias shifts z, not what z depends on.",
    diagnoses=(
        Diagnosis("this is the row-space part (what z sees); the invisible part is h minus it",
                  lambda h, head: h.double() - library_invisible_part(h, head)),
        Diagnosis("W^T W is not a projector unless W's rows are orthonormal: use the pseudo-inverse, P = W^+ W",
                  lambda h, head: h.double() - h.double() @ _pinv(head)[0].T @ _pinv(head)[0]),
        Diagnosis("the rows of W are projected out one at a time, but they are not orthogonal",
                  lambda h, head: h.double() - sum((h.double() @ w)[:, None] / w.dot(w) * w
                                                   for w in _pinv(head)[0])),
        Diagnosis("the bias is included (h - W^+ (W h + b)): b moves every z alike and hides nothing",
                  lambda h, head: h.double() - (h.double() @ _pinv(head)[0].T + _pinv(head)[1]) @ _pinv(head)[2].T),
    ),
))


# --------------------------------------------------------------------------------------------
# 03.4 the features after the first block of an MLP head (SimCLR v2 fine-tunes from there)
# --------------------------------------------------------------------------------------------


def library_first_block(head: MLPHead, h: Tensor) -> Tensor:
    """The head's own ``layers`` up to and including the first ReLU, in eval mode (BN with its
    running statistics), on a copy so that the head passed in is not touched."""
    net = copy.deepcopy(head).eval()
    first_relu = next(i for i, m in enumerate(net.layers) if isinstance(m, nn.ReLU))
    with torch.no_grad():
        return net.layers[: first_relu + 1](h.float())


def _mlp_head(kind: str, in_dim: int, hidden: int, seed: int, train: bool = False) -> MLPHead:
    """A head of ``kind`` with seeded weights and non-trivial BN scale, shift and running statistics."""
    with torch.random.fork_rng():  # seeded initial weights; the reader's global RNG stream is left as it was
        torch.manual_seed(seed)
        head = build_head(kind, in_dim, out_dim=8, hidden_dim=hidden)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in head.parameters():
            p.add_(0.3 * torch.randn(p.shape, generator=g))
        for m in head.modules():
            if isinstance(m, nn.BatchNorm1d):
                m.running_mean.copy_(0.5 * torch.randn(m.num_features, generator=g))
                m.running_var.copy_(0.5 + torch.rand(m.num_features, generator=g))
    return head.train(train)


def _first_block_cases() -> list[Case]:
    return [
        Case("simclr_v2 head, 8 rows, eval mode", (_mlp_head("simclr_v2", 16, 16, 0), _h(8, 16, 1))),
        Case("the same head left in training mode", (_mlp_head("simclr_v2", 16, 16, 0, train=True), _h(8, 16, 1))),
        Case("batch of 1", (_mlp_head("simclr_v2", 16, 16, 2), _h(1, 16, 3))),
        Case("simclr_v1, hidden width 20 != in_dim 12", (_mlp_head("simclr_v1", 12, 20, 4), _h(6, 12, 5))),
        Case("moco_v2 head (no BN; the first Linear has a bias)", (_mlp_head("moco_v2", 10, 14, 6), _h(5, 10, 7))),
        Case("bf16 h, unnormalised (norm ~100)", (_mlp_head("simclr_v2", 16, 16, 8),
                                                   _h(8, 16, 9, scale=25.0, dtype=torch.bfloat16))),
    ]


def _by_hand(head: MLPHead, h: Tensor, *, batch_stats: bool = False, relu: bool = True, affine: bool = True) -> Tensor:
    """The first block computed from the weights, with one part changed (for the diagnoses)."""
    lin = head.layers[0]
    x = h.double() @ lin.weight.detach().double().T
    if lin.bias is not None:
        x = x + lin.bias.detach().double()
    bn = head.layers[1] if isinstance(head.layers[1], nn.BatchNorm1d) else None
    if bn is not None:
        if batch_stats:
            mean, var = x.mean(0), x.var(0, unbiased=False)
        else:
            mean, var = bn.running_mean.double(), bn.running_var.double()
        x = (x - mean) / torch.sqrt(var + bn.eps)
        if affine:
            x = x * bn.weight.detach().double() + bn.bias.detach().double()
    return torch.relu(x) if relu else x


def _whole_head(head: MLPHead, h: Tensor) -> Tensor:
    with torch.no_grad():
        return copy.deepcopy(head).eval()(h.float())


register(Exercise(
    id="03.4",
    title="the features after the first Linear-BN-ReLU block of a head",
    cases=_first_block_cases,
    reference=library_first_block,
    hint="run head.layers up to and including the first ReLU (Linear -> BN -> ReLU; moco_v2: Linear with bias "
         "-> ReLU) with BN in eval mode: its running_mean and running_var, then its weight and bias. Upcast h "
         "to the weights' dtype first.",
    diagnoses=(
        Diagnosis("BN used the batch's own statistics (training mode); features for downstream use come from "
                  "eval mode, with BN's running mean and variance", lambda head, h: _by_hand(head, h, batch_stats=True)),
        Diagnosis("the ReLU is missing (the block ends with it)", lambda head, h: _by_hand(head, h, relu=False)),
        Diagnosis("BN's learned scale and shift (weight, bias) are not applied",
                  lambda head, h: _by_hand(head, h, affine=False)),
        Diagnosis("this is the whole head's output z, not the first block's", _whole_head),
    ),
))


# --------------------------------------------------------------------------------------------
# 03.5 the parameter count of a head
# --------------------------------------------------------------------------------------------


def library_head_params(kind: str, in_dim: int, out_dim: int | None, hidden_dim: int | None) -> int:
    """Trainable parameters of ``build_head(kind, in_dim, out_dim, hidden_dim)`` (built, then counted)."""
    extra = {} if hidden_dim is None else {"hidden_dim": hidden_dim}
    return sum(p.numel() for p in build_head(kind, in_dim, out_dim, **extra).parameters())


def _head_count_cases() -> list[Case]:
    return [
        Case("simclr_v1 on ResNet-50 (h 2048-d, z 128-d)", ("simclr_v1", 2048, 128, None)),
        Case("simclr_v2, hidden width 1024 != in_dim 256", ("simclr_v2", 256, 64, 1024)),
        Case("moco_v2 (biases, no BN), hidden 2048", ("moco_v2", 512, 128, 2048)),
        Case("mlp (plain Linear output), hidden 30", ("mlp", 100, 10, 30)),
        Case("linear head 128 -> 16 (exercise 2)", ("linear", 128, 16, None)),
        Case("identity head", ("identity", 128, None, None)),
        Case("tiny simclr_v2: every width 1", ("simclr_v2", 1, 1, 1)),
    ]


_PRESETS = {"mlp": (2, True, False), "simclr_v1": (2, True, True), "simclr_v2": (3, True, True),
            "moco_v2": (2, False, False)}


def _count(kind, in_dim, out_dim, hidden_dim, *, bias_everywhere=False, shifted_last_bn=False, hidden_is_in=False,
           no_bn=False):
    """The count from the layer list, with one part changed (for the diagnoses)."""
    if kind == "identity":
        return 0
    out = 128 if out_dim is None else out_dim
    if kind == "linear":
        return in_dim * out + out
    layers, bn, last_bn = _PRESETS[kind]
    hidden = in_dim if hidden_dim is None or hidden_is_in else hidden_dim
    dims = [in_dim] + [hidden] * (layers - 1) + [out]
    total = 0
    for a, b in zip(dims[:-2], dims[1:-1]):
        total += a * b + (b if bias_everywhere or not bn else 0) + (2 * b if bn and not no_bn else 0)
    total += dims[-2] * out + (out if bias_everywhere or not last_bn else 0)
    if last_bn and not no_bn:
        total += 2 * out if shifted_last_bn else out
    return total


register(Exercise(
    id="03.5",
    title="parameters of a projection head",
    cases=_head_count_cases,
    reference=library_head_params,
    hint="Linear a -> b: a*b weights, + b biases only when no BN follows it; BN: 2 per channel (scale and shift), "
         "the scale-only output BN of simclr_v1/v2 1 per channel. Hidden width = hidden_dim, or in_dim when it is "
         "None; out_dim None means 128 (identity: no parameters). Layers per kind: heads.MLP_PRESETS.",
    diagnoses=(
        Diagnosis("a bias is counted on every Linear layer; a Linear followed by BN has none",
                  lambda *a: _count(*a, bias_everywhere=True)),
        Diagnosis("the scale-only output BN of simclr_v1/v2 is counted with a shift (it has gamma only)",
                  lambda *a: _count(*a, shifted_last_bn=True)),
        Diagnosis("the hidden width is taken to be in_dim although hidden_dim is given",
                  lambda *a: _count(*a, hidden_is_in=True)),
        Diagnosis("the BatchNorm parameters are not counted", lambda *a: _count(*a, no_bn=True)),
    ),
    rtol=0.0, atol=0.0,
))
