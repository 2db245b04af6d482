"""How many GPU-hours does a preset cost? Arithmetic from a step time, measured or given.

    python scripts/estimate_cost.py --preset simclr-imagenet-r50 --gpus 32 --step-time 0.45
    python scripts/estimate_cost.py --preset simclr-imagenet-r50 --gpus 32 --from-metrics runs/x/metrics.csv
    python scripts/estimate_cost.py --preset simclr-imagenet-r50 --gpus 32 --measure-steps 20 device=cuda

The arithmetic (``batch_size`` is the global batch B, N the training images, G the GPUs):

    steps     = epochs x floor(N / B)              (drop_last, as the engine; capped by max_steps)
    wall      = steps x t_step                     (t_step: seconds per optimizer step on G GPUs)
    GPU-hours = wall x G / 3600,   cost = GPU-hours x price per GPU-hour

Where ``t_step`` comes from:
* ``--step-time``: you measured it on G GPUs (e.g. from a short run's metrics.csv);
* ``--from-metrics``: a run's metrics.csv: t_step = B / images_per_s (the run's own average);
* ``--measure-steps K``: trains K steps here on ONE device at the per-GPU batch B/G and takes the
  mean step time. That is a weak-scaling estimate: it ignores the gradient all-reduce and the
  all-gathers (a few percent on NVLink within a node, more across nodes) and counts the first,
  slow step, so treat it as a rough guide and re-measure on the cluster.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import tempfile
from pathlib import Path

from contrastive_lab.presets import Config, apply_overrides, get_preset

# Training-set sizes for presets that stream from disk (the engine would have to scan the folder).
IMAGENET_TRAIN = 1_281_167  # ImageNet-1k (ILSVRC-2012) training images
SUBSET_SIZES = {"1percent.txt": 12_811, "10percent.txt": 128_116}  # SimCLR's label subsets (Sec. 6)
KNOWN_SIZES = {"imagefolder": IMAGENET_TRAIN, "cifar10": 50_000, "cifar100": 50_000, "stl10": 5_000}


def default_num_images(cfg: Config) -> int:
    """Training images for ``cfg``: SimCLR's subset sizes, the synthetic size, or the full dataset."""
    subset_file = getattr(cfg.options, "label_subset_file", "")  # classifier runs (methods/classifier.py)
    fraction = getattr(cfg.options, "label_fraction", 1.0)
    if subset_file:
        name = Path(subset_file).name
        if name not in SUBSET_SIZES:
            raise ValueError(f"unknown size of label subset {name!r}; pass --num-images")
        return SUBSET_SIZES[name]
    if cfg.dataset == "synthetic":
        n = cfg.synthetic_size
    elif cfg.dataset in KNOWN_SIZES:
        n = KNOWN_SIZES[cfg.dataset]
    else:
        raise ValueError(f"unknown training-set size for dataset {cfg.dataset!r}; pass --num-images")
    n = min(n, cfg.subset) if cfg.subset else n
    return max(1, round(n * fraction)) if fraction < 1 else n


def total_steps(cfg: Config, num_images: int) -> int:
    """The engine's step count: epochs x floor(N / B), capped by ``max_steps``."""
    steps = cfg.epochs * (num_images // cfg.batch_size)
    if steps == 0:
        raise ValueError(f"batch_size={cfg.batch_size} leaves no full batch in {num_images} images")
    return min(steps, cfg.max_steps) if cfg.max_steps else steps


def estimate(cfg: Config, gpus: int, step_time_s: float, num_images: int, price_per_gpu_hour: float = 0.0) -> dict:
    """Steps, wall-clock hours, GPU-hours (and cost) of ``cfg`` on ``gpus`` GPUs at ``step_time_s`` per step."""
    if gpus < 1:
        raise ValueError(f"--gpus must be >= 1, got {gpus}")
    if not step_time_s > 0:
        raise ValueError(f"the step time must be > 0 seconds, got {step_time_s}")
    if cfg.batch_size % gpus:
        raise ValueError(f"the global batch {cfg.batch_size} does not split evenly over {gpus} GPUs")
    steps = total_steps(cfg, num_images)
    wall_h = steps * step_time_s / 3600
    result = {
        "batch_size": cfg.batch_size, "gpus": gpus, "per_gpu_batch": cfg.batch_size // gpus,
        "num_images": num_images, "epochs": cfg.epochs, "steps": steps, "step_time_s": step_time_s,
        "images_per_s": cfg.batch_size / step_time_s, "wall_hours": wall_h, "gpu_hours": wall_h * gpus,
    }
    if price_per_gpu_hour:
        result["cost"] = wall_h * gpus * price_per_gpu_hour
    return result


def step_time_from_metrics(path: str | Path, batch_size: int) -> float:
    """t_step = B / images_per_s from the last row of a run's metrics.csv that has it."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no metrics file at {path}")
    with open(path, newline="") as f:
        rates = [float(r["images_per_s"]) for r in csv.DictReader(f) if r.get("images_per_s")]
    if not rates:
        raise ValueError(f"{path} has no images_per_s values yet (rows are written every 10 steps)")
    return batch_size / rates[-1]


def measure_step_time(cfg: Config, gpus: int, steps: int) -> float:
    """Mean seconds per step of ``steps`` steps on this machine at the per-GPU batch B/G."""
    from contrastive_lab.engine import train

    local = cfg.replace(batch_size=cfg.batch_size // gpus, max_steps=steps, figures=False, knn_every=0,
                        checkpoint_every=10**9)
    with tempfile.TemporaryDirectory() as tmp:
        result = train(local, Path(tmp) / "run", verbose=False)
    if result["step"] < 1:
        raise ValueError(f"the measurement ran no steps (stop reason {result.get('stop_reason')!r}); "
                         "check that the dataset has at least one batch of B/G images")
    return result["train_seconds"] / result["step"]  # unrounded: a tiny step is short, never zero


def report(res: dict) -> str:
    lines = [
        f"global batch {res['batch_size']} = {res['gpus']} GPUs x {res['per_gpu_batch']}; "
        f"{res['num_images']} images x {res['epochs']} epochs = {res['steps']} steps",
        f"step time {res['step_time_s']:.3f} s  ->  {res['images_per_s']:.0f} images/s",
        f"wall clock {res['wall_hours']:.1f} h;  {res['gpu_hours']:.0f} GPU-hours",
    ]
    if "cost" in res:
        lines.append(f"cost {res['cost']:.0f} (at the given price per GPU-hour)")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--preset", required=True, help="preset name (python -m contrastive_lab presets)")
    parser.add_argument("--gpus", type=int, required=True, help="number of GPUs the run will use")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--step-time", type=float, help="seconds per optimizer step on --gpus GPUs")
    source.add_argument("--from-metrics", help="metrics.csv of a run at the same batch size and GPU count")
    source.add_argument("--measure-steps", type=int, help="measure this many steps here at batch B/G")
    parser.add_argument("--num-images", type=int, default=0, help="training images (default: from the preset)")
    parser.add_argument("--price", type=float, default=0.0, help="price per GPU-hour (adds a cost line)")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides, as for train")
    args = parser.parse_args(argv)
    try:
        cfg = apply_overrides(get_preset(args.preset), args.overrides)
        num_images = args.num_images or default_num_images(cfg)
        if args.step_time is not None:
            step_time = args.step_time
        elif args.from_metrics:
            step_time = step_time_from_metrics(args.from_metrics, cfg.batch_size)
        else:
            if cfg.batch_size % args.gpus:
                raise ValueError(f"the global batch {cfg.batch_size} does not split evenly over {args.gpus} GPUs")
            step_time = measure_step_time(cfg, args.gpus, args.measure_steps)
        res = estimate(cfg, args.gpus, step_time, num_images, args.price)
    except (ValueError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(json.dumps(res, indent=2) if args.json else report(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
