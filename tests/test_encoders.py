from __future__ import annotations

import pytest
import torch
import torchvision
from torch import nn
from torchvision.models.resnet import BasicBlock, Bottleneck

from contrastive_lab.encoders import (
    ENCODERS,
    GemmGradConv2d,
    SmallResNet,
    _ConvGemmWeightGrad,
    build_encoder,
    cifar_stem_,
    conv2d_gemm_weight_grad,
    im2col_nhwc,
    resnet10,
    torchvision_resnet,
    use_gemm_weight_grad_,
)

torch.set_num_threads(2)


def _images(batch: int, size: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(seed))


def _layer4_map_size(model: nn.Module, x: torch.Tensor) -> tuple[int, ...]:
    """Shape of layer4's output, read with a forward hook."""
    seen: list[tuple[int, ...]] = []
    handle = model.layer4.register_forward_hook(lambda _m, _i, out: seen.append(tuple(out.shape)))
    with torch.no_grad():
        model(x)
    handle.remove()
    return seen[0]


def _with_running_stats(model: nn.Module, x: torch.Tensor) -> nn.Module:
    """One train-mode forward so that BN running stats are not the trivial (0, 1); then eval mode."""
    model.train()
    with torch.no_grad():
        model(x)
    return model.eval()


def test_registry_lists_all_encoders():
    assert set(ENCODERS) == {"resnet18", "resnet34", "resnet50", "resnet10", "small_resnet"}


@pytest.mark.parametrize(
    "name, kwargs, size, feature_dim",
    [
        ("resnet18", {"cifar_stem": True}, 32, 512),
        ("resnet18", {}, 32, 512),
        ("resnet18", {}, 224, 512),
        ("resnet34", {"cifar_stem": True}, 32, 512),
        ("resnet34", {}, 224, 512),
        ("resnet50", {"cifar_stem": True}, 32, 2048),
        ("resnet50", {}, 224, 2048),
        ("resnet10", {}, 32, 512),
        ("resnet10", {"width": 0.25}, 224, 128),
        ("small_resnet", {"width": 0.5, "blocks": (2, 1, 1, 1), "cifar_stem": False}, 224, 256),
    ],
)
def test_output_shape_matches_feature_dim(name, kwargs, size, feature_dim):
    enc = build_encoder(name, **kwargs).eval()
    assert enc.feature_dim == feature_dim
    batch = 2 if size == 32 else 1  # keep the 224px cases cheap on a 2-core CPU
    with torch.no_grad():
        h = enc(_images(batch, size))
    assert h.shape == (batch, feature_dim)
    assert isinstance(enc.fc, nn.Identity)


@pytest.mark.parametrize("name", ["resnet18", "resnet50", "resnet10"])
def test_cifar_stem_is_3x3_stride1_without_maxpool(name):
    enc = build_encoder(name, cifar_stem=True)
    conv = enc.conv1
    assert (conv.kernel_size, conv.stride, conv.padding) == ((3, 3), (1, 1), (1, 1))
    assert conv.bias is None and conv.in_channels == 3
    assert isinstance(enc.maxpool, nn.Identity)
    # 32 -> 32 (stem) -> 32, 16, 8, 4 (layer1..4): the final map is 4x4.
    assert _layer4_map_size(enc, _images(2, 32))[2:] == (4, 4)


def test_imagenet_stem_downsamples_by_32():
    enc = build_encoder("resnet18")
    assert (enc.conv1.kernel_size, enc.conv1.stride) == ((7, 7), (2, 2))
    assert isinstance(enc.maxpool, nn.MaxPool2d)
    assert _layer4_map_size(enc, _images(2, 224))[1:] == (512, 7, 7)
    assert _layer4_map_size(enc, _images(2, 32))[2:] == (1, 1)


@pytest.mark.parametrize("name", ["resnet18", "resnet34", "resnet50"])
def test_state_dict_loads_into_plain_torchvision_model(name):
    x = _images(2, 48)
    enc = _with_running_stats(torchvision_resnet(name), x)
    tv = getattr(torchvision.models, name)(weights=None)
    missing, unexpected = tv.load_state_dict(enc.state_dict(), strict=False)
    assert sorted(missing) == ["fc.bias", "fc.weight"] and unexpected == []
    tv.fc = nn.Identity()  # penultimate features
    tv.eval()
    with torch.no_grad():
        assert torch.equal(tv(x), enc(x))


def test_cifar_stem_state_dict_needs_the_same_stem_change():
    x = _images(2, 32)
    enc = _with_running_stats(torchvision_resnet("resnet18", cifar_stem=True), x)
    plain = torchvision.models.resnet18(weights=None)
    with pytest.raises(RuntimeError, match="size mismatch for conv1.weight"):
        plain.load_state_dict(enc.state_dict(), strict=False)
    # The documented recipe, done by hand here (independently of cifar_stem_):
    tv = torchvision.models.resnet18(weights=None)
    tv.conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=1, bias=False)
    tv.maxpool = nn.Identity()
    missing, unexpected = tv.load_state_dict(enc.state_dict(), strict=False)
    assert sorted(missing) == ["fc.bias", "fc.weight"] and unexpected == []
    tv.fc = nn.Identity()
    tv.eval()
    with torch.no_grad():
        assert torch.equal(tv(x), enc(x))


def test_cifar_stem_helper_matches_the_hand_made_stem():
    tv = cifar_stem_(torchvision.models.resnet18(weights=None))
    assert tv.conv1.weight.shape == (64, 3, 3, 3)
    assert isinstance(tv.maxpool, nn.Identity)


@pytest.mark.parametrize("cifar_stem, size", [(False, 64), (True, 32)])
def test_small_resnet_with_resnet18_layout_is_torchvision_resnet18(cifar_stem, size):
    """SmallResNet is an independent implementation; at width 1 and (2,2,2,2) blocks it must be ResNet-18."""
    x = _images(2, size)
    small = _with_running_stats(SmallResNet(width=1.0, blocks=(2, 2, 2, 2), cifar_stem=cifar_stem), x)
    tv = torchvision.models.resnet18(weights=None)
    if cifar_stem:
        tv.conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=1, bias=False)
        tv.maxpool = nn.Identity()
    assert {k: v.shape for k, v in small.state_dict().items()} == {
        k: v.shape for k, v in tv.state_dict().items() if not k.startswith("fc.")
    }
    tv.load_state_dict(small.state_dict(), strict=False)
    tv.fc = nn.Identity()
    tv.eval()
    with torch.no_grad():
        assert torch.equal(small(x), tv(x))


@pytest.mark.parametrize("width, channels", [(1.0, (64, 128, 256, 512)), (0.5, (32, 64, 128, 256)),
                                             (0.25, (16, 32, 64, 128)), (0.3, (19, 38, 77, 154))])
def test_small_resnet_width_scales_every_stage(width, channels):
    enc = resnet10(width=width)
    assert enc.conv1.out_channels == round(64 * width)
    stage_out = tuple(getattr(enc, f"layer{i}")[-1].conv2.out_channels for i in range(1, 5))
    assert stage_out == channels
    assert enc.feature_dim == channels[-1] == round(512 * width)
    assert [len(getattr(enc, f"layer{i}")) for i in range(1, 5)] == [1, 1, 1, 1]
    with torch.no_grad():
        assert enc.eval()(_images(2, 32)).shape == (2, channels[-1])


def test_small_resnet_parameter_count_scales_quadratically_with_width():
    def count(model: nn.Module) -> int:
        return sum(p.numel() for p in model.parameters())

    full, half = count(resnet10(width=1.0)), count(resnet10(width=0.5))
    # conv weights dominate and scale as width^2 (BN terms scale linearly): ratio just above 1/4.
    assert 0.25 <= half / full < 0.26


@pytest.mark.parametrize("name, kwargs", [("resnet18", {"cifar_stem": True}), ("resnet10", {"width": 0.5})])
def test_same_seed_gives_the_same_encoder(name, kwargs):
    x = _images(2, 32)

    def build(seed: int) -> nn.Module:
        torch.manual_seed(seed)
        return build_encoder(name, **kwargs).eval()

    a, b, c = build(0), build(0), build(1)
    for (ka, va), (kb, vb) in zip(a.state_dict().items(), b.state_dict().items()):
        assert ka == kb and torch.equal(va, vb)
    assert not torch.equal(a.conv1.weight, c.conv1.weight)
    with torch.no_grad():
        assert torch.equal(a(x), b(x))


@pytest.mark.parametrize(
    "name, kwargs",
    [("resnet18", {"cifar_stem": True}), ("resnet50", {"cifar_stem": True}), ("resnet10", {"width": 0.25})],
)
def test_gradient_reaches_every_parameter(name, kwargs):
    enc = build_encoder(name, **kwargs).train()
    h = enc(_images(2, 32))
    # A random linear read-out: sum(h) alone could hide a zero gradient through BN.
    (h * torch.randn(h.shape, generator=torch.Generator().manual_seed(1))).sum().backward()
    for pname, p in enc.named_parameters():
        assert p.grad is not None, pname
        assert torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, pname


@pytest.mark.parametrize("name, kwargs", [("resnet18", {}), ("resnet50", {}), ("resnet10", {"width": 0.5})])
def test_zero_init_residual_makes_every_block_an_identity(name, kwargs):
    enc = build_encoder(name, zero_init_residual=True, **kwargs).eval()
    blocks = [m for m in enc.modules() if isinstance(m, (BasicBlock, Bottleneck))]
    assert blocks
    for block in blocks:
        last_bn = block.bn3 if isinstance(block, Bottleneck) else block.bn2
        assert torch.count_nonzero(last_bn.weight) == 0
    # A block without a downsample then maps a non-negative input (a ReLU output) to itself.
    block = next(b for b in blocks if b.downsample is None)
    x = torch.rand(2, block.conv1.in_channels, 8, 8)
    with torch.no_grad():
        assert torch.equal(block(x), x)
    default = build_encoder(name, **kwargs)
    assert all(
        torch.all((b.bn3 if isinstance(b, Bottleneck) else b.bn2).weight == 1)
        for b in default.modules() if isinstance(b, (BasicBlock, Bottleneck))
    )


def test_unknown_encoder_lists_valid_names():
    expected = r"unknown encoder 'resnet101'; valid names: \['resnet10', 'resnet18', 'resnet34'"
    with pytest.raises(ValueError, match=expected):
        build_encoder("resnet101")


def test_unknown_option_is_rejected_with_the_accepted_ones():
    with pytest.raises(TypeError, match=r"'resnet18' does not take \['width'\]; it accepts \['cifar_stem'"):
        build_encoder("resnet18", width=0.5)
    with pytest.raises(TypeError, match=r"'resnet10' does not take \['blocks'\]"):
        build_encoder("resnet10", blocks=(2, 2, 2, 2))


@pytest.mark.parametrize("width", [0, -0.5, 0.0])
def test_non_positive_width_is_rejected(width):
    with pytest.raises(ValueError, match="width must be > 0"):
        build_encoder("resnet10", width=width)


@pytest.mark.parametrize("width", ["0.5", None, True])
def test_non_numeric_width_is_rejected(width):
    with pytest.raises(TypeError, match="width must be a positive number"):
        build_encoder("small_resnet", width=width)


@pytest.mark.parametrize("blocks", [(1, 1, 1), (1, 0, 1, 1), (1, 1, 1, 1.5), (1, 1, True, 1)])
def test_bad_blocks_are_rejected(blocks):
    with pytest.raises(ValueError, match="blocks must be 4 integers >= 1"):
        build_encoder("small_resnet", blocks=blocks)


@pytest.mark.parametrize("name", ["resnet18", "resnet10"])
def test_non_bool_flags_are_rejected(name):
    with pytest.raises(TypeError, match="cifar_stem must be True or False, got 'yes'"):
        build_encoder(name, cifar_stem="yes")
    with pytest.raises(TypeError, match="zero_init_residual must be True or False"):
        build_encoder(name, zero_init_residual=1)


def test_torchvision_resnet_rejects_other_names():
    with pytest.raises(ValueError, match=r"unknown torchvision ResNet 'resnet152'"):
        torchvision_resnet("resnet152")


def test_small_resnet_rejects_non_image_input():
    enc = resnet10(width=0.25)
    with pytest.raises(ValueError, match=r"expected images of shape \(B, 3, H, W\), got \(3, 32, 32\)"):
        enc(torch.randn(3, 32, 32))
    with pytest.raises(ValueError, match=r"got \(2, 1, 32, 32\)"):
        enc(torch.randn(2, 1, 32, 32))


# ----------------------------------------------------------------------------------------
# GEMM weight gradient (GemmGradConv2d): the same convolution, a different backward
# ----------------------------------------------------------------------------------------

GEMM_SHAPES = [  # (C_in, C_out, side, kernel, stride, padding): the ResNet cases and odd ones
    (3, 5, 7, 3, 1, 1), (4, 6, 6, 3, 2, 1), (4, 6, 6, 1, 2, 0), (2, 3, 5, 3, 1, 0), (3, 4, 5, 5, 2, 2),
]


def _conv_loop(x: torch.Tensor, w: torch.Tensor, stride: int, padding: int) -> torch.Tensor:
    """y[n, o, i, j] = sum_{c, a, b} w[o, c, a, b] x_pad[n, c, i*s + a, j*s + b], as loops (reference)."""
    xp = nn.functional.pad(x, (padding,) * 4)
    k = w.shape[-1]
    out = (xp.shape[-1] - k) // stride + 1
    y = torch.zeros(x.shape[0], w.shape[0], out, out, dtype=x.dtype)
    for i in range(out):
        for j in range(out):
            patch = xp[:, :, i * stride:i * stride + k, j * stride:j * stride + k]
            y[:, :, i, j] = torch.einsum("ncab,ocab->no", patch, w)
    return y


@pytest.mark.parametrize("c_in,c_out,side,k,stride,padding", GEMM_SHAPES)
def test_im2col_matmul_is_the_convolution(c_in, c_out, side, k, stride, padding):
    torch.manual_seed(0)
    x, w = torch.randn(2, c_in, side, side, dtype=torch.float64), torch.randn(c_out, c_in, k, k, dtype=torch.float64)
    out = (side + 2 * padding - k) // stride + 1
    cols = im2col_nhwc(x, k, stride, padding, out, out)
    assert cols.shape == (2, out, out, k * k * c_in)
    y = (cols.reshape(-1, k * k * c_in) @ w.permute(0, 2, 3, 1).reshape(c_out, -1).T).view(2, out, out, c_out)
    torch.testing.assert_close(y.permute(0, 3, 1, 2), _conv_loop(x, w, stride, padding))


@pytest.mark.parametrize("c_in,c_out,side,k,stride,padding", GEMM_SHAPES)
def test_gemm_weight_grad_matches_conv2d_in_float64(c_in, c_out, side, k, stride, padding):
    torch.manual_seed(0)
    x = torch.randn(2, c_in, side, side, dtype=torch.float64, requires_grad=True)
    w = torch.randn(c_out, c_in, k, k, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, b: conv2d_gemm_weight_grad(a, b, stride, padding), (x, w))
    y = conv2d_gemm_weight_grad(x, w, stride, padding)
    g = torch.randn_like(y)
    gx, gw = torch.autograd.grad(y, (x, w), g)
    y_ref = nn.functional.conv2d(x, w, stride=stride, padding=padding)
    gx_ref, gw_ref = torch.autograd.grad(y_ref, (x, w), g)
    torch.testing.assert_close(y, y_ref)
    torch.testing.assert_close(gx, gx_ref)
    torch.testing.assert_close(gw, gw_ref)


def _resnet10_pair():
    torch.manual_seed(0)
    plain = resnet10(width=0.25).to(memory_format=torch.channels_last)
    fast = resnet10(width=0.25)
    fast.load_state_dict(plain.state_dict())
    assert use_gemm_weight_grad_(fast) == sum(type(m) is nn.Conv2d for m in plain.modules())
    return plain, fast.to(memory_format=torch.channels_last)


def test_gemm_weight_grad_conversion_keeps_the_state_dict_and_the_function():
    plain, fast = _resnet10_pair()
    assert all(type(m) is not nn.Conv2d for m in fast.modules())
    assert fast.state_dict().keys() == plain.state_dict().keys()
    x = torch.randn(4, 3, 24, 24).contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(fast(x), plain(x))  # fp32: the plain nn.Conv2d path, bit for bit
    assert torch.equal(fast(x), plain(x))


def test_gemm_weight_grad_under_bf16_autocast_matches_the_plain_model(monkeypatch):
    plain, fast = _resnet10_pair()
    calls = []
    original = GemmGradConv2d.forward

    def counting(self, x):
        calls.append((self.kernel_size[0], self.stride[0], x.shape[-1]))
        return original(self, x)

    monkeypatch.setattr(GemmGradConv2d, "forward", counting)
    applied = []
    monkeypatch.setattr(_ConvGemmWeightGrad, "apply", _record(applied, _ConvGemmWeightGrad.apply))
    torch.manual_seed(1)
    x = torch.randn(16, 3, 24, 24).contiguous(memory_format=torch.channels_last)
    grads = []
    for model in (plain, fast):
        model.zero_grad()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            model(x).float().pow(2).mean().backward()
        grads.append({n: p.grad.float() for n, p in model.named_parameters()})
    # 24-px input: layer3 (6x6) and layer4 (3x3) convs, and their 1x1 shortcuts, have <= 64 positions
    assert len(applied) == 6 and len(calls) == 12
    for name, g in grads[0].items():
        rel = (grads[1][name] - g).norm() / g.norm().clamp_min(1e-12)
        assert rel < 0.03, (name, rel.item())  # bf16 rounding in different orders


def _record(store: list, fn):
    def wrapper(*args):
        store.append(args[2:])
        return fn(*args)
    return wrapper


def test_gemm_weight_grad_is_not_used_in_fp32_or_without_grad(monkeypatch):
    _, fast = _resnet10_pair()
    applied = []
    monkeypatch.setattr(_ConvGemmWeightGrad, "apply", _record(applied, _ConvGemmWeightGrad.apply))
    x = torch.randn(2, 3, 24, 24)
    fast(x).sum().backward()  # fp32: oneDNN's own weight gradient is as fast
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        fast(x)  # inference: no gradient to compute
    assert applied == []
