"""Data augmentation ("views") for contrastive learning.

A contrastive method sees two random *views* of every image and learns to tell that they
come from the same image. Which views it sees is the single most important design choice
(SimCLR, Chen et al. 2020, Sec. 3 and Fig. 5): random crop + colour distortion is the key
pair. This module gives

* :class:`ViewRecipe` - the distribution of views, with the parameters of the papers
  (:func:`simclr_imagenet`, :func:`simclr_cifar`, :func:`moco_v1`, :func:`moco_v2`,
  registry :data:`RECIPES`, :func:`get_recipe`);
* :func:`build_torchvision_pipeline` - that distribution as a per-image
  ``torchvision.transforms.v2`` pipeline, for DataLoader workers;
* :class:`BatchedViews` - the same distribution as one vectorised call per batch, on CPU
  or CUDA, with its own random parameters for *every* sample. (A v2 transform applied to a
  batch tensor draws one set of parameters for the whole batch - every image would get the
  same crop and colours, which silently breaks contrastive learning.)

Pipeline order (SimCLR App. A; MoCo v2 repo): crop+resize -> flip -> colour jitter (random
op order, applied with probability ``jitter_p``) -> grayscale -> blur -> normalise. Flip
commutes with everything after it, so its place does not change the distribution. MoCo v1's
repo converts to grayscale *before* the jitter; ``gray_before_jitter`` reproduces that.

All colour ops follow ``torchvision.transforms.v2.functional`` on float images in [0, 1]
(clamped after each op); :meth:`BatchedViews.apply_reference` is the readable per-sample
loop over those functional ops, and the tests check that the vectorised path agrees.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF

from contrastive_lab import native

# Per-channel statistics of the 50k CIFAR-10 training images (pixel values in [0, 1]).
# (The often-copied std (0.2023, 0.1994, 0.2010) is the mean of per-image stds, not the std.)
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)
# ImageNet-1k statistics used by torchvision's pretrained models and by SimCLR/MoCo code.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# Luma weights of torchvision's rgb_to_grayscale (ITU-R 601: 0.299, 0.587, 0.114; torchvision
# writes 0.2989). We use torchvision's exact numbers so both pipelines agree to float precision.
GRAY_WEIGHTS = (0.2989, 0.587, 0.114)
# Colour-jitter op ids, in torchvision ColorJitter's numbering (its ``fn_idx``).
BRIGHTNESS, CONTRAST, SATURATION, HUE = 0, 1, 2, 3
CROP_ATTEMPTS = 10  # torchvision RandomResizedCrop.get_params tries 10 boxes, then centre-crops


# --------------------------------------------------------------------------------------------
# Recipes
# --------------------------------------------------------------------------------------------


def _pair(value: Sequence[float], name: str, length: int = 2) -> tuple[float, ...]:
    """Turn a list/tuple into a tuple of ``length`` floats, or raise a clear error."""
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence) or len(value) != length:
        raise ValueError(f"{name} must be a sequence of {length} numbers, got {value!r}.")
    try:
        return tuple(float(v) for v in value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must contain numbers only, got {value!r}.") from None


@dataclass(frozen=True)
class ViewRecipe:
    """The distribution of one random view (all fields are validated on creation).

    Attributes:
        name: label used in logs and in :data:`RECIPES`.
        size: output side in pixels (square output).
        crop_scale: range of the crop area as a fraction of the image area,
            ``A_crop / A_img ~ U(crop_scale)`` (torchvision RandomResizedCrop ``scale``).
        crop_ratio: range of the crop aspect ratio w/h, sampled log-uniformly.
        flip_p: probability of a horizontal flip.
        jitter: strengths (brightness b, contrast c, saturation s, hue h); factors are drawn
            from U[max(0, 1-b), 1+b], U[max(0, 1-c), 1+c], U[max(0, 1-s), 1+s] and U[-h, h]
            (torchvision ColorJitter). Hue strength must be at most 0.5.
        jitter_p: probability that the colour jitter is applied at all.
        gray_p: probability of converting to (3-channel) grayscale.
        gray_before_jitter: MoCo v1's repo applies RandomGrayscale before ColorJitter.
        blur_p: probability of a Gaussian blur.
        blur_sigma: range of the blur standard deviation (pixels), sigma ~ U(blur_sigma).
        blur_kernel_frac: kernel side as a fraction of ``size`` (SimCLR App. A: 10%); see
            :attr:`blur_kernel_size` for the rounding to an odd integer.
        mean, std: per-channel normalisation, ``x <- (x - mean) / std``.
    """

    name: str = "custom"
    size: int = 224
    crop_scale: tuple[float, float] = (0.08, 1.0)
    crop_ratio: tuple[float, float] = (3.0 / 4.0, 4.0 / 3.0)
    flip_p: float = 0.5
    jitter: tuple[float, float, float, float] = (0.8, 0.8, 0.8, 0.2)
    jitter_p: float = 0.8
    gray_p: float = 0.2
    gray_before_jitter: bool = False
    blur_p: float = 0.5
    blur_sigma: tuple[float, float] = (0.1, 2.0)
    blur_kernel_frac: float = 0.1
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD

    def __post_init__(self) -> None:
        for name, length in [("crop_scale", 2), ("crop_ratio", 2), ("jitter", 4), ("blur_sigma", 2),
                             ("mean", 3), ("std", 3)]:
            object.__setattr__(self, name, _pair(getattr(self, name), name, length))
        self._check_scalars()
        object.__setattr__(self, "size", int(self.size))
        self._check_ranges()

    def _check_scalars(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"name must be a non-empty string, got {self.name!r}.")
        if isinstance(self.size, bool) or not isinstance(self.size, numbers.Integral) or self.size <= 0:
            raise ValueError(f"size must be a positive int (output side in pixels), got {self.size!r}.")
        for field in ("flip_p", "jitter_p", "gray_p", "blur_p"):
            p = getattr(self, field)
            if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0.0 <= p <= 1.0:
                raise ValueError(f"{field} is a probability and must lie in [0, 1], got {p!r}.")
        if not isinstance(self.gray_before_jitter, bool):
            raise ValueError(f"gray_before_jitter must be a bool, got {self.gray_before_jitter!r}.")

    def _check_ranges(self) -> None:
        lo, hi = self.crop_scale
        if not 0.0 < lo <= hi <= 1.0:
            raise ValueError(f"crop_scale must satisfy 0 < min <= max <= 1, got {self.crop_scale}.")
        lo, hi = self.crop_ratio
        if not 0.0 < lo <= hi:
            raise ValueError(f"crop_ratio must satisfy 0 < min <= max, got {self.crop_ratio}.")
        if min(self.jitter) < 0 or self.jitter[3] > 0.5:
            raise ValueError(f"jitter strengths must be >= 0 and hue <= 0.5, got {self.jitter}.")
        lo, hi = self.blur_sigma
        if not 0.0 < lo <= hi:
            raise ValueError(f"blur_sigma must satisfy 0 < min <= max, got {self.blur_sigma}.")
        if not 0.0 < self.blur_kernel_frac <= 1.0:
            raise ValueError(f"blur_kernel_frac must lie in (0, 1], got {self.blur_kernel_frac}.")
        if self.blur_p > 0 and self.blur_kernel_size < 3:
            raise ValueError(
                f"blur kernel would be {self.blur_kernel_size} px (size={self.size}, "
                f"blur_kernel_frac={self.blur_kernel_frac}), i.e. no blur at all; raise size or "
                "blur_kernel_frac, or set blur_p=0."
            )
        if min(self.std) <= 0:
            raise ValueError(f"std must be positive per channel, got {self.std}.")

    @property
    def blur_kernel_size(self) -> int:
        """Odd kernel side ``k = 2 * floor(floor(frac * size) / 2) + 1``.

        SimCLR's code (``data_util.py``: ``kernel_size=height // 10``, then
        ``radius = kernel_size // 2; kernel_size = 2 * radius + 1``): 224 -> 23, 96 -> 9, 32 -> 3.
        """
        return 2 * (int(math.floor(self.blur_kernel_frac * self.size + 1e-9)) // 2) + 1


def _make(defaults: dict, overrides: dict) -> ViewRecipe:
    """Build a recipe from a paper's defaults plus user overrides (e.g. ``size=32``)."""
    valid = {f.name for f in dataclasses.fields(ViewRecipe)}
    unknown = sorted(set(overrides) - valid)
    if unknown:
        raise ValueError(f"unknown ViewRecipe field(s) {unknown}; valid fields: {sorted(valid)}.")
    return ViewRecipe(**{**defaults, **overrides})


def simclr_jitter(strength: float) -> tuple[float, float, float, float]:
    """SimCLR's colour-jitter parameters for strength ``s`` (Chen et al. 2020, App. A, the
    pseudo-code of ``color_distortion``): ColorJitter(0.8s, 0.8s, 0.8s, 0.2s). A recipe built
    with it checks the ranges (hue 0.2s <= 0.5, so s <= 2.5)."""
    return (0.8 * strength, 0.8 * strength, 0.8 * strength, 0.2 * strength)


def simclr_imagenet(**overrides) -> ViewRecipe:
    """SimCLR ImageNet views (Chen et al. 2020, "A Simple Framework for Contrastive Learning
    of Visual Representations", App. A): crop area ~ U(0.08, 1), aspect log-U(3/4, 4/3),
    resize to 224, flip p=0.5; ColorJitter(0.8s, 0.8s, 0.8s, 0.2s) with s=1 applied with p=0.8;
    grayscale p=0.2; Gaussian blur p=0.5, sigma ~ U(0.1, 2.0), kernel 10% of the image side.
    """
    return _make(dict(name="simclr_imagenet", size=224, jitter=simclr_jitter(1.0)), overrides)


def simclr_cifar(**overrides) -> ViewRecipe:
    """SimCLR CIFAR-10 views (Chen et al. 2020, App. B.9): as :func:`simclr_imagenet` but
    colour strength s=0.5, i.e. ColorJitter(0.4, 0.4, 0.4, 0.1), no Gaussian blur, 32 px,
    CIFAR-10 mean/std.
    """
    defaults = dict(name="simclr_cifar", size=32, jitter=simclr_jitter(0.5), blur_p=0.0,
                    mean=CIFAR10_MEAN, std=CIFAR10_STD)
    return _make(defaults, overrides)


def moco_v1(**overrides) -> ViewRecipe:
    """MoCo v1 views (He et al. 2019, "Momentum Contrast for Unsupervised Visual Representation
    Learning", Sec. 3.3 "Technical details": crop, colour jitter, flip, grayscale, following
    InstDisc; exact values from the official repo ``main_moco.py``): RandomResizedCrop(224,
    scale=(0.2, 1)), RandomGrayscale(0.2), then ColorJitter(0.4, 0.4, 0.4, 0.4) applied *always*
    (no RandomApply), flip p=0.5; no blur.
    """
    defaults = dict(name="moco_v1", size=224, crop_scale=(0.2, 1.0), jitter=(0.4, 0.4, 0.4, 0.4),
                    jitter_p=1.0, gray_p=0.2, gray_before_jitter=True, blur_p=0.0)
    return _make(defaults, overrides)


def moco_v2(**overrides) -> ViewRecipe:
    """MoCo v2 views (Chen et al. 2020b, "Improved Baselines with Momentum Contrastive
    Learning", Sec. 3 "Augmentation"; repo ``main_moco.py --aug-plus``): crop scale (0.2, 1),
    ColorJitter(0.4, 0.4, 0.4, 0.1) with p=0.8, grayscale 0.2, blur p=0.5 with sigma ~ U(0.1, 2.0), flip p=0.5.
    The repo blurs with PIL (radius=sigma); we use SimCLR's kernel of 10% of the side (at 224 px
    that is +-11 px, wider than 5 sigma, so the two blurs agree).
    """
    defaults = dict(name="moco_v2", size=224, crop_scale=(0.2, 1.0), jitter=(0.4, 0.4, 0.4, 0.1),
                    jitter_p=0.8, gray_p=0.2, blur_p=0.5, blur_sigma=(0.1, 2.0))
    return _make(defaults, overrides)


RECIPES: dict[str, Callable[..., ViewRecipe]] = {
    "simclr_imagenet": simclr_imagenet,
    "simclr_cifar": simclr_cifar,
    "moco_v1": moco_v1,
    "moco_v2": moco_v2,
}


def get_recipe(name: str, **overrides) -> ViewRecipe:
    """Named recipe from :data:`RECIPES` with field overrides, e.g.
    ``get_recipe("simclr_imagenet", size=96)``."""
    if name not in RECIPES:
        raise ValueError(f"unknown recipe {name!r}; valid recipes: {sorted(RECIPES)}.")
    return RECIPES[name](**overrides)


def _as_recipe(recipe: ViewRecipe | str) -> ViewRecipe:
    if isinstance(recipe, str):
        return get_recipe(recipe)
    if not isinstance(recipe, ViewRecipe):
        raise TypeError(f"expected a ViewRecipe or a recipe name, got {type(recipe).__name__}.")
    return recipe


# --------------------------------------------------------------------------------------------
# (a) per-image torchvision pipeline
# --------------------------------------------------------------------------------------------


def build_torchvision_pipeline(recipe: ViewRecipe | str) -> v2.Compose:
    """Per-image ``torchvision.transforms.v2`` pipeline for ``recipe`` (DataLoader workers).

    Input: a PIL image or a uint8/float C x H x W tensor. Output: float32 normalised
    C x size x size tensor. The image is converted to float first, so every op works in
    [0, 1] floats exactly like :class:`BatchedViews` (no uint8 rounding between ops).
    Structure (always these 9 transforms, so it can be inspected): ToImage, ToDtype,
    RandomResizedCrop, RandomHorizontalFlip, RandomApply([ColorJitter]) and RandomGrayscale
    (swapped if ``gray_before_jitter``), RandomApply([GaussianBlur]), Normalize, ToPureTensor.
    """
    r = _as_recipe(recipe)
    colour = [v2.RandomApply([v2.ColorJitter(*r.jitter)], p=r.jitter_p), v2.RandomGrayscale(p=r.gray_p)]
    if r.gray_before_jitter:
        colour.reverse()
    return v2.Compose([
        v2.ToImage(),
        v2.ToDtype(torch.float32, scale=True),
        v2.RandomResizedCrop(r.size, scale=r.crop_scale, ratio=r.crop_ratio, antialias=True),
        v2.RandomHorizontalFlip(p=r.flip_p),
        *colour,
        v2.RandomApply([v2.GaussianBlur(r.blur_kernel_size, sigma=r.blur_sigma)], p=r.blur_p),
        v2.Normalize(mean=list(r.mean), std=list(r.std)),
        v2.ToPureTensor(),
    ])


# --------------------------------------------------------------------------------------------
# (b) batched, per-sample views: parameters
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
# (b) batched ops: each works on a float B x 3 x H x W batch with per-sample factors
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


# --------------------------------------------------------------------------------------------
# (b) the batched pipeline
# --------------------------------------------------------------------------------------------


class BatchedViews:
    """One random view per image of a batch, with per-sample random parameters.

    ``views = BatchedViews("simclr_cifar"); v1, v2 = views(x, g), views(x, g)`` where ``x`` is
    a uint8 (or [0, 1] float) B x 3 x H x W tensor on CPU or CUDA; each output is a normalised
    float B x 3 x size x size tensor on the same device. ``sample_params`` + ``apply`` split the
    call so tests can fix parameters; ``apply_reference`` is the same map as a per-sample loop
    over ``torchvision.transforms.v2.functional`` ops.

    ``native`` chooses how crop/resize/flip and colour jitter + grayscale run on CPU uint8 or float32
    batches: ``None`` (default) uses the compiled kernels of :mod:`contrastive_lab.native` when they
    are available (the same map to float rounding; the whole call ~3x faster at CIFAR sizes;
    ``$CONTRASTIVE_LAB_NATIVE`` switches them off or makes them required), ``False`` always runs the
    PyTorch functions of this module, ``True`` requires the kernels. GPU and float64 batches always
    use PyTorch. Blur and normalisation are PyTorch in every case.
    """

    def __init__(self, recipe: ViewRecipe | str, native: bool | None = None) -> None:
        if native not in (None, True, False):
            raise ValueError(f"native must be None (auto), True or False, got {native!r}.")
        self.recipe = _as_recipe(recipe)
        self.native = native

    def __repr__(self) -> str:
        return f"BatchedViews({self.recipe!r}, native={self.native!r})"

    def sample_params(self, batch: int, height: int, width: int, generator: torch.Generator | None = None,
                      device: torch.device | str = "cpu") -> ViewParams:
        """Draw the parameters of ``batch`` views of H x W images (distributions: see
        :class:`ViewRecipe`). Sampling runs on the generator's device (CPU by default, so a
        CPU generator gives the same views on any device); the result is moved to ``device``."""
        for name, v in (("batch", batch), ("height", height), ("width", width)):
            if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
                raise ValueError(f"{name} must be a positive int, got {v!r}.")
        r, dev = self.recipe, generator.device if generator is not None else torch.device("cpu")
        top, left, h, w = sample_crop_boxes(batch, height, width, r.crop_scale, r.crop_ratio, generator, dev)
        coins = torch.rand((4, batch), generator=generator, device=dev, dtype=torch.float64)
        b, c, s, hue_s = r.jitter
        params = ViewParams(
            top=top, left=left, height=h, width=w,
            flip=coins[0] < r.flip_p, jitter=coins[1] < r.jitter_p,
            brightness=_jitter_factor(b, batch, generator, dev),
            contrast=_jitter_factor(c, batch, generator, dev),
            saturation=_jitter_factor(s, batch, generator, dev),
            hue=_uniform((batch,), -hue_s, hue_s, generator, dev),
            order=torch.rand((batch, 4), generator=generator, device=dev).argsort(dim=1),
            gray=coins[2] < r.gray_p, blur=coins[3] < r.blur_p,
            sigma=_uniform((batch,), r.blur_sigma[0], r.blur_sigma[1], generator, dev),
        )
        return params.to(device)

    def _check(self, x: Tensor, params: ViewParams) -> None:
        if not isinstance(params, ViewParams):
            raise TypeError(f"params must be a ViewParams, got {type(params).__name__}.")
        if len(params) != x.shape[0]:
            raise ValueError(f"params are for {len(params)} images but the batch has {x.shape[0]}.")
        _, _, h, w = x.shape
        bad = ((params.top < 0) | (params.left < 0) | (params.height < 1) | (params.width < 1)
               | (params.top + params.height > h) | (params.left + params.width > w))
        if bool(bad.any()):
            raise ValueError(f"crop boxes of samples {torch.nonzero(bad).flatten().tolist()} "
                             f"leave the {h} x {w} image.")

    def apply(self, images: Tensor, params: ViewParams) -> Tensor:
        """Vectorised views of ``images`` with fixed ``params``: crop/resize/flip -> jitter ->
        grayscale -> blur (only the blurred samples) -> normalise."""
        check_images(images)
        self._check(images, params)
        return self._apply(images, params.to(images.device))

    def _apply(self, images: Tensor, params: ViewParams) -> Tensor:
        r = self.recipe
        if self._use_native(images):
            x = native.crop_resize_flip(images, params.top, params.left, params.height, params.width,
                                        params.flip, r.size)
            factors = torch.stack((params.brightness, params.contrast, params.saturation, params.hue), dim=1)
            native.colour_jitter_gray_(x, params.jitter, params.order, factors, params.gray, r.gray_before_jitter)
        else:
            x = self._crop_and_colour(_as_float(images), params)
        idx = torch.nonzero(params.blur).flatten()
        if idx.numel():
            x[idx] = gaussian_blur(x[idx], params.sigma[idx], r.blur_kernel_size)
        return normalize(x, r.mean, r.std)

    def _crop_and_colour(self, x: Tensor, params: ViewParams) -> Tensor:
        """The PyTorch path: crop/resize/flip, then colour jitter and grayscale in the recipe's order."""
        r = self.recipe
        x = crop_resize_flip(x, params, r.size)
        if r.gray_before_jitter:
            x = color_jitter(grayscale_(x, params.gray), params)
        else:
            x = grayscale_(color_jitter(x, params), params.gray)
        return x

    def _use_native(self, images: Tensor) -> bool:
        """Run the compiled crop and colour kernels on this batch? (See the class docstring.)"""
        if self.native is False:
            return False
        if not native.supports(images):
            if self.native:
                raise ValueError(f"BatchedViews(native=True) needs uint8 or float32 images on the CPU, got "
                                 f"{images.dtype} on {images.device}; pass native=None to use PyTorch there.")
            return False
        if self.native:
            return True  # colour_jitter_gray_ raises a clear error if the kernel cannot be built
        return native.available()

    def apply_reference(self, images: Tensor, params: ViewParams) -> Tensor:
        """Readable per-sample loop over torchvision's functional ops, same map as :meth:`apply`."""
        x = to_float_images(images)
        self._check(x, params)
        p = params.to("cpu")
        return torch.stack([self._one_reference(x[i], p, i) for i in range(len(p))])

    def _one_reference(self, img: Tensor, p: ViewParams, i: int) -> Tensor:
        r = self.recipe
        out = TF.resized_crop(img, int(p.top[i]), int(p.left[i]), int(p.height[i]), int(p.width[i]),
                              [r.size, r.size], antialias=True)
        if p.flip[i]:
            out = TF.horizontal_flip(out)
        if r.gray_before_jitter and p.gray[i]:
            out = TF.rgb_to_grayscale(out, num_output_channels=3)
        if p.jitter[i]:
            out = self._jitter_reference(out, p, i)
        if not r.gray_before_jitter and p.gray[i]:
            out = TF.rgb_to_grayscale(out, num_output_channels=3)
        if p.blur[i]:
            k, s = r.blur_kernel_size, float(p.sigma[i])
            out = TF.gaussian_blur(out, [k, k], [s, s])
        return TF.normalize(out, list(r.mean), list(r.std))

    @staticmethod
    def _jitter_reference(img: Tensor, p: ViewParams, i: int) -> Tensor:
        """torchvision ColorJitter.transform with this sample's factors and op order."""
        for op in p.order[i].tolist():
            if op == BRIGHTNESS:
                img = TF.adjust_brightness(img, float(p.brightness[i]))
            elif op == CONTRAST:
                img = TF.adjust_contrast(img, float(p.contrast[i]))
            elif op == SATURATION:
                img = TF.adjust_saturation(img, float(p.saturation[i]))
            elif float(p.hue[i]) != 0.0:
                img = TF.adjust_hue(img, float(p.hue[i]))
        return img

    def __call__(self, images: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Sample parameters for this batch and apply them (one random view per image)."""
        check_images(images)
        params = self.sample_params(images.shape[0], images.shape[2], images.shape[3], generator,
                                    device=images.device)
        return self._apply(images, params)
