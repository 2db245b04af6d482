"""Plausible wrong answers to chapter 01's checked exercises, with the problem the checker must name."""

import math

import torch


def _sampler(batch, height, width, scale, ratio, seed, uniform_ratio=False, swapped=False, no_plus_one=False,
             whole_fallback=False):
    g = torch.Generator().manual_seed(seed)
    u_area = torch.rand((batch, 10), generator=g, dtype=torch.float64)
    u_ratio = torch.rand((batch, 10), generator=g, dtype=torch.float64)
    u_corner = torch.rand((2, batch), generator=g, dtype=torch.float64)
    area = height * width * (scale[0] + (scale[1] - scale[0]) * u_area)
    if uniform_ratio:
        r = ratio[0] + (ratio[1] - ratio[0]) * u_ratio
    else:
        r = torch.exp(math.log(ratio[0]) + (math.log(ratio[1]) - math.log(ratio[0])) * u_ratio)
    w, h = torch.round(torch.sqrt(area * r)), torch.round(torch.sqrt(area / r))
    if swapped:
        w, h = h, w
    rows = []
    for i in range(batch):
        ok = [k for k in range(10) if 0 < w[i, k] <= width and 0 < h[i, k] <= height]
        if ok:
            bh, bw = int(h[i, ok[0]]), int(w[i, ok[0]])
            extra = 0 if no_plus_one else 1
            rows.append([int(u_corner[0, i] * (height - bh + extra)), int(u_corner[1, i] * (width - bw + extra)),
                         bh, bw])
        else:
            bh, bw = height, width
            if not whole_fallback and width / height < ratio[0]:
                bh = int(round(width / ratio[0]))
            elif not whole_fallback and width / height > ratio[1]:
                bw = int(round(height * ratio[1]))
            rows.append([(height - bh) // 2, (width - bw) // 2, bh, bw])
    return torch.tensor(rows, dtype=torch.long)


def uniform_ratio(*a):
    return _sampler(*a, uniform_ratio=True)


def swapped(*a):
    return _sampler(*a, swapped=True)


def no_plus_one(*a):
    return _sampler(*a, no_plus_one=True)


def whole_fallback(*a):
    return _sampler(*a, whole_fallback=True)


def as_tuple(*a):  # the four tensors of sample_crop_boxes' convention, not one (B, 4) tensor
    return tuple(_sampler(*a).T)


def _luma(x):
    return (0.2989 * x[:, 0] + 0.587 * x[:, 1] + 0.114 * x[:, 2])[:, None]


def rgb_mean(x, f):
    f = f.float().view(-1, 1, 1, 1)
    return (f * x + (1 - f) * x.mean(dim=(1, 2, 3), keepdim=True)).clamp(0, 1)


def batch_mean(x, f):
    f = f.float().view(-1, 1, 1, 1)
    return (f * x + (1 - f) * _luma(x).mean()).clamp(0, 1)


def saturation_instead(x, f):
    f = f.float().view(-1, 1, 1, 1)
    return (f * x + (1 - f) * _luma(x)).clamp(0, 1)


def unclamped(x, f):
    f = f.float().view(-1, 1, 1, 1)
    return f * x + (1 - f) * _luma(x).mean(dim=(1, 2, 3), keepdim=True)


def factor_not_per_sample(x, f):  # the first factor for the whole batch
    return (f[0].item() * x + (1 - f[0].item()) * _luma(x).mean(dim=(1, 2, 3), keepdim=True)).clamp(0, 1)


MISTAKES = {
    "01.7": [
        (uniform_ratio, "drawn uniformly, not log-uniformly"),
        (swapped, "w and h are swapped"),
        (no_plus_one, "the corner misses the last position"),
        (whole_fallback, "the fallback is the whole image"),
        (as_tuple, None),
    ],
    "01.8": [
        (rgb_mean, "not of the luma (grayscale) image"),
        (batch_mean, "the mean over the whole batch"),
        (saturation_instead, "that is saturation, not contrast"),
        (unclamped, "not clamped"),
        (factor_not_per_sample, None),
    ],
}
