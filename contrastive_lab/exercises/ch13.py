"""Chapter 13's checked exercises: the learning rate of a multi-GPU run, scaled by the *global* batch
(13.7), and the GPU-hours of a run from its step time, as ``scripts/estimate_cost.py`` computes them (13.8)."""

from __future__ import annotations

import importlib.util
import math
from functools import cache
from pathlib import Path

from ..optim import scale_lr
from ..presets import get_preset
from .core import Case, Diagnosis, Exercise, register

# --------------------------------------------------------------------------- 13.7


def global_batch_lr(base_lr: float, per_gpu_batch: int, gpus: int, rule: str) -> float:
    """The engine's lr for ``gpus`` processes of ``per_gpu_batch`` each: scaled by the global batch."""
    return scale_lr(base_lr, per_gpu_batch * gpus, rule)


def _lr_cases() -> list[Case]:
    return [
        Case("SimCLR ImageNet: 0.3, 32 GPUs x 128, linear", (0.3, 128, 32, "linear")),
        Case("the two-process CPU run: 0.3, 2 x 64, linear", (0.3, 64, 2, "linear")),
        Case("small batch, sqrt rule: 0.075, 4 x 64", (0.075, 64, 4, "sqrt")),
        Case("one process (G = 1), sqrt rule", (0.075, 256, 1, "sqrt")),
        Case("a global batch below 256, linear: 0.5, 2 x 16", (0.5, 16, 2, "linear")),
    ]


def _per_gpu(base_lr, per_gpu_batch, gpus, rule):
    """Scaled by the per-GPU batch, not the global batch."""
    return scale_lr(base_lr, per_gpu_batch, rule)


def _sqrt_over_256(base_lr, per_gpu_batch, gpus, rule):
    """The sqrt rule written as base_lr x sqrt(B / 256) (SimCLR's sqrt rule has no /256)."""
    b = per_gpu_batch * gpus
    return base_lr * (b / 256 if rule == "linear" else math.sqrt(b / 256))


def _times_gpus_after(base_lr, per_gpu_batch, gpus, rule):
    """The per-GPU lr multiplied by the GPU count (right only for the linear rule)."""
    return scale_lr(base_lr, per_gpu_batch, rule) * gpus


register(Exercise(
    id="13.7",
    title="the learning rate of a G-GPU run",
    cases=_lr_cases,
    reference=global_batch_lr,
    hint="The rule sees the global batch B = per-GPU batch x G: linear lr = base_lr x B / 256 (SimCLR Sec. 2.3), "
         "sqrt lr = base_lr x sqrt(B) (App. B.1, no /256).",
    diagnoses=(
        Diagnosis("the lr is scaled by the per-GPU batch, not the global batch", _per_gpu),
        Diagnosis("the sqrt rule is written with a /256 (SimCLR's is base_lr x sqrt(B))", _sqrt_over_256),
        Diagnosis("the per-GPU lr is multiplied by G (right only for the linear rule)", _times_gpus_after),
    ),
))

# --------------------------------------------------------------------------- 13.8


@cache
def _estimate_cost():
    """``scripts/estimate_cost.py`` (a script, not a module of the package)."""
    path = Path(__file__).resolve().parents[2] / "scripts" / "estimate_cost.py"
    spec = importlib.util.spec_from_file_location("estimate_cost", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def reference_gpu_hours(epochs: int, num_images: int, batch_size: int, gpus: int, step_time_s: float) -> float:
    """``estimate_cost.estimate(...)["gpu_hours"]`` for a SimCLR run of this shape."""
    cfg = get_preset("simclr-imagenet-r50").replace(epochs=epochs, batch_size=batch_size, max_steps=0)
    return _estimate_cost().estimate(cfg, gpus, step_time_s, num_images)["gpu_hours"]


def _cost_cases() -> list[Case]:
    return [
        Case("SimCLR ImageNet: 100 epochs, B=4096, 32 GPUs, 0.45 s/step", (100, 1_281_167, 4096, 32, 0.45)),
        Case("1000 epochs on 8 GPUs, 1.6 s/step", (1000, 1_281_167, 4096, 8, 1.6)),
        Case("one GPU, CIFAR-10, B=512, 0.2 s/step", (800, 50_000, 512, 1, 0.2)),
        Case("a batch that divides the images exactly (5120 / 512)", (10, 5120, 512, 2, 0.3)),
        Case("cifar10-mini, 8 epochs of B=64 on one GPU", (8, 5085, 64, 1, 0.05)),
    ]


def _wall_hours(epochs, num_images, batch_size, gpus, step_time_s):
    """Wall-clock hours, not GPU-hours (not multiplied by the GPU count)."""
    return reference_gpu_hours(epochs, num_images, batch_size, gpus, step_time_s) / gpus


def _partial_batch(epochs, num_images, batch_size, gpus, step_time_s):
    """The last, partial batch of every epoch is counted (the engine drops it)."""
    return epochs * math.ceil(num_images / batch_size) * step_time_s * gpus / 3600


def _fractional_steps(epochs, num_images, batch_size, gpus, step_time_s):
    """Steps as epochs x N / B without rounding down."""
    return epochs * num_images / batch_size * step_time_s * gpus / 3600


register(Exercise(
    id="13.8",
    title="the GPU-hours of a run from its step time",
    cases=_cost_cases,
    reference=reference_gpu_hours,
    hint="steps = epochs x floor(N / B) (the engine drops the last partial batch); wall = steps x t_step "
         "(t_step: seconds per step on all G GPUs); GPU-hours = wall in hours x G.",
    diagnoses=(
        Diagnosis("these are wall-clock hours, not GPU-hours (multiply by the GPU count)", _wall_hours),
        Diagnosis("the last, partial batch of each epoch is counted (the engine drops it)", _partial_batch),
        Diagnosis("the steps per epoch are not rounded down (N / B, not floor(N / B))", _fractional_steps),
    ),
    rtol=1e-6,
    atol=1e-9,
))
