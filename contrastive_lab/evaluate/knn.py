"""The weighted kNN classifier on frozen features (Wu et al. 2018, Sec. 3.4), and the kNN monitor
that runs it during training on h and on z = g(h) (chapters 02 and 05 introduce it; every run
prints it at the start and the end).

The same protocol on both features (k=200, T=0.1, cosine). h is SimCLR's representation, the one
``embed`` writes; z is the feature Wu et al.'s and MoCo's kNN monitors evaluate, whose networks end
in the 128-d linear layer that our linear head is.
"""

from __future__ import annotations

import math
import numbers

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ._checks import (
    Transform,
    _as_features,
    _as_images,
    _as_labels,
    _check_positive_int,
    _is_int,
    _resolve_num_classes,
)
from .features import extract_features, has_projection, project_features


def _check_knn(train_features, train_labels, test_features, k, temperature, num_classes):
    train = _as_features(train_features, "train_features")
    test = _as_features(test_features, "test_features")
    if train.shape[1] != test.shape[1]:
        raise ValueError(f"train_features have D={train.shape[1]} but test_features have D={test.shape[1]}.")
    labels = _as_labels(train_labels, len(train), "train_labels", num_classes)
    _check_k_temperature(k, temperature, len(train))
    return train, labels, test, _resolve_num_classes(num_classes, labels)


def _check_k_temperature(k: int, temperature: float, n_train: int) -> None:
    if not _is_int(k) or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}.")
    if k > n_train:
        raise ValueError(f"k={k} exceeds the number of training features ({n_train}); pass k <= {n_train}.")
    if (
        isinstance(temperature, bool)
        or not isinstance(temperature, numbers.Real)
        or not (math.isfinite(temperature) and temperature > 0)
    ):
        raise ValueError(f"temperature must be a finite number > 0, got {temperature!r}.")


def knn_predict(
    train_features: Tensor,
    train_labels: Tensor,
    test_features: Tensor,
    k: int = 200,
    temperature: float = 0.1,
    num_classes: int | None = None,
    batch_size: int = 256,
) -> Tensor:
    r"""Weighted cosine kNN class predictions, ``(N_test,)`` long tensor.

    With :math:`s_i = \cos(x, x_i)` over the k most similar training features :math:`N_k(x)`:

    .. math:: \hat y(x) = \arg\max_c \sum_{i \in N_k(x)} e^{s_i / \tau}\, [y_i = c]

    (Wu et al. 2018, Sec 3.4; k=200, tau=0.1 as in MoCo's CIFAR demo). Test rows are processed
    ``batch_size`` at a time, so memory is ``batch_size x N_train``. For stability the weights are
    computed as :math:`e^{(s_i - \max_j s_j)/\tau}`; a common factor per row leaves the argmax unchanged.
    Ties (equal votes) go to the lowest class index. ``num_classes`` defaults to ``max(train_labels) + 1``.
    """
    train, labels, test, num_classes = _check_knn(
        train_features, train_labels, test_features, k, temperature, num_classes
    )
    _check_positive_int(batch_size, "batch_size")
    train, labels = F.normalize(train, dim=1), labels.to(train.device)
    preds = []
    for chunk in F.normalize(test.to(train.device), dim=1).split(batch_size):
        sim, idx = (chunk @ train.T).topk(k, dim=1)  # (b, k), sorted descending
        weights = ((sim - sim[:, :1]) / temperature).exp()
        votes = torch.zeros(len(chunk), num_classes, device=train.device)
        votes.scatter_add_(1, labels[idx], weights)
        preds.append(votes.argmax(dim=1))
    return torch.cat(preds).cpu()


def knn_predict_reference(
    train_features,
    train_labels,
    test_features,
    k: int = 200,
    temperature: float = 0.1,
    num_classes: int | None = None,
) -> Tensor:
    """Slow, readable version of :func:`knn_predict`: one test point at a time, NumPy float64."""
    train, labels, test, num_classes = _check_knn(
        train_features, train_labels, test_features, k, temperature, num_classes
    )
    train = train.double().numpy()
    train = train / np.maximum(np.linalg.norm(train, axis=1, keepdims=True), 1e-12)
    preds = []
    for x in test.double().numpy():
        x = x / max(np.linalg.norm(x), 1e-12)
        sims = train @ x
        neighbours = np.argsort(-sims, kind="stable")[:k]
        votes = np.zeros(num_classes)
        for i in neighbours:
            votes[labels[i]] += np.exp(sims[i] / temperature)
        preds.append(int(np.argmax(votes)))
    return torch.tensor(preds, dtype=torch.long)


def knn_accuracy(
    train_features: Tensor,
    train_labels: Tensor,
    test_features: Tensor,
    test_labels: Tensor,
    k: int = 200,
    temperature: float = 0.1,
    num_classes: int | None = None,
    batch_size: int = 256,
) -> float:
    """Top-1 accuracy in [0, 1] of :func:`knn_predict` (Wu et al. 2018, Sec 3.4)."""
    preds = knn_predict(train_features, train_labels, test_features, k, temperature, num_classes, batch_size)
    test_labels = _as_labels(test_labels, len(preds), "test_labels", num_classes)
    return float((preds == test_labels).float().mean())


def knn_on_h_and_z(h_train: Tensor, train_labels: Tensor, h_test: Tensor, test_labels: Tensor,
                   head: nn.Module | None = None, k: int = 200, temperature: float = 0.1) -> dict[str, float]:
    """:func:`knn_accuracy` on precomputed h (key ``"h"``) and, when ``head`` projects
    (:func:`has_projection`), on z = head(h) (key ``"z"``); k is capped at the training set's size."""
    k = min(k, len(h_train))
    features = {"h": (h_train, h_test)}
    if has_projection(head):
        features["z"] = (project_features(head, h_train), project_features(head, h_test))
    return {name: knn_accuracy(f_train, train_labels, f_test, test_labels, k=k, temperature=temperature)
            for name, (f_train, f_test) in features.items()}


class KNNMonitor:
    """``monitor(encoder, head) -> {"h": top-1, "z": top-1}`` on fixed train/test images.

    Extracts features of both sets with :func:`extract_features` (eval mode, no grad) and scores
    them with :func:`knn_on_h_and_z`. As in MoCo's CIFAR-10 demo, the "train" set is the memory of
    labelled neighbours and the score tracks representation quality while pre-training runs.
    ``autocast`` as in :func:`extract_features` (bf16 where the hardware has it).
    """

    def __init__(
        self,
        train_images,
        train_labels,
        test_images,
        test_labels,
        transform: Transform | None = None,
        k: int = 200,
        temperature: float = 0.1,
        batch_size: int = 256,
        num_classes: int | None = None,
        autocast: bool = True,
    ) -> None:
        self.train_images, self.test_images = _as_images(train_images), _as_images(test_images)
        self.train_labels = _as_labels(train_labels, len(self.train_images), "train_labels", num_classes)
        self.test_labels = _as_labels(test_labels, len(self.test_images), "test_labels", num_classes)
        _check_k_temperature(k, temperature, len(self.train_images))  # fail at construction, not mid-run
        self.k = k
        self.transform, self.temperature, self.autocast = transform, temperature, autocast
        self.batch_size, self.num_classes = _check_positive_int(batch_size, "batch_size"), num_classes

    def features(self, encoder: nn.Module, device: torch.device | str | None = None) -> tuple[Tensor, Tensor]:
        """(h_train, h_test): the encoder's features of both image sets."""
        return tuple(  # type: ignore[return-value]
            extract_features(encoder, x, self.batch_size, device, self.transform, autocast=self.autocast)
            for x in (self.train_images, self.test_images)
        )

    def __call__(self, encoder: nn.Module, head: nn.Module | None = None,
                 device: torch.device | str | None = None) -> dict[str, float]:
        h_train, h_test = self.features(encoder, device)
        return knn_on_h_and_z(h_train, self.train_labels, h_test, self.test_labels, head, self.k, self.temperature)
