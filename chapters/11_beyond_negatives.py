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
# # 11 Beyond negatives: BYOL, SimSiam, DINO, Barlow Twins
#
# Every method so far needed **negatives**: the other images of the batch (SimCLR), a queue
# (MoCo), a memory bank (InstDisc). Negatives are what push embeddings apart; without them, what
# stops a network from giving every image the same vector? This chapter is about four methods that
# train without a single negative pair and still learn: BYOL (Grill et al. 2020), SimSiam (Chen & He
# 2021), DINO (Caron et al. 2021) and Barlow Twins (Zbontar et al. 2021). For each we write the loss,
# compute it by hand and check it against the library, and then **take it apart**: we remove the one
# ingredient the paper says prevents collapse and watch the embedding collapse (or, honestly, not).
#
# ## The collapse problem
#
# Take a Siamese network $f_\theta$ and two views $x_1, x_2$ of an image $x$. The simplest
# "pull the views together" objective is
#
# $$\mathcal{L}(\theta) = \mathbb{E}_{x}\,\mathbb{E}_{x_1, x_2 \sim T(x)}
#   \left\| \frac{f_\theta(x_1)}{\|f_\theta(x_1)\|} - \frac{f_\theta(x_2)}{\|f_\theta(x_2)\|} \right\|^2
#   = 2 - 2\,\mathbb{E}\cos\big(f_\theta(x_1), f_\theta(x_2)\big) \;\ge 0 .$$
#
# A **constant** network, $f_\theta(x) = c$ for every input, reaches the global minimum
# $\mathcal{L} = 0$: both views map to $c$, their cosine is 1. Nothing in the loss prefers a
# useful representation to this one; worse, the constant is easy to reach (set the last layer's
# weights to 0 and its bias to $c$), so gradient descent tends to find it. This is **complete
# collapse**. There is a milder form, **dimensional collapse** (Jing, Vincent, LeCun & Tian 2022):
# the embeddings vary, but only inside a subspace of dimension $k \ll d$, so most of the $d$
# dimensions carry nothing.
#
# Contrastive losses rule the constant out with a repulsive term: InfoNCE's denominator
# $\sum_k \exp(\cos(z, z_k)/\tau)$ is largest, the loss worst, when all $z_k$ coincide (chapter 04's
# *uniformity*). The four methods here have no such term. Each breaks the trivial optimum
# differently:
#
# | method | what stops collapse | the ablation we train |
# |---|---|---|
# | BYOL | a predictor on the online side, a slow EMA target without gradient | no predictor; EMA momentum 0 |
# | SimSiam | a predictor and a **stop-gradient** on the target branch (no EMA at all) | no stop-gradient |
# | DINO | the teacher's output **centred** and **sharpened** (an EMA teacher) | no centering; no sharpening |
# | Barlow Twins | the loss itself: cross-correlation of the two views driven to the identity | $\lambda = 0$ (no off-diagonal term) |

# %%
import json
import math
import tempfile
import time
from pathlib import Path

import matplotlib.pyplot as plt
import torch
import torch.nn.functional as F

import contrastive_lab
from contrastive_lab import runtime
from contrastive_lab.collapse import (
    effective_rank,
    effective_rank_reference,
    normalized_std,
    normalized_std_reference,
)
from contrastive_lab.data import load_book_data
from contrastive_lab.engine import config_eval_transform, open_run, run_steps
from contrastive_lab.evaluate import feature_collapse
from contrastive_lab.losses import (
    barlow_twins_loss,
    barlow_twins_loss_reference,
    byol_loss,
    byol_loss_reference,
    dino_loss,
    dino_loss_reference,
    simsiam_loss,
    simsiam_loss_reference,
    teacher_probabilities,
)
from contrastive_lab.methods import Batch, build_method
from contrastive_lab.presets import get_preset
from contrastive_lab.runtime import pick
from contrastive_lab.views import BatchedViews, get_recipe

chapter_start = time.perf_counter()
torch.manual_seed(0)
train_set = load_book_data("train")
test_set = load_book_data("test")
DATA = train_set.name  # every number measured on it is labelled with this name
print(f"{train_set.name}: {len(train_set)} training / {len(test_set)} test images; smoke mode: {runtime.smoke_mode()}")

# %% [markdown]
# ## Measuring collapse
#
# Before the methods, the instruments. Both are logged by every method of this chapter at every
# training step (`z_std`, `z_rank`, from `contrastive_lab.collapse`).
#
# **The std of the normalised output** (SimSiam, Sec. 4.1 and Fig. 2). Normalise each embedding,
# $u_i = z_i / \|z_i\|$, take the standard deviation over the batch of each of the $d$ coordinates
# and average:
#
# $$\mathrm{std}(z) = \frac{1}{d}\sum_{j=1}^{d} \operatorname{std}_i\big(u_{ij}\big).$$
#
# A collapsed batch (every $u_i$ the same) gives 0. For an isotropic Gaussian $z \sim N(0, I_d)$,
# $u$ is uniform on the sphere, $\mathbb{E}[u_j] = 0$ and by symmetry
# $\mathbb{E}[u_j^2] = \mathbb{E}[\sum_j u_j^2]/d = 1/d$, so each coordinate has std $1/\sqrt d$.
# SimSiam's Fig. 2 shows the healthy run near $1/\sqrt d$ and the run without stop-gradient at 0.
#
# **The effective rank** (RankMe, Garrido, Balestriero, Najman & LeCun 2023, Eq. 1). With
# $\sigma_1 \ge \dots \ge \sigma_{\min(N,d)}$ the singular values of the $N \times d$ matrix of
# embeddings and $p_k = \sigma_k / \sum_l \sigma_l + \varepsilon$,
#
# $$\operatorname{rank}_{\mathrm{eff}}(Z) = \exp\Big(-\sum_k p_k \log p_k\Big),$$
#
# the exponential of the entropy of the normalised spectrum: 1 if one singular value carries
# everything (every row on one line), $\min(N, d)$ if all are equal. It sees dimensional collapse,
# which the std averages away. We check both on batches whose answer we know, against their NumPy
# twins, and add one batch that fools the std: rank one, but with random signs, which is what a
# network *with batch norm on its output* (SimSiam's projector ends in BN) can still produce.

# %%
g = torch.Generator().manual_seed(0)
n, d = 2048, 64
direction = torch.randn(1, d, generator=g, dtype=torch.float64)
batches = {
    "collapsed (one ray)": direction * torch.rand(n, 1, generator=g, dtype=torch.float64),
    "isotropic N(0, I)": torch.randn(n, d, generator=g, dtype=torch.float64),
    "8-dim subspace": torch.randn(n, 8, generator=g, dtype=torch.float64)
    @ torch.linalg.qr(torch.randn(d, 8, generator=g, dtype=torch.float64))[0].T,
    "one line, random signs": direction * torch.randn(n, 1, generator=g, dtype=torch.float64),
}
print(f"d = {d}: an isotropic batch should have std 1/sqrt(d) = {d ** -0.5:.4f} and effective rank close to {d}")
for name, z in batches.items():
    std, rank = normalized_std(z), effective_rank(z)
    assert abs(float(std) - normalized_std_reference(z)) < 1e-9 * max(1.0, float(std))
    assert abs(float(rank) - effective_rank_reference(z)) < 1e-9 * float(rank)
    print(f"  {name:24s} std {float(std):.4f}   ({float(std) * d ** 0.5:.2f} x 1/sqrt(d))   effective rank {float(rank):6.2f}")
signs = batches["one line, random signs"]
expected = float((direction.abs() / direction.norm()).mean())  # u_i = +-a/|a|: coordinate j has std ~ |a_j|/|a|
assert abs(float(normalized_std(signs)) - expected) < 0.01
print(f"the signed line: std = mean_j |a_j|/|a| = {expected:.4f}, close to healthy, yet rank 1: watch both numbers")

# %% [markdown]
# The collapsed ray has std 0 and rank 1; the isotropic batch sits at $1/\sqrt d$ and near rank $d$
# (slightly below: a finite sample's singular values spread, Marchenko-Pastur, `tests/test_noncontrastive.py`
# derives the expected value); the subspace batch has rank close to 8 with a std that is not 0.
# The last line is the warning: a batch on a single line through the origin, with random signs, has
# a std near the healthy value. Keep an eye on the effective rank.
#
# ## BYOL: a predictor and a slow target
#
# BYOL (Grill et al. 2020, Sec. 3.1, Fig. 2) has an **online** network (encoder $f_\theta$,
# projector $g_\theta$, predictor $q_\theta$) and a **target** network ($f_\xi$, $g_\xi$, no
# predictor) whose weights are an exponential moving average of the online ones:
#
# ```
#   view x1 ──► f_θ ──► g_θ ──► z1 ──► q_θ ──► p1 ──┐
#                                                  ├──► L = ‖p̄1 − z̄'2‖²  (+ the same with 1 ↔ 2)
#   view x2 ──► f_ξ ──► g_ξ ──► z'2 ── (no grad) ──┘
#               ▲
#               └── ξ ← τ ξ + (1 − τ) θ   after every optimiser step (EMA)
# ```
#
# $$\mathcal{L}_{\theta,\xi} = \left\| \bar q_\theta(z_1) - \bar z'_2 \right\|^2 = 2 - 2\,\frac{\langle q_\theta(z_1), z'_2\rangle}{\|q_\theta(z_1)\|\,\|z'_2\|}
#   \quad\text{(Eq. 2)},\qquad \mathcal{L}^{\mathrm{BYOL}} = \mathcal{L} + \tilde{\mathcal{L}} \quad\text{(Eq. 3)},$$
#
# where $\bar v = v/\|v\|$ and $\tilde{\mathcal L}$ swaps the views. Only $\theta$ gets the gradient;
# $\xi \leftarrow \tau\xi + (1-\tau)\theta$ with $\tau$ rising from $\tau_{\mathrm{base}}$ to 1 on a
# cosine (Sec. 3.2). BYOL's Table 5 shows both ingredients matter: without the predictor, or with
# $\tau = 0$ (the target *is* the online network), it collapses to well under 1 % top-1 after
# 300 epochs. We compute one step's loss by hand from the model's own networks and compare it with
# the model's forward, with `losses.byol_loss` and with its loop twin.

# %%
tiny = dict(width=0.125, precision="fp32", image_size=16)
byol = build_method(get_preset("byol-cifar10-cpu").replace(proj_dim=32, hidden_dim=64, predictor_hidden_dim=64, **tiny))
views = BatchedViews(get_recipe("simclr_cifar", size=16))
x = train_set.images[:16]
v1, v2 = views(x, g), views(x, g)
byol.train()
z1, z2 = byol.head(byol.encoder(v1)), byol.head(byol.encoder(v2))
p1, p2 = byol.predictor(z1), byol.predictor(z2)
with torch.no_grad():
    t1, t2 = byol.target_head(byol.target_encoder(v1)), byol.target_head(byol.target_encoder(v2))
by_hand = ((F.normalize(p1, dim=1) - F.normalize(t2, dim=1)) ** 2).sum(1).mean() \
    + ((F.normalize(p2, dim=1) - F.normalize(t1, dim=1)) ** 2).sum(1).mean()
loss_model, byol_logs = byol(Batch([v1, v2], torch.arange(16)))
torch.testing.assert_close(by_hand, loss_model, rtol=1e-5, atol=1e-6)
torch.testing.assert_close(by_hand, byol_loss(p1, t2) + byol_loss(p2, t1), rtol=1e-5, atol=1e-6)
torch.testing.assert_close(by_hand, byol_loss_reference(p1, t2) + byol_loss_reference(p2, t1), rtol=1e-5, atol=1e-6)
loss_model.backward()
assert all(p.grad is None for p in byol.target_encoder.parameters())  # the target gets no gradient
print(f"BYOL loss by hand {float(by_hand.detach()):.5f} = model forward {float(loss_model.detach()):.5f} = losses.byol_loss; "
      f"target untouched by backward; at init z1 has std {float(byol_logs['z_std']):.3f} "
      f"(1/sqrt(d) = {32 ** -0.5:.3f}) and effective rank {float(byol_logs['z_rank']):.1f}")

# %% [markdown]
# ## SimSiam: the stop-gradient
#
# SimSiam (Chen & He 2021, Sec. 3, Algorithm 1) keeps BYOL's predictor and drops the EMA: one
# network $f$ (encoder + projector) on both views, a predictor $h$, and a stop-gradient on the
# branch that plays the target.
#
# ```
#   x1 ──► f ──► z1 ──► h ──► p1 ──┐          ┌── p2 ◄── h ◄── z2 ◄── f ◄── x2
#                │                 ▼          ▼                  │
#                │            D(p1, sg(z2))  D(p2, sg(z1))       │
#                └──── sg(z1) ───────────────┘ └─────── sg(z2) ──┘      sg = stop-gradient
# ```
#
# $$\mathcal D(p, z) = -\frac{p}{\|p\|}\cdot\frac{z}{\|z\|}\ \text{(Eq. 1)},\qquad
#   \mathcal L = \tfrac12\,\mathcal D\big(p_1, \mathrm{sg}(z_2)\big) + \tfrac12\,\mathcal D\big(p_2, \mathrm{sg}(z_1)\big)\ \text{(Eq. 4)}.$$
#
# Without the stop-gradient the same network collapses "immediately" (Sec. 4.1, Fig. 2: the std of
# $z/\|z\|$ falls to 0, kNN accuracy to chance). Sec. 5 reads SimSiam as an alternating
# optimisation: with $\mathrm{sg}$, $z$ is a fixed target for one step and $h$ learns to predict
# its expectation over views. By hand, including the gradient: with the stop-gradient no
# gradient reaches $z$ through the target slot.

# %%
gen = torch.Generator().manual_seed(1)
p1_, p2_, z1_, z2_ = (torch.randn(8, 16, generator=gen, dtype=torch.float64, requires_grad=True) for _ in range(4))
by_hand = -0.5 * (F.cosine_similarity(p1_, z2_.detach()).mean() + F.cosine_similarity(p2_, z1_.detach()).mean())
torch.testing.assert_close(by_hand, simsiam_loss(p1_, p2_, z1_, z2_))
torch.testing.assert_close(by_hand, simsiam_loss_reference(p1_, p2_, z1_, z2_))
simsiam_loss(p1_, p2_, z1_, z2_, stop_gradient=True).backward()
assert z1_.grad is None and z2_.grad is None and p1_.grad is not None
simsiam_loss(p1_, p2_, z1_, z2_, stop_gradient=False).backward()
print(f"SimSiam loss by hand {float(by_hand):.5f} = losses.simsiam_loss; with stop-gradient z gets no gradient, "
      f"without it |grad z1| = {float(z1_.grad.norm()):.3f}")

# %% [markdown]
# ## DINO: centering and sharpening
#
# DINO (Caron et al. 2021, Sec. 3.1, Algorithm 1) distils a **teacher** into a **student** of the
# same architecture. Both map a view to $K$ scores; the teacher is an EMA of the student. The
# student's scores are softened by $\tau_s$, the teacher's are **centred** (minus $c$, an EMA of the
# teacher's batch means) and **sharpened** (a smaller temperature $\tau_t < \tau_s$):
#
# ```
#   x1 ──► student g_s ──► softmax(· / τs) ──► P_s(x1) ──┐
#                                                       ├──► H(P_t(x2), P_s(x1))  (+ swapped)
#   x2 ──► teacher g_t ──► − c ──► softmax(· / τt) ──► P_t(x2)   (no grad)
#             ▲                ▲
#             │                └── c ← m c + (1 − m) mean_batch g_t(x)      (Eq. 4)
#             └── θ_t ← λ θ_t + (1 − λ) θ_s                                (EMA)
# ```
#
# $$P_t(x) = \operatorname{softmax}\!\Big(\frac{g_t(x) - c}{\tau_t}\Big),\quad
#   P_s(x) = \operatorname{softmax}\!\Big(\frac{g_s(x)}{\tau_s}\Big),\quad
#   \mathcal L = \operatorname*{mean}_{x \in \{x_1, x_2\},\ x' \ne x} H\big(P_t(x), P_s(x')\big),\quad
#   H(a, b) = -\sum_k a_k \log b_k \quad\text{(Eq. 1-4)}.$$
#
# The two operations pull in opposite directions (Sec. 5.3, Fig. 7). Centering stops one
# prototype from winning for every image, but on its own flattens $P_t$ towards the uniform
# distribution; sharpening does the opposite. Without centering the collapse is to **one
# dimension** (every image puts its mass on the same prototype: teacher entropy 0); without
# sharpening it is to the **uniform** distribution (entropy $\log K$). Either way the student can
# copy the teacher exactly, and $\mathrm{KL}(P_t\|P_s) \to 0$. By hand, with loops over view pairs:

# %%
V, N, K = 4, 5, 7  # 2 global + 2 local views
student, teacher = torch.randn(V, N, K, generator=gen, dtype=torch.float64), torch.randn(2, N, K, generator=gen, dtype=torch.float64)
center = torch.randn(K, generator=gen, dtype=torch.float64)
tau_s, tau_t = 0.1, 0.04
p_t = torch.softmax((teacher - center) / tau_t, dim=-1)
log_p_s = torch.log_softmax(student / tau_s, dim=-1)
pairs = [(t, s) for t in range(2) for s in range(V) if s != t]  # the teacher's global views x every other view
by_hand = torch.stack([-(p_t[t] * log_p_s[s]).sum(-1).mean() for t, s in pairs]).mean()
torch.testing.assert_close(by_hand, dino_loss(student, teacher, center, tau_s, tau_t))
torch.testing.assert_close(by_hand, dino_loss_reference(student, teacher, center, tau_s, tau_t))
torch.testing.assert_close(p_t, teacher_probabilities(teacher, center, tau_t))
print(f"DINO loss by hand ({len(pairs)} view pairs) {float(by_hand):.5f} = losses.dino_loss = its loop twin")

# %% [markdown]
# ## Barlow Twins: redundancy reduction
#
# Barlow Twins (Zbontar et al. 2021, Sec. 2, Algorithm 1) has no predictor, no EMA and no
# stop-gradient. The two views go through the same network; each dimension of the embeddings is
# standardised over the batch, and the $d \times d$ cross-correlation matrix of the two views is
# driven to the identity:
#
# ```
#   x1 ──► f ──► g ──► zA ──► standardise over the batch ──┐
#                                                         ├──► C = zAᵀ zB / N  (d × d)  ──► ‖I − C‖ (weighted)
#   x2 ──► f ──► g ──► zB ──► standardise over the batch ──┘
#                 diagonal C_ii → 1: invariance      off-diagonal C_ij → 0: redundancy reduction
# ```
#
# $$C_{ij} = \frac{1}{N}\sum_b z^A_{b,i}\, z^B_{b,j}\ \text{(Eq. 2)},\qquad
#   \mathcal L_{BT} = \sum_i (1 - C_{ii})^2 + \lambda \sum_i\sum_{j\ne i} C_{ij}^2\ \text{(Eq. 1)}.$$
#
# A constant embedding cannot even be standardised (its variance is 0), and the off-diagonal term
# forbids the other way out, every dimension a copy of one feature ($C$ full of ones). With
# $\lambda = 0$ that second guard is gone. By hand, against `losses.barlow_twins_loss` (one process,
# `gather=False`) and its loop twin:

# %%
zA, zB = torch.randn(32, 6, generator=gen, dtype=torch.float64), torch.randn(32, 6, generator=gen, dtype=torch.float64)
lambd, eps = 5.1e-3, 1e-5


def standardise(z):
    return (z - z.mean(0)) / torch.sqrt(z.var(0, unbiased=False) + eps)  # biased variance, as BatchNorm


C = standardise(zA).T @ standardise(zB) / len(zA)
off = C - torch.diag(torch.diagonal(C))
by_hand = ((1 - torch.diagonal(C)) ** 2).sum() + lambd * (off ** 2).sum()
torch.testing.assert_close(by_hand, barlow_twins_loss(zA, zB, lambd, eps=eps, gather=False))
torch.testing.assert_close(by_hand, barlow_twins_loss_reference(zA, zB, lambd, eps=eps))
copies = torch.randn(32, 1, generator=gen, dtype=torch.float64).expand(32, 6)  # every dimension the same feature
print(f"Barlow Twins loss by hand {float(by_hand):.4f} = losses.barlow_twins_loss = its loop twin; "
      f"six copies of one feature: loss {float(barlow_twins_loss(copies, copies, 0.0, gather=False)):.4f} with "
      f"lambda = 0, {float(barlow_twins_loss(copies, copies, lambd, gather=False)):.4f} with lambda = {lambd}")

# %% [markdown]
# The last line is the ablation in one number: an embedding whose six dimensions all copy one
# feature is a *perfect* solution when $\lambda = 0$ (invariant, unit variance), and it pays
# $\lambda\, d(d-1)$ when the off-diagonal term is on.
#
# ## The ablations: take each method apart
#
# Now we train. Each method's CPU preset (`byol/simsiam/dino/barlow-cifar10-cpu`) is shrunk to a
# ResNet-10 at 1/8 width, 16-pixel views, batch 64 and small heads, and trained for the same short
# number of steps, once as the paper says and once with the ingredient removed. We train with the
# engine's own step (`engine.open_run` + `engine.run_steps`: views, forward, backward, optimiser,
# then the method's `after_step`, which does the EMA and DINO's centre update) and record the logs of
# every step: `z_std`, `z_rank`, and the method's own diagnostics. After the last step, the kNN
# monitor (k-nearest-neighbour top-1 on the test split, on $h$ and on $z$) and, for DINO, the
# teacher's distribution on a fixed probe of test images every few steps.
#
# Departures from the presets, for a budget of seconds per run (printed below; more on a busy
# machine), and why:
#
# * SimSiam and DINO use SGD at a fixed lr of 0.05 instead of the presets' $0.03 \times B/256$
#   (0.0075 at batch 64): SimSiam's CIFAR-10 setting is 0.06 at batch 512 (App. D); in so few steps
#   the linearly scaled lr barely moves the weights. BYOL and Barlow Twins keep the presets' LARS lr.
# * DINO: $K = 256$ prototypes, no local crops, no teacher-temperature warmup ($\tau_t = 0.04$
#   throughout, the start of the paper's warmup) and **batch norm in the head** (the official
#   `--use_bn_in_head`). In our trial runs the default head without BN collapsed to the uniform
#   distribution even with centering and sharpening on: at initialisation a narrow ResNet's
#   features are nearly the same for every image, the teacher's scores are then nearly equal, and
#   centering makes them equal. BN in the head spreads them from the first step.
# * "No sharpening" sets $\tau_t = \tau_s = 0.1$ (the teacher no sharper than the student).
# * Kept from the presets: the optimisers, weight decay, EMA momentum (0.99 on a cosine to 1) and the
#   lr warmup (one epoch of cifar10-mini, 79 steps, for BYOL, DINO and Barlow Twins; none for SimSiam).

# %%
STEPS = pick(3, 200)
PROBE_EVERY = pick(1, 10)
COMMON = dict(width=0.125, batch_size=pick(16, 64), image_size=16, eval_size=16, subset=pick(128, 0), epochs=100,
              max_steps=STEPS, knn_every=0, knn_max_train=pick(128, 2048), figures=False,
              precision="fp32", checkpoint_every=10**6, time_budget_s=0.0)
HEADS = {"byol": dict(proj_dim=64, hidden_dim=256, predictor_hidden_dim=256),
         "simsiam": dict(proj_dim=256, hidden_dim=256, predictor_hidden_dim=64, lr=0.05),
         "dino": dict(out_dim=256, hidden_dim=256, bottleneck_dim=64, head_bn=True, local_crops=0, lr=0.05,
                      teacher_temperature=0.04, warmup_teacher_epochs=0, freeze_last_layer_epochs=0),
         "barlow": dict(proj_dim=256, hidden_dim=256)}
ABLATIONS = {
    "simsiam": {"SimSiam": {}, "no stop-gradient": dict(stop_gradient=False)},
    "byol": {"BYOL (tau 0.99)": {}, "no predictor": dict(predictor=False), "tau = 0": dict(momentum_ema=0.0)},
    "dino": {"DINO": {}, "no centering": dict(centering=False), "no sharpening (tau_t = tau_s)": dict(teacher_temperature=0.1)},
    "barlow": {"Barlow Twins (lambda 5.1e-3)": {}, "lambda = 0": dict(lambd=0.0)},
}
probe = test_set.images[: pick(32, 256)]


@torch.no_grad()
def teacher_on_probe(run):
    """DINO's teacher on the probe: mean per-image entropy of P_t, entropy of the batch-mean P_t, mean max prob."""
    dino = run.method
    t = dino.teacher([config_eval_transform(run.cfg)(probe)])  # (1, N, K), the teacher in train mode (batch BN)
    p = teacher_probabilities(t, dino.center, dino.current_teacher_temperature())[0]
    entropy = lambda q: -(q * q.clamp_min(1e-30).log()).sum(-1)  # noqa: E731
    return {"step": run.step, "entropy": float(entropy(p).mean()), "marginal_entropy": float(entropy(p.mean(0))),
            "max_prob": float(p.max(-1).values.mean()), "top_prototype_share": float(p.argmax(-1).bincount().max()) / len(p)}


def train_variant(method, changes):
    cfg = get_preset(f"{method}-cifar10-cpu").replace(**{**COMMON, **HEADS[method], **changes})
    start = time.perf_counter()
    run = open_run(cfg, None, verbose=False)
    probes = []
    on_step = None
    if method == "dino":
        probes.append(teacher_on_probe(run))
        on_step = lambda run, logs: probes.append(teacher_on_probe(run)) if run.step % PROBE_EVERY == 0 else None  # noqa: E731
    history = run_steps(run, STEPS, on_step=on_step)
    train_s = time.perf_counter() - start
    knn = run.monitor(run.method.encoder, run.method.head, run.device)
    test_collapse = feature_collapse(run.method.encoder, test_set.images[: pick(64, 1017)], run.method.head,
                                     transform=config_eval_transform(cfg), autocast=False)
    return {"history": history, "probes": probes, "knn": knn, "test": test_collapse, "d": run.method.head.out_dim,
            "seconds": train_s, "steps": run.step, "cfg": cfg}


results = {}
for method, variants in ABLATIONS.items():
    results[method] = {}
    for name, changes in variants.items():
        r = results[method][name] = train_variant(method, changes)
        last = r["history"][-1]
        extra = f"  teacher entropy {r['probes'][-1]['entropy']:.2f}" if r["probes"] else ""
        print(f"{method:8s} {name:30s} z std {last['z_std']:.4f} (1/sqrt(d) {r['d'] ** -0.5:.4f})  z rank "
              f"{r['history'][0]['z_rank']:5.1f} -> {last['z_rank']:5.1f}{extra}  kNN h {r['knn']['h']:.3f} "
              f"z {r['knn']['z']:.3f}  [{r['steps']} steps, {r['seconds']:.0f} s]")

# %% [markdown]
# The same numbers as curves, every step, healthy run in the first colour; the dashed line in the
# left column is $1/\sqrt d$, the std of an isotropic embedding of the same size.

# %%
SMOOTH = pick(1, 5)  # a running mean over 5 steps, for legibility


def smooth(values, k=SMOOTH):
    out = []
    for i in range(len(values)):
        window = values[max(0, i - k + 1): i + 1]
        out.append(sum(window) / len(window))
    return out


fig, axes = plt.subplots(4, 3, figsize=(13, 12.5))
third = {"simsiam": ("pos_cos", "cos(p, z) of the two views"), "byol": ("pos_cos", "cos(p, z') of the two views"),
         "barlow": ("c_offdiag", "RMS off-diagonal of C")}
for row, (method, runs) in zip(axes, results.items()):
    for i, (name, r) in enumerate(runs.items()):
        steps = [k + 1 for k in range(len(r["history"]))]
        style = dict(color=f"C{i}", label=name, lw=1.6)
        row[0].plot(steps, smooth([h["z_std"] for h in r["history"]]), **style)
        row[1].plot(steps, smooth([h["z_rank"] for h in r["history"]]), **style)
        if method == "dino":
            ps = r["probes"]
            row[2].plot([p["step"] for p in ps], [p["entropy"] for p in ps], **style)
            row[2].plot([p["step"] for p in ps], [p["marginal_entropy"] for p in ps], color=f"C{i}", ls=":", lw=1.6)
        else:
            key, label = third[method]
            row[2].plot(steps, smooth([h[key] for h in r["history"]]), **style)
    d = next(iter(runs.values()))["d"]
    row[0].axhline(d ** -0.5, color="gray", ls="--", lw=1)
    row[0].set(ylabel="std of z/|z|", title=f"{method}: std of normalised z ({DATA})", ylim=(0, None))
    row[1].set(ylabel="effective rank of z", title=f"{method}: RankMe of z, d = {d} ({DATA})", ylim=(0, None))
    if method == "dino":
        row[2].axhline(math.log(HEADS["dino"]["out_dim"]), color="gray", ls="--", lw=1)
        row[2].set(ylabel="teacher entropy (nats)", title=f"dino: P_t per image (solid), batch mean (dotted) ({DATA})")
    else:
        row[2].set(ylabel=third[method][1], title=f"{method}: {third[method][1]} ({DATA})")
    row[0].legend(fontsize=8)
    for ax in row:
        ax.set_xlabel("training step")
        ax.grid(alpha=0.3)
fig.tight_layout()

# %% [markdown]
# And after training, on the test split (eval-mode batch norm, no views): the collapse metrics of
# $h$ and $z$ (`evaluate.feature_collapse`) and the kNN top-1 on both.

# %%
print(f"{DATA} test split, after {STEPS} steps (h: encoder output, z: projector output)")
print(f"{'method':8s} {'variant':30s} {'std z/isotropic':>16s} {'rank z':>7s} {'rank h':>7s} {'kNN h':>6s} {'kNN z':>6s}")
for method, runs in results.items():
    for name, r in runs.items():
        tz, th = r["test"]["z"], r["test"]["h"]
        print(f"{method:8s} {name:30s} {tz['std'] / tz['std_isotropic']:16.2f} {tz['rank']:7.1f} {th['rank']:7.1f} "
              f"{r['knn']['h']:6.3f} {r['knn']['z']:6.3f}")
for method, runs in results.items():
    healthy, *ablated = runs.items()
    for name, r in ablated:
        tail = lambda h: sum(x["z_rank"] for x in h[-10:]) / len(h[-10:])  # noqa: E731 (the last 10 steps)
        ratio = tail(r["history"]) / tail(healthy[1]["history"])
        print(f"{method}: '{name}' ends at {ratio:.2f} x the healthy run's effective rank (training batches, last 10 steps)")
dino_final = {name: r["probes"][-1] for name, r in results["dino"].items()}
for name, p in dino_final.items():
    print(f"DINO {name:30s} teacher on the probe: entropy per image {p['entropy']:.2f}, of the batch mean "
          f"{p['marginal_entropy']:.2f} (log K = {math.log(HEADS['dino']['out_dim']):.2f}), mean max prob {p['max_prob']:.3f}, "
          f"share of the most popular prototype {p['top_prototype_share']:.2f}")

# %% [markdown]
# ### Reading the curves
#
# Compare with the numbers and curves printed above; the sentences below describe what the demo run
# showed, and the printed ratios say how strongly.
#
# * **SimSiam without stop-gradient** collapses within the first few dozen steps: its effective
#   rank drops to a small fraction of the healthy run's (training batches and test split alike),
#   while the agreement $\cos(p, z)$ of the two views climbs faster and higher: a collapsed network
#   agrees with itself. Its std, however, does not go to 0, unlike SimSiam's Fig. 2, and the first
#   cell of this chapter says why: SimSiam's projector ends in batch norm, so every dimension of $z$
#   keeps unit variance over the batch and the network cannot output a constant; it collapses onto
#   a few directions with random signs instead, and the std of $z/\|z\|$ of such a batch is not
#   small. The effective rank is the instrument that sees it. (The healthy run's training-batch
#   rank drifts down too, much less, and its test-split rank stays high.)
# * **BYOL without the predictor** collapses in both numbers: the std falls from near
#   $1/\sqrt d$ towards 0 and the rank with it, as in BYOL's Table 5, while $\cos(p, z')$ goes
#   highest. **BYOL with $\tau = 0$** (target = online network, under a stop-gradient) did *not*
#   collapse here, although BYOL's Table 5 reports a collapse for it. That is not a contradiction:
#   with $\tau = 0$ and a predictor, BYOL *is* SimSiam (the target branch is the online network
#   without gradient), and SimSiam showed that this configuration trains well with a suitable
#   learning rate (SimSiam Sec. 6 and Fig. 3, "SimSiam can be thought of as BYOL without the
#   momentum encoder"). BYOL's collapse at $\tau = 0$ is one of instability in its own setting
#   (LARS at batch 4096, 300 epochs); 200 steps are far too short to see a slow failure, so read this
#   row as "not observed at this budget", not as "$\tau$ does not matter".
# * **DINO** shows its two opposite failures in the teacher's distribution, not in $z$: in all three
#   runs the 64-d bottleneck $z$ loses most of its effective rank (the healthy run too), so `z_rank`
#   cannot tell them apart here. The teacher's entropy can. **Without
#   sharpening** both entropies end close to $\log K$ (the dashed line): the uniform collapse, with a mean
#   max probability far below the healthy run's (printed above). **Without centering** the per-image
#   entropy and the batch-mean entropy (dotted) both fall: one prototype takes most of the
#   probe images (its share is printed above, close to 1): the collapse to one dimension, with a
#   per-image entropy near 0. The
#   healthy run sits between them, batch-mean entropy near $\log K$ (images use many prototypes),
#   per-image entropy below it; that per-image entropy rose over the first hundred steps and then
#   levelled off, far from the no-centering run's but closer to $\log K$ than a sharp teacher
#   should be: at this tiny scale DINO's balance is delicate.
# * **Barlow Twins with $\lambda = 0$** keeps its embeddings varying (the diagonal term insists on
#   unit variance and invariance; its std is even a little higher than the healthy run's), but its
#   dimensions become copies of each other: the RMS off-diagonal correlation rises well above
#   the healthy run's (right panel) and the effective rank falls to about a quarter of it (printed ratio). That is
#   dimensional collapse, not complete collapse, and only the rank sees it.
# * **kNN accuracy** moves less than the collapse metrics after 200 steps. It drops clearly only
#   where the collapse has reached the encoder: SimSiam without stop-gradient, whose test-split rank
#   of $h$ is about a third of the healthy run's, loses several points on $h$. Elsewhere the
#   differences are up to about five points, one seed, in either direction (BYOL with $\tau = 0$
#   even comes out above its healthy run), and $h$ can keep a much higher rank than $z$ (BYOL
#   without predictor): the collapse starts at the loss and reaches the backbone later. The
#   collapse metrics are the early warning; the accuracy follows in longer runs (SimSiam Fig. 2:
#   kNN accuracy collapses with the output).

# %% [markdown]
# ## One budget, six methods
#
# How do the methods compare when each gets the same few minutes of this CPU? The benchmark
# `benchmarks/one_budget.py` trains SimCLR, MoCo v2, BYOL, SimSiam, DINO and Barlow Twins from their
# `*-cifar10-cpu` presets on cifar10-mini for the same wall-clock budget, with 2 seeds each, and
# reports the kNN top-1 on $h$ and a linear probe. It takes far longer than this chapter may, so we
# only read its results file here.

# %%
results_file = Path(contrastive_lab.__file__).resolve().parents[1] / "benchmarks" / "results" / "one_budget.json"


def one_budget_rows(path):
    """The rows of one_budget.json: a list of dicts, or a dict holding such a list (read defensively)."""
    data = json.loads(path.read_text())
    if isinstance(data, dict):
        data = next((v for k, v in data.items() if k in ("rows", "results", "runs") and isinstance(v, list)),
                    [v for v in data.values() if isinstance(v, dict)])
    return [r for r in data if isinstance(r, dict) and "method" in r]


def number(row, *keys):
    for k in keys:
        if isinstance(row.get(k), (int, float)):
            return float(row[k])
    return float("nan")


if results_file.exists():
    rows = one_budget_rows(results_file)
    table = {}
    for r in rows:
        table.setdefault(str(r["method"]), []).append(r)
    print(f"{'method':14s} {'kNN h (mean)':>12s} {'linear (mean)':>13s}   seeds: kNN / linear   budget, steps")
    for method, rs in table.items():
        knn = [number(r, "knn_top1", "knn") for r in rs]
        lin = [number(r, "linear_top1", "linear") for r in rs]
        seeds = "  ".join(f"s{r.get('seed', '?')}: {a:.3f}/{b:.3f}" for r, a, b in zip(rs, knn, lin))
        runs_info = ", ".join(f"{number(r, 'budget_s'):.0f} s, {number(r, 'steps'):.0f}" for r in rs)
        print(f"{method:14s} {sum(knn) / len(knn):12.3f} {sum(lin) / len(lin):13.3f}   {seeds}   [{runs_info}]")
    fig, ax = plt.subplots(figsize=(7, 3.2))
    names = list(table)
    for j, (key, label) in enumerate((("knn_top1", "kNN top-1 on h"), ("linear_top1", "linear probe"))):
        vals = [[number(r, key) for r in table[m]] for m in names]
        ax.bar([i + 0.4 * j for i in range(len(names))], [sum(v) / len(v) for v in vals], width=0.4, label=label,
               color=f"C{j}", alpha=0.7)
        for i, v in enumerate(vals):
            ax.plot([i + 0.4 * j] * len(v), v, "k.", ms=5)
    ax.set_xticks([i + 0.2 for i in range(len(names))], names, rotation=20)
    ax.set(ylabel=f"top-1 ({DATA} test)", title=f"one budget, mean of seeds (dots: each seed), {DATA}")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3, axis="y")
    fig.tight_layout()
else:
    print(f"{results_file.relative_to(results_file.parents[2])} does not exist yet: the table comes from "
          "`python benchmarks/one_budget.py` (it trains 6 methods x 2 seeds); skipping this section.")

# %% [markdown]
# Do not expect the papers' ranking here. BYOL, SimSiam, DINO and Barlow Twins report results after
# 100 to 1000 ImageNet epochs (BYOL and Barlow Twins 1000, SimSiam 100 to 800, DINO 100 to 800), at
# batch sizes of 256 to 4096; our budget is a few minutes, a few dozen CIFAR epochs at batch 128.
# Three things tilt a short race. (1) The EMA methods (BYOL, DINO, MoCo) learn from a target that
# averages the last $1/(1-\tau)$ steps, about a hundred here: early in training the target lags
# behind, which costs the most when the whole run is a thousand steps. (2) Without negatives,
# learning first has to escape the near-collapsed state a narrow network starts in (the DINO
# departure above); a contrastive loss pushes the embeddings apart from step one. (3) The methods
# differ in cost per step (DINO's multi-crop, BYOL's target pass), so the same minutes buy
# different numbers of steps (the `steps` column). Before reading a ranking into the table, compare
# each difference with the seed-to-seed spread it shows: two seeds are a thin basis.
#
# ## Why do they work at all?
#
# The ablations show *that* the asymmetric ingredients prevent collapse, not *why* a constant is
# not reached anyway: the constant is still a global minimum of BYOL's and SimSiam's losses. Tian,
# Chen & Ganguli 2021 ("Understanding self-supervised learning dynamics without contrastive
# pairs") answer for a linear model: an encoder $W$, a linear predictor $W_p$, an EMA target, and
# the augmentation's covariance structure. They study the gradient-flow **dynamics** rather than the
# minima, and find:
#
# * **The predictor** aligns with the correlation matrix of the online representation: during
#   training the eigenspaces of $W_p$ and of $F = \mathbb{E}[f f^\top]$ line up, and the directions
#   with large eigenvalues grow while the weak ones decay. Collapse is the *trivial* fixed point of
#   these dynamics, and with the predictor in place (and a large enough predictor learning rate) the
#   non-trivial directions are not driven to it. Without a predictor ($W_p = I$) the dynamics
#   shrink every direction: the collapse of our "no predictor" run. Their **DirectPred** sets $W_p$
#   directly from the eigendecomposition of the estimated $F$, without training it, and matches a
#   trained linear predictor, which supports the reading.
# * **The EMA** target slows the target relative to the online network; in their analysis a
#   slower target gives the predictor time to align, which helps stability. SimSiam's $\tau = 0$
#   shows it is not strictly needed when the predictor's learning rate is right (SimSiam keeps the
#   predictor's lr fixed, Table 1).
# * **Weight decay** is part of the mechanism, not a regulariser on the side: it shrinks the weak
#   eigen-directions to exactly 0 and keeps the strong ones, and the balance between weight decay
#   and the predictor sets which directions survive.
#
# DINO's centering and sharpening and Barlow Twins' decorrelation are different mechanisms: they
# act on the batch statistics of the output, like the repulsive term of a contrastive loss, only
# per dimension instead of per pair (the "dimension-contrastive" reading of Garrido et al. 2023).
#
# ## Exercises
#
# 1. **The collapse meter by hand.** Write `my_normalized_std(z)`: for an $(N, d)$ float tensor $z$
#    (any scale, bf16 included; upcast it), return the 0-dim tensor
#    $\frac1d\sum_j \operatorname{std}_i(z_{ij}/\|z_i\|)$ with the **unbiased** std over the $N$ rows.
#    Why is it exactly 0 on a ray, but not on a line through the origin?
#    **Checked** (`check("11.1", ...)` below), against `collapse.normalized_std`.
# 2. **The signed line.** For $z_i = s_i\,a$ with random signs $s_i = \pm 1$, prove that
#    $\operatorname{std}(z) \to \frac1d\sum_j |a_j|/\|a\|$ as $N \to \infty$, and that this is about
#    $\sqrt{2/\pi}/\sqrt d \approx 0.8/\sqrt d$ for a Gaussian $a$. Check numerically:
#    `a = torch.randn(1, 256, dtype=torch.float64); s = torch.randint(0, 2, (4096, 1)) * 2 - 1`,
#    then `abs(float(normalized_std(s * a)) - float((a.abs() / a.norm()).mean())) < 1e-3`.
#    **Checked** (`check_value("11.2", ...)` below): the limit, as a float, for the seeded direction
#    `a = torch.randn(1, 256, generator=torch.Generator().manual_seed(5), dtype=torch.float64)` (this
#    $a$'s value, not the Gaussian approximation).
# 3. **DINO's loss by hand, and its uniform fixed point.** Write
#    `my_dino_loss(student, teacher, center, student_temperature, teacher_temperature)` for student
#    scores $(V, N, K)$, teacher scores $(G, N, K)$ of the first $G \le V$ (global) views and a centre
#    $(K,)$: the mean over the pairs (teacher view $g$, student view $v \ne g$) of $H(P_t, P_s)$
#    averaged over the $N$ images, with $P_t = \operatorname{softmax}((g_t - c)/\tau_t)$ and
#    $P_s = \operatorname{softmax}(g_s/\tau_s)$ over the $K$ prototypes; return a 0-dim tensor
#    (float32 for bf16 input). Then show that if the teacher is uniform, $P_t = 1/K$, the loss
#    $H(P_t, P_s) \ge \log K$ with equality iff $P_s$ is uniform too. Check:
#    `dino_loss(torch.zeros(2, 4, 8), torch.zeros(2, 4, 8), torch.zeros(8))` equals `math.log(8)`.
#    **Checked** (`check("11.3", ...)` below), against `losses.dino_loss`.
# 4. **Barlow Twins by hand, and the price of redundancy.** Write `my_barlow_twins_loss(z1, z2, lambd)`
#    for two $(N, d)$ views: standardise each column over the batch as `BatchNorm1d(affine=False)` does
#    ($(z - \text{mean}) / \sqrt{\text{var} + 10^{-5}}$, biased variance), $C = z_A^\top z_B / N$, and return
#    $\sum_i (1 - C_{ii})^2 + \lambda \sum_{i \ne j} C_{ij}^2$ as a 0-dim tensor (float32 for bf16 input).
#    Then, for $d$ identical standardised dimensions in both views, show
#    $\mathcal{L}_{BT} = \lambda\,d(d-1)$ (up to BN's $\varepsilon$). Check with the `copies` batch
#    above for $d = 6$: the loss is close to `lambd * 30`.
#    **Checked** (`check("11.4", ...)` below), against `losses.barlow_twins_loss` (`gather=False`).
# 5. **SimSiam without the predictor.** Train `train_variant("simsiam", dict(predictor=False,
#    fix_predictor_lr=False))` for the same steps. Expected: the effective rank of $z$ collapses
#    as without stop-gradient (SimSiam Table 1, "no pred": 0.1 %). Check:
#    `r["history"][-1]["z_rank"] < 0.5 * results["simsiam"]["SimSiam"]["history"][-1]["z_rank"]`.
# 6. **BYOL's momentum.** Rerun the $\tau = 0$ variant with `base_lr` doubled, and a $\tau = 0.99$
#    run without predictor with `weight_decay=0`. Which collapses faster? Relate it to Tian et
#    al.'s account of weight decay and the predictor.
# 7. **DINO's one-dimensional collapse.** Train the "no centering" run for 3x the steps and plot
#    `top_prototype_share` from `r["probes"]`. Expected: it keeps rising towards 1 while the healthy
#    run's stays near its starting value. Is there a step count at which the healthy run's share
#    starts rising too, and what would you change (the centre momentum, $\tau_t$) to prevent it?

# %%
from contrastive_lab.exercises import check, check_value


def my_normalized_std(z):
    raise NotImplementedError  # your code here


check("11.1", my_normalized_std)

# %%
signed_line_limit = None  # your number here: the N -> infinity std for the seeded a of exercise 2
check_value("11.2", signed_line_limit)

# %%
def my_dino_loss(student, teacher, center, student_temperature, teacher_temperature):
    raise NotImplementedError  # your code here


check("11.3", my_dino_loss)

# %%
def my_barlow_twins_loss(z1, z2, lambd):
    raise NotImplementedError  # your code here


check("11.4", my_barlow_twins_loss)

# %%
print(runtime.chapter_report())
