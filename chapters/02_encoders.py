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
# # 02 Encoders: ResNets for 32 px and 224 px images, and what a random network already knows
#
# The encoder $f$ turns a view $\tilde x$ into the representation $h = f(\tilde x) \in \mathbb R^d$:
# the vector we keep after training and evaluate with a kNN classifier or a linear probe. SimCLR
# "opt[s] for simplicity and adopt the commonly used ResNet" (Chen et al. 2020, Sec. 2.1), with
# $h$ the output of the global average pooling layer; so do MoCo and most of the methods in this
# book. Nothing about the encoder is specific to contrastive learning, which is the point: the
# method lives in the views and the loss, and the same network can be trained with labels.
#
# This chapter looks at the encoders of `contrastive_lab.encoders`:
#
# 1. ResNets and why 32 px images need a different *stem* (SimCLR App. B.9), traced with forward
#    hooks;
# 2. parameters and FLOPs, counted two ways;
# 3. the representation $h$ (global average pooling) and moving weights into plain torchvision;
# 4. speed on a CPU, fp32 vs bf16;
# 5. a baseline every later chapter is measured against: the kNN accuracy of a **random**
#    (untrained) encoder, which is far above chance.

# %%
import os
import textwrap
import time

import matplotlib.pyplot as plt
import torch
import torchvision
from torch import nn

from contrastive_lab import plots
from contrastive_lab.data import load_book_data
from contrastive_lab.encoders import ENCODERS, build_encoder, cifar_stem_, forward_flops
from contrastive_lab.engine import config_eval_transform
from contrastive_lab.evaluate import extract_features, knn_accuracy
from contrastive_lab.presets import Config
from contrastive_lab.runtime import autocast_dtype, cpu_supports_bf16, pick, smoke_mode

torch.manual_seed(0)
chapter_start = time.perf_counter()
print("smoke mode:", smoke_mode())
train_set, test_set = load_book_data("train"), load_book_data("test")
print(train_set)
print(test_set)
print("encoders in the library:", sorted(ENCODERS))

# %% [markdown]
# ## ResNets in one paragraph
#
# A ResNet (He et al. 2016) is a *stem* followed by four *stages*. Each stage stacks residual
# blocks $y = \mathrm{ReLU}(x + F(x))$, where $F$ is two $3 \times 3$ convolutions with batch
# normalisation (the `BasicBlock` of ResNet-18/34) or a $1 \times 1$, $3 \times 3$, $1 \times 1$
# bottleneck (ResNet-50). Stages 2-4 halve the resolution and double the channels: 64, 128, 256,
# 512 (He et al. 2016, Table 1). The identity path $x$ lets gradients and information skip the
# block, which is why very deep ResNets train. After stage 4, global average pooling (GAP) turns the
# $C \times H \times W$ map into the vector $h \in \mathbb R^C$.
#
# `build_encoder("resnet18")` is torchvision's own `resnet18(weights=None)` with the classifier
# `fc` replaced by `nn.Identity()`, so it returns $h$. `build_encoder("resnet10", width=w)` is the
# same design with one block per stage and $w$ times the channels (`SmallResNet`), small enough
# to *train* on a laptop CPU: the book's CPU demos use ResNet-10 at half width.
#
# ## The stem, and why 32 px images need another one
#
# The ImageNet stem is a $7 \times 7$ convolution with stride 2 and a $3 \times 3$ max-pool with
# stride 2: it shrinks a 224 px image four-fold to 56 px before the first stage, and stage 4 then
# works on a $7 \times 7$ map. Applied to a 32 px CIFAR image the same stem leaves 8 px for stage 1
# and a single pixel for stage 4. SimCLR's fix for CIFAR-10 (App. B.9): "we replace the first 7x7
# Conv of stride 2 with 3x3 Conv of stride 1, and also remove the first max pooling operation".
# (He et al. 2016, Sec. 4.2, used a different, thinner three-stage network for CIFAR; SimCLR keeps
# the ImageNet ResNet and only changes the stem, and so do MoCo's CIFAR-10 demo and this library.)
#
# Forward hooks let us see it. A hook registered with `module.register_forward_hook(fn)` is called
# with the module's output on every forward pass; we record the output shape of the stem and of
# every stage.

# %%
STAGES = ["conv1", "maxpool", "layer1", "layer2", "layer3", "layer4"]


def stage_outputs(encoder: nn.Module, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """Run the encoder on x and return the output of every module in STAGES (via forward hooks)."""
    outputs: dict[str, torch.Tensor] = {}
    handles = [getattr(encoder, name).register_forward_hook(
        lambda module, args, out, name=name: outputs.__setitem__(name, out.detach())) for name in STAGES]
    try:
        with torch.no_grad():
            encoder.eval()(x)
    finally:
        for h in handles:
            h.remove()
    return outputs


setups = {
    "ImageNet stem, 224 px": (build_encoder("resnet18", cifar_stem=False), 224),
    "ImageNet stem, 32 px": (build_encoder("resnet18", cifar_stem=False), 32),
    "CIFAR stem, 32 px": (build_encoder("resnet18", cifar_stem=True), 32),
}
sides = {}
print(f"{'ResNet-18':24s}" + "".join(f"{s:>14s}" for s in STAGES))
for label, (enc, size) in setups.items():
    out = stage_outputs(enc, torch.randn(1, 3, size, size))
    sides[label] = [out[s].shape[-1] for s in STAGES]
    print(f"{label:24s}" + "".join(f"{f'{out[s].shape[1]}x{out[s].shape[2]}x{out[s].shape[3]}':>14s}"
                                   for s in STAGES))

# %%
fig, ax = plt.subplots(figsize=(5.5, 3.2))
for label, side in sides.items():
    ax.plot(range(len(STAGES)), side, marker="o", label=label)
ax.set(yscale="log", xticks=range(len(STAGES)), ylabel="feature-map side (px)",
       title="ResNet-18 feature-map size per stage")
ax.set_xticklabels(STAGES)
ax.set_yticks([1, 2, 4, 8, 16, 32, 64, 112, 224])
ax.set_yticklabels([1, 2, 4, 8, 16, 32, 64, 112, 224])
ax.grid(alpha=0.3)
ax.legend(fontsize=7)
fig.tight_layout()

# %% [markdown]
# With the CIFAR stem a 32 px image goes through the stages at 32, 16, 8 and 4 px: the same
# *relative* resolutions as a 224 px image with the ImageNet stem (56, 28, 14, 7), about half the
# size. With the ImageNet stem stage 4 sees a single pixel. Below, the mean absolute activation
# (over channels) of a random ResNet-18 on one real image, stage by stage: the CIFAR stem keeps a
# spatial map to the end, the ImageNet stem has nothing left to look at after stage 2.

# %%
image = test_set.images[0:1]
x = config_eval_transform(Config())(image)  # uint8 -> float, normalised with the CIFAR-10 mean and std
fig, axes = plt.subplots(2, len(STAGES) + 1, figsize=(1.2 * (len(STAGES) + 1), 3.3))
for row, label in enumerate(["ImageNet stem, 32 px", "CIFAR stem, 32 px"]):
    out = stage_outputs(setups[label][0], x)
    axes[row, 0].imshow(plots.to_display(image)[0].numpy(), interpolation="nearest")
    axes[row, 0].set_title("input 32x32", fontsize=7)
    for col, name in enumerate(STAGES, start=1):
        act = out[name][0].abs().mean(dim=0)
        axes[row, col].imshow(act.numpy(), cmap="viridis", interpolation="nearest")
        axes[row, col].set_title(f"{name} {act.shape[0]}x{act.shape[1]}", fontsize=7)
    for ax in axes[row]:
        ax.set_xticks([])
        ax.set_yticks([])
    axes[row, 0].set_ylabel(label.split(",")[0], fontsize=7)
fig.suptitle(f"mean |activation| of a random ResNet-18, one {test_set.name} image", fontsize=9)
fig.tight_layout()

# %% [markdown]
# A one-pixel map also wastes parameters. A $3 \times 3$ convolution with padding 1 on a
# $1 \times 1$ map only ever multiplies its centre tap with data; the other 8 taps see padding
# zeros. We can count which taps matter with autograd: a weight that never touches data gets a zero
# gradient.

# %%
def used_tap_fraction(encoder: nn.Module, size: int) -> float:
    """Fraction of the 3x3 kernel positions of layer4's convolutions that receive a gradient."""
    encoder.zero_grad()
    encoder.train()(torch.randn(4, 3, size, size)).pow(2).sum().backward()
    used = total = 0
    for m in encoder.layer4.modules():
        if isinstance(m, nn.Conv2d) and m.kernel_size == (3, 3):
            tap_grad = m.weight.grad.abs().sum(dim=(0, 1))  # (3, 3)
            used += int((tap_grad > 0).sum())
            total += 9
    return used / total


for label in ["ImageNet stem, 32 px", "CIFAR stem, 32 px"]:
    enc, size = setups[label]
    n4 = sum(p.numel() for p in enc.layer4.parameters())
    n_all = sum(p.numel() for p in enc.parameters())
    print(f"{label:22s}: layer4 holds {n4 / 1e6:.1f}M of {n_all / 1e6:.1f}M "
          f"parameters; fraction of its 3x3 taps that see data: {used_tap_fraction(enc, size):.2f}")

# %% [markdown]
# ## Parameters and FLOPs
#
# The stem changes almost nothing in the parameter count (a $3 \times 3$ instead of a $7 \times 7$
# first convolution), but a lot in compute: the stages now run on 16 times more pixels. We count
# floating-point operations two ways. The library's `encoders.forward_flops(encoder, size)` lets
# PyTorch count them: `torch.utils.flop_counter.FlopCounterMode` intercepts every matrix
# multiplication and convolution PyTorch dispatches (chapter 13 prices training runs with it). By
# hand, a forward hook on every `nn.Conv2d` applies the textbook formula for a convolution, a
# multiply and an add per weight and output position:
#
# $$\text{FLOPs} = 2 \cdot C_\text{out} H_\text{out} W_\text{out} \cdot \frac{C_\text{in}}{g} k_h k_w .$$
#
# Both ignore batch norm, ReLU and pooling (cheap, memory-bound). Note that papers often quote
# *multiply-adds* as "FLOPs": He et al. 2016, Table 1, lists $1.8 \times 10^9$ for ResNet-18 at
# 224 px, which is the GMACs column below, half of the FLOPs. (For ResNet-50 the paper lists 3.8;
# torchvision's ResNet-50 puts the stride-2 of each stage in the $3 \times 3$ convolution instead
# of the first $1 \times 1$, "ResNet v1.5", which costs a little more.)

# %%
def conv_flops_by_hooks(encoder: nn.Module, x: torch.Tensor) -> int:
    """FLOPs of all convolutions and linear layers for input x, from their output shapes."""
    total = 0

    def hook(module, args, out):
        nonlocal total
        if isinstance(module, nn.Conv2d):
            kh, kw = module.kernel_size
            total += 2 * out.numel() * (module.in_channels // module.groups) * kh * kw
        else:  # nn.Linear
            total += 2 * out.numel() * module.in_features

    layers = [m for m in encoder.modules() if isinstance(m, nn.Conv2d | nn.Linear)]
    handles = [m.register_forward_hook(hook) for m in layers]
    try:
        with torch.no_grad():
            encoder.eval()(x)
    finally:
        for h in handles:
            h.remove()
    return total


specs = [
    ("resnet18, ImageNet stem", "resnet18", dict(cifar_stem=False), [224, 32]),
    ("resnet18, CIFAR stem", "resnet18", dict(cifar_stem=True), [32]),
    ("resnet34, CIFAR stem", "resnet34", dict(cifar_stem=True), [32]),
    ("resnet50, ImageNet stem", "resnet50", dict(cifar_stem=False), [224]),
    ("resnet50, CIFAR stem", "resnet50", dict(cifar_stem=True), [32]),
    *[(f"resnet10 x{w}, CIFAR stem", "resnet10", dict(width=w), [32]) for w in (0.25, 0.5, 1.0)],
]
specs = pick([specs[1], specs[-2]], specs)  # smoke mode: two rows
models = {label: (build_encoder(name, **kw), sizes) for label, name, kw, sizes in specs}
print(f"{'encoder':26s}{'params':>9s}{'dim h':>7s}{'size':>6s}{'GFLOPs':>9s}{'GMACs':>8s}")
for label, (enc, sizes) in models.items():
    n_params = sum(p.numel() for p in enc.parameters())
    for size in sizes:
        f = forward_flops(enc, size)  # the library's count (FlopCounterMode)
        assert f == conv_flops_by_hooks(enc, torch.randn(1, 3, size, size)), label  # the hand formula
        print(f"{label:26s}{n_params / 1e6:8.2f}M{enc.feature_dim:7d}{size:6d}{f / 1e9:9.3f}{f / 2e9:8.3f}")
print("encoders.forward_flops (FlopCounterMode) and the hand formula agree for every row")

# %% [markdown]
# Two things to read off the table. The CIFAR stem costs about a third of the ImageNet ResNet at
# 224 px, since stage 1 runs at 32 px instead of 56 px and $(32/56)^2 \approx 0.33$. And the width
# multiplier is the cheap knob: compute and parameters scale roughly with $w^2$ (every
# convolution has $w$ times the input and $w$ times the output channels), which is why ResNet-10 at
# half width trains on a CPU in minutes.
#
# ## The representation $h$
#
# After stage 4, global average pooling averages every channel over all positions,
#
# $$h_c = \frac{1}{HW} \sum_{u=1}^{H} \sum_{v=1}^{W} a_{c,u,v}, \qquad h \in \mathbb R^{C},$$
#
# so $d$ = `encoder.feature_dim` is the number of channels of stage 4 (512 for ResNet-18/34, 2048
# for ResNet-50 whose bottleneck expands by 4, $\mathrm{round}(512 w)$ for ResNet-10 $\times w$). The
# pooling makes $h$ independent of the input size and, since the order of positions does not enter
# the sum, insensitive to *where* a pattern occurs. We check both against the hooked stage-4 map:

# %%
enc = build_encoder("resnet18", cifar_stem=True).eval()
batch = config_eval_transform(Config())(test_set.images[:8])
out = stage_outputs(enc, batch)
with torch.no_grad():
    h = enc(batch)
torch.testing.assert_close(h, out["layer4"].mean(dim=(2, 3)))
print(f"h equals the spatial mean of layer4's output: matches; h has shape {tuple(h.shape)} "
      f"= (batch, feature_dim = {enc.feature_dim})")
with torch.no_grad():
    for size in (32, 48, 64):
        probe = torch.randn(1, 3, size, size)
        side = stage_outputs(enc, probe)["layer4"].shape[-1]
        print(f"input {size}x{size} -> layer4 map {side}x{side} -> h of length {enc(probe).shape[1]}")

# %% [markdown]
# ## Weights that travel: loading into plain torchvision
#
# The ResNet-18/34/50 encoders *are* torchvision models with `fc = nn.Identity()`, so every
# parameter has torchvision's name, and a trained encoder can be handed to anyone who uses
# torchvision, without this library. Loading into `torchvision.models.resnet18()` reports only the
# classifier as missing (it is the downstream task's job). With the CIFAR stem the receiving model
# needs the same stem change first (`cifar_stem_`), or `conv1` does not fit.

# %%
ours = build_encoder("resnet18", cifar_stem=True).eval()
plain = torchvision.models.resnet18(weights=None)
try:
    plain.load_state_dict(ours.state_dict(), strict=False)
except RuntimeError as err:
    print("without the stem change:\n" + textwrap.fill(str(err).strip().splitlines()[-1].strip(), 100))
plain = cifar_stem_(torchvision.models.resnet18(weights=None))
report = plain.load_state_dict(ours.state_dict(), strict=False)
print("missing keys:", report.missing_keys, "| unexpected keys:", report.unexpected_keys)
plain.fc = nn.Identity()
with torch.no_grad():
    torch.testing.assert_close(plain.eval()(batch), ours(batch))
print("plain torchvision ResNet-18 with our weights gives the same h: matches")

# %% [markdown]
# ## Speed on a CPU: fp32 and bf16
#
# Many recent CPUs multiply in **bfloat16** natively (AVX-512 BF16, AMX): the exponent range of
# fp32 with 8 bits of precision instead of 24, and about twice the throughput on matrix units. Without native support,
# bf16 is emulated and *slower* than fp32, so the library detects it
# (`runtime.cpu_supports_bf16`) and `runtime.autocast_dtype(device)` returns the dtype worth
# using, or `None`. Under `torch.autocast`, convolutions and matrix products run in bf16, while
# the operations autocast lists as precision-sensitive run in fp32. Like the engine, we use the channels-last memory
# layout, which oneDNN's convolutions prefer. The timings are informal (median of a few
# repeats on a possibly shared machine); `benchmarks/bench_train.py` measures whole training steps.

# %%
def throughput(encoder: nn.Module, batch: int, dtypes: list, train: bool, repeats: int) -> dict:
    """Images per second for each autocast dtype (None = fp32) of a forward pass (train=False, no
    grad) or forward + backward (train=True). The dtypes take turns, so a change in the machine's
    load affects all of them alike; the median over `repeats` rounds is reported."""
    encoder = encoder.to(memory_format=torch.channels_last).train(train)
    x = torch.randn(batch, 3, 32, 32).contiguous(memory_format=torch.channels_last)

    def step(dtype: torch.dtype | None) -> float:
        t0 = time.perf_counter()
        with torch.set_grad_enabled(train), torch.autocast("cpu", dtype=dtype, enabled=dtype is not None):
            h = encoder(x)
        if train:
            h.float().pow(2).mean().backward()
        return time.perf_counter() - t0

    for dtype in dtypes:  # warm-up: oneDNN picks and caches its kernels on the first call
        step(dtype)
    times = {dtype: [] for dtype in dtypes}
    for _ in range(repeats):
        for dtype in dtypes:
            times[dtype].append(step(dtype))
    return {dtype: batch / sorted(t)[len(t) // 2] for dtype, t in times.items()}


dtype = autocast_dtype("cpu")
dtypes = [None] if dtype is None else [None, dtype]
print("native bf16 on this CPU:", cpu_supports_bf16(), "| autocast dtype:", dtype)
repeats, load = pick(1, 5), os.getloadavg()[0]
jobs = [
    ("resnet18 CIFAR stem, inference", build_encoder("resnet18", cifar_stem=True), pick(8, 128), False),
    ("resnet10 x0.5, training step", build_encoder("resnet10", width=0.5), pick(8, 256), True),
]
print(f"load average before: {load:.1f} on {os.cpu_count()} cores, {torch.get_num_threads()} threads")
for label, enc, bs, train in jobs:
    speed = throughput(enc, bs, dtypes, train, repeats)
    line = f"{label:32s} batch {bs:4d}: fp32 {speed[None]:6.0f} img/s"
    if dtype is not None:
        line += f" | {str(dtype).split('.')[-1]} {speed[dtype]:6.0f} img/s ({speed[dtype] / speed[None]:.1f}x)"
    print(line)
print(f"load average after: {os.getloadavg()[0]:.1f} (a rise means other programs competed for the cores)")

# %% [markdown]
# Lower precision changes the numbers a little. The features of the same images in fp32 and in
# the autocast dtype differ by about the bf16 rounding error ($2^{-8} \approx 0.4\%$ per operation),
# and their directions, which is all that a cosine kNN or a contrastive loss looks at, agree closely:

# %%
enc = build_encoder("resnet18", cifar_stem=True)
imgs = test_set.images[: pick(32, 256)]
h32 = extract_features(enc, imgs, transform=config_eval_transform(Config()), autocast=False)
if dtype is not None:
    hlow = extract_features(enc, imgs, transform=config_eval_transform(Config()), autocast=True)
    rel = ((hlow - h32).norm(dim=1) / h32.norm(dim=1)).mean()
    cos = torch.nn.functional.cosine_similarity(hlow, h32, dim=1)
    print(f"mean relative difference |h_low - h_fp32| / |h_fp32|: {rel:.4f}")
    print(f"cosine similarity of h_low and h_fp32: min {cos.min():.5f}, mean {cos.mean():.5f}")
else:
    print("no low-precision dtype on this CPU: features stay fp32")

# %% [markdown]
# ## A random encoder is already a feature extractor
#
# Every later chapter reports how much contrastive training improves the kNN accuracy of $h$, so
# we need the starting point. The weighted kNN classifier (Wu et al. 2018, Sec. 3.4; the monitor of
# MoCo's CIFAR-10 demo) labels a test image by the votes of its $k = 200$ most cosine-similar
# training images, each weighted by $e^{s_i / \tau}$ with $\tau = 0.1$
# (`contrastive_lab.evaluate.knn_accuracy`). No parameter is trained: the classifier is only as
# good as the geometry of the features. We compare raw pixels (flattened, as in chapter 00) with
# untrained encoders, preprocessed exactly as the training engine does for evaluation
# (`engine.config_eval_transform`: to float, normalise with the CIFAR-10 mean and std).
#
# To see *where* in the network the useful features appear, a small wrapper pools every stage
# (global average pooling of the outputs of layer1 to layer4) and concatenates them; one pass
# then gives four feature sets, and the last one is exactly $h$.

# %%
class PooledStages(nn.Module):
    """GAP of the outputs of layer1..layer4 of a ResNet, concatenated (B, sum of stage widths)."""

    def __init__(self, encoder: nn.Module) -> None:
        super().__init__()
        self.encoder, self.pooled = encoder, []
        for name in STAGES[2:]:
            getattr(encoder, name).register_forward_hook(self._pool)

    def _pool(self, module: nn.Module, args: tuple, out: torch.Tensor) -> None:
        self.pooled.append(out.mean(dim=(2, 3)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.pooled = []
        self.encoder(x)
        return torch.cat(self.pooled, dim=1)


n_train, n_test = pick(200, len(train_set)), pick(100, len(test_set))
train_x, train_y = train_set.images[:n_train], train_set.labels[:n_train]
test_x, test_y = test_set.images[:n_test], test_set.labels[:n_test]
k, tau = min(200, n_train), 0.1
to_input = config_eval_transform(Config())  # Config() defaults: the simclr_cifar recipe at 32 px
results, by_stage, seconds = {}, {}, {}


def knn(f_train: torch.Tensor, f_test: torch.Tensor) -> float:
    """Weighted kNN top-1 accuracy of one feature set (k=200, tau=0.1)."""
    return knn_accuracy(f_train, train_y, f_test, test_y, k=k, temperature=tau)


results["raw pixels [0, 1]"] = knn(train_x.float().flatten(1) / 255, test_x.float().flatten(1) / 255)
results["raw pixels, normalised"] = knn(to_input(train_x).flatten(1), to_input(test_x).flatten(1))

torch.manual_seed(0)
resnet18 = build_encoder("resnet18", cifar_stem=True)
stages = PooledStages(resnet18)
with torch.no_grad():  # the last stage slice is exactly h
    torch.testing.assert_close(stages.eval()(to_input(test_x[:4]))[:, -resnet18.feature_dim:],
                               resnet18(to_input(test_x[:4])))
t0 = time.perf_counter()
f_train, f_test = (extract_features(stages, x, transform=to_input) for x in (train_x, test_x))
seconds["random resnet18 (CIFAR stem)"] = time.perf_counter() - t0
start = 0
for name, width in zip(STAGES[2:], [64, 128, 256, 512]):
    by_stage[name] = knn(f_train[:, start : start + width], f_test[:, start : start + width])
    start += width
results["random resnet18 (CIFAR stem)"] = by_stage["layer4"]
h18_train, h18_test = f_train[:, -512:], f_test[:, -512:]

for label, enc in [
    ("random resnet18 (ImageNet stem)", build_encoder("resnet18", cifar_stem=False)),
    ("random resnet10 x0.5 (CIFAR stem)", build_encoder("resnet10", width=0.5)),
]:
    t0 = time.perf_counter()
    results[label] = knn(*(extract_features(enc, x, transform=to_input) for x in (train_x, test_x)))
    seconds[label] = time.perf_counter() - t0

chance = 1 / len(test_set.classes)
print(f"weighted kNN (k={k}, tau={tau}) top-1 on {test_set.name} test ({n_test} images), "
      f"memory = {n_train} {train_set.name} train images; chance = {chance:.2f}")
for name, acc in results.items():
    extra = f"   (features in {seconds[name]:.0f} s)" if name in seconds else ""
    print(f"  {name:36s} {acc:.3f}{extra}")
print("random resnet18 (CIFAR stem), GAP of each stage:")
for name, acc in by_stage.items():
    print(f"  {name:36s} {acc:.3f}")

# %%
fig, axes = plt.subplots(1, 2, figsize=(8, 3.0), gridspec_kw={"width_ratios": [1.5, 1]})
bar_colours = ["tab:gray"] * 2 + ["tab:blue"] * (len(results) - 2)  # pixels gray, encoders blue
axes[0].barh(list(results), list(results.values()), color=bar_colours)
axes[0].axvline(chance, color="k", ls="--", lw=1, label="chance")
axes[0].set(xlabel="kNN top-1", title=f"no training at all ({test_set.name} test)")
axes[0].invert_yaxis()
axes[0].legend(fontsize=7)
axes[0].tick_params(labelsize=7)
axes[1].plot(list(by_stage), list(by_stage.values()), marker="o", label="random resnet18, GAP of stage")
axes[1].axhline(results["raw pixels, normalised"], color="tab:gray", ls=":", label="raw pixels, normalised")
axes[1].axhline(chance, color="k", ls="--", lw=1, label="chance")
axes[1].set(ylabel="kNN top-1", title="where the features are", ylim=(0, 1.25 * max(results.values())))
axes[1].legend(fontsize=7)
axes[1].grid(alpha=0.3)
axes[1].tick_params(labelsize=7)
fig.tight_layout()

# %% [markdown]
# Without any training, the random encoders land far above chance and in the same range as raw
# pixels (compare the printed numbers; on cifar10-mini the normalised pixels are a strong
# baseline), and no stage of the random ResNet is much better than another. Note how much the
# normalisation matters for raw pixels: all values in $[0, 1]$ are positive, so every two images
# have a high cosine similarity dominated by overall brightness; subtracting the channel means
# removes that common part. The stem makes little difference to a *random* network; its value
# shows up in training, when stage 4 has a spatial map to work on and all of its weights receive
# gradients. Three observations explain the random encoders' numbers, and all three matter for
# the rest of the book.
#
# * **A random network keeps the geometry of its input.** Each random $3 \times 3$ filter followed
#   by a ReLU is a random local detector (an edge at some orientation, a colour contrast), and a
#   layer of many of them is a random projection of every patch. Random projections roughly
#   preserve distances (Johnson-Lindenstrauss), and deep ReLU networks with random Gaussian weights
#   embed data in a way that approximately preserves its metric structure (Giryes et al. 2016,
#   "Deep neural networks with random Gaussian weights"). Images that were close in pixel space
#   stay close in $h$: the random encoder inherits the pixel kNN's accuracy, and its mistakes.
# * **The architecture is a prior.** Convolutions look at local patterns wherever they occur, and
#   global average pooling turns "which detector fired *where*" into "which detectors fired, and how
#   much", a bag of local patterns. That random convolution, rectification and pooling already make
#   reasonable features is an old observation (Jarrett et al. 2009; Saxe et al. 2011, "On random
#   weights and unsupervised feature learning"). Pooling also discards the layout (sky above, grass
#   below) that raw pixels exploit on CIFAR, one reason the random network does not simply beat them.
# * **What is missing is meaning.** Nothing in a random network makes two cars of different colours
#   closer than a red car and a red truck. That is what training has to add, and the baseline to
#   beat is the random encoder, not chance: the gap between these numbers and the trained encoder of
#   chapter 05 is what contrastive learning learned.
#
# The nearest neighbours of a few test images under the random encoder's $h$ show what it
# captures: overall colour, background and texture, and through them the class now and then.

# %%
title = f"random ResNet-18 (CIFAR stem): query, then nearest {train_set.name} train images"
fig = plots.retrieval_grid(test_x, h18_test, train_x, h18_train, n_queries=5, k=7, title=title)

# %%
print(f"chapter run time: {time.perf_counter() - chapter_start:.0f} s")

# %% [markdown]
# ## Exercises
#
# 1. Repeat the random-encoder kNN with three seeds for `torch.manual_seed` before
#    `build_encoder`. How large is the spread, compared with the gap to raw pixels?
# 2. A random network in eval mode uses BatchNorm's initial running statistics (mean 0, variance
#    1). Run one pass over the training images in train mode first (`encoder.train()` under
#    `torch.no_grad()`, which updates the running statistics), then measure the kNN again. What
#    changes, and why can it matter for a network whose activations were never normalised?
# 3. Replace global average pooling by global max pooling in `PooledStages` (use `out.amax`). Which
#    pooling gives the better random features on cifar10-mini?
# 4. Upsample the images to 64 px (`torch.nn.functional.interpolate`) and feed them to the
#    ImageNet-stem ResNet-18. Does it recover the CIFAR-stem accuracy? At what FLOP cost?
# 5. Count parameters and FLOPs of `build_encoder("small_resnet", blocks=(2, 2, 2, 2), width=0.5)`
#    and predict them from the $w^2$ rule before you run it.
# 6. Take a `torchvision.models.resnet50()` and load a `build_encoder("resnet50", cifar_stem=True)`
#    state dict into it. What do you have to change first, and which keys are missing?
# 7. **Checked** (`check("02.7", ...)` below): write `my_param_count(width, blocks, cifar_stem)`, the
#    number of trainable parameters of `SmallResNet(width=width, blocks=blocks, cifar_stem=cifar_stem)`
#    computed from the architecture alone (convolutions, batch norms, shortcuts), without building it.
# 8. **Checked** (`check("02.8", ...)` below): write `my_layer4_side(size, cifar_stem)`, the side of
#    the feature map `layer4` outputs for a `size` x `size` input, with the CIFAR or the ImageNet stem,
#    for any size (odd ones included).

# %%
from contrastive_lab import runtime
from contrastive_lab.exercises import check


def my_param_count(width, blocks, cifar_stem):
    raise NotImplementedError  # your code here


check("02.7", my_param_count)

# %%
def my_layer4_side(size, cifar_stem):
    raise NotImplementedError  # your code here


check("02.8", my_layer4_side)

# %%
print(runtime.chapter_report())
