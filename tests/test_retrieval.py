"""Retrieval (contrastive_lab.evaluate.retrieval): faiss indexes against exact torch search, and
recall@k / mAP against brute-force references, with and without tied scores."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sklearn.metrics import average_precision_score

from contrastive_lab.evaluate import (
    INDEX_KINDS,
    build_index,
    default_nlist,
    default_pq_m,
    index_kind,
    load_index,
    mean_average_precision,
    measure_index,
    neighbour_recall,
    recall_at_k,
    save_index,
    search,
    tile_with_noise,
)


def exact_torch_search(queries: torch.Tensor, gallery: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The reference: every cosine similarity in float64, the k largest."""
    sims = F.normalize(queries.double(), dim=1) @ F.normalize(gallery.double(), dim=1).T
    top = sims.topk(k, dim=1)
    return top.values, top.indices


def clustered(n: int, dim: int, clusters: int, seed: int, spread: float = 0.3) -> tuple[torch.Tensor, torch.Tensor]:
    """Gaussian clusters around random centres: features with structure, as embeddings have."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(clusters, dim, generator=g)
    labels = torch.randint(0, clusters, (n,), generator=g)
    return centres[labels] + spread * torch.randn(n, dim, generator=g), labels


def test_flat_index_returns_the_neighbours_of_exact_torch_search():
    gallery, _ = clustered(3000, 48, 10, seed=0, spread=1.0)
    queries, _ = clustered(200, 48, 10, seed=1, spread=1.0)
    sims, ids = search(build_index(gallery, "flat"), queries, 10)
    ref_sims, ref_ids = exact_torch_search(queries, gallery, 10)
    assert torch.equal(ids, ref_ids)
    torch.testing.assert_close(sims.double(), ref_sims, atol=1e-5, rtol=0)
    assert sims.dtype == torch.float32 and ids.dtype == torch.int64 and sims.shape == (200, 10)


def test_hnsw_recall_at_10_against_exact_search_is_at_least_095():
    # reachable: clusters as spread out as their centres (tight, far-apart clusters need a larger
    # ef_search: at spread 0.5 the same index finds 0.71 at ef_search=64 and 0.95 at 256)
    gallery, _ = clustered(10_000, 32, 50, seed=2, spread=1.0)
    queries, _ = clustered(500, 32, 50, seed=3, spread=1.0)
    exact = search(build_index(gallery, "flat"), queries, 10)[1]
    found = search(build_index(gallery, "hnsw", ef_search=128), queries, 10)[1]
    assert neighbour_recall(found, exact) >= 0.95
    fewer = search(build_index(gallery, "hnsw", ef_search=16), queries, 10)[1]
    assert neighbour_recall(fewer, exact) < neighbour_recall(found, exact)  # ef_search is the recall knob


def test_ivf_pq_recall_grows_with_the_cells_it_visits():
    gallery, _ = clustered(6000, 32, 20, seed=4, spread=0.5)
    queries, _ = clustered(300, 32, 20, seed=5, spread=0.5)
    exact = search(build_index(gallery, "flat"), queries, 10)[1]
    recalls = [neighbour_recall(search(build_index(gallery, "ivf-pq", nlist=64, nprobe=p), queries, 10)[1], exact)
               for p in (1, 8, 64)]
    assert recalls[0] < recalls[1] <= recalls[2]
    assert recalls[2] > 0.3  # PQ codes of 4 bytes (32/8) still find a third of the true neighbours
    assert default_nlist(6000) == 77 and default_nlist(100) == 2 and default_pq_m(256) == 32 and default_pq_m(30) == 3


@pytest.mark.parametrize("kind", INDEX_KINDS)
def test_saved_index_loads_back_with_the_same_answers_and_its_meta(kind, tmp_path):
    gallery, _ = clustered(2000, 16, 8, seed=6)
    queries, _ = clustered(20, 16, 8, seed=7)
    index = build_index(gallery, kind, nlist=16)
    path = save_index(index, tmp_path / "sub" / "index.faiss", embeddings="train.npz")
    loaded, meta = load_index(path)
    assert meta == {"kind": kind, "count": 2000, "dim": 16, "embeddings": "train.npz"}
    assert index_kind(loaded) == kind
    a, b = search(index, queries, 5), search(loaded, queries, 5)
    assert torch.equal(a[1], b[1]) and torch.equal(a[0], b[0])


def test_bad_input_gets_a_clear_error(tmp_path):
    gallery = torch.randn(50, 8)
    with pytest.raises(ValueError, match="unknown index kind 'annoy'; valid kinds: flat, hnsw, ivf-pq"):
        build_index(gallery, "annoy")
    with pytest.raises(ValueError, match="empty"):
        build_index(torch.zeros(0, 8), "flat")
    index = build_index(gallery, "flat")
    with pytest.raises(ValueError, match="k=51 exceeds the 50 vectors"):
        search(index, torch.randn(2, 8), 51)
    with pytest.raises(ValueError, match="queries have D=4 but the index holds D=8"):
        search(index, torch.randn(2, 4), 3)
    with pytest.raises(ValueError, match="NaN"):
        build_index(torch.full((3, 8), float("nan")), "flat")
    with pytest.raises(ValueError, match="needs at least 256 vectors"):
        build_index(gallery, "ivf-pq")
    with pytest.raises(ValueError, match="pq_m=3 must divide"):
        build_index(torch.randn(300, 8), "ivf-pq", pq_m=3)
    with pytest.raises(FileNotFoundError, match="no index at"):
        load_index(tmp_path / "missing.faiss")
    with pytest.raises(ValueError, match="D=8 but gallery_feats have D=4"):
        recall_at_k(torch.randn(3, 8), torch.zeros(3, dtype=torch.long), torch.randn(5, 4), torch.zeros(5, dtype=torch.long))
    with pytest.raises(ValueError, match="k=6 exceeds the 5 gallery items"):
        recall_at_k(torch.randn(3, 4), torch.zeros(3, dtype=torch.long), torch.randn(5, 4),
                    torch.zeros(5, dtype=torch.long), ks=(6,))
    with pytest.raises(ValueError, match=r"query classes \[1\] have no gallery item"):
        mean_average_precision(torch.randn(2, 4), torch.tensor([0, 1]), torch.randn(5, 4), torch.zeros(5, dtype=torch.long))


def test_neighbour_recall_counts_the_shared_neighbours():
    found = torch.tensor([[1, 2, 3], [7, -1, 8]])
    exact = torch.tensor([[3, 4, 1], [9, -1, 7]])
    assert neighbour_recall(found, exact) == pytest.approx((2 / 3 + 1 / 3) / 2)  # -1 (not found) never counts
    with pytest.raises(ValueError, match="same shape"):
        neighbour_recall(found[:, :2], exact)


# ------------------------------------------------------------------------------------------------
# recall@k and mAP: brute force over every ordering of the gallery (ties broken every possible way)
# ------------------------------------------------------------------------------------------------


def ranking_metrics_by_loop(sims: list[float], relevant: list[bool], ks) -> tuple[dict[int, float], float]:
    """hit@k and AP of one ranking, read off the ranked list item by item."""
    hits = {k: float(any(relevant[:k])) for k in ks}
    found, precisions = 0, []
    for rank, rel in enumerate(relevant, 1):
        if rel:
            found += 1
            precisions.append(found / rank)
    return hits, sum(precisions) / max(found, 1)


def brute_force_reference(q, yq, g, yg, ks) -> tuple[dict[int, float], float]:
    """The expectation over uniformly random tie-breaking, by enumeration: for every permutation of the
    gallery, rank by a stable descending sort (so ties keep the permuted order) and average."""
    qn, gn = F.normalize(q.double(), dim=1), F.normalize(g.double(), dim=1)
    perms = list(itertools.permutations(range(len(g))))
    recall, ap = dict.fromkeys(ks, 0.0), 0.0
    for i in range(len(q)):
        for perm in perms:
            p = torch.tensor(perm)
            sims = (gn[p] @ qn[i]).tolist()
            order = sorted(range(len(p)), key=lambda j: -sims[j])  # Python's sort is stable
            hits, a = ranking_metrics_by_loop([sims[j] for j in order], [bool(yg[p[j]] == yq[i]) for j in order], ks)
            for k in ks:
                recall[k] += hits[k] / len(perms) / len(q)
            ap += a / len(perms) / len(q)
    return recall, ap


@pytest.mark.parametrize("seed", range(6))
def test_recall_and_map_with_ties_equal_the_expectation_over_every_tie_order(seed):
    # entries +-1 in 4-d: every row has norm 2, every cosine is a multiple of 1/4 and exact in float32,
    # so tied scores are truly equal (many ties: 16 possible vectors, 5 possible cosines)
    g = torch.Generator().manual_seed(seed)
    gallery = torch.randint(0, 2, (6, 4), generator=g).float() * 2 - 1
    queries = torch.randint(0, 2, (4, 4), generator=g).float() * 2 - 1
    yg = torch.randint(0, 3, (6,), generator=g)
    yq = yg[torch.randint(0, 6, (4,), generator=g)]  # every query class occurs in the gallery
    ks = (1, 2, 3, 5)
    ref_recall, ref_ap = brute_force_reference(queries, yq, gallery, yg, ks)
    recall = recall_at_k(queries, yq, gallery, yg, ks=ks)
    for k in ks:
        assert recall[k] == pytest.approx(ref_recall[k], abs=1e-9), k
    assert mean_average_precision(queries, yq, gallery, yg) == pytest.approx(ref_ap, abs=1e-9)


def test_tie_aware_metrics_do_not_depend_on_the_gallery_order():
    g = torch.Generator().manual_seed(11)
    gallery = torch.randint(0, 2, (40, 4), generator=g).float() * 2 - 1
    yg = torch.randint(0, 4, (40,), generator=g)
    queries, yq = gallery[:10] * -1, yg[:10]
    perm = torch.randperm(40, generator=g)
    a = recall_at_k(queries, yq, gallery, yg, ks=(1, 5)), mean_average_precision(queries, yq, gallery, yg)
    b = recall_at_k(queries, yq, gallery[perm], yg[perm], ks=(1, 5)), mean_average_precision(queries, yq, gallery[perm], yg[perm])
    assert a[0] == pytest.approx(b[0]) and a[1] == pytest.approx(b[1])


def test_recall_and_map_without_ties_equal_a_loop_and_scikit_learn():
    features, labels = clustered(790, 24, 6, seed=8, spread=1.5)  # queries and gallery share the clusters
    queries, yq, gallery, yg = features[:90], labels[:90], features[90:], labels[90:]
    sims = F.normalize(queries.double(), dim=1) @ F.normalize(gallery.double(), dim=1).T
    ks = (1, 5, 10)
    loop_recall, loop_ap, sk_ap = dict.fromkeys(ks, 0.0), 0.0, 0.0
    for i in range(len(queries)):
        order = sims[i].argsort(descending=True)
        hits, ap = ranking_metrics_by_loop(sims[i, order].tolist(), (yg[order] == yq[i]).tolist(), ks)
        for k in ks:
            loop_recall[k] += hits[k] / len(queries)
        loop_ap += ap / len(queries)
        sk_ap += average_precision_score((yg == yq[i]).numpy(), sims[i].numpy()) / len(queries)
    recall = recall_at_k(queries, yq, gallery, yg, ks=ks, batch_size=32)  # several chunks
    for k in ks:
        assert recall[k] == pytest.approx(loop_recall[k], abs=1e-9)
    m = mean_average_precision(queries, yq, gallery, yg, batch_size=32)
    assert m == pytest.approx(loop_ap, abs=1e-6) and m == pytest.approx(sk_ap, abs=1e-6)
    assert 0.2 < recall[1] < recall[5] < recall[10] <= 1.0  # the clusters make the classes retrievable


def test_search_marks_cells_that_found_too_few_rows():
    rng = np.random.default_rng(0)
    gallery = torch.from_numpy(rng.standard_normal((400, 8)).astype(np.float32))
    index = build_index(gallery, "ivf-pq", nlist=10, nprobe=1, pq_m=2, nbits=4)
    sims, ids = search(index, gallery[:5], 100)  # one cell of ~40 rows cannot hold 100 neighbours
    assert (ids == -1).any() and torch.isinf(sims[ids == -1]).all()


def test_tiled_gallery_is_unit_rows_near_their_source_and_seeded():
    real, _ = clustered(300, 16, 5, seed=12)
    tiled = tile_with_noise(real, 1000, noise=0.5, seed=0)
    assert tiled.shape == (1000, 16)
    torch.testing.assert_close(tiled.norm(dim=1), torch.ones(1000))
    source = F.normalize(real, dim=1)[torch.arange(1000) % 300]
    cos_to_source = (tiled * source).sum(1)
    sims = F.normalize(real, dim=1) @ F.normalize(real, dim=1).T
    nn_cos = sims.fill_diagonal_(-2).max(1).values.median()
    assert cos_to_source.min() > 0.8 and cos_to_source.median() > nn_cos  # perturbed, but closer than a neighbour
    assert torch.equal(tile_with_noise(real, 1000, noise=0.5, seed=0), tiled)
    assert not torch.equal(tile_with_noise(real, 1000, noise=0.5, seed=1), tiled)


def test_measure_index_reports_recall_against_flat_for_each_knob_setting():
    gallery, _ = clustered(3000, 16, 10, seed=13, spread=1.0)
    queries = gallery[:50] + 0.1
    flat = measure_index(gallery, queries, "flat")
    assert flat["runs"][0]["recall"] == 1.0 and flat["bytes"] >= 3000 * 16 * 4 and flat["build_seconds"] >= 0
    hnsw = measure_index(gallery, queries, "hnsw", (4, 128), exact=flat["ids"])
    assert [r["knob"] for r in hnsw["runs"]] == [4, 128] and hnsw["knob"] == "efSearch"
    assert hnsw["runs"][0]["recall"] <= hnsw["runs"][1]["recall"] and hnsw["runs"][1]["recall"] > 0.9
    assert hnsw["runs"][1]["recall"] == neighbour_recall(hnsw["ids"], flat["ids"])
    assert all(r["queries_per_s"] > 0 for r in hnsw["runs"])
    with pytest.raises(ValueError, match="needs exact="):
        measure_index(gallery, queries, "ivf-pq", (1,))
