"""Plausible wrong answers to chapter 07's checked exercises, with the problem the checker must name."""

import torch.nn.functional as F


def no_wrap(queue, ptr, keys):
    out, k = queue.clone(), len(queue)
    n = min(len(keys), k - ptr)
    out[ptr:ptr + n] = keys[:n]
    return out, (ptr + len(keys)) % k


def pointer_stays(queue, ptr, keys):
    out, k = queue.clone(), len(queue)
    for i, key in enumerate(keys[-k:]):
        out[(ptr + max(0, len(keys) - k) + i) % k] = key
    return out, ptr


def newest_first(queue, ptr, keys):
    out, k = queue.clone(), len(queue)
    keys = keys.flip(0)
    for i, key in enumerate(keys[-k:]):
        out[(ptr + max(0, len(keys) - k) + i) % k] = key
    return out, (ptr + len(keys)) % k


def no_modulo(queue, ptr, keys):  # a pointer that runs past K (the next write would fail)
    out, k = queue.clone(), len(queue)
    for i, key in enumerate(keys[-k:]):
        out[(ptr + max(0, len(keys) - k) + i) % k] = key
    return out, ptr + len(keys)


def bank_not_renormalised(bank, index, features, m):
    out = bank.clone()
    out[index] = m * bank[index] + (1 - m) * F.normalize(features, dim=1)
    return out


def bank_raw_features(bank, index, features, m):
    out = bank.clone()
    out[index] = F.normalize(m * bank[index] + (1 - m) * features, dim=1)
    return out


def bank_swapped(bank, index, features, m):
    out = bank.clone()
    out[index] = F.normalize((1 - m) * bank[index] + m * F.normalize(features, dim=1), dim=1)
    return out


def bank_plain_replacement(bank, index, features, m):  # ignores m
    out = bank.clone()
    out[index] = F.normalize(features, dim=1)
    return out


MISTAKES = {
    "07.6": [(2048, None), (4097, None), (1024, None)],  # >= instead of >; B^2 instead of (2B)^2; B x K
    "07.8": [
        (no_wrap, "does not wrap around"),
        (pointer_stays, "pointer is not advanced"),
        (newest_first, "reverse order"),
        (no_modulo, None),
    ],
    "07.9": [
        (bank_not_renormalised, "not L2-normalised again"),
        (bank_raw_features, "mixed in before they are L2-normalised"),
        (bank_swapped, "momentum is swapped"),
        (bank_plain_replacement, None),
    ],
}
