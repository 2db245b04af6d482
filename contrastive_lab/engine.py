"""The training engine: one loop for every method, on a CPU, one GPU, or many GPUs under torchrun.

Read :func:`train` top to bottom: it is the whole algorithm. Everything else here is a small
helper it calls. The design choices, and why:

* **Data on the device.** CIFAR-sized datasets live as one uint8 tensor on the device; each step
  indexes a batch and :class:`~contrastive_lab.augment.BatchedViews` draws two views for every
  image in one call. No DataLoader workers fight the model for a laptop's two cores.
  ImageFolder data (ImageNet) instead streams through DataLoader workers with the per-image
  torchvision pipeline.
* **Exact resume.** The batch order of epoch e is a permutation drawn from ``seed + e``, and the
  view generator's state is saved, so a resumed run replays the same batches and the same views:
  2 epochs straight equal 1 epoch + resume + 1 epoch, bit for bit (on the CPU).
* **Safe checkpoints.** Written to a temporary file, flushed, then renamed over ``last.pt``: a
  crash or SIGKILL mid-write leaves the previous checkpoint intact. Loaded with
  ``weights_only=True``.
* **Failures are loud.** A non-finite loss stops the run with :class:`TrainingDiverged` before the
  bad update is applied, keeping the last good checkpoint. Ctrl-C finishes the current step,
  saves, and exits cleanly.
* **DDP, not a custom engine.** Under torchrun the method is wrapped in
  ``DistributedDataParallel``; ``batch_size`` is the *global* batch, split evenly over ranks.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import math
import os
import signal
import sys
import time
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from . import distributed as dist_utils
from .augment import BatchedViews, ViewParams, ViewRecipe, build_torchvision_pipeline, get_recipe
from .data import TwoViewDataset, load_dataset, make_synthetic
from .evaluate import extract_features, knn_accuracy
from .methods import build_method
from .optim import build_optimizer, build_scheduler, scale_lr
from .presets import Config, _check_view_ops, validate
from .runtime import autocast_dtype

CHECKPOINT_VERSION = 1


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the last good checkpoint was kept."""


# ----------------------------------------------------------------------------------------
# Checkpoints
# ----------------------------------------------------------------------------------------


def save_checkpoint(state: dict[str, Any], path: str | Path) -> Path:
    """Write ``state`` atomically: temp file in the same folder, fsync, then ``os.replace``.

    ``os.replace`` is atomic on POSIX and Windows, so readers see either the old file or the new
    one, never a half-written mix, even if the process is killed during the write.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint written by :func:`save_checkpoint` (``weights_only=True``: no code runs)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}; train first or pass the path to a last.pt file")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # truncated zip, wrong format, pickled code ...
        raise RuntimeError(f"cannot read checkpoint {path}: {err}. It is corrupt or not ours.") from err
    if not isinstance(state, dict) or state.get("version") != CHECKPOINT_VERSION:
        raise RuntimeError(f"{path} is not a contrastive_lab checkpoint (version {CHECKPOINT_VERSION})")
    return state


def config_from_checkpoint(state: dict[str, Any]) -> Config:
    return validate(Config(**state["config"]))


# ----------------------------------------------------------------------------------------
# Data
# ----------------------------------------------------------------------------------------


def load_split(cfg: Config, split: str):
    """The dataset named in the config (synthetic data is generated, others read from disk)."""
    if cfg.dataset == "synthetic":
        return make_synthetic(n=cfg.synthetic_size, image_size=cfg.image_size, seed=cfg.seed, split=split)
    return load_dataset(cfg.dataset, split=split, root=cfg.data_root)


def view_recipe(cfg: Config) -> ViewRecipe:
    """The config's view recipe at ``image_size``, with the ops not in ``view_ops`` switched off.

    Switching an op off sets it to its identity: crop -> the whole image (scale and aspect 1),
    flip/jitter/gray/blur -> probability 0. This is how SimCLR's composition study (Fig. 5)
    keeps one or two operations at a time.
    """
    keep = _check_view_ops(cfg.view_ops)
    off = {
        "crop": {"crop_scale": (1.0, 1.0), "crop_ratio": (1.0, 1.0)},
        "flip": {"flip_p": 0.0},
        "jitter": {"jitter_p": 0.0},
        "gray": {"gray_p": 0.0},
        "blur": {"blur_p": 0.0},
    }
    overrides: dict[str, Any] = {"size": cfg.image_size}
    for op, identity in off.items():
        if op not in keep:
            overrides.update(identity)
    return get_recipe(cfg.recipe, **overrides)


def epoch_order(num_items: int, seed: int, epoch: int) -> Tensor:
    """The shuffled order of epoch ``epoch``: a permutation drawn from ``seed`` and ``epoch`` only.

    Deriving it (instead of carrying a generator along) is what makes a mid-epoch resume exact.
    """
    g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return torch.randperm(num_items, generator=g)


def slice_params(params: ViewParams, start: int, stop: int) -> ViewParams:
    """Rows ``start:stop`` of a batch's view parameters."""
    return ViewParams(**{f.name: getattr(params, f.name)[start:stop] for f in dataclasses.fields(params)})


class TensorBatches:
    """Batches of a uint8 image tensor held on the device, with two views drawn on the device.

    Each rank takes its contiguous slice of every global batch (``rank * B/W : (rank+1) * B/W``).
    The view parameters are drawn for the *global* batch from one CPU generator that every rank
    seeds alike (cheap: a few numbers per image), and each rank applies its slice. So W ranks
    see exactly the views one process would see, which makes multi-process runs comparable
    (and testable) against a single process.
    """

    def __init__(self, images: Tensor, labels: Tensor, views: BatchedViews, cfg: Config, device, rank, world):
        if cfg.batch_size % world:
            raise ValueError(f"batch_size={cfg.batch_size} must be divisible by the {world} processes")
        if cfg.batch_size > len(images):
            raise ValueError(
                f"batch_size={cfg.batch_size} exceeds the {len(images)} training images; lower batch_size"
            )
        self.images, self.labels = images.to(device), labels.to(device)
        self.views, self.cfg, self.rank, self.world = views, cfg, rank, world
        self.generator = torch.Generator().manual_seed(cfg.seed * 7919)

    def __len__(self) -> int:
        return len(self.images) // self.cfg.batch_size  # drop_last: every step has a full batch

    def epoch(self, epoch: int, start: int = 0) -> Iterator[tuple[Tensor, Tensor, Tensor, Tensor]]:
        order = epoch_order(len(self.images), self.cfg.seed, epoch)
        size = self.cfg.batch_size
        lo, hi = self.rank * size // self.world, (self.rank + 1) * size // self.world
        for step in range(start, len(self)):
            index = order[step * size : (step + 1) * size][lo:hi].to(self.images.device)
            batch = self.images[index]
            yield self._view(batch, lo, hi), self._view(batch, lo, hi), self.labels[index], index

    def _view(self, batch: Tensor, lo: int, hi: int) -> Tensor:
        height, width = batch.shape[-2:]
        params = self.views.sample_params(self.cfg.batch_size, height, width, self.generator, device=batch.device)
        return self.views.apply(batch, slice_params(params, lo, hi) if self.world > 1 else params)

    def rng_state(self) -> Tensor:
        return self.generator.get_state()

    def set_rng_state(self, state: Tensor) -> None:
        self.generator.set_state(state)


class LoaderBatches:
    """ImageFolder-style data: DataLoader workers run the per-image torchvision pipeline."""

    def __init__(self, dataset, cfg: Config, rank: int, world: int):
        self.cfg, self.rank, self.world = cfg, rank, world
        self.dataset = TwoViewDataset(dataset, build_torchvision_pipeline(view_recipe(cfg)))
        self.local = cfg.batch_size // world

    def __len__(self) -> int:
        return len(self.dataset) // self.cfg.batch_size

    def epoch(self, epoch: int, start: int = 0):
        order = epoch_order(len(self.dataset), self.cfg.seed, epoch)
        steps = range(start, len(self))
        index = [
            order[s * self.cfg.batch_size + self.rank * self.local :][: self.local].tolist() for s in steps
        ]
        torch.manual_seed(self.cfg.seed * 7919 + epoch * 31 + self.rank)  # seeds the workers' RNGs
        loader = torch.utils.data.DataLoader(
            self.dataset,
            batch_sampler=index,
            num_workers=self.cfg.num_workers,
            pin_memory=torch.cuda.is_available(),
            persistent_workers=False,
        )
        yield from loader

    def rng_state(self) -> Tensor:
        return torch.zeros(0, dtype=torch.uint8)

    def set_rng_state(self, state: Tensor) -> None:
        pass


def build_batches(cfg: Config, dataset, device, rank: int, world: int):
    if hasattr(dataset, "images"):
        views = BatchedViews(view_recipe(cfg))
        images, labels = dataset.images, dataset.labels
        if cfg.subset:
            images, labels = images[: cfg.subset], labels[: cfg.subset]
        return TensorBatches(images, labels, views, cfg, device, rank, world)
    return LoaderBatches(dataset, cfg, rank, world)


# ----------------------------------------------------------------------------------------
# Evaluation during training
# ----------------------------------------------------------------------------------------


def eval_transform(cfg: Config):
    """uint8 images -> float, resized to the training size, normalised like the training views."""
    recipe = view_recipe(cfg)
    mean = torch.tensor(recipe.mean).view(1, 3, 1, 1)
    std = torch.tensor(recipe.std).view(1, 3, 1, 1)

    def transform(x: Tensor) -> Tensor:
        x = x.float() / 255.0 if x.dtype == torch.uint8 else x
        if x.shape[-1] != cfg.image_size or x.shape[-2] != cfg.image_size:
            x = nn.functional.interpolate(x, size=(cfg.image_size,) * 2, mode="bilinear", antialias=True)
        return (x - mean.to(x.device)) / std.to(x.device)

    return transform


def encode(encoder: nn.Module, images: Tensor, cfg: Config, device) -> Tensor:
    """Features h of uint8 images, preprocessed like the training views, in the run's precision."""
    return extract_features(
        encoder, images, device=device, transform=eval_transform(cfg), autocast=cfg.precision != "fp32"
    )


def knn_eval(encoder: nn.Module, train_ds, test_ds, cfg: Config, device) -> float:
    """Weighted kNN top-1 (Wu et al. 2018; k=200, T=0.1) of the encoder's features h."""
    train_images, train_labels = train_ds.images, train_ds.labels
    if cfg.subset:
        train_images, train_labels = train_images[: cfg.subset], train_labels[: cfg.subset]
    if cfg.knn_max_train and len(train_images) > cfg.knn_max_train:
        train_images, train_labels = train_images[: cfg.knn_max_train], train_labels[: cfg.knn_max_train]
    f_train = encode(encoder, train_images, cfg, device)
    f_test = encode(encoder, test_ds.images, cfg, device)
    k = min(cfg.knn_k, len(f_train))
    return knn_accuracy(f_train, train_labels, f_test, test_ds.labels, k=k, temperature=cfg.knn_t)


# ----------------------------------------------------------------------------------------
# Logging
# ----------------------------------------------------------------------------------------

METRIC_FIELDS = ["step", "epoch", "time_s", "lr", "loss", "images_per_s", "knn_top1"]


class MetricsLog:
    """Appends rows to ``metrics.csv``; on resume, rows after the resumed step are dropped."""

    def __init__(self, path: Path, resume_step: int | None, extra: list[str] | None = None):
        self.path = path
        self.fields = METRIC_FIELDS + [k for k in (extra or []) if k not in METRIC_FIELDS]
        rows = []
        if resume_step is not None and path.exists():
            with open(path, newline="") as f:
                rows = [r for r in csv.DictReader(f) if int(r["step"]) <= resume_step]
        with open(path, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=self.fields, extrasaction="ignore")
            writer.writeheader()
            writer.writerows(rows)
        self.tb = None

    def write(self, row: dict[str, Any]) -> None:
        with open(self.path, "a", newline="") as f:
            csv.DictWriter(f, fieldnames=self.fields, extrasaction="ignore").writerow(row)
        if self.tb is not None:
            for key, value in row.items():
                if key != "step" and isinstance(value, (int, float)):
                    self.tb.add_scalar(key, value, row["step"])


def read_metrics(path: str | Path) -> list[dict[str, float]]:
    """metrics.csv as a list of dicts of floats (empty cells left out)."""
    with open(path, newline="") as f:
        return [{k: float(v) for k, v in row.items() if v not in ("", None)} for row in csv.DictReader(f)]


# ----------------------------------------------------------------------------------------
# Setup helpers
# ----------------------------------------------------------------------------------------


def resolve_device(cfg: Config, local_rank: int) -> torch.device:
    if cfg.device == "auto":
        return torch.device(f"cuda:{local_rank}") if torch.cuda.is_available() else torch.device("cpu")
    if cfg.device.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError("device=cuda was requested but no CUDA GPU is visible; use device=cpu or auto")
    return torch.device(cfg.device)


def resolve_precision(cfg: Config, device: torch.device) -> torch.dtype | None:
    """None = fp32. ``auto`` picks bf16 where the hardware runs it natively (runtime.autocast_dtype)."""
    if cfg.precision == "auto":
        return autocast_dtype(device)
    if cfg.precision == "fp16" and device.type == "cpu":
        raise ValueError("precision=fp16 is for GPUs; on the CPU use bf16 (if supported) or fp32")
    return {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[cfg.precision]


def resolve_lr(cfg: Config) -> float:
    """An explicit ``lr`` wins; else SimCLR's rule, base_lr x B/256 (App. B.1), on the global batch."""
    return cfg.lr if cfg.lr > 0 else scale_lr(cfg.base_lr, cfg.batch_size, rule=cfg.lr_scaling)


def prepare_model(method: nn.Module, cfg: Config, device: torch.device, world: int) -> nn.Module:
    """Move to the device, convert BN for multi-GPU, channels_last, DDP, optional compile."""
    if world > 1 and device.type == "cuda":
        method = nn.SyncBatchNorm.convert_sync_batchnorm(method)  # global BN (SimCLR Sec. 2.2)
    elif world > 1:
        method = dist_utils.convert_to_global_batchnorm(method)  # the same on CPU processes
    method = method.to(device)
    if cfg.channels_last:
        method = method.to(memory_format=torch.channels_last)
    return method


def wrap_ddp(method: nn.Module, device: torch.device, world: int) -> nn.Module:
    if world == 1:
        return method
    ids = [device.index] if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(method, device_ids=ids, broadcast_buffers=False)


class StopFlag:
    """Ctrl-C sets a flag; the loop finishes the step, saves and exits. A second Ctrl-C aborts."""

    def __init__(self):
        self.requested = False
        self._previous = None

    def __enter__(self):
        if sys.platform != "win32" and _in_main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def _handle(self, signum, frame):
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        print("\nCtrl-C: finishing this step, saving a checkpoint, then stopping.", flush=True)

    def __exit__(self, *exc):
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
        return False


def _in_main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


def progress(iterable, total: int, desc: str, enabled: bool):
    """tqdm bars on a terminal; no bar (one summary line per epoch instead) when piped or in CI."""
    if not enabled or not sys.stderr.isatty():
        return iterable
    from tqdm.auto import tqdm

    return tqdm(iterable, total=total, desc=desc, leave=False, dynamic_ncols=True)


# ----------------------------------------------------------------------------------------
# The training loop
# ----------------------------------------------------------------------------------------


def train(
    cfg: Config, out_dir: str | Path, resume: bool = False, verbose: bool = True, stop_at_step: int = 0
) -> dict[str, Any]:
    """Train ``cfg.method`` and return a summary dict. The run folder ``out_dir`` receives
    ``config.json``, ``metrics.csv``, ``checkpoints/last.pt`` and ``figures/``.

    ``stop_at_step`` (tests, notebooks) stops as if Ctrl-C had been pressed after that step:
    the schedule still spans the whole run, so a later ``resume=True`` continues it exactly.
    """
    cfg = validate(cfg)
    rank, local_rank, world = dist_utils.init_distributed()
    is_main = rank == 0
    say = print if (verbose and is_main) else (lambda *a, **k: None)
    out = Path(out_dir)
    ckpt_path = out / "checkpoints" / "last.pt"
    device = resolve_device(cfg, local_rank)
    amp_dtype = resolve_precision(cfg, device)

    # --- data -> views ---------------------------------------------------------------------
    train_ds, test_ds = load_split(cfg, cfg.train_split), load_split(cfg, cfg.test_split)
    batches = build_batches(cfg, train_ds, device, rank, world)
    steps_per_epoch = len(batches)
    if steps_per_epoch == 0:
        raise ValueError(f"batch_size={cfg.batch_size} leaves no full batch in {len(train_ds)} images")
    total_steps = cfg.epochs * steps_per_epoch
    if cfg.max_steps:
        total_steps = min(total_steps, cfg.max_steps)

    # --- encoder -> head -> loss (the method), optimiser, schedule ---------------------------
    torch.manual_seed(cfg.seed)  # identical initial weights on every rank
    method = prepare_model(build_method(cfg), cfg, device, world)
    model = wrap_ddp(method, device, world)
    if cfg.compile:
        model = torch.compile(model)
    lr = resolve_lr(cfg)
    optimizer = build_optimizer(cfg.optimizer, method, lr=lr, weight_decay=cfg.weight_decay, momentum=cfg.momentum)
    warmup = round(cfg.warmup_epochs * steps_per_epoch)
    scheduler = build_scheduler(optimizer, total_steps=total_steps, warmup_steps=min(warmup, total_steps))

    step = 0
    if resume:
        if not ckpt_path.is_file():
            raise FileNotFoundError(f"--resume: no checkpoint at {ckpt_path}; run without --resume to start")
        state = load_checkpoint(ckpt_path, map_location="cpu")
        method.load_state_dict(state["method"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        batches.set_rng_state(state["rng"]["views"])
        torch.set_rng_state(state["rng"]["torch"])
        step = int(state["step"])
        say(f"resumed from {ckpt_path} at step {step}")
    elif is_main and ckpt_path.exists():
        raise FileExistsError(f"{out} already holds a run; pass --resume to continue it or choose another --out")

    if is_main:
        out.mkdir(parents=True, exist_ok=True)
        (out / "config.json").write_text(cfg.to_json())
    extra_logs = list(getattr(method, "log_keys", ()))  # the method's own metrics (e.g. pos_cos)
    log = MetricsLog(out / "metrics.csv", step if resume else None, extra=extra_logs) if is_main else None
    if is_main and cfg.tensorboard:
        from torch.utils.tensorboard import SummaryWriter

        log.tb = SummaryWriter(out / "tensorboard")

    def checkpoint() -> None:
        if is_main:
            save_checkpoint(
                {
                    "version": CHECKPOINT_VERSION,
                    "config": asdict(cfg),
                    "step": step,
                    "method": method.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(),
                    "rng": {"torch": torch.get_rng_state(), "views": batches.rng_state()},
                },
                ckpt_path,
            )

    def evaluate_knn(tag: str) -> float | None:
        if test_ds is None or not hasattr(test_ds, "images"):
            return None
        acc = knn_eval(method.encoder, train_ds, test_ds, cfg, device) if is_main else 0.0
        say(f"kNN top-1 ({tag}, k={cfg.knn_k}, T={cfg.knn_t}, {cfg.dataset} {cfg.test_split}): {acc:.4f}")
        return acc

    results: dict[str, Any] = {"out_dir": str(out), "lr": lr, "steps_per_epoch": steps_per_epoch}
    if step == 0:
        results["knn_random"] = evaluate_knn("random init")
        if log:
            log.write({"step": 0, "epoch": 0, "knn_top1": results["knn_random"]})
    say(
        f"training {cfg.method} on {cfg.dataset} ({len(train_ds)} images) for {total_steps} steps, "
        f"batch {cfg.batch_size} on {world} x {device.type}, precision "
        f"{str(amp_dtype).replace('torch.', '') if amp_dtype else 'fp32'}, lr {lr:g}"
    )

    model.train()
    start_time, images_seen, timed = time.perf_counter(), 0, 0.0
    stop_reason = "finished"
    autocast = (
        torch.autocast(device_type=device.type, dtype=amp_dtype) if amp_dtype else contextlib.nullcontext()
    )
    with StopFlag() as stop:
        while step < total_steps:
            epoch, start = divmod(step, steps_per_epoch)
            epoch_loss, epoch_n, t0 = 0.0, 0, time.perf_counter()
            bar = progress(batches.epoch(epoch, start), steps_per_epoch - start, f"epoch {epoch + 1}", is_main)
            for view1, view2, _, index in bar:
                view1, view2 = view1.to(device, non_blocking=True), view2.to(device, non_blocking=True)
                if cfg.channels_last:
                    view1 = view1.contiguous(memory_format=torch.channels_last)
                    view2 = view2.contiguous(memory_format=torch.channels_last)
                with autocast:
                    loss, logs = model(view1, view2, index.to(device))
                if not torch.isfinite(loss):
                    raise TrainingDiverged(
                        f"loss is {loss.item()} at step {step} (epoch {epoch + 1}); the update was not applied "
                        f"and the last good checkpoint {ckpt_path} was kept. Try a lower lr (now "
                        f"{scheduler.get_last_lr()[0]:.3g}), more warmup, grad_clip=1.0, or precision=fp32."
                    )
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                if cfg.grad_clip:
                    nn.utils.clip_grad_norm_(method.parameters(), cfg.grad_clip)
                optimizer.step()
                scheduler.step()
                step += 1
                epoch_loss += loss.item()
                epoch_n += 1
                images_seen += cfg.batch_size
                if log and (step % 10 == 0 or step == total_steps):
                    elapsed = time.perf_counter() - start_time
                    log.write(
                        {
                            "step": step,
                            "epoch": step / steps_per_epoch,
                            "time_s": round(elapsed, 3),
                            "lr": scheduler.get_last_lr()[0],
                            "images_per_s": round(images_seen / max(elapsed - timed, 1e-9), 1),
                            **{k: float(v) for k, v in logs.items()},
                        }
                    )
                if step % cfg.checkpoint_every == 0:
                    checkpoint()
                over_budget = cfg.time_budget_s and time.perf_counter() - start_time - timed > cfg.time_budget_s
                stop.requested |= step == stop_at_step
                if stop.requested or over_budget or step >= total_steps:
                    stop_reason = "interrupted" if stop.requested else ("time budget" if over_budget else stop_reason)
                    break
            seconds = time.perf_counter() - t0
            say(
                f"epoch {epoch + 1}/{math.ceil(total_steps / steps_per_epoch)}  step {step}  "
                f"loss {epoch_loss / max(epoch_n, 1):.4f}  {epoch_n * cfg.batch_size / seconds:.0f} img/s"
            )
            if stop_reason != "finished":
                break
            if cfg.knn_every and (epoch + 1) % cfg.knn_every == 0 and step < total_steps:
                t_eval = time.perf_counter()
                acc = evaluate_knn(f"epoch {epoch + 1}")
                timed += time.perf_counter() - t_eval
                if log:
                    log.write({"step": step, "epoch": step / steps_per_epoch, "knn_top1": acc})
                model.train()

    checkpoint()
    train_seconds = time.perf_counter() - start_time - timed
    results.update(step=step, stop_reason=stop_reason, train_seconds=round(train_seconds, 1))
    if stop_reason == "interrupted":
        say(f"stopped by Ctrl-C at step {step}; resume with --resume (checkpoint {ckpt_path})")
        dist_utils.cleanup_distributed()
        return results
    results["knn_final"] = evaluate_knn("trained")
    if log:
        log.write({"step": step, "epoch": step / steps_per_epoch, "knn_top1": results["knn_final"]})
    if is_main and cfg.figures:
        from .plots import run_figures

        run_figures(out, method.encoder, train_ds, test_ds, device, cfg)
    if is_main:
        (out / "results.json").write_text(_json(results))
    dist_utils.cleanup_distributed()
    return results


def _json(obj: dict) -> str:
    import json

    return json.dumps(obj, indent=2, sort_keys=True, default=str)
