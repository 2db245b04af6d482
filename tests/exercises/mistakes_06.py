"""Plausible wrong answers to chapter 06's checked exercises, with the problem the checker must name."""

import math


def partial_batch_counted(batch_size, epochs, num_images):
    return epochs * math.ceil(num_images / batch_size), 0.075 * math.sqrt(batch_size)


def linear_rule(batch_size, epochs, num_images):
    return epochs * (num_images // batch_size), 0.075 * batch_size / 256


def sqrt_over_256(batch_size, epochs, num_images):
    return epochs * (num_images // batch_size), 0.075 * math.sqrt(batch_size / 256)


def steps_per_epoch_only(batch_size, epochs, num_images):  # forgot the epochs
    return num_images // batch_size, 0.075 * math.sqrt(batch_size)


_E = math.exp(-1 / 0.5)
MISTAKES = {
    "06.7": [
        (math.log(510 * _E), None),  # the positive left out of the denominator
        (math.log(1 + 511 * _E), None),  # the anchor counted as a negative (2N - 1)
        (math.log(2 * 256 - 1), None),  # the loss of a collapsed encoder, not a perfect one
        (0.0, None),  # "a perfect encoder has zero loss"
    ],
    "06.8": [
        (partial_batch_counted, "partial batch of each epoch is counted"),
        (linear_rule, "linear rule"),
        (sqrt_over_256, "written with a /256"),
        (steps_per_epoch_only, None),
    ],
}
