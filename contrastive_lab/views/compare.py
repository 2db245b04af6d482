"""Do two view samplers draw the same distribution? The two-sample Kolmogorov-Smirnov test.

Chapter 01 (``chapters/01_augmentation.py``) teaches it: it compares the crop boxes and the views
of :class:`~contrastive_lab.views.batched.BatchedViews` with those of the per-image torchvision
pipeline, and ``tests/test_augment.py`` runs the same kind of check with a small false-alarm rate.
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import ArrayLike


def ks_statistic(a: ArrayLike, b: ArrayLike) -> float:
    """Two-sample Kolmogorov-Smirnov statistic ``D = sup_x |F1(x) - F2(x)|``.

    ``F1`` and ``F2`` are the empirical CDFs of the samples ``a`` (n values) and ``b`` (m values),
    ``F1(x) = #{i : a_i <= x} / n``. Both are step functions that jump only at sample values, so the
    supremum is a maximum over the pooled values (ties within or across the samples are fine).
    Kolmogorov 1933; Smirnov 1939 (the two-sample form). Accepts anything ``np.asarray`` takes
    (CPU tensors included); equals ``scipy.stats.ks_2samp(a, b).statistic``.
    """
    a, b = np.sort(np.asarray(a).ravel()), np.sort(np.asarray(b).ravel())
    if not len(a) or not len(b):
        raise ValueError(f"ks_statistic needs two non-empty samples, got sizes {len(a)} and {len(b)}.")
    v = np.union1d(a, b)
    fa = np.searchsorted(a, v, side="right") / len(a)
    fb = np.searchsorted(b, v, side="right") / len(b)
    return float(np.abs(fa - fb).max())


def ks_critical(n: int, m: int, alpha: float = 1e-4) -> float:
    """Asymptotic critical value of :func:`ks_statistic` for samples of sizes ``n`` and ``m``:
    ``c(alpha) sqrt((n + m) / (n m))`` with ``c(alpha) = sqrt(-ln(alpha / 2) / 2)`` (Smirnov 1948;
    ``c(0.05) = 1.36``). Two samples of one distribution exceed it with probability about ``alpha``
    (at most that for discrete values, where the test is conservative)."""
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must lie in (0, 1), got {alpha!r}.")
    return math.sqrt(-math.log(alpha / 2) / 2) * math.sqrt((n + m) / (n * m))
