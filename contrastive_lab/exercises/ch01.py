"""Chapter 01's checked exercises: the random-resized-crop box sampler (01.7) and the contrast step
of the colour jitter for a batch with per-sample factors (01.8), both against the library's
batched ops (:func:`~contrastive_lab.views.sample_crop_boxes`, :func:`~contrastive_lab.views.color_jitter`)."""

from __future__ import annotations

import math

import torch

from ..views import ViewParams, color_jitter, sample_crop_boxes
from ..views.recipes import CONTRAST, GRAY_WEIGHTS
from .core import Case, Diagnosis, Exercise, register

ATTEMPTS = 10


# --------------------------------------------------------------------------------------------
# 01.7 the crop boxes
# --------------------------------------------------------------------------------------------


def library_boxes(batch: int, height: int, width: int, scale: tuple, ratio: tuple, seed: int) -> torch.Tensor:
    """The library's boxes as one (batch, 4) int64 tensor of rows (top, left, h, w)."""
    return torch.stack(sample_crop_boxes(batch, height, width, scale, ratio, torch.Generator().manual_seed(seed)),
                       dim=1)


def _box_cases() -> list[Case]:
    return [
        Case("8 boxes, SimCLR CIFAR (32 x 32, scale 0.08-1)", (8, 32, 32, (0.08, 1.0), (3 / 4, 4 / 3), 0)),
        Case("one box (batch of 1)", (1, 32, 32, (0.08, 1.0), (3 / 4, 4 / 3), 1)),
        Case("non-square 24 x 40 image, MoCo scale 0.2-1", (16, 24, 40, (0.2, 1.0), (3 / 4, 4 / 3), 2)),
        Case("scale (1, 1), ratio (1, 1): the whole image", (4, 32, 32, (1.0, 1.0), (1.0, 1.0), 3)),
        Case("no box fits: ratio (2, 3) at full area (fallback)", (4, 32, 32, (1.0, 1.0), (2.0, 3.0), 4)),
        Case("tall 40 x 16 image, crops of 70-100 % (some fall back)", (32, 40, 16, (0.7, 1.0), (3 / 4, 4 / 3), 5)),
    ]


def _draws(batch, seed):
    g = torch.Generator().manual_seed(seed)
    area = torch.rand((batch, ATTEMPTS), generator=g, dtype=torch.float64)
    logr = torch.rand((batch, ATTEMPTS), generator=g, dtype=torch.float64)
    corner = torch.rand((2, batch), generator=g, dtype=torch.float64)
    return area, logr, corner


def _boxes_variant(batch, height, width, scale, ratio, seed, *, log_uniform=True, swap=False, last=False,
                   plus_one=True, clip_fallback=True):
    """The sampler with one step changed (for the diagnoses)."""
    u_area, u_r, corner = _draws(batch, seed)
    target = height * width * (scale[0] + (scale[1] - scale[0]) * u_area)
    if log_uniform:
        r = torch.exp(math.log(ratio[0]) + (math.log(ratio[1]) - math.log(ratio[0])) * u_r)
    else:
        r = ratio[0] + (ratio[1] - ratio[0]) * u_r
    w, h = torch.round(torch.sqrt(target * r)), torch.round(torch.sqrt(target / r))
    if swap:
        w, h = h, w
    ok = (w > 0) & (w <= width) & (h > 0) & (h <= height)
    order = torch.arange(ATTEMPTS, dtype=torch.float64)
    pick = torch.where(ok, -order if not last else order, -math.inf).argmax(dim=1, keepdim=True)
    found = ok.any(dim=1)
    if clip_fallback:
        in_ratio = width / height
        fh, fw = ((int(round(width / ratio[0])), width) if in_ratio < ratio[0] else
                  (height, int(round(height * ratio[1]))) if in_ratio > ratio[1] else (height, width))
    else:
        fh, fw = height, width
    hh = torch.where(found, h.gather(1, pick)[:, 0], float(fh))
    ww = torch.where(found, w.gather(1, pick)[:, 0], float(fw))
    extra = 1 if plus_one else 0
    top = torch.where(found, torch.floor(corner[0] * (height - hh + extra)), float((height - fh) // 2))
    left = torch.where(found, torch.floor(corner[1] * (width - ww + extra)), float((width - fw) // 2))
    return torch.stack([top, left, hh, ww], dim=1).long()


register(Exercise(
    id="01.7",
    title="the random-resized-crop box sampler",
    cases=_box_cases,
    reference=library_boxes,
    hint="per sample, 10 attempts: area a*H*W with a ~ U(scale), ratio r = exp(U(log ratio)), "
         "w = round(sqrt(area*r)), h = round(sqrt(area/r)); the FIRST attempt with 0 < w <= W and 0 < h <= H "
         "wins, top = floor(u*(H - h + 1)), left = floor(u'*(W - w + 1)); if none fits, the central crop of the "
         "whole image with its aspect ratio clipped to the ratio range. Draw the numbers in the order the "
         "exercise gives (float64).",
    diagnoses=(
        Diagnosis("the aspect ratio is drawn uniformly, not log-uniformly",
                  lambda *a: _boxes_variant(*a, log_uniform=False)),
        Diagnosis("w and h are swapped (w = sqrt(area / r))", lambda *a: _boxes_variant(*a, swap=True)),
        Diagnosis("the last box that fits is kept instead of the first", lambda *a: _boxes_variant(*a, last=True)),
        Diagnosis("the corner misses the last position: floor(u * (H - h)) instead of floor(u * (H - h + 1))",
                  lambda *a: _boxes_variant(*a, plus_one=False)),
        Diagnosis("the fallback is the whole image, without clipping its aspect ratio to the ratio range",
                  lambda *a: _boxes_variant(*a, clip_fallback=False)),
    ),
    rtol=0.0, atol=0.0,
))


# --------------------------------------------------------------------------------------------
# 01.8 contrast, per sample
# --------------------------------------------------------------------------------------------


def library_contrast(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """The library's colour jitter with only the contrast step active (per-sample factors)."""
    b = len(x)
    one = torch.ones(b, dtype=torch.float64)
    params = ViewParams(
        top=torch.zeros(b, dtype=torch.long), left=torch.zeros(b, dtype=torch.long),
        height=torch.full((b,), x.shape[2]), width=torch.full((b,), x.shape[3]),
        flip=torch.zeros(b, dtype=torch.bool), jitter=torch.ones(b, dtype=torch.bool),
        brightness=one, contrast=factor.double(), saturation=one, hue=torch.zeros(b, dtype=torch.float64),
        order=torch.tensor([CONTRAST, 0, 2, 3]).repeat(b, 1),
        gray=torch.zeros(b, dtype=torch.bool), blur=torch.zeros(b, dtype=torch.bool),
        sigma=one.clone(),
    )
    return color_jitter(x.float().clone(), params)


def _images(b, h, w, seed, low=0.0, high=1.0):
    g = torch.Generator().manual_seed(seed)
    return low + (high - low) * torch.rand(b, 3, h, w, generator=g)


def _contrast_cases() -> list[Case]:
    f = torch.tensor
    return [
        Case("4 images, factors 0.6-1.4", (_images(4, 8, 8, 0), f([0.6, 0.9, 1.2, 1.4], dtype=torch.float64))),
        Case("factor 1 (identity) and 0 (flat gray)", (_images(2, 6, 6, 1), f([1.0, 0.0], dtype=torch.float64))),
        Case("batch of 1, non-square 5 x 9", (_images(1, 5, 9, 2), f([0.3], dtype=torch.float64))),
        Case("bright images, factor 1.8 (values clipped at 1)",
             (_images(3, 8, 8, 3, 0.5, 1.0), f([1.8, 1.8, 1.5], dtype=torch.float64))),
        Case("images with very different means", (torch.cat([_images(1, 8, 8, 4, 0.0, 0.2), _images(1, 8, 8, 5, 0.8, 1.0)]),
                                                  f([0.5, 0.5], dtype=torch.float64))),
    ]


_LUMA = torch.tensor(GRAY_WEIGHTS)


def _blend(x, factor, ref, clamp=True):
    f = factor.float().view(-1, 1, 1, 1)
    out = f * x + (1 - f) * ref
    return out.clamp(0, 1) if clamp else out


def _luma(x):
    return torch.einsum("c,bchw->bhw", _LUMA, x)[:, None]


register(Exercise(
    id="01.8",
    title="contrast with per-sample factors",
    cases=_contrast_cases,
    reference=library_contrast,
    hint="x <- clamp(f x + (1 - f) mu, 0, 1) per sample, with mu one number per image: the mean over the "
         "pixels of its luma image 0.2989 R + 0.587 G + 0.114 B (torchvision's adjust_contrast).",
    diagnoses=(
        Diagnosis("mu is the mean of all RGB values, not of the luma (grayscale) image",
                  lambda x, f: _blend(x, f, x.mean(dim=(1, 2, 3), keepdim=True))),
        Diagnosis("mu is the mean over the whole batch, not one per image",
                  lambda x, f: _blend(x, f, _luma(x).mean())),
        Diagnosis("each pixel is blended with its own luma: that is saturation, not contrast",
                  lambda x, f: _blend(x, f, _luma(x))),
        Diagnosis("the result is not clamped to [0, 1]",
                  lambda x, f: _blend(x, f, _luma(x).mean(dim=(1, 2, 3), keepdim=True), clamp=False)),
    ),
    rtol=1e-5, atol=1e-6,
))
