"""Faults, with real processes: a training run killed at random moments, signalled, diverging, fed a
corrupt image or a changed config must never lose or poison work.

Each test starts ``python -m contrastive_lab train`` as a new process (as a user, SLURM or a shell
would) on tiny synthetic data, so what is tested is the whole path: signal handlers, exit codes,
atomic files and the resume that follows.
"""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from contrastive_lab.checkpoints import load_checkpoint, save_checkpoint
from contrastive_lab.cli import main

REPO = Path(__file__).resolve().parents[1]
TINY = ["dataset=synthetic", "synthetic_size=96", "image_size=16", "encoder=resnet10", "width=0.125",
        "batch_size=32", "precision=fp32", "knn_k=10", "figures=false", "max_steps=0", "time_budget_s=0",
        "warmup_epochs=0.5"]


def cli(out: Path, *extra: str, resume: bool = False) -> list[str]:
    args = [sys.executable, "-m", "contrastive_lab", "train", "--preset", "simclr-cifar10-cpu", "--out", str(out),
            *TINY, *extra]
    return args + (["--resume"] if resume else [])


def env() -> dict[str, str]:
    e = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO), "PYTHONUNBUFFERED": "1"}
    for var in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        e.pop(var, None)
    return e


def weights(run: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint(run / "checkpoints" / "last.pt")["method"]


def rows(run: Path) -> list[dict[str, str]]:
    """metrics.csv without the wall-clock columns (they differ between runs)."""
    with open(run / "metrics.csv", newline="") as f:
        return [{k: v for k, v in r.items() if k not in ("time_s", "images_per_s")} for r in csv.DictReader(f)]


def wait_for(path: Path, proc: subprocess.Popen, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if proc.poll() is not None:
            raise AssertionError(f"the run ended ({proc.returncode}) before {path.name} appeared:\n"
                                 + proc.communicate()[1][-3000:])
        assert time.monotonic() < deadline, f"{path} did not appear"
        time.sleep(0.05)


@pytest.fixture(scope="module")
def straight(tmp_path_factory) -> Path:
    """The reference: the same run, uninterrupted, through the same CLI in its own process."""
    out = tmp_path_factory.mktemp("straight") / "run"
    done = subprocess.run(cli(out, "epochs=6", "checkpoint_every=1", "knn_every=2"), env=env(), capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return out


def still_running_after(proc: subprocess.Popen, ckpt: Path, writes: int, delay: float) -> bool:
    """Wait until ``ckpt`` has been (re)written ``writes`` times, then ``delay`` seconds more; False
    as soon as the process ends first (the run finished before that moment)."""
    def stamp():
        return ckpt.stat().st_mtime_ns if ckpt.exists() else None

    last, seen = stamp(), 0
    while seen < writes:
        if proc.poll() is not None:
            return False
        now = stamp()
        if now != last:
            last, seen = now, seen + 1
        time.sleep(0.005)
    try:
        proc.wait(timeout=delay)
        return False
    except subprocess.TimeoutExpired:
        return True


@pytest.mark.slow
def test_sigkill_at_random_moments_then_resume_ends_bit_identical_with_a_clean_log(straight, tmp_path):
    """SIGKILL during start-up, training steps, checkpoint writes (one per step) and the final
    evaluation, then resume, again and again: the weights equal the uninterrupted run's bit for bit,
    metrics.csv holds each row once (no duplicates, no gaps), results.json matches."""
    out = tmp_path / "run"
    rng = np.random.default_rng(0)
    kills = 0
    for attempt in range(12):
        resume = (out / "checkpoints" / "last.pt").exists()
        proc = subprocess.Popen(cli(out, "epochs=6", "checkpoint_every=1", "knn_every=2", resume=resume),
                                env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        if attempt < 8:  # the first eight get killed somewhere between start-up and the end
            # the moment is drawn in the run's own progress (0-3 checkpoint writes, then up to 0.3 s),
            # not in seconds, so that it lands inside the run on a fast machine and a slow one alike
            writes, delay = int(rng.integers(0, 4)), float(rng.uniform(0.0, 0.3))
            if still_running_after(proc, out / "checkpoints" / "last.pt", writes,
                                   delay if writes else float(rng.uniform(0.5, 2.5))):
                proc.send_signal(signal.SIGKILL)
                proc.wait()
                kills += 1
                continue
        err = proc.communicate(timeout=600)[1]
        assert proc.returncode == 0, err[-3000:]
        if json.loads((out / "results.json").read_text()).get("stop_reason") == "finished" and attempt >= 8:
            break
    assert kills >= 4, f"only {kills} kills landed; the timing window missed the run"
    a, b = weights(straight), weights(out)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert rows(out) == rows(straight)  # every row once, in order, with identical values
    ra, rb = (json.loads((run / "results.json").read_text()) for run in (straight, out))
    for key in ("step", "knn_random", "knn_final", "knn_final_z", "stop_reason"):
        assert ra[key] == rb[key], key
    assert not list((out / "checkpoints").glob(".*tmp-*")), "a temporary file was left behind"


@pytest.mark.parametrize("sig, code", [(signal.SIGTERM, 143), (signal.SIGINT, 130), (signal.SIGUSR1, 138)])
def test_a_signal_saves_a_resumable_checkpoint_and_exits_with_128_plus_the_signal(straight, tmp_path, sig, code):
    out = tmp_path / "run"
    proc = subprocess.Popen(cli(out, "epochs=6", "checkpoint_every=1", "knn_every=2"), env=env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_for(out / "checkpoints" / "last.pt", proc)  # training has begun
    proc.send_signal(sig)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == code, stderr[-2000:]
    assert f"{signal.Signals(sig).name}: finishing this step, saving a checkpoint" in stdout
    assert "Traceback" not in stderr
    state = load_checkpoint(out / "checkpoints" / "last.pt")
    assert 0 < state["step"] < 18 and not state["finished"]
    resumed = subprocess.run(cli(out, "epochs=6", "checkpoint_every=1", "knn_every=2", resume=True), env=env(),
                             capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    a, b = weights(straight), weights(out)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert rows(out) == rows(straight)


@pytest.mark.parametrize("launcher,moment", [("module", 0.2), ("module", 0.4), ("module", 0.7), ("command", 0.4)])
def test_ctrl_c_during_start_up_ends_with_one_line_and_exit_code_130(tmp_path, launcher, moment):
    """While the libraries load (torch alone takes longer than 0.7 s), through ``python -m
    contrastive_lab`` and the installed ``contrastive-lab`` command. A KeyboardInterrupt raised inside a
    library's import was, at some moments, swallowed (the run trained on and exited 0), left numpy
    half imported (RecursionError), or ended the process by SIGINT (-2): ``__main__.run`` now notes
    the Ctrl-C during the imports and exits after them."""
    args = cli(tmp_path / "run", "epochs=1")
    if launcher == "command":
        command = Path(sys.executable).parent / "contrastive-lab"
        assert command.is_file(), f"{command} is not installed: run make install"
        args = [str(command), *args[3:]]  # [python, -m, contrastive_lab, train, ...] -> [contrastive-lab, train, ...]
    proc = subprocess.Popen(args, env=env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(moment)  # the libraries are still loading: no training loop, no checkpoint yet
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "interrupted (Ctrl-C)" in lines[0] and "Traceback" not in stderr, stderr


def test_a_diverging_run_stops_naming_the_step_and_keeps_a_finite_checkpoint(tmp_path, capsys):
    out = tmp_path / "run"
    code = main(["train", "--preset", "simclr-cifar10-cpu", "--out", str(out), *TINY, "epochs=3",
                 "optimizer=sgd", "lr=1e8", "warmup_epochs=0", "checkpoint_every=1"])
    err = capsys.readouterr().err
    # measured: BN running_var turns inf at step 3 while the loss is still finite; the save refuses it
    assert code == 2 and "at step 3 method.encoder." in err and "holds NaN or inf" in err, err
    assert "The last good checkpoint" in err and "Try a lower lr" in err
    ckpt = out / "checkpoints" / "last.pt"
    state = load_checkpoint(ckpt)
    assert state["step"] == 2  # the last checkpoint written before the bad one: finite, resumable
    tensors = [v for v in state["method"].values() if v.is_floating_point()]
    assert all(torch.isfinite(v).all() for v in tensors)
    # its weights are finite but enormous (lr 1e8): eval refuses the inf features instead of reporting 0.10
    assert main(["eval", "--checkpoint", str(ckpt), "--out", str(tmp_path / "e.json")]) == 2
    assert "the encoder probably diverged" in capsys.readouterr().err


def test_evaluation_refuses_a_checkpoint_with_non_finite_weights(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--preset", "simclr-cifar10-cpu", "--out", str(out), *TINY, "epochs=1"]) == 0
    state = load_checkpoint(out / "checkpoints" / "last.pt")
    state["method"]["encoder.bn1.running_var"][0] = float("nan")
    bad = tmp_path / "bad.pt"
    save_checkpoint(state, bad)
    capsys.readouterr()
    for argv in (["eval", "--checkpoint", str(bad)],
                 ["embed", "--checkpoint", str(bad), "--dataset", "synthetic", "--out", str(tmp_path / "h.npz")],
                 ["train", "--preset", "linear-eval-cifar10-cpu", "--out", str(tmp_path / "lin"), *TINY[:5],
                  "batch_size=32", "precision=fp32", "figures=false", "epochs=1", f"init_checkpoint={bad}"]):
        assert main(argv) == 2, argv[0]
        err = capsys.readouterr().err
        assert "holds non-finite values (first: method.encoder.bn1.running_var)" in err, err


def test_resume_with_a_changed_defining_key_fails_and_a_safe_one_is_accepted(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--preset", "simclr-cifar10-cpu", "--out", str(out), *TINY, "epochs=2",
                 "--stop-at-step", "2"]) == 0
    assert main(["train", "--preset", "simclr-cifar10-cpu", "--out", str(out), *TINY, "epochs=2", "batch_size=16",
                 "--resume"]) == 2
    assert "batch_size: 32 in the run, 16 asked" in capsys.readouterr().err
    before = (out / "checkpoints" / "last.pt").read_bytes()
    assert load_checkpoint(out / "checkpoints" / "last.pt")["step"] == 2 and before  # untouched by the refusal
    assert main(["train", "--preset", "simclr-cifar10-cpu", "--out", str(out), *TINY, "epochs=2", "knn_every=1",
                 "--resume"]) == 0  # knn_every may change
    assert json.loads((out / "config.json").read_text())["knn_every"] == 1


def test_a_stale_temporary_checkpoint_is_removed_when_the_next_run_starts(tmp_path):
    out = tmp_path / "run"
    assert main(["train", "--preset", "simclr-cifar10-cpu", "--out", str(out), *TINY, "epochs=2",
                 "--stop-at-step", "1"]) == 0
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()  # a pid that no longer runs, as after a SIGKILL during a write
    stale = out / "checkpoints" / f".last.pt.tmp-{dead.pid}"
    stale.write_bytes(b"half a checkpoint")
    assert main(["train", "--preset", "simclr-cifar10-cpu", "--out", str(out), *TINY, "epochs=2", "--resume"]) == 0
    assert not stale.exists()


def test_a_torn_metrics_row_is_dropped_on_resume(tmp_path):
    out = tmp_path / "run"
    assert main(["train", "--preset", "simclr-cifar10-cpu", "--out", str(out), *TINY, "epochs=2",
                 "--stop-at-step", "3"]) == 0
    with open(out / "metrics.csv", "a") as f:
        f.write("4,1.33,0.2,0.1")  # a kill in the middle of an append: no newline, missing fields
    assert main(["train", "--preset", "simclr-cifar10-cpu", "--out", str(out), *TINY, "epochs=2", "--resume"]) == 0
    steps = [r["step"] for r in rows(out)]
    assert "4" not in steps and all(s.replace(".", "").isdigit() for s in steps)


def test_a_corrupt_image_saves_the_run_names_the_file_and_check_data_finds_it(tmp_path, capsys):
    root = tmp_path / "folder"
    rng = np.random.default_rng(0)
    for split, n in (("train", 12), ("val", 3)):
        for c, name in enumerate(("ant", "bee")):
            (root / split / name).mkdir(parents=True)
            for i in range(n):
                pixels = (rng.integers(0, 128, (36, 40, 3)) + 100 * c).astype(np.uint8)
                Image.fromarray(pixels).save(root / split / name / f"{name}_{i:03d}.png")
    broken = root / "train" / "bee" / "bee_007.png"
    broken.write_bytes(broken.read_bytes()[:60])  # truncated
    args = ["train", "--preset", "simclr-imagenet-r50", "--out", str(tmp_path / "run"), f"data_root={root}",
            "encoder=resnet10", "width=0.125", "image_size=32", "batch_size=8", "num_workers=0", "device=cpu",
            "precision=fp32", "figures=false", "knn_k=5", "epochs=3", "checkpoint_every=1000"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert str(broken) in err and "check-data" in err and "checkpoint" in err
    state = load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")  # saved before stopping
    assert state["step"] >= 0
    assert main(["check-data", "--dataset", "imagefolder", "--data-root", str(root), "--split", "train"]) == 2
    out = capsys.readouterr()
    assert str(broken) in out.out and "1 unreadable file" in out.err


@pytest.mark.distributed
def test_sigterm_to_torchrun_stops_every_rank_after_the_same_step_and_the_run_resumes(tmp_path):
    """What SLURM does at the time limit: SIGTERM to the launcher. torchrun forwards it to both ranks,
    which finish the step together (the stop flag is OR-ed over ranks), rank 0 saves, all exit."""
    out = tmp_path / "run"
    launch = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    train_args = ["-m", "contrastive_lab", "train", "--preset", "simclr-cifar10-cpu", "--out", str(out), *TINY,
                  "epochs=8", "checkpoint_every=1", "knn_every=0"]
    proc = subprocess.Popen(launch + train_args, env=env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_for(out / "checkpoints" / "last.pt", proc)
    proc.send_signal(signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=180)
    assert proc.returncode != 0, "an interrupted run must not exit 0"
    assert "SIGTERM: finishing this step, saving a checkpoint" in stdout, stderr[-3000:]
    state = load_checkpoint(out / "checkpoints" / "last.pt")
    assert 0 < state["step"] < 24 and not state["finished"]
    done = subprocess.run(launch + train_args + ["--resume"], env=env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert load_checkpoint(out / "checkpoints" / "last.pt")["step"] == 24
    steps = [r["step"] for r in rows(out) if r.get("loss")]
    assert steps == sorted(set(steps)), "metrics.csv repeats a step after the resume"
