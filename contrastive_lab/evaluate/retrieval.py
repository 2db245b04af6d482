"""Retrieval with learned embeddings: a faiss vector index, and how good its neighbours are.

Chapter 10 teaches it. An image search engine keeps the embeddings of a gallery in an index and
answers "which gallery images are nearest to this query?". Similarity is the cosine, as everywhere
in the book: every index holds L2-normalised rows, so its inner product *is* the cosine.

* :func:`build_index` builds one of three faiss indexes (Johnson, Douze & Jegou 2019, "Billion-scale
  similarity search with GPUs"; the library is https://github.com/facebookresearch/faiss):
  ``flat`` (exact: every query is compared with every row), ``hnsw`` (a graph walked greedily,
  Malkov & Yashunin 2018, "Efficient and robust approximate nearest neighbor search using
  Hierarchical Navigable Small World graphs") and ``ivf-pq`` (an inverted file of ``nlist`` k-means
  cells, rows compressed by product quantisation; Jegou, Douze & Schmid 2011, "Product quantization
  for nearest neighbor search"). :func:`search`, :func:`save_index` and :func:`load_index` go with it.
* :func:`recall_at_k` (a query is a hit at k when one of its k nearest gallery items has its class)
  and :func:`mean_average_precision` measure the *embedding*: they rank the whole gallery exactly.
  Ties are handled: tied gallery items are taken in a uniformly random order and the metric is its
  expectation (McSherry & Najork 2008, "Computing information retrieval performance measures
  efficiently in the presence of tied scores"), so the result does not depend on the gallery's order.
* :func:`neighbour_recall` measures an *approximate index*: the fraction of the exact k nearest
  neighbours (the ``flat`` index's) that it returns.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from ._checks import _as_features, _as_labels, _check_positive_int

INDEX_KINDS = ("flat", "hnsw", "ivf-pq")


def _faiss():
    """faiss, imported on first use (importing it loads its own OpenMP runtime; training never needs it)."""
    import faiss

    return faiss


def _as_gallery(features: Any, name: str = "features") -> np.ndarray:
    """Float32, C-contiguous, L2-normalised rows for faiss (cosine = inner product)."""
    x = torch.as_tensor(features)
    if x.ndim == 2 and len(x) == 0:
        need = "an index needs at least one gallery vector" if name == "features" else "pass at least one row"
        raise ValueError(f"{name} is empty (0 rows): {need}.")
    x = _as_features(x, name)
    return np.ascontiguousarray(F.normalize(x, dim=1).numpy(), dtype=np.float32)


def default_nlist(n: int) -> int:
    """Cells of an inverted file for ``n`` vectors: about sqrt(n) (the faiss wiki's lower end,
    "Guidelines to choose an index"), and at most n/39 so that k-means sees 39 points per cell
    (faiss warns below that)."""
    return max(1, min(round(math.sqrt(n)), n // 39))


def default_pq_m(dim: int) -> int:
    """Sub-quantisers of the product code: one byte per 8 dimensions (32 bytes for 256-d rows, 32x
    smaller than float32), the largest divisor of ``dim`` that is at most dim/8 (at least 1)."""
    return max(m for m in range(1, max(1, dim // 8) + 1) if dim % m == 0)


def build_index(
    features: Any,
    kind: str = "flat",
    *,
    hnsw_m: int = 32,
    ef_construction: int = 40,
    ef_search: int = 64,
    nlist: int = 0,
    pq_m: int = 0,
    nbits: int = 8,
    nprobe: int = 8,
    seed: int = 0,
):
    """A faiss index of the L2-normalised rows of ``features`` (N, D), searched by inner product.

    ``flat``: ``IndexFlatIP``, exact. ``hnsw``: ``IndexHNSWFlat`` with ``hnsw_m`` links per node
    (faiss's default 32), ``ef_construction`` candidates while inserting (faiss's default 40) and
    ``ef_search`` while searching (the recall/latency knob). ``ivf-pq``: ``IndexIVFPQ`` with ``nlist``
    cells (0: :func:`default_nlist`), ``pq_m`` sub-quantisers of ``nbits`` bits (0:
    :func:`default_pq_m`), ``nprobe`` cells visited per query; k-means and the codebooks are trained
    on a seeded sample of at most 256 points per cell (faiss's own cap).
    """
    faiss = _faiss()
    if kind not in INDEX_KINDS:
        raise ValueError(f"unknown index kind {kind!r}; valid kinds: {', '.join(INDEX_KINDS)}")
    x = _as_gallery(features)
    n, dim = x.shape
    if kind == "flat":
        index = faiss.IndexFlatIP(dim)
    elif kind == "hnsw":
        for value, name in ((hnsw_m, "hnsw_m"), (ef_construction, "ef_construction"), (ef_search, "ef_search")):
            _check_positive_int(value, name)
        index = faiss.IndexHNSWFlat(dim, hnsw_m, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction, index.hnsw.efSearch = ef_construction, ef_search
    else:
        index = _ivf_pq(x, nlist or default_nlist(n), pq_m or default_pq_m(dim), nbits, nprobe, seed)
    index.add(x)
    return index


def _ivf_pq(x: np.ndarray, nlist: int, pq_m: int, nbits: int, nprobe: int, seed: int):
    """An untrained-then-trained ``IndexIVFPQ`` for the rows ``x`` (see :func:`build_index`)."""
    faiss = _faiss()
    n, dim = x.shape
    for value, name in ((nlist, "nlist"), (pq_m, "pq_m"), (nbits, "nbits"), (nprobe, "nprobe")):
        _check_positive_int(value, name)
    if dim % pq_m:
        raise ValueError(f"pq_m={pq_m} must divide the dimension D={dim} (each sub-quantiser codes D/pq_m dims)")
    if n < max(nlist, 2**nbits):
        raise ValueError(
            f"ivf-pq trains {nlist} cells and {2**nbits} centroids per sub-quantiser, so it needs at least "
            f"{max(nlist, 2**nbits)} vectors, got {n}; use kind='flat' or 'hnsw' for a gallery this small"
        )
    index = faiss.IndexIVFPQ(faiss.IndexFlatIP(dim), dim, nlist, pq_m, nbits, faiss.METRIC_INNER_PRODUCT)
    sample = np.random.default_rng(seed).permutation(n)[: 256 * nlist]
    index.cp.seed = index.pq.cp.seed = seed
    index.train(x[np.sort(sample)])
    index.nprobe = min(nprobe, nlist)
    return index


def search(index, queries: Any, k: int) -> tuple[Tensor, Tensor]:
    """The ``k`` nearest gallery rows of each query: cosine similarities (Q, k) float32, best first,
    and gallery indices (Q, k) int64. An approximate index may find fewer than k (inverted file
    cells with too few rows): those slots hold index -1 and similarity -inf."""
    count = int(index.ntotal)
    if count == 0:
        raise ValueError("the index is empty (0 gallery vectors); build it from at least one vector.")
    _check_positive_int(k, "k")
    if k > count:
        raise ValueError(f"k={k} exceeds the {count} vectors in the index; pass k <= {count}.")
    q = _as_gallery(queries, "queries")
    if q.shape[1] != index.d:
        raise ValueError(
            f"queries have D={q.shape[1]} but the index holds D={index.d} vectors; embed the queries with "
            "the encoder that embedded the gallery."
        )
    sims, ids = index.search(q, k)
    sims = torch.from_numpy(sims).float()
    return sims.masked_fill(torch.from_numpy(ids) < 0, float("-inf")), torch.from_numpy(ids).long()


def save_index(index, path: str | Path, **meta: Any) -> Path:
    """Write the index to ``path`` (faiss's format) and ``meta`` (plus kind, count and dimension) to
    ``path`` + ``.json`` beside it; returns ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _faiss().write_index(index, str(path))
    info = {"kind": index_kind(index), "count": int(index.ntotal), "dim": int(index.d), **meta}
    Path(f"{path}.json").write_text(json.dumps(info, indent=2))
    return path


def load_index(path: str | Path) -> tuple[Any, dict[str, Any]]:
    """(index, meta) written by :func:`save_index`; the meta is ``{}`` when the ``.json`` is missing."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no index at {path}; build one with `python -m contrastive_lab index`")
    index = _faiss().read_index(str(path))
    side = Path(f"{path}.json")
    return index, (json.loads(side.read_text()) if side.is_file() else {})


def index_kind(index) -> str:
    """``flat``, ``hnsw`` or ``ivf-pq`` for an index this module built."""
    faiss = _faiss()
    for kind, cls in (("hnsw", faiss.IndexHNSW), ("ivf-pq", faiss.IndexIVFPQ), ("flat", faiss.IndexFlat)):
        if isinstance(index, cls):
            return kind
    raise ValueError(f"{type(index).__name__} is not an index kind of this module ({', '.join(INDEX_KINDS)})")


def neighbour_recall(found: Tensor, exact: Tensor) -> float:
    r"""Recall of an approximate index against exact search: the mean over queries of
    :math:`|\text{found}_q \cap \text{exact}_q| / k` for the (Q, k) neighbour indices of both (the
    faiss benchmarks' "k-recall@k"). Slots holding -1 (not found) never count."""
    found, exact = torch.as_tensor(found), torch.as_tensor(exact)
    if found.shape != exact.shape or found.ndim != 2:
        raise ValueError(f"found and exact must be (Q, k) of the same shape, got {tuple(found.shape)} and "
                         f"{tuple(exact.shape)}")
    hits = (found.unsqueeze(2) == exact.unsqueeze(1)) & (found.unsqueeze(2) >= 0)
    return float(hits.any(2).float().sum(1).div(found.shape[1]).mean())


def _check_retrieval(query_feats, query_labels, gallery_feats, gallery_labels) -> tuple[Tensor, ...]:
    q = F.normalize(_as_features(query_feats, "query_feats"), dim=1)
    g = F.normalize(_as_features(gallery_feats, "gallery_feats"), dim=1)
    if q.shape[1] != g.shape[1]:
        raise ValueError(f"query_feats have D={q.shape[1]} but gallery_feats have D={g.shape[1]}.")
    return q, _as_labels(query_labels, len(q), "query_labels"), g, _as_labels(gallery_labels, len(g), "gallery_labels")


def _log_comb(n: Tensor, r: Tensor) -> Tensor:
    """log C(n, r) for n >= r >= 0 (float64)."""
    return torch.lgamma(n + 1) - torch.lgamma(r + 1) - torch.lgamma(n - r + 1)


def recall_at_k(query_feats: Any, query_labels: Any, gallery_feats: Any, gallery_labels: Any,
                ks: tuple[int, ...] = (1, 5, 10), batch_size: int = 512) -> dict[int, float]:
    r"""Recall@k of a retrieval by cosine similarity: the fraction of queries with at least one gallery
    item of their own class among their k nearest (the "Recall@K" of deep metric learning, Song et
    al. 2016, Sec. 5; Musgrave et al. 2020 call it precision@1 at k = 1).

    With ties at the k-th score, let :math:`n_>` items score above it (none of them of the query's
    class, else it is a hit), :math:`n_=` tie with it and :math:`p_=` of those have the query's class;
    the :math:`r = k - n_>` remaining slots take a uniformly random subset of the tied items, so the
    query is a hit with probability :math:`1 - \binom{n_= - p_=}{r} / \binom{n_=}{r}`.
    """
    q, yq, g, yg = _check_retrieval(query_feats, query_labels, gallery_feats, gallery_labels)
    for k in ks:
        _check_positive_int(k, "k")
        if k > len(g):
            raise ValueError(f"k={k} exceeds the {len(g)} gallery items; pass ks <= {len(g)}.")
    hits = {k: torch.zeros((), dtype=torch.float64) for k in ks}
    for start in range(0, len(q), _check_positive_int(batch_size, "batch_size")):
        sims = q[start:start + batch_size] @ g.T
        same = yq[start:start + batch_size, None] == yg[None, :]
        for k in ks:
            kth = sims.topk(k, dim=1).values[:, -1:]
            above, tied = sims > kth, sims == kth
            r = (k - above.sum(1)).double()
            n_tie, p_tie = tied.sum(1).double(), (tied & same).sum(1).double()
            free = n_tie - p_tie  # tied items of another class
            miss = torch.where(free >= r, (_log_comb(free.clamp(min=r), r) - _log_comb(n_tie, r)).exp(), 0.0)
            hits[k] += torch.where((above & same).any(1), 1.0, 1.0 - miss).sum()
    return {k: float(v / len(q)) for k, v in hits.items()}


def mean_average_precision(query_feats: Any, query_labels: Any, gallery_feats: Any, gallery_labels: Any,
                           batch_size: int = 256) -> float:
    r"""Mean over queries of the average precision of the gallery ranked by cosine similarity, the
    relevant items being those of the query's class:
    :math:`\mathrm{AP} = \frac{1}{P} \sum_{t:\,\text{relevant}} \mathrm{precision@}t`.

    Tied items are ranked in a uniformly random order and AP is its expectation (McSherry & Najork
    2008, Sec. 3): a tie group of :math:`n` items, :math:`p` relevant, after :math:`N` items of which
    :math:`P_<` are relevant, adds :math:`\sum_{j=1}^{n} \frac{p}{n}\,
    \frac{P_< + 1 + (j-1)\frac{p-1}{n-1}}{N + j}` (the j-th slot is relevant with probability p/n and
    then holds on average (j-1)(p-1)/(n-1) other relevant items before it). Without ties this is the
    usual AP. Every query's class must occur in the gallery (else its AP is undefined).
    """
    q, yq, g, yg = _check_retrieval(query_feats, query_labels, gallery_feats, gallery_labels)
    missing = sorted(set(yq.unique().tolist()) - set(yg.unique().tolist()))
    if missing:
        raise ValueError(f"query classes {missing[:5]} have no gallery item, so their average precision is "
                         "undefined; drop those queries or add gallery items of those classes.")
    total = torch.zeros((), dtype=torch.float64)
    for start in range(0, len(q), _check_positive_int(batch_size, "batch_size")):
        sims = q[start:start + batch_size] @ g.T
        same = (yq[start:start + batch_size, None] == yg[None, :]).double()
        total += _tie_aware_ap(sims, same).sum()
    return float(total / len(q))


def _tie_aware_ap(sims: Tensor, relevant: Tensor) -> Tensor:
    """The expected AP of each row (see :func:`mean_average_precision`); sims (B, G), relevant (B, G) 0/1."""
    b, n = sims.shape
    scores, order = sims.sort(dim=1, descending=True)
    rel = relevant.gather(1, order)
    new = torch.ones_like(scores, dtype=torch.bool)
    new[:, 1:] = scores[:, 1:] != scores[:, :-1]
    pos = torch.arange(n).expand(b, n)
    start = torch.where(new, pos, 0).cummax(1).values  # items before the tie group: N
    group = (new.cumsum(1) - 1) + torch.arange(b).unsqueeze(1) * n  # a global id per (row, group)
    size = torch.bincount(group.flatten(), minlength=b * n).double()[group]  # n of the group
    rel_in = torch.bincount(group.flatten(), weights=rel.flatten(), minlength=b * n)[group]  # p
    rel_before = (rel.cumsum(1) - rel).gather(1, start)  # P_<
    j = (pos - start + 1).double()
    inner = torch.where(size > 1, (j - 1) * (rel_in - 1) / (size - 1).clamp(min=1), 0.0)
    term = rel_in / size * (rel_before + 1 + inner) / (start + j)
    return term.sum(1) / rel.sum(1)


__all__ = [
    "INDEX_KINDS", "build_index", "default_nlist", "default_pq_m", "index_kind", "load_index",
    "mean_average_precision", "neighbour_recall", "recall_at_k", "save_index", "search",
]  # fmt: skip
