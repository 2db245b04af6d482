"""Synthetic textures: an offline, deterministic dataset of any size whose class is the texture family.

Holds :func:`make_synthetic` and its pattern helpers: ten texture families (stripes, checkers,
rings, spokes, dots, blobs, waves, grids...), each image with its own centre, rotation, scale,
colours and noise, so texture and not colour carries the class and the class survives the SimCLR
augmentations. Chapter 00 introduces it as the stand-in when CIFAR-10 is not available; chapter 01
uses it to show the views on sharp-edged textures.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable

import torch
import torch.nn.functional as F

from .tensor import ImageTensorDataset, _check_split

SYNTHETIC_CLASSES = (
    "hstripes",
    "vstripes",
    "checker",
    "diamonds",
    "rings",
    "spokes",
    "dots",
    "blobs",
    "waves",
    "grid",
)
SYNTHETIC_SPLITS = ("train", "val", "test")


def _square_wave(t: torch.Tensor) -> torch.Tensor:
    """Soft square wave with period 1 and values in (0, 1) (soft edges avoid aliasing at low resolution)."""
    return 0.5 + 0.5 * torch.tanh(3.0 * torch.sin(2 * math.pi * t))


def _checker(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Soft checkerboard with period 1 along ``u`` and ``v``, values in (0, 1)."""
    return 0.5 + 0.5 * torch.tanh(4.0 * torch.sin(2 * math.pi * u) * torch.sin(2 * math.pi * v))


def _lattice_dist(t: torch.Tensor) -> torch.Tensor:
    """Distance to the nearest integer (lattice line), in periods."""
    return t - torch.round(t)


def _blobs(u: torch.Tensor, v: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Smooth random field (bicubic upsampling of 4x4 noise), soft-thresholded: aperiodic blobs."""
    n, h, w = u.shape
    field = F.interpolate(
        torch.rand(n, 1, 4, 4, generator=gen), size=(h, w), mode="bicubic", align_corners=False
    )[:, 0]
    lo, hi = field.amin((1, 2), keepdim=True), field.amax((1, 2), keepdim=True)
    return torch.sigmoid(12.0 * ((field - lo) / (hi - lo + 1e-6) - 0.5))


# Each family maps per-image pattern coordinates (u, v in periods, centred at a random point) to [0, 1].
# None is a mirror image of another (SimCLR's horizontal flip would make such a pair inseparable).
_PATTERNS: dict[str, Callable[..., torch.Tensor]] = {
    "hstripes": lambda u, v, g: _square_wave(v),
    "vstripes": lambda u, v, g: _square_wave(u),
    "checker": lambda u, v, g: _checker(u, v),
    "diamonds": lambda u, v, g: _checker((u + v) / math.sqrt(2), (u - v) / math.sqrt(2)),
    "rings": lambda u, v, g: _square_wave(torch.sqrt(u**2 + v**2)),
    "spokes": lambda u, v, g: _square_wave(3.0 * torch.atan2(v, u) / math.pi),  # 6 bright sectors
    "dots": lambda u, v, g: torch.exp(-(_lattice_dist(u) ** 2 + _lattice_dist(v) ** 2) / (2 * 0.16**2)),
    "blobs": _blobs,
    "waves": lambda u, v, g: _square_wave(v + 0.3 * torch.sin(math.pi * u)),
    "grid": lambda u, v, g: torch.exp(-((_lattice_dist(u) / 0.12) ** 2)).maximum(
        torch.exp(-((_lattice_dist(v) / 0.12) ** 2))
    ),
}


def _split_seed(seed: int, split: str) -> int:
    """A 63-bit generator seed from (seed, split), stable across runs and machines (unlike hash())."""
    digest = hashlib.sha256(f"contrastive_lab.synthetic:{seed}:{split}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)


def _uniform(n: int, low: float, high: float, gen: torch.Generator) -> torch.Tensor:
    """``n`` draws from U(low, high), shaped ``n x 1 x 1`` to broadcast over an image."""
    return low + (high - low) * torch.rand(n, 1, 1, generator=gen)


def _pattern_coords(n: int, size: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-image coordinates in periods: random centre, +-10 deg rotation, 3-5.3 periods per image width."""
    axis = torch.linspace(-1, 1, size)
    y, x = axis.view(1, size, 1), axis.view(1, 1, size)
    x, y = x - _uniform(n, -0.5, 0.5, gen), y - _uniform(n, -0.5, 0.5, gen)
    theta, periods = _uniform(n, -0.18, 0.18, gen), 4.0 * torch.exp(_uniform(n, -0.29, 0.29, gen))
    scale = periods / 2.0  # the image spans 2 units
    u = (torch.cos(theta) * x + torch.sin(theta) * y) * scale
    v = (-torch.sin(theta) * x + torch.cos(theta) * y) * scale
    return u, v


def _colorize(pattern: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Blend a dark and a light random colour by the pattern (random polarity), add noise, to uint8."""
    n = pattern.shape[0]
    dark = (_uniform(n, 0.05, 0.4, gen) + 0.3 * (torch.rand(n, 3, 1, generator=gen) - 0.5)).unsqueeze(-1)
    light = (_uniform(n, 0.6, 0.95, gen) + 0.3 * (torch.rand(n, 3, 1, generator=gen) - 0.5)).unsqueeze(-1)
    flip = torch.rand(n, 1, 1, 1, generator=gen) < 0.5
    fg, bg = torch.where(flip, dark, light), torch.where(flip, light, dark)
    noise = torch.randn(n, 3, *pattern.shape[1:], generator=gen).mul_(
        _uniform(n, 0.01, 0.06, gen).unsqueeze(1)
    )
    image = noise.addcmul_(pattern.unsqueeze(1), fg - bg).add_(bg)  # in place: bg + (fg - bg) * p + noise
    return image.clamp_(0, 1).mul_(255).round_().to(torch.uint8)


def make_synthetic(
    n: int = 2000, image_size: int = 32, num_classes: int = 10, seed: int = 0, split: str = "train"
) -> ImageTensorDataset:
    """Procedural texture dataset: class = texture family, everything else random per image.

    Families (in class order): horizontal / vertical stripes, checkerboard, diamonds (45 deg checker),
    concentric rings, spokes, dot lattice, aperiodic blobs, wavy stripes, grid lines. Each image draws
    its own centre, +-10 deg rotation, scale, two colours (dark and light, random polarity) and
    Gaussian noise, so texture and not colour carries the class, and the class survives the SimCLR
    augmentations (crop, flip, colour jitter, grayscale; Chen et al. 2020, Sec. 3 and App. A).
    Deterministic given ``(seed, split)``; splits are independent draws of the same distribution.
    Labels are balanced (class counts differ by at most one).
    """
    _check_split("synthetic", split, SYNTHETIC_SPLITS)
    for arg, value, low in (("n", n, 1), ("image_size", image_size, 8), ("num_classes", num_classes, 2)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ValueError(f"{arg} must be an int >= {low}, got {value!r}")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"seed must be an int, got {seed!r}")
    if num_classes > len(SYNTHETIC_CLASSES):
        raise ValueError(
            f"num_classes must be <= {len(SYNTHETIC_CLASSES)} (texture families), got {num_classes}"
        )
    gen = torch.Generator().manual_seed(_split_seed(seed, split))
    labels = (torch.arange(n) % num_classes)[torch.randperm(n, generator=gen)]
    pattern = torch.empty(n, image_size, image_size)
    for c, family in enumerate(SYNTHETIC_CLASSES[:num_classes]):
        idx = (labels == c).nonzero().squeeze(1)
        u, v = _pattern_coords(len(idx), image_size, gen)
        pattern[idx] = _PATTERNS[family](u, v, gen)
    images = _colorize(pattern, gen)
    return ImageTensorDataset(images, labels, list(SYNTHETIC_CLASSES[:num_classes]), "synthetic", split)

