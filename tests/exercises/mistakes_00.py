"""Plausible wrong answers to chapter 00's checked exercises (numbers computed on the chapter's data)."""

import math

import torch

from contrastive_lab.evaluate import knn_accuracy
from contrastive_lab.exercises.ch00 import chapter_data


def _pixel_knn(distance: str = "cosine", k: int = 1, n_gallery: int = 5000) -> float:
    train, test = chapter_data("train"), chapter_data("test")
    gallery, queries = train.images[:n_gallery].float().flatten(1), test.images[:1000].float().flatten(1)
    if distance == "euclidean":
        nearest = torch.cdist(queries, gallery).argmin(dim=1)
        return float((train.labels[:n_gallery][nearest] == test.labels[:1000]).float().mean())
    if distance == "unnormalised dot":
        nearest = (queries @ gallery.T).argmax(dim=1)  # no normalisation: bright images win
        return float((train.labels[:n_gallery][nearest] == test.labels[:1000]).float().mean())
    return knn_accuracy(gallery, train.labels[:n_gallery], queries, test.labels[:1000], k=k)


def _with_anchor(n=256, tau=0.5):  # the anchor itself counted in the denominator
    return -math.log(math.exp(1 / tau) / (2 * math.exp(1 / tau) + 2 * n - 2))


def _without_positive(n=256, tau=0.5):  # the positive left out of the denominator
    return -math.log(math.exp(1 / tau) / (2 * n - 2))


MISTAKES = {
    "00.2": [(_pixel_knn("unnormalised dot"), None), (_pixel_knn(k=200), None)],
    "00.3": [(_with_anchor(), None), (_without_positive(), None), (-math.log(math.exp(2) / (math.exp(2) + 255)), None)],
}
