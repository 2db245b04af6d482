"""Time to accuracy: the demo recipe against the per-image torchvision DataLoader pipeline.

Both pipelines train the same SimCLR model (the `simclr-cifar10-cpu` preset's encoder, head,
NT-Xent loss, LARS, warmup + cosine schedule fitted to the same wall-clock budget by the engine's
``ScheduleFitter``, the same initial weights), one after the other in one run; they differ only in
how the views reach the model:

- **ours**: the engine's step (``engine.optimizer_step``) on batches whose two views are drawn per
  batch on the uint8 tensor by ``views.BatchedViews`` in the training process;
- **torchvision**: what most tutorials and libraries do (e.g. the SimCLR tutorials of the UvA DL
  course and of lightly): a ``Dataset`` whose ``__getitem__`` turns the image into a PIL image and
  runs torchvision's transforms twice (RandomResizedCrop, flip, ColorJitter with p=0.8, grayscale
  p=0.2, ToTensor, Normalize: the same view distribution), in a ``DataLoader`` with
  ``num_workers`` worker processes (2 on a 2-core machine, persistent, shuffled, drop_last).

Every ``--eval-every`` seconds of training the clock stops and the engine's kNN monitor (k=200,
T=0.1, on the 32-px training images as memory and the test split as queries) measures top-1 on
h and on z = g(h). Reported: the curves, a plot, and the training seconds each pipeline needs to
reach kNN 0.45 and 0.50 (on h and on z; linear interpolation between evaluations; None when a
pipeline never gets there within the budget) with their ratio.

    python benchmarks/bench_time_to_accuracy.py --budget 420 --out benchmarks/results/time_to_accuracy.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_train import machine  # noqa: E402

from contrastive_lab.engine import (  # noqa: E402,E501
    ScheduleFitter,
    load_split,
    open_run,
    optimizer_step,
    prepare_model,
    resolve_lr,
    training_images,
    view_recipe,
)
from contrastive_lab.engine.loop import announce, refit_schedule  # noqa: E402
from contrastive_lab.engine.run import build_monitor  # noqa: E402
from contrastive_lab.losses import nt_xent  # noqa: E402
from contrastive_lab.methods import build_method  # noqa: E402
from contrastive_lab.optim import build_optimizer, build_scheduler  # noqa: E402
from contrastive_lab.presets import apply_overrides, get_preset  # noqa: E402
from contrastive_lab.runtime import autocast_dtype  # noqa: E402

MAX_EPOCHS = 1000  # with a fitted schedule, epochs is only an upper bound
TARGETS = (0.45, 0.50)


def watch(steps: Iterator[None], evaluate: Callable[[], dict], budget: float, every: float,
          paused: Callable[[float], None] = lambda s: None) -> list[dict]:
    """Run ``steps`` (one optimizer step per ``next``) until ``budget`` training seconds or the end,
    evaluating at 0 s, every ``every`` training seconds, and at the end; the clock stops during an
    evaluation (``paused(seconds)`` is told, for a schedule fitter that reads the same clock)."""
    curve, train_s, step, next_eval = [], 0.0, 0, every
    curve.append({"train_s": 0.0, "step": 0, **evaluate()})
    while train_s < budget:
        t0 = time.perf_counter()
        if next(steps, "done") == "done":
            break
        train_s += time.perf_counter() - t0
        step += 1
        if train_s >= next_eval and train_s < budget:
            t1 = time.perf_counter()
            curve.append({"train_s": round(train_s, 1), "step": step, **evaluate()})
            paused(time.perf_counter() - t1)
            next_eval += every
    curve.append({"train_s": round(train_s, 1), "step": step, **evaluate()})
    return curve


def time_to(curve: list[dict], key: str, target: float) -> float | None:
    """Training seconds at which ``curve[key]`` first reaches ``target`` (linear between points)."""
    for before, after in zip(curve, curve[1:]):
        if after[key] >= target:
            if before[key] >= target:
                return before["train_s"]
            frac = (target - before[key]) / (after[key] - before[key])
            return round(before["train_s"] + frac * (after["train_s"] - before["train_s"]), 1)
    return None


def ours(cfg, budget: float, every: float, monitor) -> dict:
    """The engine's own step and batches, schedule fitted to the budget as ``fit_to_budget`` does."""
    cfg = cfg.replace(time_budget_s=budget, fit_to_budget=True, epochs=MAX_EPOCHS, max_steps=0, knn_every=0,
                      figures=False)
    run = open_run(cfg, None, verbose=False)
    announce(run)  # sets up the run's ScheduleFitter, as train() does
    run.start_time, run.paused = run.clock(), 0.0

    def steps():
        epoch = 0
        while run.step < run.total_steps:
            for batch in run.batches.epoch(epoch):
                optimizer_step(run, batch)
                refit_schedule(run)
                yield
                if run.step >= run.total_steps:
                    return
            epoch += 1

    def evaluate():
        accs = monitor(run.method.encoder, run.method.head, run.device)
        run.model.train()
        return {"knn_h": accs["h"], "knn_z": accs.get("z")}

    def paused(seconds):
        run.paused += seconds

    curve = watch(steps(), evaluate, budget, every, paused)
    return {"curve": curve, "schedule_steps": run.total_steps}


class TutorialPairs(torch.utils.data.Dataset):
    """Two views per image, made by PIL transforms in ``__getitem__`` (the tutorial pipeline)."""

    def __init__(self, images: torch.Tensor, recipe):
        from torchvision import transforms as T

        self.images = images  # N x 3 x H x W uint8
        jitter = T.ColorJitter(*recipe.jitter)
        self.transform = T.Compose([
            T.RandomResizedCrop(recipe.size, scale=recipe.crop_scale, ratio=recipe.crop_ratio),
            T.RandomHorizontalFlip(p=recipe.flip_p),
            T.RandomApply([jitter], p=recipe.jitter_p),
            T.RandomGrayscale(p=recipe.gray_p),
            T.ToTensor(),
            T.Normalize(recipe.mean, recipe.std),
        ])
        self.to_pil = T.ToPILImage()

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int):
        image = self.to_pil(self.images[i])
        return self.transform(image), self.transform(image)


def amp_dtype(cfg) -> torch.dtype | None:
    """The autocast dtype the engine uses for ``cfg.precision`` on the CPU (None: plain fp32)."""
    if cfg.precision == "auto":
        return autocast_dtype("cpu")
    return {"bf16": torch.bfloat16, "fp16": torch.float16}.get(cfg.precision)


def torchvision_pipeline(cfg, train_ds, budget: float, every: float, monitor, workers: int) -> dict:
    """The same model, loss, optimizer and fitted schedule, fed by a DataLoader of PIL transforms."""
    recipe = view_recipe(cfg)
    if recipe.blur_p > 0:
        raise ValueError("the tutorial pipeline here has no blur; the demo recipe has none (SimCLR App. B.9)")
    train_ds = training_images(cfg, train_ds)  # the images the engine trains on (``subset`` applied)
    loader = torch.utils.data.DataLoader(TutorialPairs(train_ds.images, recipe), batch_size=cfg.batch_size,
                                         shuffle=True, drop_last=True, num_workers=workers,
                                         persistent_workers=workers > 0)
    torch.manual_seed(cfg.seed)
    method = prepare_model(build_method(cfg), cfg, torch.device("cpu"), world=1)
    opt = build_optimizer(cfg.optimizer, method, lr=resolve_lr(cfg), weight_decay=cfg.weight_decay,
                          momentum=cfg.momentum)
    per_epoch = len(train_ds) // cfg.batch_size
    total = MAX_EPOCHS * per_epoch
    sched = build_scheduler(opt, total_steps=total, warmup_steps=round(cfg.warmup_epochs * per_epoch))
    fitter = ScheduleFitter(budget, total, 5, per_epoch + 5, every=per_epoch)
    fmt = torch.channels_last if cfg.channels_last else torch.contiguous_format
    amp = amp_dtype(cfg)
    clock = {"start": time.perf_counter(), "paused": 0.0}
    state = {"step": 0, "total": total}

    def steps():
        while state["step"] < state["total"]:
            for v1, v2 in loader:
                views = torch.cat([v1, v2]).contiguous(memory_format=fmt)
                with torch.autocast("cpu", dtype=amp or torch.float32, enabled=amp is not None):
                    z = method.head(method.encoder(views))
                loss = nt_xent(*z.float().chunk(2), cfg.options.temperature)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
                state["step"] += 1
                fitted = fitter.update(state["step"], time.perf_counter() - clock["start"] - clock["paused"])
                if fitted:
                    state["total"] = fitted
                    sched.resize(fitted)
                yield
                if state["step"] >= state["total"]:
                    return

    def evaluate():
        accs = monitor(method.encoder, method.head, "cpu")
        method.train()
        return {"knn_h": accs["h"], "knn_z": accs.get("z")}

    def paused(seconds):
        clock["paused"] += seconds

    curve = watch(steps(), evaluate, budget, every, paused)
    return {"curve": curve, "schedule_steps": state["total"], "workers": workers}


def plot(report: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharey=True)
    for ax, key in zip(axes, ("knn_h", "knn_z")):
        for name, style in (("ours", "-o"), ("torchvision", "--s")):
            c = report[name]["curve"]
            ax.plot([p["train_s"] for p in c], [p[key] for p in c], style, label=name, markersize=3)
        for t in TARGETS:
            ax.axhline(t, color="grey", lw=0.5)
        ax.set_xlabel("training seconds (kNN evaluation excluded)")
        ax.set_title(f"kNN top-1 on {key[-1]} (k=200), cifar10-mini")
        ax.legend()
    axes[0].set_ylabel("kNN top-1")
    fig.suptitle(f"SimCLR time to accuracy on cifar10-mini, {report['machine']['cpu']}, "
                 f"{report['machine']['threads']} threads, {report['precision']}")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="simclr-cifar10-cpu")
    parser.add_argument("--budget", type=float, default=420.0, help="training seconds per pipeline")
    parser.add_argument("--eval-every", type=float, default=45.0, help="training seconds between kNN evaluations")
    parser.add_argument("--workers", type=int, default=2, help="DataLoader workers of the torchvision pipeline")
    parser.add_argument("--out", default="benchmarks/results/time_to_accuracy.json")
    parser.add_argument("--reuse", default="", help="an earlier result file to take --reuse-pipelines from")
    parser.add_argument("--reuse-pipelines", nargs="*", default=[], choices=["ours", "torchvision"],
                        help="pipelines not run again but read from --reuse (the report says so)")
    parser.add_argument("overrides", nargs="*", metavar="key=value")
    args = parser.parse_args(argv)
    if args.reuse_pipelines and not args.reuse:
        parser.error("--reuse-pipelines needs --reuse FILE")
    torch.set_num_threads(2)
    cfg = apply_overrides(get_preset(args.preset), args.overrides).replace(device="cpu")
    if cfg.method != "simclr":
        parser.error("the torchvision pipeline here trains SimCLR: use a simclr preset")
    train_ds, test_ds = load_split(cfg, "train"), load_split(cfg, "test")
    monitor = build_monitor(cfg, training_images(cfg, train_ds), test_ds)
    report = {"command": "python " + " ".join(sys.argv), "machine": machine(), "preset": args.preset,
              "overrides": args.overrides, "data": f"{train_ds.name} ({len(train_ds)} train / {len(test_ds)} test)",
              "budget_s": args.budget, "eval_every_s": args.eval_every,
              "precision": str(amp_dtype(cfg) or "fp32").replace("torch.", "")}
    print(json.dumps(report, indent=2), flush=True)
    reused = json.loads(Path(args.reuse).read_text()) if args.reuse else {}
    for name in ("ours", "torchvision"):
        if name in args.reuse_pipelines:  # measured by an earlier run of this script: said in the report
            report[name] = {**reused[name], "reused_from": {"file": args.reuse, "date": reused["machine"]["date"],
                                                            "command": reused["command"]}}
        elif name == "ours":
            report[name] = ours(cfg, args.budget, args.eval_every, monitor)
        else:
            report[name] = torchvision_pipeline(cfg, train_ds, args.budget, args.eval_every, monitor, args.workers)
        print(name, json.dumps(report[name]), flush=True)
    report["time_to"] = {}
    for key in ("knn_h", "knn_z"):
        for target in TARGETS:
            a, b = time_to(report["ours"]["curve"], key, target), time_to(report["torchvision"]["curve"], key, target)
            report["time_to"][f"{key}>={target}"] = {"ours_s": a, "torchvision_s": b,
                                                     "torchvision_over_ours": round(b / a, 2) if a and b else None}
    print(json.dumps(report["time_to"], indent=2))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    plot(report, out.with_suffix(".png"))
    print(f"saved {out} and {out.with_suffix('.png')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
