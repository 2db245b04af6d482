"""Throughput of two-view augmentation: BatchedViews (one call per batch; with its compiled C
kernels, the default on CPU, and with PyTorch ops only, ``native=False``) vs the per-image
torchvision v2 pipeline (what DataLoader workers run), on 256 CIFAR images.

    .venv/bin/python benchmarks/bench_views.py [--repeats 7] [--threads 2]

Data: the first 256 images of cifar10-mini (``$CONTRASTIVE_LAB_DATA`` or
../shared/data/cifar10-mini, official CIFAR-10 python pickles), read with pickle/numpy; random
uint8 images (with a printed note) if the files are missing. Reports the median over repeats
after a warm-up. Numbers are only comparable on the same machine and thread count.

OMP_WAIT_POLICY defaults to PASSIVE here (set it yourself to override): with the default
spin-waiting, OpenMP threads on a CPU shared with other processes stall every multi-threaded
op (we measured a 32 x 32 adjust_hue go from 0.75 ms to 28 ms at load 7 on 2 cores), which
would measure the neighbours rather than the code. It applies to both pipelines alike.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # must be set before torch starts OpenMP

import argparse  # noqa: E402
import datetime as dt  # noqa: E402
import pickle  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

from contrastive_lab.views import (  # noqa: E402
    BatchedViews,
    ViewRecipe,
    build_torchvision_pipeline,
    get_recipe,
    native,
)

N_IMAGES = 256
REPO = Path(__file__).resolve().parents[1]


def load_cifar_uint8(n: int) -> tuple[torch.Tensor, str]:
    """First ``n`` images (n x 3 x 32 x 32 uint8) of cifar10-mini's data_batch_1, or random ones."""
    root = Path(os.environ.get("CONTRASTIVE_LAB_DATA", REPO.parent / "shared/data/cifar10-mini"))
    path = root / "cifar-10-batches-py" / "data_batch_1"
    if not path.exists():
        print(f"NOTE: {path} not found; using random uint8 images instead of cifar10-mini.")
        return torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8), "random uint8"
    with open(path, "rb") as f:
        batch = pickle.load(f, encoding="bytes")
    data = batch.get("data", batch.get(b"data"))  # keys are bytes in the official files
    images = np.asarray(data, dtype=np.uint8)[:n].reshape(-1, 3, 32, 32)
    return torch.from_numpy(images.copy()), f"cifar10-mini ({path})"


def median_time(fn: Callable[[], object], repeats: int, warmup: int = 2) -> float:
    """Median wall time of ``fn()`` in seconds, after ``warmup`` untimed calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def bench_recipe(recipe: ViewRecipe, images: torch.Tensor, repeats: int) -> tuple[float, float, float]:
    """Images/s (two views per image) of BatchedViews with the C kernels, with PyTorch ops only,
    and of the per-image pipeline."""
    pipe = build_torchvision_pipeline(recipe)
    gen = torch.Generator().manual_seed(0)

    def batched(use_c: bool) -> Callable[[], object]:
        views = BatchedViews(recipe, native=use_c)
        return lambda: (views(images, gen), views(images, gen))

    def run_per_image() -> object:
        return [(pipe(img), pipe(img)) for img in images]

    n = len(images)
    fast = n / median_time(batched(True), repeats) if native.available() else float("nan")
    return fast, n / median_time(batched(False), repeats), n / median_time(run_per_image, repeats)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    images, source = load_cifar_uint8(N_IMAGES)
    print(f"date: {dt.datetime.now().isoformat(timespec='seconds')}")
    print(f"cpu: {cpu_model()} ({os.cpu_count()} logical cores visible)")
    print(f"torch {torch.__version__}, threads={torch.get_num_threads()}, python {platform.python_version()}, "
          f"OMP_WAIT_POLICY={os.environ['OMP_WAIT_POLICY']}")
    load = os.getloadavg()[0]
    print(f"load average (1 min) before start: {load:.2f}")
    if load > (os.cpu_count() or 1) - 0.5:
        print("WARNING: other processes are using the CPUs; multi-threaded timings will be noisy and slow.")
    print(f"data: {len(images)} images from {source}; two views each; median of {args.repeats} repeats")
    print(f"compiled view kernels: {'yes' if native.available() else 'NO (no C compiler?)'}")
    print(f"{'recipe':<28}{'batched C img/s':>16}{'batched PyTorch':>16}{'per-image':>11}"
          f"{'C / PyTorch':>12}{'PyTorch / per-image':>20}")
    recipes = (get_recipe("simclr_cifar", size=24), get_recipe("simclr_cifar"), get_recipe("moco_v2", size=32),
               get_recipe("simclr_imagenet", size=32))
    for recipe in recipes:
        fast, batched, slow = bench_recipe(recipe, images, args.repeats)
        label = f"{recipe.name} ({recipe.size} px)"
        print(f"{label:<28}{fast:>16.0f}{batched:>16.0f}{slow:>11.0f}{fast / batched:>11.1f}x"
              f"{batched / slow:>19.1f}x")


if __name__ == "__main__":
    main()
