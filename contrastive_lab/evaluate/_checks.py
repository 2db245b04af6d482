"""Input checks shared by every evaluation protocol: images, features, labels, counts, devices.

Bad input gets a ValueError/TypeError that names the argument and what was expected.
"""

from __future__ import annotations

import numbers
from collections.abc import Callable

import torch
from torch import Tensor, nn

Transform = Callable[[Tensor], Tensor]


def _as_images(images_or_dataset) -> Tensor:
    images = getattr(images_or_dataset, "images", images_or_dataset)
    if not isinstance(images, Tensor):
        raise TypeError(
            "expected a (N, C, H, W) image tensor or a dataset with an `.images` tensor, "
            f"got {type(images_or_dataset).__name__}."
        )
    if images.ndim != 4 or len(images) == 0:
        raise ValueError(f"images must be a non-empty (N, C, H, W) tensor, got shape {tuple(images.shape)}.")
    if images.dtype != torch.uint8 and not images.is_floating_point():
        raise TypeError(f"images must be uint8 or floating point, got {images.dtype}.")
    return images


def _as_features(x, name: str) -> Tensor:
    x = torch.as_tensor(x)
    if x.ndim != 2 or len(x) == 0 or not x.is_floating_point():
        raise ValueError(
            f"{name} must be a non-empty float (N, D) tensor, got {x.dtype} of shape {tuple(x.shape)}."
        )
    if not torch.isfinite(x).all():
        raise ValueError(f"{name} contains NaN or inf; the encoder probably diverged.")
    return x.float()


def _as_labels(y, n: int, name: str, num_classes: int | None = None) -> Tensor:
    y = torch.as_tensor(y)
    if y.ndim != 1 or y.dtype.is_floating_point or y.dtype == torch.bool:
        raise ValueError(f"{name} must be a 1-D integer tensor, got {y.dtype} of shape {tuple(y.shape)}.")
    if len(y) != n:
        raise ValueError(f"{name} has {len(y)} entries but there are {n} examples (rows); they must match.")
    y = y.long().cpu()
    if len(y) and y.min() < 0:
        raise ValueError(f"{name} contains negative class {int(y.min())}; labels must be 0..num_classes-1.")
    if num_classes is not None and len(y) and y.max() >= num_classes:
        raise ValueError(f"{name} contains class {int(y.max())} but num_classes={num_classes}.")
    return y


def _resolve_num_classes(num_classes: int | None, *labels: Tensor) -> int:
    if num_classes is None:
        return int(max(int(y.max()) for y in labels)) + 1
    if not _is_int(num_classes) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive integer or None, got {num_classes!r}.")
    return num_classes


def _is_int(value: object) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _check_positive_int(value, name: str) -> int:
    if not _is_int(value) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}.")
    return value


def _encoder_device(encoder: nn.Module, device: torch.device | str | None) -> torch.device:
    params = list(encoder.parameters()) + list(encoder.buffers())
    own = params[0].device if params else torch.device("cpu")
    if device is None:
        return own
    device = torch.device(device)
    if params and (own.type != device.type or (device.index is not None and own != device)):
        raise ValueError(
            f"the encoder lives on {own} but device={device}; move it first with encoder.to(device)."
        )
    return device


def _default_transform(x: Tensor) -> Tensor:
    return x.float() / 255.0 if x.dtype == torch.uint8 else x
