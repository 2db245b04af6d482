"""CPC on a 1-D signal (chapter 09's first half): a synthetic signal whose future depends on a
hidden per-sequence latent, a strided-convolution encoder, a GRU context and the CPC loss.

:func:`make_oscillation_sequences` makes the data, :class:`SignalEncoder` the latents z_t,
:class:`SequenceCPC` adds the autoregressive context c_t = g_ar(z_{<=t}) and the predictors W_k,
and :func:`train_sequence_cpc` trains it (van den Oord et al. 2018, Sec. 2 and 3.1).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ..losses import cpc_loss
from ._checks import _check_int


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


