"""Contrastive Predictive Coding (CPC): learn by predicting the future in latent space.

CPC (van den Oord, Li & Vinyals 2018, "Representation Learning with Contrastive Predictive
Coding", Sec. 2) has three parts and one loss:

* an **encoder** ``g_enc`` maps each piece of the input (a short window of a signal, a patch of
  an image) to a latent ``z_t = g_enc(x_t)``;
* an **autoregressive context network** ``g_ar`` summarises the latents up to now,
  ``c_t = g_ar(z_{<=t})``; it may never look ahead;
* one **linear map** ``W_k`` per offset ``k = 1..K`` turns the context into a prediction
  ``W_k c_t`` of the latent ``k`` steps ahead, scored by the log-bilinear model of Eq. 3,
  ``f_k(x_{t+k}, c_t) = exp(z_{t+k}^T W_k c_t)``;
* **InfoNCE** (Eq. 4) asks each prediction to pick its true future latent among N candidates,
  the other N-1 being latents of other time steps and other sequences in the batch.

This module builds CPC twice, in the order the book teaches it:

1. :func:`cpc_loss` / :func:`cpc_loss_reference`: InfoNCE summed over offsets, shared by both models.
2. **1-D CPC** on a synthetic signal whose future depends on a hidden per-sequence latent
   (:func:`make_oscillation_sequences`): :class:`SignalEncoder` (strided convolutions),
   a GRU context, :class:`SequenceCPC`, trained by :func:`train_sequence_cpc`.
3. **Image CPC** (CPC Sec. 3.2; CPC v2, Hénaff et al. 2020, "Data-Efficient Image Recognition
   with Contrastive Predictive Coding"): an overlapping grid of patches (:func:`extract_patches`),
   a small patch network (:class:`PatchConvNet`) pooled per patch (:class:`PatchGridEncoder`),
   a row-causal PixelCNN-style context (:class:`RowCausalConv2d`, :class:`RowCausalContext`),
   CPC v2's per-patch augmentation (:class:`PatchAugment`) and the training method
   :class:`ImageCPC` (registered as ``method=cpc``; :func:`make_image_cpc` builds it).

Causality, the one property everything rests on: the context at row i (time t) must not depend
on anything at rows > i (times > t); otherwise predicting "the future" is copying it. The tests
check it with autograd: the gradient of ``c_i`` with respect to later inputs is exactly zero.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from .losses import cpc_accuracy, cpc_info_nce

__all__ = [
    "cpc_loss", "cpc_loss_reference",
    "SequenceData", "make_oscillation_sequences", "SignalEncoder", "SequenceCPC", "train_sequence_cpc",
    "grid_size", "extract_patches", "extract_patches_reference",
    "PatchAugmentParams", "PatchAugment", "PatchConvNet", "PatchGridEncoder",
    "RowCausalConv2d", "RowCausalContext", "ImageCPC", "make_image_cpc",
]  # fmt: skip


def _check_int(value: object, name: str, low: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
    return value


def _check_fraction(value: object, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} is a probability and must lie in [0, 1], got {value!r}")
    return float(value)


# =========================================================================================
# 1. The loss: InfoNCE for every offset k = 1..K
# =========================================================================================


def _check_cpc_inputs(latents: Tensor, contexts: Tensor, predictors: Sequence[nn.Module]) -> int:
    """Shapes (B, T, ..., D) and (B, T, ..., C) with T > K; returns K."""
    for name, x in (("latents", latents), ("contexts", contexts)):
        if not isinstance(x, Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
        if x.ndim < 3:
            raise ValueError(
                f"{name} must be a (B, T, ..., dim) tensor (axis 1 = the predicted axis), got {tuple(x.shape)}"
            )
    if latents.shape[:-1] != contexts.shape[:-1]:
        raise ValueError(
            f"latents {tuple(latents.shape)} and contexts {tuple(contexts.shape)} must agree on every axis "
            "but the last (one context per latent position)"
        )
    k_max = len(predictors)
    if k_max < 1:
        raise ValueError("predictors is empty: pass one W_k per offset k = 1..K")
    if latents.shape[1] <= k_max:
        raise ValueError(
            f"cannot predict {k_max} steps ahead along an axis of length {latents.shape[1]}: "
            f"use at most {latents.shape[1] - 1} predictors (offsets)"
        )
    return k_max


def cpc_loss(
    latents: Tensor, contexts: Tensor, predictors: Sequence[nn.Module], temperature: float = 1.0
) -> tuple[Tensor, Tensor]:
    """CPC's InfoNCE (van den Oord et al. 2018, Eq. 3-4), averaged over offsets k = 1..K.

    ``latents`` z and ``contexts`` c have shape (B, T, ..., D) and (B, T, ..., C): axis 1 is the
    axis we predict along (time for signals, rows for images); the axes in "..." (columns) are
    positions that are predicted in parallel. ``predictors[k-1]`` is W_k, a map from C to D on
    the last axis. For each offset k::

        prediction   p = W_k c[:, t, ...]            for every t < T - k
        positive       z[:, t + k, ...]              (the same sequence / column, k steps ahead)
        candidates     every z[:, s, ...] with s >= k, from every sequence in the batch
        L_k = mean over predictions of  -log exp(p . z_pos / tau) / sum_candidates exp(p . z_j / tau)

    so the negatives are latents at other time steps of the same sequence *and* of the other
    sequences (CPC Sec. 2.3; for images: other patches of the same image and of other images,
    as in CPC v2, Hénaff et al. 2020, Sec. 2.1). The result is
    ``L = (1/K) sum_k L_k``. The paper sums over k; the mean keeps the loss on the scale of
    log N whatever K is, and only rescales the gradient. tau = 1 is the paper's plain dot product.

    Returns ``(loss, accuracy)``: ``accuracy[k-1]`` is the fraction of predictions whose highest
    score is the true future latent (chance: 1 / number of candidates). The loss is computed by
    :func:`contrastive_lab.losses.cpc_info_nce` in float32 (float64 for float64 inputs).
    """
    k_max = _check_cpc_inputs(latents, contexts, predictors)
    steps = latents.shape[1]
    losses, accuracies = [], []
    for k, w_k in enumerate(predictors, start=1):
        prediction = w_k(contexts[:, : steps - k])  # from every position that has a row k ahead
        target = latents[:, k:]  # row i of `target` is the future of row i of `prediction`
        p, z = prediction.reshape(-1, prediction.shape[-1]), target.reshape(-1, target.shape[-1])
        losses.append(cpc_info_nce(p, z, temperature=temperature))
        accuracies.append(cpc_accuracy(p, z))
    return torch.stack(losses).sum() / k_max, torch.stack(accuracies)


def cpc_loss_reference(
    latents: Tensor, contexts: Tensor, predictors: Sequence[nn.Module], temperature: float = 1.0
) -> Tensor:
    """:func:`cpc_loss` written position by position with exp/log (slow; for tests and reading).

    For each offset k and each position (b, t, j) that has a future, it lists the candidate set
    X_k = {z[b', s, j'] : s >= k} explicitly and evaluates Eq. 4 term by term.
    """
    k_max = _check_cpc_inputs(latents, contexts, predictors)
    batch, steps, rest = latents.shape[0], latents.shape[1], latents.shape[2:-1]
    columns = list(itertools.product(*(range(n) for n in rest)))  # [()] for 1-D sequences
    per_offset = []
    for k, w_k in enumerate(predictors, start=1):
        candidates = [latents[(b, s, *j)] for b in range(batch) for s in range(k, steps) for j in columns]
        terms = []
        for b in range(batch):
            for t in range(steps - k):
                for j in columns:
                    prediction = w_k(contexts[(b, t, *j)])  # W_k c_t
                    f_pos = torch.exp(torch.dot(latents[(b, t + k, *j)], prediction) / temperature)  # Eq. 3
                    f_all = sum(torch.exp(torch.dot(z_j, prediction) / temperature) for z_j in candidates)
                    terms.append(-torch.log(f_pos / f_all))  # Eq. 4, one term
        per_offset.append(torch.stack(terms).mean())
    return torch.stack(per_offset).sum() / k_max


# =========================================================================================
# 2. 1-D CPC on synthetic sequences
# =========================================================================================


@dataclass(frozen=True)
class SequenceData:
    """Synthetic signals: ``signals`` (N, L) float32, ``labels`` (N,) int64 = the hidden class,
    ``periods`` (num_classes,) float64: the period in samples of each class's lower note."""

    signals: Tensor
    labels: Tensor
    periods: Tensor

    def __len__(self) -> int:
        return self.signals.shape[0]


def make_oscillation_sequences(
    n: int,
    length: int = 512,
    num_classes: int = 6,
    noise: float = 0.4,
    phase_noise: float = 0.08,
    seed: int = 0,
) -> SequenceData:
    """Noisy two-note "chords" whose pitch is a hidden per-sequence latent.

    Sequence i has a hidden class y_i; the class fixes the period T_y of the lower note (periods
    spaced geometrically between 10 and 30 samples) and the upper note has 3/2 its frequency
    (a fifth). With random amplitudes a, b ~ U(0.5, 1), random start phases, Brownian phases
    (random-walk increments ~ N(0, phase_noise^2) per sample) and white noise e_t ~ N(0, noise^2)::

        x_t = a sin(phi_t) + b sin(psi_t) + e_t,
        phi_t = phi_0 + 2 pi t / T_y + W_t,   psi_t = psi_0 + 3 pi t / T_y + W'_t.

    The past predicts the future only through y (which notes are playing) and the current phases,
    and the phase drift makes the far future less predictable than the near future: exactly the
    "slow features" CPC is meant to find (van den Oord et al. 2018, Sec. 2.1). Deterministic for a seed.
    """
    _check_int(n, "n")
    _check_int(length, "length", 2)
    _check_int(num_classes, "num_classes", 2)
    for name, value in (("noise", noise), ("phase_noise", phase_noise)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
            raise ValueError(f"{name} must be a number >= 0, got {value!r}")
    g = torch.Generator().manual_seed(seed)
    periods = torch.logspace(math.log10(10.0), math.log10(30.0), num_classes, dtype=torch.float64)
    labels = torch.randint(num_classes, (n,), generator=g)
    t = torch.arange(length, dtype=torch.float64)
    omega = 2 * math.pi / periods[labels]  # (n,) radians per sample of the lower note

    def note(freq: Tensor) -> Tensor:
        start = 2 * math.pi * torch.rand(n, 1, generator=g, dtype=torch.float64)
        drift = phase_noise * torch.randn(n, length, generator=g, dtype=torch.float64).cumsum(dim=1)
        amplitude = 0.5 + 0.5 * torch.rand(n, 1, generator=g, dtype=torch.float64)
        return amplitude * torch.sin(start + freq[:, None] * t + drift)

    x = note(omega) + note(1.5 * omega) + noise * torch.randn(n, length, generator=g, dtype=torch.float64)
    return SequenceData(signals=x.float(), labels=labels, periods=periods)


class SignalEncoder(nn.Module):
    """g_enc for 1-D signals: strided convolutions without padding, ReLU after each.

    CPC's audio encoder (van den Oord et al. 2018, Sec. 3.1) is five strided convolutions
    (strides 5, 4, 2, 2, 2; filter sizes 10, 8, 4, 4, 4; 512 channels), downsampling 16 kHz
    audio 160 times. Ours is the same idea at toy scale. Without padding, latent ``z_t`` depends
    on exactly the samples ``x[t*S : t*S + R]`` (see :attr:`receptive_field`), nothing later.
    forward: (B, L) signals -> (B, T, dim) latents, T = (L - R) // S + 1.
    """

    def __init__(
        self,
        dim: int = 32,
        hidden: int = 64,
        kernels: Sequence[int] = (8, 4, 4),
        strides: Sequence[int] = (4, 2, 1),
    ) -> None:
        super().__init__()
        if len(kernels) != len(strides) or not kernels:
            raise ValueError(
                f"kernels {tuple(kernels)} and strides {tuple(strides)} must be equally long, non-empty"
            )
        for kernel, stride in zip(kernels, strides):
            _check_int(kernel, "kernel size")
            _check_int(stride, "stride")
        self.kernels, self.strides = tuple(kernels), tuple(strides)
        widths = [1] + [hidden] * (len(kernels) - 1) + [dim]
        layers: list[nn.Module] = []
        for i, (kernel, stride) in enumerate(zip(kernels, strides)):
            layers += [nn.Conv1d(widths[i], widths[i + 1], kernel, stride=stride), nn.ReLU()]
        self.net = nn.Sequential(*layers)
        self.dim = dim

    @property
    def receptive_field(self) -> tuple[int, int]:
        """(R, S): z_t sees the R input samples starting at t * S.

        S is the product of the strides; R = 1 + sum_l (kernel_l - 1) * (stride_1 ... stride_{l-1}).
        """
        size, jump = 1, 1
        for kernel, stride in zip(self.kernels, self.strides):
            size += (kernel - 1) * jump
            jump *= stride
        return size, jump

    def num_steps(self, length: int) -> int:
        """Number of latents T for a signal of ``length`` samples."""
        size, jump = self.receptive_field
        return (length - size) // jump + 1

    def forward(self, x: Tensor) -> Tensor:
        if x.ndim != 2:
            raise ValueError(f"signals must have shape (B, L), got {tuple(x.shape)}")
        if self.num_steps(x.shape[1]) < 2:
            raise ValueError(
                f"signals of length {x.shape[1]} give fewer than 2 latents; the encoder needs at least "
                f"{sum(self.receptive_field)} samples"
            )
        return self.net(x[:, None]).transpose(1, 2)  # (B, dim, T) -> (B, T, dim)


class SequenceCPC(nn.Module):
    """1-D CPC (van den Oord et al. 2018, Sec. 2 and Fig. 1): g_enc -> GRU g_ar -> W_1..W_K.

    ``encode``: (B, L) -> z (B, T, dim); ``contexts``: z -> c (B, T, context_dim), c_t = GRU(z_1..z_t);
    ``forward``: (B, L) signals -> (loss, logs) with the :func:`cpc_loss` over K offsets and the
    accuracy of picking the true future at each offset (logs ``acc_k1`` ... ``acc_kK``).
    CPC's audio model: a 256-d GRU predicting 12 steps (Sec. 3.1); the defaults are toy-sized.
    ``dim`` (default 32) sizes the default :class:`SignalEncoder`; or pass your own ``encoder``.
    """

    def __init__(
        self,
        dim: int | None = None,
        context_dim: int = 64,
        max_offset: int = 12,
        encoder: SignalEncoder | None = None,
    ) -> None:
        super().__init__()
        _check_int(max_offset, "max_offset")
        if encoder is not None and dim is not None and dim != encoder.dim:
            raise ValueError(f"dim={dim} contradicts the given encoder's dim={encoder.dim}; pass only one")
        self.encoder = encoder if encoder is not None else SignalEncoder(dim=dim or 32)
        self.gar = nn.GRU(self.encoder.dim, context_dim, batch_first=True)
        self.predictors = nn.ModuleList(  # W_k, one per offset (Eq. 3); no bias, as in the paper
            nn.Linear(context_dim, self.encoder.dim, bias=False) for _ in range(max_offset)
        )

    @property
    def max_offset(self) -> int:
        return len(self.predictors)

    def encode(self, signals: Tensor) -> Tensor:
        return self.encoder(signals)

    def contexts(self, latents: Tensor) -> Tensor:
        """c_t = g_ar(z_{<=t}): a GRU reads left to right, so c_t never sees z_{t+1}."""
        return self.gar(latents)[0]

    def forward(self, signals: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        z = self.encode(signals)
        loss, accuracy = cpc_loss(z, self.contexts(z), self.predictors)
        return loss, {"loss": loss.detach(), **{f"acc_k{k + 1}": a for k, a in enumerate(accuracy)}}


def train_sequence_cpc(
    model: SequenceCPC, signals: Tensor, steps: int, batch_size: int = 32, lr: float = 2e-3, seed: int = 0
) -> list[dict[str, float]]:
    """Train ``model`` on random minibatches of ``signals`` (N, L) with Adam; return per-step logs.

    Adam as in CPC (van den Oord et al. 2018, Sec. 3.1: lr 2e-4; a toy model trains faster with
    a larger one). Deterministic for a seed (the batches come from its own generator).
    """
    _check_int(steps, "steps")
    _check_int(batch_size, "batch_size", 2)
    if batch_size > len(signals):
        raise ValueError(f"batch_size={batch_size} exceeds the {len(signals)} sequences; lower it")
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    history = []
    for step in range(steps):
        batch = signals[torch.randperm(len(signals), generator=generator)[:batch_size]]
        loss, logs = model(batch)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        history.append({"step": step + 1, **{key: float(value) for key, value in logs.items()}})
    return history


# =========================================================================================
# 3. Image CPC: a grid of overlapping patches
# =========================================================================================


def grid_size(image_size: int, patch_size: int, stride: int) -> int:
    """Patches per side, G = (image_size - patch_size) / stride + 1; the grid must tile exactly.

    CPC (van den Oord et al. 2018, Sec. 3.2): 64-px patches, stride 32, 256-px image -> G = 7.
    The book's 32-px version: 8-px patches, stride 4 -> G = 7.
    """
    for name, value in (("image_size", image_size), ("patch_size", patch_size), ("stride", stride)):
        _check_int(value, name)
    if patch_size > image_size or (image_size - patch_size) % stride:
        raise ValueError(
            f"{patch_size}-px patches with stride {stride} do not tile a {image_size}-px image exactly: "
            f"need patch_size <= image_size and (image_size - patch_size) divisible by stride "
            f"(e.g. 8 and 4 for 32 px)"
        )
    return (image_size - patch_size) // stride + 1


def _check_images(images: Tensor) -> None:
    if not isinstance(images, Tensor) or images.ndim != 4:
        shape = tuple(images.shape) if isinstance(images, Tensor) else type(images).__name__
        raise ValueError(f"images must be a (B, C, H, W) tensor, got {shape}")
    if images.shape[2] != images.shape[3]:
        raise ValueError(f"images must be square, got {images.shape[2]} x {images.shape[3]}")


def extract_patches(images: Tensor, patch_size: int, stride: int) -> Tensor:
    """(B, C, H, H) images -> (B, G, G, C, P, P) patches; patch (i, j) is the window at row i*S, column j*S.

    Two ``Tensor.unfold`` calls (views, no copy until the final reshape). With stride < patch
    size neighbouring patches overlap (8-px patches, stride 4: half of each patch is shared).
    """
    _check_images(images)
    grid_size(images.shape[-1], patch_size, stride)
    patches = images.unfold(2, patch_size, stride).unfold(3, patch_size, stride)  # B, C, G, G, P, P
    return rearrange(patches, "b c i j p q -> b i j c p q")


def extract_patches_reference(images: Tensor, patch_size: int, stride: int) -> Tensor:
    """:func:`extract_patches` with a double loop over the grid and plain slicing."""
    g = grid_size(images.shape[-1], patch_size, stride)
    rows = []
    for i in range(g):
        row = [
            images[:, :, i * stride : i * stride + patch_size, j * stride : j * stride + patch_size]
            for j in range(g)
        ]
        rows.append(torch.stack(row, dim=1))  # B, G(columns), C, P, P
    return torch.stack(rows, dim=1)  # B, G(rows), G(columns), C, P, P


@dataclass(frozen=True)
class PatchAugmentParams:
    """Random choices for N patches: ``shift`` (N, 2) int64 (dy, dx) of the crop window,
    ``flip`` (N,) bool, ``keep_channel`` (N,) int64: the one colour channel kept, -1 = keep all."""

    shift: Tensor
    flip: Tensor
    keep_channel: Tensor


class PatchAugment(nn.Module):
    """CPC v2's per-patch augmentation (Hénaff et al. 2020, Sec. 4.1, "RC" and "PA" in Fig. 3).

    Each patch independently gets, in this order:

    1. a random crop: the patch is zero-padded by ``max_shift`` pixels and a window of its own
       size is cut at a random offset (dy, dx) in [-max_shift, max_shift]^2 (zero = the dataset
       mean, since patches come from normalised images);
    2. a horizontal flip with probability ``flip_p``;
    3. colour dropping with probability ``color_drop_p``: two of the three channels are set to
       zero and one random channel is kept (CPC v2's "random color-dropping", from Doersch et
       al. 2015), so patches cannot be matched by colour statistics alone.

    Active only in training mode (``model.train()``); in eval mode the patches pass unchanged.
    ``sample_params`` + ``apply`` split the randomness from the map so tests can fix it;
    ``apply_reference`` is the same map as a loop over patches. Randomness comes from torch's
    global RNG (which the engine seeds and checkpoints) unless a generator is passed.
    """

    def __init__(self, flip_p: float = 0.5, color_drop_p: float = 0.5, max_shift: int = 1) -> None:
        super().__init__()
        self.flip_p = _check_fraction(flip_p, "flip_p")
        self.color_drop_p = _check_fraction(color_drop_p, "color_drop_p")
        self.max_shift = _check_int(max_shift, "max_shift", low=0)

    def extra_repr(self) -> str:
        return f"flip_p={self.flip_p}, color_drop_p={self.color_drop_p}, max_shift={self.max_shift}"

    def sample_params(
        self,
        n: int,
        channels: int = 3,
        generator: torch.Generator | None = None,
        device: torch.device | str = "cpu",
    ) -> PatchAugmentParams:
        dev = generator.device if generator is not None else torch.device(device)
        shift = torch.randint(-self.max_shift, self.max_shift + 1, (n, 2), generator=generator, device=dev)
        flip = torch.rand(n, generator=generator, device=dev) < self.flip_p
        drop = torch.rand(n, generator=generator, device=dev) < self.color_drop_p
        channel = torch.randint(channels, (n,), generator=generator, device=dev)
        keep = torch.where(drop, channel, torch.full_like(channel, -1))
        return PatchAugmentParams(shift.to(device), flip.to(device), keep.to(device))

    def _check(self, patches: Tensor, params: PatchAugmentParams) -> None:
        if patches.ndim != 4 or patches.shape[-1] != patches.shape[-2]:
            raise ValueError(f"patches must have shape (N, C, P, P), got {tuple(patches.shape)}")
        if len(params.flip) != len(patches):
            raise ValueError(f"params are for {len(params.flip)} patches but there are {len(patches)}")
        if bool((params.shift.abs() > self.max_shift).any()):
            raise ValueError(f"shifts must lie in [-{self.max_shift}, {self.max_shift}]")

    def apply(self, patches: Tensor, params: PatchAugmentParams) -> Tensor:
        """Vectorised crop -> flip -> colour drop of (N, C, P, P) patches with fixed params."""
        self._check(patches, params)
        n, channels, size, _ = patches.shape
        s = self.max_shift
        if s:  # crop: pixel (u, v) of the output is pixel (u + dy, v + dx) of the input (0 outside)
            padded = F.pad(patches, (s, s, s, s))
            rows = (params.shift[:, 0, None] + s + torch.arange(size, device=patches.device))[:, :, None]
            cols = (params.shift[:, 1, None] + s + torch.arange(size, device=patches.device))[:, None, :]
            batch = torch.arange(n, device=patches.device)[:, None, None]
            patches = rearrange(padded[batch, :, rows, cols], "n p q c -> n c p q")
        patches = torch.where(params.flip[:, None, None, None], patches.flip(-1), patches)
        channel = torch.arange(channels, device=patches.device)
        keep = (params.keep_channel[:, None] < 0) | (channel[None, :] == params.keep_channel[:, None])
        return patches * keep[:, :, None, None].to(patches.dtype)

    def apply_reference(self, patches: Tensor, params: PatchAugmentParams) -> Tensor:
        """:meth:`apply` as a loop over patches with padding, slicing, ``torch.flip`` and zeroing."""
        self._check(patches, params)
        out = []
        size, s = patches.shape[-1], self.max_shift
        for i, patch in enumerate(patches):
            dy, dx = (int(v) for v in params.shift[i])
            padded = F.pad(patch, (s, s, s, s))
            patch = padded[:, s + dy : s + dy + size, s + dx : s + dx + size]
            if params.flip[i]:
                patch = torch.flip(patch, dims=[-1])
            keep = int(params.keep_channel[i])
            if keep >= 0:
                patch = torch.stack([c if k == keep else torch.zeros_like(c) for k, c in enumerate(patch)])
            out.append(patch)
        return torch.stack(out)

    def forward(self, patches: Tensor, generator: torch.Generator | None = None) -> Tensor:
        if not self.training:
            return patches
        params = self.sample_params(len(patches), patches.shape[1], generator, device=patches.device)
        return self.apply(patches, params)


NORMS = ("layer", "batch", "none")


def _norm(kind: str, channels: int) -> nn.Module:
    """'layer': GroupNorm with one group = LayerNorm over (C, H, W) of each patch on its own;
    'batch': BatchNorm2d, whose statistics mix all patches of all images in the batch."""
    if kind == "layer":
        return nn.GroupNorm(1, channels)
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    if kind == "none":
        return nn.Identity()
    raise ValueError(f"norm must be one of {NORMS}, got {kind!r}")


class PatchConvNet(nn.Module):
    """The patch encoder g_enc: (N, 3, P, P) patches -> (N, D) vectors, D = round(128 * width).

    Three 3x3 convolutions (the second with stride 2) and a 1x1 convolution, each followed by a
    normalisation and ReLU, then the mean over the patch's positions. CPC uses a ResNet-v2-101 and
    mean-pools its output per 64-px patch (van den Oord et al. 2018, Sec. 3.2); this is a CPU-sized
    stand-in.
    ``norm='layer'`` is CPC v2's choice (Hénaff et al. 2020, Sec. 4.1): batch norm couples the
    patches through the batch statistics, which lets the model see past its causal mask
    (``norm='batch'`` is kept to demonstrate exactly that).
    """

    BASE = (32, 64, 128)

    def __init__(self, width: float = 1.0, norm: str = "layer", in_channels: int = 3) -> None:
        super().__init__()
        if isinstance(width, bool) or not isinstance(width, (int, float)) or not width > 0:
            raise ValueError(
                f"width must be a number > 0 (it multiplies the channels {self.BASE}), got {width!r}"
            )
        c1, c2, c3 = (max(1, round(c * width)) for c in self.BASE)
        self.norm = norm

        def block(cin: int, cout: int, kernel: int = 3, stride: int = 1) -> list[nn.Module]:
            conv = nn.Conv2d(cin, cout, kernel, stride=stride, padding=kernel // 2, bias=False)
            return [conv, _norm(norm, cout), nn.ReLU()]

        self.net = nn.Sequential(
            *block(in_channels, c1), *block(c1, c2, stride=2), *block(c2, c2), *block(c2, c3, kernel=1)
        )
        self.feature_dim = c3

    def forward(self, patches: Tensor) -> Tensor:
        return self.net(patches).mean(dim=(2, 3))


class PatchGridEncoder(nn.Module):
    """Images -> a grid of patch latents, and the pooled image representation evaluation uses.

    * :meth:`patches`: (B, 3, H, H) -> (B, G, G, 3, P, P), the overlapping grid;
    * :meth:`encode_patches`: patches -> z (B, D, G, G), each patch encoded *independently*
      by ``patch_net`` (a module (N, 3, P, P) -> (N, D) with a ``feature_dim``);
    * :meth:`grid` = encode_patches(patches(x));
    * ``forward(x)`` = the mean of z over the grid, (B, D): CPC's linear evaluation pools the
      patch features spatially (van den Oord et al. 2018, Sec. 3.2; Hénaff et al. 2020, Sec. 2.2).

    ``forward`` is what the engine's kNN monitor and the linear probe call (``method.encoder``).
    """

    def __init__(self, patch_net: nn.Module, patch_size: int = 8, stride: int = 4) -> None:
        super().__init__()
        if not isinstance(getattr(patch_net, "feature_dim", None), int):
            raise TypeError("patch_net must be an nn.Module with an integer `feature_dim` (its output width)")
        self.patch_size, self.stride = _check_int(patch_size, "patch_size"), _check_int(stride, "stride")
        self.patch_net = patch_net
        self.feature_dim = patch_net.feature_dim

    def extra_repr(self) -> str:
        return f"patch_size={self.patch_size}, stride={self.stride}"

    def patches(self, images: Tensor) -> Tensor:
        return extract_patches(images, self.patch_size, self.stride)

    def encode_patches(self, patches: Tensor) -> Tensor:
        if patches.ndim != 6:
            raise ValueError(f"patches must have shape (B, G, G, C, P, P), got {tuple(patches.shape)}")
        b, rows, cols = patches.shape[:3]
        z = self.patch_net(patches.reshape(b * rows * cols, *patches.shape[3:]))  # one patch = one sample
        return rearrange(z, "(b i j) d -> b d i j", b=b, i=rows, j=cols)

    def grid(self, images: Tensor) -> Tensor:
        return self.encode_patches(self.patches(images))

    def forward(self, images: Tensor) -> Tensor:
        return self.grid(images).mean(dim=(2, 3))


class RowCausalConv2d(nn.Conv2d):
    """A k x k convolution whose kernel is zero below its centre row (a masked convolution).

    Output row i sees input rows i - k//2 .. i (all columns within reach), never rows > i.
    It is PixelCNN's masking idea (van den Oord et al. 2016, "Pixel Recurrent Neural Networks",
    Sec. 3.4) applied to whole rows: PixelCNN also hides the right half of the centre row because
    it predicts pixel by pixel; CPC predicts whole rows k >= 1 ahead, so the centre row is visible.
    The mask is the buffer ``mask`` (1 = visible), applied to the weight at every call.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3) -> None:
        if _check_int(kernel_size, "kernel_size") % 2 == 0:
            raise ValueError(f"kernel_size must be odd (a centre row is needed), got {kernel_size}")
        super().__init__(in_channels, out_channels, kernel_size, padding=kernel_size // 2)
        mask = torch.ones(kernel_size, kernel_size)
        mask[kernel_size // 2 + 1 :] = 0  # rows below the centre
        self.register_buffer("mask", mask, persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        return self._conv_forward(x, self.weight * self.mask, self.bias)


class RowCausalContext(nn.Module):
    """g_ar for images: residual blocks of row-causal convolutions over the latent grid.

    (B, D, G, G) latents z -> (B, D, G, G) contexts c, where c at row i depends only on z at
    rows <= i. Each block is ReLU -> RowCausalConv2d -> ReLU -> RowCausalConv2d, added to its
    input; 2 blocks of 3x3 kernels reach 4 rows up and 4 columns sideways. CPC uses a
    "PixelCNN-style autoregressive model" over the 7x7 grid (van den Oord et al. 2018, Sec. 3.2).
    """

    def __init__(self, dim: int, hidden: int | None = None, blocks: int = 2, kernel_size: int = 3) -> None:
        super().__init__()
        _check_int(dim, "dim")
        hidden = hidden or dim
        self.blocks = nn.ModuleList(
            nn.Sequential(
                nn.ReLU(),
                RowCausalConv2d(dim, hidden, kernel_size),
                nn.ReLU(),
                RowCausalConv2d(hidden, dim, kernel_size),
            )
            for _ in range(_check_int(blocks, "blocks"))
        )

    def forward(self, z: Tensor) -> Tensor:
        c = z
        for block in self.blocks:
            c = c + block(c)
        return c


class ImageCPC(nn.Module):
    """CPC on images (van den Oord et al. 2018, Sec. 3.2 and Fig. 4; Hénaff et al. 2020): the method ``cpc``.

    ``forward(view1, view2=None, index=None)``: cut ``view1`` into the patch grid, augment each
    patch (training mode, if ``patch_augment``), encode the patches into z (B, D, G, G), run the
    row-causal context to get c, predict rows i+1..i+K below every row i with W_1..W_K, and
    return ``(loss, logs)`` with :func:`cpc_loss` (negatives: every other patch of the same
    offset in the batch, other images included) and ``acc_k1..acc_kK``.

    CPC learns from *one* view: it predicts one part of an image from another part of the same
    image. The engine passes two views for every method; CPC uses ``view1`` and ignores
    ``view2`` (and ``index``).

    ``encoder`` (a :class:`PatchGridEncoder`) maps (B, 3, H, H) images to pooled (B, D) features:
    the representation the engine's kNN monitor and the linear probe evaluate.
    """

    def __init__(
        self,
        encoder: PatchGridEncoder,
        context: nn.Module,
        max_offset: int = 3,
        temperature: float = 1.0,
        patch_augment: PatchAugment | None = None,
    ) -> None:
        super().__init__()
        if not isinstance(encoder, PatchGridEncoder):
            raise TypeError(f"encoder must be a PatchGridEncoder, got {type(encoder).__name__}")
        if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or not temperature > 0:
            raise ValueError(
                f"temperature must be a number > 0 (1.0 = CPC's plain dot product), got {temperature!r}"
            )
        self.encoder, self.context, self.patch_augment = encoder, context, patch_augment
        self.temperature = float(temperature)
        dim = encoder.feature_dim
        self.predictors = nn.ModuleList(  # W_k: a 1x1 map from c to z at every grid position
            nn.Linear(dim, dim, bias=False) for _ in range(_check_int(max_offset, "max_offset"))
        )
        self.log_keys = tuple(f"acc_k{k}" for k in range(1, max_offset + 1))  # extra metrics.csv columns

    @property
    def max_offset(self) -> int:
        return len(self.predictors)

    def context_from_patches(self, patches: Tensor) -> tuple[Tensor, Tensor]:
        """(B, G, G, 3, P, P) patches -> (z, c), both channels-last grids (B, G, G, D).

        The causality tests differentiate through this function: patches are the inputs whose
        rows are well defined (pixels are not: overlapping patches share them).
        """
        if self.training and self.patch_augment is not None:
            flat = patches.reshape(-1, *patches.shape[3:])
            patches = self.patch_augment(flat).reshape(patches.shape)
        z = self.encoder.encode_patches(patches)
        c = self.context(z)
        return rearrange(z, "b d i j -> b i j d"), rearrange(c, "b d i j -> b i j d")

    def predict(self, contexts: Tensor, k: int) -> Tensor:
        """W_k c at every position: the prediction of the latent k rows below. (B, G, G, D)."""
        if not 1 <= k <= self.max_offset:
            raise ValueError(f"offset k must lie in 1..{self.max_offset}, got {k}")
        return self.predictors[k - 1](contexts)

    def forward(self, view1: Tensor, view2: Tensor | None = None, index: Tensor | None = None):
        z, c = self.context_from_patches(self.encoder.patches(view1))
        loss, accuracy = cpc_loss(z, c, self.predictors, self.temperature)
        return loss, {"loss": loss.detach(), **{key: a for key, a in zip(self.log_keys, accuracy)}}


def make_image_cpc(
    image_size: int = 32,
    patch_size: int = 8,
    stride: int = 4,
    width: float = 1.0,
    norm: str = "layer",
    context_blocks: int = 2,
    max_offset: int = 3,
    temperature: float = 1.0,
    patch_augment: bool = True,
) -> ImageCPC:
    """The book's image CPC: :class:`PatchConvNet` on a G x G grid, :class:`RowCausalContext`,
    K = ``max_offset`` predictors, and (if ``patch_augment``) CPC v2's :class:`PatchAugment`.

    Defaults for 32-px images: 8-px patches with stride 4 (a 7 x 7 grid, like CPC's 64-px
    patches with stride 32 on 256 px), LayerNorm (CPC v2), 3 rows ahead (CPC predicts up to 5
    rows on its 7 x 7 grid, Sec. 3.2; 3 keeps the CPU cost of the loss down).
    """
    grid = grid_size(image_size, patch_size, stride)
    if _check_int(max_offset, "max_offset") >= grid:
        raise ValueError(f"max_offset={max_offset} must be < the grid size {grid} (rows to predict from)")
    if not isinstance(patch_augment, bool):
        raise TypeError(f"patch_augment must be True or False, got {patch_augment!r}")
    encoder = PatchGridEncoder(PatchConvNet(width=width, norm=norm), patch_size=patch_size, stride=stride)
    context = RowCausalContext(encoder.feature_dim, blocks=context_blocks)
    augment = PatchAugment() if patch_augment else None
    return ImageCPC(encoder, context, max_offset=max_offset, temperature=temperature, patch_augment=augment)
