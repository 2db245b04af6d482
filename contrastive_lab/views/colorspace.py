"""Colour spaces as views: sRGB -> CIE L*a*b*, the image gradient, and the split of one image into
channel views (Contrastive Multiview Coding, Tian, Krishnan & Isola 2019). Chapter 12 teaches it.

CMC Sec. 3.3 / 4.2 treats the *channels* of one image as its views: the lightness L and the colour
ab of the Lab colour space see the same scene through different "sensors", and what they share (the
object, its shape) is what a contrastive loss between them keeps. This module holds

* :func:`rgb_to_lab`, the CIE 1976 L*a*b* transform of sRGB under the D65 white point (the same
  constants as skimage's ``rgb2lab``, which CMC's ``RGB2Lab`` calls), and its per-pixel loop twin
  :func:`rgb_to_lab_reference`;
* :func:`sobel_magnitude`, the gradient magnitude of a one-channel image: a third, "depth-like"
  view that CMC's NYU experiments would fill with depth or surface normals (Sec. 4.3);
* :data:`CHANNEL_VIEWS` and :func:`split_channels`, the named views (``L``, ``ab``, ``grad``) of a
  batch of RGB images, each normalised like CMC's code.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

# sRGB (linear) -> XYZ, D65 (IEC 61966-2-1; skimage.color.colorconv.xyz_from_rgb)
RGB_TO_XYZ = ((0.412453, 0.357580, 0.180423), (0.212671, 0.715160, 0.072169), (0.019334, 0.119193, 0.950227))
D65_WHITE = (0.95047, 1.0, 1.08883)  # X_n, Y_n, Z_n of the D65 illuminant, 2-degree observer
LAB_EPSILON = (6 / 29) ** 3  # CIE: below this, f(t) is the linear segment t / (3 (6/29)^2) + 4/29
# CMC's normalisation of L, a, b (HobbitLong/CMC train_CMC.py: mean and std = the midpoint and half
# the range of each channel over sRGB: L in [0, 100], a in [-86.183, 98.233], b in [-107.857, 94.478])
LAB_MEAN = (50.0, (-86.183 + 98.233) / 2, (-107.857 + 94.478) / 2)
LAB_STD = (50.0, (86.183 + 98.233) / 2, (107.857 + 94.478) / 2)
CHANNEL_VIEWS = {"L": 1, "ab": 2, "grad": 1}  # view name -> channels


def _srgb_to_linear(c: Tensor) -> Tensor:
    """The sRGB transfer function inverted: c/12.92 below 0.04045, ((c + 0.055)/1.055)^2.4 above."""
    return torch.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055).clamp_min(0) ** 2.4)


def _lab_f(t: Tensor) -> Tensor:
    """CIE's f(t) = t^(1/3) above (6/29)^3, else the linear segment that meets it smoothly."""
    return torch.where(t > LAB_EPSILON, t.clamp_min(LAB_EPSILON) ** (1 / 3), t / (3 * (6 / 29) ** 2) + 4 / 29)


def rgb_to_lab(rgb: Tensor) -> Tensor:
    """sRGB in [0, 1], (B, 3, H, W) -> CIE L*a*b* (B, 3, H, W) with L in [0, 100] (D65).

    ``XYZ = M linear(rgb)``, then with f as in :func:`_lab_f`::

        L = 116 f(Y/Y_n) - 16,   a = 500 (f(X/X_n) - f(Y/Y_n)),   b = 200 (f(Y/Y_n) - f(Z/Z_n))
    """
    if rgb.ndim != 4 or rgb.shape[1] != 3:
        raise ValueError(f"rgb_to_lab expects RGB images (B, 3, H, W), got {tuple(rgb.shape)}")
    linear = _srgb_to_linear(rgb.clamp(0, 1))
    matrix = torch.tensor(RGB_TO_XYZ, dtype=rgb.dtype, device=rgb.device)
    xyz = torch.einsum("ij,bjhw->bihw", matrix, linear)
    white = torch.tensor(D65_WHITE, dtype=rgb.dtype, device=rgb.device).view(1, 3, 1, 1)
    fx, fy, fz = _lab_f(xyz / white).unbind(1)
    return torch.stack([116 * fy - 16, 500 * (fx - fy), 200 * (fy - fz)], dim=1)


def rgb_to_lab_reference(rgb: Sequence[float]) -> tuple[float, float, float]:
    """One pixel (r, g, b) in [0, 1] -> (L, a, b), written out with Python floats (slow; tests)."""
    lin = [c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4 for c in rgb]
    xyz = [sum(RGB_TO_XYZ[i][j] * lin[j] for j in range(3)) / D65_WHITE[i] for i in range(3)]
    f = [t ** (1 / 3) if t > LAB_EPSILON else t / (3 * (6 / 29) ** 2) + 4 / 29 for t in xyz]
    return 116 * f[1] - 16, 500 * (f[0] - f[1]), 200 * (f[1] - f[2])


def sobel_magnitude(gray: Tensor) -> Tensor:
    """|grad| of (B, 1, H, W) images: sqrt(G_x^2 + G_y^2) with the 3x3 Sobel kernels (borders replicated)."""
    if gray.ndim != 4 or gray.shape[1] != 1:
        raise ValueError(f"sobel_magnitude expects one-channel images (B, 1, H, W), got {tuple(gray.shape)}")
    gx = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]], dtype=gray.dtype, device=gray.device)
    kernels = torch.stack([gx, gx.T]).unsqueeze(1)  # (2, 1, 3, 3): d/dx, d/dy
    grads = F.conv2d(F.pad(gray, (1, 1, 1, 1), mode="replicate"), kernels)
    return (grads.pow(2).sum(1, keepdim=True) + 1e-12).sqrt()


def check_channel_views(names: Sequence[str]) -> list[str]:
    """The view names, checked: at least two, each in :data:`CHANNEL_VIEWS`, none twice."""
    names = [n.strip() for n in names if n.strip()]
    unknown = sorted(set(names) - set(CHANNEL_VIEWS))
    if unknown or len(names) < 2 or len(set(names)) != len(names):
        raise ValueError(f"channel views must be two or more distinct names of {sorted(CHANNEL_VIEWS)}, "
                         f"got {names!r}" + (f" (unknown: {unknown})" if unknown else ""))
    return names


def split_channels(rgb: Tensor, names: Sequence[str]) -> list[Tensor]:
    """The named views of RGB images in [0, 1]: ``L`` (1 channel), ``ab`` (2), ``grad`` (1, the Sobel
    magnitude of normalised L divided by 4, the Sobel kernel's gain), L and ab normalised with CMC's
    Lab mean and std."""
    lab = rgb_to_lab(rgb)
    mean = torch.tensor(LAB_MEAN, dtype=rgb.dtype, device=rgb.device).view(1, 3, 1, 1)
    std = torch.tensor(LAB_STD, dtype=rgb.dtype, device=rgb.device).view(1, 3, 1, 1)
    lab = (lab - mean) / std
    views = {"L": lambda: lab[:, :1], "ab": lambda: lab[:, 1:],
             "grad": lambda: sobel_magnitude(lab[:, :1]) / 4}
    return [views[n]().contiguous() for n in check_channel_views(names)]
