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
# # 09 Contrastive Predictive Coding: predicting the future in latent space
#
# Every method so far compared two *views* of one image. Contrastive Predictive Coding (van den
# Oord, Li & Vinyals 2018, "Representation Learning with Contrastive Predictive Coding"; CPC below)
# compares the **past with the future**: from what it has seen so far, a model must recognise what
# comes next. It is the paper that named the InfoNCE loss, and it works on any signal with an
# order: speech, text, reinforcement-learning observations, and images read top to bottom.
#
# **Why predict in latent space?** Predictive coding is an old idea in signal processing and
# neuroscience: a good representation of the present is one that predicts the future. Predicting
# the future *pixels* (or audio samples) with a generative model $p(x_{t+k} \mid c_t)$ spends most
# of the model on details that do not matter: the exact noise, the exact texture. CPC Sec. 2.1
# argues for predicting something smaller. The past and the future share a few *slow* variables
# (who is speaking, which object is in the picture) and CPC asks the model to capture exactly what
# they share, the mutual information
#
# $$I(x; c) = \sum_{x, c} p(x, c) \log \frac{p(x \mid c)}{p(x)}. \qquad \text{(CPC Eq. 1)}$$
#
# **The model** (CPC Sec. 2.2, Fig. 1) has three parts:
#
# * an encoder $g_\text{enc}$ maps each piece of the input to a latent, $z_t = g_\text{enc}(x_t)$;
# * an autoregressive network $g_\text{ar}$ summarises all latents up to now into a context,
#   $c_t = g_\text{ar}(z_{\le t})$; it **must not** look at $z_{t+1}, z_{t+2}, \dots$;
# * for each offset $k = 1..K$ a separate linear map $W_k$ scores a candidate future latent with
#   the log-bilinear model
#
# $$f_k(x_{t+k}, c_t) = \exp\big(z_{t+k}^\top W_k\, c_t\big). \qquad \text{(CPC Eq. 3)}$$
#
# $f_k$ is not a probability: CPC only asks it to be proportional to the **density ratio**
# $p(x_{t+k} \mid c_t) / p(x_{t+k})$ (Eq. 2), how much more likely $x_{t+k}$ became once we know
# the context. That is what the loss below achieves.

# %%
import itertools
import tempfile
import time
from pathlib import Path

import matplotlib.pyplot as plt
import torch
from matplotlib.colors import PowerNorm
from matplotlib.patches import Rectangle

from contrastive_lab import cpc, engine, plots
from contrastive_lab.data import load_book_data
from contrastive_lab.evaluate import linear_probe
from contrastive_lab.losses import cpc_info_nce
from contrastive_lab.methods import Batch, build_method, load_method, make_image_cpc
from contrastive_lab.presets import get_preset
from contrastive_lab.runtime import autocast_dtype, pick, smoke_mode

chapter_start = time.perf_counter()
torch.manual_seed(0)
print("smoke mode:", smoke_mode(), "| torch threads:", torch.get_num_threads())

# %% [markdown]
# ## InfoNCE, and why it bounds the mutual information
#
# Take one context $c_t$ and a set $X = \{x_1, \dots, x_N\}$ of $N$ candidates: one *positive*
# drawn from $p(x_{t+k} \mid c_t)$ (the real future) and $N-1$ *negatives* drawn from $p(x_{t+k})$
# (futures of other times and other sequences). InfoNCE is the cross-entropy of picking the
# positive (CPC Sec. 2.3):
#
# $$\mathcal L_N = -\mathbb E_X\left[\log \frac{f_k(x_{t+k}, c_t)}{\sum_{x_j \in X} f_k(x_j, c_t)}\right].
# \qquad \text{(CPC Eq. 4)}$$
#
# The probability that candidate $i$ is the positive is $\frac{p(x_i|c_t)\prod_{l\ne i}p(x_l)}{\sum_j p(x_j|c_t)\prod_{l\ne j}p(x_l)}
# = \frac{p(x_i|c_t)/p(x_i)}{\sum_j p(x_j|c_t)/p(x_j)}$ (Eq. 5), so the best possible $f_k$ is the
# density ratio. CPC App. A shows that even this optimal critic has a loss of at least
# $\log N - I(x_{t+k}; c_t)$; every other $f_k$ has a larger loss, so for any $f_k$
#
# $$I(x_{t+k}; c_t) \;\ge\; \log N - \mathcal L_N .$$
#
# Minimising the loss therefore *raises a lower bound* on the mutual information between the
# context and the future. Two consequences matter in practice: more negatives make the bound
# tighter, and the bound can never exceed $\log N$, however much information there is.
#
# We can watch both on a problem whose mutual information we know. Let $x, c \in \mathbb R^d$ be
# Gaussian, each coordinate pair with correlation $\rho$: then $I(x; c) = -\frac d2 \log(1-\rho^2)$
# and the log density ratio is, up to terms in $c$ alone (which cancel in Eq. 4),
# $\log\frac{p(x|c)}{p(x)} = \frac{\rho}{1-\rho^2}\, x^\top c - \frac{\rho^2}{2(1-\rho^2)}\, \lVert x\rVert^2$.
# That is bilinear in the features $z = (x, \lVert x\rVert^2)$ and $p = (\frac{\rho}{1-\rho^2} c,
# -\frac{\rho^2}{2(1-\rho^2)})$, so the library's `losses.cpc_info_nce(p, z)` evaluates $\mathcal L_N$
# with the *optimal* critic, a batch of $N$ pairs giving every row $N$ candidates.

# %%
def infonce_estimate(rho: float, d: int, n: int, repeats: int) -> float:
    """log N - L_N with the optimal critic, averaged over `repeats` batches of N Gaussian pairs."""
    estimates = []
    for _ in range(repeats):
        c = torch.randn(n, d, dtype=torch.float64)
        x = rho * c + (1 - rho**2) ** 0.5 * torch.randn(n, d, dtype=torch.float64)
        p = torch.cat([rho / (1 - rho**2) * c, torch.full((n, 1), -(rho**2) / (2 * (1 - rho**2)))], dim=1)
        z = torch.cat([x, x.pow(2).sum(1, keepdim=True)], dim=1)
        estimates.append(torch.log(torch.tensor(float(n))) - cpc_info_nce(p, z))
    return float(torch.stack(estimates).mean())


d, sizes = 10, [2, 8, 32, 128, 512, 2048]
fig, ax = plt.subplots(figsize=(5.2, 3.4))
for rho in (0.5, 0.9):
    true_mi = -d / 2 * torch.log(torch.tensor(1 - rho**2)).item()
    est = [infonce_estimate(rho, d, n, repeats=pick(1, 8)) for n in sizes]
    line = ax.plot(sizes, est, marker="o", label=rf"$\rho$={rho}: $\log N - \mathcal{{L}}_N$")[0]
    ax.axhline(true_mi, ls="--", color=line.get_color(), lw=1, label=f"true I = {true_mi:.2f} nats")
    print(f"rho={rho}: I={true_mi:.2f} nats; estimates " + ", ".join(f"N={n}: {e:.2f}" for n, e in zip(sizes, est)))
ax.plot(sizes, [torch.log(torch.tensor(float(n))).item() for n in sizes], color="gray", lw=1, label=r"$\log N$")
ax.set(xscale="log", xlabel="N (candidates per prediction)", ylabel="nats",
       title="InfoNCE lower-bounds the mutual information")
ax.legend(fontsize=7)
fig.tight_layout()

# %% [markdown]
# With little information ($\rho = 0.5$) a few dozen candidates already give a tight bound; with a
# lot ($\rho = 0.9$) the estimate hugs the $\log N$ ceiling and stays below the truth even at
# $N = 2048$. This is one reason contrastive methods like many negatives (and a known limit of
# InfoNCE as an MI *estimator*: Poole et al. 2019, "On Variational Bounds of Mutual Information").
# For representation learning we do not need the exact number: we need the encoder to keep what the
# past and the future share.
#
# ## 1-D CPC on a signal with a hidden cause
#
# A task where the future is predictable from the past **only through a hidden variable**:
# `cpc.make_oscillation_sequences` plays a noisy two-note chord. Each sequence has a hidden class
# $y$ that fixes the pitch (the period $T_y$ of the lower note; the upper note is a fifth above);
# amplitudes and start phases are random, white noise is added, and the phases drift like a random
# walk. To predict what comes next a model must work out which chord is playing (the slow, shared
# variable) and where in its cycle it is; the phase drift makes the near future easier to predict
# than the far future. After training we will ask a linear classifier whether the context $c_t$
# knows $y$ — nobody ever told the model that $y$ exists.

# %%
length = pick(128, 256)
seq_train = cpc.make_oscillation_sequences(pick(64, 2000), length=length, seed=0)
seq_test = cpc.make_oscillation_sequences(pick(64, 1000), length=length, seed=1)
print("periods of the lower note per class (samples):", [round(p, 1) for p in seq_train.periods.tolist()])
fig, axes = plt.subplots(3, 1, figsize=(6, 3.6), sharex=True)
for ax, cls in zip(axes, (0, 2, 5)):
    i = int((seq_train.labels == cls).nonzero()[0])
    ax.plot(seq_train.signals[i, :128].numpy(), lw=0.9)
    ax.set_ylabel(f"class {cls}", fontsize=8)
axes[-1].set_xlabel("time (samples)")
fig.suptitle("three sequences, three hidden classes", fontsize=9)
fig.tight_layout()

# %% [markdown]
# **The model.** `cpc.SignalEncoder` is $g_\text{enc}$: three convolutions without padding with
# strides 4, 2, 1 (CPC's audio encoder has five, strides 5, 4, 2, 2, 2, Sec. 3.1), so one latent
# covers a window of $R$ samples and consecutive latents are $S$ samples apart. $g_\text{ar}$ is a
# GRU, which reads left to right: $c_t$ has seen $z_1..z_t$ and nothing else. `cpc.SequenceCPC`
# adds $W_1, \dots, W_K$ (`nn.Linear` without bias) and the loss.
#
# **Causality, checked by autograd.** If $c_t$ could see the future, predicting it would be copying
# and the model would learn nothing useful. So we do not trust the architecture, we measure it: the
# gradient $\partial c_t / \partial x_s$ must be *exactly zero* for every input sample $s$ later
# than the last one $z_t$ covers, $s > tS + R - 1$.

# %%
torch.manual_seed(0)
seq_model = cpc.SequenceCPC(dim=32, context_dim=64, max_offset=8)
R, S = seq_model.encoder.receptive_field
T = seq_model.encoder.num_steps(length)
print(f"latent z_t covers R={R} samples, stride S={S}: {length} samples -> T={T} latents")
x = seq_test.signals[:1].clone().requires_grad_()
t_probe = 6
c = seq_model.contexts(seq_model.encode(x))
(grad,) = torch.autograd.grad(c[0, t_probe].sum(), x)
last_visible = t_probe * S + R - 1
assert torch.count_nonzero(grad[0, last_visible + 1 :]) == 0 and grad[0, last_visible] != 0
print(f"d c_{t_probe} / d x_s is exactly 0 for all s > {last_visible} (checked), nonzero at s = {last_visible}")
fig, ax = plt.subplots(figsize=(6, 2.6))
ax.plot(grad[0].abs().numpy(), lw=0.9)
ax.axvspan(last_visible + 0.5, length, color="tab:red", alpha=0.12, label="the future of c_t: gradient 0")
ax.set(xlabel="input sample s", ylabel=r"$|\partial c_t / \partial x_s|$", title=f"what c_{t_probe} depends on")
ax.legend(fontsize=7)
fig.tight_layout()

# %% [markdown]
# The gradient also shows something the formula hides: $c_t$ depends mostly on the *recent* past.
# A GRU's memory fades, which is fine here, because the hidden class is visible in every window.
#
# **Training.** Each step takes a batch of sequences and, for every offset $k$, scores each
# prediction $W_k c_t$ against every latent $z_s$ ($s \ge k$) of every sequence in the batch:
# $B (T - k)$ candidates, one of them the true future $z_{t+k}$, the others from other time steps
# and other sequences (`losses.cpc_loss`, which averages Eq. 4 over $k$; its loop twin
# `losses.cpc_loss_reference` spells out each term and the tests check they agree). Adam, as in CPC.

# %%
threads = torch.get_num_threads()
torch.set_num_threads(1)  # a model this small runs faster on one thread (less synchronisation)
t0 = time.perf_counter()
history = cpc.train_sequence_cpc(seq_model, seq_train.signals, steps=pick(3, 200), batch_size=16, lr=3e-3)
torch.set_num_threads(threads)
print(f"{len(history)} steps in {time.perf_counter() - t0:.0f} s; loss {history[0]['loss']:.2f} -> {history[-1]['loss']:.2f}")
smooth = torch.tensor([h["loss"] for h in history]).unfold(0, min(10, len(history)), 1).mean(1)
fig = plots.curve(list(range(len(smooth))), smooth.tolist(), "step", "loss (running mean of 10)", "1-D CPC training")

# %% [markdown]
# ## How far ahead can it see? Accuracy against $k$
#
# The InfoNCE task is a classification, so we can report its accuracy: how often the true future
# is the highest-scoring candidate. CPC Fig. 3 shows it for speech: high one step (10 ms)
# ahead, falling steadily as the prediction reaches 200 ms into the future. Our signal behaves the
# same way for the same reason: the phase drift erases the detail of the far future, and only the
# slow part (which chord) remains predictable.

# %%
def accuracy_per_offset(model: cpc.SequenceCPC, signals: torch.Tensor) -> list[float]:
    model.eval()
    with torch.no_grad():
        _, logs = model(signals)
    return [float(logs[f"acc_k{k}"]) for k in range(1, model.max_offset + 1)]


torch.manual_seed(1)
seq_random = cpc.SequenceCPC(dim=32, context_dim=64, max_offset=8)  # same architecture, untrained
batch = seq_test.signals[:64]
acc_trained, acc_random = accuracy_per_offset(seq_model, batch), accuracy_per_offset(seq_random, batch)
ks = list(range(1, seq_model.max_offset + 1))
chance = [1 / (len(batch) * (T - k)) for k in ks]
fig, ax = plt.subplots(figsize=(5, 3.2))
ax.plot(ks, acc_trained, marker="o", label="trained CPC")
ax.plot(ks, acc_random, marker="o", label="random network")
ax.plot(ks, chance, ls="--", color="gray", label=f"chance (1 / {len(batch)}(T-k))")
ax.set(xlabel="k (latent steps ahead)", ylabel="accuracy of picking the true future",
       title="prediction gets harder further ahead", ylim=(-0.02, 1.02))
ax.legend(fontsize=7)
fig.tight_layout()
for k in (1, 2, 4, 8):
    print(f"k={k}: trained {acc_trained[k - 1]:.3f}   random {acc_random[k - 1]:.3f}   chance {chance[k - 1]:.4f}")

# %% [markdown]
# ## Does the context know the hidden class?
#
# The model was trained only to predict. Now the test: freeze it, take the context $c_t$ of each
# sequence, and fit a linear classifier (`evaluate.linear_probe`) for the hidden class $y$ on the
# training sequences; report its accuracy on the test sequences. The baseline is the same probe on
# the untrained network: random features of a signal are not useless (a random GRU still summarises
# the recent signal), so the question is how much prediction *adds*. We probe at several times $t$:
# early contexts have seen only a few periods.

# %%
def contexts_at(model: cpc.SequenceCPC, signals: torch.Tensor, t: int) -> torch.Tensor:
    model.eval()
    with torch.no_grad():
        return model.contexts(model.encode(signals))[:, t]


probe_times = sorted({0, 2, 5, 10, T // 2, T - 1})
probe = {"trained CPC": [], "random network": []}
for t in probe_times:
    for name, model in (("trained CPC", seq_model), ("random network", seq_random)):
        out = linear_probe(contexts_at(model, seq_train.signals, t), seq_train.labels,
                           contexts_at(model, seq_test.signals, t), seq_test.labels, epochs=pick(5, 60))
        probe[name].append(out["top1"])
fig, ax = plt.subplots(figsize=(5, 3.2))
for name, accs in probe.items():
    ax.plot(probe_times, accs, marker="o", label=name)
ax.axhline(1 / len(seq_train.periods), ls="--", color="gray", label="chance")
ax.set(xlabel="t (context after t+1 latents)", ylabel="probe accuracy (test sequences)",
       title="a linear probe on $c_t$ reads the hidden class", ylim=(0, 1.02))
ax.legend(fontsize=7)
fig.tight_layout()
for t, a, b in zip(probe_times, probe["trained CPC"], probe["random network"]):
    print(f"t={t:2d}: probe on c_t, trained {a:.3f} vs random {b:.3f}")

# %% [markdown]
# ## CPC on images: predicting the rows below
#
# An image has no time axis, so CPC makes one (Sec. 3.2, Fig. 4): cut the image into a grid of
# overlapping patches, encode each patch on its own, and read the grid **top to bottom**: the
# context at row $i$ summarises the patches of rows $\le i$ and predicts the latents $1..K$ rows
# below. CPC cuts a 256-px image into a $7 \times 7$ grid of 64-px patches with stride 32
# (neighbours overlap by half) and predicts up to five rows ahead; CPC v2 (Hénaff et al. 2020,
# "Data-Efficient Image Recognition with Contrastive Predictive Coding") keeps the design and
# improves the training. On 32-px CIFAR images the same geometry is 8-px patches with stride 4:
# again a $7 \times 7$ grid.

# %%
train_set, test_set = load_book_data("train"), load_book_data("test")
DATA = train_set.name  # every number below is labelled with this name (cifar10-mini here, not CIFAR-10)
print(train_set)
PATCH, STRIDE = 8, 4
G = cpc.grid_size(32, PATCH, STRIDE)
image = train_set.images[7:8].float() / 255
patches = cpc.extract_patches(image, PATCH, STRIDE)  # (1, G, G, 3, 8, 8)
assert torch.equal(patches, cpc.extract_patches_reference(image, PATCH, STRIDE))
print(f"{G} x {G} grid of {PATCH}-px patches, stride {STRIDE}; patch tensor {tuple(patches.shape)}")

fig, (ax0, ax1) = plt.subplots(1, 2, figsize=(7.2, 3.5), gridspec_kw={"width_ratios": [1, 1.1]})
ax0.imshow(image[0].permute(1, 2, 0).numpy(), interpolation="nearest", extent=(0, 32, 32, 0))
corners = [(j * STRIDE, i * STRIDE) for i in range(G) for j in range(G)]
ax0.scatter(*zip(*corners), s=6, color="white", label="patch corners")
for (i, j), colour, style in (((0, 0), "tab:orange", "-"), ((0, 1), "yellow", "--"), ((1, 0), "tab:cyan", ":")):
    ax0.add_patch(Rectangle((j * STRIDE, i * STRIDE), PATCH, PATCH, fill=False, lw=2, ec=colour, ls=style,
                            label=f"patch ({i},{j})"))
ax0.legend(fontsize=6, loc="lower right")
ax0.set_title(f"{PATCH}-px patches every {STRIDE} px:\nneighbours share half their pixels", fontsize=8)
ax0.axis("off")
mosaic = torch.ones(3, G * (PATCH + 2), G * (PATCH + 2))
for i in range(G):
    for j in range(G):
        mosaic[:, i * (PATCH + 2) : i * (PATCH + 2) + PATCH, j * (PATCH + 2) : j * (PATCH + 2) + PATCH] = patches[0, i, j]
ax1.imshow(mosaic.permute(1, 2, 0).numpy(), interpolation="nearest")
ax1.set_title(f"the {G * G} patches the encoder sees", fontsize=8)
ax1.axis("off")
fig.tight_layout()

# %% [markdown]
# **The patch encoder** (`cpc.PatchConvNet`, wrapped by `cpc.PatchGridEncoder`) maps every patch to
# a vector $z_{i,j}$ by a few convolutions and a mean over the patch (CPC mean-pools a ResNet-v2-101
# per patch). Patches are processed as independent samples, so $z_{i,j}$ depends on patch $(i,j)$
# alone, **provided** no layer mixes samples. Batch norm does: its mean and variance are computed
# over all patches of all images in the batch, later rows included. CPC v2 (Sec. 4.1) replaces it
# with layer norm, which normalises each patch by its own statistics; we will see the leak below.
#
# **The context network** (`cpc.RowCausalContext`) is PixelCNN-style (van den Oord et al. 2016):
# convolutions over the $7 \times 7$ grid of latents whose kernels are **masked** so that output row
# $i$ only sees input rows $\le i$ (`cpc.RowCausalConv2d`). PixelCNN also hides the right half of the
# centre row, because it generates one pixel at a time; CPC predicts whole rows $k \ge 1$ below, so
# the centre row stays visible. Stacking masked layers grows the context upwards and sideways but
# never downwards.
#
# **Causality on overlapping patches.** Here "the future" needs a careful definition: the patch in
# row $i+1$ shares half its pixels with row $i$, so the context at row $i$ *does* depend on pixels
# that also appear in row $i+1$. That is allowed (CPC has the same overlap). What must not happen
# is a dependence on the *patches* of later rows. So we check causality with the patches as inputs:
# $\partial c_{i,j} / \partial\,\text{patch}_{i',j'} = 0$ exactly for every $i' > i$.

# %%
conv = cpc.RowCausalConv2d(1, 1, kernel_size=3)
torch.manual_seed(0)
img_model = make_image_cpc(patch_size=PATCH, stride=STRIDE, max_offset=3).train()  # LayerNorm, patch augmentation on
some = cpc.extract_patches(train_set.images[:4].float() / 255, PATCH, STRIDE).clone().requires_grad_()
_, ctx = img_model.context_from_patches(some)  # channels-last grids (B, G, G, D)
i0, j0 = 3, 3
(g_ctx,) = torch.autograd.grad(ctx[:, i0, j0].sum(), some, retain_graph=True)
dependence = g_ctx.abs().sum(dim=(0, 3, 4, 5))  # (G, G): how much c_{i0,j0} depends on each patch
assert torch.count_nonzero(dependence[i0 + 1 :]) == 0 and dependence[i0, j0] > 0
print(f"c at row {i0}: exactly zero gradient w.r.t. every patch of rows {i0 + 1}..{G - 1} (checked)")
for k in range(1, img_model.max_offset + 1):  # the prediction W_k c_i never sees row i + k
    (g_pred,) = torch.autograd.grad(img_model.predict(ctx, k)[:, i0].sum(), some, retain_graph=True)
    assert torch.count_nonzero(g_pred[:, i0 + 1 :]) == 0
print(f"predictions W_k c for rows {i0}+1..{i0}+{img_model.max_offset}: no gradient from those rows (checked)")

fig, (ax0, ax1) = plt.subplots(1, 2, figsize=(6.4, 3.0), gridspec_kw={"width_ratios": [1, 1.6]})
ax0.imshow(conv.mask.numpy(), cmap="gray", vmin=-0.3, vmax=1.2)
for (r, q), v in zip(itertools.product(range(3), range(3)), conv.mask.flatten().tolist()):
    ax0.text(q, r, f"{v:.0f}", ha="center", va="center", color="black" if v else "white")
for edge in (0.5, 1.5):
    ax0.axhline(edge, color="gray", lw=1), ax0.axvline(edge, color="gray", lw=1)
ax0.set_xticks([]), ax0.set_yticks([])
ax0.set_title("3x3 kernel mask: output row\n(centre) sees rows above and its own", fontsize=8)
shown = ax1.imshow(dependence.numpy(), cmap="viridis", norm=PowerNorm(gamma=0.4))
ax1.add_patch(Rectangle((j0 - 0.5, i0 - 0.5), 1, 1, fill=False, ec="red", lw=2))
for k in range(1, img_model.max_offset + 1):
    ax1.add_patch(Rectangle((j0 - 0.5, i0 + k - 0.5), 1, 1, fill=False, ec="white", lw=1, ls="--"))
ax1.set_title(rf"$|\partial c_{{{i0},{j0}}} / \partial$ patch$|$ (red: position," + "\ndashed: its targets k=1..3)",
              fontsize=8)
ax1.set(xlabel="column j", ylabel="row i")
fig.colorbar(shown, ax=ax1, fraction=0.046)
fig.tight_layout()

# %% [markdown]
# The same check with **batch norm** in the patch encoder (the usual choice in earlier patch-based
# self-supervision, e.g. Doersch et al. 2015), in training mode:

# %%
torch.manual_seed(0)
bn_model = make_image_cpc(patch_size=PATCH, stride=STRIDE, norm="batch", patch_augment=False).train()
for mode in ("train", "eval"):
    bn_model.train(mode == "train")
    _, ctx_bn = bn_model.context_from_patches(some)
    (g_bn,) = torch.autograd.grad(ctx_bn[:, 0].sum(), some)
    leak = g_bn[:, 1:].abs().max().item()
    print(f"batch norm, {mode} mode: largest |d c_row0 / d patch of rows 1..{G - 1}| = {leak:.2e}")
    assert (leak > 0) == (mode == "train")

# %% [markdown]
# In training mode every context depends on every patch of the batch, the rows it should predict
# included: through the batch statistics a network can smuggle information about the future into
# the context (CPC v2 Sec. 4.1 suspects exactly this "trivial solution" and gains accuracy by
# switching to layer norm). In eval mode BN uses its fixed running statistics and the leak is gone,
# which is why a causality test must run in **training mode**, as ours do (`tests/test_cpc.py`).
#
# ## CPC v2's per-patch augmentation
#
# With overlapping patches there are cheap ways to recognise the right future: continue the edges
# and colours of the shared pixels, match the colour cast of the whole image. CPC v2 makes such
# shortcuts useless by augmenting **every patch independently** (Sec. 4.1, Fig. 3: "RC" random
# colour-dropping keeps one of the three colour channels, and "PA" adds more per-patch
# augmentation). `cpc.PatchAugment` does a small random crop (shift by up to one pixel), a flip and
# colour dropping; it is active only in training mode.

# %%
aug = cpc.PatchAugment()
row = patches[0, 3]  # the 7 patches of row 3
params = aug.sample_params(len(row), generator=torch.Generator().manual_seed(3))
augmented = aug.apply(row, params)
torch.testing.assert_close(augmented, aug.apply_reference(row, params))
fig = plots.image_grid(torch.cat([row, augmented]).clamp(0, 1), nrow=G, scale=0.9,
                       titles=[f"(3,{j})" for j in range(G)] + [
                           ("only " + "RGB"[c] if c >= 0 else "RGB") + (", flip" if f else "")
                           for c, f in zip(params.keep_channel.tolist(), params.flip.tolist())])
fig.suptitle("row 3: original patches (top), augmented independently (bottom)", fontsize=8)
fig.tight_layout()

# %% [markdown]
# ("only R": the green and blue channels were dropped. Training images are normalised, so a dropped
# channel, like the border a shift uncovers, becomes the dataset mean; on these raw $[0,1]$ pixels it
# is black.)
#
# ## Training image CPC with the engine
#
# `method=cpc` is `methods.ImageCPC`: patches of the view -> per-patch augmentation -> $z$ -> masked
# context $c$ -> $W_1..W_K$ -> `losses.cpc_loss`. The negatives for a prediction at offset $k$ are all
# the other latents $k$ or more rows down, in the same image and in the other images of the batch
# ($B \cdot G \cdot (G-k)$ candidates). **CPC uses one view**: the engine hands a method as many views
# as it asks for (its `num_views`), and `ImageCPC` asks for one. `method.encoder` maps an image to the mean of its patch latents,
# the feature CPC evaluates, so the engine's kNN monitor and our linear probe work unchanged.
#
# The preset `cpc-cifar10-cpu` is the design above with Adam, batch 32 and image-level crop + flip.
# On two CPU cores the training below lasts a few minutes; CPC v2 trained a ResNet-161 for hundreds
# of TPU-hours. Expect a small gain over the random network, not CPC v2's numbers.

# %%
run_dir = Path(tempfile.mkdtemp(prefix="ch09-cpc-")) / "run"
cpc_cfg = get_preset("cpc-cifar10-cpu").replace(
    dataset="cifar10" if DATA.startswith("cifar10") else "synthetic",
    synthetic_size=len(train_set),
    subset=pick(128, 0),
    width=pick(0.125, 1.0),
    batch_size=pick(16, 32),
    epochs=pick(1, 4),
    max_steps=pick(2, 0),
    warmup_epochs=pick(0.0, 0.2),
    knn_every=0,
    time_budget_s=pick(0, 180),  # a safety net on a busy machine; the schedule is set by `epochs`
)
print("precision on this machine:", autocast_dtype("cpu") or "fp32")
result = engine.train(cpc_cfg, run_dir, verbose=False)
print(f"trained {result['step']} steps in {result['train_seconds']:.0f} s ({result['stop_reason']})")
print(f"kNN top-1 on {test_set.name} test: random init {result['knn_random']:.3f}, trained {result['knn_final']:.3f}")
rows = [r for r in engine.read_metrics(run_dir / "metrics.csv") if "loss" in r]
fig, axes = plt.subplots(1, 2, figsize=(8, 3.0))
plots.curve([r["step"] for r in rows], [r["loss"] for r in rows], "step", "loss", "image CPC loss", ax=axes[0])
for k in range(1, cpc_cfg.options.cpc_offsets + 1):
    plots.curve([r["step"] for r in rows], [r[f"acc_k{k}"] for r in rows], "step", "accuracy",
                "training accuracy per offset", label=f"k={k}", ax=axes[1])

# %% [markdown]
# ### Accuracy against $k$ for images
#
# Loaded back from the checkpoint, the model is evaluated on test images in eval mode (no patch
# augmentation). As for the signals, the row just below is much easier to predict than three rows
# down, where the patches no longer share any pixels with what the context has seen.

# %%
_, trained_method = load_method(run_dir / "checkpoints" / "last.pt")  # the library's one checkpoint reader
torch.manual_seed(cpc_cfg.seed)
random_method = build_method(cpc_cfg)  # the engine's initial weights: same seed, same builder
n_eval = cpc_cfg.batch_size  # one test batch of the training batch size: same number of candidates
test_batch = Batch([engine.config_eval_transform(cpc_cfg)(test_set.images[:n_eval])], torch.arange(n_eval))
img_acc = {}
for name, method in (("trained CPC", trained_method), ("random network", random_method)):
    method.eval()
    with torch.no_grad():
        _, logs = method(test_batch)
    img_acc[name] = [float(logs[f"acc_k{k}"]) for k in range(1, cpc_cfg.options.cpc_offsets + 1)]
ks_img = list(range(1, cpc_cfg.options.cpc_offsets + 1))
fig, ax = plt.subplots(figsize=(4.6, 3.1))
for name, accs in img_acc.items():
    ax.plot(ks_img, accs, marker="o", label=name)
ax.plot(ks_img, [1 / (n_eval * G * (G - k)) for k in ks_img], ls="--", color="gray", label="chance")
ax.set(xlabel="k (rows ahead)", ylabel="accuracy", xticks=ks_img, title=f"image CPC on {test_set.name} test")
ax.legend(fontsize=7)
fig.tight_layout()
for k, a, b in zip(ks_img, img_acc["trained CPC"], img_acc["random network"]):
    print(f"k={k}: trained {a:.3f}   random {b:.3f}   ({n_eval * G * (G - k)} candidates, {test_set.name} test)")

# %% [markdown]
# ### Linear evaluation on pooled patch features
#
# The representation of an image is the mean of its 49 patch latents (CPC Sec. 3.2; CPC v2 Sec.
# 2.2). A linear classifier on it (`evaluate.linear_probe`, frozen features, standardised, Adam)
# for the trained network and, as the baseline, the same network at its random initialisation.

# %%
cpu = torch.device("cpu")
n_train, n_test = pick(256, len(train_set)), pick(128, len(test_set))
probe_top1 = {}
for name, method in (("random network", random_method), ("trained CPC", trained_method)):
    f_train = engine.encode(method.encoder, train_set.images[:n_train], cpc_cfg, cpu)
    f_test = engine.encode(method.encoder, test_set.images[:n_test], cpc_cfg, cpu)
    out = linear_probe(f_train, train_set.labels[:n_train], f_test, test_set.labels[:n_test], epochs=pick(5, 100))
    probe_top1[name] = out["top1"]
    print(f"linear probe on pooled patch features, {name}: top-1 {out['top1']:.3f} on {test_set.name} test "
          f"({f_train.shape[1]}-d, train top-1 {out['train_top1']:.3f})")
fig, ax = plt.subplots(figsize=(4.2, 3.0))
bars = ax.bar(list(probe_top1), list(probe_top1.values()), color=["tab:gray", "tab:blue"])
ax.bar_label(bars, fmt="%.3f", fontsize=8)
ax.axhline(0.1, ls="--", color="gray", lw=1, label="chance (10 classes)")
ax.legend(fontsize=7)
ax.set(ylabel="linear probe top-1", title=f"pooled patch features ({test_set.name} test)", ylim=(0, 1))
fig.tight_layout()
print(f"chapter ran in {time.perf_counter() - chapter_start:.0f} s")

# %% [markdown]
# A random convolutional network is a surprisingly strong baseline for a linear probe on small
# images: random filters already respond to colours and edges. What CPC adds in a few CPU minutes is
# modest; `benchmarks/cpc_probe.py` runs the same comparison under a fixed budget and records it in
# `benchmarks/results/cpc_probe.json`. CPC v2 closes the gap to supervised features with far more
# of everything: a ResNet-161 patch encoder, larger patches, predictions in several directions.
#
# ## Summary
#
# * CPC learns by predicting the future in latent space: $z_t = g_\text{enc}(x_t)$,
#   $c_t = g_\text{ar}(z_{\le t})$, scores $z_{t+k}^\top W_k c_t$ (Eq. 3), and InfoNCE (Eq. 4) picks
#   the true future among $N$ candidates from other times and other sequences.
# * $\log N - \mathcal L_N$ is a lower bound on $I(x_{t+k}; c_t)$ (Sec. 2.3, App. A), capped at $\log N$.
# * Everything depends on **causality**; check it with autograd, in training mode, with the
#   inputs whose order matters (patches, not the shared pixels). Batch norm breaks it; layer norm
#   does not (CPC v2).
# * Predicting further ahead is harder; the information that survives is the slow, shared part
#   (the hidden pitch of a signal, the content of an image).
#
# ## Exercises
#
# 1. **Negatives.** Change `losses.cpc_loss` in a copy so that the candidates come *only* from the same
#    sequence (other time steps) and retrain the 1-D model. What happens to the accuracy at $k=1$,
#    and to the probe on $c_t$? Then only from other sequences. Which negatives teach the hidden class?
# 2. **Phase drift.** Regenerate the sequences with `phase_noise=0` and with `phase_noise=0.2`, and
#    redraw accuracy against $k$. Explain the difference with CPC's "slow features" argument.
# 3. **The bound.** In the Gaussian experiment, replace the optimal critic by a learned bilinear one
#    ($p = W c$, $z = x$, no $\lVert x\rVert^2$ feature) trained with `cpc_info_nce`. How close does it get
#    to the optimal $\log N - \mathcal L_N$, and why can it not reach it?
# 4. **Batch norm.** Train `cpc-cifar10-cpu` with `cpc_norm=batch` for the same number of steps.
#    Compare the training accuracy at $k=1$ and the linear probe with the layer-norm run. Which one
#    "predicts" better, and which one learns the better representation?
# 5. **Bottom-up.** CPC v2 also predicts upwards ("BU" in its Fig. 3). Flip the images vertically
#    (`view.flip(-2)`) inside a small subclass of `methods.ImageCPC`, sum the two losses, and compare.
# 6. **A row-wise GRU.** Replace `cpc.RowCausalContext` with a GRU that reads the mean latent of each
#    row from top to bottom. Write the autograd causality test first, then compare the probe.
# 7. **One offset by hand** *(checked: `09.7`)*. Write `my_cpc_offset_loss(latents, contexts, w, k)`: the
#    InfoNCE $\mathcal L_k$ of Eq. 4 for the single offset $k$, with latents (B, T, ..., D), contexts
#    (B, T, ..., C) and $W_k$ = `w` of shape (D, C), and the candidates of `losses.cpc_loss`. It is checked
#    against `losses.cpc_loss_reference`, on sequences and on a grid of image patches.
# 8. **Chance level** *(checked: `09.8`)*. A predictor that scores every candidate alike ($W_k = 0$)
#    has which loss, for a batch of 8 sequences of 20 steps at $k = 4$? Relate it to the cap
#    $\log N$ of the bound.

# %%
from contrastive_lab.exercises import check


def my_cpc_offset_loss(latents, contexts, w, k):
    """CPC's InfoNCE L_k for the one offset k (a scalar tensor)."""
    raise NotImplementedError  # your code here


check("09.7", my_cpc_offset_loss)

# %%
from contrastive_lab.exercises import check_value

chance_loss = None  # your number: the loss of W_k = 0 for 8 sequences of 20 steps, k = 4
check_value("09.8", chance_loss)

# %%
from contrastive_lab import runtime

print(runtime.chapter_report())
