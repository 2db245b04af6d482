"""Image CPC on cifar10-mini under a fixed CPU budget: linear probe on pooled patch features,
trained vs the same network at random initialisation (and raw pixels, for scale).

Usage (from the repository root, with CONTRASTIVE_LAB_DATA pointing at the data):

    .venv/bin/python benchmarks/cpc_probe.py [--budget-s 240] [--out benchmarks/results/cpc_probe.json]

What it does:

1. Builds the ``cpc-cifar10-cpu`` preset (a 7x7 grid of 8-px patches with stride 4, LayerNorm patch
   net, row-causal context, K=3 rows ahead, per-patch augmentation; see ``methods.cpc.cpc_cifar10_cpu``).
2. Calibrates: times a few optimizer steps and sets ``max_steps`` so the learning-rate schedule
   ends at about ``--budget-s`` seconds of training (``time_budget_s`` is a hard cap as well).
3. Trains with the engine (``engine.train``), which also reports the weighted kNN top-1 of the
   random-init and the trained encoder (k=200, T=0.1).
4. Linear probe (``evaluate.linear_probe``: softmax regression on standardised frozen features,
   Adam, 100 epochs) on the patch features mean-pooled over the grid (``method.encoder``), for the
   trained encoder and for the same network at its initial weights (the engine seeds the model
   with ``cfg.seed`` before building it, and so do we), plus raw pixels.

Results go to ``benchmarks/results/cpc_probe.json`` with the command, machine, torch version, date,
load average and data name. Every number is measured on cifar10-mini (5085 train / 1017 test images),
not on CIFAR-10.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shlex
import sys
import tempfile
import time
from pathlib import Path

import torch

from contrastive_lab import engine
from contrastive_lab.data import load_dataset
from contrastive_lab.evaluate import linear_probe
from contrastive_lab.methods import Batch, build_method, load_method
from contrastive_lab.presets import Config, get_preset

RESULTS = Path(__file__).resolve().parent / "results" / "cpc_probe.json"


def machine() -> dict:
    return {
        "platform": platform.platform(),
        "cpu": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "python": platform.python_version(),
    }


def steps_per_second(cfg: Config, images: torch.Tensor, steps: int = 5) -> float:
    """Optimizer steps per second of the method on this CPU, timed after one warm-up step.

    Same model, batch size and precision as the engine; views here are the plain normalised
    images (drawing views is a small part of a CPC step).
    """
    device = torch.device("cpu")
    torch.manual_seed(cfg.seed)
    method = build_method(cfg).train()
    optimizer = torch.optim.AdamW(method.parameters(), lr=1e-4)
    dtype = engine.resolve_precision(cfg, device)
    x = engine.config_eval_transform(cfg)(images[: cfg.batch_size])
    batch = Batch([x], torch.arange(len(x)))  # CPC trains on one view
    times = []
    for _ in range(steps + 1):  # CPC has no after_step hook: nothing runs after optimizer.step()
        t0 = time.perf_counter()
        with torch.autocast("cpu", dtype=dtype or torch.bfloat16, enabled=dtype is not None):
            loss, _ = method(batch)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        times.append(time.perf_counter() - t0)
    return steps / sum(times[1:])


def probe(encoder: torch.nn.Module, train_ds, test_ds, cfg: Config, device) -> dict:
    """Linear probe top-1 on the encoder's pooled features (images preprocessed like training)."""
    f_train = engine.encode(encoder, train_ds.images, cfg, device)
    f_test = engine.encode(encoder, test_ds.images, cfg, device)
    out = linear_probe(f_train, train_ds.labels, f_test, test_ds.labels, epochs=100)
    return {"top1": out["top1"], "train_top1": out["train_top1"], "feature_dim": f_train.shape[1]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget-s", type=float, default=240.0, help="seconds of training (the CPU budget)")
    parser.add_argument("--preset", default="cpc-cifar10-cpu")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("overrides", nargs="*", help="config key=value overrides, e.g. batch_size=32")
    args = parser.parse_args()
    torch.set_num_threads(min(2, os.cpu_count() or 1))
    started = datetime.datetime.now().isoformat(timespec="seconds")
    load_before = os.getloadavg()

    from contrastive_lab.presets import apply_overrides

    cfg = apply_overrides(get_preset(args.preset), args.overrides).replace(
        dataset="cifar10", device="cpu", figures=False, knn_every=0, epochs=1000
    )
    train_ds = load_dataset("cifar10", split="train", root=cfg.data_root)
    test_ds = load_dataset("cifar10", split="test", root=cfg.data_root)
    print(f"data: {train_ds.name} ({len(train_ds)} train / {len(test_ds)} test)")

    rate = steps_per_second(cfg, train_ds.images)
    max_steps = max(1, int(rate * args.budget_s))
    cfg = cfg.replace(max_steps=max_steps, time_budget_s=1.25 * args.budget_s)
    epochs = max_steps * cfg.batch_size / len(train_ds)
    print(f"{rate:.2f} steps/s -> max_steps={max_steps} ({epochs:.1f} epochs)")

    device = torch.device("cpu")
    torch.manual_seed(cfg.seed)  # the engine's initial weights: same seed, same builder
    random_init = build_method(cfg)
    with tempfile.TemporaryDirectory() as tmp:
        run = engine.train(cfg, Path(tmp) / "run", verbose=True)
        _, trained = load_method(Path(tmp) / "run" / "checkpoints" / "last.pt")

    results = {
        "cpc_trained": probe(trained.encoder, train_ds, test_ds, cfg, device),
        "cpc_random_init": probe(random_init.encoder, train_ds, test_ds, cfg, device),
        "raw_pixels": probe(torch.nn.Flatten(), train_ds, test_ds, cfg, device),
    }
    for key, tag in (("cpc_trained", "knn_final"), ("cpc_random_init", "knn_random")):
        results[key]["knn_top1"] = run.get(tag)
    report = {
        "command": " ".join(shlex.quote(a) for a in [sys.executable.split("/")[-1], *sys.argv]),
        "date": started,
        "machine": machine(),
        "load_average_1_5_15_before": [round(x, 2) for x in load_before],
        "load_average_1_5_15_after": [round(x, 2) for x in os.getloadavg()],
        "torch": torch.__version__,
        "env": {k: os.environ.get(k) for k in ("OMP_WAIT_POLICY", "OMP_NUM_THREADS", "CONTRASTIVE_LAB_DATA")},
        "data": train_ds.name,
        "train_images": len(train_ds),
        "test_images": len(test_ds),
        "preset": args.preset,
        "overrides": args.overrides,
        "budget_s": args.budget_s,
        "steps": run["step"],
        "epochs": round(run["step"] / run["steps_per_epoch"], 2),
        "train_seconds": run["train_seconds"],
        "stop_reason": run["stop_reason"],
        "images_per_s": round(run["step"] * cfg.batch_size / run["train_seconds"], 1),
        "results": results,
        "config": json.loads(cfg.to_json()),
    }
    print(
        json.dumps({k: report[k] for k in ("data", "steps", "epochs", "train_seconds", "results")}, indent=2)
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2, sort_keys=True) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
