"""Chapter 06's checked exercises: how the temperature caps the loss of a perfect encoder (06.7), and
the optimiser steps and learning rate of the batch-size sweep (06.8)."""

from __future__ import annotations

import math
from functools import cache

import torch

from ..losses import nt_xent
from ..optim import scale_lr
from .core import Case, Diagnosis, Exercise, ValueExercise, register

# --------------------------------------------------------------------------- 06.7

PERFECT_BATCH, PERFECT_TAU = 256, 0.5


@cache
def perfect_encoder_loss(batch: int = PERFECT_BATCH, temperature: float = PERFECT_TAU) -> float:
    """NT-Xent of an encoder whose two views agree exactly (cosine 1) and whose 2N - 2 negatives are
    orthogonal (cosine 0): one-hot embeddings, computed by the library's loss."""
    z = torch.eye(batch, dtype=torch.float64)
    return float(nt_xent(z, z.clone(), temperature))


register(ValueExercise(
    id="06.7",
    title=f"the NT-Xent loss of a perfect encoder at tau={PERFECT_TAU}, batch {PERFECT_BATCH}",
    band=lambda: (perfect_encoder_loss() - 1e-4, perfect_encoder_loss() + 1e-4),
    hint="Write the softmax of one anchor: its positive has cosine 1, its 2N - 2 negatives cosine 0, all over "
         "tau; the anchor itself is not a candidate. The loss is -log of the positive's probability.",
))

# --------------------------------------------------------------------------- 06.8


def sweep_schedule(batch_size: int, epochs: int, num_images: int) -> tuple[int, float]:
    """(optimiser steps, lr) of a batch-sweep run: epochs x floor(N / B) steps (the engine drops the last
    partial batch) at lr = 0.075 sqrt(B) (SimCLR App. B.1, ``scale_lr(0.075, B, "sqrt")``)."""
    return epochs * (num_images // batch_size), scale_lr(0.075, batch_size, "sqrt")


def _sweep_cases() -> list[Case]:
    return [
        Case("B=64, 8 epochs of cifar10-mini", (64, 8, 5085)),
        Case("B=512, 8 epochs of cifar10-mini", (512, 8, 5085)),
        Case("B=128, 16 epochs of cifar10-mini", (128, 16, 5085)),
        Case("one batch holds the whole dataset", (5085, 3, 5085)),
        Case("SimCLR ImageNet, B=4096, 100 epochs", (4096, 100, 1_281_167)),
    ]


def _ceil_steps(batch_size, epochs, num_images):
    """The last, partial batch of each epoch is counted (the engine drops it)."""
    return epochs * math.ceil(num_images / batch_size), scale_lr(0.075, batch_size, "sqrt")


def _linear_rule(batch_size, epochs, num_images):
    """The linear rule 0.075 x B / 256 instead of the square-root rule."""
    return epochs * (num_images // batch_size), 0.075 * batch_size / 256


def _sqrt_over_256(batch_size, epochs, num_images):
    """0.075 x sqrt(B / 256): the square-root rule has no /256."""
    return epochs * (num_images // batch_size), 0.075 * math.sqrt(batch_size / 256)


register(Exercise(
    id="06.8",
    title="steps and learning rate of a batch-sweep run",
    cases=_sweep_cases,
    reference=sweep_schedule,
    hint="An epoch is floor(N / B) steps (the last partial batch is dropped); the sweep's lr is "
         "0.075 x sqrt(B) (SimCLR App. B.1). Return (steps, lr).",
    diagnoses=(
        Diagnosis("the last, partial batch of each epoch is counted (the engine drops it)", _ceil_steps),
        Diagnosis("the linear rule (B / 256) instead of the square-root rule", _linear_rule),
        Diagnosis("the square-root rule is written with a /256 (it is 0.075 x sqrt(B))", _sqrt_over_256),
    ),
))
