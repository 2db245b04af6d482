"""The training loop: :func:`train` runs a config to the end (read it top to bottom: it is the whole
algorithm), :func:`run_steps` trains an open run for a few steps and lets a chapter watch each one.

Everything the loop calls is one small function here or in ``run.py``/``step.py``: the step, the
log row, the schedule fit, the stop checks, the kNN monitor, the end of an epoch and of the run.
Under torchrun every rank runs this same loop; rank 0 writes the files.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import torch

from .. import distributed as dist_utils
from ..config import Config
from ..data import DatasetCorruptError
from ..distributed import any_rank, mean_over_ranks, min_over_ranks
from .budget import ScheduleFitter
from .evaluation import classifier_top1
from .figures import run_figures
from .logging import progress
from .run import Run, epochs_in, gpu_memory_gb, open_run, results_json, save, write_atomically
from .signals import StopSignals
from .step import optimizer_step


def train(cfg: Config, out_dir: str | Path, resume: bool = False, verbose: bool = True, stop_at_step: int = 0,
          clock: Callable[[], float] = time.perf_counter) -> dict[str, Any]:
    """Train ``cfg.method`` and return a summary dict (also written to ``results.json``).

    ``stop_at_step`` (tests, notebooks) stops after that step as an interruption would, but on
    purpose: the schedule still spans the whole run, so a later ``resume=True`` continues it
    exactly. ``clock`` is the time source of budgets and speeds (tests pass a fake one).
    """
    run = open_run(cfg, out_dir, resume, verbose, clock)
    if run.finished:
        return run.results
    if run.step == 0:
        monitor_knn(run, "random init", "knn_random")
    elif knn_due(run) and run.knn_step != run.step:  # stopped at an epoch's end before its kNN ran
        monitor_knn(run, f"epoch {run.step // run.steps_per_epoch}")
    announce(run)
    reason = None
    with StopSignals() as stop:
        run.start_time, run.paused = run.clock(), 0.0
        while run.step < run.total_steps and reason is None:
            epoch, start = divmod(run.step, run.steps_per_epoch)
            epoch_loss, epoch_steps, t0 = 0.0, 0, run.clock()
            batches = progress(run.batches.epoch(epoch, start), run.steps_per_epoch - start, f"epoch {epoch + 1}",
                               run.is_main)
            for batch in saving_on_bad_data(run, batches):
                logs = optimizer_step(run, batch)
                epoch_loss, epoch_steps = epoch_loss + float(logs["loss"]), epoch_steps + 1
                run.images_seen += cfg.batch_size
                refit_schedule(run)
                if run.step % 10 == 0 or run.step == run.total_steps:
                    log_step(run, logs)
                if run.step % cfg.checkpoint_every == 0 and not knn_due(run):
                    save(run)  # (at an epoch's end with a kNN due, saved after it: a resume never skips it)
                reason = stop_reason(run, stop, stop_at_step)
                if reason is not None:
                    break
            end_epoch(run, epoch, epoch_loss, epoch_steps, run.clock() - t0)
            if reason is None and knn_due(run):
                monitor_knn(run, f"epoch {epoch + 1}")
                if run.step % cfg.checkpoint_every == 0:
                    save(run)
    return finish(run, reason or "finished", stop.signum)


def knn_due(run: Run) -> bool:
    """Whether ``run.step`` ends an epoch after which the kNN monitor runs (every ``knn_every``
    epochs, but not after the last step: the final evaluation measures that one). The checkpoint of
    such a step is written after the monitor's row, so a kill in between resumes before the step
    and replays it, row included, instead of resuming after it without the row."""
    every, per_epoch = run.cfg.knn_every, run.steps_per_epoch
    return (bool(every) and run.step % per_epoch == 0 and (run.step // per_epoch) % every == 0
            and 0 < run.step < run.total_steps)


def run_steps(run: Run, steps: int, on_step: Callable[[Run, dict[str, float]], None] | None = None) -> list[dict]:
    """Train ``run`` for ``steps`` more optimizer steps (crossing epochs as needed), calling
    ``on_step(run, logs)`` after each; returns the logs (floats). Nothing is saved or printed: this is
    for experiments that watch a quantity step by step (chapter 07's gradient noise and timing)."""
    history: list[dict[str, float]] = []
    run.model.train()
    while len(history) < steps:
        epoch, start = divmod(run.step, run.steps_per_epoch)
        for batch in run.batches.epoch(epoch, start):
            logs = {k: float(v) for k, v in optimizer_step(run, batch).items()}
            history.append(logs)
            if on_step is not None:
                on_step(run, logs)
            if len(history) == steps:
                break
    return history


def saving_on_bad_data(run: Run, batches):
    """The batches, but an unreadable image first saves the run (the last completed step), then
    stops with the file's name and how to find every such file."""
    try:
        yield from batches
    except DatasetCorruptError as err:
        save(run)
        first = str(err).strip().splitlines()[-1]
        raise DatasetCorruptError(
            f"{first}. Training stopped at step {run.step}; the checkpoint {run.ckpt_path} holds that step. "
            "List every unreadable file with `python -m contrastive_lab check-data --dataset imagefolder "
            f"--data-root {run.cfg.data_root} --split {run.cfg.train_split}`, remove or replace them, then resume "
            "with --resume") from None


def announce(run: Run) -> None:
    """The run's one-paragraph description, and the notes on whatever cuts it short."""
    cfg, say = run.cfg, run.say
    precision = str(run.amp_dtype).replace("torch.", "") if run.amp_dtype else str(run.dtype).replace("torch.float", "fp")
    say(f"training {cfg.method} on {run.data_name} ({run.steps_per_epoch * cfg.batch_size} images per epoch) for "
        f"{run.total_steps} steps, batch {cfg.batch_size} = {run.world} x {run.device.type} x {cfg.accum_steps} x "
        f"{cfg.batch_size // run.world // cfg.accum_steps}, precision {precision}, lr {run.results['lr']:g}")
    if cfg.max_steps and cfg.max_steps < cfg.epochs * run.steps_per_epoch:
        say(f"note: max_steps={cfg.max_steps} caps the {cfg.epochs}-epoch schedule "
            f"({cfg.epochs * run.steps_per_epoch} steps); pass max_steps=0 to train every epoch")
    if cfg.time_budget_s:
        say(f"note: training stops after time_budget_s={cfg.time_budget_s:g} s if it has not finished "
            "(pass time_budget_s=0 for no limit)")
    if cfg.fit_to_budget and not run.fitted_steps:
        # time the warmup steps (whose lr does not depend on the schedule's length), then end the cosine
        # at the budget and refit every epoch or so: the run's length depends on the machine's speed
        fit_at = max(run.step + 15, run.scheduler.warmup_steps)
        every = run.steps_per_epoch * -(-20 // run.steps_per_epoch)  # whole epochs, >= 20 steps: a steady estimate
        run.fitter = ScheduleFitter(cfg.time_budget_s, run.total_steps, run.step + 5, fit_at, every=every)
        say(f"note: fit_to_budget: the schedule's length is set after step {fit_at} from the measured speed "
            f"(at most {run.total_steps} steps) and refitted every {every} steps until {run.fitter.until:.0%} of it")
    run.model.train()


def refit_schedule(run: Run) -> None:
    """fit_to_budget: after the fitter's steps, end the cosine where the budget ends (every rank runs
    the slowest rank's schedule)."""
    if run.fitter is None:
        return
    agree = partial(min_over_ranks, device=run.device) if run.world > 1 else None
    fitted = run.fitter.update(run.step, run.training_seconds(), agree)
    if not fitted:
        return
    if not run.fitted_steps or abs(fitted - run.total_steps) > 0.01 * run.total_steps:
        run.say(f"fit_to_budget: {1000 * run.fitter.seconds_per_step:.0f} ms/step -> a schedule of {fitted} steps "
                f"({fitted / run.steps_per_epoch:.1f} epochs) ending within {run.cfg.time_budget_s:g} s")
    run.total_steps = run.fitted_steps = fitted
    run.scheduler.resize(fitted)  # saved with the scheduler's state


def log_step(run: Run, logs: dict[str, torch.Tensor]) -> None:
    """One metrics.csv row: the logs averaged over ranks (every rank takes part), lr, speed, memory."""
    logged = mean_over_ranks(logs, run.device)
    elapsed = run.clock() - run.start_time  # one clock reading on every rank (budgets compare ranks' clocks)
    if run.log:
        run.log.write({"step": run.step, "epoch": run.step / run.steps_per_epoch, "time_s": round(elapsed, 3),
                       "lr": run.scheduler.get_last_lr()[0], "gpu_mem_gb": gpu_memory_gb(run.device),
                       "images_per_s": round(run.images_seen / max(elapsed - run.paused, 1e-9), 1), **logged})


def stop_reason(run: Run, stop: StopSignals, stop_at_step: int) -> str | None:
    """Why the loop should end after this step, or None: the schedule is done, a signal arrived,
    ``stop_at_step`` was reached, or the time budget is spent. Ranks agree (OR over ranks)."""
    over_budget = bool(run.cfg.time_budget_s) and run.training_seconds() > run.cfg.time_budget_s
    signalled, stopped = stop.requested, run.step == stop_at_step
    if run.world > 1:  # a signal or the budget may reach the ranks at different steps: stop together
        signalled, over_budget = any_rank(signalled, run.device), any_rank(over_budget, run.device)
    if signalled:
        return "interrupted"
    if stopped:
        return "stop_at_step"
    if run.step >= run.total_steps:
        return "finished"
    return "time budget" if over_budget else None


def end_epoch(run: Run, epoch: int, loss_sum: float, steps: int, seconds: float) -> None:
    """The epoch's summary line: mean loss over ranks and throughput."""
    mean = mean_over_ranks({"loss": torch.tensor(loss_sum / max(steps, 1))}, run.device)["loss"]
    run.say(f"epoch {epoch + 1}/{epochs_in(run)}  step {run.step}  loss {mean:.4f}  "
            f"{steps * run.cfg.batch_size / max(seconds, 1e-9):.0f} img/s")


def monitor_knn(run: Run, tag: str, key: str | None = None) -> dict[str, float]:
    """The kNN monitor on h and z (rank 0 computes, the time is not counted as training), printed,
    written as a metrics.csv row, and kept in ``run.results[key]`` (``key + "_z"`` for z)."""
    if run.monitor is None:
        return {}
    run.knn_step = run.step
    t0 = run.clock()
    head = getattr(run.method, "head", None)
    accs = run.monitor(run.method.encoder, head, run.device) if run.is_main else {}
    run.paused += run.clock() - t0
    if not run.is_main:
        return {}
    cfg = run.cfg
    run.say(f"kNN top-1 ({tag}, k={run.monitor.k}, T={cfg.knn_t}, {run.data_name} {cfg.test_split}): {accs['h']:.4f}"
            + (f"  (on z = g(h): {accs['z']:.4f})" if "z" in accs else ""))
    row = {"knn_top1": accs["h"], **({"knn_top1_z": accs["z"]} if "z" in accs else {})}
    if run.log:
        run.log.write({"step": run.step, "epoch": run.step / run.steps_per_epoch, **row})
    if key:
        run.results[key] = accs["h"]
        if "z" in accs:
            run.results[key + "_z"] = accs["z"]
    run.model.train()
    return row


def finish(run: Run, reason: str, signum: int | None) -> dict[str, Any]:
    """Save; unless interrupted, the final kNN, the classifier's top-1, the figures and results.json,
    and then the checkpoint again (marked finished when the schedule is done): a kill at any moment in between leaves a run
    that a resume completes (it re-runs only this final evaluation)."""
    save(run)
    run.results.update(step=run.step, schedule_steps=run.total_steps, stop_reason=reason,
                       train_seconds=run.training_seconds())
    if reason in ("interrupted", "stop_at_step"):
        if reason == "interrupted":
            run.results["signal"] = signum
            run.say(f"stopped by a signal at step {run.step}; resume with --resume (checkpoint {run.ckpt_path})")
        dist_utils.cleanup_distributed()
        return run.results
    monitor_knn(run, "trained", "knn_final")
    if hasattr(run.method, "classify") and run.test_ds is not None:
        run.results["top1"] = classifier_top1(run)
        run.say(f"{run.cfg.method} top-1 on {run.data_name} {run.cfg.test_split}: {run.results['top1']:.4f}")
        if run.log:
            run.log.write({"step": run.step, "epoch": run.step / run.steps_per_epoch, "val_top1": run.results["top1"]})
    if run.is_main and run.out is not None:
        if run.cfg.figures:
            run_figures(run.out, run.method.encoder, run.train_ds, run.test_ds, run.device, run.cfg)
        write_atomically(run.out / "results.json", results_json(run.results))
    # saved again after the evaluation: marked finished, or (a time budget) knowing this step's kNN
    # was measured, so a resume with a larger budget does not log it twice
    save(run, finished=reason == "finished")
    dist_utils.cleanup_distributed()
    return run.results
