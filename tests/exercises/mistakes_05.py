"""Plausible wrong answers to chapter 05's checked exercises, with the problem the checker must name."""


import torch
import torch.nn.functional as F


def _loss(z, temperature, targets, mask=True, normalise=True):
    z = F.normalize(z.float(), dim=1) if normalise else z.float()
    logits = z @ z.T / temperature
    if mask:
        logits.fill_diagonal_(float("-inf"))
    return F.cross_entropy(logits, targets)


def concatenated_targets(z, t):
    n2 = len(z)
    return _loss(z, t, (torch.arange(n2) + n2 // 2) % n2)


def diagonal_kept(z, t):
    return _loss(z, t, torch.arange(len(z)) ^ 1, mask=False)


def next_row(z, t):
    return _loss(z, t, (torch.arange(len(z)) + 1) % len(z))


def not_normalised(z, t):
    return _loss(z, t, torch.arange(len(z)) ^ 1, normalise=False)


def _lars(w, grad, buf, lr, momentum, weight_decay, trust_coefficient=1e-3, eps=1e-8, *, after=False, decay=True,
          tf=False, guard=True, inverted=False):
    g = grad + weight_decay * w if decay and not after else grad
    ratio = (g.norm() + eps) / w.norm().clamp(min=1e-30) * trust_coefficient if inverted else \
        trust_coefficient * w.norm() / (g.norm() + eps)
    if guard and (w.norm() == 0 or g.norm() == 0):
        ratio = torch.tensor(1.0, dtype=w.dtype)
    step = ratio * g + (weight_decay * w if after else 0)
    new_buf = momentum * buf + (lr * step if tf else step)
    return (w - new_buf if tf else w - lr * new_buf), new_buf


def decay_after(*a, **k):
    return _lars(*a, **k, after=True)


def no_decay(*a, **k):
    return _lars(*a, **k, decay=False)


def tf_momentum(*a, **k):
    return _lars(*a, **k, tf=True)


def no_guard(*a, **k):
    return _lars(*a, **k, guard=False)


def inverted_ratio(*a, **k):
    return _lars(*a, **k, inverted=True)


MISTAKES = {
    "05.1": [
        (concatenated_targets, "the targets are the concatenated layout's"),
        (diagonal_kept, "the diagonal (each anchor against itself) is not excluded"),
        (next_row, "every row's target is the next row"),
        (not_normalised, None),
    ],
    "05.6": [
        (decay_after, "the weight decay is added after the trust ratio"),
        (no_decay, "the weight decay is missing"),
        (tf_momentum, "lr is inside the momentum buffer"),
        (no_guard, "the trust ratio is not 1 when"),
        (inverted_ratio, None),
    ],
    "05.7": [(64.0, None), (256.0, None), ((0.3 / (0.075 * 256)) ** 2, None)],  # no square; the base batch; the ratio upside down
}
