"""Plausible wrong answers to chapter 02's checked exercises, with the problem the checker must name."""


def _params(width, blocks, cifar_stem, bn=True, shortcut=True, stem_k=None, floor_width=False):
    def scaled(c):
        return max(1, int(c * width)) if floor_width else max(1, int(round(c * width)))

    ch = [scaled(c) for c in (64, 128, 256, 512)]
    k = stem_k or (3 if cifar_stem else 7)
    stem = scaled(64)
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


def no_batchnorm(w, b, s):
    return _params(w, b, s, bn=False)


def no_shortcuts(w, b, s):
    return _params(w, b, s, shortcut=False)


def always_7x7(w, b, s):
    return _params(w, b, s, stem_k=7)


def floor_channels(w, b, s):  # int(c * w) instead of round(c * w)
    return _params(w, b, s, floor_width=True)


def _side(size, cifar_stem, halve):
    n = size if cifar_stem else halve(halve(size))
    for _ in range(3):
        n = halve(n)
    return n


def floor_halving(size, cifar_stem):
    return _side(size, cifar_stem, lambda n: max(1, n // 2))


def no_maxpool(size, cifar_stem):
    n = size if cifar_stem else (size - 1) // 2 + 1
    for _ in range(3):
        n = (n - 1) // 2 + 1
    return n


def size_over_32(size, cifar_stem):  # "the network divides by 32" (or by 8 with the CIFAR stem)
    return max(1, size // (8 if cifar_stem else 32))


MISTAKES = {
    "02.7": [
        (no_batchnorm, "the BatchNorm parameters (gamma and beta) are not counted"),
        (no_shortcuts, "the 1x1 shortcut convolutions"),
        (always_7x7, "the stem's kernel is wrong"),
        (floor_channels, None),
    ],
    "02.8": [
        (floor_halving, "odd sizes are rounded down"),
        (no_maxpool, "max-pool is missing"),
        (size_over_32, None),
    ],
}
