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
# # 00 Welcome: learning by comparing
#
# This book teaches **contrastive self-supervised learning** for images: how a network can learn
# useful visual features from unlabeled photos, only by being asked which images are *the same
# thing* and which are not. Every idea comes with its equation, its source, and code you can run
# on a laptop CPU in minutes. The code lives in the `contrastive_lab` package: the chapters build a
# piece by hand to explain it, then check it against the library, and the library is what you
# import in your own work and what instructors launch on GPU clusters.
#
# ## Why learn without labels?
#
# Labels are the expensive part of a dataset. ImageNet's 1.28 million training images took years of
# crowd-sourced annotation (Deng et al. 2009); photos, scans and video frames without labels are
# nearly free. *Self-supervised* learning invents a task whose answer is known without a human,
# trains a network on it, and keeps the network's internal representation for the tasks we care
# about: classification with few labels, retrieval, detection.
#
# ## Positives and negatives
#
# The contrastive task is a comparison. Take an image $x$ and make two random **views** of it,
# $\tilde x_i = t(x)$ and $\tilde x_j = t'(x)$: random crops, colour changes, blur. The two views
# are a **positive pair**: they show the same thing. Views of *other* images are **negatives**. An
# encoder $f$ maps each view to a vector, and we train it so that the positive pair is more similar
# than any negative pair. With cosine similarity $\mathrm{sim}(u, v) = u^\top v / \lVert u\rVert \lVert v\rVert$
# and a temperature $\tau$, the loss for one anchor is a softmax classification "which of these
# candidates is my partner?" (van den Oord et al. 2018; Chen et al. 2020, Eq. 1):
#
# $$\ell_{i,j} = -\log \frac{\exp(\mathrm{sim}(z_i, z_j)/\tau)}{\sum_{k \ne i} \exp(\mathrm{sim}(z_i, z_k)/\tau)}.$$
#
# To solve it, the encoder must ignore what the augmentations change (exact position, colour
# balance) and keep what they preserve: shapes, parts, textures, the *object*. That is the
# representation we want. Where the negatives come from is the main design axis of the field:
#
# | family | negatives | chapters |
# |---|---|---|
# | end-to-end (SimCLR) | the other images in the batch | 04-06 |
# | memory bank (Wu et al. 2018) | stored features of the whole dataset | 07 |
# | queue + momentum encoder (MoCo) | keys from recent batches | 07-08 |
# | predictive coding (CPC) | other patches and images | 09 |
# | no negatives (BYOL, DINO) | none: asymmetry prevents collapse | 11 |
#
# ## A tour of the repository
#
# ```
# chapters/            this book: NN_name.py (jupytext) paired with NN_name.ipynb (with outputs)
# contrastive_lab/     the library, one concept per module, in the order an image flows through it:
#     data/            datasets as uint8 tensors: CIFAR-10/100, STL-10, ImageFolder, synthetic;
#                      checksummed downloads, labelled subsets, check-data             ch. 00
#     views/           view recipes (SimCLR, MoCo): per image for DataLoader workers and
#                      batched on the device, with C kernels for the CPU               ch. 01
#     encoders.py      f: ResNets with the CIFAR stem, a small ResNet for CPUs, FLOPs  ch. 02
#     heads.py         g: projection heads (none, linear, MLP), BYOL's predictor       ch. 03
#     losses/          one file per family: NT-Xent, InfoNCE, NCE, CPC, CLIP, alignment
#                      and uniformity, each with a slow reference twin                 ch. 04, 07-09
#     memory.py        where negatives come from: a memory bank, MoCo's queue          ch. 07
#     momentum.py      the momentum (EMA) encoder                                      ch. 07-08
#     batchnorm.py     shuffling, split and global batch norm                          ch. 08, 13
#     cpc/             CPC's parts: 1-D sequences, image patches, the causal context   ch. 09
#     methods/         one file per method (SimCLR, MoCo, InstDisc, CPC, linear and
#                      fine-tuning classifiers): its module, options and presets;
#                      base.py is the protocol the engine calls                        ch. 05-09
#     engine/          one training loop for CPU, GPU and torchrun: the run, the step,
#                      batches, time budgets, signals, logging, the run's figures      ch. 05, 13
#     evaluate/        kNN classifier and monitor, linear probe, alignment/uniformity  ch. 02-05
#   and around them:
#     config.py        the run configuration: shared fields + the method's options (presets.py
#                      gathers the named presets each method file defines)
#     checkpoints.py   checkpoint files: atomic writes, safe reads, never a NaN
#     optim.py         LARS, warmup + cosine schedules;  runtime.py  environment, device, bf16
#     plots.py         drawing primitives (image grids, curves, retrieval, embeddings)
#     cli.py           python -m contrastive_lab train | eval | embed | presets | check-data
# data/                where datasets are downloaded (data/README.md says how to place them offline)
# tests/               every loss, view and queue tested against an independent reference
# benchmarks/          speed and accuracy measurements, recorded in BENCHMARKS.md
# ```
#
# Each module opens with a docstring that says what it holds, so a `help(...)` or a click from any
# chapter cell leads to the code behind it. The imports flow one way, with no circle: from
# `runtime` and `config` at the bottom through data, views, encoders, heads, losses, the negatives'
# machinery, cpc, methods and evaluate up to the engine (whose kNN monitor calls `evaluate`) and the
# CLI; `tests/test_architecture.py` checks it. A new method is one new file in `methods/`.
#
# Two commands do most of the work: `make demo` trains SimCLR on CIFAR-10 on your CPU and prints
# the kNN accuracy of the encoder before and after; `make test` runs the tests and every chapter.

# %%
import torch

import contrastive_lab
from contrastive_lab import data, plots, runtime

print("contrastive_lab", contrastive_lab.__version__, "| torch", torch.__version__)
print(f"smoke mode: {runtime.smoke_mode()} (CI sets CONTRASTIVE_LAB_SMOKE=1)")

# %% [markdown]
# ## CPU or GPU?
#
# Everything in this book runs on a CPU. The chapters are sized for a 2-core laptop: each one shows
# real results in at most ten minutes. Set the environment variable `CONTRASTIVE_LAB_SMOKE=1` and
# each chapter instead runs in seconds on tiny data; that is how CI executes the whole book.
#
# Two things make a CPU bearable. First, CIFAR-sized datasets sit in memory as one uint8 tensor and
# the augmentations run *batched* on that tensor, so no data-loading processes compete with the
# model for the cores. Second, many recent CPUs compute in **bfloat16** natively (AVX-512 BF16 or
# AMX); there, mixed precision roughly doubles the speed of a ResNet. The library detects this
# rather than assuming it:

# %%
device = runtime.default_device()
print("device:", device)
print("native bf16 on this CPU:", runtime.cpu_supports_bf16())
print("autocast dtype the engine will use here:", runtime.autocast_dtype(device))
print("CUDA available:", torch.cuda.is_available())

# %% [markdown]
# On a GPU the same code runs unchanged (the engine picks `cuda`, and bf16 or fp16 autocast), and
# on a cluster `torchrun` launches it on many GPUs (chapter 13).
#
# ## The data
#
# The book's running example is CIFAR-10 (Krizhevsky 2009): 60 000 colour images of 32x32 pixels in
# ten classes. `load_cifar10` reads the official python archive from the data root (the environment
# variable `CONTRASTIVE_LAB_DATA`, or `data/` in the repository) and downloads it, checksummed, on
# first use. In CI the data root points at *cifar10-mini*, a real 5085/1017-image subset: numbers
# measured on it are labelled "cifar10-mini". Offline and without the archive, the synthetic
# dataset stands in (`data.make_synthetic`), so every chapter still runs.

# %%
try:
    train_set = data.load_cifar10("train")
    test_set = data.load_cifar10("test")
except data.DatasetNotFoundError as err:
    print(err, "\n-> using the synthetic dataset instead")
    train_set = data.make_synthetic(n=2000, split="train")
    test_set = data.make_synthetic(n=500, split="test")
print(train_set)
print(test_set)
print("data root:", data.data_root())

# %%
counts = torch.bincount(train_set.labels, minlength=len(train_set.classes))
for name, count in zip(train_set.classes, counts.tolist()):
    print(f"{name:12s} {count:5d}")

# %% [markdown]
# Here are the first images of each class. Look at how much varies *within* a class (pose,
# colour, background, scale): a good representation must see through all of it, and nobody will
# tell the network which images share a class.

# %%
per_class = 8
picks = torch.cat([(train_set.labels == c).nonzero()[:per_class, 0] for c in range(len(train_set.classes))])
fig = plots.image_grid(train_set.images[picks], nrow=per_class, scale=0.9,
                       titles=[train_set.classes[int(train_set.labels[i])] for i in picks])

# %% [markdown]
# ## A first comparison
#
# Before any learning, how similar are two images by their raw pixels? Below, each image's nearest
# neighbour in pixel space (cosine similarity of the flattened pixels). Pixel similarity is mostly
# about colour and brightness, not about objects, which is why a kNN classifier on raw pixels is
# weak. Contrastive learning replaces the pixels with features in which the nearest neighbour of
# a ship tends to be a ship.

# %%
n_gallery = runtime.pick(500, len(train_set))
gallery = train_set.images[:n_gallery].float().flatten(1)
queries = test_set.images[:6].float().flatten(1)
sim = torch.nn.functional.normalize(queries, dim=1) @ torch.nn.functional.normalize(gallery, dim=1).T
nearest = sim.topk(5, dim=1).indices
rows = torch.cat([torch.cat([test_set.images[i : i + 1], train_set.images[nearest[i]]]) for i in range(6)])
titles = [
    (test_set.classes[int(test_set.labels[i])] if j == 0 else train_set.classes[int(train_set.labels[nearest[i, j - 1]])])
    for i in range(6) for j in range(6)
]
fig = plots.image_grid(rows, nrow=6, titles=titles, scale=1.0)
agree = (train_set.labels[nearest[:, 0]] == test_set.labels[:6]).float().mean()
print(f"nearest pixel neighbour in {train_set.name} train has the query's class for {agree:.0%} "
      f"of these 6 {test_set.name} test queries")

# %% [markdown]
# ## How to read this book
#
# 1. **01 Augmentation**: the views, and why crop + colour is the pair that matters.
# 2. **02 Encoders**: ResNets for 32 px and 224 px images; a random encoder's kNN baseline.
# 3. **03 Projection heads**: why the loss is applied to $z = g(h)$ but we keep $h$.
# 4. **04 NT-Xent**: the loss, built step by step, and what temperature does.
# 5. **05-06 SimCLR**: end to end on a CPU, then its ablations.
# 6. **07-09**: memory banks, MoCo's queue, CPC.
# 7. **10 Using representations**: linear probes, few labels, retrieval, novelty detection, maps.
# 8. **11 Beyond negatives**: BYOL, SimSiam, DINO, Barlow Twins, and why they do not collapse.
# 9. **12 More views, labels and modalities**: CMC, AMDIM, SupCon, CLIP.
# 10. **13 Scaling up**: from a notebook cell to torchrun and SLURM on clusters.
#
# Open the chapters with `make lab` (JupyterLab with jupytext: the `.py` files open as notebooks).
#
# ## Exercises
#
# 1. Load CIFAR-100 with `data.load_cifar100` (or STL-10 with `data.load_stl10`) and show a grid of
#    its classes. Which dataset has more variation within a class?
# 2. Repeat the pixel-space nearest-neighbour experiment on 1000 test images and compute the kNN
#    accuracy. Keep the number: chapter 02 compares it with a *random* ResNet.
#    **Checked** (`check_value("00.2", ...)` below): the 1-NN accuracy, by cosine similarity of the
#    flattened pixels, of the first 1000 test images against the first 5000 training images.
# 3. Where in the loss above does a *negative* appear? What happens to $\ell_{i,j}$ if every negative
#    is far less similar than the positive? If one negative is an image of the same class?
#    **Checked** (`check_value("00.3", ...)` below): compute $\ell_{i,j}$ for a batch of $N = 256$
#    pairs at $\tau = 0.5$ when the positive has similarity 1 and all $2N - 2$ negatives 0.
# 4. Run `python -m contrastive_lab train --help` and find the key that sets the temperature.

# %%
from contrastive_lab.exercises import check_value

# Exercise 2: use train_set and test_set from above; replace None with your accuracy (a number in [0, 1]).
pixel_knn_accuracy = None  # your code here
check_value("00.2", pixel_knn_accuracy)

# %%
# Exercise 3: the loss of one anchor whose negatives are all orthogonal to it (N = 256, tau = 0.5).
orthogonal_loss = None  # your code here
check_value("00.3", orthogonal_loss)

# %%
print(runtime.chapter_report())
