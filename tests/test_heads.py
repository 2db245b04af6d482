from __future__ import annotations

import pytest
import torch
from torch import nn

from contrastive_lab.heads import (
    HEAD_KINDS,
    IdentityHead,
    LinearHead,
    MLPHead,
    PredictorHead,
    ScaleOnlyBatchNorm1d,
    build_head,
)


def _features(batch: int, dim: int, seed: int = 0, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    return torch.randn(batch, dim, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def _linears(head: nn.Module) -> list[nn.Linear]:
    return [m for m in head.modules() if isinstance(m, nn.Linear)]


def _count(head: nn.Module, kind: type) -> int:
    return sum(isinstance(m, kind) for m in head.modules())


def _bn_reference(x: torch.Tensor, weight: torch.Tensor | None, bias: torch.Tensor | None,
                  eps: float = 1e-5) -> torch.Tensor:
    """Training-mode batch norm by hand (Ioffe & Szegedy 2015, Alg. 1): biased batch variance."""
    mean = x.mean(0)
    var = ((x - mean) ** 2).mean(0)
    y = (x - mean) / torch.sqrt(var + eps)
    if weight is not None:
        y = y * weight
    return y + bias if bias is not None else y


def test_head_kinds():
    assert HEAD_KINDS == ("identity", "linear", "mlp", "simclr_v1", "simclr_v2", "moco_v2")


# ---- layer structure of each preset -------------------------------------------------------------


def test_simclr_v1_matches_the_official_tf_head():
    head = build_head("simclr_v1", in_dim=512)
    types = [type(m) for m in head.layers]
    assert types == [nn.Linear, nn.BatchNorm1d, nn.ReLU, nn.Linear, ScaleOnlyBatchNorm1d]
    assert [(lin.in_features, lin.out_features) for lin in _linears(head)] == [(512, 512), (512, 128)]
    assert all(lin.bias is None for lin in _linears(head))  # every Linear is followed by BN
    hidden_bn = head.layers[1]
    assert hidden_bn.affine and hidden_bn.num_features == 512
    out_bn = head.layers[4]
    assert out_bn.weight.shape == (128,) and not out_bn.norm.affine  # scale, no shift
    assert head.out_dim == 128 and head.in_dim == 512


def test_simclr_v2_has_three_layers():
    head = build_head("simclr_v2", in_dim=2048)
    assert [(lin.in_features, lin.out_features) for lin in _linears(head)] == [
        (2048, 2048), (2048, 2048), (2048, 128)]
    assert _count(head, nn.BatchNorm1d) == 3  # 2 hidden (affine) + the output one inside ScaleOnlyBatchNorm1d
    assert _count(head, ScaleOnlyBatchNorm1d) == 1
    assert _count(head, nn.ReLU) == 2
    assert all(lin.bias is None for lin in _linears(head))
    assert head.out_dim == 128


@pytest.mark.parametrize("in_dim, hidden_dim, expected_hidden", [(2048, None, 2048), (512, None, 512),
                                                                  (512, 2048, 2048)])
def test_moco_v2_is_linear_relu_linear_with_biases(in_dim, hidden_dim, expected_hidden):
    head = build_head("moco_v2", in_dim=in_dim, hidden_dim=hidden_dim)
    assert [type(m) for m in head.layers] == [nn.Linear, nn.ReLU, nn.Linear]
    assert [(lin.in_features, lin.out_features) for lin in _linears(head)] == [
        (in_dim, expected_hidden), (expected_hidden, 128)]
    assert all(lin.bias is not None for lin in _linears(head))
    assert _count(head, nn.BatchNorm1d) == 0


def test_mlp_preset_defaults_and_overrides():
    head = build_head("mlp", in_dim=64)
    assert [type(m) for m in head.layers] == [nn.Linear, nn.BatchNorm1d, nn.ReLU, nn.Linear]
    assert head.layers[0].bias is None and head.layers[3].bias is not None  # output Linear keeps its bias
    deep = build_head("mlp", in_dim=64, out_dim=16, hidden_dim=32, num_layers=4, batch_norm=False)
    shapes = [(lin.in_features, lin.out_features) for lin in _linears(deep)]
    assert shapes == [(64, 32), (32, 32), (32, 32), (32, 16)]
    assert _count(deep, nn.ReLU) == 3 and _count(deep, nn.BatchNorm1d) == 0
    plain_simclr = build_head("simclr_v1", in_dim=64, last_bn=False)
    assert isinstance(plain_simclr.layers[-1], nn.Linear) and plain_simclr.layers[-1].bias is not None


@pytest.mark.parametrize("num_layers", [1, 2, 3, 5])
@pytest.mark.parametrize("batch_norm, last_bn", [(True, False), (False, False), (True, True), (False, True)])
def test_mlp_head_layer_counts(num_layers, batch_norm, last_bn):
    head = MLPHead(12, 20, 6, num_layers=num_layers, batch_norm=batch_norm, last_bn=last_bn)
    linears = _linears(head)
    assert len(linears) == num_layers
    assert _count(head, nn.ReLU) == num_layers - 1
    assert _count(head, ScaleOnlyBatchNorm1d) == int(last_bn)
    assert _count(head, nn.BatchNorm1d) == (num_layers - 1) * batch_norm + last_bn
    assert linears[0].in_features == 12 and linears[-1].out_features == 6
    assert all(lin.out_features == 20 for lin in linears[:-1])
    assert all((lin.bias is None) == batch_norm for lin in linears[:-1])
    assert (linears[-1].bias is None) == last_bn
    assert head(_features(4, 12)).shape == (4, 6)


def test_predictor_head_is_byol_predictor():
    head = PredictorHead()
    assert [type(m) for m in head.layers] == [nn.Linear, nn.BatchNorm1d, nn.ReLU, nn.Linear]
    assert [(lin.in_features, lin.out_features) for lin in _linears(head)] == [(256, 4096), (4096, 256)]
    assert head.layers[0].bias is None and head.layers[3].bias is not None
    assert head.in_dim == head.out_dim == 256
    small = PredictorHead(dim=8, hidden_dim=16)
    assert small(_features(5, 8)).shape == (5, 8)


# ---- values -------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", HEAD_KINDS)
def test_output_shape_and_out_dim(kind):
    default_out = 32 if kind == "identity" else 128  # identity keeps in_dim; the rest default to 128
    head = build_head(kind, in_dim=32)
    assert head.out_dim == default_out
    assert head(_features(6, 32)).shape == (6, default_out)
    if kind != "identity":
        custom = build_head(kind, in_dim=32, out_dim=7)
        assert custom.out_dim == 7 and custom(_features(6, 32)).shape == (6, 7)


def test_identity_head_returns_its_input():
    x = _features(3, 10)
    head = build_head("identity", in_dim=10)
    assert isinstance(head, IdentityHead)
    assert head(x) is x
    assert list(head.parameters()) == []


def test_linear_head_matches_hand_computation():
    head = build_head("linear", in_dim=5, out_dim=3)
    assert isinstance(head, LinearHead)
    x = _features(4, 5)
    w, b = head.linear.weight.detach(), head.linear.bias.detach()
    expected = torch.tensor([[sum(x[i, k].item() * w[j, k].item() for k in range(5)) + b[j].item()
                              for j in range(3)] for i in range(4)])
    torch.testing.assert_close(head(x).detach(), expected, rtol=1e-5, atol=1e-6)


def test_moco_mlp_matches_hand_computation():
    head = build_head("moco_v2", in_dim=6, out_dim=4, hidden_dim=5)
    x = _features(3, 6)
    l1, l2 = head.layers[0], head.layers[2]
    expected = torch.clamp(x @ l1.weight.T + l1.bias, min=0) @ l2.weight.T + l2.bias
    torch.testing.assert_close(head(x), expected)


def test_simclr_head_matches_hand_computation_in_train_mode():
    head = build_head("simclr_v1", in_dim=6, out_dim=4, hidden_dim=5).train()
    with torch.no_grad():  # non-trivial BN affine parameters
        for p in head.parameters():
            if p.ndim == 1:
                p.copy_(torch.rand(p.shape) + 0.5)
    x = _features(8, 6)
    l1, bn, l2, out_bn = head.layers[0], head.layers[1], head.layers[3], head.layers[4]
    hidden = torch.clamp(_bn_reference(x @ l1.weight.T, bn.weight, bn.bias), min=0)
    expected = _bn_reference(hidden @ l2.weight.T, out_bn.weight, None)
    torch.testing.assert_close(head(x), expected, rtol=1e-4, atol=1e-5)


def test_scale_only_batch_norm_train_and_eval():
    bn = ScaleOnlyBatchNorm1d(3)
    with torch.no_grad():
        bn.weight.copy_(torch.tensor([0.5, 2.0, -1.0]))
    assert [name for name, _ in bn.named_parameters()] == ["weight"]  # no shift parameter
    x = _features(16, 3) * 3 + 1
    torch.testing.assert_close(bn(x), _bn_reference(x, bn.weight, None))
    # running stats: momentum 0.1 from (0, 1); running var is the unbiased batch variance
    torch.testing.assert_close(bn.norm.running_mean, 0.1 * x.mean(0))
    torch.testing.assert_close(bn.norm.running_var, 0.9 + 0.1 * x.var(0, unbiased=True))
    bn.eval()
    expected = (x - bn.norm.running_mean) / torch.sqrt(bn.norm.running_var + 1e-5) * bn.weight
    torch.testing.assert_close(bn(x), expected)


@pytest.mark.parametrize("kind", ["simclr_v2", "moco_v2"])
def test_gradcheck_float64(kind):
    head = build_head(kind, in_dim=4, out_dim=3, hidden_dim=5).double().train()
    x = _features(6, 4, dtype=torch.float64).requires_grad_()
    assert torch.autograd.gradcheck(head, (x,), eps=1e-6, atol=1e-5)


def test_gradient_reaches_every_parameter():
    head = build_head("simclr_v2", in_dim=8, out_dim=4, hidden_dim=6)
    z = head(_features(10, 8))
    (z * _features(10, 4, seed=1)).sum().backward()
    for name, p in head.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


# ---- validation ---------------------------------------------------------------------------------


def test_unknown_kind_lists_valid_kinds():
    expected = r"unknown head kind 'byol'; valid kinds: \['identity', 'linear', 'mlp', 'simclr_v1'"
    with pytest.raises(ValueError, match=expected):
        build_head("byol", in_dim=8)


@pytest.mark.parametrize("num_layers", [0, -1])
def test_num_layers_below_one_is_rejected(num_layers):
    with pytest.raises(ValueError, match=f"num_layers must be >= 1 .*got {num_layers}"):
        MLPHead(4, 4, 4, num_layers=num_layers)
    with pytest.raises(ValueError, match="num_layers must be >= 1"):
        build_head("mlp", in_dim=4, num_layers=num_layers)


def test_non_int_num_layers_is_rejected():
    with pytest.raises(TypeError, match="num_layers must be an int, got float 2.0"):
        MLPHead(4, 4, 4, num_layers=2.0)


@pytest.mark.parametrize("arg", ["in_dim", "hidden_dim", "out_dim"])
@pytest.mark.parametrize("value", [0, -3])
def test_non_positive_dims_are_rejected(arg, value):
    dims = {"in_dim": 4, "hidden_dim": 4, "out_dim": 4, arg: value}
    with pytest.raises(ValueError, match=f"{arg} must be a positive int, got {value}"):
        MLPHead(**dims)


@pytest.mark.parametrize("kind", HEAD_KINDS)
def test_build_head_rejects_bad_dims(kind):
    with pytest.raises(ValueError, match="in_dim must be a positive int, got 0"):
        build_head(kind, in_dim=0)
    if kind != "identity":
        with pytest.raises(ValueError, match="out_dim must be a positive int, got -1"):
            build_head(kind, in_dim=4, out_dim=-1)
    with pytest.raises(TypeError, match=r"in_dim must be a positive int, got 4.0 \(float\)"):
        build_head(kind, in_dim=4.0)


def test_bool_dims_and_flags_are_rejected():
    with pytest.raises(TypeError, match="out_dim must be a positive int, got True"):
        MLPHead(4, 4, True)
    with pytest.raises(TypeError, match="batch_norm must be True or False, got 1"):
        MLPHead(4, 4, 4, batch_norm=1)
    with pytest.raises(TypeError, match="last_bn must be True or False"):
        build_head("simclr_v1", in_dim=4, last_bn="yes")


def test_identity_and_linear_reject_hidden_options():
    with pytest.raises(ValueError, match=r"'linear' has no hidden layer; remove \['hidden_dim'\]"):
        build_head("linear", in_dim=4, hidden_dim=8)
    with pytest.raises(ValueError, match=r"'identity' has no hidden layer; remove \['num_layers'\]"):
        build_head("identity", in_dim=4, num_layers=2)
    with pytest.raises(ValueError, match="identity head keeps its size: out_dim must be 4, got 128"):
        build_head("identity", in_dim=4, out_dim=128)


def test_unknown_mlp_option_is_rejected():
    with pytest.raises(TypeError, match=r"'moco_v2' does not take \['dropout'\]; it accepts \['batch_norm'"):
        build_head("moco_v2", in_dim=4, dropout=0.1)


@pytest.mark.parametrize("head", [IdentityHead(8), LinearHead(8, 3), MLPHead(8, 4, 3), PredictorHead(8, 4)])
def test_wrong_feature_shape_is_rejected(head):
    with pytest.raises(ValueError, match=r"expects features of shape \(B, 8\), got \(4, 7\)"):
        head(torch.randn(4, 7))
    with pytest.raises(ValueError, match=r"got \(2, 8, 1, 1\)"):
        head(torch.randn(2, 8, 1, 1))
