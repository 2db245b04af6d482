"""Vector-index benchmark (issue 19, chapter 10): flat, HNSW and IVF-PQ on 1M vectors, and `embed`
throughput on cifar10-mini. Results go to BENCHMARKS.md.

1. ``embed`` throughput: the checkpoint's encoder over the cifar10-mini train split (5085 images at
   the run's evaluation size, the code path of ``python -m contrastive_lab embed``), images/s, after
   one warm-up pass; and the wall time of the whole ``embed`` command (loading included).
2. The gallery: cifar10-mini has 5085 training images, so the 1M vectors are **made**: the real
   train embeddings tiled with a small Gaussian perturbation each (``evaluate.tile_with_noise``,
   noise 0.5 x the median nearest-neighbour gap). The queries are the real test embeddings.
3. For each kind: build seconds, index bytes (serialised: vectors or codes, links, tables), the
   process's peak resident memory so far, and for each setting of the search knob (HNSW efSearch,
   IVF-PQ nprobe) queries/s and recall of the 10 nearest neighbours against exact (flat) search.
   A recall-vs-latency plot is saved beside the JSON.

At 1M each real embedding has ~197 perturbed copies, so a query's exact 10 nearest neighbours are
10 of the ~200 almost equidistant copies of its nearest training images: recall@10 against exact
search is a harsh measure on this gallery (an index that returns 10 other copies scores 0).

    flock /tmp/cpu.lock python benchmarks/bench_index.py --checkpoint runs/demo-*/checkpoints/last.pt \
        --n 1000000 --out benchmarks/results/bench_index.json
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import platform
import resource
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import matplotlib
import torch

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from contrastive_lab.cli import main as cli_main  # noqa: E402
from contrastive_lab.engine import encode, load_split, resolve_device  # noqa: E402
from contrastive_lab.evaluate import default_nlist, default_pq_m, measure_index, tile_with_noise  # noqa: E402
from contrastive_lab.methods import load_method  # noqa: E402


def peak_rss_gb() -> float:
    """The process's peak resident memory so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def current_rss_gb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 2**20
    return float("nan")


def embed_throughput(checkpoint: str) -> tuple[dict, torch.Tensor, torch.Tensor]:
    """images/s of the encoder over the train split (after a warm-up pass), the embed command's wall
    time, and the train and test features."""
    cfg, method = load_method(checkpoint)
    device = resolve_device(cfg, 0)
    encoder = method.encoder.to(device)
    train, test = load_split(cfg, cfg.train_split), load_split(cfg, cfg.test_split)
    encode(encoder, train.images[:512], cfg, device)  # warm-up (oneDNN picks its kernels)
    t0 = time.perf_counter()
    h_train = encode(encoder, train.images, cfg, device)
    seconds = time.perf_counter() - t0
    h_test = encode(encoder, test.images, cfg, device)
    with tempfile.TemporaryDirectory() as tmp:
        t1 = time.perf_counter()
        with contextlib.redirect_stdout(io.StringIO()):
            code = cli_main(["embed", "--checkpoint", checkpoint, "--dataset", cfg.dataset, "--split",
                             cfg.train_split, "--out", str(Path(tmp) / "train.npz")])
        command = time.perf_counter() - t1
    if code != 0:
        raise RuntimeError("the embed command failed")
    out = {"images": len(train.images), "image_size": cfg.evaluation_size(), "encoder": cfg.encoder,
           "width": cfg.width, "dim": int(h_train.shape[1]), "seconds": seconds,
           "images_per_s": len(train.images) / seconds, "embed_command_wall_s": command,
           "data": getattr(train, "name", cfg.dataset), "precision": cfg.precision}
    return out, h_train, h_test


def plot(results: dict, path: Path) -> None:
    fig, ax = plt.subplots(figsize=(6, 4))
    for kind, marker in (("flat", "s"), ("hnsw", "o"), ("ivf-pq", "^")):
        r = results["indexes"][kind]
        xs, ys = [run["ms_per_query"] for run in r["runs"]], [run["recall"] for run in r["runs"]]
        ax.plot(xs, ys, marker=marker, label=f"{kind} (build {r['build_seconds']:.0f} s, {r['bytes'] / 2**20:.0f} MiB)")
        for run, x, y in zip(r["runs"], xs, ys):
            if run["knob"] is not None:
                ax.annotate(str(run["knob"]), (x, y), fontsize=6, xytext=(3, -8), textcoords="offset points")
    ax.set(xscale="log", xlabel="ms per query (batch of queries, 2 threads)", ylabel="recall@10 vs exact search",
           title=f"{results['count']:,} vectors: cifar10-mini embeddings tiled with noise", ylim=(0, 1.02))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=130)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--checkpoint", required=True, help="an SSL run's last.pt (its encoder embeds the images)")
    parser.add_argument("--n", type=int, default=1_000_000, help="gallery vectors")
    parser.add_argument("--queries", type=int, default=1000, help="queries (real test embeddings)")
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--noise", type=float, default=0.5, help="perturbation / median nearest-neighbour gap")
    parser.add_argument("--ef-search", default="16,32,64,128,256,512", help="HNSW efSearch settings")
    parser.add_argument("--nprobe", default="1,4,16,64,256", help="IVF-PQ nprobe settings")
    parser.add_argument("--out", default="benchmarks/results/bench_index.json")
    args = parser.parse_args(argv)

    started = time.perf_counter()
    load_start = os.getloadavg()
    embed, h_train, h_test = embed_throughput(args.checkpoint)
    print(f"embed: {embed['images_per_s']:.0f} images/s ({embed['images']} images, {embed['seconds']:.1f} s); "
          f"embed command {embed['embed_command_wall_s']:.1f} s", flush=True)
    gallery = tile_with_noise(h_train, args.n, noise=args.noise, seed=0)
    queries = torch.nn.functional.normalize(h_test[: args.queries], dim=1)
    results = {"count": args.n, "dim": int(gallery.shape[1]), "queries": len(queries), "k": args.k, "noise": args.noise,
               "gallery": "cifar10-mini train embeddings tiled with Gaussian noise (evaluate.tile_with_noise)",
               "indexes": {}, "rss_gb_after_gallery": current_rss_gb()}
    settings = {"flat": ((), {}), "hnsw": (tuple(int(v) for v in args.ef_search.split(",")), {}),
                "ivf-pq": (tuple(int(v) for v in args.nprobe.split(",")), {})}
    exact = None
    for kind, (knobs, build) in settings.items():
        r = measure_index(gallery, queries, kind, knobs, exact=exact, k=args.k, **build)
        r["peak_rss_gb"] = peak_rss_gb()  # the process's peak so far (the gallery itself is 1 GB at 1M x 256)
        exact = r.pop("ids") if kind == "flat" else exact
        r.pop("ids", None)
        results["indexes"][kind] = r
        print(f"{kind}: build {r['build_seconds']:.1f} s, {r['bytes'] / 2**20:.0f} MiB; "
              + "; ".join((f"{r['knob']}={run['knob']} " if r["knob"] else "")
                          + f"{run['queries_per_s']:.0f} q/s recall {run['recall']:.3f}" for run in r["runs"]), flush=True)
    results["indexes"]["hnsw"]["params"] = {"M": 32, "efConstruction": 40}
    results["indexes"]["ivf-pq"]["params"] = {"nlist": default_nlist(args.n), "pq_m": default_pq_m(gallery.shape[1]),
                                              "nbits": 8}
    doc = {"embed": embed, "index": results, "command": " ".join([Path(sys.argv[0]).name, *(argv or sys.argv[1:])]),
           "machine": {"platform": platform.platform(), "processor": platform.processor(), "cpus": os.cpu_count(),
                       "torch_threads": torch.get_num_threads()},
           "date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "total_seconds": time.perf_counter() - started,
           "load_average_at_start": load_start, "load_average_at_end": os.getloadavg()}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(doc, indent=2))
    plot(results, out.with_suffix(".png"))
    print(f"wrote {out} and {out.with_suffix('.png')}")
    return doc


if __name__ == "__main__":
    main()
