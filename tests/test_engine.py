"""The training engine: exact resume, atomic checkpoints, NaN handling, Ctrl-C, logs, DDP equality."""

from __future__ import annotations

import csv
import math
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

from contrastive_lab import engine
from contrastive_lab.checkpoints import CHECKPOINT_VERSION, load_checkpoint, save_checkpoint
from contrastive_lab.engine import TrainingDiverged, train
from contrastive_lab.methods import build_method
from contrastive_lab.presets import get_preset


def tiny_config(**changes):
    """A SimCLR run that takes a second or two: synthetic data, a very thin ResNet-10."""
    base = dict(
        dataset="synthetic",
        synthetic_size=96,
        image_size=16,
        eval_size=0,
        encoder="resnet10",
        width=0.125,
        batch_size=32,
        epochs=2,
        warmup_epochs=0.5,
        precision="fp32",
        knn_every=0,
        knn_k=10,
        checkpoint_every=1000,
        figures=False,
    )
    base.update(changes)
    return get_preset("simclr-cifar10-cpu").replace(**base)


def weights(run: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint(run / "checkpoints" / "last.pt")["method"]


def test_two_epochs_equal_one_epoch_resume_one_epoch_bit_for_bit(tmp_path):
    cfg = tiny_config()
    straight = train(cfg, tmp_path / "straight", verbose=False)
    first = train(cfg, tmp_path / "resumed", verbose=False, stop_at_step=straight["steps_per_epoch"])
    assert first["stop_reason"] == "stop_at_step" and first["step"] == straight["steps_per_epoch"]
    second = train(cfg, tmp_path / "resumed", resume=True, verbose=False)
    assert second["step"] == straight["step"] == 2 * straight["steps_per_epoch"]
    a, b = weights(tmp_path / "straight"), weights(tmp_path / "resumed")
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), f"{key} differs after resume"
    opt_a = load_checkpoint(tmp_path / "straight/checkpoints/last.pt")["optimizer"]
    opt_b = load_checkpoint(tmp_path / "resumed/checkpoints/last.pt")["optimizer"]
    for sa, sb in zip(opt_a["state"].values(), opt_b["state"].values()):
        for k in sa:
            assert torch.equal(torch.as_tensor(sa[k]), torch.as_tensor(sb[k]))



def _metric_rows(run: Path) -> list[dict[str, str]]:
    """metrics.csv without its wall-clock columns (they differ between runs)."""
    with open(run / "metrics.csv", newline="") as f:
        return [{k: v for k, v in r.items() if k not in ("time_s", "images_per_s")} for r in csv.DictReader(f)]


class _Killed(BaseException):
    """Stands for a SIGKILL: no handler of the engine catches it, nothing after it runs."""


def test_a_kill_during_an_epochs_knn_resumes_before_that_epochs_end_and_logs_the_row(tmp_path, monkeypatch):
    """The checkpoint of a step that ends an epoch with a kNN due is written after the kNN's row: a
    kill during that kNN resumes from the step before, replays the step and logs the row. (Before
    2026-12-07 the checkpoint came first, and the resumed run never logged that epoch's kNN.)"""
    from contrastive_lab.engine import loop

    cfg = tiny_config(epochs=4, knn_every=1, checkpoint_every=1)  # 3 steps per epoch, 12 in all
    train(cfg, tmp_path / "straight", verbose=False)
    real = loop.monitor_knn

    def killed_in_epoch_2(run, tag, key=None):
        if tag == "epoch 2":
            raise _Killed
        return real(run, tag, key)

    monkeypatch.setattr(loop, "monitor_knn", killed_in_epoch_2)
    with pytest.raises(_Killed):
        train(cfg, tmp_path / "run", verbose=False)
    assert load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")["step"] == 5
    monkeypatch.setattr(loop, "monitor_knn", real)
    assert train(cfg, tmp_path / "run", resume=True, verbose=False)["stop_reason"] == "finished"
    assert [r["step"] for r in _metric_rows(tmp_path / "run") if r["knn_top1"]] == ["0", "3", "6", "9", "12"]
    assert _metric_rows(tmp_path / "run") == _metric_rows(tmp_path / "straight")
    a, b = weights(tmp_path / "straight"), weights(tmp_path / "run")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_a_run_stopped_at_an_epochs_end_runs_that_epochs_knn_when_resumed(tmp_path):
    """Stopped (a signal, ``stop_at_step``) at a step that ends an epoch, before its kNN ran: the
    checkpoint says the kNN is still due, and the resumed run measures it first, once; the log
    equals an uninterrupted run's."""
    cfg = tiny_config(epochs=4, knn_every=1, checkpoint_every=1)
    train(cfg, tmp_path / "straight", verbose=False)
    first = train(cfg, tmp_path / "run", verbose=False, stop_at_step=6)
    assert first["stop_reason"] == "stop_at_step"
    assert [r["step"] for r in _metric_rows(tmp_path / "run") if r["knn_top1"]] == ["0", "3"]
    knn_step = load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt").get("knn_step")
    train(cfg, tmp_path / "run", resume=True, verbose=False)
    assert _metric_rows(tmp_path / "run") == _metric_rows(tmp_path / "straight")
    assert knn_step == 3  # the checkpoint at step 6 knew that epoch 2's kNN had not run
    train(cfg, tmp_path / "run", resume=True, verbose=False)  # finished: nothing measured again
    assert _metric_rows(tmp_path / "run") == _metric_rows(tmp_path / "straight")


def test_a_run_stopped_by_its_time_budget_at_an_epochs_end_logs_that_kNN_once_when_resumed(tmp_path, monkeypatch):
    """A time budget ends the run at step 6, an epoch's end with a kNN due: the final evaluation
    measures that step, and a resume with a larger budget does not measure it again."""
    from contrastive_lab.engine import loop

    cfg = tiny_config(epochs=4, knn_every=1, checkpoint_every=1)
    real = loop.stop_reason
    monkeypatch.setattr(loop, "stop_reason", lambda run, stop, at: "time budget" if run.step == 6 else real(run, stop, at))
    assert train(cfg, tmp_path / "run", verbose=False)["stop_reason"] == "time budget"
    monkeypatch.setattr(loop, "stop_reason", real)
    assert train(cfg.replace(time_budget_s=0), tmp_path / "run", resume=True, verbose=False)["step"] == 12
    knn_steps = [r["step"] for r in _metric_rows(tmp_path / "run") if r["knn_top1"]]
    assert knn_steps == ["0", "3", "6", "9", "12"]


@pytest.mark.parametrize("precision", ["fp32", "bf16"])  # bf16 on the CPU: the GEMM weight gradient too
def test_mid_epoch_resume_is_exact(tmp_path, precision):
    cfg = tiny_config(epochs=1, precision=precision)
    straight = train(cfg, tmp_path / "a", verbose=False)
    train(cfg, tmp_path / "b", verbose=False, stop_at_step=1)
    train(cfg, tmp_path / "b", resume=True, verbose=False)
    a, b = weights(tmp_path / "a"), weights(tmp_path / "b")
    assert straight["step"] == 3
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_run_folder_layout_and_metrics(tmp_path):
    cfg = tiny_config(epochs=1, figures=True)
    result = train(cfg, tmp_path / "run", verbose=False)
    run = tmp_path / "run"
    for name in ["config.json", "metrics.csv", "checkpoints/last.pt", "results.json"]:
        assert (run / name).is_file(), name
    assert {p.name for p in (run / "figures").iterdir()} >= {"loss.png", "knn.png", "retrieval.png", "embedding.png"}
    rows = list(csv.DictReader(open(run / "metrics.csv")))
    knn = [float(r["knn_top1"]) for r in rows if r["knn_top1"]]
    assert len(knn) == 2 and knn[0] == result["knn_random"] and knn[-1] == result["knn_final"]
    knn_z = [float(r["knn_top1_z"]) for r in rows if r["knn_top1_z"]]  # the linear head's z
    assert len(knn_z) == 2 and knn_z[0] == result["knn_random_z"] and knn_z[-1] == result["knn_final_z"]
    losses = [float(r["loss"]) for r in rows if r["loss"]]
    assert losses and all(value > 0 for value in losses)


def test_starting_over_an_existing_run_is_refused(tmp_path):
    cfg = tiny_config(epochs=1)
    train(cfg, tmp_path / "run", verbose=False)
    with pytest.raises(FileExistsError, match="--resume"):
        train(cfg, tmp_path / "run", verbose=False)
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        train(cfg, tmp_path / "other", resume=True, verbose=False)


class _NaNAfter(torch.nn.Module):
    """Wraps a method; its loss becomes NaN from call number ``n`` on."""

    def __init__(self, method, n):
        super().__init__()
        self.inner, self.n, self.calls = method, n, 0
        self.encoder = method.encoder

    def forward(self, *args):
        loss, logs = self.inner(*args)
        self.calls += 1
        return (loss * float("nan") if self.calls > self.n else loss), logs


def test_nan_loss_stops_with_a_message_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
    from contrastive_lab.engine import run as run_module

    real = run_module.build_method
    monkeypatch.setattr(run_module, "build_method", lambda cfg, ctx: _NaNAfter(real(cfg, ctx), n=2))
    cfg = tiny_config(epochs=2, checkpoint_every=1)
    with pytest.raises(TrainingDiverged, match=r"loss is nan at step 3 .*last good checkpoint"):  # 2 good steps
        train(cfg, tmp_path / "run", verbose=False)
    state = load_checkpoint(tmp_path / "run/checkpoints/last.pt")
    assert state["step"] == 2
    assert all(torch.isfinite(v).all() for v in state["method"].values() if v.is_floating_point())


def test_stop_request_saves_and_exits_cleanly(tmp_path, monkeypatch):
    """A signal sets StopSignals.requested; the step finishes, a checkpoint is written, train returns."""
    original_enter = engine.StopSignals.__enter__

    def enter(self):
        original_enter(self)
        self.request(signal.SIGTERM)  # as if SIGTERM arrived during the first step
        return self

    monkeypatch.setattr(engine.StopSignals, "__enter__", enter)
    result = train(tiny_config(), tmp_path / "run", verbose=False)
    assert result["stop_reason"] == "interrupted" and result["step"] == 1
    assert result["signal"] == signal.SIGTERM and engine.exit_code(result["signal"]) == 143
    assert load_checkpoint(tmp_path / "run/checkpoints/last.pt")["step"] == 1


def test_sigint_handler_sets_the_flag_then_second_press_aborts():
    with engine.StopSignals() as flag:
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.05)
        assert flag.requested
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.05)


def test_checkpoint_roundtrip_and_corrupt_file_message(tmp_path):
    path = tmp_path / "ck.pt"
    save_checkpoint({"version": CHECKPOINT_VERSION, "w": torch.arange(5)}, path)
    assert torch.equal(load_checkpoint(path)["w"], torch.arange(5))
    assert [p.name for p in tmp_path.iterdir()] == ["ck.pt"], "temporary file left behind"
    path.write_bytes(path.read_bytes()[:40])
    with pytest.raises(RuntimeError, match="cannot read checkpoint .*ck.pt"):
        load_checkpoint(path)


def test_sigkill_during_checkpoint_write_leaves_the_last_checkpoint_loadable(tmp_path):
    """A writer process saves a 16 MB checkpoint in a loop; we SIGKILL it at random moments."""
    path = tmp_path / "last.pt"
    script = textwrap.dedent(
        f"""
        import torch
        from contrastive_lab.checkpoints import save_checkpoint, CHECKPOINT_VERSION
        i = 0
        while True:
            i += 1
            save_checkpoint({{"version": CHECKPOINT_VERSION, "i": i,
                              "w": torch.full((4_000_000,), float(i))}}, {str(path)!r})
            print(i, flush=True)
        """
    )
    generator = torch.Generator().manual_seed(0)
    for trial in range(3):
        proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
        proc.stdout.readline()  # at least one checkpoint is complete
        time.sleep(float(torch.rand((), generator=generator)) * 0.3)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        state = load_checkpoint(path)
        assert torch.all(state["w"] == float(state["i"])), f"trial {trial}: torn checkpoint"


@pytest.mark.distributed
def test_ddp_step_on_two_gloo_processes_equals_one_process_on_the_full_batch(tmp_path):
    """One optimizer step of SimCLR (with BN, made global) on 2 ranks == 1 process, full batch."""
    from tests._dist import run_ranks

    # float64 (precision=fp64): in float32 the two runs differ by summation order, and a ReLU input
    # near zero can flip sign and move early layers by 1e-3 of the step (tests/test_scaling.py measures it)
    cfg = tiny_config(max_steps=1, epochs=1, batch_size=16, weight_decay=1e-4, optimizer="sgd", lr=0.5,
                      precision="fp64")
    single = tmp_path / "single"
    train(cfg, single, verbose=False)
    run_ranks(_ddp_train_worker, world_size=2, args=(cfg, str(tmp_path / "ddp")))
    a, b = weights(single), weights(tmp_path / "ddp")
    torch.manual_seed(cfg.seed)
    before = build_method(cfg).state_dict()
    moved = [k for k in a if a[k].is_floating_point() and not torch.equal(a[k], before[k].double())]
    assert len(moved) > 10, "the step did not change the weights"
    # compare against the size of the step (lr 0.5 moves conv1 by ~2): a wrong gradient, BN or set of
    # negatives differs by the order of the step itself; float64 rounding by ~1e-14 of it (measured)
    for key in a:
        if a[key].is_floating_point():
            assert a[key].dtype == b[key].dtype == torch.float64, key
            step = (a[key] - before[key]).abs().max().item()
            diff = (b[key] - a[key]).abs().max().item()
            assert diff <= 1e-9 * step + 1e-12, f"{key} differs by {diff:.2e} after a step of {step:.2e}"
        else:
            assert torch.equal(b[key], a[key]), f"{key} differs"


def _ddp_train_worker(rank, world_size, cfg, out):
    train(cfg, out, verbose=False)


def test_view_ops_switch_operations_to_their_identity():
    cfg = tiny_config(view_ops="crop,jitter")
    recipe = engine.view_recipe(cfg)
    assert recipe.size == cfg.image_size
    assert recipe.crop_scale == (0.08, 1.0) and recipe.jitter_p == 0.8
    assert recipe.flip_p == recipe.gray_p == recipe.blur_p == 0.0
    only_color = engine.view_recipe(tiny_config(view_ops="jitter"))
    assert only_color.crop_scale == (1.0, 1.0) and only_color.crop_ratio == (1.0, 1.0)
    with pytest.raises(ValueError, match=r"unknown op\(s\) \['colour'\]"):
        tiny_config(view_ops="crop,colour")


def test_crop_min_scale_overrides_the_recipe_unless_crop_is_off():
    assert engine.view_recipe(tiny_config(crop_min_scale=0.2)).crop_scale == (0.2, 1.0)
    assert engine.view_recipe(tiny_config()).crop_scale == (0.08, 1.0)  # 0 -> the recipe's own
    no_crop = engine.view_recipe(tiny_config(crop_min_scale=0.2, view_ops="jitter"))
    assert no_crop.crop_scale == (1.0, 1.0)
    with pytest.raises(ValueError, match=r"crop_min_scale must be in \[0, 1\]"):
        tiny_config(crop_min_scale=1.5)


def test_color_strength_sets_simclr_jitter_unless_jitter_is_off():
    assert engine.view_recipe(tiny_config(color_strength=1.0)).jitter == (0.8, 0.8, 0.8, 0.2)
    assert engine.view_recipe(tiny_config()).jitter == (0.4, 0.4, 0.4, 0.1)  # simclr_cifar: s = 0.5
    assert engine.view_recipe(tiny_config(color_strength=1.0, view_ops="crop")).jitter_p == 0.0
    with pytest.raises(ValueError, match=r"color_strength must be in \[0, 2.5\]"):
        tiny_config(color_strength=3.0)


def test_eval_size_sets_the_size_evaluation_encodes():
    images = torch.randint(0, 256, (3, 3, 16, 16), dtype=torch.uint8)
    assert engine.config_eval_transform(tiny_config())(images).shape == (3, 3, 16, 16)  # 0 -> image_size
    bigger = engine.config_eval_transform(tiny_config(image_size=12, eval_size=16))(images)
    assert bigger.shape == (3, 3, 16, 16)
    recipe = engine.view_recipe(tiny_config())
    mean, std = torch.tensor(recipe.mean).view(1, 3, 1, 1), torch.tensor(recipe.std).view(1, 3, 1, 1)
    torch.testing.assert_close(bigger, (images.float() / 255 - mean) / std)  # same size: no resampling
    pipeline = engine.center_crop_pipeline(tiny_config(image_size=12, eval_size=16))
    assert pipeline(torch.randint(0, 256, (3, 40, 30), dtype=torch.uint8)).shape == (3, 16, 16)
    with pytest.raises(ValueError, match="eval_size must be >= 0"):
        tiny_config(eval_size=-1)



def test_evaluation_size_and_synthetic_data_follow_eval_size():
    assert tiny_config().evaluation_size() == 16  # 0 -> the view size
    cfg = tiny_config(image_size=12, eval_size=16)
    assert cfg.evaluation_size() == 16
    # synthetic data is generated at the size evaluation sees; the views resample it to 12 px
    assert engine.load_split(cfg, "train").images.shape[-2:] == (16, 16)
    assert engine.load_split(tiny_config(image_size=12), "train").images.shape[-2:] == (12, 12)


def test_step_and_time_caps_are_announced_not_silent(tmp_path, capsys):
    train(tiny_config(epochs=2, max_steps=2, time_budget_s=600.0), tmp_path / "capped", verbose=True)
    out = capsys.readouterr().out
    assert "max_steps=2 caps the 2-epoch schedule (6 steps); pass max_steps=0" in out
    assert "time_budget_s=600 s" in out
    train(tiny_config(epochs=1, max_steps=0, time_budget_s=0.0), tmp_path / "free", verbose=True)
    out = capsys.readouterr().out
    assert "caps the" not in out and "time_budget_s" not in out


def test_steps_that_fit_matches_hand_computation():
    # 40 steps done in 20 s at 0.5 s/step; 400 s left, 3% margin: 388 s -> 776 more steps
    assert engine.steps_that_fit(40, 20.0, 0.5, 420.0) == 40 + 776
    assert engine.steps_that_fit(40, 20.0, 0.5, 420.0, margin=0.0) == 40 + 800
    assert engine.steps_that_fit(40, 500.0, 0.5, 420.0) == 41  # over budget already: at least one more step
    with pytest.raises(ValueError, match="seconds_per_step"):
        engine.steps_that_fit(1, 0.0, 0.0, 10.0)
    with pytest.raises(ValueError, match="margin"):
        engine.steps_that_fit(1, 0.0, 0.1, 10.0, margin=1.0)


class FakeClock:
    """perf_counter that advances a fixed tick per call: the engine's timing becomes deterministic."""

    def __init__(self, tick: float = 0.01):
        self.now, self.tick = 1000.0, tick

    def perf_counter(self) -> float:
        self.now += self.tick
        return self.now


def test_fit_to_budget_ends_the_cosine_at_the_budget_and_resume_keeps_it(tmp_path):
    cfg = tiny_config(epochs=100, warmup_epochs=1.0, time_budget_s=2.0, fit_to_budget=True)  # <= 300 steps
    straight = train(cfg, tmp_path / "straight", verbose=False, clock=FakeClock().perf_counter)
    state = load_checkpoint(tmp_path / "straight/checkpoints/last.pt")
    fitted = state["fitted_steps"]
    assert 20 < fitted < 300, fitted  # set from the measured speed, below the 100-epoch cap
    assert straight["stop_reason"] == "finished" and straight["step"] == fitted
    assert state["scheduler"]["lr_lambdas"][0]["total_steps"] == fitted
    assert state["scheduler"]["_last_lr"][0] == pytest.approx(0.0, abs=1e-12)  # the cosine reached its end
    # stopped after the fit and resumed (the clock starts afresh): the same schedule, the same weights
    train(cfg, tmp_path / "resumed", verbose=False, stop_at_step=fitted - 5, clock=FakeClock().perf_counter)
    resumed = train(cfg, tmp_path / "resumed", resume=True, verbose=False, clock=FakeClock().perf_counter)
    assert resumed["step"] == fitted
    a, b = weights(tmp_path / "straight"), weights(tmp_path / "resumed")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_fit_to_budget_needs_a_budget_and_a_cosine():
    with pytest.raises(ValueError, match="time_budget_s > 0"):
        tiny_config(fit_to_budget=True, time_budget_s=0.0)
    with pytest.raises(ValueError, match="lr_schedule=cosine"):
        tiny_config(fit_to_budget=True, time_budget_s=10.0, lr_schedule="step", lr_milestones="1")


def test_fit_to_budget_on_two_gloo_ranks_runs_the_slowest_ranks_schedule(tmp_path):
    """Ranks that time different speeds must still run one schedule: the shortest (slowest rank's)."""
    from tests._dist import run_ranks

    cfg = tiny_config(epochs=100, warmup_epochs=1.0, time_budget_s=2.0, fit_to_budget=True)
    run_ranks(_fit_worker, world_size=2, args=(cfg, str(tmp_path / "ddp")))
    ranks = [torch.load(tmp_path / f"ddp/result{r}.pt") for r in (0, 1)]
    assert ranks[0] == ranks[1], ranks  # the same schedule and the same last step on both ranks
    alone = train(cfg, tmp_path / "slow", verbose=False, clock=FakeClock(tick=0.02).perf_counter)  # rank 1's clock
    assert ranks[0] == (alone["schedule_steps"], alone["step"])
    assert alone["schedule_steps"] < 150  # the fast rank alone would have fitted about twice as many


def _fit_worker(rank, world_size, cfg, out):
    clock = FakeClock(tick=0.01 * (rank + 1))  # rank 1 "runs" at half the speed
    result = train(cfg, out, verbose=False, clock=clock.perf_counter)
    torch.save((result["schedule_steps"], result["step"]), Path(out) / f"result{rank}.pt")


def test_schedule_fitter_refits_from_the_mean_speed():
    """Hand-computed: 0.1 s/step until step 15, then 0.2 s/step; budget 100 s, refit every 10 steps."""
    fitter = engine.ScheduleFitter(budget_s=100.0, cap=1000, first_from=5, first_at=15, every=10)
    elapsed = lambda step: 0.1 * step if step <= 15 else 1.5 + 0.2 * (step - 15)
    fits = {}
    for step in range(1, 400):
        new = fitter.update(step, elapsed(step))
        if new is not None:
            fits[step] = new
    # step 15: 0.1 s/step over steps 5..15 -> 15 + floor(0.97 * 98.5 / 0.1) = 15 + 955
    assert fits[15] == 970
    # step 25: (3.5 - 0.5) s over steps 5..25 = 0.15 s/step -> 25 + floor(0.97 * 96.5 / 0.15) = 25 + 624
    assert fits[25] == 649
    # then every 10 steps with the mean speed since step 5, until the next refit would pass 80 %
    for step in fits:
        mean = (elapsed(step) - 0.5) / (step - 5)
        assert abs(fits[step] - (step + math.floor(0.97 * (100 - elapsed(step)) / mean))) <= 1  # float rounding
    last = max(fits)
    assert last < 0.8 * fits[last] <= last + 10
    assert sorted(fits) == list(range(15, last + 1, 10))  # no refit skipped before the last
    assert fits[last] < 520  # converging on the true length: 15 + 98.5 / 0.2 = 507 steps


def test_schedule_fitter_rejects_bad_arguments():
    with pytest.raises(ValueError, match="budget_s"):
        engine.ScheduleFitter(budget_s=0.0, cap=10, first_from=1, first_at=5, every=1)
    with pytest.raises(ValueError, match="first_from < first_at"):
        engine.ScheduleFitter(budget_s=10.0, cap=10, first_from=5, first_at=5, every=1)
    with pytest.raises(ValueError, match="every must be >= 1"):
        engine.ScheduleFitter(budget_s=10.0, cap=10, first_from=1, first_at=5, every=0)
    with pytest.raises(ValueError, match="until in"):
        engine.ScheduleFitter(budget_s=10.0, cap=10, first_from=1, first_at=5, every=1, until=0.0)


class SlowingClock(FakeClock):
    """A machine that halves its speed after ``calls`` clock readings."""

    def __init__(self, tick: float, calls: int):
        super().__init__(tick)
        self.calls, self.left = calls, calls

    def perf_counter(self) -> float:
        self.left -= 1
        if self.left == 0:
            self.tick *= 2
        return super().perf_counter()


def test_fit_to_budget_refits_when_the_machine_slows(tmp_path):
    """The machine halves its speed after the first fit. Fitted once, the 4 s budget would cut the
    144-step cosine at about step 90, with the lr still near its peak; refitted from the mean speed,
    the schedule shrinks and the run stops at most a few steps short of its end, lr about 0."""
    cfg = tiny_config(epochs=100, warmup_epochs=1.0, time_budget_s=4.0, fit_to_budget=True)
    steady = train(cfg, tmp_path / "steady", verbose=False, clock=FakeClock().perf_counter)
    slowed = train(cfg, tmp_path / "slowed", verbose=False, clock=SlowingClock(0.01, calls=45).perf_counter)
    assert slowed["schedule_steps"] < 0.65 * steady["schedule_steps"]
    assert slowed["step"] >= 0.95 * slowed["schedule_steps"]
    state = load_checkpoint(tmp_path / "slowed/checkpoints/last.pt")
    assert state["scheduler"]["_last_lr"][0] < 0.01 * slowed["lr"]  # the decay is (almost) complete


def test_knn_on_z_is_the_knn_of_the_head_outputs(tmp_path):
    """The run's kNN monitor's z accuracy, recomputed by hand: the head applied to h, then the same kNN."""
    from contrastive_lab.engine import encode, load_split
    from contrastive_lab.engine.run import build_monitor
    from contrastive_lab.evaluate import knn_accuracy

    cfg = tiny_config()
    torch.manual_seed(3)
    method = build_method(cfg)
    train_ds, test_ds = load_split(cfg, "train"), load_split(cfg, "test")
    monitor = build_monitor(cfg, train_ds, test_ds)
    accs = monitor(method.encoder, method.head, "cpu")
    h_train, h_test = encode(method.encoder, train_ds.images, cfg, "cpu"), encode(method.encoder, test_ds.images, cfg, "cpu")
    w, b = method.head.linear.weight.detach(), method.head.linear.bias.detach()
    z_acc = knn_accuracy(h_train @ w.T + b, train_ds.labels, h_test @ w.T + b, test_ds.labels, k=10, temperature=0.1)
    h_acc = knn_accuracy(h_train, train_ds.labels, h_test, test_ds.labels, k=10, temperature=0.1)
    assert accs == pytest.approx({"h": h_acc, "z": z_acc})
    from contrastive_lab.heads import IdentityHead

    for no_projection in (None, torch.nn.Identity(), IdentityHead(method.encoder.feature_dim)):
        assert set(monitor(method.encoder, no_projection, "cpu")) == {"h"}


@pytest.mark.parametrize("flag", [True, False])
def test_prepare_model_converts_convolutions_only_when_asked(flag):
    from contrastive_lab.encoders import GemmGradConv2d

    cfg = tiny_config(gemm_weight_grad=flag)
    model = engine.prepare_model(build_method(cfg), cfg, torch.device("cpu"), world=1)
    kinds = {type(m) for m in model.modules() if isinstance(m, torch.nn.Conv2d)}
    assert kinds == ({GemmGradConv2d} if flag else {torch.nn.Conv2d})


def _same(a, b) -> bool:
    """Nested dicts/lists of tensors and plain values, equal bit for bit (tensors with torch.equal)."""
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        return isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b)
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list | tuple) and isinstance(b, list | tuple):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return a == b


@pytest.mark.parametrize("name", ["v1_simclr", "v1_moco"])
def test_checkpoints_written_before_the_redesign_load_and_resume(tmp_path, name):
    """tests/fixtures/v1_*.pt were written by the engine before methods had options classes (format
    version 1, a flat config, step 2 of 4): they load and resume. Resuming restores every piece of the
    saved state exactly (weights and buffers, optimizer, schedule, both random generators, step), and
    the resumed run equals, bit for bit, one resumed from the same state saved in today's format.

    Not compared: a run trained straight through on this machine. The fixture's first two steps were
    computed on the machine that wrote it, and float32 kernels round differently with the CPU's vector
    ISA and thread count (after 2 steps, measured: 7e-7 on an AVX-512 CPU with 2 threads, 3e-3 with 1
    thread): straight == resumed holds on one machine, tested by
    test_two_epochs_equal_one_epoch_resume_one_epoch_bit_for_bit."""
    import shutil

    from contrastive_lab.checkpoints import checkpoint_config
    from contrastive_lab.methods import load_method

    fixture = Path(__file__).parent / "fixtures" / f"{name}.pt"
    state = load_checkpoint(fixture)
    assert state["version"] == 1 and "options" not in state["config"] and state["step"] == 2
    cfg, method = load_method(fixture)
    assert cfg.options == checkpoint_config(state).options and not method.training
    runs = {}
    for kind in ("old", "resaved"):
        runs[kind] = tmp_path / kind
        (runs[kind] / "checkpoints").mkdir(parents=True)
        shutil.copy(fixture, runs[kind] / "checkpoints" / "last.pt")
    # resuming restores what the version-1 file holds, every tensor bit for bit
    run = engine.open_run(cfg, runs["resaved"], resume=True, verbose=False)
    assert run.step == 2 and not run.finished
    assert _same(run.method.state_dict(), state["method"]), "weights or buffers differ from the file's"
    assert _same(run.optimizer.state_dict(), state["optimizer"]), "optimizer state differs from the file's"
    assert _same(run.scheduler.state_dict(), state["scheduler"]), "schedule state differs from the file's"
    assert torch.equal(torch.get_rng_state(), state["rng"]["torch"]), "torch's generator differs from the file's"
    assert torch.equal(run.batches.generator.get_state(), state["rng"]["views"]), "the views' generator differs"
    engine.save(run)  # the same state in today's format (version 2)
    resaved = load_checkpoint(runs["resaved"] / "checkpoints" / "last.pt")
    assert resaved["version"] == CHECKPOINT_VERSION == 2 and resaved["step"] == 2
    # either file resumes to the end of the schedule, to the same weights bit for bit
    results = {kind: train(cfg, path, resume=True, verbose=False) for kind, path in runs.items()}
    assert all(r["stop_reason"] == "finished" and r["step"] == 4 for r in results.values())
    a, b = weights(runs["old"]), weights(runs["resaved"])
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], state["method"][k]) for k in a), "two more steps changed nothing"
    run = runs["old"]
    with pytest.raises(ValueError, match="temperature: .* in the run, 0.3 asked"):
        train(cfg.replace(temperature=0.3), run, resume=True, verbose=False)
