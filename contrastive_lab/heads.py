"""Projection heads g(.): representations h -> embeddings z = g(h) on which the loss is computed.

SimCLR (Chen et al. 2020, Sec. 2.1 and Sec. 4.2) showed that a small nonlinear MLP between the
encoder and the loss improves the representation h (not z) by >10% linear-eval accuracy; h is what
we keep after pre-training. This module provides:

* :class:`IdentityHead` (z = h), :class:`LinearHead` (z = W h + b), and
* :class:`MLPHead`, the general n-layer MLP, plus :func:`build_head` presets for SimCLR v1/v2 and
  MoCo v2, and :class:`PredictorHead` (BYOL's predictor q) for the non-contrastive methods.

Every head has ``in_dim`` and ``out_dim`` attributes and takes inputs of shape (B, in_dim).

About BN in the SimCLR heads. The papers write g(h) = W2 ReLU(W1 h) (SimCLR Sec. 2.1) without BN,
but the official TF code (google-research/simclr, ``model_util.projection_head`` / ``linear_layer``)
puts batch norm after *every* dense layer: hidden layers are Dense(no bias) -> BN(scale, shift) -> ReLU,
and the output layer is Dense(no bias) -> BN(scale only, ``center=False``). Our ``simclr_v1`` and
``simclr_v2`` presets reproduce that code exactly (``last_bn=True`` with :class:`ScaleOnlyBatchNorm1d`),
because the published numbers come from it; pass ``last_bn=False`` to :func:`build_head` for the
plain Linear output most PyTorch re-implementations use.
"""

from __future__ import annotations

import torch
from torch import nn


def _check_dim(value: object, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be a positive int, got {value!r} ({type(value).__name__}).")
    if value <= 0:
        raise ValueError(f"{name} must be a positive int, got {value}.")
    return value


def _check_bool(value: object, name: str) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be True or False, got {value!r} ({type(value).__name__}).")
    return value


def _check_features(x: torch.Tensor, in_dim: int, head: str) -> None:
    if x.ndim != 2 or x.shape[1] != in_dim:
        raise ValueError(
            f"{head} expects features of shape (B, {in_dim}), got {tuple(x.shape)}; "
            "pass the encoder output h (after global pooling), and build the head with in_dim=feature_dim."
        )


class IdentityHead(nn.Module):
    """z = h: no projection (SimCLR Sec. 4.2, Fig. 8 "None"; the TF code's ``proj_head_mode='none'``)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.in_dim = self.out_dim = _check_dim(dim, "dim")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return ``x`` itself (after checking its shape)."""
        _check_features(x, self.in_dim, "IdentityHead")
        return x


class LinearHead(nn.Module):
    """z = W h + b, W in R^{out_dim x in_dim}: the "Linear" projection of SimCLR Sec. 4.2, Fig. 8."""

    def __init__(self, in_dim: int, out_dim: int, bias: bool = True) -> None:
        super().__init__()
        self.in_dim, self.out_dim = _check_dim(in_dim, "in_dim"), _check_dim(out_dim, "out_dim")
        self.linear = nn.Linear(in_dim, out_dim, bias=_check_bool(bias, "bias"))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x @ W.T + b."""
        _check_features(x, self.in_dim, "LinearHead")
        return self.linear(x)


class ScaleOnlyBatchNorm1d(nn.Module):
    """Batch norm with a learned scale but no shift: y = gamma * (x - mu_B) / sqrt(var_B + eps).

    mu_B and the biased var_B are batch statistics in training, running averages in eval mode
    (Ioffe & Szegedy 2015, Alg. 1, without beta). This is TF's ``batch_normalization(center=False,
    scale=True)`` as used on the SimCLR projection output (google-research/simclr, ``linear_layer``
    with ``use_bias=False``). Built from ``nn.BatchNorm1d(affine=False)`` so that
    ``nn.SyncBatchNorm.convert_sync_batchnorm`` still finds it.
    """

    def __init__(self, dim: int, eps: float = 1e-5, momentum: float = 0.1) -> None:
        super().__init__()
        self.norm = nn.BatchNorm1d(_check_dim(dim, "dim"), eps=eps, momentum=momentum, affine=False)
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """gamma * BN(x)."""
        return self.norm(x) * self.weight


class MLPHead(nn.Module):
    """An MLP of ``num_layers`` Linear layers: in_dim -> hidden_dim -> ... -> hidden_dim -> out_dim.

    Between consecutive Linear layers: [BatchNorm1d if ``batch_norm``] -> ReLU, i.e. for 2 layers
    z = W2 ReLU(BN(W1 h)) + b2 (SimCLR Sec. 2.1 writes z = W2 ReLU(W1 h)). ``last_bn`` appends a
    :class:`ScaleOnlyBatchNorm1d` to the output, as the SimCLR TF code does. A Linear layer that is
    followed by BN has no bias (BN's mean subtraction would cancel it). ``hidden_dim`` is unused when
    ``num_layers == 1``. Layers live in ``self.layers`` (an ``nn.Sequential``).
    """

    def __init__(
        self,
        in_dim: int,
        hidden_dim: int,
        out_dim: int,
        num_layers: int = 2,
        batch_norm: bool = True,
        last_bn: bool = False,
    ) -> None:
        super().__init__()
        for value, name in ((in_dim, "in_dim"), (hidden_dim, "hidden_dim"), (out_dim, "out_dim")):
            _check_dim(value, name)
        if isinstance(num_layers, bool) or not isinstance(num_layers, int):
            raise TypeError(f"num_layers must be an int, got {type(num_layers).__name__} {num_layers!r}.")
        if num_layers < 1:
            raise ValueError(f"num_layers must be >= 1 (it counts the Linear layers), got {num_layers}.")
        _check_bool(batch_norm, "batch_norm")
        _check_bool(last_bn, "last_bn")
        self.in_dim, self.hidden_dim, self.out_dim, self.num_layers = in_dim, hidden_dim, out_dim, num_layers
        layers = _mlp_layers(in_dim, hidden_dim, out_dim, num_layers, batch_norm, last_bn)
        self.layers = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """z = g(h) for h of shape (B, in_dim)."""
        _check_features(x, self.in_dim, type(self).__name__)
        return self.layers(x)


def _mlp_layers(
    in_dim: int, hidden_dim: int, out_dim: int, num_layers: int, batch_norm: bool, last_bn: bool
) -> list[nn.Module]:
    """The flat layer list of :class:`MLPHead`."""
    dims = [in_dim] + [hidden_dim] * (num_layers - 1) + [out_dim]
    layers: list[nn.Module] = []
    for i in range(num_layers - 1):
        layers.append(nn.Linear(dims[i], dims[i + 1], bias=not batch_norm))
        if batch_norm:
            layers.append(nn.BatchNorm1d(dims[i + 1]))
        layers.append(nn.ReLU(inplace=True))
    layers.append(nn.Linear(dims[-2], out_dim, bias=not last_bn))
    if last_bn:
        layers.append(ScaleOnlyBatchNorm1d(out_dim))
    return layers


class PredictorHead(MLPHead):
    """BYOL's predictor q: Linear(dim, hidden) -> BN -> ReLU -> Linear(hidden, dim).

    Grill et al. 2020, Sec. 3.3: the projector g is "a linear layer with output size 4096 followed by
    batch normalization, rectified linear units (ReLU), and a final linear layer with output dimension
    256", and the predictor q "uses the same architecture as g" (input and output 256-d).
    """

    def __init__(self, dim: int = 256, hidden_dim: int = 4096) -> None:
        super().__init__(dim, hidden_dim, dim, num_layers=2, batch_norm=True, last_bn=False)


# MLP presets: options for MLPHead. hidden_dim defaults to in_dim for all of them (see build_head).
MLP_PRESETS: dict[str, dict[str, object]] = {
    "mlp": {"num_layers": 2, "batch_norm": True, "last_bn": False},
    # SimCLR v1: 2 layers, BN on every layer as in the official TF code (module docstring).
    "simclr_v1": {"num_layers": 2, "batch_norm": True, "last_bn": True},
    # SimCLR v2 (Chen et al. 2020b, Sec. 2): a deeper, 3-layer head (TF code: num_proj_layers=3).
    "simclr_v2": {"num_layers": 3, "batch_norm": True, "last_bn": True},
    # MoCo v2 (Chen et al. 2020c, Sec. 2; official repo `--mlp`): Linear -> ReLU -> Linear, biases, no BN.
    "moco_v2": {"num_layers": 2, "batch_norm": False, "last_bn": False},
}
HEAD_KINDS: tuple[str, ...] = ("identity", "linear", *MLP_PRESETS)


def build_head(
    kind: str, in_dim: int, out_dim: int | None = None, hidden_dim: int | None = None, **options: object
) -> nn.Module:
    """Build a projection head of ``kind`` (one of :data:`HEAD_KINDS`) on features of size ``in_dim``.

    * "identity": z = h (``out_dim`` must be None or ``in_dim``).
    * "linear": z = W h + b, ``out_dim`` default 128.
    * MLP kinds ("mlp", "simclr_v1", "simclr_v2", "moco_v2"): :class:`MLPHead` with the preset in
      :data:`MLP_PRESETS`; ``out_dim`` default 128 (all three papers), ``hidden_dim`` default ``in_dim``
      (SimCLR TF code: ``mid_dim = hiddens.shape[-1]``; MoCo code: ``dim_mlp = fc.weight.shape[1]``;
      for ResNet-50 that is the papers' 2048). ``options`` (num_layers, batch_norm, last_bn) override
      the preset.
    """
    if kind not in HEAD_KINDS:
        raise ValueError(f"unknown head kind {kind!r}; valid kinds: {list(HEAD_KINDS)}.")
    _check_dim(in_dim, "in_dim")
    if kind in ("identity", "linear") and (hidden_dim is not None or options):
        extra = (["hidden_dim"] if hidden_dim is not None else []) + sorted(options)
        raise ValueError(f"head kind {kind!r} has no hidden layer; remove {extra}.")
    if kind == "identity":
        if out_dim is not None and out_dim != in_dim:
            raise ValueError(f"an identity head keeps its size: out_dim must be {in_dim}, got {out_dim}.")
        return IdentityHead(in_dim)
    out_dim = 128 if out_dim is None else out_dim
    if kind == "linear":
        return LinearHead(in_dim, out_dim)
    unknown = sorted(set(options) - set(MLP_PRESETS[kind]))
    if unknown:
        accepted = sorted(MLP_PRESETS[kind])
        raise TypeError(f"head kind {kind!r} does not take {unknown}; it accepts {accepted}.")
    hidden_dim = in_dim if hidden_dim is None else hidden_dim
    return MLPHead(in_dim, hidden_dim, out_dim, **{**MLP_PRESETS[kind], **options})


__all__ = [
    "HEAD_KINDS", "MLP_PRESETS", "IdentityHead", "LinearHead", "MLPHead", "PredictorHead",
    "ScaleOnlyBatchNorm1d", "build_head",
]
