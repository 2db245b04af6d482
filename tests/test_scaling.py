"""Scaling up: torchrun on ImageFolder data, gradient accumulation, per-rank sharding, linear evaluation
and fine-tuning runs, lr schedules, the SLURM templates and the cost estimator.

The distributed tests start real processes with ``python -m torch.distributed.run --nproc_per_node=2``
(gloo, CPU) on a tiny ImageFolder written with PIL, and compare them with one process on the full
batch. Two launches in all (the slow part): SimCLR through the real ``-m contrastive_lab`` entry
point, then this file run as a module on every rank (``python -m tests.test_scaling PLAN``), which
calls ``cli.main`` for each job of a plan in one process group and saves every rank's method state,
so the two ranks' queues and banks can be compared.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import signal
import string
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from contrastive_lab import engine
from contrastive_lab.checkpoints import checkpoint_config, load_checkpoint
from contrastive_lab.config import parse_milestones
from contrastive_lab.data import ImageFolderDataset, make_synthetic, read_subset_file, select_labelled
from contrastive_lab.engine import EpochBatchSampler, LoaderBatches, forward_backward, train
from contrastive_lab.engine.run import lr_schedule
from contrastive_lab.methods import Batch, Classifier, build_config_encoder, build_method
from contrastive_lab.optim import StepDecay
from contrastive_lab.presets import PRESETS, apply_overrides, get_preset

REPO = Path(__file__).resolve().parents[1]
CLASSES = ("ant", "bee")
N_TRAIN, N_VAL = 12, 3  # per class: 24 training images = 3 global batches of 8


def write_imagefolder(root: Path) -> Path:
    """root/{train,val}/<class>/<class>_<split>_<i>.png, random RGB images of a few non-square sizes."""
    rng = np.random.default_rng(0)
    for split, n in (("train", N_TRAIN), ("val", N_VAL)):
        for c, name in enumerate(CLASSES):
            folder = root / split / name
            folder.mkdir(parents=True)
            for i in range(n):
                h, w = 36 + 4 * (i % 3), 44 - 6 * (i % 2)
                pixels = rng.integers(0, 128, (h, w, 3)) + 100 * c  # the classes differ in brightness
                Image.fromarray(pixels.astype(np.uint8)).save(folder / f"{name}_{split}_{i:03d}.png")
    return root


def tiny(root: Path, **extra) -> list[str]:
    """key=value overrides that shrink an ImageNet preset to seconds on a CPU (MoCo adds queue_size=32,
    InstDisc num_negatives=8: those keys are their methods' own). (channels_last is off: PyTorch's CPU
    batch norm sums less precisely in that layout, which would blur 1-vs-2-process checks.)"""
    values = dict(data_root=root, encoder="resnet10", width=0.125, image_size=32, batch_size=8, num_workers=0,
                  device="cpu", precision="fp32", figures="false", knn_k=5, checkpoint_every=1000,
                  channels_last="false")
    values.update(extra)
    return [f"{k}={v}" for k, v in values.items()]


def torchrun(args: list[str], timeout: float = 300) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", *args]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    for var in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(var, None)
    out = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)
    assert out.returncode == 0, f"torchrun failed ({out.returncode}):\n{out.stdout[-3000:]}\n{out.stderr[-5000:]}"
    return out


def run_plan(tmp: Path, jobs: list[dict]) -> None:
    """Run ``jobs`` (``{"args": cli args, "dump": prefix or None}``) on 2 ranks in one launch."""
    plan = tmp / f"plan-{len(list(tmp.glob('plan-*.json')))}.json"
    plan.write_text(json.dumps(jobs))
    torchrun(["-m", "tests.test_scaling", str(plan)])


def weights(run: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint(run / "checkpoints" / "last.pt")["method"]


# 2 ranks vs 1 process is compared in float64 (precision=fp64). In float32 the two differ by
# summation order (global BN sums per rank, then over ranks) by ~1e-7 per step, and within a few
# steps one ReLU input near zero flips sign and moves the early layers by ~1e-4 to 1e-3: measured
# 3.4e-3 (relative to the tensor's largest entry) after 4 MoCo steps of the tiny model, while in
# float64 the worst tensor differed by 7.4e-14. The bound below sits 4 orders above the float64
# measurement and 6 below what a real fault (a missing gather, per-rank BN) produces.
FP64_RELATIVE_BOUND = 1e-9
# A tensor whose entries all cancel to ~0 (a BN running mean of centred activations: measured 6.9e-18)
# carries the rounding of the O(1) values it sums, ~1e-16, not 1e-9 of its own size: its scale is
# floored at 1e-6, so it may differ by 1e-15 (measured 1.7e-17 for SimSiam's predictor BN).
SCALE_FLOOR = 1e-6


def assert_states_match_in_fp64(a: dict, b: dict) -> None:
    """Every float tensor within FP64_RELATIVE_BOUND x its largest |entry|; the rest identical."""
    assert a.keys() == b.keys()
    for key in a:
        assert a[key].dtype == b[key].dtype, key
        if a[key].is_floating_point():
            assert a[key].dtype == torch.float64, f"{key}: compare runs trained with precision=fp64"
            diff = (a[key] - b[key]).abs().max().item()
            scale = a[key].abs().max().item()
            assert diff <= FP64_RELATIVE_BOUND * max(scale, SCALE_FLOOR), f"{key} differs by {diff:.2e} (scale {scale:.2e})"
        else:
            assert torch.equal(a[key], b[key]), key


# ----------------------------------------------------------------------------------------------
# Multi-process runs (module-scoped: each launch is shared by the tests that read it)
# ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    root = write_imagefolder(tmp_path_factory.mktemp("imagenet"))
    names = [f"{c}_train_{i:03d}.png" for c in CLASSES for i in range(4)]
    (root / "subset.txt").write_text("# 4 labelled images per class\n" + "\n".join(names) + "\n")
    return root


@pytest.fixture(scope="module")
def simclr_runs(folder, tmp_path_factory) -> dict[str, Path]:
    """simclr-imagenet-r50, one step in float64: 2 ranks through the real CLI entry point, and 1 process."""
    tmp = tmp_path_factory.mktemp("simclr")
    args = tiny(folder, max_steps=1, precision="fp64")
    torchrun(["-m", "contrastive_lab", "train", "--preset", "simclr-imagenet-r50", "--out", str(tmp / "ddp"), *args])
    train(apply_overrides(get_preset("simclr-imagenet-r50"), args), tmp / "single", verbose=False)
    return {"ddp": tmp / "ddp", "single": tmp / "single", "tmp": tmp}


@pytest.fixture(scope="module")
def preset_runs(folder, simclr_runs) -> dict[str, Path]:
    """Every other ImageNet preset for 2 steps on 2 ranks, in one launch. MoCo v2 stops at step 2 of 4
    and, as the last job, resumes from its checkpoint (new model, optimizer and data on every rank);
    it also runs 4 steps straight through, once in float32 and once in float64."""
    tmp = simclr_runs["tmp"]
    ckpt = simclr_runs["ddp"] / "checkpoints" / "last.pt"
    jobs, runs = [], {}
    for preset, extra in [
        ("moco-v2-imagenet-r50", ["--stop-at-step", "2", *tiny(folder, max_steps=4, queue_size=32)]),
        ("moco-v1-imagenet-r50", tiny(folder, max_steps=2, queue_size=32)),
        ("instdisc-imagenet-r50", tiny(folder, max_steps=2, num_negatives=8)),
        ("linear-eval-moco-imagenet", tiny(folder, max_steps=2, init_checkpoint=ckpt)),
        ("linear-eval-simclr-imagenet", tiny(folder, max_steps=2, init_checkpoint=ckpt)),
        ("finetune-simclr-imagenet-1pct", tiny(folder, max_steps=2, init_checkpoint=ckpt,
                                               label_subset_file=folder / "subset.txt")),
    ]:
        runs[preset] = tmp / preset
        jobs.append({"args": ["train", "--preset", preset, "--out", str(runs[preset]), *extra],
                     "dump": str(runs[preset] / "state")})
    for name, precision in (("moco-straight", "fp32"), ("moco-fp64", "fp64")):
        runs[name] = tmp / name
        jobs.append({"args": ["train", "--preset", "moco-v2-imagenet-r50", "--out", str(runs[name]),
                              *tiny(folder, max_steps=4, precision=precision, queue_size=32)],
                     "dump": str(runs[name] / "state")})
    moco = runs["moco-v2-imagenet-r50"]
    jobs.append({"args": ["train", "--preset", "moco-v2-imagenet-r50", "--out", str(moco), "--resume",
                          *tiny(folder, max_steps=4, queue_size=32)], "dump": str(moco / "resumed")})
    run_plan(tmp, jobs)
    return runs


def rank_states(prefix: str | Path) -> list[dict[str, torch.Tensor]]:
    return [torch.load(f"{prefix}.rank{r}.pt", weights_only=True) for r in range(2)]


@pytest.mark.distributed
def test_simclr_imagenet_preset_on_two_ranks_equals_one_process_on_the_full_batch(simclr_runs):
    """Global BN + NT-Xent with gather-with-gradient + per-image seeded views: the same step."""
    single, ddp = weights(simclr_runs["single"]), weights(simclr_runs["ddp"])
    cfg = checkpoint_config(load_checkpoint(simclr_runs["single"] / "checkpoints/last.pt"))
    torch.manual_seed(cfg.seed)
    before = build_method(cfg).state_dict()
    moved = [k for k in single if single[k].is_floating_point() and not torch.equal(single[k], before[k])]
    assert len(moved) > 10, "the step did not change the weights"
    assert_states_match_in_fp64(single, ddp)
    rows = [r for r in engine.read_metrics(simclr_runs["ddp"] / "metrics.csv") if "images_per_s" in r]
    assert [r["step"] for r in rows] == [1] and rows[0]["images_per_s"] > 0
    one = [r for r in engine.read_metrics(simclr_runs["single"] / "metrics.csv") if "images_per_s" in r]
    # the logged loss is the mean over ranks = the loss of the global batch, not rank 0's own loss
    assert rows[0]["loss"] == pytest.approx(one[0]["loss"], rel=1e-9)
    assert rows[0]["pos_cos"] == pytest.approx(one[0]["pos_cos"], rel=1e-9)
    header = (simclr_runs["ddp"] / "metrics.csv").read_text().splitlines()[0].split(",")
    assert "gpu_mem_gb" in header and "images_per_s" in header  # blank gpu_mem_gb on the CPU


@pytest.mark.distributed
def test_every_imagenet_preset_trains_on_two_ranks_with_identical_state_on_both(preset_runs):
    for preset, run in preset_runs.items():
        assert (run / "checkpoints" / "last.pt").is_file(), preset
        r0, r1 = rank_states(run / "state")
        for key in r0:  # DDP keeps weights equal; global BN, gathered queues and banks keep buffers equal
            if key == "nce.z":  # known: InstDisc's Z (Eq. 7) is estimated from each rank's local batch
                continue
            assert torch.equal(r0[key], r1[key]), f"{preset}: {key} differs between ranks"


@pytest.mark.distributed
def test_moco_queue_holds_the_gathered_global_batch_on_both_ranks(preset_runs):
    r0, _ = rank_states(preset_runs["moco-v2-imagenet-r50"] / "state")
    assert int(r0["queue.ptr"]) == 2 * 8  # 2 steps x the global batch of 8, not the per-rank 4
    bank0, _ = rank_states(preset_runs["instdisc-imagenet-r50"] / "state")
    assert bank0["bank.bank"].shape[0] == 2 * N_TRAIN  # one entry per training image


@pytest.mark.distributed
def test_moco_resumed_on_two_ranks_equals_two_ranks_straight_through_bit_for_bit(preset_runs):
    """Resume is exact on the same world size: 2 + resume + 2 steps == 4 steps, with torch.equal."""
    moco_resumed, straight = preset_runs["moco-v2-imagenet-r50"], preset_runs["moco-straight"]
    assert load_checkpoint(moco_resumed / "checkpoints/last.pt")["step"] == 4
    r0, r1 = rank_states(moco_resumed / "resumed")
    assert all(torch.equal(r0[k], r1[k]) for k in r0), "ranks disagree after resuming"
    a, b = weights(straight), weights(moco_resumed)
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), f"{key} differs between the resumed and the straight run"
    for s, r in zip(rank_states(straight / "state"), (r0, r1)):
        assert all(torch.equal(s[k], r[k]) for k in s)  # every rank's state, queue included
    assert int(r0["queue.ptr"]) == 4 * 8 % 32


@pytest.mark.distributed
def test_moco_on_two_ranks_equals_one_process_in_float64(folder, preset_runs, tmp_path):
    """4 MoCo v2 steps (shuffling BN, gathered queue, global BN) on 2 ranks == 1 process on the full batch."""
    cfg = apply_overrides(get_preset("moco-v2-imagenet-r50"), tiny(folder, max_steps=4, precision="fp64",
                                                                   queue_size=32))
    train(cfg, tmp_path / "single", verbose=False)
    single, ddp = weights(tmp_path / "single"), weights(preset_runs["moco-fp64"])
    torch.manual_seed(cfg.seed)
    before = build_method(cfg).state_dict()
    assert sum(not torch.equal(single[k].float(), before[k].float()) for k in single) > 10, "no step was taken"
    assert_states_match_in_fp64(single, ddp)


@pytest.mark.distributed
def test_linear_eval_keeps_the_encoder_and_finetuning_changes_it(simclr_runs, preset_runs):
    pre = weights(simclr_runs["ddp"])
    for preset, frozen in [("linear-eval-moco-imagenet", True), ("linear-eval-simclr-imagenet", True),
                           ("finetune-simclr-imagenet-1pct", False)]:
        state = weights(preset_runs[preset])
        # the pre-training ran in float64; these float32 runs hold its weights rounded to float32
        same = [torch.equal(state[k], pre[k].to(state[k].dtype)) for k in state if k.startswith("encoder.")
                and "running" not in k
                and "num_batches" not in k]
        assert all(same) if frozen else not all(same), preset
        result = json.loads((preset_runs[preset] / "results.json").read_text())
        assert 0.0 <= result["top1"] <= 1.0
        assert engine.read_metrics(preset_runs[preset] / "metrics.csv")[-1]["val_top1"] == result["top1"]
    text = (preset_runs["finetune-simclr-imagenet-1pct"] / "config.json").read_text()
    assert json.loads(text)["options"]["label_subset_file"].endswith("subset.txt")


def test_eval_verb_points_imagefolder_runs_to_the_linear_eval_presets(simclr_runs, capsys):
    from contrastive_lab.cli import main

    assert main(["eval", "--checkpoint", str(simclr_runs["single"] / "checkpoints/last.pt")]) == 2
    assert "train --preset linear-eval-moco-imagenet" in capsys.readouterr().err
    assert main(["train", "--preset", "simclr-imagenet-r50", "--out", str(simclr_runs["tmp"] / "x"),
                 "--stop-at-step", "-1"]) == 2
    assert "--stop-at-step must be >= 0, got -1" in capsys.readouterr().err


# ----------------------------------------------------------------------------------------------
# Sharding and views of ImageFolder data (one process)
# ----------------------------------------------------------------------------------------------


def test_epoch_batch_sampler_shards_cover_each_global_batch_once_for_any_world_size():
    n, batch = 21, 8  # drop_last: 2 global batches, 5 images unused
    single = list(EpochBatchSampler(n, batch, seed=3, rank=0, world=1).__iter__())
    for world in (2, 4):
        shards = [EpochBatchSampler(n, batch, seed=3, rank=r, world=world) for r in range(world)]
        for step, global_batch in enumerate(single):
            assert sum((list(s)[step] for s in shards), []) == global_batch
    sampler = EpochBatchSampler(n, batch, seed=3, rank=0, world=1)
    sampler.set_epoch(1, start=1)
    assert len(sampler) == 1 and list(sampler)[0][0][0] == 1  # keys carry the epoch
    seen = [i for b in single for _, i in b]
    assert len(seen) == len(set(seen)) == 16  # each image at most once per epoch, like DistributedSampler
    order = engine.epoch_order(n, 3, 0).tolist()
    assert seen == order[:16]


def _loader_views(folder: Path, world: int, rank: int, **changes) -> list[tuple]:
    cfg = get_preset("simclr-imagenet-r50").replace(image_size=32, batch_size=8, seed=1, **changes)
    recipes = [engine.view_recipe(cfg)] * 2
    batches = LoaderBatches(ImageFolderDataset(folder / "train"), recipes, cfg, rank, world, device="cpu",
                            with_labels=True)
    return [[(*b.views, b.labels, b.index) for b in batches.epoch(e)] for e in (0, 1)]


@pytest.mark.parametrize("gpu_views", [False, True])
def test_loader_views_do_not_depend_on_world_size_or_worker_count(folder, gpu_views):
    one = _loader_views(folder, 1, 0, gpu_views=gpu_views, num_workers=0)
    two = [_loader_views(folder, 2, r, gpu_views=gpu_views, num_workers=2 if r == 0 else 0) for r in range(2)]
    for epoch in (0, 1):
        for step, (v1, v2, labels, index) in enumerate(one[epoch]):
            assert v1.shape == (8, 3, 32, 32) and not torch.equal(v1, v2)
            parts = [two[r][epoch][step] for r in range(2)]
            for i, full in enumerate((v1, v2, labels, index)):
                torch.testing.assert_close(torch.cat([p[i] for p in parts]), full, rtol=0, atol=1e-6)
    assert not torch.equal(one[0][0][3], one[1][0][3]), "epoch 1 must reshuffle"


def test_loader_keeps_its_workers_between_epochs_and_leaves_the_global_rng_alone(folder):
    cfg = get_preset("simclr-imagenet-r50").replace(image_size=32, batch_size=8, num_workers=1)
    recipes = [engine.view_recipe(cfg)] * 2
    batches = LoaderBatches(ImageFolderDataset(folder / "train"), recipes, cfg, 0, 1, device="cpu")
    list(batches.epoch(0))
    loader = batches.loader
    assert loader.persistent_workers and not loader.pin_memory  # pinned memory only for CUDA
    list(batches.epoch(1))
    assert batches.loader is loader
    state = torch.get_rng_state()
    single = LoaderBatches(ImageFolderDataset(folder / "train"), recipes, cfg.replace(num_workers=0), 0, 1,
                           device="cpu")
    next(single.epoch(0))
    assert torch.equal(torch.get_rng_state(), state)


# ----------------------------------------------------------------------------------------------
# Gradient accumulation
# ----------------------------------------------------------------------------------------------


def _tiny_simclr(**changes):
    base = dict(dataset="synthetic", synthetic_size=32, image_size=16, encoder="resnet10", width=0.125,
                batch_size=16, epochs=1, max_steps=1, optimizer="sgd", lr=0.5, momentum=0.0, weight_decay=0.0,
                warmup_epochs=0.0, precision="fp32", channels_last=False, knn_k=5, figures=False)
    base.update(changes)
    return get_preset("simclr-cifar10-cpu").replace(**base)


def test_accumulated_step_equals_sgd_on_the_mean_of_micro_batch_gradients(tmp_path):
    """Reference: each micro-batch's gradient computed on its own, averaged, one plain SGD step.
    With accum_steps=1 that is the ordinary full-batch step; with 2 it is not (NT-Xent's negatives shrink)."""
    got = {}
    for accum in (1, 2):
        cfg = _tiny_simclr(accum_steps=accum)
        train(cfg, tmp_path / f"run{accum}", verbose=False)
        torch.manual_seed(cfg.seed)
        method = build_method(cfg)
        w0 = {k: v.clone() for k, v in method.state_dict().items()}
        batches = engine.TensorBatches(engine.load_split(cfg, "train"), [engine.view_recipe(cfg)] * 2, cfg,
                                       torch.device("cpu"), 0, 1)
        batch = next(batches.epoch(0))
        grads = []
        for part in batch.chunk(accum):
            method.zero_grad()
            method(part)[0].backward()
            grads.append({n: p.grad.clone() for n, p in method.named_parameters()})
        expected = {n: w0[n] - 0.5 * sum(g[n] for g in grads) / accum for n in grads[0]}
        got[accum] = weights(tmp_path / f"run{accum}")
        for name, value in expected.items():
            torch.testing.assert_close(got[accum][name], value, rtol=1e-5, atol=1e-6, msg=name)
        for name in set(w0) - set(expected):  # BN running statistics: one update per micro-batch, as the reference
            torch.testing.assert_close(got[accum][name], method.state_dict()[name], rtol=1e-5, atol=1e-6)
    assert not torch.allclose(got[1]["encoder.conv1.weight"], got[2]["encoder.conv1.weight"], atol=1e-6)


class _PerSample(torch.nn.Module):
    """A method with no batch coupling: a linear map and a per-sample squared error."""

    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(4, 2)
        self.no_sync_calls = 0

    def forward(self, batch):
        x1, x2 = batch.views
        loss = ((self.lin(x1) - x2) ** 2).sum(1).mean()
        return loss, {"loss": loss.detach()}

    def no_sync(self):
        self.no_sync_calls += 1
        return torch.autograd.graph.saved_tensors_hooks(lambda t: t, lambda t: t)  # any context manager


def test_forward_backward_without_batch_coupling_equals_the_full_batch_gradient():
    g = torch.Generator().manual_seed(0)
    x1, x2, t = torch.randn(12, 4, generator=g), torch.randn(12, 2, generator=g), torch.arange(12)
    model = _PerSample()
    model(Batch([x1, x2], t))[0].backward()
    full = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    loss, logs = forward_backward(model, Batch([x1, x2], t), 3, torch.autocast("cpu", enabled=False), lambda v: None)
    for p, f in zip(model.parameters(), full):
        torch.testing.assert_close(p.grad, f)
    assert model.no_sync_calls == 2  # gradient sync only with the last of the 3 micro-batches
    # the mean over micro-batches is accumulated in float64 (logs averaged over ranks stay exact)
    assert loss.dtype == torch.float64
    torch.testing.assert_close(loss, model(Batch([x1, x2], t))[0].detach().double())

    def refuse(loss):
        raise ValueError("stop before backward")

    model.zero_grad()
    with pytest.raises(ValueError, match="stop before backward"):
        forward_backward(model, Batch([x1, x2], t), 2, torch.autocast("cpu", enabled=False), refuse)
    assert all(p.grad is None for p in model.parameters())


def test_batch_that_does_not_split_into_micro_batches_is_refused(tmp_path):
    with pytest.raises(ValueError, match=r"batch_size=16 must split into 1 ranks x accum_steps=3"):
        train(_tiny_simclr(accum_steps=3), tmp_path / "run", verbose=False)
    with pytest.raises(ValueError, match="accum_steps must be > 0"):
        _tiny_simclr(accum_steps=0)


# ----------------------------------------------------------------------------------------------
# Schedules, presets, classifiers and label subsets
# ----------------------------------------------------------------------------------------------


def test_step_schedule_follows_mocos_linear_eval_rule():
    """MoCo main_lincls: lr = 30 x 0.1^(epoch >= 60) x 0.1^(epoch >= 80), set per epoch."""
    cfg = get_preset("linear-eval-moco-imagenet")
    assert (cfg.lr, cfg.epochs, cfg.weight_decay, cfg.lr_milestones) == (30.0, 100, 0.0, "60,80")
    steps_per_epoch = 3
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=cfg.lr)
    sched = lr_schedule(opt, cfg, total_steps=100 * steps_per_epoch, steps_per_epoch=steps_per_epoch)
    for step in range(100 * steps_per_epoch):
        epoch = step // steps_per_epoch
        expected = 30.0 * 0.1 ** (epoch >= 60) * 0.1 ** (epoch >= 80)
        assert opt.param_groups[0]["lr"] == pytest.approx(expected), step
        opt.step()
        sched.step()
    assert [StepDecay([4], warmup_steps=2)(s) for s in range(6)] == pytest.approx([0.5, 1, 1, 1, 0.1, 0.1])


def test_schedule_and_milestone_validation():
    assert parse_milestones("60, 80") == [60.0, 80.0] and parse_milestones("") == []
    for bad in ("80,60", "x", "0,10"):
        with pytest.raises(ValueError, match="lr_milestones"):
            parse_milestones(bad)
    with pytest.raises(ValueError, match="lr_schedule=step needs lr_milestones"):
        get_preset("simclr-cifar10-cpu").replace(lr_schedule="step")
    with pytest.raises(ValueError, match="lr_schedule must be one of cosine, step"):
        get_preset("simclr-cifar10-cpu").replace(lr_schedule="poly")


def test_imagenet_presets_carry_the_papers_hyperparameters():
    s = get_preset("simclr-imagenet-r50")  # SimCLR Sec. 2.3 / App. B.1
    assert (s.batch_size, s.optimizer, s.base_lr, s.lr_scaling, s.weight_decay, s.options.temperature) == (
        4096, "lars", 0.3, "linear", 1e-6, 0.1)
    assert (s.warmup_epochs, s.options.head, s.recipe, s.image_size) == (10.0, "simclr_v1", "simclr_imagenet", 224)
    assert engine.resolve_lr(s) == pytest.approx(4.8)
    m = get_preset("moco-v2-imagenet-r50")  # MoCo v2 Table 1
    o = m.options
    assert (m.batch_size, m.lr, o.queue_size, o.momentum_ema, o.temperature, m.epochs) == (
        256, 0.03, 65536, 0.999, 0.2, 200)
    lin = get_preset("linear-eval-simclr-imagenet")  # SimCLR App. B.6
    assert lin.nesterov and lin.epochs == 90 and engine.resolve_lr(lin) == pytest.approx(1.6)
    ft = get_preset("finetune-simclr-imagenet-1pct")  # SimCLR App. B.5
    assert (ft.method, ft.epochs, ft.weight_decay, engine.resolve_lr(ft)) == ("finetune", 60, 0.0, pytest.approx(0.8))
    assert get_preset("finetune-simclr-imagenet-10pct").epochs == 30
    assert {"simclr-imagenet-r50", "linear-eval-moco-imagenet"} <= set(PRESETS)


def test_classifier_freezes_the_encoder_and_its_batch_norm():
    from contrastive_lab.encoders import build_encoder

    encoder = build_encoder("resnet10", width=0.125, cifar_stem=True)
    clf = Classifier(encoder, num_classes=3, freeze=True).train()
    assert not encoder.training and clf.fc.training
    assert all(not p.requires_grad for p in encoder.parameters())
    x, y = torch.randn(4, 3, 16, 16), torch.tensor([0, 1, 2, 0])
    loss, logs = clf(Batch([x], torch.arange(4), y))
    torch.testing.assert_close(loss, torch.log(torch.tensor(3.0)))  # zero-initialised fc: uniform logits
    loss.backward()
    assert clf.fc.weight.grad is not None and encoder.conv1.weight.grad is None
    with pytest.raises(ValueError, match="needs the labels"):
        clf(Batch([x], torch.arange(4)))
    tuned = Classifier(build_encoder("resnet10", width=0.125), 3, freeze=False).train()
    assert tuned.encoder.training


def test_linear_run_reports_the_top1_of_its_checkpoint(tmp_path):
    cfg = _tiny_simclr(method="linear", init_checkpoint="random", max_steps=2, lr=0.1, label_fraction=0.5)
    result = train(cfg, tmp_path / "lin", verbose=False)
    clf = Classifier(build_config_encoder(cfg), 10, freeze=True)
    clf.load_state_dict(weights(tmp_path / "lin"))
    test = make_synthetic(n=32, image_size=16, seed=cfg.seed, split="test")
    with torch.no_grad():
        predicted = clf.eval().classify(engine.config_eval_transform(cfg)(test.images)).argmax(1)
    assert result["top1"] == pytest.approx(float((predicted == test.labels).float().mean()))
    with pytest.raises(ValueError, match="set init_checkpoint=RUN/checkpoints/last.pt"):
        train(cfg.replace(init_checkpoint=""), tmp_path / "x", verbose=False)
    with pytest.raises(ValueError, match=r"unknown config key\(s\) \['label_fraction'\] for method 'simclr'"):
        cfg.replace(method="simclr", label_fraction=0.5)  # labelled subsets are the classifiers' option


def test_subset_file_selects_images_by_file_name(folder, tmp_path):
    names = read_subset_file(folder / "subset.txt")
    assert len(names) == 8 and names[0] == "ant_train_000.png"
    ds = ImageFolderDataset(folder / "train")
    cfg = get_preset("finetune-simclr-imagenet-1pct").replace(label_subset_file=str(folder / "subset.txt"))
    select = lambda c: select_labelled(ds, fraction=c.options.label_fraction, seed=c.seed, data_root=c.data_root,
                                       subset_file=c.options.label_subset_file or None)
    subset = select(cfg)
    assert sorted(Path(p).name for p, _ in subset.samples) == sorted(names)
    assert subset.labels.tolist() == [0] * 4 + [1] * 4 and subset.classes == list(CLASSES)
    image, label = subset[5]
    assert label == 1 and image.dtype == torch.uint8
    # relative to the data root when not found from the working directory
    rel = select(cfg.replace(label_subset_file="subset.txt", data_root=str(folder)))
    assert len(rel) == 8
    bad = tmp_path / "bad.txt"
    bad.write_text("ant_train_000.png\nn01440764_10026.JPEG\n")
    with pytest.raises(ValueError, match=r"1 of the 2 names in .*bad.txt are not in .*n01440764_10026"):
        select(cfg.replace(label_subset_file=str(bad)))
    with pytest.raises(FileNotFoundError, match="label_subset_file 'missing.txt' not found"):
        select(cfg.replace(label_subset_file="missing.txt"))
    with pytest.raises(ValueError, match="not both"):
        cfg.replace(label_fraction=0.5)
    with pytest.raises(ValueError, match="needs dataset=imagefolder"):
        select_labelled(make_synthetic(n=20, image_size=8), subset_file=str(folder / "subset.txt"))


# ----------------------------------------------------------------------------------------------
# SLURM templates and the cost estimator
# ----------------------------------------------------------------------------------------------

SAMPLE = dict(JOB_NAME="simclr", NODES="4", GPUS_PER_NODE="8", CPUS_PER_TASK="64", TIME="24:00:00",
              PARTITION="gpu", PRESET="simclr-imagenet-r50", OUT="/scratch/runs/simclr r50",
              OVERRIDES="data_root=/data/imagenet epochs=1")
TEMPLATES = sorted((REPO / "scripts").glob("*.sbatch"))


def render(template: Path, values: dict[str, str]) -> str:
    """Fill the placeholders a template declares (like ``envsubst "$(sed -n 's/^# placeholders: //p' ...)"``)."""
    text = template.read_text()
    declared = re.search(r"^# placeholders: (.*)$", text, re.M).group(1).split()
    keys = [d[2:-1] for d in declared]
    missing = set(keys) - set(values)
    assert not missing, f"no sample value for {missing}"
    return string.Template(text).safe_substitute({k: values[k] for k in keys})


def test_there_are_single_and_multi_node_templates():
    assert {t.name for t in TEMPLATES} >= {"train_single_node.sbatch", "train_multi_node.sbatch"}


@pytest.mark.parametrize("template", TEMPLATES, ids=lambda p: p.name)
def test_sbatch_template_renders_to_a_script_that_calls_srun_torchrun(template, tmp_path):
    assert subprocess.run(["bash", "-n", str(template)]).returncode == 0
    values = {**SAMPLE, "REPO": str(tmp_path), "OUT": str(tmp_path / "runs" / "simclr r50")}
    script = tmp_path / "job.sbatch"
    script.write_text(render(template, values))
    assert subprocess.run(["bash", "-n", str(script)]).returncode == 0
    text = script.read_text()
    assert "#SBATCH --gpus-per-node=8" in text and "${GPUS_PER_NODE}" not in text
    # run it with stand-ins for srun and scontrol that record what they were asked to do
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "srun").write_text('#!/bin/bash\nprintf "%s\\n" "$@" > "$SRUN_LOG"\n')
    (bin_dir / "scontrol").write_text('#!/bin/bash\nprintf "gpu-node-7\\ngpu-node-8\\n"\n')
    for f in bin_dir.iterdir():
        f.chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "SRUN_LOG": str(tmp_path / "srun.log"),
           "SLURM_JOB_NODELIST": "gpu-node-[7-8]", "SLURM_JOB_ID": "4242", "SLURM_CPUS_PER_TASK": "64",
           "SLURM_NNODES": "4"}
    run = subprocess.run(["bash", str(script)], env=env, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    argv = (tmp_path / "srun.log").read_text().splitlines()
    assert argv[argv.index("-m") + 1] == "torch.distributed.run" and "--nproc_per_node=8" in argv
    i = argv.index("contrastive_lab")
    assert argv[i + 1 : i + 5] == ["train", "--preset", "simclr-imagenet-r50", "--out"]
    assert argv[i + 5] == values["OUT"]  # a path with a space stays one argument
    assert argv[-3:] == ["num_workers=7", "data_root=/data/imagenet", "epochs=1"]
    assert "--resume" not in argv
    if "multi" in template.name:
        assert "--nnodes=4" in argv and "--rdzv_backend=c10d" in argv
        assert f"--rdzv_endpoint=gpu-node-7:{20000 + 4242}" in argv
    else:
        assert "--standalone" in argv
    (tmp_path / "runs" / "simclr r50" / "checkpoints").mkdir(parents=True, exist_ok=True)
    (tmp_path / "runs" / "simclr r50" / "checkpoints" / "last.pt").write_bytes(b"")
    subprocess.run(["bash", str(script)], env=env, check=True)
    assert "--resume" in (tmp_path / "srun.log").read_text().splitlines()  # resubmitting resumes


@pytest.mark.parametrize("template", TEMPLATES, ids=lambda p: p.name)
@pytest.mark.parametrize("sig, requeued", [(signal.SIGUSR1, True), (signal.SIGTERM, False)])
def test_sbatch_template_forwards_the_time_limit_signal_and_requeues(template, sig, requeued, tmp_path):
    """SLURM's --signal=B:USR1@120 reaches the batch shell: it must pass SIGTERM on to srun (which
    forwards it to every rank), wait for the run to save, requeue the job (USR1 only), and exit with
    the run's status."""
    values = {**SAMPLE, "REPO": str(tmp_path), "OUT": str(tmp_path / "runs" / "r")}
    text = render(template, values)
    assert "#SBATCH --signal=B:USR1@120" in text and "#SBATCH --requeue" in text
    script = tmp_path / "job.sbatch"
    script.write_text(text)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    logs = {k: tmp_path / f"{k}.log" for k in ("srun", "signal", "scontrol", "ready")}
    (bin_dir / "srun").write_text(  # a run that saves and exits 143 on SIGTERM, as the engine does
        '#!/bin/bash\nprintf "%s\\n" "$@" > "$SRUN_LOG"\n'
        'trap \'echo TERM >> "$SIGNAL_LOG"; kill $sleeper; exit 143\' TERM\n'
        'touch "$READY"\nsleep 60 & sleeper=$!\nwait $sleeper\n')
    (bin_dir / "scontrol").write_text(
        '#!/bin/bash\nprintf "%s " "$@" >> "$SCONTROL_LOG"; echo >> "$SCONTROL_LOG"\n'
        'if [[ "$1" == show ]]; then printf "gpu-node-7\\n"; fi\n')
    for f in bin_dir.iterdir():
        f.chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "SRUN_LOG": str(logs["srun"]),
           "SIGNAL_LOG": str(logs["signal"]), "SCONTROL_LOG": str(logs["scontrol"]), "READY": str(logs["ready"]),
           "SLURM_JOB_NODELIST": "gpu-node-7", "SLURM_JOB_ID": "4242", "SLURM_CPUS_PER_TASK": "64",
           "SLURM_NNODES": "4"}
    proc = subprocess.Popen(["bash", str(script)], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 20
    while not logs["ready"].exists():
        assert time.monotonic() < deadline and proc.poll() is None, proc.communicate()
        time.sleep(0.05)
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=20)
    assert proc.returncode == 143, (out, err)  # the run's own status: it saved and stopped
    assert logs["signal"].read_text().split() == ["TERM"]  # srun got SIGTERM exactly once
    assert f"received SIG{sig.name[3:]}" in out
    requeue = logs["scontrol"].exists() and "requeue 4242" in logs["scontrol"].read_text()
    assert requeue == requeued, logs["scontrol"].read_text() if logs["scontrol"].exists() else ""


def _cost_module():
    spec = importlib.util.spec_from_file_location("estimate_cost", REPO / "scripts" / "estimate_cost.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_cost_estimate_matches_hand_arithmetic(tmp_path, capsys):
    cost = _cost_module()
    cfg = get_preset("simclr-imagenet-r50")
    res = cost.estimate(cfg, gpus=32, step_time_s=0.45, num_images=1_281_167, price_per_gpu_hour=2.0)
    steps = 100 * (1_281_167 // 4096)  # 312 steps per epoch
    assert res["steps"] == steps == 31_200 and res["per_gpu_batch"] == 128
    assert res["gpu_hours"] == pytest.approx(31_200 * 0.45 * 32 / 3600)  # 124.8 GPU-hours
    assert res["cost"] == pytest.approx(2.0 * res["gpu_hours"])
    assert cost.main(["--preset", "simclr-imagenet-r50", "--gpus", "32", "--step-time", "0.45"]) == 0
    assert "125 GPU-hours" in capsys.readouterr().out
    assert cost.default_num_images(get_preset("finetune-simclr-imagenet-10pct")) == 128_116
    metrics = tmp_path / "metrics.csv"
    metrics.write_text("step,images_per_s\n10,100.0\n20,8192.0\n")
    assert cost.step_time_from_metrics(metrics, 4096) == pytest.approx(0.5)
    assert cost.main(["--preset", "simclr-imagenet-r50", "--gpus", "3", "--step-time", "1"]) == 2
    assert "does not split evenly over 3 GPUs" in capsys.readouterr().err


def test_cost_estimate_can_measure_a_few_local_steps(capsys):
    cost = _cost_module()
    args = ["--preset", "simclr-cifar10-cpu", "--gpus", "2", "--measure-steps", "1", "--json", "dataset=synthetic",
            "synthetic_size=32", "image_size=16", "width=0.125", "batch_size=16", "precision=fp32", "knn_k=5"]
    assert cost.main(args) == 0
    res = json.loads(capsys.readouterr().out)
    epochs = get_preset("simclr-cifar10-cpu").epochs
    assert res["step_time_s"] > 0 and res["steps"] == epochs * (32 // 16) and res["per_gpu_batch"] == 8


# ----------------------------------------------------------------------------------------------
# The per-rank worker (python -m tests.test_scaling PLAN.json under torchrun)
# ----------------------------------------------------------------------------------------------


def _worker(plan_path: str) -> None:
    """Run each job's CLI args on this rank in one process group; save this rank's method state."""
    from contrastive_lab import cli, distributed
    from contrastive_lab.engine import run as run_module

    captured: dict[str, torch.nn.Module] = {}
    prepare = run_module.prepare_model

    def capture(method, cfg, device, world):
        captured["method"] = prepare(method, cfg, device, world)
        return captured["method"]

    run_module.prepare_model = capture
    cleanup = distributed.cleanup_distributed
    distributed.cleanup_distributed = lambda: None  # keep the group for the next job
    rank = int(os.environ["RANK"])
    for job in json.loads(Path(plan_path).read_text()):
        code = cli.main(job["args"])
        if code:
            raise SystemExit(f"rank {rank}: {job['args'][:3]} exited with {code}")
        if job.get("dump"):
            torch.save(captured["method"].state_dict(), f"{job['dump']}.rank{rank}.pt")
    cleanup()


if __name__ == "__main__":
    _worker(sys.argv[1])
