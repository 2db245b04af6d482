"""Novelty detection (contrastive_lab.evaluate.novelty) and 2-D maps (evaluate.maps): scores against
slow loops, AUROC against a direct rank computation, maps that keep clusters apart."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from contrastive_lab.evaluate import (
    detection_metrics,
    embedding_map,
    knn_novelty_scores,
    knn_novelty_scores_reference,
    mahalanobis_scores,
)


def blobs(n: int, dim: int, seed: int, centre: float = 0.0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, dim, generator=g) + centre


@pytest.mark.parametrize("k", [1, 3, 10])
def test_knn_novelty_scores_equal_the_slow_loop(k):
    train, test = blobs(150, 12, seed=0), blobs(30, 12, seed=1, centre=0.5)
    torch.testing.assert_close(knn_novelty_scores(train, test, k=k), knn_novelty_scores_reference(train, test, k=k),
                               atol=1e-5, rtol=0)


def test_knn_novelty_scores_flag_rows_far_from_the_training_set():
    g = torch.Generator().manual_seed(2)
    normal_dirs = torch.randn(1, 16, generator=g)
    train = normal_dirs + 0.3 * torch.randn(300, 16, generator=g)
    normal = normal_dirs + 0.3 * torch.randn(40, 16, generator=g)
    novel = -normal_dirs + 0.3 * torch.randn(40, 16, generator=g)  # the opposite direction: cosine ~ -1
    scores = knn_novelty_scores(train, torch.cat([normal, novel]), k=5)
    assert detection_metrics(scores, torch.arange(80) >= 40)["auroc"] == 1.0
    assert ((0 <= scores) & (scores <= 2)).all()  # a cosine distance


def test_mahalanobis_scores_equal_the_formula_with_an_explicit_inverse():
    train, test = blobs(400, 6, seed=3) * torch.tensor([1.0, 2, 3, 0.5, 1, 4]), blobs(20, 6, seed=4)
    for normalize in (False, True):
        tr, te = train.double(), test.double()
        if normalize:
            tr, te = tr / tr.norm(dim=1, keepdim=True), te / te.norm(dim=1, keepdim=True)
        x = tr.numpy()
        mu = x.mean(0)
        cov = (x - mu).T @ (x - mu) / (len(x) - 1)
        cov += 1e-6 * np.trace(cov) / len(cov) * np.eye(len(cov))
        inv = np.linalg.inv(cov)
        expected = [float((r - mu) @ inv @ (r - mu)) for r in te.numpy()]
        got = mahalanobis_scores(train, test, normalize=normalize)
        np.testing.assert_allclose(got.numpy(), expected, rtol=1e-5)


def auroc_by_ranks(scores: np.ndarray, novel: np.ndarray) -> float:
    """Mann-Whitney: the fraction of (novel, normal) pairs in which the novel row scores higher, ties 1/2."""
    pos, neg = scores[novel], scores[~novel]
    wins = sum(float(p > n) + 0.5 * float(p == n) for p in pos for n in neg)
    return wins / (len(pos) * len(neg))


@pytest.mark.parametrize("seed", range(4))
def test_auroc_agrees_with_a_direct_rank_computation_with_ties(seed):
    rng = np.random.default_rng(seed)
    novel = rng.random(120) < 0.3
    scores = np.round(rng.normal(size=120) + novel, 1)  # rounded: many tied scores
    out = detection_metrics(torch.from_numpy(scores), torch.from_numpy(novel))
    assert out["auroc"] == pytest.approx(auroc_by_ranks(scores, novel), abs=1e-12)
    assert 0 < out["average_precision"] <= 1 and out["fpr"][0] == 0 and out["tpr"][-1] == 1
    assert out["fpr_at_95_tpr"] == pytest.approx(out["fpr"][np.argmax(out["tpr"] >= 0.95)])


def test_bad_input_gets_a_clear_error():
    with pytest.raises(ValueError, match="both novel"):
        detection_metrics(torch.rand(5), torch.ones(5, dtype=torch.bool))
    with pytest.raises(ValueError, match="scores has 5 entries but is_novel has 4"):
        detection_metrics(torch.rand(5), torch.ones(4, dtype=torch.bool))
    with pytest.raises(ValueError, match="k=11 exceeds the 10 training features"):
        knn_novelty_scores(torch.randn(10, 3), torch.randn(2, 3), k=11)
    with pytest.raises(ValueError, match="train_features have D=3 but test_features have D=4"):
        mahalanobis_scores(torch.randn(10, 3), torch.randn(2, 4))
    with pytest.raises(ValueError, match="unknown map method 'pca'"):
        embedding_map(torch.randn(10, 3), method="pca")
    with pytest.raises(ValueError, match="perplexity must be in"):
        embedding_map(torch.randn(10, 3), method="tsne")


@pytest.mark.parametrize("method", ["tsne", pytest.param("umap", marks=pytest.mark.slow)])  # umap: numba compiles
def test_a_map_keeps_separate_clusters_separate(method):
    g = torch.Generator().manual_seed(5)
    centres = 4 * torch.randn(3, 20, generator=g)
    labels = torch.arange(120) % 3
    features = centres[labels] + 0.5 * torch.randn(120, 20, generator=g)
    xy = embedding_map(features, method=method, seed=0, n_neighbors=10, perplexity=15)
    assert xy.shape == (120, 2) and xy.dtype == torch.float32 and torch.isfinite(xy).all()
    d = torch.cdist(xy, xy).fill_diagonal_(float("inf"))
    assert (labels[d.argmin(1)] == labels).float().mean() == 1.0  # every point's map neighbour shares its cluster
    torch.testing.assert_close(embedding_map(features, method=method, seed=0, n_neighbors=10, perplexity=15), xy)
