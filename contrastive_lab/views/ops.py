"""The per-sample view ops: random parameters of a batch of views, and the batched ops that apply them.

Chapter 01 (``chapters/01_augmentation.py``) teaches it. :class:`ViewParams` holds every sample's
own random parameters (crop box, flip, jitter factors and op order, grayscale, blur sigma);
:func:`sample_crop_boxes` is torchvision's ``RandomResizedCrop`` sampler, vectorised. Each op works
on a float B x 3 x H x W batch with per-sample factors and follows
``torchvision.transforms.v2.functional`` on floats in [0, 1] (clamped after each op):
crop + resize + flip as two batched matmuls (:func:`resize_weights`, :func:`crop_resize_flip`), the
colour jitter as per-sample 3 x 3 affine maps plus a hue rotation (:func:`colour_affine`,
:func:`adjust_hue`, :func:`color_jitter`), :func:`grayscale_`, the separable Gaussian blur
(:func:`gaussian_kernels`, :func:`blur_matrices`, :func:`gaussian_blur`), :func:`normalize`, and the
input checks (:func:`check_images`, :func:`to_float_images`). These PyTorch functions are the
readable definitions; :mod:`contrastive_lab.views.native` holds the compiled twins of the crop and
colour steps, and ``tests/test_native.py`` checks each pair agrees.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from .recipes import CONTRAST, GRAY_WEIGHTS, HUE, SATURATION

CROP_ATTEMPTS = 10  # torchvision RandomResizedCrop.get_params tries 10 boxes, then centre-crops


# --------------------------------------------------------------------------------------------
# Parameters of a batch of views
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ViewParams:
    """Per-sample random parameters of one batch of views (all tensors have leading dim B).

    Crop box ``(top, left, height, width)`` in input pixels (int64); ``flip``, ``jitter``
    (colour jitter applied), ``gray``, ``blur`` are bool masks; ``brightness``, ``contrast``,
    ``saturation``, ``hue`` and ``sigma`` are float64 factors; ``order`` (B x 4, int64) is the
    per-sample permutation of the jitter ops (0 brightness, 1 contrast, 2 saturation, 3 hue),
    as torchvision's ColorJitter draws ``fn_idx = randperm(4)`` on every call.
    A factor at its neutral value (1, or 0 for hue) means "op skipped".
    """

    top: Tensor
    left: Tensor
    height: Tensor
    width: Tensor
    flip: Tensor
    jitter: Tensor
    brightness: Tensor
    contrast: Tensor
    saturation: Tensor
    hue: Tensor
    order: Tensor
    gray: Tensor
    blur: Tensor
    sigma: Tensor

    def __post_init__(self) -> None:
        n = len(self.top)
        for f in dataclasses.fields(self):
            t = getattr(self, f.name)
            if not isinstance(t, Tensor) or len(t) != n:
                raise ValueError(f"ViewParams.{f.name} must be a tensor with {n} rows (like top).")
        if self.order.shape != (n, 4):
            raise ValueError(f"ViewParams.order must have shape ({n}, 4), got {tuple(self.order.shape)}.")

    def __len__(self) -> int:
        return len(self.top)

    def to(self, device: torch.device | str) -> ViewParams:
        """The same parameters on ``device``."""
        return ViewParams(**{f.name: getattr(self, f.name).to(device) for f in dataclasses.fields(self)})


def _uniform(shape: tuple[int, ...], lo: float, hi: float, generator: torch.Generator | None,
             device: torch.device) -> Tensor:
    """float64 samples from U[lo, hi) (exactly ``lo`` when ``lo == hi``)."""
    u = torch.rand(shape, generator=generator, device=device, dtype=torch.float64)
    return lo + (hi - lo) * u


def _fallback_box(height: int, width: int, ratio: tuple[float, float]) -> tuple[int, int]:
    """torchvision's central-crop fallback: the whole image with its aspect ratio clipped to
    ``ratio``. Returns ``(h, w)``."""
    in_ratio = width / height
    if in_ratio < ratio[0]:
        return int(round(width / ratio[0])), width
    if in_ratio > ratio[1]:
        return height, int(round(height * ratio[1]))
    return height, width


def sample_crop_boxes(batch: int, height: int, width: int, scale: tuple[float, float],
                      ratio: tuple[float, float], generator: torch.Generator | None = None,
                      device: torch.device | str = "cpu") -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Vectorised ``RandomResizedCrop.get_params`` (torchvision; Szegedy et al. 2015, Sec. 6).

    For each sample, up to 10 attempts: area fraction ``a ~ U(scale)``, ratio
    ``r = exp(U(log ratio))``, ``w = round(sqrt(a H W r))``, ``h = round(sqrt(a H W / r))``;
    the first attempt with ``0 < w <= W`` and ``0 < h <= H`` wins and its corner is uniform,
    ``top ~ U{0..H-h}``, ``left ~ U{0..W-w}``; if none fits, the central fallback crop.
    Returns int64 ``(top, left, h, w)`` on ``device``.
    """
    device = torch.device(device)
    shape = (batch, CROP_ATTEMPTS)
    target = height * width * _uniform(shape, scale[0], scale[1], generator, device)
    r = torch.exp(_uniform(shape, math.log(ratio[0]), math.log(ratio[1]), generator, device))
    w_all, h_all = torch.round(torch.sqrt(target * r)), torch.round(torch.sqrt(target / r))
    ok = (w_all > 0) & (w_all <= width) & (h_all > 0) & (h_all <= height)
    first = ok.to(torch.uint8).argmax(dim=1, keepdim=True)  # index of the first True (0 if none)
    found = ok.any(dim=1)
    fh, fw = _fallback_box(height, width, ratio)
    h = torch.where(found, h_all.gather(1, first)[:, 0], float(fh))
    w = torch.where(found, w_all.gather(1, first)[:, 0], float(fw))
    u = torch.rand((2, batch), generator=generator, device=device, dtype=torch.float64)
    top = torch.where(found, torch.floor(u[0] * (height - h + 1)), float((height - fh) // 2))
    left = torch.where(found, torch.floor(u[1] * (width - w + 1)), float((width - fw) // 2))
    return top.long(), left.long(), h.long(), w.long()


def _jitter_factor(strength: float, batch: int, generator: torch.Generator | None,
                   device: torch.device) -> Tensor:
    """Multiplicative factor ~ U[max(0, 1 - s), 1 + s] (torchvision ColorJitter)."""
    return _uniform((batch,), max(0.0, 1.0 - strength), 1.0 + strength, generator, device)


# --------------------------------------------------------------------------------------------
# Batched ops: each works on a float B x 3 x H x W batch with per-sample factors
# --------------------------------------------------------------------------------------------


def resize_weights(start: Tensor, length: Tensor, in_size: int, out_size: int,
                   dtype: torch.dtype = torch.float32) -> Tensor:
    """Per-sample resampling matrices ``M`` (B x out x in) of an antialiased bilinear resize
    of the window ``[start, start + length)``, so ``crop_resize(x) = M_y x M_x^T``.

    Same filter as ``F.interpolate(..., "bilinear", antialias=True)`` / PIL: with scale
    ``s = length / out`` and support ``r = max(s, 1)``, output pixel i has centre
    ``c_i = (i + 1/2) s`` (window coordinates) and weights
    ``w_ij ∝ tri((j + 1/2 - c_i) / r)``, ``tri(x) = max(0, 1 - |x|)``, over window pixels j,
    normalised to sum 1. For ``s <= 1`` this is plain bilinear with ``align_corners=False``.
    """
    s = length.to(dtype) / out_size  # (B,)
    support = s.clamp(min=1.0)
    centre = (torch.arange(out_size, device=start.device, dtype=dtype) + 0.5) * s[:, None]
    j = torch.arange(in_size, device=start.device, dtype=dtype) - start.to(dtype)[:, None]
    x = (j[:, None, :] + 0.5 - centre[:, :, None]) / support[:, None, None]  # B x out x in
    inside = (j >= 0) & (j < length.to(dtype)[:, None])
    w = (1.0 - x.abs()).clamp_(min=0.0).mul_(inside[:, None, :])
    return w / w.sum(dim=-1, keepdim=True)


def crop_resize_flip(x: Tensor, params: ViewParams, size: int) -> Tensor:
    """Per-sample crop + antialiased bilinear resize to ``size`` + optional horizontal flip,
    as two batched matmuls ``M_y x M_x^T``; the flip reverses the rows of ``M_x``."""
    b, c, h, w = x.shape
    my = resize_weights(params.top, params.height, h, size, x.dtype)
    mx = resize_weights(params.left, params.width, w, size, x.dtype)
    mx = torch.where(params.flip[:, None, None], mx.flip(1), mx)
    return _sandwich(my, x, mx)


def _sandwich(left: Tensor, x: Tensor, right: Tensor) -> Tensor:
    """``left_b @ x_bc @ right_b^T`` for every sample b and channel c, as two ``bmm``s."""
    b, c, h, w = x.shape
    rows = torch.bmm(x.reshape(b, c * h, w), right.transpose(1, 2))  # (B, C*H, out_w)
    out = torch.bmm(left.repeat_interleave(c, dim=0), rows.view(b * c, h, -1))
    return out.view(b, c, left.shape[1], right.shape[1])


def rgb_to_gray(x: Tensor) -> Tensor:
    """Luma ``L = 0.2989 R + 0.587 G + 0.114 B`` (torchvision ``rgb_to_grayscale``), B x 1 x H x W."""
    b, _, h, w = x.shape
    weights = torch.tensor(GRAY_WEIGHTS, device=x.device, dtype=x.dtype)
    return torch.matmul(weights, x.reshape(b, 3, h * w)).view(b, 1, h, w)


def colour_affine(op: Tensor, factor: Tensor, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
    """Matrices ``M`` (... x 3 x 3) and contrast weights ``c`` (...) of jitter ops, ``x <- M x + c mu``.

    ``op`` and ``factor`` have any shape (here B x 4: every sample's four steps). torchvision
    blends the image with a reference, ``f x + (1 - f) ref`` (``_blend``):
    brightness: ref = 0, so ``M = f I``, ``c = 0``;
    contrast: ref = the mean ``mu`` of the luma image, so ``M = f I``, ``c = 1 - f``;
    saturation: ref = luma ``w^T x``, so ``M = f I + (1 - f) 1 w^T``, ``c = 0``;
    with ``w`` = :data:`GRAY_WEIGHTS`. A factor f = 1 gives the identity map for any op.
    ``mu`` depends on the image at that step, so the caller multiplies ``c`` by it then.
    """
    f = factor.to(dtype)
    is_saturation = (op == SATURATION).to(dtype)
    eye = torch.eye(3, device=op.device, dtype=dtype)
    luma = torch.tensor(GRAY_WEIGHTS, device=op.device, dtype=dtype).expand(3, 3)  # every row is w^T
    matrix = f[..., None, None] * eye + ((1.0 - f) * is_saturation)[..., None, None] * luma
    return matrix, (1.0 - f) * (op == CONTRAST).to(dtype)


def adjust_hue(x: Tensor, hue: Tensor) -> Tensor:
    """Rotate hue by a per-sample ``hue`` in [-0.5, 0.5] turns (torchvision ``adjust_hue``:
    RGB -> HSV, ``H <- (H + hue) mod 1``, HSV -> RGB), without materialising HSV.

    In HSV (Smith 1978, PIL conventions), with ``M = max(R,G,B)``, ``m = min``, ``d = M - m``:
    ``6H = (G - B)/d, 2 + (B - R)/d, 4 + (R - G)/d`` when the max is R, G, B (ties in that
    order). V = M and S = d / M are unchanged by the rotation, and the inverse map is
    ``C_n = V - V S ramp(k_n) = M - d ramp(k_n)``, ``k_n = (n + 6H') mod 6`` for n = 5, 3, 1
    (R, G, B), ``ramp(k) = clamp(min(k, 4 - k), 0, 1)``. Gray pixels (d = 0) stay as they are.
    ``C_n`` lies in ``[m, M]``, so no clamp is needed.
    """
    r, g, b = x.unbind(dim=1)
    top = torch.maximum(torch.maximum(r, g), b)
    d = top - torch.minimum(torch.minimum(r, g), b)
    inv_d = torch.where(d > 0, d, 1.0).reciprocal_()
    h6 = torch.where(top == r, (g - b).mul_(inv_d),
                     torch.where(top == g, (b - r).mul_(inv_d).add_(2.0), (r - g).mul_(inv_d).add_(4.0)))
    n = torch.tensor([5.0, 3.0, 1.0], device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    k = torch.remainder(h6.unsqueeze(1) + (n + 6.0 * hue.to(x.dtype).view(-1, 1, 1, 1)), 6.0)
    ramp = torch.minimum(k, 4.0 - k).clamp_(0.0, 1.0)
    return ramp.mul_(d.unsqueeze(1)).neg_().add_(top.unsqueeze(1))  # M - d ramp


def color_jitter(x: Tensor, params: ViewParams) -> Tensor:
    """Per-sample ColorJitter with a per-sample op order (torchvision ColorJitter.transform).

    At step k each sample runs its op ``order[:, k]``. Brightness, contrast and saturation are
    per-sample affine RGB maps (:func:`colour_affine`, all B x 4 of them built before the loop),
    so one ``baddbmm`` + clamp serves the whole batch at each step (identity for samples whose
    op is hue or that skip the jitter). Hue is not affine; it is computed only for the samples
    that need it at this step.
    """
    b, c, h, w = x.shape
    gray_w = torch.tensor(GRAY_WEIGHTS, device=x.device, dtype=x.dtype)
    ops = torch.where(params.jitter[:, None], params.order, HUE)  # B x 4; "hue" = no affine op
    one = torch.ones_like(params.brightness)
    factors = torch.stack((params.brightness, params.contrast, params.saturation, one), dim=1)
    matrices, contrast_weight = colour_affine(ops, factors.gather(1, ops), x.dtype)  # neutral 1 for hue
    hue_steps = (ops == HUE) & params.jitter[:, None] & (params.hue != 0)[:, None]
    for k in range(4):
        flat = x.reshape(b, c, h * w)
        mean_gray = flat.mean(dim=2) @ gray_w  # mean of the luma image, per sample
        offset = (contrast_weight[:, k] * mean_gray).view(b, 1, 1).expand(b, c, 1)
        x = torch.baddbmm(offset, matrices[:, k], flat).clamp_(0.0, 1.0).view(b, c, h, w)
        idx = torch.nonzero(hue_steps[:, k]).flatten()
        if idx.numel():
            x[idx] = adjust_hue(x[idx], params.hue[idx])
    return x


def grayscale_(x: Tensor, mask: Tensor) -> Tensor:
    """In place: replace the samples in ``mask`` by their 3-channel luma image
    (RandomGrayscale), computing luma only for those samples. Returns ``x``."""
    idx = torch.nonzero(mask).flatten()
    if idx.numel():
        x[idx] = rgb_to_gray(x[idx]).expand(-1, 3, -1, -1)
    return x


def gaussian_kernels(sigma: Tensor, kernel_size: int, dtype: torch.dtype) -> Tensor:
    """B x k normalised 1-D Gaussians ``g_i ∝ exp(-(i - (k-1)/2)^2 / (2 sigma^2))``
    (torchvision ``_get_gaussian_kernel1d``)."""
    i = torch.arange(kernel_size, device=sigma.device, dtype=torch.float64) - (kernel_size - 1) / 2
    g = torch.exp(-(i[None, :] ** 2) / (2.0 * sigma.double()[:, None] ** 2))
    return (g / g.sum(dim=1, keepdim=True)).to(dtype)


def blur_matrices(sigma: Tensor, size: int, kernel_size: int, dtype: torch.dtype) -> Tensor:
    """Per-sample B x size x size matrices ``G`` of a 1-D Gaussian blur with reflect padding:
    ``G_ij = sum_t g_t [refl(i + t - r) = j]``, ``r = k // 2``, ``refl(p) = |p|`` below 0 and
    ``2 (size - 1) - p`` above ``size - 1`` (``F.pad(mode="reflect")``, edge not repeated)."""
    r = kernel_size // 2
    if r > size - 1:
        raise ValueError(f"blur kernel {kernel_size} is too large for a {size} px image (reflect padding).")
    pos = (torch.arange(size, device=sigma.device)[:, None] + torch.arange(kernel_size, device=sigma.device)
           - r).abs()
    pos = torch.where(pos > size - 1, 2 * (size - 1) - pos, pos)
    g = gaussian_kernels(sigma, kernel_size, dtype)  # B x k
    b = len(sigma)
    out = torch.zeros(b, size, size, device=sigma.device, dtype=dtype)
    return out.scatter_add_(2, pos.expand(b, size, kernel_size), g[:, None, :].expand(b, size, kernel_size))


def gaussian_blur(x: Tensor, sigma: Tensor, kernel_size: int) -> Tensor:
    """Per-sample separable Gaussian blur with reflect padding, ``y = G_H x G_W^T`` with
    :func:`blur_matrices` (two ``bmm``s; on CPU faster than a grouped convolution). Equals
    torchvision ``gaussian_blur(x, [k, k], [sigma, sigma])``, whose 2-D kernel is the outer
    product of the 1-D ones."""
    _, _, h, w = x.shape
    return _sandwich(blur_matrices(sigma, h, kernel_size, x.dtype), x,
                     blur_matrices(sigma, w, kernel_size, x.dtype))


def normalize(x: Tensor, mean: Sequence[float], std: Sequence[float]) -> Tensor:
    """``(x - mean) / std`` per channel (in place on ``x``)."""
    m = torch.tensor(mean, device=x.device, dtype=x.dtype).view(1, -1, 1, 1)
    s = torch.tensor(std, device=x.device, dtype=x.dtype).view(1, -1, 1, 1)
    return x.sub_(m).div_(s)


def to_float_images(images: Tensor) -> Tensor:
    """Validate a B x 3 x H x W batch and return it as floats in [0, 1].

    uint8 -> float32 / 255; float tensors must already lie in [0, 1] and keep their dtype.
    """
    check_images(images)
    return _as_float(images)


def _as_float(images: Tensor) -> Tensor:
    """uint8 -> float32 / 255; float images unchanged (no check: see :func:`to_float_images`)."""
    return images.to(torch.float32).div_(255.0) if images.dtype == torch.uint8 else images


def check_images(images: Tensor) -> None:
    """Raise a clear error unless ``images`` is a B x 3 x H x W uint8 batch or floats in [0, 1]."""
    if not isinstance(images, Tensor):
        raise TypeError(f"images must be a torch.Tensor, got {type(images).__name__}.")
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"images must have shape B x 3 x H x W, got {tuple(images.shape)}.")
    if images.dtype == torch.uint8:
        return
    if not images.is_floating_point():
        raise TypeError(f"images must be uint8 or float in [0, 1], got dtype {images.dtype}.")
    if images.numel() and (images.min() < 0 or images.max() > 1):
        raise ValueError("float images must lie in [0, 1]; convert with x / 255 before calling.")
