"""Chapter 00's checked exercises: the kNN accuracy of raw pixels (00.2), the baseline chapter 02
compares a random ResNet with, and the value of the loss when every negative is orthogonal to
its anchor (00.3)."""

from __future__ import annotations

from functools import lru_cache

import torch

from ..data import DatasetNotFoundError, load_cifar10, make_synthetic
from ..evaluate import knn_accuracy
from ..losses import nt_xent
from .core import ValueExercise, register

N_GALLERY, N_QUERIES = 5000, 1000  # 00.2: the first 5000 train images, the first 1000 test images


@lru_cache(maxsize=2)
def chapter_data(split: str):
    """The data chapter 00 loads (CIFAR-10 from the data root, else its synthetic stand-in), without
    starting a download: the chapter's first cells have already fetched the archive if they could.
    Cached: the band and the solutions read it several times."""
    try:
        return load_cifar10(split, download=False)
    except DatasetNotFoundError:
        return make_synthetic(n=2000 if split == "train" else 500, split=split)


@lru_cache(maxsize=1)
def pixel_knn_accuracy() -> float:
    """1-NN top-1 accuracy of flattened raw pixels by cosine similarity (the library's kNN with k = 1)."""
    train, test = chapter_data("train"), chapter_data("test")
    n_gallery, n_queries = min(N_GALLERY, len(train)), min(N_QUERIES, len(test))
    return knn_accuracy(train.images[:n_gallery].float().flatten(1), train.labels[:n_gallery],
                        test.images[:n_queries].float().flatten(1), test.labels[:n_queries], k=1,
                        num_classes=len(train.classes))


register(ValueExercise(
    id="00.2",
    title="1-NN accuracy of raw pixels (cosine, 1000 test queries, 5000 train images)",
    # one query more or less right (a tie broken the other way, float rounding): 1 / n_queries
    band=lambda: (lambda a, q: (a - 0.6 / q, a + 0.6 / q))(pixel_knn_accuracy(),
                                                          min(N_QUERIES, len(chapter_data("test")))),
    hint="cosine similarity of the flattened pixels (normalise each row, then one matrix product), the "
         "label of the single most similar train image, and the fraction of queries whose label it matches.",
))


def orthogonal_negatives_loss(n_pairs: int = 256, temperature: float = 0.5) -> float:
    """NT-Xent when both views of image k are the unit vector e_k: every positive has similarity 1,
    every negative 0 (the library's loss on that batch)."""
    eye = torch.eye(n_pairs, dtype=torch.float64)
    return float(nt_xent(eye, eye.clone(), temperature))


register(ValueExercise(
    id="00.3",
    title="the loss of an anchor whose 2N - 2 negatives are orthogonal to it (N = 256, tau = 0.5)",
    band=lambda: (orthogonal_negatives_loss() - 1e-6, orthogonal_negatives_loss() + 1e-6),
    hint="sim = 1 for the positive and 0 for each negative; the denominator sums over every k != i, "
         "the positive included, and the anchor itself excluded.",
))
