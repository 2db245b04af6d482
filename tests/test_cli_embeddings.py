"""The command line's embedding verbs (contrastive_lab/cli_embeddings.py): embed -> index -> search,
and clear errors for bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from contrastive_lab.cli import main
from contrastive_lab.cli_embeddings import read_embeddings, read_image
from contrastive_lab.evaluate import load_index
from tests.test_cli import TINY  # the tiny synthetic run every CLI test trains


@pytest.fixture(scope="module")
def gallery(tmp_path_factory):
    """A tiny trained run and its train split embedded: (run folder, train.npz)."""
    run = tmp_path_factory.mktemp("cli-embed") / "run"
    assert main(["train", "--preset", "simclr-cifar10-cpu", "--out", str(run), *TINY]) == 0
    npz = run / "train.npz"
    assert main(["embed", "--checkpoint", str(run / "checkpoints/last.pt"), "--dataset", "synthetic",
                 "--split", "train", "--out", str(npz)]) == 0
    return run, npz


def test_embed_records_where_the_features_came_from(gallery):
    run, npz = gallery
    emb = read_embeddings(npz)
    assert emb["features"].shape[0] == len(emb["labels"]) == 96
    assert emb["checkpoint"] == str((run / "checkpoints/last.pt").resolve())
    assert (emb["dataset"], emb["split"]) == ("synthetic", "train") and len(emb["classes"]) >= 2
    with np.load(npz, allow_pickle=False) as data:  # plain numpy reads it, no pickles
        assert data["features"].dtype == np.float32 and data["labels"].dtype == np.int64


@pytest.mark.parametrize("kind", ["flat", "hnsw"])
def test_index_then_search_prints_the_exact_neighbours_and_draws_them(gallery, kind, tmp_path, capsys):
    run, npz = gallery
    index_path = tmp_path / f"{kind}.faiss"
    assert main(["index", "--embeddings", str(npz), "--kind", kind, "--out", str(index_path)]) == 0
    assert "indexed 96 vectors" in capsys.readouterr().out
    meta = json.loads(index_path.with_name(f"{kind}.faiss.json").read_text())
    assert meta["kind"] == kind and meta["count"] == 96 and meta["embeddings"] == str(npz.resolve())

    # a gallery image as the query: its own row is its nearest neighbour, with cosine ~1
    emb = read_embeddings(npz)
    from contrastive_lab.engine import load_split
    from contrastive_lab.methods import load_method

    cfg, _ = load_method(run / "checkpoints/last.pt")
    images = load_split(cfg, "train").images
    query = tmp_path / "query.png"
    Image.fromarray(images[7].permute(1, 2, 0).numpy()).save(query)
    assert torch.equal(read_image(query, images.shape[-1]), images[7])  # png round trip is lossless
    figure = tmp_path / "grid.png"
    assert main(["search", "--index", str(index_path), "--image", str(query), "-k", "4", "--out", str(figure)]) == 0
    out = capsys.readouterr().out
    lines = [line for line in out.splitlines() if "gallery #" in line]
    assert len(lines) == 4 and lines[0].split()[2] == "#7" and float(lines[0].split()[-1]) > 0.99
    sims = torch.nn.functional.normalize(emb["features"], dim=1) @ torch.nn.functional.normalize(emb["features"][7], dim=0)
    expected = sims.topk(4).indices.tolist()
    assert [int(line.split()[2][1:]) for line in lines] == expected  # the exact 4 nearest rows
    assert figure.is_file() and figure.stat().st_size > 1000


def test_bad_input_gets_a_clear_error(gallery, tmp_path, capsys):
    run, npz = gallery

    def fails(argv, message):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert message in err, err

    fails(["index", "--embeddings", str(npz), "--kind", "annoy", "--out", str(tmp_path / "a.faiss")],
          "unknown index kind 'annoy'; valid kinds: flat, hnsw, ivf-pq")
    np.savez(tmp_path / "empty.npz", features=np.zeros((0, 8), np.float32), labels=np.zeros(0, np.int64))
    fails(["index", "--embeddings", str(tmp_path / "empty.npz"), "--out", str(tmp_path / "e.faiss")], "the gallery is empty")
    fails(["index", "--embeddings", str(tmp_path / "none.npz"), "--out", str(tmp_path / "n.faiss")], "no embeddings at")
    fails(["index", "--embeddings", str(npz), "--kind", "ivf-pq", "--out", str(tmp_path / "p.faiss")],
          "needs at least 256 vectors, got 96")

    index_path = tmp_path / "flat.faiss"
    assert main(["index", "--embeddings", str(npz), "--kind", "flat", "--out", str(index_path)]) == 0
    query = tmp_path / "q.png"
    Image.fromarray(np.zeros((20, 30, 3), np.uint8)).save(query)
    fails(["search", "--index", str(index_path), "--image", str(query), "-k", "97"], "pass 1 <= k <= 96")
    fails(["search", "--index", str(tmp_path / "missing.faiss"), "--image", str(query)], "no index at")
    fails(["search", "--index", str(index_path), "--image", str(tmp_path / "nope.png")], "no image at")
    (tmp_path / "bad.png").write_text("not an image")
    fails(["search", "--index", str(index_path), "--image", str(tmp_path / "bad.png")], "cannot read")

    # a gallery of 8-d vectors searched with the run's encoder (a different dimension)
    np.savez(tmp_path / "small.npz", features=np.random.default_rng(0).standard_normal((20, 8)).astype(np.float32))
    assert main(["index", "--embeddings", str(tmp_path / "small.npz"), "--out", str(tmp_path / "s.faiss")]) == 0
    fails(["search", "--index", str(tmp_path / "s.faiss"), "--image", str(query)], "names no checkpoint")
    fails(["search", "--index", str(tmp_path / "s.faiss"), "--image", str(query), "--checkpoint",
           str(run / "checkpoints/last.pt")], "dimension mismatch")
    assert load_index(tmp_path / "s.faiss")[1]["count"] == 20
