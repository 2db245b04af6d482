"""Plausible wrong answers to chapter 13's checked exercises, with the problem the checker must name."""

import math


def per_gpu_batch_lr(base_lr, per_gpu_batch, gpus, rule):
    return base_lr * per_gpu_batch / 256 if rule == "linear" else base_lr * math.sqrt(per_gpu_batch)


def sqrt_over_256(base_lr, per_gpu_batch, gpus, rule):
    b = per_gpu_batch * gpus
    return base_lr * b / 256 if rule == "linear" else base_lr * math.sqrt(b / 256)


def linear_always(base_lr, per_gpu_batch, gpus, rule):  # ignores the rule
    return base_lr * per_gpu_batch * gpus / 256


def wall_hours(epochs, num_images, batch_size, gpus, step_time_s):
    return epochs * (num_images // batch_size) * step_time_s / 3600


def partial_batch_counted(epochs, num_images, batch_size, gpus, step_time_s):
    return epochs * math.ceil(num_images / batch_size) * step_time_s * gpus / 3600


def fractional_steps(epochs, num_images, batch_size, gpus, step_time_s):
    return epochs * num_images / batch_size * step_time_s * gpus / 3600


def per_gpu_step_count(epochs, num_images, batch_size, gpus, step_time_s):  # steps at the per-GPU batch
    return epochs * (num_images // (batch_size // gpus)) * step_time_s * gpus / 3600


MISTAKES = {
    "13.7": [
        (per_gpu_batch_lr, "per-GPU batch, not the global batch"),
        (sqrt_over_256, "sqrt rule is written with a /256"),
        (linear_always, None),
    ],
    "13.8": [
        (wall_hours, "wall-clock hours, not GPU-hours"),
        (partial_batch_counted, "partial batch of each epoch is counted"),
        (fractional_steps, "not rounded down"),
        (per_gpu_step_count, None),
    ],
}
