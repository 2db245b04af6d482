"""The command line's embedding verbs: ``embed`` (features h to .npz), ``index`` (a faiss index of
them) and ``search`` (an image's nearest gallery images). Chapter 10 uses all three.

    embed  --checkpoint CKPT --dataset NAME --split SPLIT --out RUN/train.npz
    index  --embeddings RUN/train.npz --kind flat|hnsw|ivf-pq --out RUN/index.faiss
    search --index RUN/index.faiss --image query.png [more.png ...] -k 8 [--out grid.png]

``embed`` writes ``features`` (N x D float32) and ``labels`` (N int64), plus where they came from
(``checkpoint``, ``dataset``, ``split``, ``data_root``, ``classes``) so that ``index`` and ``search``
can find the encoder and the gallery images again. ``index`` writes the faiss file and, beside it,
``index.faiss.json`` (kind, count, dimension, the embeddings file, build seconds). ``search`` embeds
each query image with the checkpoint's encoder, prints its k nearest gallery items and draws them.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import torch
from PIL import Image

from .config import Config
from .engine import encode, load_split, resolve_device
from .evaluate import INDEX_KINDS, build_index, load_index, save_index, search
from .methods import load_method
from .plots import neighbour_grid

SOURCE_KEYS = ("checkpoint", "dataset", "split", "data_root")


def add_parsers(verbs, fmt) -> None:
    """The ``embed``, ``index`` and ``search`` sub-commands, on the CLI's sub-parser collection."""
    em = verbs.add_parser("embed", help="write encoder features h of a dataset split to .npz", formatter_class=fmt)
    em.add_argument("--checkpoint", required=True, help="path to a last.pt written by train")
    em.add_argument("--dataset", required=True, help="dataset name (cifar10, cifar100, stl10, synthetic, ...)")
    em.add_argument("--split", default="test", help="dataset split")
    em.add_argument("--out", required=True, help="output .npz with arrays features (N x D float32) and labels")
    em.add_argument("--data-root", default=None, help="data root (default: $CONTRASTIVE_LAB_DATA or data/)")

    ix = verbs.add_parser("index", help="build a faiss index of embed's features", formatter_class=fmt)
    ix.add_argument("--embeddings", required=True, help=".npz written by embed (the gallery)")
    ix.add_argument("--kind", default="hnsw", help=f"index kind: {' | '.join(INDEX_KINDS)}")
    ix.add_argument("--out", required=True, help="index file to write (its settings go to OUT.json)")
    ix.add_argument("--hnsw-m", type=int, default=32, help="hnsw: links per node")
    ix.add_argument("--ef-search", type=int, default=64, help="hnsw: candidates kept while searching")
    ix.add_argument("--nlist", type=int, default=0, help="ivf-pq: inverted-file cells (0: about sqrt(N))")
    ix.add_argument("--nprobe", type=int, default=8, help="ivf-pq: cells visited per query")

    se = verbs.add_parser("search", help="nearest gallery images of query images", formatter_class=fmt)
    se.add_argument("--index", required=True, help="index file written by the index verb")
    se.add_argument("--image", required=True, nargs="+", help="query image file(s) (png, jpg, ...)")
    se.add_argument("-k", type=int, default=8, help="neighbours per query")
    se.add_argument("--checkpoint", default=None, help="encoder for the queries (default: the one that embedded the gallery)")
    se.add_argument("--out", default=None, help="grid figure (default: search_<first image>.png beside the index)")


def cmd_embed(args) -> dict:
    out = Path(args.out)
    if out.suffix != ".npz":
        raise ValueError(f"--out must end in .npz, got {out}")
    cfg, method = load_method(args.checkpoint)
    ds = gallery_dataset(cfg, args.dataset, args.split, args.data_root or cfg.data_root)
    device = resolve_device(cfg, 0)
    feats = encode(method.encoder.to(device), ds.images, cfg, device)
    out.parent.mkdir(parents=True, exist_ok=True)
    source = {"checkpoint": str(Path(args.checkpoint).resolve()), "dataset": args.dataset, "split": args.split,
              "data_root": str(args.data_root or cfg.data_root or "")}
    np.savez(out, features=feats.float().numpy().astype(np.float32), labels=ds.labels.numpy().astype(np.int64),
             classes=np.array(list(getattr(ds, "classes", []) or []), dtype=str),
             **{k: np.array(v) for k, v in source.items()})
    print(f"wrote {out}: features {tuple(feats.shape)} float32, labels ({len(ds.labels)},)")
    return {"out": str(out), "n": len(ds.labels), "dim": int(feats.shape[1])}


def gallery_dataset(cfg: Config, dataset: str, split: str, data_root: str | None):
    """The in-memory split ``embed`` encodes (and ``search`` draws), read as the checkpoint's run reads data."""
    ds = load_split(cfg.replace(dataset=dataset, data_root=data_root or None), split)
    if not hasattr(ds, "images"):
        raise ValueError(f"embed writes in-memory datasets (cifar10, cifar100, stl10, synthetic); {dataset} "
                         "streams from disk")
    return ds


def read_embeddings(path: str | Path) -> dict[str, Any]:
    """The arrays of an ``embed`` .npz: ``features`` (N, D) float32 (N >= 1), ``labels`` if present,
    and the source strings (``checkpoint``, ``dataset``, ``split``, ``data_root``, ``classes``)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no embeddings at {path}; write them with `python -m contrastive_lab embed`")
    with np.load(path, allow_pickle=False) as data:
        arrays = {key: data[key] for key in data.files}
    if "features" not in arrays:
        raise ValueError(f"{path} has no 'features' array (it has {sorted(arrays)}); is it a file written by embed?")
    features = arrays["features"]
    if features.ndim != 2 or len(features) == 0:
        raise ValueError(f"{path}: the gallery is empty or not (N, D): features have shape {features.shape}; "
                         "embed a split with at least one image")
    out: dict[str, Any] = {"features": torch.from_numpy(features.astype(np.float32)), "path": str(path.resolve())}
    if "labels" in arrays:
        out["labels"] = torch.from_numpy(arrays["labels"].astype(np.int64))
    out["classes"] = [str(c) for c in arrays.get("classes", [])]
    out.update({k: str(arrays[k]) for k in SOURCE_KEYS if k in arrays})
    return out


def cmd_index(args) -> dict:
    emb = read_embeddings(args.embeddings)
    params: dict[str, Any] = {"flat": {}, "hnsw": {"hnsw_m": args.hnsw_m, "ef_search": args.ef_search},
                              "ivf-pq": {"nlist": args.nlist, "nprobe": args.nprobe}}.get(args.kind, {})
    start = time.perf_counter()
    index = build_index(emb["features"], args.kind, **params)
    seconds = time.perf_counter() - start
    out = save_index(index, args.out, embeddings=emb["path"], build_seconds=round(seconds, 3), params=params,
                     **{k: emb[k] for k in SOURCE_KEYS if k in emb})
    n, dim = emb["features"].shape
    print(f"indexed {n} vectors ({dim}-d) from {args.embeddings} as {args.kind} in {seconds:.2f} s -> {out} "
          f"({out.stat().st_size / 1e6:.2f} MB)")
    return {"out": str(out), "kind": args.kind, "count": n, "dim": dim}


def read_image(path: str | Path, size: int) -> torch.Tensor:
    """A query image as a (3, size, size) uint8 tensor: RGB, the centred square, resized (antialiased)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no image at {path}")
    try:
        image = Image.open(path).convert("RGB")
    except OSError as err:
        raise ValueError(f"cannot read {path} as an image ({err})") from err
    side = min(image.size)
    left, top = (image.width - side) // 2, (image.height - side) // 2
    image = image.crop((left, top, left + side, top + side)).resize((size, size), Image.Resampling.BILINEAR)
    return torch.from_numpy(np.asarray(image).copy()).permute(2, 0, 1)


def cmd_search(args) -> dict:
    index, meta = load_index(args.index)
    if not 1 <= args.k <= index.ntotal:
        raise ValueError(f"-k {args.k}: pass 1 <= k <= {index.ntotal}, the number of vectors in the index")
    checkpoint = args.checkpoint or meta.get("checkpoint")
    if not checkpoint:
        raise ValueError(f"{args.index}.json names no checkpoint; pass --checkpoint (the encoder of the gallery)")
    cfg, method = load_method(checkpoint)
    device = resolve_device(cfg, 0)
    queries = torch.stack([read_image(p, cfg.evaluation_size()) for p in args.image])
    feats = encode(method.encoder.to(device), queries, cfg, device)
    if feats.shape[1] != index.d:
        raise ValueError(f"dimension mismatch: {checkpoint}'s encoder gives {feats.shape[1]}-d features but the "
                         f"index holds {index.d}-d vectors; pass the --checkpoint that embedded the gallery")
    sims, ids = search(index, feats, args.k)
    emb = read_embeddings(meta["embeddings"]) if meta.get("embeddings") else {}
    labels, classes = emb.get("labels"), emb.get("classes") or []
    name = lambda i: (classes[labels[i]] if classes else f"class {int(labels[i])}") if labels is not None else ""
    for q, path in enumerate(args.image):
        print(f"{path}: {args.k} nearest of {index.ntotal} ({meta.get('kind', 'index')})")
        for rank, (i, s) in enumerate(zip(ids[q].tolist(), sims[q].tolist()), 1):
            print(f"  {rank:2d}. gallery #{i:<7d} {name(i) if i >= 0 else '(not found)':12s} cos {s:.3f}")
    figure = _draw(args, meta, cfg, queries, ids, sims, name)
    return {"neighbours": ids.tolist(), "similarities": sims.tolist(), "figure": str(figure) if figure else None}


def _draw(args, meta: dict, cfg: Config, queries: torch.Tensor, ids: torch.Tensor, sims: torch.Tensor, name):
    """The grid figure of :func:`cmd_search`: each query, then its neighbours with class and cosine."""
    if not meta.get("dataset"):
        print("note: the index names no dataset (its embeddings were not written by embed): no figure drawn")
        return None
    gallery = gallery_dataset(cfg, meta["dataset"], meta.get("split", "test"), meta.get("data_root") or None)
    found = ids.clamp(min=0)
    titles = [t for q in range(len(queries)) for t in
              ["query", *[f"{name(i)}\n{s:.2f}" for i, s in zip(ids[q].tolist(), sims[q].tolist())]]]
    fig = neighbour_grid(queries, gallery.images[found], titles=titles,
                         title=f"{args.k} nearest {getattr(gallery, 'name', meta['dataset'])} {meta.get('split', '')} "
                               f"images ({meta.get('kind', '')} index)")
    out = Path(args.out) if args.out else Path(args.index).parent / f"search_{Path(args.image[0]).stem}.png"
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    plt.close(fig)
    print(f"saved {out}")
    return out


COMMANDS = {"embed": cmd_embed, "index": cmd_index, "search": cmd_search}

__all__ = ["COMMANDS", "add_parsers", "cmd_embed", "cmd_index", "cmd_search", "read_embeddings", "read_image"]
