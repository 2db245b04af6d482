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
# # 01 Augmentation: views, and why crop + colour is the pair that matters
#
# A contrastive method never sees an image twice in the same way. For every image $x$ it draws
# two random transformations $t, t' \sim \mathcal T$ and asks the encoder to recognise that
# $\tilde x_i = t(x)$ and $\tilde x_j = t'(x)$ belong together (SimCLR, Chen et al. 2020, Sec. 2.1,
# Alg. 1). The distribution $\mathcal T$ is therefore not a detail of the data pipeline: it *is*
# the definition of "the same thing". Whatever $\mathcal T$ changes, the representation learns to
# ignore; whatever survives $\mathcal T$, it can use. SimCLR's first finding (Sec. 3, title of
# Sec. 3.1) is that "composition of data augmentation operations is crucial for learning good
# representations", and that one pair, **random crop + colour distortion**, carries most of it.
#
# This chapter takes the views apart:
#
# 1. the recipes of SimCLR and MoCo, with their exact parameters and sources;
# 2. what every operation does, one at a time, on real images;
# 3. two implementations of the same distribution (per-image torchvision, batched on the device),
#    a pitfall that silently breaks contrastive learning, and reproducibility;
# 4. why crops alone are not enough: the colour-histogram shortcut of SimCLR Fig. 6, made visible
#    and measured.
#
# The training ablation (SimCLR Fig. 5, one pair of operations at a time) is chapter 06.

# %%
import dataclasses
import math
import os
import time

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.patches import Rectangle
from torchvision.transforms import v2

from contrastive_lab import plots
from contrastive_lab.data import load_book_data, make_synthetic
from contrastive_lab.runtime import pick, smoke_mode
from contrastive_lab.views import (
    RECIPES,
    BatchedViews,
    ViewParams,
    ViewRecipe,
    build_torchvision_pipeline,
    gaussian_kernels,
    get_recipe,
    ks_critical,
    ks_statistic,
)

torch.manual_seed(0)
chapter_start = time.perf_counter()
print("smoke mode:", smoke_mode())
train_set, test_set = load_book_data("train"), load_book_data("test")
print(train_set)
print(test_set)

# %% [markdown]
# ## The recipes
#
# Every recipe below is the same pipeline with different numbers (SimCLR App. A; MoCo's repo):
# **random resized crop** (area fraction $a \sim U(a_{\min}, 1)$ of the image, aspect ratio
# $w/h$ log-uniform in $[3/4, 4/3]$, then resize to the output size) $\to$ **horizontal flip**
# ($p = 0.5$) $\to$ **colour jitter** (brightness, contrast, saturation, hue, in random order,
# applied with probability $p_{\text{jit}}$) $\to$ **grayscale** ($p = 0.2$) $\to$ **Gaussian blur**
# $\to$ normalise. SimCLR parametrises the colour jitter by one *strength* $s$:
# `ColorJitter(0.8s, 0.8s, 0.8s, 0.2s)` (App. A, "Color distortion").
#
# | | SimCLR ImageNet | SimCLR CIFAR-10 | MoCo v1 | MoCo v2 |
# |---|---|---|---|---|
# | source | Chen et al. 2020, App. A | App. B.9 | He et al. 2020, Sec. 3.3 + repo | Chen et al. 2020b, Sec. 3 + repo |
# | output size | 224 | 32 | 224 | 224 |
# | crop area $a$ | $U(0.08, 1)$ | $U(0.08, 1)$ | $U(0.2, 1)$ | $U(0.2, 1)$ |
# | jitter (b, c, s, h) | (0.8, 0.8, 0.8, 0.2), $s = 1$ | (0.4, 0.4, 0.4, 0.1), $s = 0.5$ | (0.4, 0.4, 0.4, 0.4) | (0.4, 0.4, 0.4, 0.1) |
# | jitter probability | 0.8 | 0.8 | 1 (always) | 0.8 |
# | grayscale | 0.2 | 0.2 | 0.2, *before* the jitter | 0.2 |
# | blur | $p = 0.5$, $\sigma \sim U(0.1, 2)$, kernel 10 % of the side | none | none | $p = 0.5$, $\sigma \sim U(0.1, 2)$ |
#
# A jitter strength $b$ means a factor $f \sim U[\max(0, 1-b), 1+b]$ for brightness, contrast and
# saturation, and a hue shift $\delta \sim U[-h, h]$ (in turns of the colour wheel), exactly as
# `torchvision`'s `ColorJitter`. For CIFAR-10, SimCLR keeps the ImageNet crop (with flip,
# resized to 32 px), halves the colour strength to $s = 0.5$ and leaves out the blur (App. B.9).
# MoCo v1's paper only lists the operations (Sec. 3.3: crop, colour jitter, flip, grayscale,
# "all available in PyTorch's torchvision package"); its numbers come from the official
# `main_moco.py`. MoCo v2 adds SimCLR's blur and finds that SimCLR's stronger colour distortion "has diminishing gains in our higher
# baselines" (Chen et al. 2020b, Sec. 3).
#
# The library holds these as frozen `ViewRecipe`s; the printout below is read from
# `contrastive_lab.views.RECIPES`, not typed by hand:

# %%
widths = {"size": 5, "crop_scale": 12, "jitter": 22, "jitter_p": 9, "gray_p": 7, "gray_before_jitter": 19,
          "blur_p": 7, "blur_sigma": 12}
print(f"{'recipe':16s}" + "".join(f"{f:>{w}s}" for f, w in widths.items()))
for name in RECIPES:
    r = get_recipe(name)
    values = [getattr(r, f) if r.blur_p > 0 or f != "blur_sigma" else "-" for f in widths]
    print(f"{name:16s}" + "".join(f"{str(v):>{w}s}" for v, w in zip(values, widths.values())))
print("blur kernel side at 224 / 96 / 32 px:",
      [get_recipe("simclr_imagenet", size=s).blur_kernel_size for s in (224, 96, 32)])

# %% [markdown]
# ## Positive pairs on real images
#
# `BatchedViews(recipe)(images, generator)` draws one view per image; calling it twice gives the
# positive pair. Below, the first row shows images from the training set, the next two rows two
# independent views of each (SimCLR CIFAR-10 recipe). A recipe with mean 0 and std 1 skips the
# normalisation so the views can be shown as they are; the library's `image_grid` can also undo a
# normalisation (`mean=..., std=...`).

# %%
DISPLAY = dict(mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))  # output stays in [0, 1]
cifar_views = BatchedViews(get_recipe("simclr_cifar", **DISPLAY))
gen = torch.Generator().manual_seed(1)
n_show = 8
x = train_set.images[:n_show]
view1, view2 = cifar_views(x, gen), cifar_views(x, gen)
titles = ["x"] * n_show + ["t(x)"] * n_show + ["t'(x)"] * n_show
fig = plots.image_grid(torch.cat([x.float() / 255, view1, view2]), nrow=n_show, titles=titles, scale=1.0)
fig.suptitle(f"two SimCLR CIFAR views per image ({train_set.name} train)", fontsize=9)
fig.tight_layout()

# %% [markdown]
# Some pairs share almost nothing at the pixel level: different parts of the object, different
# colours, one of them gray. Yet a person says at once that they show the same thing, and that is
# exactly the skill the encoder is trained for. The crops create two kinds of pairs (SimCLR
# Fig. 3): a small crop inside a large one (*global to local*: predict the whole from a part) and
# two neighbouring crops (*adjacent views*: predict the surroundings).
#
# ## One operation at a time
#
# To see each operation alone we fix its parameters by hand. `BatchedViews.sample_params`
# returns a `ViewParams` record (crop box, flip mask, jitter factors and order, gray and blur masks,
# blur $\sigma$) and `BatchedViews.apply(images, params)` applies it, so we can start from the
# parameters of the *identity* view and change one field.

# %%
def identity_params(n: int, size: int) -> ViewParams:
    """Parameters of n identity views of size x size images: whole image, no flip, neutral colours."""
    off = get_recipe("simclr_cifar", size=size, crop_scale=(1.0, 1.0), crop_ratio=(1.0, 1.0), flip_p=0.0,
                     jitter=(0.0, 0.0, 0.0, 0.0), jitter_p=0.0, gray_p=0.0)
    return BatchedViews(off).sample_params(n, size, size)


p = identity_params(4, 32)
print("identity crop boxes: top", p.top.tolist(), "left", p.left.tolist(), "h", p.height.tolist(),
      "w", p.width.tolist())
print("neutral factors:", p.brightness.tolist(), p.hue.tolist())
same = BatchedViews(get_recipe("simclr_cifar", **DISPLAY)).apply(x[:4], p)
torch.testing.assert_close(same, x[:4].float() / 255)
print("identity parameters reproduce the input: matches")

# %% [markdown]
# ### Random resized crop
#
# The crop draws an area fraction $a \sim U(a_{\min}, 1)$ and a log-uniform aspect ratio $r$, sets
# $w = \mathrm{round}\sqrt{a H W r}$, $h = \mathrm{round}\sqrt{a H W / r}$, and places the box
# uniformly; if the box does not fit in 10 attempts it falls back to a central crop
# (torchvision's `RandomResizedCrop`, from Inception's "random sized crop", Szegedy et al. 2015,
# Sec. 6). The box is then resized back to the output size with an antialiased bilinear filter.
# With $a_{\min} = 0.08$ on a 32 px image, the smallest crops are about 9 px wide and get upsampled
# three- to four-fold, which is why CIFAR views look soft. The random crop also contains scale
# augmentation ("zoom") and, with the flip, most of the *spatial* variation in the views.

# %%
img = train_set.images[3:4]
crop_only = get_recipe("simclr_cifar", jitter_p=0.0, gray_p=0.0, flip_p=0.0, **DISPLAY)
crop_views = BatchedViews(crop_only)
n_crops = 6
many = crop_views.sample_params(200, 32, 32, torch.Generator().manual_seed(5))
area_order = (many.height * many.width).argsort()
keep = area_order[torch.linspace(2, 197, n_crops).long()]  # six crops from the smallest to the largest
cp = ViewParams(**{f.name: getattr(many, f.name)[keep] for f in dataclasses.fields(many)})
crops = crop_views.apply(img.expand(n_crops, -1, -1, -1), cp)
fig, axes = plt.subplots(1, n_crops + 1, figsize=(1.25 * (n_crops + 1), 1.6))
axes[0].imshow(plots.to_display(img)[0].numpy(), interpolation="nearest")
colours = plt.get_cmap("tab10")
for i in range(n_crops):
    box = Rectangle((cp.left[i] - 0.5, cp.top[i] - 0.5), cp.width[i], cp.height[i], fill=False,
                    edgecolor=colours(i), linewidth=1.5)
    axes[0].add_patch(box)
    axes[i + 1].imshow(plots.to_display(crops[i : i + 1])[0].numpy(), interpolation="nearest")
    area = float(cp.height[i] * cp.width[i]) / (32 * 32)
    axes[i + 1].set_title(f"a={area:.2f}", fontsize=7, color=colours(i))
axes[0].set_title("boxes on x", fontsize=7)
for ax in axes:
    ax.axis("off")
fig.tight_layout()
smallest = math.sqrt(crop_only.crop_scale[0] * 32 * 32)
print(f"smallest crop side at 32 px: about {smallest:.1f} px, upsampled {32 / smallest:.1f}x")

# %% [markdown]
# ### Flip, colour jitter, grayscale
#
# The colour operations follow `torchvision` exactly; each blends the image with a reference
# (`torchvision`'s `_blend`, values clamped to $[0, 1]$ after every step):
#
# * brightness: $x \leftarrow f\,x$ (reference black);
# * contrast: $x \leftarrow f\,x + (1 - f)\,\mu$, $\mu$ the mean of the grayscale image;
# * saturation: $x \leftarrow f\,x + (1 - f)\,L(x)$, with luma $L = 0.2989 R + 0.587 G + 0.114 B$;
# * hue: rotate the hue channel of HSV by $\delta$ turns, $H \leftarrow (H + \delta) \bmod 1$;
# * grayscale: $x \leftarrow (L, L, L)$.
#
# Each row below sweeps one factor over the range of SimCLR's ImageNet strength $s = 1$ (the CIFAR
# recipe uses half of it); the middle column is the identity.

# %%
n_sweep = 5
horse = train_set.images[7:8].expand(n_sweep, -1, -1, -1)
show = BatchedViews(get_recipe("simclr_cifar", **DISPLAY))
base = identity_params(n_sweep, 32)
on = torch.ones(n_sweep, dtype=torch.bool)
sweeps = {
    "brightness": torch.linspace(0.2, 1.8, n_sweep, dtype=torch.float64),
    "contrast": torch.linspace(0.2, 1.8, n_sweep, dtype=torch.float64),
    "saturation": torch.linspace(0.2, 1.8, n_sweep, dtype=torch.float64),
    "hue": torch.linspace(-0.2, 0.2, n_sweep, dtype=torch.float64),
}
rows, titles = [], []
for field, values in sweeps.items():
    rows.append(show.apply(horse, dataclasses.replace(base, jitter=on, **{field: values})))
    titles += [f"{field} {v:+.2f}" if field == "hue" else f"{field} {v:.1f}" for v in values.tolist()]
flip_gray = dataclasses.replace(base, flip=torch.tensor([False, True, False, False, True]),
                                gray=torch.tensor([False, False, False, True, True]))
rows.append(show.apply(horse, flip_gray))
titles += ["x", "flip", "x", "gray", "flip + gray"]
fig = plots.image_grid(torch.cat(rows), nrow=n_sweep, titles=titles, scale=1.1)

# %% [markdown]
# Brightness and contrast change the overall level and spread of the intensities; saturation goes
# from gray ($f = 0$) to garish ($f = 2$); hue rotates the colours (a red car becomes a green or
# blue one). Grayscale removes colour entirely, which is the strongest colour augmentation of all.
# None of them changes *what* is in the image. Inside a `ColorJitter` the four operations run in a
# random order, drawn per sample (`ViewParams.order`), as in torchvision.
#
# ### Gaussian blur, and why CIFAR has none
#
# SimCLR's ImageNet recipe blurs half of the views with $\sigma \sim U(0.1, 2.0)$ pixels and a
# kernel of 10 % of the image side (App. A). We show it on a 96 px image (STL-10's size): a
# cifar10-mini image upsampled to 96 px, and a 96 px synthetic texture with sharp edges.

# %%
blur96 = get_recipe("simclr_imagenet", size=96, **DISPLAY)
sigmas = torch.tensor([0.1, 0.5, 1.0, 1.5, 2.0], dtype=torch.float64)
up = torch.nn.functional.interpolate(train_set.images[7:8].float() / 255, size=(96, 96), mode="bicubic",
                                     antialias=True).clamp(0, 1)
texture = make_synthetic(n=10, image_size=96, seed=3).images[2:3].float() / 255
bp = dataclasses.replace(identity_params(len(sigmas), 96), blur=torch.ones(len(sigmas), dtype=torch.bool),
                         sigma=sigmas)
blurred = [BatchedViews(blur96).apply(im.expand(len(sigmas), -1, -1, -1), bp) for im in (up, texture)]
fig = plots.image_grid(torch.cat(blurred), nrow=len(sigmas), scale=1.3,
                       titles=[f"sigma={s:.1f}" for s in sigmas.tolist()] * 2)
fig.suptitle(f"Gaussian blur at 96 px, kernel {blur96.blur_kernel_size} px", fontsize=9)
fig.tight_layout()

# %% [markdown]
# Blur removes fine texture and keeps shapes, so the encoder cannot rely on high-frequency detail
# to match two views. On a 32 px image there is little detail to remove, and the kernel that is
# 10 % of the side has only 3 taps: however large $\sigma$, a 3-tap Gaussian is at most the box
# filter $(1/3, 1/3, 1/3)$, as the weights below show. SimCLR leaves blur out for CIFAR-10
# (App. B.9).

# %%
sigmas3 = torch.tensor([0.5, 1.0, 2.0, 100.0], dtype=torch.float64)
for sigma, taps in zip(sigmas3.tolist(), gaussian_kernels(sigmas3, 3, torch.float64)):  # the pipeline's taps
    print(f"3-tap Gaussian, sigma={sigma:6.1f}: {taps.numpy().round(3)}")

# %% [markdown]
# ## Two implementations of one distribution
#
# The library has two ways to draw views, and they sample the same distribution:
#
# * `build_torchvision_pipeline(recipe)`: a per-image `torchvision.transforms.v2` pipeline, the
#   classic choice inside `DataLoader` workers when images are decoded from JPEG files (ImageNet);
# * `BatchedViews(recipe)`: one vectorised call per *batch*, on CPU or GPU, every sample with its
#   own random parameters. Crop, resize and flip become two batched matrix products; brightness,
#   contrast and saturation are per-sample $3 \times 3$ affine colour maps. For CIFAR-sized data
#   held in memory this avoids thousands of tiny per-image calls.
#
# `BatchedViews.apply_reference` is the readable version: a plain loop that calls torchvision's
# functional ops (`resized_crop`, `adjust_brightness`, ...) sample by sample. First, the fast path
# against it, with the same parameters:
#
# (On a CPU there is one more level. Even batched, the colour jitter is ~800 small PyTorch ops per
# batch, and at $24$-$32$ px their per-call overhead, not the arithmetic, is what costs. So
# `BatchedViews` hands the crop and the colour steps of uint8/float32 CPU batches to two short C
# files, `contrastive_lab/views/csrc/crop.c` and `colour.c`, compiled on first use (about a second, with
# any C compiler; without one it warns and stays in PyTorch; `CONTRASTIVE_LAB_NATIVE=0` turns them
# off). They compute the same maths one image at a time while it sits in the cache, ~3x faster for
# the whole view pipeline; the PyTorch functions `crop_resize_flip` and `color_jitter` stay the
# definitions, and `tests/test_native.py` checks the C against them and against torchvision.)

# %%
simclr = BatchedViews("simclr_cifar")
n_check = pick(16, 128)
params = simclr.sample_params(n_check, 32, 32, torch.Generator().manual_seed(0))
fast = simclr.apply(test_set.images[:n_check], params)
slow = simclr.apply_reference(test_set.images[:n_check], params)
print(f"max |batched - reference| over {n_check} views: {(fast - slow).abs().max():.2e} (normalised units)")
torch.testing.assert_close(fast, slow, atol=1e-4, rtol=0)
print("BatchedViews.apply matches the torchvision reference loop")

# %% [markdown]
# ### The pitfall: a v2 transform on a batch tensor
#
# `torchvision.transforms.v2` accepts a batch tensor `(B, 3, H, W)` and returns a batch. It draws
# its random parameters **once per call**, so every image in the batch gets the same crop box, the
# same flip and the same colours. Nothing fails and the shapes are right, but the "random" views
# are now correlated across the batch, and a contrastive loss can match pairs by their shared
# transformation. Below, eight copies of the *same* image go through each pipeline as one batch:

# %%
copies = train_set.images[11:12].expand(8, -1, -1, -1).contiguous()
torch.manual_seed(3)
tv_batch = build_torchvision_pipeline(get_recipe("simclr_cifar", **DISPLAY))(copies)
ours = cifar_views(copies, torch.Generator().manual_seed(3))


def distinct_views(views: torch.Tensor) -> int:
    """Number of distinct images in a batch (exact comparison)."""
    return len(torch.unique(views.flatten(1), dim=0))


print("distinct views from the v2 pipeline on a batch tensor:", distinct_views(tv_batch), "of 8")
print("distinct views from BatchedViews:                      ", distinct_views(ours), "of 8")
fig = plots.image_grid(torch.cat([tv_batch, ours]), nrow=8, scale=0.9,
                       titles=["v2 on batch"] * 8 + ["BatchedViews"] * 8)

# %% [markdown]
# The per-image pipeline is correct when it is called per image (that is what a `Dataset`'s
# `__getitem__` does); it is wrong only when it is handed a whole batch, e.g. in a `collate_fn` or
# on a GPU batch. `BatchedViews` exists so that batch-level augmentation is both fast *and*
# per-sample.
#
# ### Same distribution
#
# "Same distribution" is a checkable claim. We draw many crop boxes from `BatchedViews.sample_params`
# and from the `RandomResizedCrop` inside the torchvision pipeline (`make_params`, called once per
# image as a `DataLoader` would), and compare the histograms of the area fraction and of the log
# aspect ratio. Then we compare whole-pipeline outputs: for many views of one image, the mean
# intensity and the colourfulness (mean over pixels of the standard deviation across R, G, B) of
# each view. The two-sample
# Kolmogorov-Smirnov statistic $D = \max_t |F_1(t) - F_2(t)|$ measures the largest gap between the
# two empirical CDFs; for samples of size $n$ and $m$ the 5 % critical value is about
# $1.36\sqrt{(n + m)/(nm)}$ (conservative here, since crop sizes on a 32 px grid are discrete). Even
# for identical distributions one comparison in twenty exceeds it by chance; the unit tests in
# `tests/test_augment.py` run the same kind of check with a false-alarm rate of 0.1 % or less.
# Both numbers come from the library (`views.ks_statistic`, `views.ks_critical`), the functions the
# tests call.

# %%
n_boxes = pick(500, 20_000)
recipe = get_recipe("simclr_cifar")
bp = BatchedViews(recipe).sample_params(n_boxes, 32, 32, torch.Generator().manual_seed(0))
ours_area = (bp.height * bp.width).double().numpy() / 32**2
ours_logr = np.log((bp.width.double() / bp.height.double()).numpy())
rrc = next(t for t in build_torchvision_pipeline(recipe).transforms if isinstance(t, v2.RandomResizedCrop))
blank = torch.zeros(3, 32, 32, dtype=torch.uint8)
torch.manual_seed(0)
boxes = [rrc.make_params([blank]) for _ in range(n_boxes)]
tv_area = np.array([b["height"] * b["width"] for b in boxes]) / 32**2
tv_logr = np.log(np.array([b["width"] / b["height"] for b in boxes]))
critical = ks_critical(n_boxes, n_boxes, alpha=0.05)
fig, axes = plt.subplots(1, 2, figsize=(7.5, 2.8))
for ax, (label, a, b) in zip(axes, [("crop area fraction", ours_area, tv_area),
                                    ("log aspect ratio log(w/h)", ours_logr, tv_logr)]):
    bins = np.linspace(min(a.min(), b.min()), max(a.max(), b.max()), 30)
    ax.hist(b, bins=bins, alpha=0.5, label="torchvision, per image")
    ax.hist(a, bins=bins, histtype="step", color="k", label="BatchedViews")
    ax.set(xlabel=label, ylabel="count")
    print(f"{label:28s} KS D = {ks_statistic(a, b):.4f} (5% critical value {critical:.4f}, n=m={n_boxes})")
axes[0].legend(fontsize=7)
fig.tight_layout()

# %%
n_out = pick(200, 3000)
one = test_set.images[5:6]
g = torch.Generator().manual_seed(0)
chunk = min(n_out, 500)
chunks = [cifar_views(one.expand(chunk, -1, -1, -1), g) for _ in range(math.ceil(n_out / chunk))]
ours_out = torch.cat(chunks)[:n_out]
pipe = build_torchvision_pipeline(get_recipe("simclr_cifar", **DISPLAY))
torch.manual_seed(0)
tv_out = torch.stack([pipe(one[0]) for _ in range(n_out)])
stats = {
    "mean intensity": lambda v: v.mean(dim=(1, 2, 3)),
    "colourfulness": lambda v: v.std(dim=1).mean(dim=(1, 2)),
}
fig, axes = plt.subplots(1, 2, figsize=(7.5, 2.8))
critical = ks_critical(n_out, n_out, alpha=0.05)
for ax, (label, fn) in zip(axes, stats.items()):
    a, b = fn(ours_out).numpy(), fn(tv_out).numpy()
    bins = np.linspace(min(a.min(), b.min()), max(a.max(), b.max()), 30)
    ax.hist(b, bins=bins, alpha=0.5, label="torchvision, per image")
    ax.hist(a, bins=bins, histtype="step", color="k", label="BatchedViews")
    ax.set(xlabel=f"{label} of a view", ylabel="count")
    print(f"{label:16s} KS D = {ks_statistic(a, b):.4f} (5% critical value {critical:.4f}, n = m = {n_out})")
axes[0].legend(fontsize=7)
fig.suptitle(f"{n_out} SimCLR CIFAR views of one {test_set.name} test image", fontsize=9)
fig.tight_layout()

# %% [markdown]
# The colourfulness histogram has a spike at 0: the 20 % of views that were turned gray.
#
# ### Reproducibility
#
# `BatchedViews` takes a `torch.Generator`. The same seed gives the same views, bit for bit; two
# calls with one generator give two *different* views (that is the positive pair); and because the
# parameters are sampled on the generator's device (the CPU by default) and then moved, a CPU
# generator gives the same views on a GPU. The training engine saves the generator's state in
# every checkpoint, so a resumed run replays exactly the views it would have drawn.
# (A `DataLoader` with workers seeds each worker from the global seed and the worker id, so its
# views also depend on the number of workers.)

# %%
batch = test_set.images[: pick(16, 64)]
a1 = simclr(batch, torch.Generator().manual_seed(42))
a2 = simclr(batch, torch.Generator().manual_seed(42))
print("same seed, same views:", torch.equal(a1, a2))
g = torch.Generator().manual_seed(42)
first, second = simclr(batch, g), simclr(batch, g)
print("one generator, two calls give different views:", not torch.equal(first, second))
g = torch.Generator().manual_seed(42)
simclr(batch, g)
state = g.get_state()  # what a checkpoint stores
resumed = simclr(batch, torch.Generator().set_state(state))
print("restored generator state replays the second call:", torch.equal(resumed, second))

# %% [markdown]
# ### Speed (informal)
#
# A quick comparison of two views for 256 images; the careful benchmark, with repeats, thread
# control and recorded machine details, is `benchmarks/bench_views.py`. The machine this notebook
# ran on is shared, so treat the numbers as rough.

# %%
def median_seconds(fn, repeats: int) -> float:
    """Median wall time of fn() over `repeats` runs, after one warm-up call."""
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


n_time, repeats = pick(32, 256), pick(1, 5)
load = os.getloadavg()[0]  # other processes on the machine make timings slower and noisier
images = train_set.images[:n_time]
pipe = build_torchvision_pipeline("simclr_cifar")
g = torch.Generator().manual_seed(0)
t_batched = median_seconds(lambda: (simclr(images, g), simclr(images, g)), repeats)
t_per_image = median_seconds(lambda: [(pipe(im), pipe(im)) for im in images], repeats)
print(f"{n_time} images, two views each, {torch.get_num_threads()} threads, "
      f"load average before: {load:.1f} on {os.cpu_count()} cores")
print(f"  BatchedViews        {n_time / t_batched:8.0f} images/s")
print(f"  per-image v2 loop   {n_time / t_per_image:8.0f} images/s")
print(f"  batched / per-image: {t_per_image / t_batched:.1f}x   (load average after: {os.getloadavg()[0]:.1f})")

# %% [markdown]
# ## Why crop + colour: the colour-histogram shortcut
#
# SimCLR's composition study (Sec. 3.1, Fig. 5) trains with every pair of operations (applied to
# one branch of the pair) and finds that no single transformation suffices: "One composition of
# augmentations stands out: random cropping and random color distortion." The
# explanation is in Sec. 3.1 and Fig. 6: "most patches from an image share a similar color
# distribution ... color histograms alone suffice to distinguish images. Neural nets may exploit
# this shortcut to solve the predictive task." With crops alone, the network can match two views
# by comparing their colour statistics and never needs to look at shapes. Colour jitter breaks the
# shortcut: after independent jitters, two crops of the same image no longer share a histogram,
# and the only way left to match them is what they show.
#
# The figure follows SimCLR Fig. 6: histograms of pixel intensities (over all channels) of four
# crops of each of two images, without and with colour distortion (SimCLR's strength $s = 1$;
# the two panels of a row share their axes).

# %%
def intensity_hist(views: torch.Tensor, bins: int = 32) -> torch.Tensor:
    """Histogram of the pixel intensities of each view (over all channels), rows sum to 1."""
    q = (views.clamp(0, 1) * bins).long().clamp(max=bins - 1).flatten(1)
    counts = torch.zeros(len(views), bins).scatter_add_(1, q, torch.ones_like(q, dtype=torch.float))
    return counts / counts.sum(dim=1, keepdim=True)


crop_recipe = get_recipe("simclr_cifar", jitter_p=0.0, gray_p=0.0, **DISPLAY)
colour_recipe = get_recipe("simclr_cifar", **DISPLAY)
strong_colour = get_recipe("simclr_cifar", jitter=(0.8, 0.8, 0.8, 0.2), **DISPLAY)  # s = 1, as in Fig. 6
pair = [train_set.images[3:4], train_set.images[5:6]]
g = torch.Generator().manual_seed(0)
fig, axes = plt.subplots(2, 3, figsize=(7.5, 3.6), gridspec_kw={"width_ratios": [0.6, 1, 1]})
centres = (torch.arange(32) + 0.5) / 32
for row, im in enumerate(pair):
    axes[row, 0].imshow(plots.to_display(im)[0].numpy(), interpolation="nearest")
    axes[row, 0].axis("off")
    for col, (label, rec) in enumerate([("crop only", crop_recipe), ("crop + colour (s=1)", strong_colour)],
                                       start=1):
        h = intensity_hist(BatchedViews(rec)(im.expand(4, -1, -1, -1), g))
        for k in range(4):
            axes[row, col].plot(centres, h[k], lw=1)
        axes[row, col].set(yticks=[], xlim=(0, 1))
        axes[row, col].tick_params(labelsize=7)
        if row == 0:
            axes[row, col].set_title(label, fontsize=9)
    top = max(axes[row, 1].get_ylim()[1], axes[row, 2].get_ylim()[1])
    axes[row, 1].set_ylim(0, top)
    axes[row, 2].set_ylim(0, top)
axes[1, 1].set_xlabel("pixel intensity", fontsize=8)
axes[1, 2].set_xlabel("pixel intensity", fontsize=8)
fig.tight_layout()

# %% [markdown]
# Without colour distortion the four crops of one image have nearly the same histogram, and the
# two images have clearly different ones: a histogram is a fingerprint of the image. With colour
# distortion the fingerprints of one image scatter as much as those of different images.
#
# We can measure the shortcut without training anything. Play the contrastive game with a
# hand-made "encoder" that sees only colour: the feature of a view is its colour histogram
# (16 bins per channel), and for every first view we pick the second view with the nearest
# histogram (L1 distance) among all $N$ images. The top-1 accuracy of this matching is what a
# network could reach by the shortcut alone; chance is $1/N$.

# %%
def colour_hist(views: torch.Tensor, bins: int = 16) -> torch.Tensor:
    """Per-channel colour histograms of each view, concatenated (3 * bins), rows sum to 1."""
    q = (views.clamp(0, 1) * bins).long().clamp(max=bins - 1)
    idx = (q + bins * torch.arange(3).view(1, 3, 1, 1)).flatten(1)
    counts = torch.zeros(len(views), 3 * bins).scatter_add_(1, idx, torch.ones_like(idx, dtype=torch.float))
    return counts / counts.sum(dim=1, keepdim=True)


def shortcut_accuracy(recipe: ViewRecipe, images: torch.Tensor, seed: int = 0) -> float:
    """Fraction of first views whose nearest second view by colour histogram (L1) is their partner."""
    views, g = BatchedViews(recipe), torch.Generator().manual_seed(seed)
    h1, h2 = colour_hist(views(images, g)), colour_hist(views(images, g))
    nearest = torch.cdist(h1, h2, p=1).argmin(dim=1)
    return float((nearest == torch.arange(len(images))).float().mean())


full = dict(crop_scale=(1.0, 1.0), crop_ratio=(1.0, 1.0))  # "no crop": the whole image
games = {
    "no augmentation": get_recipe("simclr_cifar", **full, jitter_p=0.0, gray_p=0.0, **DISPLAY),
    "crop (+ flip)": crop_recipe,
    "colour only (s=0.5)": get_recipe("simclr_cifar", **full, **DISPLAY),
    "crop + colour (s=0.5)": colour_recipe,
    "crop + colour (s=1)": strong_colour,
}
n_game = pick(64, len(test_set))
game_images = test_set.images[:n_game]
accuracy = {name: shortcut_accuracy(rec, game_images) for name, rec in games.items()}
print(f"colour-histogram matching of two views among N={n_game} {test_set.name} test images "
      f"(chance {1 / n_game:.4f}):")
for name, acc in accuracy.items():
    print(f"  {name:24s} top-1 {acc:.3f}")
fig, ax = plt.subplots(figsize=(5, 2.8))
ax.barh(list(accuracy), list(accuracy.values()), color="tab:blue")
ax.axvline(1 / n_game, color="k", ls="--", lw=1, label="chance")
ax.set(xlabel="top-1 matching by colour histogram", xlim=(0, 1), title=f"the shortcut ({test_set.name} test)")
ax.invert_yaxis()
ax.legend(fontsize=7)
fig.tight_layout()

# %% [markdown]
# With no augmentation the game is trivial. With crops alone, colour histograms still identify the
# partner view far above chance: a contrastive loss could be driven down by a network that
# only computes colour statistics, and it would learn nothing about objects. Colour distortion
# destroys most of this signal, and a stronger distortion destroys more. That is also why SimCLR
# finds that contrastive learning wants *stronger* colour augmentation than supervised learning
# (Sec. 3.2, Table 1): for a supervised classifier colour is a useful cue; for the contrastive
# task it is a cheat. Colour alone without cropping is not enough either: two colour-jittered
# copies of the full image still share their layout, which a network can match pixel by pixel
# (the histogram "encoder" is blind to layout, so this game cannot show it).
# Chapter 06 trains SimCLR with each pair of operations and measures the effect on the learned
# representation.

# %%
print(f"chapter run time: {time.perf_counter() - chapter_start:.0f} s")

# %% [markdown]
# ## Exercises
#
# 1. Sweep the colour strength $s \in \{0, 0.25, 0.5, 0.75, 1\}$ (jitter $(0.8s, 0.8s, 0.8s, 0.2s)$)
#    and plot the shortcut accuracy against $s$. Then repeat with `gray_p=0`: how much of the effect
#    comes from grayscale alone?
# 2. Replace the colour histogram by a stronger "colour-only encoder": the mean and covariance of
#    the RGB values of each view. Does it beat the histogram at matching crop-only views?
# 3. Change `crop_scale` to $(0.5, 1)$ and $(0.08, 0.2)$ and rerun the game with crops only. Do
#    smaller crops make the shortcut harder? Explain with the histograms of two small crops.
# 4. Build MoCo v1's views with `get_recipe("moco_v1", size=32)` and check with
#    `apply_reference` that grayscale runs *before* the jitter. Why does the order matter for the
#    saturation and hue operations?
# 5. Write a `collate_fn` for a `DataLoader` that applies `build_torchvision_pipeline` to the
#    stacked batch, and count the distinct views in a batch of copies. Then fix it.
# 6. `contrastive_lab.engine.view_recipe(Config(view_ops="crop,jitter"))` switches operations off
#    for the ablation of chapter 06. Print the recipes it builds for `view_ops="crop"` and
#    `view_ops="jitter,gray"` and predict their shortcut accuracy before you measure it.
# 7. **Checked** (`check("01.7", ...)` below): write the random-resized-crop sampler for a batch,
#    `my_crop_boxes(batch, height, width, scale, ratio, seed)`, returning a `(batch, 4)` int64 tensor of
#    rows (top, left, h, w). Draw uniforms in $[0, 1)$ from `g = torch.Generator().manual_seed(seed)`,
#    all float64, in this order: those of the area fractions of 10 attempts per sample
#    (`torch.rand((batch, 10), generator=g, dtype=torch.float64)`), those of the log aspect ratios of
#    the same attempts (`(batch, 10)`), then those of the corners (`(2, batch)`: top, left).
#    It must give exactly `views.sample_crop_boxes`'s boxes, fallback included.
# 8. **Checked** (`check("01.8", ...)` below): write the contrast step of the colour jitter for a
#    float batch `x` (B x 3 x H x W in $[0, 1]$) with one factor per image, `factor` (B,), as
#    torchvision's `adjust_contrast` and the library's `color_jitter` compute it.

# %%
from contrastive_lab import runtime
from contrastive_lab.exercises import check


def my_crop_boxes(batch, height, width, scale, ratio, seed):
    raise NotImplementedError  # your code here


check("01.7", my_crop_boxes)

# %%
def my_contrast(x, factor):
    raise NotImplementedError  # your code here


check("01.8", my_contrast)

# %%
print(runtime.chapter_report())
