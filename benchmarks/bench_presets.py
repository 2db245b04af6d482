"""Throughput of every CPU preset's training step against its own model-only bound, in one run.

For each ``*-cpu`` pretraining preset this opens the run as the engine trains it
(``engine.open_run``: model, optimizer, schedule, batches) and times, interleaved,

- the **bound**: forward, backward and optimizer step of the method's model on a batch whose views
  were drawn in advance, then the method's ``after_step`` hook (EMA / momentum update, queue or bank
  write: part of the method, not bookkeeping). No views, no lr schedule, no checks, no logs;
- the **full step**: ``engine.optimizer_step`` on the next batch of the run's own batches, with the
  views drawn on the fly (indexing, augmentation, the step, clipping, the schedule, the hook);
- the **views** alone (drawing the next batch).

``full_over_bound`` = bound seconds / full-step seconds (1.0 = the engine adds nothing to the model).
Every preset runs on one CPU process at the precision the engine picks on this machine
(``precision=auto``: bf16 autocast where the CPU has native bf16, else fp32), unless overridden.

    python benchmarks/bench_presets.py --steps 10 --out benchmarks/results/bench_presets.json

The classifier presets (``linear-eval-cifar10-cpu``, ``finetune-cifar10-cpu``) train a classifier,
not a method, and are measured by ``benchmarks/classifier_presets.py``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_train import batch_stream, interleaved_medians, machine, model_step  # noqa: E402

from contrastive_lab.engine import open_run, optimizer_step  # noqa: E402
from contrastive_lab.engine.step import to_device  # noqa: E402
from contrastive_lab.presets import PRESETS, apply_overrides, get_preset  # noqa: E402

CLASSIFIER_PRESETS = ("linear-eval-cifar10-cpu", "finetune-cifar10-cpu")


def cpu_presets() -> list[str]:
    """Every pretraining preset sized for the CPU, in the registry's order."""
    return [name for name in PRESETS if name.endswith("-cpu") and name not in CLASSIFIER_PRESETS]


def measure(name: str, overrides: list[str], n: int) -> dict:
    """Bound, full step and views of one preset, interleaved ``n`` times after 2 warm-up rounds."""
    cfg = apply_overrides(get_preset(name), overrides).replace(device="cpu")
    run = open_run(cfg, None, verbose=False)
    stream = batch_stream(run.batches)
    fixed = to_device(next(stream), run.device, run.dtype, cfg.channels_last)  # as the step gets it
    run.model.train()
    start = time.perf_counter()
    bound, full, views = interleaved_medians(
        [lambda: model_step(run, fixed), lambda: optimizer_step(run, next(stream)), lambda: next(stream)], n)
    images = cfg.batch_size
    return {
        "method": cfg.method, "encoder": f"{cfg.encoder} width {cfg.width}", "batch_size": images,
        "image_size": cfg.image_size, "precision": str(run.amp_dtype or run.dtype).replace("torch.", ""),
        "views_per_image": len(fixed.views),
        "bound_ms": round(1000 * bound, 1), "full_ms": round(1000 * full, 1), "views_ms": round(1000 * views, 1),
        "bound_img_per_s": round(images / bound, 1), "full_img_per_s": round(images / full, 1),
        "full_over_bound": round(bound / full, 4), "seconds": round(time.perf_counter() - start, 1),
    }


def table(results: dict) -> str:
    """The markdown table BENCHMARKS.md shows."""
    rows = ["| preset | method | precision | batch x views | bound img/s | full step img/s | views ms/step | full / bound |",
            "|---|---|---|---:|---:|---:|---:|---:|"]
    for name, r in results.items():
        rows.append(f"| `{name}` | {r['method']} | {r['precision']} | {r['batch_size']} x {r['views_per_image']} | "
                    f"{r['bound_img_per_s']} | {r['full_img_per_s']} | {r['views_ms']} | **{r['full_over_bound']:.3f}** |")
    return "\n".join(rows)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--presets", nargs="*", default=None, help="default: every CPU pretraining preset")
    parser.add_argument("--steps", type=int, default=10, help="timed rounds per preset (medians)")
    parser.add_argument("--out", default="benchmarks/results/bench_presets.json")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides for every preset")
    args = parser.parse_args(argv)
    torch.set_num_threads(2)
    names = args.presets or cpu_presets()
    unknown = [n for n in names if n not in PRESETS]
    if unknown:
        parser.error(f"unknown preset(s) {unknown}; choose from {cpu_presets()}")
    report = {"command": "python " + " ".join(sys.argv), "machine": machine(), "steps": args.steps,
              "overrides": args.overrides, "results": {}}
    for name in names:
        report["results"][name] = measure(name, args.overrides, args.steps)
        print(name, json.dumps(report["results"][name]), flush=True)
    print(table(report["results"]))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    print(f"saved {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
