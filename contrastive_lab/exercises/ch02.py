"""Chapter 02's checked exercises: the parameter count of a ``SmallResNet`` from its architecture
alone (02.7) and the side of the map stage 4 sees for an input size and stem (02.8), both against
the library's encoders."""

from __future__ import annotations

from functools import lru_cache

import torch

from ..encoders import BASE_CHANNELS, SmallResNet
from .core import Case, Diagnosis, Exercise, register


def library_params(width: float, blocks: tuple, cifar_stem: bool) -> int:
    """Trainable parameters of ``SmallResNet(width, blocks, cifar_stem)`` (built, then counted)."""
    return sum(p.numel() for p in SmallResNet(width=width, blocks=blocks, cifar_stem=cifar_stem).parameters())


def _param_cases() -> list[Case]:
    return [
        Case("ResNet-10 x0.5, CIFAR stem", (0.5, (1, 1, 1, 1), True)),
        Case("blocks (2, 2, 2, 2), width 0.5 (exercise 5)", (0.5, (2, 2, 2, 2), True)),
        Case("ResNet-18 itself: width 1, ImageNet stem", (1.0, (2, 2, 2, 2), False)),
        Case("width 0.3 (channels are rounded: 19, 38, 77, 154)", (0.3, (1, 2, 3, 1), True)),
        Case("width 0.01 (every stage has at least 1 channel)", (0.01, (1, 1, 1, 1), False)),
    ]


def _count(width, blocks, cifar_stem, *, bn=True, shortcut=True, stem_kernel=None, in_ch_doubling=False):
    """The parameter count with one part left out or changed (for the diagnoses)."""
    ch = [max(1, int(round(c * width))) for c in BASE_CHANNELS]
    stem = max(1, int(round(64 * width)))
    k = stem_kernel or (3 if cifar_stem else 7)
    total = 3 * stem * k * k + (2 * stem if bn else 0)
    c_in = stem
    for i, (c, n) in enumerate(zip(ch, blocks)):
        for b in range(n):
            first = c_in if b == 0 else c
            total += 9 * first * c + 9 * c * c + (4 * c if bn else 0)
            if b == 0 and (i > 0 or c_in != c) and shortcut:
                total += first * c + (2 * c if bn else 0)
        c_in = c
    return total


register(Exercise(
    id="02.7",
    title="parameters of a SmallResNet, from its architecture",
    cases=_param_cases,
    reference=library_params,
    hint="conv1 (3 -> c0, k x k, no bias) + its BN (gamma and beta: 2 per channel); every BasicBlock has two 3x3 "
         "convs (in -> out, out -> out) and two BNs; the first block of a stage that changes resolution or width "
         "adds a 1x1 shortcut conv and its BN. Channels are round(c * width), at least 1; no fc.",
    diagnoses=(
        Diagnosis("the BatchNorm parameters (gamma and beta) are not counted",
                  lambda w, b, s: _count(w, b, s, bn=False)),
        Diagnosis("the 1x1 shortcut convolutions (and their BN) of stages 2-4 are missing",
                  lambda w, b, s: _count(w, b, s, shortcut=False)),
        Diagnosis("the stem's kernel is wrong: the CIFAR stem is 3x3, the ImageNet stem 7x7",
                  lambda w, b, s: _count(w, b, s, stem_kernel=7 if s else 3)),
    ),
    rtol=0.0, atol=0.0,
))


# --------------------------------------------------------------------------------------------
# 02.8 the side of layer4's map
# --------------------------------------------------------------------------------------------


@lru_cache(maxsize=2)
def _tiny_resnet(cifar_stem: bool) -> SmallResNet:
    """A 4-channel SmallResNet: the strides of the real one, at almost no cost (built once per stem)."""
    return SmallResNet(width=0.0625, blocks=(1, 1, 1, 1), cifar_stem=cifar_stem).eval()


def library_layer4_side(size: int, cifar_stem: bool) -> int:
    """Side of ``layer4``'s output for a ``size x size`` input (a forward hook on a tiny SmallResNet)."""
    net = _tiny_resnet(cifar_stem)
    seen = {}
    handle = net.layer4.register_forward_hook(lambda m, a, out: seen.update(side=out.shape[-1]))  # returns None
    try:
        with torch.no_grad():
            net(torch.zeros(1, 3, size, size))
    finally:
        handle.remove()
    return int(seen["side"])


def _side_cases() -> list[Case]:
    return [
        Case("32 px, CIFAR stem", (32, True)),
        Case("32 px, ImageNet stem", (32, False)),
        Case("224 px, ImageNet stem", (224, False)),
        Case("odd size 33 px, CIFAR stem", (33, True)),
        Case("odd size 97 px, ImageNet stem", (97, False)),
        Case("tiny 5 px, ImageNet stem", (5, False)),
    ]


def _halve(n: int) -> int:
    """A stride-2 conv/pool with kernel k and padding (k - 1) / 2: floor((n - 1) / 2) + 1 = ceil(n / 2)."""
    return (n - 1) // 2 + 1


def _side(size, cifar_stem, *, floor_halving=False, skip_maxpool=False, stem_halves=None):
    halve = (lambda n: max(1, n // 2)) if floor_halving else _halve
    n = size
    if stem_halves if stem_halves is not None else not cifar_stem:
        n = halve(n)  # conv1, stride 2
        if not skip_maxpool:
            n = halve(n)  # maxpool, stride 2
    for _ in range(3):  # layer2..layer4 open with a stride-2 block
        n = halve(n)
    return n


register(Exercise(
    id="02.8",
    title="the side of the map stage 4 sees",
    cases=_side_cases,
    reference=library_layer4_side,
    hint="follow the strides: the ImageNet stem halves twice (7x7 conv stride 2, 3x3 max-pool stride 2), the "
         "CIFAR stem not at all; layer2, layer3 and layer4 halve once each. A stride-2 layer with kernel k and "
         "padding (k - 1) / 2 maps n to floor((n - 1) / 2) + 1, which rounds odd sizes up.",
    diagnoses=(
        Diagnosis("odd sizes are rounded down (n // 2); a padded stride-2 layer gives floor((n - 1) / 2) + 1",
                  lambda s, c: _side(s, c, floor_halving=True)),
        Diagnosis("the ImageNet stem's max-pool is missing (it halves the map a second time)",
                  lambda s, c: _side(s, c, skip_maxpool=True)),
        Diagnosis("the stems are swapped: the CIFAR stem keeps the resolution, the ImageNet stem divides it by 4",
                  lambda s, c: _side(s, not c)),
    ),
    rtol=0.0, atol=0.0,
))

