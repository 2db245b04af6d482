"""Training benchmarks for the demo preset (issue: engine). Results go to BENCHMARKS.md.

Measures, in one run, on cifar10-mini (or whatever CONTRASTIVE_LAB_DATA points at):

1. throughput of the demo training step as the engine runs it (``engine.optimizer_step`` on the
   batches of ``engine.TensorBatches``: indexing, views drawn by BatchedViews, forward, backward,
   clip, optimizer and schedule steps, the method's hook) against the model-only bound (forward,
   backward and optimizer step of the same model on views drawn in advance: no augmentation and
   no engine bookkeeping at all);
2. fp32 vs bf16-autocast throughput of the model step;
3. quality at a fixed budget: kNN top-1 (k=200, T=0.1) on the test split, on h and on z = g(h),
   after BUDGET seconds of training with the `simclr-cifar10-cpu` preset;
4. the same budget with lightly's SimCLR pipeline (per-image SimCLRTransform views in a
   DataLoader, lightly's NTXentLoss) on the same encoder, head, optimiser and precision.
   Needs `lightly` (installed only in the benchmark environment: `make bench-env`).

    python benchmarks/bench_train.py --budget 420 --out benchmarks/results/bench_train.json
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import resource
import statistics
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import torch

from contrastive_lab.engine import (
    Run,
    ScheduleFitter,
    TensorBatches,
    load_split,
    open_run,
    optimizer_step,
    prepare_model,
    resolve_lr,
    train,
    training_images,
    view_recipe,
)
from contrastive_lab.engine.run import build_monitor
from contrastive_lab.methods import Batch, Progress, build_method
from contrastive_lab.optim import build_optimizer, build_scheduler
from contrastive_lab.presets import apply_overrides, get_preset
from contrastive_lab.runtime import autocast_dtype
from contrastive_lab.views import native


def machine() -> dict:
    cpu = "unknown"
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return {
        "cpu": cpu,
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
    }


def cpu_seconds() -> float:
    """CPU time of this process and its finished children (DataLoader workers), user + system."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def interleaved_medians(step_fns: list, n: int, warmup: int = 2) -> list[float]:
    """Median seconds per call of each function, calling them in turn ``n`` times after ``warmup`` rounds."""
    times: list[list[float]] = [[] for _ in step_fns]
    for i in range(warmup + n):
        for fn, record in zip(step_fns, times):
            t = time.perf_counter()
            fn()
            if i >= warmup:
                record.append(time.perf_counter() - t)
    return [statistics.median(t) for t in times]


def throughput(cfg, n: int) -> dict:
    """Images per second of the engine's full step vs the model-only bound, in fp32 and in bf16, on
    one CPU process (the views with the compiled view kernels if available, as the engine uses them)."""
    cfg = cfg.replace(device="cpu")
    out = {"native_view_kernels": native.available(), "fp32": measure_steps(cfg.replace(precision="fp32"), n)}
    bf16 = autocast_dtype("cpu")
    out["bf16"] = measure_steps(cfg.replace(precision="bf16"), n) if bf16 else "not supported on this CPU"
    return out


def measure_steps(cfg, n: int) -> dict:
    """The bound (model step on fixed views), the full step (the engine's: views + model), and views
    alone; the last two also with the PyTorch view pipeline (native=False), for comparison in the
    same run; and the bound with oneDNN's own convolution backward (gemm_weight_grad=False)."""
    run = open_run(cfg, None, verbose=False)  # as the engine trains it: model, optimizer, schedule, batches
    plain = open_run(cfg.replace(gemm_weight_grad=False), None, verbose=False)  # oneDNN's own conv backward
    recipes = [views.recipe for views in run.batches.views]
    torch_batches = TensorBatches(run.train_ds, recipes, cfg, run.device, 0, 1, native=False)
    ours, pytorch = batch_stream(run.batches), batch_stream(torch_batches)
    fixed = pre_drawn(next(batch_stream(TensorBatches(run.train_ds, recipes, cfg, run.device, 0, 1))), cfg)
    run.model.train()
    plain.model.train()

    # Interleaved (bound, full, views, ...) so that a change in the machine's speed during the
    # measurement (other jobs, frequency scaling) hits all of them alike.
    bound, full, views_only, full_torch, views_torch, bound_plain = interleaved_medians(
        [lambda: model_step(run, fixed), lambda: optimizer_step(run, next(ours)), lambda: next(ours),
         lambda: optimizer_step(run, next(pytorch)), lambda: next(pytorch), lambda: model_step(plain, fixed)],
        n)
    batch = cfg.batch_size
    return {
        "gemm_weight_grad": cfg.gemm_weight_grad,
        "bound_img_per_s": round(batch / bound, 1),
        "bound_plain_conv_img_per_s": round(batch / bound_plain, 1),
        "full_img_per_s": round(batch / full, 1),
        "full_over_bound": round(bound / full, 4),
        "views_ms_per_step": round(1000 * views_only, 1),
        "pytorch_views": {"full_img_per_s": round(batch / full_torch, 1),
                           "full_over_bound": round(bound / full_torch, 4),
                           "views_ms_per_step": round(1000 * views_torch, 1)},
    }


def batch_stream(batches: TensorBatches):
    """The batches of epoch 0, 1, 2, ... one after the other, as long as asked (views drawn on ``next``)."""
    epoch = 0
    while True:
        yield from batches.epoch(epoch)
        epoch += 1


def pre_drawn(batch: Batch, cfg) -> Batch:
    """A batch whose views are drawn already, in the memory format the model's step gets them in."""
    fmt = torch.channels_last if cfg.channels_last else torch.contiguous_format
    return dataclasses.replace(batch, views=[v.contiguous(memory_format=fmt) for v in batch.views])


def model_step(run: Run, batch: Batch) -> None:
    """The model-only step: forward, backward and optimizer step of the run's model on a batch of
    ready views, then the method's ``after_step`` (a no-op for SimCLR; MoCo's momentum update and
    enqueue are part of its step). No views, no lr schedule, no loss checks, no logs."""
    with run.autocast():
        loss, _ = run.model(batch)
    run.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    run.optimizer.step()
    hook = getattr(run.method, "after_step", None)
    if hook is not None:
        # Progress counts the steps done, this one included (as optimizer_step passes it after
        # run.step += 1); the bound does not advance run.step, so it is the step after the last full one
        hook(Progress(run.step + 1, run.total_steps, run.steps_per_epoch))


def ours_at_budget(cfg, budget: float, out_dir: Path, fit: bool) -> dict:
    run = cfg.replace(time_budget_s=budget, knn_every=0, figures=False)  # the preset's schedule, capped
    if fit and budget:  # the cosine ends at the budget, whatever the machine's speed (engine.ScheduleFitter)
        run = run.replace(fit_to_budget=True, epochs=FIT_MAX_EPOCHS, max_steps=0)
    cpu0, load0 = cpu_seconds(), os.getloadavg()[0]
    result = train(run, out_dir, verbose=True)
    return {"knn_random": result["knn_random"], "knn_final": result["knn_final"],
            "knn_random_z": result.get("knn_random_z"), "knn_final_z": result.get("knn_final_z"), "steps": result["step"],
            "schedule_steps": result["schedule_steps"], "fit_to_budget": run.fit_to_budget,
            "train_seconds": result["train_seconds"], "cpu_seconds_incl_eval": round(cpu_seconds() - cpu0, 1),
            "load_before": load0, "load_after": os.getloadavg()[0]}


FIT_MAX_EPOCHS = 1000  # with a fitted schedule, epochs is only an upper bound


def lightly_at_budget(cfg, budget: float, train_ds, test_ds, workers: int, fit: bool) -> dict:
    """lightly's SimCLR data path and loss on our encoder/head/optimiser (same precision).

    With ``fit`` its schedule is fitted to the budget with the engine's ``ScheduleFitter`` (as
    ``fit_to_budget`` does): first from the speed of steps 5 .. steps_per_epoch + 5, then every epoch
    (each window includes one restart of the DataLoader's workers, which this loop pays every epoch)."""
    from lightly.loss import NTXentLoss
    from lightly.transforms import SimCLRTransform
    from torchvision.transforms import v2 as tv2

    recipe = view_recipe(cfg)
    transform = SimCLRTransform(
        input_size=cfg.image_size, cj_strength=0.5, gaussian_blur=0.0,  # SimCLR App. B.9 for CIFAR
        normalize={"mean": list(recipe.mean), "std": list(recipe.std)},
    )
    to_pil = tv2.ToPILImage()

    class Pairs(torch.utils.data.Dataset):
        def __len__(self):
            return len(train_ds)

        def __getitem__(self, i):
            return transform(to_pil(train_ds.images[i]))

    loader = torch.utils.data.DataLoader(  # workers end with each epoch, so their CPU time is counted
        Pairs(), batch_size=cfg.batch_size, shuffle=True, drop_last=True, num_workers=workers,
    )
    torch.manual_seed(cfg.seed)
    method = prepare_model(build_method(cfg), cfg, torch.device("cpu"), world=1)  # the same encoder code as ours
    criterion = NTXentLoss(temperature=cfg.options.temperature)
    lr = resolve_lr(cfg)
    opt = build_optimizer(cfg.optimizer, method, lr=lr, weight_decay=cfg.weight_decay, momentum=cfg.momentum)
    # the same schedule as the preset (epochs x steps, warmup, cosine), and the same time cap
    steps_per_epoch = len(train_ds) // cfg.batch_size
    total = (FIT_MAX_EPOCHS if fit and budget else cfg.epochs) * steps_per_epoch
    sched = build_scheduler(opt, total_steps=total, warmup_steps=round(cfg.warmup_epochs * steps_per_epoch))
    # refitted every epoch, as the engine does (each window holds one restart of the workers)
    fitter = ScheduleFitter(budget, total, 5, steps_per_epoch + 5, every=steps_per_epoch) if fit and budget else None
    dtype = autocast_dtype("cpu")
    monitor = build_monitor(cfg, training_images(cfg, train_ds), test_ds)  # the engine's kNN monitor, as ours
    knn_random = monitor(method.encoder, method.head, "cpu")
    budget = budget or float("inf")
    start, step, images, cpu0, load0 = time.perf_counter(), 0, 0, cpu_seconds(), os.getloadavg()[0]
    while time.perf_counter() - start < budget and step < total:
        for v1, v2 in loader:
            v1 = v1.contiguous(memory_format=torch.channels_last)
            v2 = v2.contiguous(memory_format=torch.channels_last)
            with torch.autocast("cpu", dtype=dtype or torch.float32, enabled=dtype is not None):
                z = method.head(method.encoder(torch.cat([v1, v2])))
            z1, z2 = z.float().chunk(2)
            loss = criterion(z1, z2)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            step += 1
            images += cfg.batch_size
            fitted = fitter.update(step, time.perf_counter() - start) if fitter else None
            if fitted:
                total = fitted
                sched.resize(fitted)
            if time.perf_counter() - start >= budget or step >= total:
                break
    seconds, cpu = time.perf_counter() - start, cpu_seconds() - cpu0
    knn_final = monitor(method.encoder, method.head, "cpu")
    return {"knn_random": knn_random["h"], "knn_final": knn_final["h"],
            "knn_random_z": knn_random.get("z"), "knn_final_z": knn_final.get("z"), "steps": step,
            "schedule_steps": total,
            "train_seconds": round(seconds, 1), "cpu_seconds": round(cpu, 1), "img_per_s": round(images / seconds, 1),
            "workers": workers, "load_before": load0, "load_after": os.getloadavg()[0]}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="simclr-cifar10-cpu")
    parser.add_argument("--budget", type=float, default=420.0,
                        help="wall-clock cap (s) on the quality runs; 0 = the preset's whole schedule")
    parser.add_argument("--steps", type=int, default=8, help="timed steps per throughput measurement")
    parser.add_argument("--skip", nargs="*", default=[], choices=["throughput", "ours", "lightly"])
    parser.add_argument("--lightly-workers", type=int, default=1)
    parser.add_argument("--schedule", choices=["fit", "preset"], default="fit",
                        help="fit: both quality runs fit their cosine schedule to the budget (fit_to_budget); "
                             "preset: the preset's own schedule, cut off by the budget")
    parser.add_argument("--out", default="benchmarks/results/bench_train.json")
    parser.add_argument("--run-dir", default="/tmp/contrastive_lab_bench")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides, as for train")
    args = parser.parse_args(argv)
    torch.set_num_threads(2)

    cfg = apply_overrides(get_preset(args.preset), args.overrides)
    train_ds, test_ds = load_split(cfg, "train"), load_split(cfg, "test")
    report = {"command": "python " + " ".join(sys.argv), "machine": machine(), "preset": args.preset,
              "overrides": args.overrides, "data": f"{train_ds.name} ({len(train_ds)} train / {len(test_ds)} test)", "budget_s": args.budget,
              "schedule": args.schedule}
    print(json.dumps(report, indent=2))
    if "throughput" not in args.skip:
        report["throughput"] = throughput(cfg, args.steps)
        print(json.dumps(report["throughput"], indent=2))
    if "ours" not in args.skip:
        run_dir = Path(args.run_dir) / datetime.now().strftime("%Y%m%d-%H%M%S")
        report["ours"] = ours_at_budget(cfg, args.budget, run_dir, args.schedule == "fit")
        print("ours:", report["ours"])
    if "lightly" not in args.skip:
        try:
            import lightly

            report["lightly_version"] = lightly.__version__
            report["lightly"] = lightly_at_budget(cfg, args.budget, train_ds, test_ds, args.lightly_workers,
                                                  args.schedule == "fit")
        except ImportError:
            report["lightly"] = "lightly not installed (make bench-env)"
        print("lightly:", report["lightly"])
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    print(f"saved {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
