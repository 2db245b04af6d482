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
# # 07 Where negatives come from: the batch, a memory bank, a queue
#
# SimCLR (chapters 04-06) takes its negatives from the current batch. That is one answer to a
# question every contrastive method has to settle: **which vectors does a query get compared
# with, and who computed them?** This chapter looks at the three classic answers side by side:
#
# * **end-to-end** (SimCLR; Chen et al. 2020): the other views of the batch;
# * **memory bank** (Wu et al. 2018, "Unsupervised Feature Learning via Non-Parametric Instance
#   Discrimination", *InstDisc*): a stored feature for every training image;
# * **queue + momentum encoder** (He et al. 2019, "Momentum Contrast", *MoCo*): the keys of the
#   last few batches, computed by a slowly moving copy of the encoder.
#
# ## Contrastive learning as a dictionary look-up
#
# MoCo's Sec. 3.1 describes all three with one picture. An encoded query $q$ is looked up in a
# dictionary of encoded keys $\{k_0, k_1, \dots, k_K\}$; exactly one key, $k_+$, comes from the same
# image as $q$ (another view of it). The InfoNCE loss (van den Oord et al. 2018; MoCo Eq. 1) is the
# cross-entropy of picking $k_+$ out of the $K+1$ keys with a softmax over dot products:
#
# $$\mathcal{L}_q = -\log \frac{\exp(q\cdot k_+/\tau)}{\sum_{i=0}^{K}\exp(q\cdot k_i/\tau)}.$$
#
# MoCo's introduction argues that the dictionary should be
#
# 1. **large**: the keys are a sample of the whole data distribution; with more of them the task is
#    harder and closer to the full softmax over all $n$ images that instance discrimination really
#    wants (Wu et al. Eq. 2). InfoNCE also bounds the mutual information between the views by
#    $\log(K+1) - \mathcal{L}_q$ (van den Oord et al. 2018, Sec. 2.3): a small dictionary caps what
#    the loss can ask for;
# 2. **consistent**: all keys should come from the same (or a very similar) encoder, so that the
#    query is compared against one coherent embedding, not against a patchwork of old ones in which
#    "looks older" could give the positive away.
#
# The three mechanisms trade one property for the other (MoCo Fig. 2):
#
# | mechanism | keys | K | consistent? | cost that grows with K |
# |---|---|---|---|---|
# | end-to-end | the batch, encoded now, with gradient | $2(B-1)$ | yes | the batch itself (compute, activations) |
# | memory bank | stored features of all $n$ images | any, up to $n$ | no: an entry is up to one epoch old | $n \times D$ floats |
# | queue + momentum encoder | keys of the last $K/B$ batches | any | nearly: slow encoder | $K \times D$ floats |

# %%
import collections
import copy
import json
import time
from pathlib import Path

import matplotlib.pyplot as plt
import torch
import torch.nn.functional as F

from contrastive_lab import runtime
from contrastive_lab.augment import BatchedViews, get_recipe
from contrastive_lab.data import load_book_data
from contrastive_lab.engine import eval_transform
from contrastive_lab.memory import KeyQueue, MemoryBank
from contrastive_lab.methods import build_method
from contrastive_lab.optim import build_optimizer
from contrastive_lab.presets import get_preset
from contrastive_lab.runtime import pick

torch.manual_seed(0)
train_set, test_set = load_book_data("train"), load_book_data("test")
print(f"{train_set.name}: {len(train_set)} training and {len(test_set)} test images")
print("smoke mode:", runtime.smoke_mode())

# %% [markdown]
# ## The memory bank, by hand
#
# Wu et al. treat every image as its own class. A classifier would keep one weight vector per
# class; instead they keep one *feature* per image, $v_i$, in a memory bank, and use it both as
# image $i$'s positive and as a negative for everyone else. After each step the features $f_i$
# of the batch are written back; the official code (lemniscate.pytorch, `--nce-m 0.5`) mixes
# them in with momentum and renormalises:
#
# $$v_i \leftarrow \frac{m\, v_i + (1-m)\, f_i}{\lVert m\, v_i + (1-m)\, f_i \rVert}, \qquad m = 0.5 .$$
#
# Negatives are drawn uniformly from the bank. We build the update by hand on a small bank and
# check it against `memory.MemoryBank`.

# %%
bank = MemoryBank(size=10, dim=4, momentum=0.5, generator=torch.Generator().manual_seed(0))
index = torch.tensor([2, 7, 5])
f = torch.randn(3, 4)  # the network's outputs for images 2, 7, 5 (not yet normalised)

by_hand = bank.bank.clone()
for i, f_i in zip(index.tolist(), f):
    v = 0.5 * by_hand[i] + 0.5 * f_i / f_i.norm()
    by_hand[i] = v / v.norm()

bank.update(index, f)
torch.testing.assert_close(bank.bank, by_hand)
print("memory-bank update matches the library; row norms:", " ".join(f"{x:.4f}" for x in bank.bank.norm(dim=1).tolist()))

# %% [markdown]
# The official code draws $K$ noise indices from all $n$ images, so an image can be its own
# negative with probability $K/n$: harmless for ImageNet's $n = 1.28$M, not for cifar10-mini's 5085.
# The library excludes the positive exactly, without rejection: draw $r$ uniformly from
# $\{0, \dots, n-2\}$ and add one when $r \ge i$. That maps the $n-1$ values one-to-one onto the
# other images.

# %%
n, i_pos = 10, 4
r = torch.randint(0, n - 1, (100_000,), generator=torch.Generator().manual_seed(1))
by_hand = r + (r >= i_pos).long()
lib = bank.sample_negatives(torch.tensor([i_pos]), 100_000, generator=torch.Generator().manual_seed(1))[0]
assert torch.equal(lib, by_hand) and not (lib == i_pos).any()
freq = torch.bincount(lib, minlength=n) / len(lib)
print("negative sampling matches; frequency of each image:", " ".join(f"{p:.3f}" for p in freq.tolist()))

# %% [markdown]
# ## The queue, by hand
#
# MoCo keeps the last $K$ keys in a first-in first-out queue: each step enqueues the batch's keys
# *after* the loss and drops the oldest. The library stores it as a ring buffer with a pointer; the
# official code requires $K$ to be a multiple of the batch size, ours wraps a write around the end
# in two pieces. A Python `deque` with `maxlen=K` is the textbook version:

# %%
K, B, D = 10, 4, 3  # K is not a multiple of B
queue = KeyQueue(K, D, generator=torch.Generator().manual_seed(0))
fifo = collections.deque(list(queue.keys.clone()), maxlen=K)
for step in range(5):
    keys = torch.randn(B, D)
    queue.enqueue(keys)
    fifo.extend(keys)
    assert torch.equal(queue.ordered(), torch.stack(list(fifo)))
    print(f"step {step}: pointer at {int(queue.ptr):2d}, oldest key first matches the deque")

# %% [markdown]
# ## Consistency: how old are the negatives?
#
# The bank is large but *inconsistent*: entry $v_i$ was written when image $i$ was last in a
# batch, on average half an epoch ago, by the encoder of that moment. MoCo's queue holds keys that
# are at most $K/B$ steps old, and they come from a key encoder $\theta_k$ that trails the query
# encoder $\theta_q$ as an exponential moving average (MoCo Eq. 2):
#
# $$\theta_k \leftarrow m\,\theta_k + (1-m)\,\theta_q .$$
#
# With $m = 0$ the key encoder is the query encoder (keys are as fresh as the encoder, which changes
# at every SGD step); with $m$ close to 1 it averages over about $1/(1-m)$ steps and changes slowly.
#
# Let us *measure* consistency. We train for a few dozen steps and look inside after every step,
# so instead of `engine.train` (which runs the same loop with checkpoints, logs and schedules) we
# write the ten-line loop ourselves.
#
# * **Queue**: every few steps we snapshot the key encoder and encode a fixed set of probe
#   images with it. Two snapshots $\tau$ steps apart play the role of two keys in the queue whose
#   ages differ by $\tau$: the mean cosine between them says how comparable they are.
# * **Bank**: after training we encode every training image with the current encoder and compare
#   it with its bank entry, grouped by how many steps ago the entry was written.

# %%
device = runtime.default_device()
amp = runtime.autocast_dtype(device)
demo_cfg = get_preset("moco-v2-cifar10-cpu").replace(
    dataset="cifar10", recipe="simclr_cifar", width=0.25, head="moco_v2", temperature=0.2,
    bn_splits=1, batch_size=pick(32, 128), lr=0.06, queue_size=pick(64, 1024), precision="auto",
)
images = train_set.images[: pick(256, len(train_set))]
views = BatchedViews(get_recipe(demo_cfg.recipe, size=demo_cfg.image_size))
to_input = eval_transform(demo_cfg)  # uint8 -> normalised float, like the training views
probe = to_input(test_set.images[: pick(64, 256)]).to(device)
steps, every = pick(3, 60), pick(1, 4)


def train_and_watch(cfg, steps, watch):
    """SGD on ``cfg``'s method for ``steps`` steps; ``watch(step, method, index)`` after each step."""
    torch.manual_seed(cfg.seed)
    method = build_method(cfg).to(device).train()
    optimizer = build_optimizer("sgd", method, lr=cfg.lr, weight_decay=cfg.weight_decay, momentum=0.9)
    g = torch.Generator().manual_seed(cfg.seed)
    order = torch.cat([torch.randperm(len(images), generator=g) for _ in range(steps * cfg.batch_size // len(images) + 1)])
    for step in range(steps):
        index = order[step * cfg.batch_size : (step + 1) * cfg.batch_size]
        x = images[index].to(device)
        with torch.autocast(device.type, dtype=amp, enabled=amp is not None):
            loss, logs = method(views(x, g), views(x, g), index.to(device))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        watch(step, method, index)
    return method


@torch.no_grad()
def embed(encoder, head, x):
    """normalize(g(f(x))) with a throw-away copy in train mode (batch statistics, as keys are made)."""
    twin = copy.deepcopy(torch.nn.Sequential(encoder, head)).train()
    with torch.autocast(device.type, dtype=amp, enabled=amp is not None):
        return F.normalize(torch.cat([twin(c) for c in x.split(256)]).float(), dim=1)


def consistency_by_age(snapshots):
    """Mean cosine between probe keys of snapshots that are tau steps apart, for every tau."""
    out = collections.defaultdict(list)
    for (t1, k1) in snapshots:
        for (t2, k2) in snapshots:
            if t2 > t1:
                out[t2 - t1].append(float((k1 * k2).sum(1).mean()))
    return {tau: sum(v) / len(v) for tau, v in sorted(out.items())}


queue_consistency = {}
start = time.perf_counter()
for m in (0.0, 0.9, 0.99):
    snapshots = []

    def watch(step, method, index, snapshots=snapshots):
        if step % every == 0:
            snapshots.append((step, embed(method.key_encoder, method.key_head, probe)))

    train_and_watch(demo_cfg.replace(momentum_ema=m), steps, watch)
    queue_consistency[m] = consistency_by_age(snapshots)
    print(f"m={m:<5}: keys {every} steps apart agree to cos {queue_consistency[m][every]:.3f}, "
          f"{max(queue_consistency[m])} steps apart to {queue_consistency[m][max(queue_consistency[m])]:.3f}")
print(f"({time.perf_counter() - start:.0f} s)")

# %% [markdown]
# Now the memory bank, trained with the same encoder, views and optimiser for a bit more than one
# epoch, so that entries of every age exist. `last_write[i]` records when entry $i$ was written.

# %%
bank_cfg = demo_cfg.replace(method="instdisc", bank_loss="infonce", num_negatives=pick(32, 1024),
                            subset=len(images))
bank_steps = pick(4, len(images) // bank_cfg.batch_size + 8)
last_write = torch.full((len(images),), -1)


def remember(step, method, index):
    last_write[index] = step


start = time.perf_counter()
instdisc = train_and_watch(bank_cfg, bank_steps, remember)
current = embed(instdisc.encoder, instdisc.head, to_input(images).to(device))
cos_now = (current * instdisc.bank.bank.float()).sum(1).cpu()
age = bank_steps - 1 - last_write
written = last_write >= 0
bank_consistency = {}
for a in sorted(set(age[written].tolist())):
    bank_consistency[a] = float(cos_now[written & (age == a)].mean())
print(f"{int(written.sum())} of {len(images)} entries written; newest agree with the current encoder to cos "
      f"{bank_consistency[min(bank_consistency)]:.3f}, oldest ({max(bank_consistency)} steps) to "
      f"{bank_consistency[max(bank_consistency)]:.3f}  ({time.perf_counter() - start:.0f} s)")

# %%
fig, axes = plt.subplots(1, 2, figsize=(9, 3.2), sharey=True)
for m, c in queue_consistency.items():
    axes[0].plot(list(c), list(c.values()), marker="o", ms=3, label=f"m = {m}")
axes[0].set(xlabel="age difference between two keys (steps)", ylabel="mean cosine of the same image",
            title="queue: key-encoder snapshots")
axes[0].legend()
axes[1].plot(list(bank_consistency), list(bank_consistency.values()), marker="o", ms=3, color="C3")
axes[1].set(xlabel="age of the bank entry (steps)", title="memory bank: entry vs current encoder")
for ax in axes:
    ax.grid(alpha=0.3)
fig.suptitle(f"How consistent are the negatives? ({train_set.name}, ResNet-10 x0.25)", fontsize=10)
fig.tight_layout()

# %% [markdown]
# Read the left panel as "if two keys in the queue were enqueued $\tau$ steps apart, how much do
# they disagree about the same image?". With $m=0$ the keys drift as fast as the encoder learns;
# with $m = 0.99$ they stay close across the whole span, which is what lets MoCo keep a large queue
# without the consistency problem. The bank entries (right) were written by the query encoder
# itself at their last visit and drift with age, and even fresh entries disagree a little with the
# current encoder because they average two random views (momentum 0.5). MoCo Sec. 4.1 shows both
# effects at ImageNet scale: the memory bank trails MoCo by about 2.6 points at equal $K$, and
# without momentum ($m = 0$) training fails.
#
# ## The experiment: MoCo Fig. 3 in miniature
#
# `benchmarks/negatives_sweep.py` trains all three mechanisms with *one* runner: the same ResNet-10
# (width 0.25), the same views, head, temperature, optimiser, seed and number of epochs on
# cifar10-mini; only the source of the negatives changes, and all three use the InfoNCE form of
# the loss (as MoCo Sec. 4.1 does for its comparison). End-to-end gets $K = 2(B-1)$ from batches of
# 32 to 256 (learning rate scaled with $B$); the bank and the queue use batches of 128 and
# $K \in \{64, 256, 1024, 4096\}$. A second group repeats MoCo's momentum ablation. The full sweep
# (10 epochs per run) takes about 25 minutes of run time, 12 minutes as two single-threaded processes
# side by side, so the chapter reads its results file rather than re-running it:

# %%
candidates = [Path("../benchmarks/results/negatives_sweep.json"), Path("benchmarks/results/negatives_sweep.json")]
results_path = next((p for p in candidates if p.exists()), None)
sweep = json.loads(results_path.read_text()) if results_path else None
if sweep is None:
    print("benchmarks/results/negatives_sweep.json not found: run benchmarks/negatives_sweep.py "
          "(see its docstring) to produce it; the plots below are skipped")
else:
    runs = list(sweep["runs"].values())
    m = sweep["machine"]
    print(f"{sweep['data']}, {sweep['epochs']} epochs per run, {m['cpu_model']} ({m['cpu_count']} cores), "
          f"torch {m['torch']}, {sweep['date']}" + ("  [SMOKE RUN: not a real measurement]" if sweep["smoke"] else ""))
    print(f"kNN top-1 of the random encoder: {runs[0]['knn_random']:.3f}\n")
    print(f"{'mechanism':12s} {'setting':9s} {'K':>5s} {'kNN top-1':>9s} {'ms/step':>8s} {'img/s':>6s} "
          f"{'RSS MB':>7s} {'store MB':>8s}")
    for r in runs:
        print(f"{r['group']:12s} {r['name']:9s} {r['negatives']:5d} {r['knn_top1']:9.3f} {r['ms_per_step']:8.0f} "
              f"{r['images_per_s']:6.0f} {r['peak_rss_mb']:7.0f} {r['store_mb']:8.1f}")

# %%
if sweep is not None:
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.2))
    labels = {"end_to_end": "end-to-end (batch)", "memory_bank": "memory bank", "queue": "MoCo queue"}
    for group, label in labels.items():
        rs = sorted((r for r in runs if r["group"] == group), key=lambda r: r["negatives"])
        axes[0].plot([r["negatives"] for r in rs], [r["knn_top1"] for r in rs], marker="o", label=label)
        axes[1].plot([r["negatives"] for r in rs], [r["ms_per_step"] for r in rs], marker="o", label=label)
    axes[0].set(xscale="log", xlabel="K (negatives per query)", ylabel="kNN top-1 (test)",
                title=f"accuracy after {sweep['epochs']} epochs ({sweep['data']})")
    axes[1].set(xscale="log", yscale="log", xlabel="K (negatives per query)", ylabel="ms per training step",
                title="cost per step")
    for ax in axes:
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=8)
    fig.tight_layout()

# %% [markdown]
# What to look for, and what not to over-read:
#
# * In MoCo's Fig. 3 (ImageNet, 200 epochs) end-to-end and MoCo rise together with $K$ while the
#   bank trails; end-to-end stops at the largest batch that fits in memory (1024 there, 256 here).
#   Here every run sees the same number of *images*, so the end-to-end runs with small batches
#   take more optimisation steps; and with one seed, differences of a point or two are noise.
# * A budget of a few epochs is hard on the **memory bank**: it starts as random vectors, so
#   during the whole first epoch most positives $v_i$ are noise until image $i$'s first visit
#   writes it, and afterwards each entry is refreshed only once per epoch. Wu et al. train for 200
#   epochs. Do not read the bank's curve as its final word.
# * The **queue** gets staler as it grows: with batches of 128, $K = 4096$ keys span 32 steps of
#   a still fast-moving encoder, and on this small dataset they cover 80% of the training set, so
#   most queries find an *older key of their own image* among the "negatives". With ImageNet's
#   1.28M images and $K = 65536$ that fraction is 5%. Both effects push against "more negatives is
#   better" at our scale; this is why the CPU presets use $K = 1024$.
# * The right panel is the reason MoCo exists. The end-to-end step grows with $B$, because the
#   batch *is* the dictionary and every key costs a forward and backward pass. The bank and the
#   queue add $K$ negatives for the price of a $(B \times K)$ matrix product: their cost is almost
#   flat in $K$.
#
# The cell below reads these trends off the results file rather than from this text:

# %%
if sweep is not None:
    def best(group):
        return max((r for r in runs if r["group"] == group), key=lambda r: r["knn_top1"])

    def by_k(group):
        return sorted((r for r in runs if r["group"] == group), key=lambda r: r["negatives"])

    for group in ("end_to_end", "memory_bank", "queue"):
        rs = by_k(group)
        print(f"{group:12s} best {best(group)['name']:7s} kNN {best(group)['knn_top1']:.3f};  smallest K "
              f"{rs[0]['knn_top1']:.3f} -> largest K {rs[-1]['knn_top1']:.3f};  ms/step "
              f"{rs[0]['ms_per_step']:.0f} -> {rs[-1]['ms_per_step']:.0f}")
    print(f"random encoder (same initialisation for all runs): {runs[0]['knn_random']:.3f}")
    print(f"own-image fraction of a queue of K keys on {sweep['data']} (K / n): "
          + ", ".join(f"K={r['negatives']}: {r['negatives'] / len(train_set):.0%}" for r in by_k("queue")))

# %% [markdown]
# The momentum ablation (MoCo Sec. 4.1, with $K = 4096$ on ImageNet: $m = 0$ fails, 0.9 gives
# 55.2%, 0.99 57.8%, 0.999 59.0%, 0.9999 58.9%):

# %%
if sweep is not None:
    mom = sorted((r for r in runs if r["group"] == "momentum"), key=lambda r: r["config"]["momentum_ema"])
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.2))
    for r in mom:
        curve = r["curve"]
        axes[0].plot([c["step"] for c in curve], [c["loss"] for c in curve], label=f"m = {r['config']['momentum_ema']:g}")
    axes[0].set(xlabel="step", ylabel="training loss (InfoNCE)", title="MoCo training loss")
    axes[0].legend(fontsize=8)
    xs = [str(r["config"]["momentum_ema"]) for r in mom]
    axes[1].bar(xs, [r["knn_top1"] for r in mom], color="C2")
    axes[1].axhline(mom[0]["knn_random"], color="k", ls="--", lw=1, label="random encoder")
    axes[1].set(xlabel="momentum m", ylabel="kNN top-1 (test)", title=f"MoCo, K = {mom[0]['negatives']}")
    axes[1].legend(fontsize=8)
    for ax in axes:
        ax.grid(alpha=0.3)
    fig.tight_layout()
    print(f"{mom[0]['steps']} training steps per run; random encoder kNN {mom[0]['knn_random']:.3f}")
    for r in mom:
        m_ = r["config"]["momentum_ema"]
        print(f"m = {m_:<7g} kNN top-1 {r['knn_top1']:.3f}  final loss {r['final_loss']:.3f}  "
              f"initial weights still make up {m_ ** r['steps']:.0%} of the key encoder")

# %% [markdown]
# At ImageNet scale the best $m$ is 0.999: the key encoder then averages over about a thousand
# steps, a small fraction of the ~1M steps of a 200-epoch run. Our runs have only about four hundred
# steps *in total* (printed above). After $t$ steps the initial weights still make up $m^t$ of the
# key encoder ($\theta_k^{(t)} = m^t\theta_k^{(0)} + (1-m)\sum_{s} m^{t-s}\theta_q^{(s)}$): about 68% for
# $m = 0.999$, 96% for $m = 0.9999$. Those key encoders are still mostly the random network, and in
# the sweep they score below $m = 0.99$, whose key encoder has forgotten its start.
# That this can still train the *query* encoder well is less strange than it looks: BYOL
# (Grill et al. 2020, Sec. 3.1) reports that predicting the features of a fixed *random* network
# already lifts linear accuracy on ImageNet from 1.4% to 18.8%. What fails is the other end:
# with $m = 0$ the keys in the queue come from many different encoders (MoCo: "the training loss
# oscillates and fails to converge"). The right momentum is tied to the length of training, which
# is why the CPU presets use the MoCo CIFAR-10 demo's $m = 0.99$ for their few hundred steps, and
# why BYOL raises $m$ towards 1 on a cosine schedule (chapter 08).
#
# ## Cost per step, live
#
# The sweep's times come from whole training runs. Here is the same comparison measured directly
# on this machine: one training step (forward, backward, optimiser) of end-to-end with growing
# batches, and of MoCo with batch 128 and a growing queue, up to MoCo's $K = 65536$.

# %%
def time_step(cfg, repeats):
    torch.manual_seed(0)
    method = build_method(cfg).to(device).train()
    optimizer = build_optimizer("sgd", method, lr=0.01, weight_decay=0.0, momentum=0.9)
    x = to_input(train_set.images[: cfg.batch_size]).to(device)
    index = torch.arange(cfg.batch_size, device=device)
    times = []
    for _ in range(repeats + 1):  # the first step warms up
        t = time.perf_counter()
        with torch.autocast(device.type, dtype=amp, enabled=amp is not None):
            loss, _ = method(x, x.flip(3), index)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        times.append(time.perf_counter() - t)
    return 1000 * sorted(times[1:])[len(times[1:]) // 2]


repeats = pick(1, 3)
cost = {"end-to-end": {}, "MoCo queue": {}}
for b in pick((16,), (32, 64, 128, 256)):
    cost["end-to-end"][2 * (b - 1)] = time_step(demo_cfg.replace(method="simclr", batch_size=b), repeats)
for k in pick((64,), (256, 4096, 65536)):
    cost["MoCo queue"][k] = time_step(demo_cfg.replace(queue_size=k, batch_size=pick(32, 128)), repeats)
for name, c in cost.items():
    print(name, "  ".join(f"K={k}: {ms:.0f} ms" for k, ms in c.items()))
fig, ax = plt.subplots(figsize=(5, 3.2))
for name, c in cost.items():
    ax.plot(list(c), list(c.values()), marker="o", label=name)
ax.set(xscale="log", xlabel="K (negatives per query)", ylabel="ms per step (median)",
       title="cost of more negatives, measured now")
ax.grid(alpha=0.3, which="both")
ax.legend()
fig.tight_layout()

# %% [markdown]
# The queue's $K = 65536$ keys take $65536 \times 128 \times 4$ bytes = 32 MiB and one extra matrix
# product per step; a batch big enough to give the same number of negatives end-to-end would be
# 32769 images. (Timings on a shared machine are noisy; the shape of the curves is the point.)
#
# ## Summary
#
# * The negatives form a dictionary that should be large and consistent; each mechanism gives up
#   something: end-to-end pays for size with compute and memory, the bank with consistency.
# * MoCo's queue decouples the dictionary size from the batch size, and its momentum encoder keeps
#   the queue consistent; $m$ must be large relative to the number of steps a key stays in the queue,
#   and small relative to the length of training.
# * With a small dataset, keep $K$ well below $n$, or the queue fills with the query's own image.
#
# Chapter 08 takes MoCo apart: shuffling BN, and the v2 changes that close the gap to SimCLR.
#
# ## Exercises
#
# 1. Run the bank demo with `bank_momentum=0.0` (the paper's plain replacement) and with 0.9. How
#    do the fresh and the old entries' consistencies change?
# 2. Add the proximal term of Wu et al. Sec. 3.3 (`proximal=` in the config, e.g. 30) and repeat
#    the bank demo. Does it make the entries more consistent with the encoder? Why might it?
# 3. Compute $\log(K+1)$ for the queue sizes of the sweep and compare with the final losses in the
#    results file. What does the InfoNCE bound say about a run whose loss is close to $\log(K+1)$?
# 4. Count, for a MoCo run with $K = 4096$ on cifar10-mini, how many queries have an older key of
#    their own image in the queue (hint: keep a queue of dataset indices next to the keys).
#    Then repeat with $K = 1024$.
# 5. Re-run the sweep with `bank_loss=nce` for the memory bank (Wu et al.'s original loss; add a
#    run to `plan()` in `benchmarks/negatives_sweep.py`). MoCo reports 54.3% (NCE, K=4096) vs 58.0%
#    (InfoNCE, K=65536) for the bank on ImageNet; what do you see?
# 6. Why does the end-to-end logit matrix cost $(2B)^2$ floats while the queue's costs $B(K+1)$?
#    At which batch size does SimCLR's logit matrix exceed MoCo's with $K = 65536$, $B = 256$?
