"""What every loss in this package shares: argument checks and the numerics of a stable loss.

Not a loss itself. Each loss file imports these helpers so that a bad argument gets the same
message whichever loss it is passed to, and every loss computes in the same precision:

* validation: :func:`_check_positive` (temperatures, exponents, scales), :func:`_check_temperature`,
  :func:`_check_embeddings` (a finite float tensor of the right rank), :func:`_check_pair` (two
  embeddings of one shape), :func:`_check_batch` (at least 2 samples: one pair has no negatives);
* numerics: :func:`_compute_dtype` (float32, or float64 if an input is float64),
  :func:`_no_autocast`, :func:`_l2_normalize` (overflow-safe), and :func:`_cosine_reference`,
  SimCLR's sim(u, v) for the loop references.

Chapter 04 teaches why the normalisation and the log-sum-exp matter (the "naive exp/divide"
cell overflows at small temperatures); see the conventions in :mod:`contrastive_lab.losses`.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

# --------------------------------------------------------------------------- validation


def _check_positive(value: float, name: str, hint: str = "") -> float:
    """A finite Python number > 0 (temperatures, exponents, scales), else TypeError/ValueError."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a float, got {type(value).__name__}")
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a finite number > 0, got {value}{hint}")
    return float(value)


def _check_temperature(temperature: float) -> float:
    """A finite temperature tau > 0 (the softmax's 1/scale), else TypeError/ValueError."""
    return _check_positive(temperature, "temperature", "; typical values are 0.05-0.5")


def _check_embeddings(x: Tensor, name: str, ndims: tuple[int, ...] = (2,)) -> None:
    """Tensor of floats with one of the allowed numbers of dims and only finite values."""
    if not isinstance(x, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.ndim not in ndims:
        dims = " or ".join(f"{d}-D" for d in ndims)
        raise ValueError(f"{name} must be a {dims} tensor, got shape {tuple(x.shape)}")
    if not x.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got dtype {x.dtype}")
    if not bool(torch.isfinite(x).all()):
        raise ValueError(
            f"{name} contains non-finite values (NaN or inf); check the encoder output "
            "(diverged training, fp16 overflow) before computing the loss"
        )


def _check_pair(a: Tensor, b: Tensor, name_a: str, name_b: str) -> None:
    """Two finite embeddings of identical shape (N, D)."""
    _check_embeddings(a, name_a)
    _check_embeddings(b, name_b)
    if a.shape != b.shape:
        raise ValueError(
            f"{name_a} and {name_b} must have the same shape (N, D), "
            f"got {tuple(a.shape)} and {tuple(b.shape)}"
        )


def _check_batch(n: int, loss: str, rows: str) -> None:
    """A batch of at least 2 samples; ``rows`` says where the n samples were counted."""
    if n < 2:
        raise ValueError(
            f"batch size {n} is too small for {loss} ({rows}): contrastive losses need at least "
            "2 samples per batch; pass a larger batch"
        )


# --------------------------------------------------------------------------- numerics


def _compute_dtype(*xs: Tensor) -> torch.dtype:
    """float64 if any input is float64, else float32 (fp16/bf16 are upcast)."""
    return torch.float64 if any(x.dtype == torch.float64 for x in xs) else torch.float32


def _no_autocast(x: Tensor) -> torch.autocast:
    """Context that turns autocast off, so matmuls inside really run in the compute dtype."""
    return torch.autocast(device_type=x.device.type, enabled=False)


def _l2_normalize(x: Tensor, dtype: torch.dtype) -> Tensor:
    """x / ||x||_2 row-wise in ``dtype``, safe for huge norms.

    Dividing by the (detached) largest |entry| first keeps ||x||^2 from overflowing; it
    does not change the result or its gradient, because normalisation is scale-invariant.
    """
    x = x.to(dtype)
    scale = x.detach().abs().amax(dim=-1, keepdim=True).clamp_min(torch.finfo(dtype).tiny)
    return F.normalize(x / scale, dim=-1)


def _cosine_reference(u: Tensor, v: Tensor) -> Tensor:
    """sim(u, v) = u^T v / (||u|| ||v||), SimCLR's notation."""
    return torch.dot(u, v) / (u.norm() * v.norm())
