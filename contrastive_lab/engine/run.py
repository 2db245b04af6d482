"""A training run as one object: :class:`Run` holds everything the loop touches, :func:`open_run`
builds it (or restores it from ``checkpoints/last.pt``), :func:`save` writes its checkpoint and
:func:`finish` ends it. Chapter 05 opens one and steps it by hand; ``engine.loop.train`` is the loop.

The run folder: ``config.json`` (the effective config), ``metrics.csv``, ``checkpoints/last.pt``,
``results.json`` and ``figures/``. Rank 0 writes them; every rank resumes from the same ``last.pt``.

* **Exact resume.** The checkpoint holds the method (queues, banks, EMA targets as buffers), the
  optimizer, the schedule, the views' generator and torch's RNG, so a resumed run replays the same
  batches and views and ends bit-identical to an uninterrupted one.
* **A resume is the same run.** The requested config is compared with the saved one: a change to a
  key that defines the run (batch size, temperature, epochs, the architecture ...) is refused with
  the differing keys and both values; the keys in ``config.SAFE_ON_RESUME`` (workers, monitoring,
  the time budget, the data's location) may change. A finished run says so and changes nothing.
* **Never a bad checkpoint.** Before every save the weights, buffers and optimizer state are checked:
  a non-finite one stops the run with :class:`TrainingDiverged` and the last good checkpoint stays.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from .. import distributed as dist_utils
from ..checkpoints import (
    CHECKPOINT_VERSION,
    checkpoint_config,
    first_nonfinite,
    load_checkpoint,
    remove_stale_temporaries,
    save_checkpoint,
)
from ..config import SAFE_ON_RESUME, Config, parse_milestones, resume_changes, validate
from ..data import data_root, select_labelled
from ..evaluate import KNNMonitor
from ..methods import BuildContext, build_method, load_state_into, method_views
from ..optim import ScheduledLR, build_lr_schedule, build_optimizer
from ..runtime import native_mode
from .batches import TensorBatches, check_batch_split, training_images
from .budget import ScheduleFitter
from .loader import LoaderBatches
from .logging import MetricsLog
from .setup import (
    config_eval_transform,
    load_split,
    model_dtype,
    prepare_model,
    resolve_device,
    resolve_lr,
    resolve_precision,
    view_recipe,
    wrap_ddp,
)
from .step import TrainingDiverged


@dataclass
class Run:
    """Everything a training run's loop reads and changes (built by :func:`open_run`)."""

    cfg: Config
    out: Path | None  # the run folder; None: nothing is written (chapters' experiments)
    rank: int
    world: int
    device: torch.device
    dtype: torch.dtype  # weights and views (float64 under precision=fp64)
    amp_dtype: torch.dtype | None  # autocast dtype, None = none
    train_ds: Any
    test_ds: Any
    batches: TensorBatches | LoaderBatches
    method: nn.Module  # what is trained and checkpointed
    model: nn.Module  # what runs forward: the method, wrapped in DDP / torch.compile when asked
    optimizer: torch.optim.Optimizer
    scheduler: ScheduledLR
    context: BuildContext
    monitor: KNNMonitor | None
    log: MetricsLog | None
    say: Callable[..., None]
    clock: Callable[[], float] = time.perf_counter
    step: int = 0
    total_steps: int = 0
    fitted_steps: int = 0  # fit_to_budget's schedule length, once set (kept on resume)
    fitter: ScheduleFitter | None = None
    results: dict[str, Any] = field(default_factory=dict)
    start_time: float = 0.0
    paused: float = 0.0  # seconds spent outside training (kNN evaluations), not counted by budgets
    images_seen: int = 0
    finished: bool = False  # resumed a run that had already finished: nothing to do
    redo_final: bool = False  # resumed a run whose training ended but whose final evaluation did not
    knn_step: int = -1  # the last step the kNN monitor measured (saved: a resume redoes one it missed)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def steps_per_epoch(self) -> int:
        return len(self.batches)

    @property
    def ckpt_path(self) -> Path | None:
        return self.out / "checkpoints" / "last.pt" if self.out else None

    @property
    def data_name(self) -> str:
        """The training data's own name (e.g. "cifar10-mini"): every printed number carries it."""
        return getattr(self.train_ds, "name", self.cfg.dataset)

    def autocast(self):
        """The autocast context of the run's precision (a no-op for fp32/fp64)."""
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.amp_dtype)

    def training_seconds(self) -> float:
        """Wall time since training started, without the pauses (what budgets count)."""
        return self.clock() - self.start_time - self.paused

    def check_loss(self, loss: Tensor) -> None:
        """Stop before the update if the loss is NaN or infinite (the last good checkpoint stays)."""
        if not torch.isfinite(loss):
            raise TrainingDiverged(
                f"loss is {loss.item()} at step {self.step + 1} (epoch {self.step // self.steps_per_epoch + 1}); "
                f"the update was not applied and the last good checkpoint {self.ckpt_path} was kept. "
                f"Try a lower lr (now {self.scheduler.get_last_lr()[0]:.3g}), more warmup, grad_clip=1.0, "
                "or precision=fp32."
            )


def open_run(cfg: Config, out_dir: str | Path | None, resume: bool = False, verbose: bool = True,
             clock: Callable[[], float] = time.perf_counter) -> Run:
    """Build a run from its config (resolving the data root once, here), or restore it from
    ``out_dir/checkpoints/last.pt`` with ``resume``. ``out_dir=None``: a run that writes nothing."""
    cfg = validate(cfg if cfg.data_root or cfg.dataset == "synthetic" else cfg.replace(data_root=str(data_root())))
    rank, local_rank, world = dist_utils.init_distributed()
    out = Path(out_dir) if out_dir is not None else None
    state = restore_state(cfg, out / "checkpoints" / "last.pt", resume) if out else None
    device = resolve_device(cfg, local_rank)
    # data -> counts -> method -> views -> optimizer and schedule
    train_ds, test_ds = training_images(cfg, load_split(cfg, cfg.train_split)), load_split(cfg, cfg.test_split)
    torch.manual_seed(cfg.seed)  # identical initial weights on every rank
    built, ctx, train_ds = build_for_data(cfg, train_ds, world)
    method = prepare_model(built, cfg, device, world)
    model = wrap_ddp(method, device, world)
    optimizer = build_optimizer(cfg.optimizer, method, lr=resolve_lr(cfg), weight_decay=cfg.weight_decay,
                                momentum=cfg.momentum, fixed_lr=tuple(getattr(method, "fixed_lr_params", ())),
                                **({"nesterov": True} if cfg.nesterov else {}))
    run = Run(cfg, out, rank, world, device, model_dtype(cfg), resolve_precision(cfg, device), train_ds, test_ds,
              build_batches(cfg, train_ds, method, device, rank, world), method,
              torch.compile(model) if cfg.compile else model, optimizer,
              lr_schedule(optimizer, cfg, ctx.total_steps, ctx.steps_per_epoch), ctx,
              build_monitor(cfg, train_ds, test_ds), None, print if (verbose and rank == 0) else _quiet, clock,
              total_steps=ctx.total_steps)
    run.results = {"out_dir": str(out), "lr": resolve_lr(cfg), "steps_per_epoch": run.steps_per_epoch}
    if state is not None:
        restore(run, state)
    if out and run.is_main and not run.finished:
        open_folder(run, resumed=state is not None)
    return run


def _quiet(*args, **kwargs) -> None:
    """``say`` of a quiet run, and of every rank but 0."""


def build_for_data(cfg: Config, train_ds, world: int) -> tuple[nn.Module, BuildContext, Any]:
    """Select the labelled images (classifier runs), check the batch split, count the steps and build
    the method with those counts: (method, its BuildContext, the training images)."""
    opts = cfg.options
    if hasattr(opts, "label_fraction"):  # methods that train on labelled images only
        train_ds = select_labelled(train_ds, fraction=opts.label_fraction, seed=cfg.seed,
                                   subset_file=getattr(opts, "label_subset_file", "") or None,
                                   data_root=cfg.data_root)
    check_batch_split(cfg, world, len(train_ds))
    steps_per_epoch = len(train_ds) // cfg.batch_size
    total = cfg.epochs * steps_per_epoch
    total = min(total, cfg.max_steps) if cfg.max_steps else total
    ctx = BuildContext(num_images=len(train_ds), num_classes=len(getattr(train_ds, "classes", ())),
                       steps_per_epoch=steps_per_epoch, total_steps=total, recipe=view_recipe(cfg))
    return build_method(cfg, ctx), ctx, train_ds


def build_batches(cfg: Config, train_ds, method: nn.Module, device, rank: int, world: int):
    """In-memory datasets -> :class:`TensorBatches`; ImageFolder-style ones -> :class:`LoaderBatches`;
    one view per recipe the method asks for, labels only for methods that need them, the compiled
    view kernels as ``$CONTRASTIVE_LAB_NATIVE`` says (read here, once)."""
    native = {"auto": None, "on": True, "off": False}[native_mode()]
    recipes = method_views(method, view_recipe(cfg))
    labels = bool(getattr(method, "needs_labels", False))
    if hasattr(train_ds, "images"):
        return TensorBatches(train_ds, recipes, cfg, device, rank, world, labels, native)
    return LoaderBatches(train_ds, recipes, cfg, rank, world, device, labels, native)


def open_folder(run: Run, resumed: bool) -> None:
    """Rank 0: clear a killed writer's temporary files, write config.json, open metrics.csv."""
    remove_stale_temporaries(run.ckpt_path.parent)
    run.out.mkdir(parents=True, exist_ok=True)
    (run.out / "config.json").write_text(run.cfg.to_json())
    run.log = MetricsLog(run.out / "metrics.csv", run.step if resumed else None,
                         extra=list(getattr(run.method, "log_keys", ())), redo_evaluations=run.redo_final)
    if run.cfg.tensorboard:
        from torch.utils.tensorboard import SummaryWriter  # optional: needs the tensorboard package

        run.log.tb = SummaryWriter(run.out / "tensorboard")


def lr_schedule(optimizer, cfg: Config, total_steps: int, steps_per_epoch: int) -> ScheduledLR:
    """``cfg.lr_schedule``: warmup + cosine (SimCLR Sec. 2.3) or warmup + x0.1 at ``lr_milestones`` epochs."""
    warmup = min(round(cfg.warmup_epochs * steps_per_epoch), total_steps)
    milestones = [round(e * steps_per_epoch) for e in parse_milestones(cfg.lr_milestones)]
    return build_lr_schedule(optimizer, cfg.lr_schedule, total_steps, warmup, milestones)


def build_monitor(cfg: Config, train_ds, test_ds) -> KNNMonitor | None:
    """The kNN monitor of a run (k = ``knn_k``, T = ``knn_t``), on the training images (at most
    ``knn_max_train``) as memory and the test split as queries; None without in-memory test images."""
    if test_ds is None or not hasattr(test_ds, "images") or not hasattr(train_ds, "images"):
        return None
    n = min(cfg.knn_max_train or len(train_ds), len(train_ds))
    # k = knn_k, or every training image when there are fewer (the printed line shows the k used)
    return KNNMonitor(train_ds.images[:n], train_ds.labels[:n], test_ds.images, test_ds.labels,
                      transform=config_eval_transform(cfg), k=min(cfg.knn_k, n), temperature=cfg.knn_t,
                      autocast=cfg.precision not in ("fp32", "fp64"))


def restore_state(cfg: Config, ckpt: Path, resume: bool) -> dict[str, Any] | None:
    """The checkpoint to resume from (None for a fresh run), after checking that the requested config
    is the saved run's; a fresh run into a folder that holds a run is refused."""
    if not resume:
        if ckpt.exists():  # checked on every rank (a shared filesystem), so no rank is left waiting
            raise FileExistsError(f"{ckpt.parent.parent} already holds a run; pass --resume to continue it "
                                  "or choose another --out")
        return None
    if not ckpt.is_file():
        raise FileNotFoundError(f"--resume: no checkpoint at {ckpt}; run without --resume to start")
    state = load_checkpoint(ckpt, map_location="cpu")
    defining, _ = resume_changes(checkpoint_config(state), cfg)
    if defining:
        listed = "; ".join(f"{k}: {old!r} in the run, {new!r} asked" for k, (old, new) in defining.items())
        raise ValueError(f"--resume continues the run in {ckpt.parent.parent} as it was configured; these keys "
                         f"differ: {listed}. Pass the run's values, or start a new run in another --out (keys "
                         f"that may change on resume: {', '.join(SAFE_ON_RESUME)})")
    return state


def restore(run: Run, state: dict[str, Any]) -> None:
    """Load a checkpoint's method, optimizer, schedule and random states into ``run``."""
    load_state_into(run.method, state["method"], str(run.ckpt_path))
    run.optimizer.load_state_dict(state["optimizer"])
    run.scheduler.load_state_dict(state["scheduler"])
    if "views" in state["rng"] and hasattr(run.batches, "generator") and state["rng"]["views"].numel():
        run.batches.generator.set_state(state["rng"]["views"])
    torch.set_rng_state(state["rng"]["torch"])
    run.step = int(state["step"])
    run.fitted_steps = int(state.get("fitted_steps", 0))  # fit_to_budget's schedule, once fixed, stays
    run.knn_step = int(state.get("knn_step", run.step))  # (checkpoints before 2026-12-07: taken as measured)
    run.total_steps = run.fitted_steps or run.total_steps
    run.finished = bool(state.get("finished")) and run.step >= run.total_steps
    run.redo_final = run.step >= run.total_steps and not run.finished  # killed during the final evaluation
    if run.finished:
        results = run.out / "results.json"
        run.results = json.loads(results.read_text()) if results.is_file() else {"step": run.step}
        run.say(f"the run in {run.out} is finished (step {run.step} of {run.total_steps}); nothing to do, "
                "its files are unchanged")
    else:  # what was measured before the kill (the random-init kNN at step 0) is not measured again
        run.results.update(state.get("results", {}))
        run.say(f"resumed from {run.ckpt_path} at step {run.step}")


def save(run: Run, finished: bool = False) -> None:
    """Write ``run``'s checkpoint (rank 0), after checking that every tensor is finite: a non-finite
    weight, buffer or optimizer state raises :class:`TrainingDiverged` and the last checkpoint stays."""
    state = {
        "version": CHECKPOINT_VERSION,
        "config": run.cfg.to_dict(),
        "step": run.step,
        "finished": finished,
        "method": run.method.state_dict(),
        "optimizer": run.optimizer.state_dict(),
        "scheduler": run.scheduler.state_dict(),
        "context": {k: v for k, v in vars(replace(run.context, total_steps=run.total_steps)).items()
                    if k != "recipe"},
        "fitted_steps": run.fitted_steps,
        "knn_step": run.knn_step,
        "results": dict(run.results),
        "rng": {"torch": torch.get_rng_state(),
                "views": run.batches.generator.get_state() if hasattr(run.batches, "generator")
                else torch.zeros(0, dtype=torch.uint8)},
    }
    bad = first_nonfinite({"method": state["method"], "optimizer": state["optimizer"]})
    if bad:  # every rank holds the same weights (DDP), so every rank stops here
        raise TrainingDiverged(
            f"at step {run.step} {bad} holds NaN or inf although the loss was finite: the run diverged. "
            f"The last good checkpoint {run.ckpt_path} was kept. Try a lower lr (now "
            f"{run.scheduler.get_last_lr()[0]:.3g}), warmup_epochs > 0, grad_clip=1.0, or precision=fp32.")
    if run.out is not None and run.is_main:
        save_checkpoint(state, run.ckpt_path)


def gpu_memory_gb(device: torch.device) -> float | str:
    """Peak GPU memory of this process so far in GiB (``torch.cuda.max_memory_allocated``); "" on CPU."""
    if device.type != "cuda":
        return ""
    return round(torch.cuda.max_memory_allocated(device) / 2**30, 3)


def results_json(results: dict[str, Any]) -> str:
    return json.dumps(results, indent=2, sort_keys=True, default=str)


def write_atomically(path: Path, text: str) -> None:
    """Write ``text`` to a temporary file beside ``path``, then rename it over ``path``."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)


def epochs_in(run: Run) -> int:
    return math.ceil(run.total_steps / run.steps_per_epoch)
