"""One table, one budget: SimCLR, MoCo v2, BYOL, SimSiam, DINO and Barlow Twins (chapter 11, issue 20).

Each method trains by its own CPU preset (``<method>-cifar10-cpu``: encoder, views, head, optimizer and
schedule as that preset's docstring cites them) on cifar10-mini for the same wall-clock budget, with
the cosine schedule fitted to the budget (``time_budget_s=T fit_to_budget=true``: the learning rate
reaches zero when the time is up, so no method is cut mid-schedule), for two seeds. Then, on the
frozen encoder's h (eval-mode BN, no views): weighted kNN top-1 (k=200, T=0.1; Wu et al. 2018
Sec. 3.4) as the run reports it, and a linear probe (``python -m contrastive_lab eval --protocol
linear``: softmax regression on standardised features, Adam, 100 epochs). Usage, from the repository
root with CONTRASTIVE_LAB_DATA pointing at cifar10-mini:

    .venv/bin/python benchmarks/one_budget.py [--budget 150] [--seeds 0,1] [--methods simclr,byol]

Every run is a fresh ``python -m contrastive_lab train`` subprocess; results go to
``benchmarks/results/one_budget.json`` after each run, and a rerun skips runs already there (unless
``--fresh``). A budget is wall time on *this* machine, so the table says which machine ran it.
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

RESULTS = Path(__file__).resolve().parent / "results" / "one_budget.json"
METHODS = ("simclr", "moco-v2", "byol", "simsiam", "dino", "barlow")


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "contrastive_lab", *args]


def one_run(method: str, seed: int, budget: float, work: Path) -> dict:
    """Train ``<method>-cifar10-cpu`` for ``budget`` seconds, then kNN (from the run) and a linear probe."""
    out = work / f"{method}-s{seed}"
    preset = f"{method}-cifar10-cpu"
    train = cli("train", "--preset", preset, "--out", str(out), f"seed={seed}", f"time_budget_s={budget:g}",
                "fit_to_budget=true", "knn_every=0", "figures=false", "checkpoint_every=100000")
    t0 = time.perf_counter()
    subprocess.run(train, check=True, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - t0
    results = json.loads((out / "results.json").read_text())
    probe_json = out / "eval_linear.json"
    subprocess.run(cli("eval", "--checkpoint", str(out / "checkpoints" / "last.pt"), "--protocol", "linear",
                       "--out", str(probe_json)), check=True, stdout=subprocess.DEVNULL)
    probe = json.loads(probe_json.read_text())
    return {"method": method, "preset": preset, "seed": seed, "budget_s": budget, "steps": results["step"],
            "train_seconds": results.get("train_seconds"), "wall_s": round(wall, 1),
            "knn_random": results.get("knn_random"), "knn_top1": results["knn_final"],
            "knn_top1_z": results.get("knn_final_z"), "linear_top1": probe.get("top1"),
            "command": " ".join(train[1:])}


def summary(rows: list[dict]) -> list[dict]:
    """Mean and spread over seeds, per method, in the order of :data:`METHODS`."""
    table = []
    for method in METHODS:
        mine = [r for r in rows if r["method"] == method]
        if not mine:
            continue
        knn = [r["knn_top1"] for r in mine]
        lin = [r["linear_top1"] for r in mine]
        table.append({"method": method, "seeds": len(mine), "steps": statistics.mean(r["steps"] for r in mine),
                      "knn_mean": statistics.mean(knn), "knn_range": [min(knn), max(knn)],
                      "linear_mean": statistics.mean(lin), "linear_range": [min(lin), max(lin)]})
    return table


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--budget", type=float, default=150.0, help="training seconds per run")
    parser.add_argument("--seeds", default="0,1")
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--work", type=Path, default=None, help="run folders (default: a temporary folder)")
    parser.add_argument("--fresh", action="store_true", help="ignore runs already in --out")
    args = parser.parse_args(argv)
    methods = [m for m in args.methods.split(",") if m]
    unknown = sorted(set(methods) - set(METHODS))
    if unknown:
        parser.error(f"unknown method(s) {unknown}; choose from {', '.join(METHODS)}")
    doc = json.loads(args.out.read_text()) if args.out.is_file() and not args.fresh else {"runs": []}
    doc.update(machine=f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, "
                       f"torch {torch.__version__}, {torch.backends.cpu.get_cpu_capability()}",
               data="cifar10-mini (5085 train / 1017 test)", date=datetime.date.today().isoformat())
    work = args.work or Path(tempfile.mkdtemp(prefix="one-budget-"))
    for seed in (int(s) for s in args.seeds.split(",")):
        for method in methods:
            if any(r["method"] == method and r["seed"] == seed and r["budget_s"] == args.budget for r in doc["runs"]):
                continue
            row = one_run(method, seed, args.budget, work)
            print(f"{method:8s} seed {seed}: {row['steps']} steps, kNN {row['knn_top1']:.4f}, "
                  f"linear {row['linear_top1']:.4f}", flush=True)
            doc["runs"].append(row)
            doc["summary"] = summary(doc["runs"])
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(json.dumps(doc, indent=2))
    doc["summary"] = summary(doc["runs"])
    args.out.write_text(json.dumps(doc, indent=2))
    return doc


if __name__ == "__main__":
    main()
