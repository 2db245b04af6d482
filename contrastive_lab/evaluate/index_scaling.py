"""How approximate vector indexes trade recall for speed as the gallery grows (chapter 10 on 100k
vectors, ``benchmarks/bench_index.py`` on 1M).

cifar10-mini has 5085 training images, far too few for approximate search to matter, so the large
galleries are *made*: :func:`tile_with_noise` repeats real embeddings with a small Gaussian
perturbation each (said plainly wherever its numbers are shown). :func:`measure_index` builds one
index kind and measures what a reader of a benchmark table wants: build seconds, bytes, queries
per second, and the recall of the k nearest neighbours against exact (``flat``) search, for each
setting of the index's search-time knob (HNSW's ``efSearch``, IVF-PQ's ``nprobe``).
"""

from __future__ import annotations

import time
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from ._checks import _as_features, _check_positive_int
from .retrieval import _faiss, build_index, neighbour_recall, search

KNOBS = {"flat": None, "hnsw": "efSearch", "ivf-pq": "nprobe"}


def tile_with_noise(features: Any, n: int, noise: float = 0.5, seed: int = 0) -> Tensor:
    r"""``n`` unit rows made from the rows of ``features``: row i is the L2-normalised
    :math:`\hat e_{i \bmod N} + \sigma \varepsilon_i`, :math:`\varepsilon_i \sim \mathcal N(0, I_D)`, with
    :math:`\sigma = \text{noise} \cdot m / \sqrt{D}`, m the median distance of a normalised real row
    to its nearest other row. So each perturbation is about ``noise`` times a typical nearest-neighbour
    gap: copies of one image do not all crowd together, and the neighbours of a query mix copies of
    many images, as a real large gallery would. (Real embeddings of 1M different images would be
    clustered differently; this is a stand-in, not a measurement on real data.)"""
    x = F.normalize(_as_features(features, "features"), dim=1)
    _check_positive_int(n, "n")
    if len(x) < 2:
        raise ValueError("tile_with_noise needs at least 2 rows (the noise is scaled by nearest-neighbour gaps)")
    sims = x @ x.T
    sims.fill_diagonal_(-2.0)
    gap = (2 - 2 * sims.max(1).values).clamp(min=0).sqrt().median()
    sigma = float(noise) * float(gap) / x.shape[1] ** 0.5
    g = torch.Generator().manual_seed(seed)
    out = torch.empty(n, x.shape[1])
    for start in range(0, n, 65536):  # in blocks: a 1M x 256 noise tensor would double the memory
        rows = torch.arange(start, min(n, start + 65536))
        out[rows] = F.normalize(x[rows % len(x)] + sigma * torch.randn(len(rows), x.shape[1], generator=g), dim=1)
    return out


def index_bytes(index) -> int:
    """Bytes of the index serialised (its vectors or codes, graph links and tables; what it occupies
    in memory, to within faiss's allocation slack)."""
    return int(_faiss().serialize_index(index).nbytes)


def measure_index(gallery: Tensor, queries: Tensor, kind: str, knob_values: tuple[int, ...] = (),
                  exact: Tensor | None = None, k: int = 10, **build: Any) -> dict[str, Any]:
    """Build a ``kind`` index of ``gallery`` and search ``queries`` (one batch, faiss's threads) at
    each ``knob_values`` setting (``efSearch`` for hnsw, ``nprobe`` for ivf-pq; flat has none).

    Returns ``build_seconds``, ``bytes``, and ``runs``: one ``{knob, queries_per_s, ms_per_query,
    recall}`` per setting, ``recall`` being :func:`~contrastive_lab.evaluate.neighbour_recall` of
    the k neighbours against ``exact`` (the flat index's, or 1.0 for flat itself). Also ``ids``, the
    neighbours of the last setting (flat: the exact answer to pass as ``exact`` next)."""
    if kind != "flat" and exact is None:
        raise ValueError(f"measuring {kind} needs exact=, the flat index's neighbours (measure 'flat' first)")
    start = time.perf_counter()
    index = build_index(gallery, kind, **build)
    seconds = time.perf_counter() - start
    knob = KNOBS[kind]
    runs, ids = [], None
    for value in (knob_values if knob else (None,)):
        if knob == "efSearch":
            index.hnsw.efSearch = value
        elif knob == "nprobe":
            index.nprobe = value
        t0 = time.perf_counter()
        _, ids = search(index, queries, k)
        dt = time.perf_counter() - t0
        recall = 1.0 if exact is None else neighbour_recall(ids, exact)
        runs.append({"knob": value, "queries_per_s": len(queries) / dt, "ms_per_query": 1e3 * dt / len(queries),
                     "recall": recall})
    return {"kind": kind, "knob": knob, "count": len(gallery), "build_seconds": seconds, "bytes": index_bytes(index),
            "runs": runs, "ids": ids}


__all__ = ["KNOBS", "index_bytes", "measure_index", "tile_with_noise"]
