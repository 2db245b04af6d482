"""Features of a frozen encoder: h = f(x) for a set of images, and z = g(h) through a head.

Every protocol (kNN, linear probe, retrieval, novelty detection; chapters 02-05 and 10) works on
precomputed features: :func:`extract_features` runs the encoder once, in eval mode and without
gradients, and returns float32 CPU features. :func:`eval_transform` is the evaluation
preprocessing (uint8 -> float at the evaluation size, normalised like the training views).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..heads import IdentityHead
from ..runtime import autocast_dtype
from ._checks import (
    Transform,
    _as_features,
    _as_images,
    _check_positive_int,
    _default_transform,
    _encoder_device,
)


def eval_transform(mean: Sequence[float], std: Sequence[float], size: int,
                   dtype: torch.dtype = torch.float32) -> Transform:
    """uint8 images -> ``dtype``, resized to ``size`` (antialiased bilinear) when they are another size,
    normalised with the training views' ``mean`` and ``std``.

    Random-resized-crop training magnifies objects (a crop of area fraction ``a`` is blown up by
    ``1/sqrt(a)``), so evaluating at a *larger* size than the views sees objects at the scale
    training saw them (Touvron et al. 2019, "FixRes", Sec. 3); the config's ``eval_size`` allows that.
    """
    mean_t = torch.tensor(mean).view(1, 3, 1, 1)
    std_t = torch.tensor(std).view(1, 3, 1, 1)

    def transform(x: Tensor) -> Tensor:
        x = x.float() / 255.0 if x.dtype == torch.uint8 else x
        if x.shape[-1] != size or x.shape[-2] != size:
            x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True)
        return ((x - mean_t.to(x.device)) / std_t.to(x.device)).to(dtype)

    return transform


@torch.no_grad()
def extract_features(
    encoder: nn.Module,
    images_or_dataset,
    batch_size: int = 256,
    device: torch.device | str | None = None,
    transform: Transform | None = None,
    normalize: bool = False,
    autocast: bool = True,
) -> Tensor:
    """Run a frozen encoder over all images; return float32 features ``(N, D)`` on the CPU.

    ``images_or_dataset``: a uint8 or float ``(N, C, H, W)`` tensor, or an object with ``.images``.
    ``transform`` is applied to each batch after it is moved to ``device`` (e.g. uint8 -> normalised
    float); by default uint8 becomes ``x / 255`` and float input is used as is. ``device`` defaults to
    where the encoder's parameters are; the encoder is never moved. ``normalize=True`` L2-normalises each
    row. ``autocast=True`` uses the mixed-precision dtype :func:`contrastive_lab.runtime.autocast_dtype`
    picks (bf16 only where the hardware has it). The encoder runs in eval mode (BatchNorm uses its running
    statistics) and every submodule's train/eval flag is restored afterwards.
    """
    if not isinstance(encoder, nn.Module):
        raise TypeError(f"encoder must be an nn.Module, got {type(encoder).__name__}.")
    images = _as_images(images_or_dataset)
    _check_positive_int(batch_size, "batch_size")
    device = _encoder_device(encoder, device)
    transform = transform or _default_transform
    dtype = autocast_dtype(device) if autocast else None
    modes = [(m, m.training) for m in encoder.modules()]
    encoder.eval()
    try:
        chunks = []
        for batch in images.split(batch_size):
            x = transform(batch.to(device, non_blocking=True))
            with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
                out = encoder(x)
            if not isinstance(out, Tensor) or out.ndim != 2 or len(out) != len(batch):
                shape = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
                raise ValueError(
                    f"the encoder must return (batch, D) features; got {shape} for {len(batch)} images."
                )
            chunks.append(out.float().cpu())
    finally:
        for m, mode in modes:
            m.train(mode)
    features = torch.cat(chunks)
    return F.normalize(features, dim=1) if normalize else features


def project_features(head: nn.Module, features: Tensor, batch_size: int = 1024) -> Tensor:
    """z = g(h): run a projection head over precomputed encoder features h; float32 ``(N, D_z)``.

    kNN on z is what the monitors the textbook follows evaluate: in Wu et al. 2018 (Sec. 3.1, 3.4)
    and MoCo's CIFAR-10 demo the "network output" is the 128-d output of a final linear layer,
    which is our linear head g. SimCLR (Sec. 4.2) finds h better than z for *linear* evaluation;
    for the cosine kNN, z lives in the space the contrastive loss shaped. Runs on the head's device
    in eval mode (its BatchNorm layers, if any, use their running statistics); every submodule's
    train/eval flag is restored afterwards.
    """
    if not isinstance(head, nn.Module):
        raise TypeError(f"head must be an nn.Module, got {type(head).__name__}.")
    features = _as_features(features, "features")
    _check_positive_int(batch_size, "batch_size")
    params = list(head.parameters())
    device = params[0].device if params else features.device
    dtype = params[0].dtype if params else torch.float32  # float64 heads (precision=fp64) get float64 input
    modes = [(m, m.training) for m in head.modules()]
    head.eval()
    try:
        with torch.no_grad():
            chunks = [head(h.to(device, dtype)).float().cpu() for h in features.split(batch_size)]
    finally:
        for m, mode in modes:
            m.train(mode)
    return torch.cat(chunks)


def has_projection(head: nn.Module | None) -> bool:
    """True when a method's head g maps h to a different space z (not absent, not the identity)."""
    return head is not None and not isinstance(head, (nn.Identity, IdentityHead))
