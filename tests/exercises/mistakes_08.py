"""Plausible wrong answers to chapter 08's checked exercises, with the problem the checker must name."""

import math


def swapped(key_params, query_params, m):
    return [m * q + (1 - m) * k for k, q in zip(key_params, query_params)]


def copies_query(key_params, query_params, m):
    return [q.clone() for q in query_params]


def no_one_minus(key_params, query_params, m):
    return [m * k + q for k, q in zip(key_params, query_params)]


def plain_average(key_params, query_params, m):  # ignores m
    return [(k + q) / 2 for k, q in zip(key_params, query_params)]


def decreasing(step, total_steps, base):
    t = min(step, total_steps) / total_steps
    return base + (1 - base) * (math.cos(math.pi * t) + 1) / 2


def no_clamp(step, total_steps, base):
    return 1 - (1 - base) * (math.cos(math.pi * step / total_steps) + 1) / 2


def not_halved(step, total_steps, base):
    t = min(step, total_steps) / total_steps
    return 1 - (1 - base) * (math.cos(math.pi * t) + 1)


def linear_ramp(step, total_steps, base):  # a linear schedule, not a cosine
    return base + (1 - base) * min(step, total_steps) / total_steps


MISTAKES = {
    "08.7": [
        (swapped, "m and 1 - m are swapped"),
        (copies_query, "plain copy of the query encoder"),
        (no_one_minus, "not multiplied by (1 - m)"),
        (plain_average, None),
    ],
    "08.8": [
        (decreasing, "runs the wrong way"),
        (no_clamp, "not held at m = 1"),
        (not_halved, "not divided by 2"),
        (linear_ramp, None),
    ],
}
