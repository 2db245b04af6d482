"""GPU throughput benchmarks (chapter 13, "Scaling up"). Needs a CUDA GPU; exits with a message otherwise.

1. **SimCLR ResNet-50 at 224 px**, one training step (views -> encoder -> head -> NT-Xent -> LARS) on
   one GPU at a per-GPU batch (default 256 images = 512 views), in four settings:
   fp32 | bf16 autocast | bf16 + channels_last | bf16 + channels_last + torch.compile.
   Reported: images/s (median step), the model-only rate (views made in advance), peak memory.
   The views are drawn on the GPU by BatchedViews from 256 px uint8 images, as ``gpu_views=true``
   does after the DataLoader has decoded them; JPEG decoding is not measured.
2. **ResNet-18 SimCLR on CIFAR-sized data**: wall time of one epoch of 50 000 synthetic 32 px images
   at batch 512 (the engine's TensorBatches path: data on the GPU, views on the GPU), bf16 +
   channels_last (+ compile unless ``--no-compile``). Target on an H100: <= 6 s per epoch.

    python benchmarks/bench_gpu.py --out benchmarks/results/bench_gpu.json
    python benchmarks/bench_gpu.py --steps 10 --batch 128 --no-compile     # a quicker look

Multiply the step time by the steps of a run for its cost: ``scripts/estimate_cost.py --step-time``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch


def need_cuda() -> torch.device:
    if not torch.cuda.is_available():
        sys.exit(
            "bench_gpu.py measures GPU throughput and needs a CUDA GPU, but torch.cuda.is_available() is False "
            "on this machine; nothing was measured. Run it on a GPU node (e.g. inside the single-node sbatch job)."
        )
    return torch.device("cuda", 0)


def cuda_time(fn, steps: int, warmup: int) -> float:
    """Median seconds per call of ``fn`` (synchronised), after ``warmup`` calls (compilation, cudnn autotune)."""
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def simclr_r50(batch: int, steps: int, warmup: int, bf16: bool, channels_last: bool, compile_: bool,
               device: torch.device | None = None) -> dict:
    """One SimCLR ImageNet step of the ``simclr-imagenet-r50`` preset at a per-GPU batch (on GPU 0
    unless ``device`` says otherwise)."""
    from contrastive_lab.engine import resolve_lr, view_recipe
    from contrastive_lab.methods import Batch, build_method
    from contrastive_lab.optim import build_optimizer
    from contrastive_lab.presets import get_preset
    from contrastive_lab.views import BatchedViews

    device = device or torch.device("cuda", 0)
    cfg = get_preset("simclr-imagenet-r50").replace(batch_size=batch, channels_last=channels_last)
    torch.manual_seed(0)
    method = build_method(cfg).to(device)
    if channels_last:
        method = method.to(memory_format=torch.channels_last)
    model = torch.compile(method) if compile_ else method
    optimizer = build_optimizer("lars", method, lr=resolve_lr(cfg), weight_decay=cfg.weight_decay)
    views = BatchedViews(view_recipe(cfg))
    images = torch.randint(0, 256, (batch, 3, 256, 256), dtype=torch.uint8, device=device)
    gen = torch.Generator(device=device).manual_seed(0)
    index = torch.arange(batch, device=device)
    fmt = torch.channels_last if channels_last else torch.contiguous_format

    def make_views():
        return (views(images, gen).contiguous(memory_format=fmt), views(images, gen).contiguous(memory_format=fmt))

    fixed = make_views()

    def step(v1v2=None):  # SimCLR has no after_step hook: nothing runs after optimizer.step()
        v1, v2 = v1v2 if v1v2 is not None else make_views()
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            loss, _ = model(Batch([v1, v2], index))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    torch.cuda.reset_peak_memory_stats(device)
    model_only = cuda_time(lambda: step(fixed), steps, warmup)
    full = cuda_time(step, steps, 2)
    views_only = cuda_time(make_views, steps, 2)
    return {
        "batch": batch, "bf16": bf16, "channels_last": channels_last, "compile": compile_,
        "step_s": round(full, 4), "images_per_s": round(batch / full, 1),
        "model_only_images_per_s": round(batch / model_only, 1), "views_s": round(views_only, 4),
        "peak_memory_gb": round(torch.cuda.max_memory_allocated(device) / 2**30, 2),
    }


def cifar_epoch(batch: int, compile_: bool, images: int = 50_000, device: torch.device | None = None) -> dict:
    """Seconds for one epoch of ResNet-18 SimCLR on ``images`` synthetic 32 px images (after a warm-up),
    the batches and views drawn by the engine's ``TensorBatches`` (on GPU 0 unless ``device`` says otherwise)."""
    from contrastive_lab.engine import TensorBatches, load_split, prepare_model, resolve_lr, view_recipe
    from contrastive_lab.methods import build_method, method_views
    from contrastive_lab.optim import build_optimizer
    from contrastive_lab.presets import get_preset

    device = device or torch.device("cuda", 0)
    cfg = get_preset("simclr-cifar10").replace(
        dataset="synthetic", synthetic_size=images, encoder="resnet18", batch_size=batch, precision="bf16",
        channels_last=True, compile=compile_,
    )
    data = load_split(cfg, "train")
    torch.manual_seed(0)
    method = prepare_model(build_method(cfg), cfg, device, 1)
    batches = TensorBatches(data, method_views(method, view_recipe(cfg)), cfg, device, 0, 1)
    model = torch.compile(method) if compile_ else method
    optimizer = build_optimizer("lars", method, lr=resolve_lr(cfg), weight_decay=cfg.weight_decay)

    def run(epoch: int, limit: int | None = None) -> int:  # SimCLR: no after_step hook to call
        n = 0
        for batch in batches.epoch(epoch):
            batch.views = [v.contiguous(memory_format=torch.channels_last) for v in batch.views]
            with torch.autocast(device.type, dtype=torch.bfloat16):
                loss, _ = model(batch)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            n += 1
            if limit and n >= limit:
                break
        return n

    run(0, limit=10)  # warm-up: compilation, cudnn autotuning, allocator
    torch.cuda.synchronize()
    start = time.perf_counter()
    steps = run(1)
    torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    return {"images": images, "batch": batch, "steps": steps, "compile": compile_, "epoch_s": round(seconds, 2),
            "images_per_s": round(steps * batch / seconds, 1), "target_epoch_s": 6.0}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch", type=int, default=256, help="ResNet-50 per-GPU batch (images)")
    parser.add_argument("--steps", type=int, default=20, help="timed steps per setting")
    parser.add_argument("--warmup", type=int, default=5, help="untimed steps first (compile, autotune)")
    parser.add_argument("--no-compile", action="store_true", help="skip the torch.compile settings")
    parser.add_argument("--out", default=None, help="also write the results to this JSON file")
    args = parser.parse_args(argv)
    device = need_cuda()
    torch.backends.cudnn.benchmark = True
    results = {"device": torch.cuda.get_device_name(device), "torch": torch.__version__, "resnet50_simclr": []}
    settings = [(False, False, False), (True, False, False), (True, True, False)]
    if not args.no_compile:
        settings.append((True, True, True))
    for bf16, cl, comp in settings:
        res = simclr_r50(args.batch, args.steps, args.warmup, bf16, cl, comp)
        results["resnet50_simclr"].append(res)
        print(f"ResNet-50 SimCLR 224px batch {args.batch}: bf16={bf16} channels_last={cl} compile={comp}: "
              f"{res['images_per_s']:.0f} img/s (model only {res['model_only_images_per_s']:.0f}), "
              f"peak {res['peak_memory_gb']} GB", flush=True)
        torch.cuda.empty_cache()
    results["resnet18_cifar_epoch"] = cifar_epoch(512, compile_=not args.no_compile)
    epoch = results["resnet18_cifar_epoch"]
    print(f"ResNet-18 SimCLR, one epoch of 50k synthetic 32px images: {epoch['epoch_s']} s "
          f"({epoch['images_per_s']:.0f} img/s; target <= 6 s on an H100)")
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(results, indent=2))
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
