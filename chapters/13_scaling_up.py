# ---
# jupyter:
#   jupytext:
#     cell_metadata_filter: -all
#     formats: ipynb,py:percent
#     notebook_metadata_filter: kernelspec,jupytext
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 13 Scaling up: from a notebook cell to torchrun to sbatch
#
# Every chapter so far trained in one process on a laptop CPU. The papers did not: SimCLR's
# ImageNet runs use a batch of 4096 images on 32 to 128 TPU cores (Chen et al. 2020, Sec. 2.2),
# MoCo trains on 8 GPUs (He et al. 2019, Sec. 4), and a ResNet-50 at 224 px for 100 epochs is
# about $10^{18}$ floating-point operations. This chapter follows one training run from a notebook
# cell to `torchrun` on one machine and to a SLURM job on many, and shows what has to change on the
# way and what must not.
#
# What must **not** change is the mathematics. Under data parallelism $W$ processes ("ranks") each
# hold a copy of the model and a slice of the global batch of $B$ images. For a contrastive loss
# that is harder than it sounds, because the loss of one image depends on all the others: its
# negatives are the rest of the batch (chapter 04), and batch norm couples the images through
# their statistics. Three things make $W$ ranks compute *exactly* what one process would:
#
# 1. the embeddings are all-gathered **with gradient**, so every anchor sees the $2B - 2$ negatives
#    of the global batch and every rank's embeddings receive the gradient of every rank's loss;
# 2. batch norm uses **global** statistics over the $B$ images (SimCLR Sec. 2.2, "Global BN");
# 3. the data order and the views depend on the global batch, not on $W$.
#
# The engine does all three (`engine.train`, `distributed.all_gather_with_grad`,
# `distributed.GlobalBatchNorm` / `SyncBatchNorm`). We check it with two real processes on this
# CPU, break it on purpose the two ways public re-implementations have broken it, then look at the
# big-batch optimiser (LARS), gradient accumulation, the ImageNet data path, the SLURM templates and
# the bill.

# %%
import importlib.util
import os
import statistics
import string
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import torch

import contrastive_lab
from contrastive_lab import engine
from contrastive_lab.checkpoints import load_checkpoint
from contrastive_lab.data import load_book_data
from contrastive_lab.encoders import build_encoder, forward_flops
from contrastive_lab.engine import EpochBatchSampler, forward_backward
from contrastive_lab.losses import nt_xent
from contrastive_lab.methods import Batch, build_method
from contrastive_lab.optim import LARS, scale_lr
from contrastive_lab.presets import get_preset
from contrastive_lab.runtime import pick, smoke_mode
from contrastive_lab.views import BatchedViews

chapter_start = time.perf_counter()
REPO = Path(contrastive_lab.__file__).resolve().parents[1]
WORK = Path(tempfile.mkdtemp(prefix="ch13-"))
print("smoke mode:", smoke_mode(), "| torch threads in this process:", torch.get_num_threads())
train_set = load_book_data("train")
DATA = train_set.name  # numbers measured on this data are labelled with its name (cifar10-mini here)
print(train_set)


def torchrun(*args, nproc: int = 2) -> tuple[str, float]:
    """``python -m torch.distributed.run --standalone --nproc_per_node=nproc ARGS``; (stdout, seconds)."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # one thread per process: 2 processes on 2 cores
    start = time.perf_counter()
    out = subprocess.run([*cmd, *map(str, args)], cwd=REPO, env=env, capture_output=True, text=True)
    if out.returncode:
        raise RuntimeError(f"torchrun failed:\n{out.stdout[-2000:]}\n{out.stderr[-4000:]}")
    return out.stdout, time.perf_counter() - start


# %% [markdown]
# ## One run, three launchers
#
# The same training runs from three places. In a cell, `engine.train(cfg, out_dir)`. From a shell,
# `python -m contrastive_lab train --preset NAME --out DIR key=value ...`. On $W$ processes,
# `torchrun` (installed with PyTorch as `python -m torch.distributed.run`) starts $W$ copies of that
# command and gives each the environment variables `RANK`, `LOCAL_RANK`, `WORLD_SIZE`,
# `MASTER_ADDR` and `MASTER_PORT`; `distributed.init_distributed` reads them and joins the process
# group. From there the engine
#
# * gives rank $r$ rows $[rB/W, (r+1)B/W)$ of every global batch (`batch_size` is always the
#   **global** batch, so the learning rate, computed from it, does not depend on $W$);
# * converts batch norm to global batch norm and wraps the method in `DistributedDataParallel`,
#   which averages the parameter gradients over the ranks;
# * lets rank 0 alone write `metrics.csv` and `checkpoints/last.pt`, and has every rank resume from
#   that file.
#
# We take one training step of the CPU SimCLR preset twice: in this process on the full batch, and
# with `torchrun --nproc_per_node=2` (2 gloo processes, one core each), and compare the weights.

# %%
overrides = {
    "dataset": "cifar10" if DATA.startswith("cifar10") else "synthetic",
    "subset": pick(64, 1024), "width": pick(0.125, 0.25), "batch_size": pick(32, 256),
    "epochs": 1, "max_steps": 1, "warmup_epochs": 0.0, "precision": "fp32", "channels_last": False,
    "knn_k": 20, "knn_max_train": 1000, "figures": False,
}
cfg = get_preset("simclr-cifar10-cpu").replace(**overrides)
single_dir, ddp_dir = WORK / "one-process", WORK / "two-processes"

start = time.perf_counter()
single = engine.train(cfg, single_dir, verbose=False)
single_s = time.perf_counter() - start
stdout, ddp_s = torchrun("-m", "contrastive_lab", "train", "--preset", "simclr-cifar10-cpu", "--out", ddp_dir,
                         *[f"{k}={v}" for k, v in overrides.items()])
print("rank 0 of the torchrun job printed:")
print(textwrap.indent(stdout.strip(), "    "))
print(f"one process: {single['step']} steps in {single_s:.0f} s; two processes: {ddp_s:.0f} s "
      "including start-up (each process imports torch)")

# %% [markdown]
# If the three conditions hold, the two runs take the same step up to floating-point rounding: the
# sums are split differently over processes and threads, and global BN computes its statistics with
# other arithmetic than `nn.BatchNorm2d`. At initialisation SimCLR's gradient is a small difference of
# large terms (the loss sits near $\log(2N-1)$), which magnifies float32 rounding of about $10^{-7}$
# into relative differences of roughly $10^{-4}$ to $10^{-3}$ in the update; the bugs of the next
# section give differences of order one. A ReLU whose input lies within rounding of zero can also
# land on different sides of its kink in the two runs; then every layer below it gets a gradient
# that differs by ~$10^{-3}$ while the layers above still agree to ~$10^{-6}$ (we met exactly this in
# one smoke-mode run: a single tensor's update differed by 2 %). So the check compares the whole
# update, $\lVert w_1 - w_2 \rVert / \lVert w_1 - w_0 \rVert$ over all parameters, with $10^{-2}$, and
# the figure shows every tensor. (We also switch `channels_last` off here: PyTorch's CPU batch norm
# accumulates less precisely in that memory layout, which would blur the comparison.) The figure
# compares, for every parameter tensor, the difference between the runs with the change the step made.

# %%
w_one = load_checkpoint(single_dir / "checkpoints/last.pt")["method"]
w_two = load_checkpoint(ddp_dir / "checkpoints/last.pt")["method"]
torch.manual_seed(cfg.seed)
w_init = build_method(cfg).state_dict()
names = [k for k in w_one if w_one[k].is_floating_point() and "running" not in k]
diff = np.array([(w_one[k] - w_two[k]).abs().max().item() for k in names])
moved = np.array([(w_one[k] - w_init[k]).abs().max().item() for k in names])
relative = diff / np.maximum(moved, 1e-12)
whole = (sum(((w_one[k] - w_two[k]) ** 2).sum() for k in names).sqrt()
         / sum(((w_one[k] - w_init[k]) ** 2).sum() for k in names).sqrt()).item()
assert whole < 1e-2, f"2 processes differ from 1 process by {whole:.1e} of the update (norm over all parameters)"
print(f"{len(names)} parameter tensors: 2 processes match 1 process; |w_1 - w_2| / |w_1 - w_0| = {whole:.1e} over "
      f"all parameters; largest difference {diff.max():.1e} while the step moved the weights by up to "
      f"{moved.max():.1e}; per tensor, the difference is at most {relative.max():.1e} of the change")

fig, ax = plt.subplots(figsize=(6, 3.2))
ax.semilogy(moved, "o", ms=3, label="change made by the step, max |w_1 - w_0|")
ax.semilogy(np.maximum(diff, 1e-12), "x", ms=3, label="1 process vs 2 processes, max |difference|")
ax.set_xlabel("parameter tensor (encoder, then head)")
ax.set_ylabel("absolute value")
ax.set_title(f"one SimCLR step on {DATA}, batch {cfg.batch_size}: 1 vs 2 processes", fontsize=9)
ax.legend(fontsize=7)
fig.tight_layout()

rows = {name: [r for r in engine.read_metrics(d / "metrics.csv") if "images_per_s" in r][-1]
        for name, d in (("1 process", single_dir), ("2 processes", ddp_dir))}
for name, row in rows.items():
    print(f"{name}: {row['images_per_s']:.0f} images/s on this CPU ({DATA}, {cfg.encoder} x {cfg.width}, one step "
          f"including one-off costs), logged loss {row['loss']:.4f}")

# %% [markdown]
# On this CPU the two processes share the same two cores the single process used, and a one-step
# run is dominated by one-off costs, so the rates above say little: the point of this run is
# correctness. On GPUs every rank brings its own device and the rate grows nearly linearly with $W$
# until communication dominates. `metrics.csv` logs `images_per_s` (and, on CUDA, the peak memory
# `gpu_mem_gb` from `torch.cuda.max_memory_allocated`) to measure exactly that. Under DDP the logged
# loss is the mean of the ranks' losses, i.e. the loss of the global batch, which is why the two
# runs log the same value.
#
# ## Why the negatives must be gathered with their gradient
#
# Rank $r$ holds the embeddings $z^{(r)}$ of its $n = B/W$ images (two views each) and computes
# NT-Xent for its own $2n$ anchors against all $2B$ candidates $Z = [z^{(0)}; \dots; z^{(W-1)}]$
# gathered from every rank. Its loss $L_r$ is the mean over its anchors, so the mean over ranks,
# $L = \frac1W \sum_r L_r$, is exactly the single-process loss over the global batch. The gradient
# is subtle. $z^{(r)}$ appears in *every* rank's loss, as candidates, so
#
# $$\frac{\partial}{\partial z^{(r)}} \sum_s L_s
# = \underbrace{\frac{\partial L_r}{\partial z^{(r)}}}_{\text{as anchors, on rank } r}
# + \underbrace{\sum_{s} \frac{\partial L_s}{\partial Z}\Big|_{\text{rows of } r}}_{\text{as candidates, on every rank}}
# = W \frac{\partial L}{\partial z^{(r)}}.$$
#
# `all_gather_with_grad` computes the second term: its backward pass all-reduces (sums) the
# gradient that arrives at $Z$ and hands rank $r$ its rows. DDP then *averages* the parameter
# gradients over ranks, and the factor $W$ cancels: the result is $\partial L / \partial\theta$ of the
# single process (proof in the function's docstring).
#
# Two mistakes are easy to make, and both have shipped in public SimCLR ports:
#
# * **plain `all_gather`** (`torch.distributed.all_gather` has no backward): the candidates carry no
#   gradient, only the anchors do. The loss value is *identical*, so nothing looks wrong, but the
#   second term above is lost and the update is wrong;
# * **no rank offset in the labels**: the positive of local anchor $i$ sits at global row
#   $rn + i$ of $Z$, not at row $i$. With the offset missing, every rank $r > 0$ trains its anchors
#   to match *rank 0's* images, and masks the wrong self-similarity.
#
# The script below runs on 2 ranks (gloo). It computes NT-Xent by hand in the three ways, checks
# the correct one against `losses.nt_xent(..., gather=True)`, and saves each rank's loss and the
# gradient of a shared linear encoder $W_e$ ($z = x W_e$), which is what DDP would average.

# %%
GATHER_DEMO = '''
"""Chapter 13: NT-Xent on 2 ranks, correct and with the two classic DDP bugs (run by torchrun)."""
import sys

import torch
import torch.nn.functional as F

from contrastive_lab import distributed as dist_utils
from contrastive_lab.losses import nt_xent

TAU, N_LOCAL = 0.5, 4


def nt_xent_by_hand(z1, z2, gather, offset):
    """This rank's 2n anchors against the 2Wn gathered candidates [Z1; Z2]."""
    n, rank, world = z1.shape[0], dist_utils.get_rank(), dist_utils.get_world_size()
    z1, z2 = F.normalize(z1, dim=1), F.normalize(z2, dim=1)
    if gather == "with grad":
        Z1, Z2 = dist_utils.all_gather_with_grad(z1), dist_utils.all_gather_with_grad(z2)
    else:  # the bug: torch.distributed.all_gather returns tensors without autograd history
        Z1, Z2 = dist_utils.all_gather_no_grad(z1), dist_utils.all_gather_no_grad(z2)
    anchors, candidates = torch.cat([z1, z2]), torch.cat([Z1, Z2])
    logits = anchors @ candidates.T / TAU  # (2n, 2Wn)
    first = rank * n if offset else 0  # the bug: forgetting that this rank's rows start at rank * n
    i = torch.arange(n)
    self_col = torch.cat([first + i, world * n + first + i])
    pos_col = torch.cat([world * n + first + i, first + i])
    logits = logits.masked_fill(F.one_hot(self_col, 2 * world * n).bool(), float("-inf"))
    return F.cross_entropy(logits, pos_col)


rank, _, world = dist_utils.init_distributed("gloo")
g = torch.Generator().manual_seed(0)
x1, x2 = torch.randn(world * N_LOCAL, 6, generator=g, dtype=torch.float64), torch.randn(
    world * N_LOCAL, 6, generator=g, dtype=torch.float64)
w_enc = torch.randn(6, 5, generator=g, dtype=torch.float64)
rows = slice(rank * N_LOCAL, (rank + 1) * N_LOCAL)
results = {}
for name, gather, offset in [("library", None, None), ("correct", "with grad", True),
                             ("plain all_gather", "plain", True), ("no rank offset", "with grad", False)]:
    w = w_enc.clone().requires_grad_()
    z1, z2 = x1[rows] @ w, x2[rows] @ w
    loss = nt_xent(z1, z2, TAU, gather=True) if gather is None else nt_xent_by_hand(z1, z2, gather, offset)
    loss.backward()
    results[name] = {"loss": loss.detach(), "grad": w.grad}
torch.testing.assert_close(results["correct"]["loss"], results["library"]["loss"])
torch.testing.assert_close(results["correct"]["grad"], results["library"]["grad"])
torch.save(results, f"{sys.argv[1]}/rank{rank}.pt")
dist_utils.cleanup_distributed()
'''
script = WORK / "gather_demo.py"
script.write_text(GATHER_DEMO)
_, seconds = torchrun(script, WORK)
ranks = [torch.load(WORK / f"rank{r}.pt") for r in range(2)]
print(f"2 gloo processes finished in {seconds:.0f} s; on both ranks the by-hand 'correct' loss and gradient "
      "match losses.nt_xent(gather=True)")

# %% [markdown]
# The reference is one process on the whole batch. DDP's result is the *mean* over ranks of the losses
# and of the encoder gradients:

# %%
g = torch.Generator().manual_seed(0)
x1, x2 = (torch.randn(8, 6, generator=g, dtype=torch.float64) for _ in range(2))
w_ref = torch.randn(6, 5, generator=g, dtype=torch.float64).requires_grad_()
loss_ref = nt_xent(x1 @ w_ref, x2 @ w_ref, 0.5)
loss_ref.backward()

errors = {}
print(f"{'':18s} {'mean loss':>10s} {'rank 0 loss':>12s} {'rank 1 loss':>12s} {'gradient rel. error':>20s}")
print(f"{'one process':18s} {loss_ref.item():10.6f}")
for name in ["correct", "plain all_gather", "no rank offset"]:
    losses_r = [r[name]["loss"].item() for r in ranks]
    grad = torch.stack([r[name]["grad"] for r in ranks]).mean(0)  # what DDP applies
    errors[name] = ((grad - w_ref.grad).norm() / w_ref.grad.norm()).item()
    print(f"{name:18s} {np.mean(losses_r):10.6f} {losses_r[0]:12.6f} {losses_r[1]:12.6f} {errors[name]:20.2e}")
assert errors["correct"] < 1e-12 and errors["plain all_gather"] > 1e-3 and errors["no rank offset"] > 1e-3

fig, ax = plt.subplots(figsize=(5, 3.2))
ax.bar(list(errors), [max(e, 1e-17) for e in errors.values()], color=["tab:green", "tab:red", "tab:red"])
ax.set_yscale("log")
ax.set_ylabel("|g_DDP - g_1 process| / |g_1 process|")
ax.set_title("encoder gradient on 2 ranks vs one process", fontsize=9)
fig.tight_layout()

# %% [markdown]
# The plain `all_gather` row is the dangerous one: its loss is *exactly* right, so a loss curve or a
# unit test on the forward pass will not catch it; only a gradient comparison like this one does
# (`tests/test_distributed.py` runs it on every commit). The missing offset is visible in the loss on
# rank 1, whose "positives" are other images. Both bugs still train something, which is why they
# survive: the features are just worse, and nobody compares against a single process.
#
# ## Global batch norm
#
# With per-device BN, a device normalises its $2n$ views with its own mean and variance. The two
# views of an image always sit on the same device, so the statistics carry a little information
# shared by exactly the positive pairs, and the network can use it to find its partner instead of
# learning features (SimCLR Sec. 2.2; MoCo solves the same leak by shuffling the key batch across
# devices, Sec. 3.3). Global BN computes, over all ranks,
#
# $$\mu = \frac1{B'}\sum_r \sum_i x_{ri}, \qquad \sigma^2 = \frac1{B'}\sum_r\sum_i (x_{ri}-\mu)^2,$$
#
# with two all-reduces per layer, which also carry the gradient back. On GPUs the engine uses
# `nn.SyncBatchNorm`, on CPU processes `distributed.GlobalBatchNorm`; the two-process run above
# used the latter in every BN layer of the ResNet and the head.
#
# ## Large batches: LARS and the learning-rate rule
#
# Goyal et al. (2017, "Accurate, Large Minibatch SGD", Sec. 2.1) give the **linear scaling rule**:
# multiply the batch by $k$, multiply the learning rate by $k$ (with a warmup). SimCLR uses it,
# $\eta = 0.3 \times B/256$, i.e. $\eta = 4.8$ at $B = 4096$ (Sec. 2.3), and notes that a
# **square-root rule** $\eta = 0.075\sqrt{B}$ works better for small batches and short runs
# (App. B.1). `optim.scale_lr` implements both; because the engine applies it to the *global* batch,
# moving a run from 8 to 32 GPUs at the same `batch_size` changes nothing.

# %%
batches = np.array([256, 512, 1024, 2048, 4096, 8192])
lin = [scale_lr(0.3, int(b), "linear") for b in batches]
sqr = [scale_lr(0.075, int(b), "sqrt") for b in batches]
for b, a, s in zip(batches, lin, sqr):
    print(f"batch {b:5d}: linear 0.3 x B/256 = {a:5.2f}   sqrt 0.075 x sqrt(B) = {s:5.2f}")
fig, ax = plt.subplots(figsize=(5, 3.2))
ax.loglog(batches, lin, "o-", label="linear: 0.3 B/256 (Sec. 2.3)")
ax.loglog(batches, sqr, "s-", label="square root: 0.075 sqrt(B) (App. B.1)")
ax.set_xlabel("global batch B")
ax.set_ylabel("learning rate")
ax.legend(fontsize=7)
ax.set_title("SimCLR's two learning-rate rules", fontsize=9)
fig.tight_layout()

# %% [markdown]
# A learning rate of 4.8 makes plain SGD unstable: the size of a step relative to the weights,
# $\eta \lVert\nabla w\rVert / \lVert w\rVert$, differs widely between layers (the printout below gives the
# range), so one global $\eta$ is too large for some layers while others barely move. LARS (You, Gitman & Ginsburg 2017)
# rescales each layer's step by the trust ratio $\lambda \lVert w\rVert / \lVert \nabla w\rVert$
# ($\lambda = 10^{-3}$), which makes the relative step of every layer $\eta\lambda$, whatever its
# gradient scale; SimCLR uses it "to stabilize the training" at every batch size (Sec. 2.2). Here
# are the ratios for one SimCLR step of a ResNet-18 at initialisation:

# %%
torch.manual_seed(0)
cfg18 = get_preset("simclr-cifar10-cpu").replace(encoder="resnet18", width=1.0, batch_size=pick(16, 64))
method18 = build_method(cfg18)
x = train_set.images[: cfg18.batch_size]
views = BatchedViews(engine.view_recipe(cfg18))
gen = torch.Generator().manual_seed(0)
loss, _ = method18(Batch([views(x, gen), views(x, gen)], torch.arange(len(x))))
loss.backward()
layers = [(n, p) for n, p in method18.named_parameters() if p.ndim > 1]  # LARS adapts these (not BN/bias)
rel = np.array([(p.grad.norm() / p.norm()).item() for _, p in layers])
trust = np.array([LARS.trust_ratio(p, p.grad, 1e-3, 1e-8).item() for _, p in layers])
print(f"{len(layers)} weight tensors: |grad|/|w| ranges from {rel.min():.1e} to {rel.max():.1e} "
      f"(a factor {rel.max() / rel.min():.0f}); LARS's trust ratios span the same factor, inverted")
fig, ax = plt.subplots(figsize=(6, 3.2))
ax.semilogy(rel, "o-", ms=3, label="|grad w| / |w|  (relative step of SGD per unit lr)")
ax.semilogy(rel * trust, "s-", ms=3, label="with LARS's trust ratio: = 0.001 for every layer")
ax.set_xlabel("layer (input to output, then head)")
ax.legend(fontsize=7)
ax.set_title(f"ResNet-18 SimCLR at initialisation ({DATA}, batch {cfg18.batch_size})", fontsize=9)
fig.tight_layout()

# %% [markdown]
# ## When the global batch does not fit: gradient accumulation
#
# On 8 GPUs of 80 GB a ResNet-50 at 224 px fits roughly 256 images (512 views) per GPU in bf16, so
# $B = 4096$ needs 16 GPUs, or accumulation: `accum_steps=A` cuts each rank's batch into $A$
# micro-batches, back-propagates $L_a / A$ for each and steps once, so the gradient is
# $\frac1A\sum_a \nabla L_a$ (`engine.forward_backward`; under DDP only the last micro-batch
# all-reduces). For a loss that is a mean over independent samples this *is* the full-batch gradient.
# **NT-Xent is not such a loss**: each micro-batch only contrasts within itself, so an anchor sees
# $2B/A - 2$ negatives instead of $2B - 2$, and BN normalises over micro-batches. Accumulation saves
# memory; it does not buy SimCLR's large-batch effect (its Fig. 9 is about the number of negatives).

# %%
torch.manual_seed(0)
small = get_preset("simclr-cifar10-cpu").replace(width=0.125, batch_size=32)
method = build_method(small)
x = train_set.images[:32]
v1, v2 = views(x, gen), views(x, gen)
index = torch.arange(32)
off = torch.autocast("cpu", enabled=False)


def gradient(accum: int) -> torch.Tensor:
    method.zero_grad()
    forward_backward(method, Batch([v1, v2], index), accum, off, lambda loss: None)
    return torch.cat([p.grad.flatten() for p in method.encoder.parameters()])


full = gradient(1)
for accum in (2, 4):
    g_acc = gradient(accum)
    cos = torch.nn.functional.cosine_similarity(full, g_acc, dim=0).item()
    print(f"accum_steps={accum}: {2 * 32 // accum - 2:2d} negatives per anchor instead of {2 * 32 - 2}; "
          f"cosine(grad, full-batch grad) = {cos:.4f}")

# %% [markdown]
# Close, not equal: the direction changes because the task changes. (`tests/test_scaling.py` checks
# both halves of the claim: with a per-sample loss the accumulated gradient equals the full-batch one,
# and with `accum_steps=1` the engine's step is an ordinary SGD step.) MoCo is different again: its
# negatives come from the queue, so accumulation barely changes its loss, but the momentum update and
# the enqueue then run once per micro-batch.
#
# ## ImageNet on many ranks: the data path
#
# ImageNet does not fit in memory, so the ImageNet presets stream an ImageFolder through DataLoader
# workers (`engine.LoaderBatches`): persistent workers (started once, not every epoch), pinned memory
# on CUDA, and two ways to make the views. By default each worker runs the per-image torchvision
# pipeline. With `gpu_views=true` the workers only decode and resize to a fixed square of uint8
# (`decode_size`, 256 for 224-px views) and the views are drawn in batches on the GPU by
# `BatchedViews` (chapter 01), which moves the colour jitter and blur off the CPU cores.
#
# Which images does each rank get? `torch.utils.data.DistributedSampler` draws a permutation per
# epoch from `seed + epoch` (after `set_epoch`) and gives rank $r$ every $W$-th index. The engine
# draws the same kind of per-epoch permutation but cuts it into *global* batches first and gives
# rank $r$ its slice of each. Both cover every image at most once per epoch with disjoint shards; the
# engine's cut keeps the global batch independent of $W$ and allows an epoch to start mid-way (exact
# resume), and every image's views are seeded by (seed, epoch, index), so no worker or rank count
# changes them:

# %%
for world in (1, 2, 4):
    shards = [list(EpochBatchSampler(24, 8, seed=0, rank=r, world=world)) for r in range(world)]
    first = [[i for _, i in shard[0]] for shard in shards]
    print(f"W={world}: global batch 0 = {sum(first, [])}   per rank: {first}")

# %% [markdown]
# ## From torchrun to SLURM
#
# On a cluster, SLURM allocates the nodes and `srun` starts one task per node; each task runs one
# `torchrun`, which starts one process per GPU. The torchruns find each other through a **c10d
# rendezvous** on the first node of the allocation (`scontrol show hostnames $SLURM_JOB_NODELIST`
# lists the nodes), on a port derived from the job id. `scripts/train_single_node.sbatch` and
# `scripts/train_multi_node.sbatch` are templates whose placeholders (`${NODES}`, `${PRESET}`, ...)
# you fill in with `envsubst`; a resubmitted job finds `OUT/checkpoints/last.pt` and adds
# `--resume`. Rendering the multi-node template with sample values:

# %%
template = REPO / "scripts" / "train_multi_node.sbatch"
text = template.read_text()
placeholders = next(line for line in text.splitlines() if line.startswith("# placeholders:")).split(":", 1)[1]
sample = dict(JOB_NAME="simclr-r50", NODES="4", GPUS_PER_NODE="8", CPUS_PER_TASK="64", TIME="24:00:00",
              PARTITION="gpu", REPO="/home/me/contrastive-lab", PRESET="simclr-imagenet-r50",
              OUT="/scratch/me/runs/simclr-r50", OVERRIDES="data_root=/datasets/imagenet")
rendered = string.Template(text).safe_substitute({k[2:-1]: sample[k[2:-1]] for k in placeholders.split()})
job = WORK / "job.sbatch"
job.write_text(rendered)
check = subprocess.run(["bash", "-n", str(job)], capture_output=True, text=True)
print("bash -n:", "ok" if check.returncode == 0 else check.stderr)
print("\n".join(line for line in rendered.splitlines() if line.startswith("#SBATCH")))
print("...")
print(rendered[rendered.index("srun --"):])

# %% [markdown]
# With 4 nodes of 8 GPUs the preset's global batch of 4096 becomes 128 images per GPU, the learning
# rate stays $0.3 \times 4096/256 = 4.8$, rank 0 (on the first node) writes the logs, and every one
# of the 32 processes reads the same checkpoint when the job is resubmitted. The folders must live on
# a filesystem that all nodes see.
#
# **Time limits and preemption.** SLURM kills a job at its time limit and sends SIGTERM to a
# preempted one. The templates ask for SIGUSR1 120 s before the limit (`--signal=B:USR1@120`,
# printed above); the script's trap passes it on as SIGTERM to `srun`, which forwards it to every
# `torchrun` and every rank. The engine treats SIGINT, SIGTERM and SIGUSR1 alike
# (`engine.StopSignals`): every rank finishes its step, rank 0 writes `checkpoints/last.pt`, and the
# CLI exits with 143 (128 + 15, SIGTERM's number), so a scheduler or script can tell an interrupted
# run from a finished one (exit 0). After SIGUSR1 the script requeues the job (`--requeue`; where the
# cluster does not allow it, resubmit the job file), and the new job finds `last.pt` and adds
# `--resume`.
#
# ## What it costs
#
# The arithmetic is short: $\text{steps} = \text{epochs} \times \lfloor N/B \rfloor$, wall time
# $= \text{steps} \times t_\text{step}$, GPU-hours $= $ wall time $\times$ GPUs.
# `scripts/estimate_cost.py` does it for a preset from a step time you measured (`--step-time`, or a
# run's `metrics.csv` with `--from-metrics`), or measures a few steps itself at the per-GPU batch.
# The GPU step times below are **assumptions for illustration**, not measurements; measure your own
# with `benchmarks/bench_gpu.py` and a short run.

# %%
spec = importlib.util.spec_from_file_location("estimate_cost", REPO / "scripts" / "estimate_cost.py")
estimate_cost = importlib.util.module_from_spec(spec)
spec.loader.exec_module(estimate_cost)

assumed = [("simclr-imagenet-r50", 32, 0.45, {}), ("simclr-imagenet-r50", 32, 0.45, {"epochs": 1000}),
           ("moco-v2-imagenet-r50", 8, 0.25, {})]
for preset, gpus, step_time, change in assumed:
    preset_cfg = get_preset(preset).replace(**change)
    res = estimate_cost.estimate(preset_cfg, gpus, step_time, estimate_cost.default_num_images(preset_cfg))
    print(f"{preset} {preset_cfg.epochs} epochs on {gpus} GPUs at an assumed {step_time} s/step: "
          f"{res['steps']} steps, {res['wall_hours']:.0f} h wall clock, {res['gpu_hours']:.0f} GPU-hours")

# %% [markdown]
# And this CPU? The one-step runs above logged rates dominated by one-off costs (the first step
# allocates memory and picks its kernels), so they are no basis for an extrapolation. A rate worth
# extrapolating is a **steady state**: we open the same SimCLR configuration as a run that writes
# nothing (`engine.open_run(cfg, None)`), train it with `engine.run_steps`, discard the first steps as
# warm-up and take the median time of the steps after them. One process uses both cores, which is
# the fastest way to run on this machine (the two-process run above splits the same two cores).

# %%
rate_cfg = cfg.replace(max_steps=0, epochs=4)  # a schedule long enough for every step below
rate_run = engine.open_run(rate_cfg, None, verbose=False)
warmup, measured = pick(1, 2), pick(2, 12)
ticks = [time.perf_counter()]
engine.run_steps(rate_run, warmup + measured, on_step=lambda run, logs: ticks.append(time.perf_counter()))
step_times = [b - a for a, b in zip(ticks, ticks[1:])]
step_s = statistics.median(step_times[warmup:])
rate = rate_cfg.batch_size / step_s
print(f"first step {step_times[0]:.2f} s; steady state: median {step_s:.3f} s per step of {rate_cfg.batch_size} images "
      f"over steps {warmup + 1}-{warmup + measured} = {rate:.0f} images/s (1 process, {torch.get_num_threads()} threads, "
      f"{rate_cfg.encoder} x {rate_cfg.width} at 32 px, {DATA})")

cpu = estimate_cost.estimate(get_preset("simclr-imagenet-r50"), 1, 4096 / rate, estimate_cost.IMAGENET_TRAIN)
ratio = forward_flops(build_encoder("resnet50", cifar_stem=False), 224) / forward_flops(
    build_encoder(rate_cfg.encoder, width=rate_cfg.width, cifar_stem=True), 32)
print(f"at this steady {rate:.0f} images/s, 100 epochs of ImageNet would take {cpu['wall_hours'] / 24:.0f} days on this "
      f"CPU, with a network that needs {ratio:.0f}x fewer FLOPs per image than ResNet-50 at 224 px")

# %%
print(f"chapter wall time: {time.perf_counter() - chapter_start:.0f} s (smoke mode: {smoke_mode()})")

# %% [markdown]
# ## Exercises
#
# 1. Resume on two processes: run the torchrun command above with `--stop-at-step 4 max_steps=8`,
#    then again with `--resume`, and check that the final weights equal the straight run's. Which
#    random state makes this exact (hint: `engine.sample_seed`, and what the checkpoint stores)?
# 2. Train with `--nproc_per_node=4` (4 processes on 2 cores: slow, but correct). Do the weights still
#    match one process? What changes in the per-rank batch, and what in the lr?
# 3. Change the gather demo so that the anchors are the *gathered* rows too (every rank computes the
#    loss of all $2B$ anchors). What happens to the gradient after DDP's averaging, and how would you
#    fix the scale?
# 4. Set `accum_steps=2` in the two-process run. Before running it, predict how many negatives each
#    anchor has; then compare the weights with `accum_steps=1`.
# 5. With `scripts/estimate_cost.py`, find the number of GPUs at which `simclr-imagenet-r50` for 1000
#    epochs finishes in 3 days if the step time grows by 5% every time the GPU count doubles (a crude
#    communication cost). How many GPU-hours does that cost compared with 8 GPUs?
# 6. Render `scripts/train_single_node.sbatch` for `linear-eval-moco-imagenet` with
#    `OVERRIDES="init_checkpoint=/scratch/me/runs/moco-v2/checkpoints/last.pt"`. What is the
#    per-GPU batch on 8 GPUs, and which learning-rate schedule does it use?
# 7. **The lr of a G-GPU run** *(checked: `13.7`)*. Write `my_lr(base_lr, per_gpu_batch, gpus, rule)`, the
#    learning rate the engine uses when `gpus` processes each take `per_gpu_batch` images, for
#    `rule` = `"linear"` or `"sqrt"` (`optim.scale_lr`).
# 8. **GPU-hours from a step time** *(checked: `13.8`)*. Write `my_gpu_hours(epochs, num_images,
#    batch_size, gpus, step_time_s)`, the GPU-hours `scripts/estimate_cost.py` reports for a run of that
#    shape at `step_time_s` seconds per optimizer step.

# %%
from contrastive_lab.exercises import check


def my_lr(base_lr, per_gpu_batch, gpus, rule):
    """The learning rate of a run on `gpus` processes of `per_gpu_batch` images each."""
    raise NotImplementedError  # your code here


check("13.7", my_lr)

# %%
from contrastive_lab.exercises import check


def my_gpu_hours(epochs, num_images, batch_size, gpus, step_time_s):
    """GPU-hours of a run of `epochs` epochs at `step_time_s` seconds per step on `gpus` GPUs."""
    raise NotImplementedError  # your code here


check("13.8", my_gpu_hours)

# %%
from contrastive_lab import runtime

print(runtime.chapter_report())
