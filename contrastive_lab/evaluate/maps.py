"""Two-dimensional maps of an embedding: UMAP or t-SNE coordinates of the features, to look at.

Chapter 10 draws them (``plots.map_plot``). A map keeps who is near whom and distorts everything
else: distances between far-apart clusters, cluster sizes and densities mean little (Wattenberg,
Viegas & Johnson 2016, "How to Use t-SNE Effectively"). Both methods see the cosine geometry the
encoder was trained in (``metric="cosine"``).

* ``umap``: McInnes, Healy & Melville 2018, "UMAP: Uniform Manifold Approximation and Projection"
  (``umap-learn``, defaults ``n_neighbors=15``, ``min_dist=0.1``). Its first call in a process
  compiles numba code (seconds).
* ``tsne``: van der Maaten & Hinton 2008, "Visualizing Data using t-SNE" (scikit-learn, default
  perplexity 30, PCA initialisation as Kobak & Berens 2019 recommend).
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ._checks import _as_features

MAP_METHODS = ("umap", "tsne")


def embedding_map(features: Any, method: str = "umap", seed: int = 0, n_neighbors: int = 15,
                  min_dist: float = 0.1, perplexity: float = 30.0) -> Tensor:
    """(N, 2) float32 map coordinates of the (N, D) ``features`` by ``method`` (``umap`` or ``tsne``),
    seeded by ``seed`` (UMAP is then single-threaded, as umap-learn makes seeded runs)."""
    if method not in MAP_METHODS:
        raise ValueError(f"unknown map method {method!r}; valid: {', '.join(MAP_METHODS)}")
    x = _as_features(features, "features").numpy().astype(np.float32)
    if method == "umap":
        if not 2 <= n_neighbors < len(x):
            raise ValueError(f"n_neighbors must be in [2, N) = [2, {len(x)}), got {n_neighbors}")
        xy = _umap(x, seed, n_neighbors, min_dist)
    else:
        if not 0 < perplexity < len(x):
            raise ValueError(f"perplexity must be in (0, N) = (0, {len(x)}), got {perplexity}")
        from sklearn.manifold import TSNE

        xy = TSNE(n_components=2, metric="cosine", init="pca", perplexity=perplexity,
                  random_state=seed).fit_transform(x)
    return torch.from_numpy(np.asarray(xy, dtype=np.float32))


def _umap(x: np.ndarray, seed: int, n_neighbors: int, min_dist: float) -> np.ndarray:
    """umap-learn's 2-D embedding of ``x``; its warning that a seed disables parallelism is expected."""
    import umap

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*n_jobs value 1 overridden.*")
        reducer = umap.UMAP(n_components=2, n_neighbors=n_neighbors, min_dist=min_dist, metric="cosine",
                            random_state=seed)
        return reducer.fit_transform(x)


__all__ = ["MAP_METHODS", "embedding_map"]
