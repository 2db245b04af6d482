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
# # 04 NT-Xent: the contrastive loss, built step by step
#
# Chapter 03 ended with a batch of embeddings $z = g(f(x))$, two per image. This chapter turns
# them into a number to minimise: SimCLR's **NT-Xent** loss, the *normalised, temperature-scaled
# cross-entropy* (Chen et al. 2020, Eq. 1). We build it with a handful of tensor operations,
# check it against `contrastive_lab.losses.nt_xent`, and then ask what it does: how the
# temperature $\tau$ decides which negatives matter, and what the loss does to the geometry of
# the embeddings (alignment and uniformity, Wang & Isola 2020).
#
# ## From softmax classification to instance discrimination
#
# A supervised classifier with class weights $w_1, \dots, w_C$ turns a feature $h$ into class
# probabilities with a softmax and is trained with the cross-entropy
#
# $$p(c \mid h) = \frac{\exp(w_c^\top h)}{\sum_{c'} \exp(w_{c'}^\top h)}, \qquad \mathcal L = -\log p(y \mid h).$$
#
# Without labels, Wu et al. (2018, Sec. 3.1, Eq. 2) made **every image its own class** and
# replaced the weight vector $w_i$ by the L2-normalised feature $v_i$ of image $i$ itself (a
# *non-parametric* softmax), with a temperature $\tau$:
# $p(i \mid v) = \exp(v_i^\top v / \tau) / \sum_j \exp(v_j^\top v / \tau)$. SimCLR keeps that
# classifier but takes its "classes" from the batch: $N$ images give $2N$ views, and for the
# anchor view $i$ the candidates are the other $2N-1$ views. The correct class is its partner
# $p(i)$ (the other view of the same image), the other $2(N-1)$ views are negatives. With the
# cosine similarity $s_{ik} = z_i^\top z_k / (\lVert z_i\rVert\,\lVert z_k\rVert)$:
#
# $$\ell_i = -\log \frac{\exp(s_{i,p(i)}/\tau)}{\sum_{k \ne i} \exp(s_{ik}/\tau)}, \qquad
# \mathcal L = \frac{1}{2N} \sum_{i=1}^{2N} \ell_i .$$
#
# That is a $(2N-1)$-way softmax cross-entropy with logits $s_{ik}/\tau$ and label $p(i)$. The
# name spells the recipe: **N**ormalised (cosine similarity, so every $z$ lives on the unit
# sphere), **T**emperature-scaled (divide by $\tau$), **X**-**ent** (cross-entropy).

# %%
import math
import time

import matplotlib.pyplot as plt
import torch
import torch.nn.functional as F
from einops import einsum, rearrange
from torch import nn

from contrastive_lab import losses
from contrastive_lab.evaluate import feature_alignment_uniformity
from contrastive_lab.runtime import pick, smoke_mode

torch.manual_seed(0)
chapter_start = time.perf_counter()
print("smoke mode:", smoke_mode())

# %% [markdown]
# ## Building it, one operation at a time
#
# A tiny batch: $N = 4$ images, embeddings of size $D = 16$. We fake the two views as noisy
# copies of one vector per image, so that the positive pairs really are similar. Float64 keeps
# the comparisons below exact to ~1e-12.

# %%
n, d, tau = 4, 16, 0.5
base = torch.randn(n, d, dtype=torch.float64)
z1 = base + 0.5 * torch.randn(n, d, dtype=torch.float64)  # view 1 of images 0..N-1
z2 = base + 0.5 * torch.randn(n, d, dtype=torch.float64)  # view 2 of the same images

# %% [markdown]
# **Step 1: one matrix of $2N$ views.** `rearrange` stacks the two views and flattens the view
# axis into the batch axis: rows $0..N-1$ are the first views, rows $N..2N-1$ the second views,
# so the partner of row $i$ is row $i + N$ (and of row $i + N$, row $i$).
#
# **Step 2: normalise.** After $z \leftarrow z / \lVert z \rVert$, a dot product *is* the cosine
# similarity. **Step 3: all pairwise similarities** in one `einsum`: $S = Z Z^\top$, a
# $2N \times 2N$ matrix.

# %%
z = rearrange([z1, z2], "view n d -> (view n) d")  # step 1: (2N, D)
z = F.normalize(z, dim=1)  # step 2: unit vectors
sim = einsum(z, z, "i d, j d -> i j")  # step 3: (2N, 2N) cosine similarities
print("z:", tuple(z.shape), " sim:", tuple(sim.shape))
print(sim.numpy().round(2))

# %% [markdown]
# The diagonal is 1: every view is identical to itself. That entry must not count as a
# candidate ($k \ne i$ in the denominator), otherwise the easiest "positive" is the anchor
# itself. **Step 4:** divide by $\tau$ and set the diagonal to $-\infty$; then
# $\exp(-\infty) = 0$ exactly, and the softmax over each row only sees the $2N-1$ real
# candidates. **Step 5:** the label of row $i$ is the column of its partner, $(i + N) \bmod 2N$.
# **Step 6:** `F.cross_entropy` computes $-\log \mathrm{softmax}$ with the log-sum-exp trick and
# averages over the $2N$ rows.

# %%
logits = sim / tau  # step 4a
self_mask = torch.eye(2 * n, dtype=torch.bool)
logits = logits.masked_fill(self_mask, float("-inf"))  # step 4b: k != i
targets = (torch.arange(2 * n) + n) % (2 * n)  # step 5: column of each row's positive
loss_by_hand = F.cross_entropy(logits, targets)  # step 6: mean over the 2N anchors
print("targets:", targets.tolist())
print(f"NT-Xent by hand: {loss_by_hand.item():.6f}")

# %% [markdown]
# Now the check. `losses.nt_xent` is the fast library version (it also handles multi-GPU
# negatives), and `losses.nt_xent_reference` is a slow transcription of SimCLR's Algorithm 1
# with explicit loops over anchors and plain `exp`/`log`; it orders the views interleaved,
# $z_{2k-1}, z_{2k}$, as the paper does. All three must agree, and so must their gradients.
# Collecting the six steps into one function lets us test more batches:

# %%
def nt_xent_by_hand(z1: torch.Tensor, z2: torch.Tensor, tau: float) -> torch.Tensor:
    """The six steps above (teaching copy; use contrastive_lab.losses.nt_xent in real code)."""
    n = z1.shape[0]
    z = F.normalize(rearrange([z1, z2], "view n d -> (view n) d"), dim=1)
    logits = einsum(z, z, "i d, j d -> i j") / tau
    logits = logits.masked_fill(torch.eye(2 * n, dtype=torch.bool, device=z.device), float("-inf"))
    return F.cross_entropy(logits, (torch.arange(2 * n, device=z.device) + n) % (2 * n))


for n_check, d_check, tau_check in [(4, 16, 0.5), (7, 3, 0.1), (32, 128, 0.07)]:
    a = torch.randn(n_check, d_check, dtype=torch.float64, requires_grad=True)
    b = torch.randn(n_check, d_check, dtype=torch.float64, requires_grad=True)
    mine, lib = nt_xent_by_hand(a, b, tau_check), losses.nt_xent(a, b, temperature=tau_check)
    ref = losses.nt_xent_reference(a, b, temperature=tau_check)
    torch.testing.assert_close(mine, lib)
    torch.testing.assert_close(mine, ref)
    grads_mine = torch.autograd.grad(mine, (a, b))
    grads_lib = torch.autograd.grad(lib, (a, b))
    for g_mine, g_lib in zip(grads_mine, grads_lib):
        torch.testing.assert_close(g_mine, g_lib)
    print(f"N={n_check:2d} D={d_check:3d} tau={tau_check}: loss {mine.item():.6f}  "
          "matches nt_xent and nt_xent_reference (values and gradients)")

# %% [markdown]
# ### Why $-\infty$ and log-sum-exp, not `exp` and divide
#
# Many implementations exponentiate the similarity matrix and divide by its row sums. With
# cosine similarities in $[-1, 1]$ the largest logit is $1/\tau$, and $e^{1/\tau}$ leaves the
# float32 range ($\approx 3.4 \times 10^{38}$, i.e. $e^{88.7}$) once $\tau < 1/88.7 \approx 0.011$.
# The ratio becomes $\infty / \infty$ = NaN. The cross-entropy form subtracts the row maximum
# before exponentiating and stays finite for any $\tau > 0$:

# %%
a32, b32 = z1.float(), z2.float()
for t in (0.5, 0.05, 0.01):
    zz = F.normalize(torch.cat([a32, b32]), dim=1)
    e = torch.exp(zz @ zz.T / t) * (1 - torch.eye(2 * n))  # naive: exp first, mask by multiplying
    naive = -torch.log(e[torch.arange(2 * n), targets] / e.sum(1)).mean()
    print(f"tau={t:<5}  naive exp/divide: {naive.item():10.4f}   losses.nt_xent: "
          f"{losses.nt_xent(a32, b32, temperature=t).item():10.4f}")

# %% [markdown]
# ## Seeing the $2N \times 2N$ matrix
#
# A bigger batch makes the structure visible: $N = 24$ images from 4 made-up "classes"
# (images of a class share a centre), two noisy views each, sorted by class. Left: the cosine
# similarities. Middle: the role of each entry for the loss (the masked diagonal, the two
# off-diagonals at offset $\pm N$ holding the positives, everything else a negative). Right: the
# softmax $p_{ik}$ of each row at $\tau = 0.5$, i.e. what the classifier believes.
#
# Look at the blocks: views of *other images of the same class* are similar to the anchor,
# but the loss counts them as negatives and pushes them away. Those are the hard negatives
# (sometimes "false negatives") that the temperature section below is about.

# %%
n_big, classes = 24, 4
centres = 2.0 * torch.randn(classes, 32)
label = torch.arange(n_big) % classes
label = label.sort().values
inst = centres[label] + 1.2 * torch.randn(n_big, 32)
v1, v2 = inst + 0.6 * torch.randn(n_big, 32), inst + 0.6 * torch.randn(n_big, 32)
zb = F.normalize(rearrange([v1, v2], "view n d -> (view n) d"), dim=1)
sim_big = einsum(zb, zb, "i d, j d -> i j")
roles = torch.full((2 * n_big, 2 * n_big), 1.0)  # 1 = negative
roles[torch.arange(2 * n_big), (torch.arange(2 * n_big) + n_big) % (2 * n_big)] = 2.0  # positive
roles.fill_diagonal_(0.0)  # self, masked
probs = torch.softmax((sim_big / 0.5).fill_diagonal_(float("-inf")), dim=1)

fig, axes = plt.subplots(1, 3, figsize=(11, 3.6))
im = axes[0].imshow(sim_big, cmap="RdBu_r", vmin=-1, vmax=1)
axes[0].set_title("cosine similarity $s_{ik}$")
fig.colorbar(im, ax=axes[0], fraction=0.046)
cmap = plt.matplotlib.colors.ListedColormap(["0.35", "#deebf7", "#2ca02c"])
axes[1].imshow(roles, cmap=cmap, vmin=-0.5, vmax=2.5)
axes[1].set_title("self (grey) / negative (blue) / positive (green)", fontsize=9)
im = axes[2].imshow(probs, cmap="magma")
axes[2].set_title(r"softmax $p_{ik}$ per row ($\tau$=0.5)")
fig.colorbar(im, ax=axes[2], fraction=0.046)
for ax in axes:
    ax.axhline(n_big - 0.5, color="k", lw=0.6)
    ax.axvline(n_big - 0.5, color="k", lw=0.6)
    ax.set_xlabel("candidate k  (view 1 | view 2)")
    ax.set_ylabel("anchor i")
fig.tight_layout()
same_class = (label.repeat(2)[:, None] == label.repeat(2)[None, :]) & (roles == 1)
print(f"mean similarity: positives {sim_big[roles == 2].mean():.2f}, same-class negatives "
      f"{sim_big[same_class].mean():.2f}, other negatives {sim_big[(roles == 1) & ~same_class].mean():.2f}")
print(f"softmax mass on the positive: {probs[roles == 2].mean():.2f}; on same-class negatives: "
      f"{probs[same_class].sum() / (2 * n_big):.2f} per row")

# %% [markdown]
# ## The gradient: temperature decides which negatives matter
#
# Write one anchor's loss with $p_{ik} = \exp(s_{ik}/\tau) / \sum_{j \ne i} \exp(s_{ij}/\tau)$:
#
# $$\ell_i = -\frac{s_{i,p(i)}}{\tau} + \log \sum_{k \ne i} e^{s_{ik}/\tau}
# \quad\Longrightarrow\quad
# \frac{\partial \ell_i}{\partial s_{ik}} = \frac{1}{\tau}\, p_{ik} \ \ (k \text{ a negative}), \qquad
# \frac{\partial \ell_i}{\partial s_{i,p(i)}} = -\frac{1}{\tau}\,\bigl(1 - p_{i,p(i)}\bigr) = -\frac{1}{\tau} \sum_{k\ \mathrm{neg}} p_{ik}.$$
#
# Two consequences. The positive is pulled with exactly the total force that pushes all
# negatives. And each negative's share of that push is its softmax weight: the *relative
# penalty* $r_{ik} = p_{ik} / \sum_{j\ \mathrm{neg}} p_{ij} = e^{s_{ik}/\tau} / \sum_{j\ \mathrm{neg}} e^{s_{ij}/\tau}$,
# which grows exponentially with the similarity. The loss is **hardness-aware**: negatives that
# already look like the anchor get most of the gradient, and $1/\tau$ sets how steeply
# (Wang & Liu 2021, "Understanding the Behaviour of Contrastive Loss", Sec. 3). First, autograd
# agrees with the formula:

# %%
s_row = torch.tensor([0.9, 0.7, 0.3, 0.0, -0.2, -0.5], dtype=torch.float64, requires_grad=True)
positive = 0  # candidate 0 is the positive; the others are negatives (self already removed)
for t in (0.1, 0.5):
    loss_row = F.cross_entropy(s_row[None] / t, torch.tensor([positive]))
    (grad,) = torch.autograd.grad(loss_row, s_row)
    p = torch.softmax(s_row / t, dim=0).detach()
    formula = p / t
    formula[positive] = -(1 - p[positive]) / t
    torch.testing.assert_close(grad, formula)
    print(f"tau={t}: dl/ds = {grad.numpy().round(3)}  matches (p - onehot)/tau")

# %% [markdown]
# Now a realistic number of candidates: a batch of $N = 256$ gives each anchor
# $2N - 2 = 510$ negatives. We give them an illustrative spread of similarities (most around 0,
# a few close to the anchor) and plot each negative's relative penalty $r$ against its
# similarity, for several temperatures. On a log axis $r \propto e^{s/\tau}$ is a straight line of
# slope $1/\tau$. On the right: the share of the total push that goes to the hardest 1% (5
# negatives) and the hardest 10%, and the *effective number* of negatives $e^{H(r)}$ (the
# exponential of the entropy of $r$: 510 when all are pushed equally, 1 when one takes all).

# %%
g = torch.Generator().manual_seed(1)
s_neg = (0.1 + 0.25 * torch.randn(510, generator=g, dtype=torch.float64)).clamp(-1, 1).sort(descending=True).values
taus = [0.05, 0.1, 0.2, 0.5, 1.0]
fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
rows = []
for t in taus:
    r = torch.softmax(s_neg / t, dim=0)  # relative penalty of each negative
    axes[0].semilogy(s_neg, r, label=rf"$\tau$={t}")
    entropy = -(r * r.log()).sum()
    rows.append((t, r[:5].sum().item(), r[:51].sum().item(), entropy.exp().item()))
axes[0].axhline(1 / 510, color="k", ls=":", lw=0.8)
axes[0].text(-0.55, 1.3 / 510, "uniform 1/510", fontsize=8)
axes[0].set(xlabel="similarity $s_{ik}$ of the negative", ylabel="relative penalty $r_{ik}$ (log)",
            title="share of the push per negative", ylim=(1e-12, 1.5))
axes[0].legend(fontsize=8)
tt = [row[0] for row in rows]
axes[1].semilogx(tt, [row[1] for row in rows], "o-", label="hardest 1% (5)")
axes[1].semilogx(tt, [row[2] for row in rows], "s-", label="hardest 10% (51)")
axes[1].set(xlabel=r"temperature $\tau$", ylabel="share of the total push", title="concentration on hard negatives")
ax2 = axes[1].twinx()
ax2.semilogx(tt, [row[3] for row in rows], "^--", color="C2", label="effective # negatives")
ax2.set_ylabel("effective # negatives $e^{H(r)}$", color="C2")
axes[1].legend(fontsize=8, loc="center right")
fig.tight_layout()
print(" tau   hardest 1%   hardest 10%   effective #negatives (of 510)")
for t, top1, top10, eff in rows:
    print(f"{t:4}   {top1:9.3f}   {top10:10.3f}   {eff:10.1f}")

# %% [markdown]
# The two limits make this exact (Wang & Liu 2021, Sec. 3). As $\tau \to 0$ the log-sum-exp
# becomes a max, and $\tau \ell_i \to \max\bigl(\max_{k\ \mathrm{neg}} s_{ik} - s_{i,p(i)},\, 0\bigr)$: a
# triplet loss with zero margin that only sees the single hardest negative. As
# $\tau \to \infty$, $e^{s/\tau} \approx 1 + s/\tau$ and
# $\ell_i \approx \log(2N-1) + \frac{1}{\tau}\bigl(\overline{s}_{i} - s_{i,p(i)}\bigr)$ with
# $\overline s_i$ the mean similarity over all $2N-1$ candidates: every negative is pushed
# equally, however easy. Numerically:

# %%
s_pos = torch.tensor(0.6, dtype=torch.float64)
cand = torch.cat([s_pos[None], s_neg])  # positive first
for t in (0.01, 0.001):
    ell = F.cross_entropy(cand[None] / t, torch.tensor([0]))
    print(f"tau={t:<6} tau*loss = {t * ell.item():.5f}   hinge max(max s_neg - s_pos, 0) = "
          f"{max(s_neg.max().item() - s_pos.item(), 0):.5f}")
for t in (100.0, 1000.0):
    ell = F.cross_entropy(cand[None] / t, torch.tensor([0]))
    print(f"tau={t:<6} tau*(loss - log K) = {t * (ell.item() - math.log(len(cand))):.5f}   "
          f"mean(s) - s_pos = {cand.mean().item() - s_pos.item():.5f}")

# %% [markdown]
# So a small temperature concentrates the gradient on the few negatives closest to the anchor,
# which spreads the embeddings out locally but is intolerant of near neighbours that are in
# truth the same kind of object; a large temperature treats all negatives alike and separates
# little. Wang & Liu call this the *uniformity-tolerance dilemma*. In practice $\tau$ is tuned:
# SimCLR's Table 5 shows that L2 normalisation plus a well-chosen $\tau$ matters a lot (their
# ImageNet default is 0.1); on CIFAR-10 App. B.9 finds 0.5 best among {0.1, 0.5, 1.0} after
# hundreds of epochs. Our CPU runs are far shorter, and in them the differences are small.
# Chapter 06's sweep on cifar10-mini (8 epochs, one seed per temperature) measured kNN on $h$ of
# 0.398, 0.401, 0.389, 0.382 and 0.367 at $\tau$ = 0.05, 0.1, 0.2, 0.5 and 1, and a linear probe
# best at 0.2 (0.437, against 0.410 at 0.1). So in these short runs a lower temperature is a little
# better for the kNN: 3.4 points from $\tau = 1$ to 0.1 (two seeds of one configuration differ by
# up to 1 point), with 0.05 to 0.2 within about a point of each other; the linear probe prefers
# 0.2. A modest effect, and no sign that 0.1 learns much faster. The demo preset
# `simclr-cifar10-cpu` uses 0.1, the best kNN of that sweep and of the screening behind the preset
# (BENCHMARKS.md); App. B.9's 0.5 is tuned for hundreds of epochs, which we do not run. MoCo uses
# 0.07 (He et al. 2019) and MoCo v2 0.2; CLIP learns $\tau$ (Radford et al. 2021, Sec. 2.5).
#
# ## Reading loss values
#
# Two facts make logged NT-Xent numbers interpretable. **At initialisation** all similarities
# are about equal, every candidate gets probability $1/(2N-1)$, and the loss is
# $\log(2N-1)$: 6.24 for a batch of 256. A training loss stuck there has learned nothing.
# **Conventions differ by a factor of 2**: our `nt_xent` (like most PyTorch code) is the mean over
# all $2N$ anchors, while SimCLR's TF code (`add_contrastive_loss`) returns `loss_a + loss_b`, the
# sum of the mean over the first-view anchors and the mean over the second-view anchors. Halve a
# number from the TF code before comparing (its gradients are 2x ours too, which the learning rate
# absorbs).

# %%
n_r = 256
r1, r2 = torch.randn(n_r, 128), torch.randn(n_r, 128)
print(f"random 128-d embeddings, N={n_r}: nt_xent = {losses.nt_xent(r1, r2, 0.5).item():.4f}, "
      f"log(2N-1) = {math.log(2 * n_r - 1):.4f}")

zz = F.normalize(rearrange([r1, r2], "view n d -> (view n) d"), dim=1)
lg = (zz @ zz.T / 0.5).fill_diagonal_(float("-inf"))
tg = (torch.arange(2 * n_r) + n_r) % (2 * n_r)
loss_a = F.cross_entropy(lg[:n_r], tg[:n_r])  # anchors from view 1 (TF: logits_ab, logits_aa)
loss_b = F.cross_entropy(lg[n_r:], tg[n_r:])  # anchors from view 2
tf_style = loss_a + loss_b
torch.testing.assert_close(tf_style, 2 * losses.nt_xent(r1, r2, 0.5))
print(f"TF convention loss_a + loss_b = {tf_style.item():.4f} = 2 x nt_xent  (checked)")

# %% [markdown]
# ## Alignment and uniformity
#
# Wang & Isola (2020) split what a contrastive loss asks for into two measurable properties of
# the normalised embeddings $f(x)$ on the sphere:
#
# $$\mathcal L_\text{align} = \mathbb E_{(x,y)\ \mathrm{pos}} \lVert f(x) - f(y) \rVert_2^{2}, \qquad
# \mathcal L_\text{uniform} = \log \mathbb E_{x, y\ \mathrm{i.i.d.}} e^{-2 \lVert f(x) - f(y) \rVert_2^2}$$
#
# (Eqs. 4-5 with $\alpha = t = 2$; lower is better for both). Alignment: positive pairs close.
# Uniformity: everything else spread over the sphere, so that the features keep as much
# information as possible. Their Theorem 1 makes the link exact: with $M$ negatives,
# $\lim_{M\to\infty} \bigl(\mathcal L_\text{NCE} - \log M\bigr) = -\frac{1}{\tau}\mathbb E\, f(x)^\top f(y)
# + \mathbb E_x \log \mathbb E_{x^-} e^{f(x)^\top f(x^-)/\tau}$; the first term is alignment
# ($\lVert u - v\rVert^2 = 2 - 2u^\top v$ on the sphere), the second is minimised by the uniform
# distribution. Neither alone is enough, as three extreme cases show (`losses.alignment`,
# `losses.uniformity`; `evaluate.feature_alignment_uniformity` wraps both for features):

# %%
m = 1024
u = F.normalize(torch.randn(m, 128), dim=1)
cases = {
    "collapsed (all equal)": (torch.ones(m, 128), torch.ones(m, 128)),
    "uniform, views unrelated": (u, F.normalize(torch.randn(m, 128), dim=1)),
    "uniform and perfectly aligned": (u, u.clone()),
}
print(f"{'embeddings (128-d, 1024 pairs)':32s} alignment   uniformity")
for name, (c1, c2) in cases.items():
    au = feature_alignment_uniformity(c1, c2)
    torch.testing.assert_close(au["alignment"], losses.alignment(c1, c2).item())
    print(f"{name:32s} {au['alignment']:8.3f}   {au['uniformity']:9.3f}")

# %% [markdown]
# ### A 2-D toy: NT-Xent spreads points over the circle
#
# Make the picture literal. 256 "images" are points $x_i \in \mathbb R^2$; a view adds a small
# random jitter; a small MLP maps a view to $\mathbb R^2$, which the loss normalises onto the
# circle $S^1$. We start the MLP almost collapsed (a large output bias points every input the
# same way) and train it with `losses.nt_xent` on all 256 pairs per step, for three temperatures.
# For reference, the uniform distribution on the circle has
# $\mathcal L_\text{uniform} = \log\bigl(e^{-4} I_0(4)\bigr) \approx -1.58$ ($I_0$ the modified
# Bessel function); a finite, evenly spread sample can land slightly below it.
# (The tensors here are tiny, so we run them on one thread: splitting such small operations
# over two cores costs more than it saves.)

# %%
n_toy, steps = pick(64, 256), pick(15, 400)
x_toy = torch.randn(n_toy, 2, generator=torch.Generator().manual_seed(0))


def jitter(x: torch.Tensor) -> torch.Tensor:
    """A 'view' of each toy point: a small random shift."""
    return x + 0.15 * torch.randn_like(x)


def toy_encoder() -> nn.Module:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(2, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 2))
    with torch.no_grad():
        net[-1].bias.copy_(torch.tensor([4.0, 0.0]))  # start nearly collapsed around angle 0
    return net


def measure(net: nn.Module) -> tuple[float, float, torch.Tensor, torch.Tensor]:
    with torch.no_grad():
        a, b = net(jitter(x_toy)), net(jitter(x_toy))
    return losses.alignment(a, b).item(), losses.uniformity(torch.cat([a, b])).item(), a, b


uniform_circle = math.log(math.exp(-4) * torch.special.i0(torch.tensor(4.0)).item())
threads = torch.get_num_threads()
torch.set_num_threads(1)
runs = {}
for t in (0.1, 0.5, 2.0):
    net = toy_encoder()
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    trace = [measure(net)[:2]]
    start = measure(net)
    for step in range(steps):
        loss = losses.nt_xent(net(jitter(x_toy)), net(jitter(x_toy)), temperature=t)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if (step + 1) % max(1, steps // 40) == 0:
            trace.append(measure(net)[:2])
    runs[t] = dict(trace=trace, start=start, end=measure(net), loss=loss.item())
    print(f"tau={t}: final NT-Xent {loss.item():.3f} (log(2N-1) = {math.log(2 * n_toy - 1):.3f}); "
          f"alignment {trace[0][0]:.3f} -> {trace[-1][0]:.3f}, uniformity {trace[0][1]:.3f} -> "
          f"{trace[-1][1]:.3f} (uniform distribution: {uniform_circle:.3f})")
torch.set_num_threads(threads)

# %%
def circle_plot(ax, a: torch.Tensor, b: torch.Tensor, title: str) -> None:
    a, b = F.normalize(a, dim=1), F.normalize(b, dim=1)
    hue = (torch.atan2(x_toy[:, 1], x_toy[:, 0]) + math.pi) / (2 * math.pi)  # colour = where x_i lies
    theta = torch.linspace(0, 2 * math.pi, 200)
    ax.plot(theta.cos(), theta.sin(), color="0.8", lw=1)
    for i in range(0, len(a), 4):  # a few positive pairs, joined by a line
        ax.plot([a[i, 0], b[i, 0]], [a[i, 1], b[i, 1]], color="0.5", lw=0.5)
    ax.scatter(a[:, 0], a[:, 1], c=hue, cmap="hsv", s=10)
    ax.scatter(b[:, 0], b[:, 1], c=hue, cmap="hsv", s=10, marker="x", lw=0.7)
    ax.set(aspect="equal", xlim=(-1.2, 1.2), ylim=(-1.2, 1.2), title=title, xticks=[], yticks=[])


fig, axes = plt.subplots(1, 3, figsize=(11, 3.7))
circle_plot(axes[0], *runs[0.5]["start"][2:], "start: nearly collapsed")
circle_plot(axes[1], *runs[0.5]["end"][2:], r"after NT-Xent, $\tau$=0.5")
for t, run in runs.items():
    al, un = zip(*run["trace"])
    axes[2].plot(un, al, "-", label=rf"$\tau$={t}")
    axes[2].plot(un[-1], al[-1], "o", color=axes[2].lines[-1].get_color())
axes[2].plot(*runs[0.5]["trace"][0][::-1], "k*", ms=10, label="start")
axes[2].axvline(uniform_circle, color="k", ls=":", lw=0.8)
axes[2].set(xlabel=r"$\mathcal{L}_{uniform}$ (lower = more spread)", ylabel=r"$\mathcal{L}_{align}$ (lower = pairs closer)",
            title="training trajectories")
axes[2].legend(fontsize=8)
fig.tight_layout()

# %% [markdown]
# The dots (view 1) and crosses (view 2) of each toy point stay together while the cloud opens
# up around the circle: starting from collapse (perfect alignment, no uniformity), uniformity
# falls to about the value of the uniform distribution while alignment gives up only a little.
# The colours (where each $x_i$ sits in the plane) come out ordered around the circle: nearby
# inputs land nearby, because a smooth network cannot tear them apart and the jitter makes close
# neighbours partly indistinguishable. The few long chords are pairs from the middle of the input
# cloud, where this network's map winds around the circle, so two jittered views can land on
# different sides.
#
# Now compare the temperatures in the printout and the trajectories. In this toy the small
# $\tau = 0.1$ keeps the pairs tighter (lower alignment) but spreads the points less evenly
# (higher uniformity) than $\tau = 0.5$ or 2. That is the hardness-aware gradient at work: at small
# $\tau$ only the few nearest negatives are pushed, so once every pair has some room around it,
# far-away points exert almost no force and nothing evens out the global spread; at large $\tau$
# every negative pushes, which is what the global uniformity measure rewards. Which side wins on
# real data depends on the data and the dimension: Wang & Liu (2021) report that on image
# datasets smaller temperatures give *more* uniform embeddings but less tolerance to
# semantically similar neighbours. Exercise 5 lets you probe the toy further.
#
# ## NT-Xent as a bound on mutual information
#
# NT-Xent is an instance of **InfoNCE** (van den Oord et al. 2018): with $K$ candidates per
# anchor (one positive, $K-1$ negatives), the optimal classifier's loss bounds the mutual
# information between the two views' embeddings,
# $I(z_i; z_{p(i)}) \ge \log K - \mathcal L_\text{InfoNCE}$ (CPC Sec. 2.3; Poole et al. 2019).
# For SimCLR $K = 2N - 1$, so one batch can certify at most $\log(2N-1)$ nats, one argument for
# large batches. The bound is loose and maximising MI alone does not explain good
# representations (Tschannen et al. 2020); chapter 09 derives it properly with CPC.

# %%
t_best = 0.5
bound = math.log(2 * n_toy - 1) - runs[t_best]["loss"]
print(f"toy, tau={t_best}: log(2N-1) - NT-Xent = {bound:.2f} nats (a lower bound on the views' MI, "
      f"capped at log(2N-1) = {math.log(2 * n_toy - 1):.2f})")
print(f"chapter 04 ran in {time.perf_counter() - chapter_start:.0f} s")

# %% [markdown]
# ## Exercises
#
# 1. SimCLR's Algorithm 1 orders the views interleaved, $z_{2k-1}, z_{2k}$. Change step 1 to
#    `rearrange([z1, z2], "view n d -> (n view) d")`, work out the new targets, and check that the
#    loss is unchanged.
# 2. Replace the $-\infty$ mask by $-10^9$, and then by 0 (i.e. forget the mask). Which one changes
#    the loss, and by how much at $\tau = 0.1$? Why is the unmasked loss never below
#    $\log 2$?
#    **Checked** (`check("04.2", ...)` below): first write NT-Xent by hand with the $-\infty$ mask,
#    `my_nt_xent(z1, z2, temperature)`, the mean over the $2N$ anchors; then try the two replacements.
# 3. Differentiate through the normalisation: show that
#    $\partial \ell_i / \partial z_i = \frac{1}{\tau \lVert z_i\rVert}(I - \hat z_i \hat z_i^\top)\bigl(\sum_k p_{ik}\hat z_k - \hat z_{p(i)}\bigr)$
#    (the gradient flowing through the anchor's own row) and check it with `torch.autograd.grad`.
#    Why is the gradient orthogonal to $\hat z_i$?
# 4. For the 510 negatives above, find the temperature at which the effective number of
#    negatives drops below 10. How does that change if the spread of similarities doubles?
# 5. In the 2-D toy, train with the alignment loss alone (no negatives). What happens to
#    uniformity? Then train with Wang & Isola's $\mathcal L_\text{align} + \lambda \mathcal L_\text{uniform}$
#    (`losses.alignment`, `losses.uniformity`) and compare the final picture with NT-Xent.
# 6. With a batch of 4096 (SimCLR's ImageNet default), what is the largest mutual information
#    NT-Xent can certify? What batch would you need to certify 20 nats?
#    **Checked** (`check_value("04.6", ...)` below): the first number, in nats.

# %%
from contrastive_lab import runtime
from contrastive_lab.exercises import check, check_value


def my_nt_xent(z1, z2, temperature):
    raise NotImplementedError  # your code here


check("04.2", my_nt_xent)

# %%
largest_certified_mi = None  # your number here (nats)
check_value("04.6", largest_certified_mi)

# %%
print(runtime.chapter_report())
