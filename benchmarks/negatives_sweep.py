"""Where negatives come from: end-to-end vs memory bank vs MoCo queue at CPU scale (chapter 07).

MoCo (He et al. 2019) Fig. 3 and the momentum ablation of Sec. 4.1, in miniature. Usage (from the
repository root, with CONTRASTIVE_LAB_DATA pointing at the data; about 25 min of runs):

    .venv/bin/python benchmarks/negatives_sweep.py [--epochs 10] [--groups end_to_end,queue]

The recorded sweep ran as two single-threaded processes side by side (12 min on 2 idle cores), merged:

    OMP_NUM_THREADS=1 python benchmarks/negatives_sweep.py --groups end_to_end,memory_bank --out part1.json &
    OMP_NUM_THREADS=1 python benchmarks/negatives_sweep.py --groups queue,momentum --out part2.json
    wait; python benchmarks/negatives_sweep.py --merge part1.json part2.json

One runner, one encoder, one data set, one budget for all three mechanisms. Every run trains a
ResNet-10 at width 0.25 on cifar10-mini at 32 px for the same number of epochs (the same images
seen), with the same views (``simclr_cifar``), the same MLP head (``moco_v2``: Linear-ReLU-Linear,
128-d), the same temperature 0.2, SGD (momentum 0.9, wd 5e-4) with lr 0.06 x B/128 and a cosine
schedule, plain batch norm (no split BN), and the same seed. As in MoCo Sec. 4.1, the mechanisms
differ only in where the negatives come from, and all use the InfoNCE form of the loss:

* ``end_to_end`` - SimCLR: the other 2(B-1) views of the batch are the negatives, B in
  {32, 64, 128, 256}, so K = 62 ... 510. Both views get gradients.
* ``memory_bank`` - InstDisc with ``bank_loss=infonce``: one view, positive = its bank entry,
  K in {64, 256, 1024, 4096} shared negatives drawn from the bank (5085 entries), batch 128.
* ``queue`` - MoCo with a queue of K in {64, 256, 1024, 4096} keys, m = 0.99, batch 128.
* ``momentum`` - MoCo, K = 1024, m in {0, 0.9, 0.99, 0.999, 0.9999} (MoCo Sec. 4.1 table).

Recorded per run: weighted kNN top-1 (k=200, T=0.1) of h on the cifar10-mini test split after
training (and at initialisation), milliseconds per training step, training images per second,
peak resident memory of the run's own process (each run is a fresh subprocess), the size of the
negatives' store (queue or bank) and of the logit matrix, and the logged loss curve.
Results go to ``benchmarks/results/negatives_sweep.json`` after every run; an interrupted sweep
resumes where it stopped (runs already in the file are skipped unless ``--fresh``).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import os
import platform
import resource
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from sweep_parts import merge_files, merge_parts

RESULTS = Path(__file__).resolve().parent / "results" / "negatives_sweep.json"
GROUPS = ("end_to_end", "memory_bank", "queue", "momentum")
BATCHES = (32, 64, 128, 256)  # end-to-end: the batch is the dictionary
KS = (64, 256, 1024, 4096)  # memory bank and queue
MOMENTA = (0.0, 0.9, 0.99, 0.999, 0.9999)
BATCH, K_MOMENTUM, M_DEFAULT = 128, 1024, 0.99


@dataclasses.dataclass(frozen=True)
class Run:
    """One training run: group, name, the x-axis value it contributes, and its config changes."""

    group: str
    name: str
    negatives: int  # K, the number of negatives per query
    changes: dict[str, Any]

    @property
    def key(self) -> str:
        return f"{self.group}/{self.name}"


def base_changes(epochs: int) -> dict[str, Any]:
    """Config fields shared by every run (applied on top of the moco-v2-cifar10-cpu preset; a method
    option only where the run's method has it: ``bn_splits`` and ``shuffle_bn`` are MoCo's, and
    ``bn_splits`` InstDisc's too)."""
    return dict(
        dataset="cifar10", recipe="simclr_cifar", encoder="resnet10", width=0.25, image_size=32,
        head="moco_v2", proj_dim=128, temperature=0.2, bn_splits=1, shuffle_bn=True,
        optimizer="sgd", weight_decay=5e-4, momentum=0.9, warmup_epochs=0.0, epochs=epochs,
        batch_size=BATCH, lr=0.06, knn_every=0, figures=False, checkpoint_every=10**6, seed=0,
    )


def plan() -> list[Run]:
    """Every run of the sweep, in training order."""
    runs = [
        Run("end_to_end", f"B={b}", 2 * (b - 1), dict(method="simclr", batch_size=b, lr=0.06 * b / BATCH))
        for b in BATCHES
    ]
    runs += [Run("memory_bank", f"K={k}", k, dict(method="instdisc", bank_loss="infonce", num_negatives=k,
                                                   bank_momentum=0.5)) for k in KS]
    runs += [Run("queue", f"K={k}", k, dict(method="moco_v2", queue_size=k, momentum_ema=M_DEFAULT)) for k in KS]
    runs += [Run("momentum", f"m={m:g}", K_MOMENTUM, dict(method="moco_v2", queue_size=K_MOMENTUM, momentum_ema=m))
             for m in MOMENTA]
    return runs


# ---------------------------------------------------------------------------------- worker


def store_megabytes(method) -> float:
    """Persistent memory of the negatives: the queue or bank buffers and the key encoder/head."""
    size = 0
    for name, t in method.state_dict().items():
        if name.startswith(("queue.", "bank.", "key_encoder.", "key_head.")):
            size += t.numel() * t.element_size()
    return size / 2**20


def worker(payload: str) -> dict[str, Any]:
    """Train one config in this (fresh) process; return the measurements as a dict."""
    import torch

    from contrastive_lab import engine
    from contrastive_lab.config import config_from_dict
    from contrastive_lab.methods import load_method

    spec = json.loads(payload)
    cfg = config_from_dict(spec["config"])
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    with tempfile.TemporaryDirectory(prefix="negatives-sweep-") as tmp:
        result = engine.train(cfg, Path(tmp) / "run", verbose=False)
        rows = engine.read_metrics(Path(tmp) / "run" / "metrics.csv")
        _, method = load_method(Path(tmp) / "run" / "checkpoints" / "last.pt")  # its queue or bank as trained
    steps = result["step"]
    curve = [{k: r[k] for k in ("step", "loss", "top1", "pos_cos", "neg_cos") if k in r} for r in rows if "loss" in r]
    return {
        "knn_top1": result["knn_final"],
        "knn_random": result["knn_random"],
        "steps": steps,
        "train_seconds": result["train_seconds"],
        "ms_per_step": round(1000 * result["train_seconds"] / max(steps, 1), 1),
        "images_per_s": round(steps * cfg.batch_size / max(result["train_seconds"], 1e-9), 1),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "rss_after_import_mb": round(rss_before, 1),
        "store_mb": round(store_megabytes(method), 2),
        "final_loss": sum(r["loss"] for r in curve[-3:]) / max(len(curve[-3:]), 1),
        "curve": curve,
        "torch_threads": torch.get_num_threads(),
    }


# ---------------------------------------------------------------------------------- parent


def run_config(run: Run, epochs: int, smoke: bool):
    """The run's config: the preset switched to the run's method, then the common fields and the
    run's changes, each option only where that method has it (see :func:`base_changes`)."""
    from contrastive_lab.config import config_keys
    from contrastive_lab.presets import get_preset

    changes = {**base_changes(epochs), **run.changes}
    cfg = get_preset("moco-v2-cifar10-cpu").replace(method=changes.pop("method"))
    keys = set(config_keys(cfg.method))
    cfg = cfg.replace(**{k: v for k, v in changes.items() if k in keys})
    if smoke:  # a few steps on a subset: tests the script, not the science
        cfg = cfg.replace(max_steps=2, subset=600, knn_max_train=300, knn_k=20)
        if hasattr(cfg.options, "num_negatives"):
            cfg = cfg.replace(num_negatives=min(cfg.options.num_negatives, 256))
    return cfg


def logits_megabytes(run: Run, batch: int) -> float:
    """float32 logits per step: (2B x 2B) for end-to-end, (B x (1+K)) for bank and queue."""
    rows, cols = (2 * batch, 2 * batch) if run.group == "end_to_end" else (batch, 1 + run.negatives)
    return rows * cols * 4 / 2**20


def machine() -> dict[str, Any]:
    import torch

    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            model = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return {
        "cpu_model": model,
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "platform": platform.platform(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=10, help="epochs per run (the same for every run)")
    parser.add_argument("--groups", default=",".join(GROUPS), help=f"comma list of {GROUPS}")
    parser.add_argument("--out", type=Path, default=RESULTS, help="results JSON (merged run by run)")
    parser.add_argument("--fresh", action="store_true", help="ignore runs already in --out")
    parser.add_argument("--smoke", action="store_true", help="2 steps per run on a subset (tests the script)")
    parser.add_argument("--worker", help=argparse.SUPPRESS)  # internal: one run in a subprocess
    parser.add_argument("--merge", type=Path, nargs="+", metavar="PART",
                        help="combine result files of groups run in parallel (one --out each) into --out")
    args = parser.parse_args(argv)
    if args.merge:
        return merge_files(args.merge, args.out, merge)
    if args.worker:
        print("RESULT " + json.dumps(worker(args.worker)), flush=True)
        return 0
    groups = [g.strip() for g in args.groups.split(",") if g.strip()]
    if set(groups) - set(GROUPS):
        parser.error(f"unknown group(s) {sorted(set(groups) - set(GROUPS))}; choose from {GROUPS}")
    if args.smoke and args.out == RESULTS:  # never overwrite the real results with a smoke test
        args.out, args.fresh = Path(tempfile.gettempdir()) / "negatives_sweep_smoke.json", True

    from contrastive_lab import engine

    probe = run_config(plan()[0], args.epochs, args.smoke)
    data_name = getattr(engine.load_split(probe, "train"), "name", probe.dataset)
    previous = json.loads(args.out.read_text()) if args.out.exists() and not args.fresh else {}
    if previous and (previous.get("epochs") != args.epochs or previous.get("data") != data_name):
        raise SystemExit(f"{args.out} holds a sweep with other settings; pass --fresh or another --out")
    doc = previous or {
        "benchmark": "Negatives: end-to-end vs memory bank vs MoCo queue; MoCo momentum (He et al. 2019, "
                     "Fig. 3 and Sec. 4.1) at CPU scale",
        "data": data_name,
        "epochs": args.epochs,
        "common": base_changes(args.epochs),
        "runs": {},
    }
    doc.update(command=" ".join(shlex.quote(a) for a in [sys.executable, *sys.argv]),
               machine=machine(), date=datetime.datetime.now().isoformat(timespec="seconds"),
               smoke=args.smoke, load_average_at_start=os.getloadavg())

    todo = [r for r in plan() if r.group in groups and r.key not in doc["runs"]]
    print(f"{len(todo)} runs to do on {data_name} ({len(doc['runs'])} already in {args.out})", flush=True)
    sweep_start = time.perf_counter()
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    for i, run in enumerate(todo):
        cfg = run_config(run, args.epochs, args.smoke)
        same = [k for k, r in doc["runs"].items() if r.get("config") == dataclasses.asdict(cfg)]
        if same:  # queue K=1024 and momentum m=0.99 are the same run: reuse it
            record = {**doc["runs"][same[0]], "group": run.group, "name": run.name, "same_run_as": same[0]}
        else:
            start = time.perf_counter()
            payload = json.dumps({"config": dataclasses.asdict(cfg)})
            proc = subprocess.run([sys.executable, __file__, "--worker", payload], env=env,
                                  capture_output=True, text=True)
            lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
            if proc.returncode or not lines:
                sys.stderr.write(proc.stdout[-3000:] + proc.stderr[-3000:])
                raise SystemExit(f"run {run.key} failed (exit {proc.returncode}); see the output above")
            record = json.loads(lines[-1][len("RESULT "):])
            record.update(group=run.group, name=run.name, negatives=run.negatives, config=dataclasses.asdict(cfg),
                          logits_mb=round(logits_megabytes(run, cfg.batch_size), 2),
                          wall_seconds=round(time.perf_counter() - start, 1))
            doc["sweep_seconds"] = round(doc.get("sweep_seconds", 0.0) + record["wall_seconds"], 1)
        doc["runs"][run.key] = record
        doc["load_average_at_end"] = os.getloadavg()
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(doc, indent=1, sort_keys=True))
        print(f"[{i + 1}/{len(todo)}] {run.key:22s} K={record['negatives']:5d}  kNN {record['knn_top1']:.3f}  "
              f"{record['ms_per_step']:7.1f} ms/step  RSS {record['peak_rss_mb']:.0f} MB  "
              f"({record['wall_seconds']:.0f} s{', reused' if same else ''})", flush=True)
    print(f"done in {time.perf_counter() - sweep_start:.0f} s; results in {args.out}")
    print(markdown_table(doc))
    return 0


def merge(parts: list[dict[str, Any]]) -> dict[str, Any]:
    """Parts of this sweep run in parallel processes, as one document; each part's load averages are kept."""
    doc = merge_parts(parts, must_match=("data", "epochs", "common", "smoke"))
    doc["load_averages"] = [[p.get("load_average_at_start"), p.get("load_average_at_end")] for p in parts]
    return doc


def markdown_table(doc: dict[str, Any]) -> str:
    """The BENCHMARKS.md section for this sweep."""
    m = doc["machine"]
    lines = [
        f"### Negatives: end-to-end vs memory bank vs queue ({doc['data']}, {doc['epochs']} epochs per run)",
        "",
        f"`{doc['command']}` on {m['cpu_model']} ({m['cpu_count']} cores), torch {m['torch']}, {doc['date']}. "
        "kNN top-1 (k=200, T=0.1) of h on the test split; time and peak RSS per run process.",
        "",
        "| mechanism | setting | K (negatives) | kNN top-1 | ms / step | img / s | peak RSS (MB) | store (MB) |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in doc["runs"].values():
        lines.append(
            f"| {r['group']} | {r['name']} | {r['negatives']} | {r['knn_top1']:.3f} | {r['ms_per_step']:.0f} | "
            f"{r['images_per_s']:.0f} | {r['peak_rss_mb']:.0f} | {r['store_mb']:.1f} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
