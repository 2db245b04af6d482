"""View recipes: the distribution of random views, with the parameters of the papers.

Chapter 01 (``chapters/01_augmentation.py``) teaches it. A recipe is a frozen :class:`ViewRecipe`
(crop scale and ratio, flip, colour-jitter strengths and probability, grayscale, blur,
normalisation); the papers' recipes are :func:`simclr_imagenet`, :func:`simclr_cifar` (SimCLR,
Chen et al. 2020, App. A and B.9), :func:`moco_v1` and :func:`moco_v2` (He et al. 2019; Chen et al.
2020b), registered in :data:`RECIPES` and looked up by :func:`get_recipe`.
:func:`build_torchvision_pipeline` turns a recipe into a per-image ``torchvision.transforms.v2``
pipeline for DataLoader workers; :class:`~contrastive_lab.views.batched.BatchedViews` draws the
same distribution for a whole batch at once. The constants the ops share (dataset statistics,
luma weights, colour-jitter op ids) live here too.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torchvision.transforms import v2

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


def _make(defaults: dict[str, Any], overrides: dict[str, Any]) -> ViewRecipe:
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


def simclr_imagenet(**overrides: Any) -> ViewRecipe:
    """SimCLR ImageNet views (Chen et al. 2020, "A Simple Framework for Contrastive Learning
    of Visual Representations", App. A): crop area ~ U(0.08, 1), aspect log-U(3/4, 4/3),
    resize to 224, flip p=0.5; ColorJitter(0.8s, 0.8s, 0.8s, 0.2s) with s=1 applied with p=0.8;
    grayscale p=0.2; Gaussian blur p=0.5, sigma ~ U(0.1, 2.0), kernel 10% of the image side.
    """
    return _make(dict(name="simclr_imagenet", size=224, jitter=simclr_jitter(1.0)), overrides)


def simclr_cifar(**overrides: Any) -> ViewRecipe:
    """SimCLR CIFAR-10 views (Chen et al. 2020, App. B.9): as :func:`simclr_imagenet` but
    colour strength s=0.5, i.e. ColorJitter(0.4, 0.4, 0.4, 0.1), no Gaussian blur, 32 px,
    CIFAR-10 mean/std.
    """
    defaults = dict(name="simclr_cifar", size=32, jitter=simclr_jitter(0.5), blur_p=0.0,
                    mean=CIFAR10_MEAN, std=CIFAR10_STD)
    return _make(defaults, overrides)


def moco_v1(**overrides: Any) -> ViewRecipe:
    """MoCo v1 views (He et al. 2019, "Momentum Contrast for Unsupervised Visual Representation
    Learning", Sec. 3.3 "Technical details": crop, colour jitter, flip, grayscale, following
    InstDisc; exact values from the official repo ``main_moco.py``): RandomResizedCrop(224,
    scale=(0.2, 1)), RandomGrayscale(0.2), then ColorJitter(0.4, 0.4, 0.4, 0.4) applied *always*
    (no RandomApply), flip p=0.5; no blur.
    """
    defaults = dict(name="moco_v1", size=224, crop_scale=(0.2, 1.0), jitter=(0.4, 0.4, 0.4, 0.4),
                    jitter_p=1.0, gray_p=0.2, gray_before_jitter=True, blur_p=0.0)
    return _make(defaults, overrides)


def moco_v2(**overrides: Any) -> ViewRecipe:
    """MoCo v2 views (Chen et al. 2020b, "Improved Baselines with Momentum Contrastive
    Learning", Sec. 3 "Augmentation"; repo ``main_moco.py --aug-plus``): crop scale (0.2, 1),
    ColorJitter(0.4, 0.4, 0.4, 0.1) with p=0.8, grayscale 0.2, blur p=0.5 with sigma ~ U(0.1, 2.0), flip p=0.5.
    The repo blurs with PIL (radius=sigma); we use SimCLR's kernel of 10% of the side (at 224 px
    that is +-11 px, wider than 5 sigma, so the two blurs agree).
    """
    defaults = dict(name="moco_v2", size=224, crop_scale=(0.2, 1.0), jitter=(0.4, 0.4, 0.4, 0.1),
                    jitter_p=0.8, gray_p=0.2, blur_p=0.5, blur_sigma=(0.1, 2.0))
    return _make(defaults, overrides)


def byol(**overrides: Any) -> ViewRecipe:
    """BYOL's first view T (Grill et al. 2020, "Bootstrap Your Own Latent", App. B, Table 6): crop area
    ~ U(0.08, 1), flip p=0.5, ColorJitter(0.4, 0.4, 0.2, 0.1) with p=0.8, grayscale p=0.2, Gaussian blur
    p=1.0 with sigma ~ U(0.1, 2.0) and a kernel of 10% of the side (23 px at 224). The second view T'
    differs only in blur p=0.1 and solarization p=0.2: a method with ``asymmetric_views`` derives it
    (solarization is not implemented here). DINO (Caron et al. 2021, ``DataAugmentationDINO``) and
    Barlow Twins (Zbontar et al. 2021, App. / official code) use the same two views.
    """
    defaults = dict(name="byol", size=224, jitter=(0.4, 0.4, 0.2, 0.1), jitter_p=0.8, gray_p=0.2, blur_p=1.0)
    return _make(defaults, overrides)


RECIPES: dict[str, Callable[..., ViewRecipe]] = {
    "simclr_imagenet": simclr_imagenet,
    "simclr_cifar": simclr_cifar,
    "moco_v1": moco_v1,
    "moco_v2": moco_v2,
    "byol": byol,
}


def get_recipe(name: str, **overrides: Any) -> ViewRecipe:
    """Named recipe from :data:`RECIPES` with field overrides, e.g.
    ``get_recipe("simclr_imagenet", size=96)``."""
    if name not in RECIPES:
        raise ValueError(f"unknown recipe {name!r}; valid recipes: {sorted(RECIPES)}.")
    return RECIPES[name](**overrides)


def _as_recipe(recipe: ViewRecipe | str) -> ViewRecipe:
    """``recipe`` itself, or the named recipe from :data:`RECIPES` with its defaults."""
    if isinstance(recipe, str):
        return get_recipe(recipe)
    if not isinstance(recipe, ViewRecipe):
        raise TypeError(f"expected a ViewRecipe or a recipe name, got {type(recipe).__name__}.")
    return recipe



# --------------------------------------------------------------------------------------------
# The per-image torchvision pipeline
# --------------------------------------------------------------------------------------------


def build_torchvision_pipeline(recipe: ViewRecipe | str) -> v2.Compose:
    """Per-image ``torchvision.transforms.v2`` pipeline for ``recipe`` (DataLoader workers).

    Input: a PIL image or a uint8/float C x H x W tensor. Output: float32 normalised
    C x size x size tensor. The image is converted to float first, so every op works in
    [0, 1] floats exactly like :class:`~contrastive_lab.views.batched.BatchedViews` (no uint8
    rounding between ops).
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
