"""SimCLR's ablations (Chen et al. 2020) reproduced at CPU scale; results for chapter 06.

Usage (from the repository root, with CONTRASTIVE_LAB_DATA pointing at the data):

    .venv/bin/python benchmarks/simclr_ablations.py [--epochs 8] [--groups composition,head]

On 2 cores, two single-threaded processes get more done than one process with two threads (small
convolutions parallelise poorly), so the recorded sweep ran the groups in two halves and merged them
(about 30 min on 2 idle cores):

    OMP_NUM_THREADS=1 python benchmarks/simclr_ablations.py --groups head,batch --out part1.json &
    OMP_NUM_THREADS=1 python benchmarks/simclr_ablations.py --groups composition,temperature --out part2.json
    wait; python benchmarks/simclr_ablations.py --merge part1.json part2.json

Four groups of short runs, all from the ``simclr-cifar10-cpu`` preset (batch 128, T=0.1, LARS with
lr = 0.075 x sqrt(B)) with a ResNet-10 at width 0.25, the same number of epochs per run (equal budget)
and fixed seeds:

* ``composition`` - SimCLR Fig. 5: which pair of view operations matters. Ops: crop (random
  resized crop), colour (colour jitter + colour drop, i.e. ``view_ops=jitter,gray``) and blur,
  alone and in pairs, plus "none" (two identical views). These runs use the ImageNet recipe of
  App. A (colour strength s=1, blur p=0.5) at 32 px so that blur exists at all; flip is off in
  every cell, as in Fig. 5. Both views get the ops (Fig. 5 used an asymmetric setup: crop on both
  branches, the studied ops on one; the paper notes that this lowers accuracy but not the ranking).
  crop, colour and crop+colour are repeated with a second seed.
* ``head`` - SimCLR Sec. 4.2 / Fig. 8 and Table 3: no head (z = h), linear head, nonlinear head;
  kNN and linear probe on h and on z = g(h), and how well h and z still tell a grey-scaled
  (colour-dropped) view from a colour one (Table 3's question: does g(h) discard information
  about the transformation?). Two seeds.
* ``temperature`` - SimCLR Table 5 (and App. B.9 for CIFAR-10): tau in {0.05, 0.1, 0.2, 0.5, 1.0}.
* ``batch`` - SimCLR Fig. 9: batch size {64, 128, 512} x training length {E, 2E} epochs, lr scaled
  with the square root of the batch, as in the preset (App. B.1: 0.075 x sqrt(B)).

Every run reports the weighted kNN top-1 (k=200, T=0.1) and a linear probe (evaluate.linear_probe)
on the frozen features h of the cifar10-mini test split, and both again for the untrained encoder of each seed.
Results go to ``benchmarks/results/simclr_ablations.json`` after every run, so an interrupted sweep
resumes where it stopped (runs already in the file are skipped unless ``--fresh``).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime
import json
import os
import platform
import shlex
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch
from sweep_parts import merge_files, merge_parts
from torch import Tensor, nn

from contrastive_lab import engine
from contrastive_lab.evaluate import knn_accuracy, linear_probe
from contrastive_lab.methods import build_method, load_method
from contrastive_lab.presets import Config, get_preset
from contrastive_lab.views import rgb_to_gray

RESULTS = Path(__file__).resolve().parent / "results" / "simclr_ablations.json"
GROUPS = ("composition", "head", "temperature", "batch")
# Fig. 5's operations, as the engine's ``view_ops`` names ("colour" = jitter + colour drop).
OPS = {"crop": "crop", "colour": "jitter,gray", "blur": "blur"}
KEY_COMPOSITIONS = ("crop", "colour", "crop+colour")  # repeated with a second seed
SEEDS = (0, 1)


@dataclasses.dataclass(frozen=True)
class Run:
    """One training run: its group, a unique name, and the config fields it changes."""

    group: str
    name: str
    changes: dict[str, Any]
    seed: int = 0

    @property
    def key(self) -> str:
        return f"{self.group}/{self.name}/seed{self.seed}"


def base_config(epochs: int) -> Config:
    """The common starting point: the CPU preset at width 0.25, ``epochs`` epochs, no extras."""
    return get_preset("simclr-cifar10-cpu").replace(
        dataset="cifar10",
        width=0.25,
        head="simclr_v1",  # the sweep's base is SimCLR's MLP head (the demo preset later moved to a linear one)
        image_size=32,  # the sweep ran on 32-px views evaluated at 32 px (the preset before
        eval_size=0,  # it moved to 24-px views; BENCHMARKS.md)
        max_steps=0,  # the preset caps the demo's steps and wall time; a sweep compares equal epochs
        time_budget_s=0.0,
        epochs=epochs,
        warmup_epochs=0.2 * epochs,  # 10-20% warmup, like App. B.1's 10 of 100 epochs
        knn_every=0,
        figures=False,
        checkpoint_every=10**6,  # one checkpoint, at the end
        knn_max_train=256,  # the engine's own kNN log is not used; keep it cheap (we evaluate below)
    )


def composition_view_ops(ops: tuple[str, ...]) -> str:
    """``("crop", "colour")`` -> ``"crop,jitter,gray"``; ``()`` -> ``""`` (identical views)."""
    unknown = sorted(set(ops) - set(OPS))
    if unknown:
        raise ValueError(f"unknown operation(s) {unknown}; choose from {sorted(OPS)}")
    return ",".join(OPS[op] for op in ops)


def plan(epochs: int) -> list[Run]:
    """Every run of the sweep, in the order they are trained."""
    runs: list[Run] = []
    singles = [("crop",), ("colour",), ("blur",)]
    pairs = [("crop", "colour"), ("crop", "blur"), ("colour", "blur")]
    for ops in [(), *singles, *pairs]:
        name = "+".join(ops) or "none"
        change = {"recipe": "simclr_imagenet", "view_ops": composition_view_ops(ops)}
        for seed in SEEDS if name in KEY_COMPOSITIONS else SEEDS[:1]:
            runs.append(Run("composition", name, change, seed))
    for seed in SEEDS:
        for head in ("identity", "linear", "simclr_v1"):
            runs.append(Run("head", head, {"head": head}, seed))
    for tau in (0.05, 0.1, 0.2, 0.5, 1.0):
        runs.append(Run("temperature", f"tau={tau:g}", {"temperature": tau}))
    for mult in (1, 2):
        for batch in (64, 128, 512):
            changes = {"batch_size": batch, "epochs": mult * epochs, "warmup_epochs": 0.2 * mult * epochs}
            runs.append(Run("batch", f"B={batch},epochs={mult * epochs}", changes))
    return runs


@contextlib.contextmanager
def single_thread():
    """Run tiny ops (the linear probes' 128 x 10 matmuls) on one thread: on a shared, loaded CPU,
    thread synchronisation costs more than these ops themselves."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def probe(f_train: Tensor, y_train: Tensor, f_test: Tensor, y_test: Tensor, epochs: int = 100) -> float:
    """Test top-1 of ``evaluate.linear_probe`` (seed 0) on frozen features."""
    with single_thread():
        return linear_probe(f_train, y_train, f_test, y_test, epochs=epochs, seed=0)["top1"]


def colour_drop_probe(model: nn.Module, train_images: Tensor, test_images: Tensor, cfg: Config, device) -> float:
    """Linear-probe accuracy of telling a colour-dropped (grey) image from its colour original.

    The spirit of SimCLR Table 3: how much information about a training transformation is left
    in a representation. Each image appears twice (colour, label 0; grey, label 1); chance is 0.5.
    """

    def both(images: Tensor) -> tuple[Tensor, Tensor]:
        x = images.float() / 255.0
        grey = rgb_to_gray(x).expand(-1, 3, -1, -1)
        feats = torch.cat([engine.encode(model, x, cfg, device), engine.encode(model, grey, cfg, device)])
        return feats, torch.arange(2).repeat_interleave(len(images))

    f_train, y_train = both(train_images)
    f_test, y_test = both(test_images)
    return probe(f_train, y_train, f_test, y_test, epochs=50)


def evaluate(run: Run, run_dir: Path, train_ds, test_ds, device) -> dict[str, float]:
    """kNN and linear probe on h; for the head group also on z = g(h) and the colour-drop probe."""
    cfg, method = load_method(run_dir / "checkpoints" / "last.pt")  # encoder f and head g, in eval mode
    method.to(device)
    models = {"h": method.encoder}
    if run.group == "head":
        models["z"] = nn.Sequential(method.encoder, method.head)
    out: dict[str, float] = {}
    for rep, model in models.items():
        f_train = engine.encode(model, train_ds.images, cfg, device)
        f_test = engine.encode(model, test_ds.images, cfg, device)
        out[f"knn_{rep}"] = knn_accuracy(f_train, train_ds.labels, f_test, test_ds.labels, k=cfg.knn_k,
                                         temperature=cfg.knn_t)
        out[f"linear_{rep}"] = probe(f_train, train_ds.labels, f_test, test_ds.labels)
        if run.group == "head":
            out[f"colour_drop_{rep}"] = colour_drop_probe(
                model, train_ds.images[:2000], test_ds.images, cfg, device
            )
        out[f"dim_{rep}"] = int(f_train.shape[1])
    return out


def run_config(run: Run, base: Config, smoke: bool) -> Config:
    """The full config of ``run``: the base config with the run's changes and seed."""
    cfg = base.replace(**run.changes, seed=run.seed)
    if smoke:
        cfg = cfg.replace(max_steps=1, subset=2 * cfg.batch_size)
    return cfg


def run_one(run: Run, cfg: Config, train_ds, test_ds, workdir: Path) -> dict[str, Any]:
    """Train one run and evaluate it; returns the JSON record."""
    run_dir = workdir / run.key.replace("/", "_").replace("=", "").replace(",", "_")
    load = os.getloadavg()[0]  # other processes slow the run down; recorded so timings can be judged
    start = time.perf_counter()
    result = engine.train(cfg, run_dir, verbose=False)
    record = {
        "group": run.group, "name": run.name, "seed": run.seed, "changes": run.changes,
        "steps": result["step"], "train_seconds": result["train_seconds"], "final_loss": _last_loss(run_dir),
    }
    record.update(evaluate(run, run_dir, train_ds, test_ds, torch.device("cpu")))
    record["wall_seconds"] = round(time.perf_counter() - start, 1)
    record["load_average_at_start"] = round(load, 2)
    return record


def random_init_eval(cfg: Config, train_ds, test_ds) -> dict[str, float]:
    """kNN and linear probe of h at initialisation. The encoder is built first after ``manual_seed(seed)``,
    so it depends only on the seed and the encoder fields: one evaluation per seed serves every run."""
    torch.manual_seed(cfg.seed)
    encoder = build_method(cfg).encoder
    f_train = engine.encode(encoder, train_ds.images, cfg, "cpu")
    f_test = engine.encode(encoder, test_ds.images, cfg, "cpu")
    knn = knn_accuracy(f_train, train_ds.labels, f_test, test_ds.labels, k=cfg.knn_k, temperature=cfg.knn_t)
    return {"knn_h": knn, "linear_h": probe(f_train, train_ds.labels, f_test, test_ds.labels)}


def _last_loss(run_dir: Path) -> float:
    """Mean training loss over the last 5 logged rows of metrics.csv."""
    losses = [r["loss"] for r in engine.read_metrics(run_dir / "metrics.csv") if "loss" in r]
    return sum(losses[-5:]) / max(len(losses[-5:]), 1)


def _head(ds, n: int) -> SimpleNamespace:
    """The first ``n`` images of a dataset, for smoke runs of the evaluation."""
    return SimpleNamespace(images=ds.images[:n], labels=ds.labels[:n], name=getattr(ds, "name", "?"))


def machine() -> dict[str, Any]:
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "platform": platform.platform(),
        "cpu": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "load_average_at_start": os.getloadavg()[0],
    }


def markdown(doc: dict[str, Any]) -> str:
    """The sweep as a markdown table (for BENCHMARKS.md): one row per configuration, seeds side by side."""
    rows: dict[tuple[str, str], list[dict]] = {}
    order = {(r.group, r.name): i for i, r in enumerate(reversed(plan(doc["epochs"])))}
    for record in sorted(doc["runs"].values(), key=lambda r: -order.get((r["group"], r["name"]), -1)):
        rows.setdefault((record["group"], record["name"]), []).append(record)

    def cell(records: list[dict], metric: str) -> str:
        values = [r[metric] for r in sorted(records, key=lambda r: r["seed"]) if metric in r]
        return " / ".join(f"{v:.3f}" for v in values) if values else "-"

    m = doc["machine"]
    lines = [
        f"SimCLR ablations on **{doc['data']}** (ResNet-10 width {doc['base_config']['width']}, batch "
        f"{doc['base_config']['batch_size']}, {doc['epochs']} epochs per run unless stated; test top-1; "
        f"values per seed as seed0 / seed1). {m['cpu']} x{m['cpu_count']}, torch {m['torch']}, {doc['date']}, "
        f"runs {doc.get('sweep_seconds', 0) / 60:.0f} min in total over {doc.get('parallel_processes', 1)} process(es). Untrained encoder (kNN / linear): "
        + ", ".join(f"seed {k} {v['knn_h']:.3f} / {v['linear_h']:.3f}" for k, v in sorted(doc.get("random_init", {}).items()))
        + ".",
        "",
        "| group | configuration | steps | kNN(h) | linear(h) | linear(z) | colour-drop(h) | colour-drop(z) "
        "| final loss |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    metrics = ["knn_h", "linear_h", "linear_z", "colour_drop_h", "colour_drop_z", "final_loss"]
    for (group, name), records in rows.items():
        cells = " | ".join(cell(records, metric) for metric in metrics)
        lines.append(f"| {group} | {name} | {records[0]['steps']} | {cells} |")
    lines.append("")
    lines.append("Commands: " + "; ".join(f"`{c}`" for c in doc.get("commands", [doc["command"]])))
    return "\n".join(lines)


def merge(parts: list[dict[str, Any]]) -> dict[str, Any]:
    """Parts of this sweep run in parallel processes, as one document (runs and random-init scores united)."""
    return merge_parts(parts, must_match=("data", "epochs", "base_config"), unite=("random_init", "knn_random"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=8, help="epochs per run (E); batch group also runs 2E")
    parser.add_argument("--groups", default=",".join(GROUPS), help=f"comma list of {GROUPS}")
    parser.add_argument("--out", type=Path, default=RESULTS, help="results JSON (merged run by run)")
    parser.add_argument("--fresh", action="store_true", help="ignore runs already in --out")
    parser.add_argument("--smoke", action="store_true", help="1 step per run on a subset (tests the script)")
    parser.add_argument("--markdown", action="store_true", help="print --out as a markdown table and exit")
    parser.add_argument("--merge", type=Path, nargs="+", metavar="PART",
                        help="combine result files of groups run in parallel (one --out each) into --out")
    args = parser.parse_args(argv)
    if args.merge:
        return merge_files(args.merge, args.out, merge)
    if args.markdown:
        print(markdown(json.loads(args.out.read_text())))
        return 0
    groups = [g.strip() for g in args.groups.split(",") if g.strip()]
    if set(groups) - set(GROUPS):
        parser.error(f"unknown group(s) {sorted(set(groups) - set(GROUPS))}; choose from {GROUPS}")

    if args.smoke and args.out == RESULTS:  # never overwrite the real results with a smoke test
        args.out, args.fresh = Path(tempfile.gettempdir()) / "simclr_ablations_smoke.json", True
    base = base_config(args.epochs)
    train_ds, test_ds = engine.load_split(base, "train"), engine.load_split(base, "test")
    if args.smoke:
        train_ds, test_ds = _head(train_ds, 600), _head(test_ds, 200)
    data_name = getattr(train_ds, "name", base.dataset)
    previous = json.loads(args.out.read_text()) if args.out.exists() and not args.fresh else {}
    if previous and (previous.get("epochs") != args.epochs or previous.get("data") != data_name):
        raise SystemExit(f"{args.out} holds a sweep with other settings; pass --fresh or another --out")
    doc = previous or {
        "benchmark": "SimCLR ablations at CPU scale (Chen et al. 2020, Fig. 5, Fig. 8/Table 3, Table 5, Fig. 9)",
        "data": data_name,
        "epochs": args.epochs,
        "base_config": dataclasses.asdict(base),
        "knn_random": {},  # seed -> kNN top-1 of the encoder at initialisation
        "random_init": {},  # seed -> {"knn_h", "linear_h"} of the encoder at initialisation
        "runs": {},
    }
    command = " ".join(shlex.quote(a) for a in [sys.executable, *sys.argv])
    doc["commands"] = [*doc.get("commands", []), command]  # one per invocation (e.g. one per group)
    doc.update(command=command, machine=machine(), date=datetime.datetime.now().isoformat(timespec="seconds"),
               smoke=args.smoke)
    torch.set_num_threads(min(torch.get_num_threads(), os.cpu_count() or 1))

    todo = [r for r in plan(args.epochs) if r.group in groups and r.key not in doc["runs"]]
    print(f"{len(todo)} runs to do on {data_name} ({len(doc['runs'])} already in {args.out})", flush=True)
    sweep_start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="simclr-ablations-") as tmp:
        for i, run in enumerate(todo):
            cfg = run_config(run, base, args.smoke)
            same = [k for k, r in doc["runs"].items() if r.get("config") == dataclasses.asdict(cfg)]
            if same:  # e.g. tau=0.1 and B=128 are the head group's nonlinear run: reuse, do not retrain
                shared = {k: v for k, v in doc["runs"][same[0]].items() if not k.endswith("_z") and "drop" not in k}
                record = {**shared, "group": run.group, "name": run.name, "changes": run.changes,
                          "same_run_as": same[0]}
            else:
                record = run_one(run, cfg, train_ds, test_ds, Path(tmp))
                record["config"] = dataclasses.asdict(cfg)
                doc["sweep_seconds"] = round(doc.get("sweep_seconds", 0.0) + record["wall_seconds"], 1)
            seed_key = str(run.seed)
            if seed_key not in doc.setdefault("random_init", {}):
                doc["random_init"][seed_key] = random_init_eval(base.replace(seed=run.seed), train_ds, test_ds)
                doc["knn_random"][seed_key] = doc["random_init"][seed_key]["knn_h"]
            record["knn_random"] = doc["knn_random"][seed_key]
            doc["runs"][run.key] = record
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(json.dumps(doc, indent=1, sort_keys=True))
            print(f"[{i + 1}/{len(todo)}] {run.key:42s} kNN(h) {record['knn_h']:.3f}  "
                  f"linear(h) {record['linear_h']:.3f}  ({record['wall_seconds']:.0f} s"
                  f"{', reused' if same else ''})", flush=True)
    print(f"done in {time.perf_counter() - sweep_start:.0f} s; results in {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
