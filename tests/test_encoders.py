from __future__ import annotations

import pytest
import torch
import torchvision
from torch import nn
from torchvision.models.resnet import BasicBlock, Bottleneck

from contrastive_lab.encoders import (
    ENCODERS,
    SmallResNet,
    build_encoder,
    cifar_stem_,
    resnet10,
    torchvision_resnet,
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
