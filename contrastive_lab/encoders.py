"""Encoders f(.): images -> representations h = f(x), the vector the projection head maps to z.

Two families, both ending in global average pooling and *no* classifier (``fc`` is ``nn.Identity``):

* ``resnet18`` / ``resnet34`` / ``resnet50``: torchvision's own models (He et al. 2016), built with
  ``torchvision.models.resnetXX(weights=None)`` and then modified in place, so every parameter
  name is torchvision's and a trained encoder's ``state_dict`` loads into the plain torchvision
  model (see :func:`torchvision_resnet` for the one exception, the CIFAR stem).
* ``resnet10`` / ``small_resnet``: :class:`SmallResNet`, the same architecture with fewer blocks
  and a width multiplier, small enough to train on a 2-core CPU in the chapters' demos.

The CIFAR stem (SimCLR, Chen et al. 2020, App. B.9): "we replace the first 7x7 Conv of stride 2
with 3x3 Conv of stride 1, and also remove the first max pooling operation". A 32x32 image then
keeps its resolution through the stem and reaches ``layer4`` as a 4x4 map instead of 1x1.

Every encoder has a ``feature_dim`` attribute: the length of h.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from functools import partial

import torch
import torchvision
from torch import nn
from torch.utils.flop_counter import FlopCounterMode
from torchvision.models.resnet import BasicBlock, ResNet

TORCHVISION_RESNETS: tuple[str, ...] = ("resnet18", "resnet34", "resnet50")
BASE_CHANNELS: tuple[int, int, int, int] = (64, 128, 256, 512)  # torchvision's layer1..layer4 widths


def _check_bool(value: object, name: str) -> None:
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be True or False, got {value!r} ({type(value).__name__}).")


def _init_conv(conv: nn.Conv2d) -> None:
    """torchvision's ResNet initialisation for convolutions (He et al. 2015, fan_out mode)."""
    nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")


def cifar_stem_(model: nn.Module) -> nn.Module:
    """Swap a ResNet's ImageNet stem for the CIFAR stem, in place; return the model.

    ``conv1``: 7x7 stride 2 padding 3 -> 3x3 stride 1 padding 1 (no bias, same channel count);
    ``maxpool`` -> ``nn.Identity``. Source: SimCLR (Chen et al. 2020), App. B.9.
    Works on any module with ``conv1`` and ``maxpool`` (a torchvision ResNet or :class:`SmallResNet`),
    and is the change a user applies to a plain torchvision model before loading our weights.
    """
    old = model.conv1
    model.conv1 = nn.Conv2d(old.in_channels, old.out_channels, kernel_size=3, stride=1, padding=1, bias=False)
    _init_conv(model.conv1)
    model.maxpool = nn.Identity()
    return model


def torchvision_resnet(name: str, *, cifar_stem: bool = False, zero_init_residual: bool = False) -> ResNet:
    """torchvision's ResNet ``name`` without its classifier: forward(x) -> h of shape (B, feature_dim).

    Built as ``torchvision.models.<name>(weights=None, zero_init_residual=...)`` and then
    ``fc = nn.Identity()`` (so forward returns the globally average-pooled ``layer4`` output,
    h in R^512 for ResNet-18/34 and R^2048 for ResNet-50). Attributes added: ``feature_dim``,
    ``cifar_stem``.

    Taking the weights elsewhere: the parameter names are exactly torchvision's, so
    ``torchvision.models.<name>().load_state_dict(encoder.state_dict(), strict=False)`` reports only
    ``fc.weight``/``fc.bias`` missing. With ``cifar_stem=True`` the ``conv1`` weight is 3x3, so first
    apply the same stem change to the torchvision model (``cifar_stem_(model)``: 3x3 stride-1 ``conv1``
    without bias, ``maxpool = nn.Identity()``), otherwise loading fails with a size mismatch.

    ``zero_init_residual`` sets the last BN scale gamma of every residual branch to 0, so each block
    starts as the identity (Goyal et al. 2017, "Accurate, Large Minibatch SGD", Sec. 5.1).
    """
    if name not in TORCHVISION_RESNETS:
        raise ValueError(f"unknown torchvision ResNet {name!r}; choose one of {list(TORCHVISION_RESNETS)}.")
    _check_bool(cifar_stem, "cifar_stem")
    _check_bool(zero_init_residual, "zero_init_residual")
    model = getattr(torchvision.models, name)(weights=None, zero_init_residual=zero_init_residual)
    model.feature_dim = model.fc.in_features  # 512 * block.expansion
    model.fc = nn.Identity()
    if cifar_stem:
        cifar_stem_(model)
    model.cifar_stem = cifar_stem
    return model


def _scaled(channels: int, width: float) -> int:
    """round(channels * width), at least 1."""
    return max(1, int(round(channels * width)))


def _check_width_and_blocks(width: float, blocks: Sequence[int]) -> None:
    if isinstance(width, bool) or not isinstance(width, (int, float)):
        raise TypeError(f"width must be a positive number, got {width!r} ({type(width).__name__}).")
    if not width > 0:
        raise ValueError(f"width must be > 0 (it multiplies the channels 64,128,256,512), got {width}.")
    ok = len(blocks) == 4 and all(isinstance(b, int) and not isinstance(b, bool) and b >= 1 for b in blocks)
    if not ok:
        raise ValueError(f"blocks must be 4 integers >= 1 (blocks per stage), got {blocks!r}.")


class SmallResNet(nn.Module):
    """A width-scaled ResNet of torchvision ``BasicBlock`` s, for CPU demos.

    Stage i has ``blocks[i]`` BasicBlocks with round(c_i * width) channels, c = (64, 128, 256, 512);
    stages 2-4 halve the resolution (He et al. 2016, Table 1). With ``blocks=(1, 1, 1, 1)`` this is a
    "ResNet-10" (1 stem conv + 8 block convs + the omitted fc); with ``width=1, blocks=(2, 2, 2, 2)``
    and ``cifar_stem=False`` it is exactly torchvision's ResNet-18 (same module names, so the state
    dicts are interchangeable). forward(x) -> h of shape (B, feature_dim), feature_dim = round(512 * width).

    ``cifar_stem`` (default True): 3x3 stride-1 conv1 and no max-pool, SimCLR (Chen et al. 2020), App. B.9.
    ``zero_init_residual``: each block's last BN gamma = 0 (Goyal et al. 2017, Sec. 5.1).
    """

    def __init__(
        self,
        width: float = 1.0,
        blocks: Sequence[int] = (1, 1, 1, 1),
        cifar_stem: bool = True,
        zero_init_residual: bool = False,
    ) -> None:
        super().__init__()
        _check_width_and_blocks(width, blocks)
        _check_bool(cifar_stem, "cifar_stem")
        _check_bool(zero_init_residual, "zero_init_residual")
        self.width, self.blocks, self.cifar_stem = float(width), tuple(blocks), cifar_stem
        channels = [_scaled(c, width) for c in BASE_CHANNELS]
        self.feature_dim = channels[-1]
        # Module names mirror torchvision.models.ResNet, so state dicts carry over.
        self.conv1 = nn.Conv2d(3, _scaled(64, width), kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(self.conv1.out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        in_ch = self.conv1.out_channels
        for i, (out_ch, n) in enumerate(zip(channels, blocks)):
            setattr(self, f"layer{i + 1}", _make_stage(in_ch, out_ch, n, stride=1 if i == 0 else 2))
            in_ch = out_ch
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Identity()
        self._init_weights(zero_init_residual)
        if cifar_stem:
            cifar_stem_(self)

    def _init_weights(self, zero_init_residual: bool) -> None:
        """torchvision's ResNet initialisation: Kaiming-normal convs, BN gamma=1 and beta=0."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                _init_conv(m)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        if zero_init_residual:
            for m in self.modules():
                if isinstance(m, BasicBlock):
                    nn.init.zeros_(m.bn2.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """h = avgpool(layer4(...layer1(maxpool(relu(bn1(conv1(x))))))), flattened to (B, feature_dim)."""
        channels = self.conv1.in_channels  # 3, or what set_input_channels_ made it (CMC's L and ab views)
        if x.ndim != 4 or x.shape[1] != channels:
            raise ValueError(f"expected images of shape (B, {channels}, H, W), got {tuple(x.shape)}.")
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def _make_stage(in_ch: int, out_ch: int, n_blocks: int, stride: int) -> nn.Sequential:
    """n BasicBlocks; the first one changes resolution/width through a 1x1 conv + BN shortcut
    (option B of He et al. 2016, Sec. 3.3), laid out as torchvision's ``ResNet._make_layer``."""
    downsample = None
    if stride != 1 or in_ch != out_ch:
        downsample = nn.Sequential(
            nn.Conv2d(in_ch, out_ch, kernel_size=1, stride=stride, bias=False), nn.BatchNorm2d(out_ch)
        )
    layers = [BasicBlock(in_ch, out_ch, stride, downsample)]
    layers += [BasicBlock(out_ch, out_ch) for _ in range(n_blocks - 1)]
    return nn.Sequential(*layers)


def resnet10(*, width: float = 1.0, cifar_stem: bool = True, zero_init_residual: bool = False) -> SmallResNet:
    """:class:`SmallResNet` with one BasicBlock per stage ("ResNet-10"); see its docstring."""
    return SmallResNet(width=width, blocks=(1, 1, 1, 1), cifar_stem=cifar_stem,
                       zero_init_residual=zero_init_residual)


def set_input_channels_(model: nn.Module, channels: int) -> nn.Module:
    """Give a ResNet's ``conv1`` ``channels`` input channels (a fresh, He-initialised conv of the same
    shape otherwise), in place; return the model. CMC (Tian et al. 2019) encodes a 1-channel L view
    and a 2-channel ab view, each with its own network (chapter 12)."""
    if isinstance(channels, bool) or not isinstance(channels, int) or channels < 1:
        raise ValueError(f"channels must be a positive int, got {channels!r}.")
    old = model.conv1
    model.conv1 = nn.Conv2d(channels, old.out_channels, kernel_size=old.kernel_size, stride=old.stride,
                            padding=old.padding, bias=old.bias is not None)
    _init_conv(model.conv1)
    return model


ENCODERS: dict[str, Callable[..., nn.Module]] = {
    **{name: partial(torchvision_resnet, name) for name in TORCHVISION_RESNETS},
    "resnet10": resnet10,
    "small_resnet": SmallResNet,
}


def build_encoder(name: str, **kwargs: object) -> nn.Module:
    """Build the encoder registered as ``name`` in :data:`ENCODERS` with keyword options ``kwargs``.

    resnet18/34/50 accept ``cifar_stem``, ``zero_init_residual``; resnet10 also ``width``;
    small_resnet also ``blocks``. Unknown names raise ValueError, unknown options TypeError.
    """
    if name not in ENCODERS:
        raise ValueError(f"unknown encoder {name!r}; valid names: {sorted(ENCODERS)}.")
    builder = ENCODERS[name]
    accepted = [p for p in inspect.signature(builder).parameters if p != "self"]
    unknown = sorted(set(kwargs) - set(accepted))
    if unknown:
        raise TypeError(f"encoder {name!r} does not take {unknown}; it accepts {accepted}.")
    return builder(**kwargs)


# ----------------------------------------------------------------------------------------
# Speed: the weight gradient of a convolution on a small feature map as one GEMM
# ----------------------------------------------------------------------------------------
#
# A convolution's weight gradient is dL/dW = sum over batch and output positions of
# g[n, o, p] x[n, c, p + offset] (He et al. 2016 train with it; any im2col derivation, e.g. Chellapilla
# et al. 2006, "High performance convolutional neural networks for document processing"). Written as
# matrices, with cols = im2col(x), the (N*Ho*Wo, k*k*C) matrix of input patches, and G the (N*Ho*Wo, Cout)
# output gradient:   dL/dW = G^T cols   (one GEMM, reshaped to (Cout, C, k, k)).
# On this project's CPUs (AVX-512 BF16) oneDNN's bf16 weight-gradient kernel is slow on the small
# maps of the last stages (3x3 or 6x6 positions, 128-256 channels): measured 19-41 ms where the
# GEMM above, im2col included, takes 4-10 ms (BENCHMARKS.md, "GEMM weight gradient"). The forward
# pass and the input gradient stay oneDNN's, which are fast there.

GEMM_GRAD_MAX_POSITIONS = 64  # output maps up to 8x8: the last two stages of a CIFAR ResNet at 24-32 px


def im2col_nhwc(x: torch.Tensor, kernel: int, stride: int, padding: int, out_h: int, out_w: int) -> torch.Tensor:
    """Patches of x (N, C, H, W) as an (N, out_h, out_w, kernel*kernel*C) tensor, ordered (i, j, c).

    Row (n, y, x) holds x[n, :, y*stride - padding + i, x*stride - padding + j] for every tap (i, j),
    zeros outside the image: the left factor of the convolution written as a matrix product.
    """
    xh = x.permute(0, 2, 3, 1)  # (N, H, W, C): a free view when x is channels_last
    if padding:
        xh = nn.functional.pad(xh, (0, 0, padding, padding, padding, padding))
    rows, cols = stride * (out_h - 1) + 1, stride * (out_w - 1) + 1
    taps = [xh[:, i:i + rows:stride, j:j + cols:stride, :] for i in range(kernel) for j in range(kernel)]
    return taps[0] if len(taps) == 1 else torch.cat(taps, dim=3)


class _ConvGemmWeightGrad(torch.autograd.Function):
    """conv2d(x, w) with groups=1, dilation=1, no bias, whose backward computes dL/dW as G^T cols."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, stride: int, padding: int) -> torch.Tensor:
        ctx.save_for_backward(x, weight)
        ctx.stride, ctx.padding = stride, padding
        return nn.functional.conv2d(x, weight, stride=stride, padding=padding)

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        x, weight = ctx.saved_tensors
        s, p, k = ctx.stride, ctx.padding, weight.shape[-1]
        grad_x = None
        if ctx.needs_input_grad[0]:  # dL/dx: oneDNN's kernel (fast on these shapes)
            grad_x = torch.ops.aten.convolution_backward(
                grad_out, x, weight, None, [s, s], [p, p], [1, 1], False, [0, 0], 1, [True, False, False])[0]
        grad_w = gemm_weight_grad(grad_out, x, k, s, p) if ctx.needs_input_grad[1] else None
        return grad_x, grad_w, None, None


def gemm_weight_grad(grad_out: torch.Tensor, x: torch.Tensor, kernel: int, stride: int, padding: int) -> torch.Tensor:
    """dL/dW = G^T im2col(x) of a convolution (groups=1, dilation=1), shaped (C_out, C_in, k, k).

    ``grad_out`` is G, the (N, C_out, H_out, W_out) gradient of the output. The result is a view in
    channels_last layout (the layout of the GEMM's rows)."""
    n, c_out, out_h, out_w = grad_out.shape
    cols = im2col_nhwc(x, kernel, stride, padding, out_h, out_w).reshape(n * out_h * out_w, -1)
    g = grad_out.permute(0, 2, 3, 1).reshape(n * out_h * out_w, c_out)
    return (g.t() @ cols).view(c_out, kernel, kernel, x.shape[1]).permute(0, 3, 1, 2)


def conv2d_gemm_weight_grad(x: torch.Tensor, weight: torch.Tensor, stride: int = 1, padding: int = 0) -> torch.Tensor:
    """``F.conv2d(x, weight, stride=stride, padding=padding)``, with the weight gradient as one GEMM.

    The same values and gradients as ``F.conv2d`` up to float rounding (tests/test_encoders.py
    checks both in float64); only the arithmetic of dL/dW differs.
    """
    return _ConvGemmWeightGrad.apply(x, weight, stride, padding)


class GemmGradConv2d(nn.Conv2d):
    """An ``nn.Conv2d`` (same parameters, same ``state_dict``) that takes the GEMM weight gradient
    where it was measured faster: on the CPU, in bf16, on output maps of at most
    ``GEMM_GRAD_MAX_POSITIONS`` positions. Everywhere else it is exactly ``nn.Conv2d``."""

    def _square(self) -> bool:
        return (self.groups == 1 and self.bias is None and not isinstance(self.padding, str)
                and self.dilation == (1, 1) and self.kernel_size[0] == self.kernel_size[1]
                and self.stride[0] == self.stride[1] and self.padding[0] == self.padding[1]
                and self.padding_mode == "zeros")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = self.weight
        dtype = torch.get_autocast_dtype("cpu") if torch.is_autocast_enabled("cpu") else x.dtype
        k, s, p = self.kernel_size[0], self.stride[0], self.padding[0]
        out_h, out_w = (x.shape[-2] + 2 * p - k) // s + 1, (x.shape[-1] + 2 * p - k) // s + 1
        if (x.device.type != "cpu" or dtype != torch.bfloat16 or not torch.is_grad_enabled()
                or out_h * out_w > GEMM_GRAD_MAX_POSITIONS or not self._square()):
            return super().forward(x)
        with torch.autocast("cpu", enabled=False):
            return conv2d_gemm_weight_grad(x.to(dtype), weight.to(dtype), s, p)


def use_gemm_weight_grad_(model: nn.Module) -> int:
    """Turn every plain ``nn.Conv2d`` of ``model`` into a :class:`GemmGradConv2d`, in place (the
    parameters and ``state_dict`` are unchanged); returns how many were converted."""
    converted = 0
    for module in model.modules():
        if type(module) is nn.Conv2d:
            module.__class__ = GemmGradConv2d
            converted += 1
    return converted


__all__ = [
    "BASE_CHANNELS", "ENCODERS", "GemmGradConv2d", "TORCHVISION_RESNETS", "SmallResNet", "build_encoder",
    "cifar_stem_", "conv2d_gemm_weight_grad", "gemm_weight_grad", "im2col_nhwc", "resnet10", "set_input_channels_",
    "torchvision_resnet", "use_gemm_weight_grad_",
]


def forward_flops(encoder: nn.Module, size: int, channels: int = 3) -> int:
    """Floating-point operations of one ``size x size`` image's forward pass, counted by PyTorch's
    ``torch.utils.flop_counter.FlopCounterMode`` (a multiply-add counts 2; chapter 02 checks it
    against a hand formula over the convolutions and linear layers). Runs in eval mode, no grad."""
    modes = [(m, m.training) for m in encoder.modules()]
    device = next(iter(encoder.parameters())).device
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            encoder.eval()(torch.zeros(1, channels, size, size, device=device))
    finally:
        for m, mode in modes:
            m.train(mode)
    return counter.get_total_flops()
