"""The screening behind the CIFAR-10 classifier presets (``finetune-cifar10-cpu``,
``linear-eval-cifar10-cpu``; chapter 10's label-efficiency runs): test top-1 on cifar10-mini for a
small grid of learning rates (and, for fine-tuning, the smallest crop area), at 1% and 100% of the
labels, from an SSL checkpoint and, for fine-tuning, from scratch (``init_checkpoint=random``).

Every run is the preset as it stands with one or two keys changed, trained by ``engine.train`` (the
code of ``python -m contrastive_lab train --preset ...``), seed 0. Results go to
benchmarks/results/classifier_presets.json and BENCHMARKS.md.

    flock /tmp/cpu.lock python benchmarks/classifier_presets.py --checkpoint runs/demo-*/checkpoints/last.pt
    # round 2, around the best of round 1:
    flock /tmp/cpu.lock python benchmarks/classifier_presets.py --checkpoint ... --ft-inits ssl --ft-lrs 0.005,0.01 \
        --ft-crops 0.3 --lin-lrs 0.02,0.05 --out benchmarks/results/classifier_presets_round2.json
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import time
from datetime import datetime, timezone
from pathlib import Path

from contrastive_lab.engine import train
from contrastive_lab.presets import get_preset


def run(preset: str, **changes) -> dict:
    """One classifier run of ``preset`` with ``changes``: its test top-1 and timings."""
    cfg = get_preset(preset).replace(**changes)
    t0 = time.perf_counter()
    result = train(cfg, None, verbose=False)
    return {"top1": result["top1"], "steps": result["step"], "train_seconds": result["train_seconds"],
            "wall_seconds": time.perf_counter() - t0}


def floats(text: str) -> list[float]:
    return [float(v) for v in text.split(",") if v]


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--checkpoint", required=True, help="the SSL run's last.pt")
    parser.add_argument("--fractions", default="0.01,1.0")
    parser.add_argument("--ft-lrs", default="0.02,0.05,0.1,0.2")
    parser.add_argument("--ft-crops", default="0,0.3", help="crop_min_scale (0: the recipe's 0.08)")
    parser.add_argument("--ft-inits", default="ssl,random", help="fine-tune from: ssl, random (from scratch)")
    parser.add_argument("--lin-lrs", default="0.1,0.5,2.0", help="linear evaluation lrs ('' for none)")
    parser.add_argument("--out", default="benchmarks/results/classifier_presets.json")
    args = parser.parse_args(argv)
    started, load_start = time.perf_counter(), os.getloadavg()
    runs = {}
    for init, frac, lr, crop in itertools.product(args.ft_inits.split(","), floats(args.fractions), floats(args.ft_lrs),
                                                  floats(args.ft_crops)):
        key = f"finetune/{init}/frac={frac}/lr={lr}/crop={crop}"
        runs[key] = run("finetune-cifar10-cpu", lr=lr, crop_min_scale=crop, label_fraction=frac,
                        init_checkpoint=args.checkpoint if init == "ssl" else "random")
        print(key, runs[key], flush=True)
    for frac, lr in itertools.product(floats(args.fractions), floats(args.lin_lrs)):
        key = f"linear/ssl/frac={frac}/lr={lr}"
        runs[key] = run("linear-eval-cifar10-cpu", lr=lr, label_fraction=frac, init_checkpoint=args.checkpoint)
        print(key, runs[key], flush=True)
    doc = {"data": "cifar10-mini", "checkpoint": args.checkpoint, "seed": 0, "runs": runs,
           "machine": {"platform": platform.platform(), "processor": platform.processor(), "cpus": os.cpu_count()},
           "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
           "sweep_seconds": time.perf_counter() - started, "load_average_at_start": load_start,
           "load_average_at_end": os.getloadavg()}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(doc, indent=2))
    print(f"wrote {out}")
    return doc


if __name__ == "__main__":
    main()
