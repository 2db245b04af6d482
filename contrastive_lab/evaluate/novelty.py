"""Novelty (anomaly, out-of-distribution) detection with a frozen embedding, and how to score it.

Chapter 10 teaches it. Train the encoder on the "normal" images only; a test image far from every
training embedding is flagged as novel. Nothing here looks at labels: the score is label-free,
like the encoder.

* :func:`knn_novelty_scores`: the mean cosine distance to the k nearest training embeddings (deep
  nearest-neighbour anomaly detection: Bergman, Cohen & Hoshen 2020, "Deep Nearest Neighbor
  Anomaly Detection"; Sun et al. 2022, "Out-of-Distribution Detection with Deep Nearest Neighbors",
  use the k-th distance instead of the mean), and its slow twin :func:`knn_novelty_scores_reference`.
* :func:`mahalanobis_scores`: the baseline people know, the Mahalanobis distance to the mean and
  covariance of all training embeddings (class-agnostic; Lee et al. 2018, "A Simple Unified
  Framework for Detecting Out-of-Distribution Samples and Adversarial Attacks", fit one Gaussian per
  class instead, which needs labels).
* :func:`detection_metrics`: AUROC, average precision and the ROC curve, from scikit-learn.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from ._checks import _as_features, _check_positive_int
from .retrieval import build_index, search


def _check_pair(train_features: Any, test_features: Any) -> tuple[Tensor, Tensor]:
    train = _as_features(train_features, "train_features")
    test = _as_features(test_features, "test_features")
    if train.shape[1] != test.shape[1]:
        raise ValueError(f"train_features have D={train.shape[1]} but test_features have D={test.shape[1]}.")
    return train, test


def knn_novelty_scores(train_features: Any, test_features: Any, k: int = 5) -> Tensor:
    r"""Novelty score of each test row: :math:`s(x) = \frac1k \sum_{i \in N_k(x)} \big(1 - \cos(f(x), f(x_i))\big)`,
    the mean cosine distance to its k nearest training rows (exact search, a ``flat`` faiss index).
    Higher = more novel; (N_test,) float32."""
    train, test = _check_pair(train_features, test_features)
    _check_positive_int(k, "k")
    if k > len(train):
        raise ValueError(f"k={k} exceeds the {len(train)} training features; pass k <= {len(train)}.")
    sims, _ = search(build_index(train, "flat"), test, k)
    return 1.0 - sims.mean(1)


def knn_novelty_scores_reference(train_features: Any, test_features: Any, k: int = 5) -> Tensor:
    """:func:`knn_novelty_scores` as a readable loop in float64: for each test row, every cosine
    distance to the training rows, sorted, the k smallest averaged."""
    train, test = _check_pair(train_features, test_features)
    scores = []
    for x in test.double():
        distances = [1.0 - float(F.cosine_similarity(x, t.double(), dim=0)) for t in train]
        scores.append(sum(sorted(distances)[:k]) / k)
    return torch.tensor(scores, dtype=torch.float32)


def mahalanobis_scores(train_features: Any, test_features: Any, normalize: bool = True, ridge: float = 1e-6) -> Tensor:
    r"""Squared Mahalanobis distance :math:`(x - \mu)^\top \Sigma^{-1} (x - \mu)` of each test row to the
    mean :math:`\mu` and covariance :math:`\Sigma` of the training rows, computed in float64.
    ``normalize`` first L2-normalises every row (the cosine geometry the encoder was trained in);
    ``ridge`` x mean variance is added to the diagonal so that a rank-deficient covariance (fewer
    rows than dimensions, collapsed directions) stays invertible. (N_test,) float32."""
    train, test = _check_pair(train_features, test_features)
    if len(train) < 2:
        raise ValueError("a covariance needs at least 2 training rows.")
    if normalize:
        train, test = F.normalize(train, dim=1), F.normalize(test, dim=1)
    train, test = train.double(), test.double()
    mu = train.mean(0)
    cov = torch.cov((train - mu).T)
    cov += ridge * cov.diagonal().mean().clamp(min=1e-12) * torch.eye(len(cov), dtype=cov.dtype)
    centred = test - mu
    solved = torch.cholesky_solve(centred.T, torch.linalg.cholesky(cov))
    return (centred * solved.T).sum(1).float()


def detection_metrics(scores: Any, is_novel: Any) -> dict[str, Any]:
    """How well ``scores`` (higher = more novel) separate novel (``is_novel`` true) from normal rows:
    ``auroc`` (scikit-learn ``roc_auc_score``: the probability that a random novel row outscores a
    random normal one, ties counting 1/2), ``average_precision`` (novel = positive class), the ROC
    curve ``fpr``, ``tpr`` (numpy arrays), and ``fpr_at_95_tpr`` (the false-positive rate when 95% of the
    novel rows are caught, a common summary in out-of-distribution papers)."""
    from sklearn.metrics import average_precision_score, roc_auc_score, roc_curve

    s = torch.as_tensor(scores).double().flatten().numpy()
    y = torch.as_tensor(is_novel).flatten().numpy()
    if len(s) != len(y):
        raise ValueError(f"scores has {len(s)} entries but is_novel has {len(y)}; they must match.")
    if not np.isfinite(s).all():
        raise ValueError("scores contain NaN or inf.")
    y = y.astype(bool)
    if y.all() or not y.any():
        raise ValueError("is_novel must contain both novel (True) and normal (False) rows to score a detector.")
    fpr, tpr, _ = roc_curve(y, s)
    return {"auroc": float(roc_auc_score(y, s)), "average_precision": float(average_precision_score(y, s)),
            "fpr": fpr, "tpr": tpr, "fpr_at_95_tpr": float(fpr[np.searchsorted(tpr, 0.95)])}


__all__ = ["detection_metrics", "knn_novelty_scores", "knn_novelty_scores_reference", "mahalanobis_scores"]
