"""Chapter 10's checked exercises: the kNN novelty score by hand (10.1, against
``evaluate.knn_novelty_scores``), AUROC with ties counting one half (10.2, against
``evaluate.detection_metrics``, i.e. scikit-learn), and the exact re-ranking of an approximate
index's candidates (10.3, against a ``flat`` index of each query's candidates,
``evaluate.build_index`` + ``evaluate.search``)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from ..evaluate import build_index, detection_metrics, knn_novelty_scores, search
from .core import Case, Diagnosis, Exercise, register


def _rows(n: int, d: int, seed: int, dtype=torch.float32, spread: float = 0.0) -> Tensor:
    """n seeded Gaussian rows; ``spread`` > 0 scales row i by 10^u, u uniform in [-spread, spread]."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g)
    if spread:
        x = x * 10 ** (spread * (2 * torch.rand(n, 1, generator=g) - 1))
    return x.to(dtype)


# --------------------------------------------------------------------------------------------
# 10.1 the kNN novelty score
# --------------------------------------------------------------------------------------------


def _novelty_cases() -> list[Case]:
    train = _rows(40, 8, 0)
    duplicates = torch.cat([train[[3, 17]], _rows(2, 8, 1)])
    return [
        Case("40 training rows, 10 test rows, k=5", (train, _rows(10, 8, 2), 5)),
        Case("k = 1 (the nearest neighbour alone)", (train, _rows(10, 8, 3), 1)),
        Case("k = every training row", (_rows(12, 6, 4), _rows(5, 6, 5), 12)),
        Case("one test row", (train, _rows(1, 8, 6), 3)),
        Case("unnormalised rows (norms from 0.1 to 100)", (_rows(40, 8, 7, spread=1.5), _rows(10, 8, 8, spread=1.5), 5)),
        Case("bf16 features", (_rows(40, 8, 9, dtype=torch.bfloat16), _rows(10, 8, 10, dtype=torch.bfloat16), 5)),
        Case("test rows that are training rows (nearest distance 0), k=1", (train, duplicates, 1)),
    ]


def _sims(train: Tensor, test: Tensor, normalise: bool = True) -> Tensor:
    a, b = test.double(), train.double()
    if normalise:
        a, b = F.normalize(a, dim=1), F.normalize(b, dim=1)
    return a @ b.T  # (N_test, N_train)


register(Exercise(
    id="10.1",
    title="the kNN novelty score",
    cases=_novelty_cases,
    reference=knn_novelty_scores,
    hint="L2-normalise the rows of both sets, take the (N_test, N_train) cosine matrix, keep each test row's k "
         "largest cosines (torch.topk) and return 1 - their mean: the mean cosine DISTANCE to the k nearest "
         "training rows, one score per test row (higher = more novel).",
    diagnoses=(
        Diagnosis("the rows are not L2-normalised (dot products, not cosines)",
                  lambda tr, te, k: 1 - _sims(tr, te, normalise=False).topk(k, dim=1).values.mean(1)),
        Diagnosis("this is the distance to the k-th neighbour alone (Sun et al. 2022), not the mean over the k nearest",
                  lambda tr, te, k: 1 - _sims(tr, te).topk(k, dim=1).values[:, -1]),
        Diagnosis("these are similarities, not distances: the score is 1 - cosine (higher = more novel)",
                  lambda tr, te, k: _sims(tr, te).topk(k, dim=1).values.mean(1)),
        Diagnosis("these are the k farthest training rows, not the k nearest",
                  lambda tr, te, k: 1 - _sims(tr, te).topk(k, dim=1, largest=False).values.mean(1)),
    ),
))


# --------------------------------------------------------------------------------------------
# 10.2 AUROC
# --------------------------------------------------------------------------------------------


def library_auroc(scores: Tensor, is_novel: Tensor) -> float:
    """AUROC of ``scores`` (higher = more novel) from :func:`evaluate.detection_metrics` (scikit-learn)."""
    return detection_metrics(scores, is_novel)["auroc"]


def _labels(n: int, n_novel: int, seed: int) -> Tensor:
    flags = torch.zeros(n, dtype=torch.bool)
    flags[torch.randperm(n, generator=torch.Generator().manual_seed(seed))[:n_novel]] = True
    return flags


def _auroc_cases() -> list[Case]:
    y = _labels(100, 20, 0)
    noisy = torch.randn(100, generator=torch.Generator().manual_seed(1)) + 0.8 * y
    return [
        Case("100 rows, 20 novel", (noisy, y)),
        Case("one novel and one normal row", (torch.tensor([0.3, 0.7]), torch.tensor([False, True]))),
        Case("many ties (scores rounded to 0.5)", ((2 * noisy).round() / 2, y)),
        Case("bf16 scores (rounding makes ties)", (noisy.to(torch.bfloat16), y)),
        Case("a perfect detector", (y.float() + 0.01 * noisy.abs(), y)),
        Case("a detector below chance (novel rows score lower)", (-noisy, y)),
        Case("every score equal", (torch.full((10,), 0.25), _labels(10, 3, 2))),
    ]


def _pairs(scores: Tensor, is_novel: Tensor) -> Tensor:
    s = scores.double()
    return s[is_novel][:, None] - s[~is_novel][None, :]  # (novel, normal) differences


register(Exercise(
    id="10.2",
    title="AUROC, ties counting one half",
    cases=_auroc_cases,
    reference=library_auroc,
    hint="over every (novel, normal) pair, count 1 when the novel row scores higher, 1/2 when they tie, 0 when "
         "it scores lower; return the mean over the n_novel x n_normal pairs (a Python float).",
    diagnoses=(
        Diagnosis("ties count 0 (strictly greater only); a tie between a novel and a normal row counts 1/2",
                  lambda s, y: float((_pairs(s, y) > 0).double().mean())),
        Diagnosis("ties count 1 (>=); a tie between a novel and a normal row counts 1/2",
                  lambda s, y: float((_pairs(s, y) >= 0).double().mean())),
        Diagnosis("the direction is flipped: a higher score means more novel, so count novel rows scoring ABOVE "
                  "normal ones", lambda s, y: 1.0 - library_auroc(s, y)),
    ),
))


# --------------------------------------------------------------------------------------------
# 10.3 exact re-ranking of candidates
# --------------------------------------------------------------------------------------------


def library_rerank(gallery: Tensor, queries: Tensor, candidates: Tensor, k: int) -> Tensor:
    """For each query, the k candidates (gallery row ids, -1 = not found and skipped) with the largest
    exact cosine, best first: a ``flat`` index of its candidates' rows, searched. (Q, k) int64."""
    out = []
    for query, cand in zip(queries, candidates):
        valid = cand[cand >= 0]
        _, pos = search(build_index(gallery[valid], "flat"), query[None], k)
        out.append(valid[pos[0]])
    return torch.stack(out)


def _candidates(n_queries: int, n_gallery: int, n_cand: int, seed: int, missing: int = 0) -> Tensor:
    """Distinct random gallery ids per query; the last ``missing`` slots of every row are -1 (not found)."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.stack([torch.randperm(n_gallery - 1, generator=g)[:n_cand] for _ in range(n_queries)])
    if missing:
        ids[:, -missing:] = -1
    return ids


def _rerank_cases() -> list[Case]:
    gallery, queries = _rows(200, 16, 0), _rows(20, 16, 1)
    lured = gallery.clone()
    lured[-1] = queries[0] + 0.01 * queries[1]  # the last row: the best match of query 0, never a candidate
    return [
        Case("20 queries, 200 gallery rows, 30 candidates, k=10", (gallery, queries, _candidates(20, 200, 30, 2), 10)),
        Case("k = 1", (gallery, queries, _candidates(20, 200, 30, 3), 1)),
        Case("k = every candidate (only the order changes)", (gallery, queries[:4], _candidates(4, 200, 8, 4), 8)),
        Case("one query", (gallery, queries[:1], _candidates(1, 200, 50, 5), 5)),
        Case("unnormalised gallery rows (norms from 0.1 to 10)",
             (_rows(200, 16, 6, spread=1.0), queries, _candidates(20, 200, 30, 7), 10)),
        Case("slots not found (-1), the last gallery row closest to query 0",
             (lured, queries[:3], _candidates(3, 200, 30, 8, missing=12), 10)),
        Case("bf16 features", (gallery.bfloat16(), queries.bfloat16(), _candidates(20, 200, 30, 9), 10)),
    ]


def _ranked(gallery, queries, candidates, k, *, normalise=True, descending=True, drop_missing=True, positions=False):
    """Re-ranking with one step changed (for the diagnoses)."""
    out = []
    for query, cand in zip(queries, candidates):
        keep = cand >= 0 if drop_missing else torch.ones_like(cand, dtype=torch.bool)
        rows, q = gallery[cand[keep]].double(), query.double()
        sims = F.normalize(rows, dim=1) @ F.normalize(q, dim=0) if normalise else rows @ q
        order = sims.argsort(descending=descending)[:k]
        out.append(keep.nonzero().flatten()[order] if positions else cand[keep][order])
    return torch.stack(out)


register(Exercise(
    id="10.3",
    title="exact re-ranking of an index's candidates",
    cases=_rerank_cases,
    reference=library_rerank,
    hint="for each query, drop the -1 slots, take the cosine of the query with each remaining candidate's gallery "
         "row (both L2-normalised), sort descending and return the gallery row ids (the values in `candidates`, "
         "not positions in the list) of the k best: a (Q, k) int64 tensor.",
    diagnoses=(
        Diagnosis("these are positions in the candidate list, not gallery row ids",
                  lambda *a: _ranked(*a, positions=True)),
        Diagnosis("the gallery rows are not L2-normalised (ranked by dot product, not cosine)",
                  lambda *a: _ranked(*a, normalise=False)),
        Diagnosis("a -1 slot (not found) was read as gallery row -1, the last row; skip those slots",
                  lambda *a: _ranked(*a, drop_missing=False)),
        Diagnosis("these are the k least similar candidates (sorted ascending)",
                  lambda *a: _ranked(*a, descending=False)),
    ),
    rtol=0.0, atol=0.0,
))
