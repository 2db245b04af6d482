"""Instance discrimination with a memory bank and NCE: :func:`nce_memory_bank`, its loop twin and
:class:`NCEMemoryBankLoss`, which fixes the partition function Z after the first batch.

Wu, Xiong, Yu & Lin 2018, "Unsupervised Feature Learning via Non-Parametric Instance
Discrimination" (InstDisc), Sec. 3.2, Eq. 4-7: every image is its own class, its memory-bank
entry is the class prototype, and noise-contrastive estimation against m bank entries drawn
uniformly replaces the n-way softmax. Chapter 07 teaches the memory bank and this loss.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ._common import (
    _check_batch,
    _check_embeddings,
    _check_pair,
    _check_positive,
    _check_temperature,
    _compute_dtype,
    _l2_normalize,
    _no_autocast,
)

__all__ = ["nce_memory_bank", "nce_memory_bank_reference", "NCEMemoryBankLoss"]


def _check_nce_inputs(f: Tensor, v_pos: Tensor, v_noise: Tensor, n: int, z: float | None) -> None:
    """Features and positives (B, D), noise (B, m, D) or (m, D), n a positive int, Z None or > 0."""
    _check_pair(f, v_pos, "features", "positive_bank_feats")
    _check_batch(f.shape[0], "nce_memory_bank", f"B={f.shape[0]} rows in features and positive_bank_feats")
    _check_embeddings(v_noise, "noise_bank_feats", ndims=(2, 3))
    b, d = f.shape
    ok = (v_noise.ndim == 2 and v_noise.shape[1] == d) or (v_noise.ndim == 3 and v_noise.shape[::2] == (b, d))
    if not ok or v_noise.shape[-2] < 1:
        raise ValueError(
            f"noise_bank_feats must have shape (B, m, D) = ({b}, m, {d}) or shared (m, D) = (m, {d}) "
            f"with m >= 1, got {tuple(v_noise.shape)}"
        )
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"dataset_size must be a positive int (the number n of instances), got {n!r}")
    if z is not None:
        _check_positive(z, "z", " (the partition-function estimate Z; pass None to estimate it)")


def nce_memory_bank(
    features: Tensor,
    positive_bank_feats: Tensor,
    noise_bank_feats: Tensor,
    dataset_size: int,
    temperature: float = 0.07,
    z: float | None = None,
) -> tuple[Tensor, Tensor]:
    """Instance discrimination with a memory bank and NCE, mean over the batch.

    Wu et al. 2018, "Unsupervised Feature Learning via Non-Parametric Instance
    Discrimination", Sec. 3.2. Symbols: f_i = features of instance i from the network;
    v = memory-bank entry of the same instance (positive); v'_1..v'_m = bank entries of m
    instances drawn from the uniform noise distribution P_n(i) = 1/n; n = dataset size.

        P(i|v)  = exp(v^T f_i / tau) / Z                     (Eq. 4, non-parametric softmax)
        h(i,v)  = P(i|v) / (P(i|v) + m P_n(i))               (Eq. 5, posterior "is data")
        J       = -log h(i, v) - sum_{j=1..m} log(1 - h(i, v'_j))   (Eq. 6, per sample)
        Z      ~= n/m sum_{j=1..m} exp(v'_j^T f_i / tau)     (Eq. 7, Monte-Carlo estimate)

    Z is treated as a constant (no gradient). The official code (lemniscate.pytorch,
    ``NCEAverage``) estimates it once from the first batch and keeps it fixed: pass that
    value as ``z`` (:class:`NCEMemoryBankLoss` does this for you). With ``z=None`` it is
    estimated from this batch, averaging Eq. 7 over all B*m noise scores (the official
    code also averages in the B positive scores; for large n the difference is negligible).
    Computed in log space: log h = logsigmoid(log P - log(m/n)).

    Args:
        features: (B, D) f_i, the current network output for the batch, B >= 2.
        positive_bank_feats: (B, D) memory-bank entries of the same instances (usually
            detached: the bank is updated by momentum, not by gradients).
        noise_bank_feats: (B, m, D) noise entries per sample (as the official code draws
            them), or (m, D) shared by the whole batch.
        dataset_size: n, the number of instances (size of the memory bank).
        temperature: tau > 0 (paper: 0.07).
        z: fixed partition-function estimate Z > 0, or None to estimate it here.
        All embeddings are L2-normalised here.

    Returns:
        ``(loss, z)``: the scalar loss (float32, or float64 for float64 input) and the
        Z that was used, as a detached 0-dim tensor.
    """
    temperature = _check_temperature(temperature)
    _check_nce_inputs(features, positive_bank_feats, noise_bank_feats, dataset_size, z)
    with _no_autocast(features):
        s_pos, s_noise = _nce_scores(features, positive_bank_feats, noise_bank_feats, temperature)
        if z is None:  # Eq. 7 averaged over the batch: log Z = log n + log mean_{b,j} exp(s_noise)
            n_scores = s_noise.numel()
            log_z = (
                math.log(dataset_size) + torch.logsumexp(s_noise.detach().flatten(), 0) - math.log(n_scores)
            )
            z_used = log_z.exp()
        else:
            log_z, z_used = math.log(z), torch.tensor(z, dtype=s_pos.dtype, device=s_pos.device)
        log_m_pn = math.log(s_noise.shape[1] / dataset_size)  # log(m * P_n(i))
        log_h_pos = F.logsigmoid(s_pos - log_z - log_m_pn)  # log h(i, v)
        log_1m_h_noise = F.logsigmoid(-(s_noise - log_z - log_m_pn))  # log(1 - h(i, v'_j))
        loss = -(log_h_pos + log_1m_h_noise.sum(dim=1)).mean()
        return loss, z_used


def _nce_scores(
    features: Tensor, v_pos: Tensor, v_noise: Tensor, temperature: float
) -> tuple[Tensor, Tensor]:
    """Normalised scores v^T f_i / tau: (B,) for the positives and (B, m) for the noise."""
    dtype = _compute_dtype(features, v_pos, v_noise)
    f, v_pos, v_noise = (_l2_normalize(x, dtype) for x in (features, v_pos, v_noise))
    s_pos = (f * v_pos).sum(dim=1)
    s_noise = f @ v_noise.T if v_noise.ndim == 2 else torch.einsum("bd,bmd->bm", f, v_noise)
    return s_pos / temperature, s_noise / temperature


def nce_memory_bank_reference(
    features: Tensor,
    positive_bank_feats: Tensor,
    noise_bank_feats: Tensor,
    dataset_size: int,
    temperature: float = 0.07,
    z: float | None = None,
) -> tuple[Tensor, Tensor]:
    """Wu et al. 2018 Eq. 4-7 with loops over samples and noise draws, plain exp/log (slow)."""
    f = F.normalize(features, dim=1)
    v = F.normalize(positive_bank_feats, dim=1)
    v_noise = F.normalize(noise_bank_feats, dim=-1)
    if v_noise.ndim == 2:
        v_noise = v_noise.expand(f.shape[0], -1, -1)
    n, m = dataset_size, v_noise.shape[1]
    if z is None:  # Eq. 7, averaged over the batch
        z = sum(torch.exp(torch.dot(vj, fi) / temperature) for fi, vs in zip(f, v_noise) for vj in vs)
        z = n * z / (f.shape[0] * m)
    z = torch.as_tensor(z, dtype=f.dtype)

    def h(v_i: Tensor, f_i: Tensor) -> Tensor:
        p = torch.exp(torch.dot(v_i, f_i) / temperature) / z  # Eq. 4
        return p / (p + m / n)  # Eq. 5 with P_n = 1/n

    losses = [
        -torch.log(h(v[i], f[i])) - sum(torch.log(1 - h(vj, f[i])) for vj in v_noise[i])  # Eq. 6
        for i in range(f.shape[0])
    ]
    return torch.stack(losses).mean(), z.detach()


class NCEMemoryBankLoss(nn.Module):
    """Module form of :func:`nce_memory_bank` that fixes Z after the first batch.

    As in the official InstDisc code (Wu et al. 2018; lemniscate.pytorch ``NCEAverage``),
    Z is estimated by Eq. 7 on the first call and then kept constant. It is stored in the
    buffer ``z`` (-1 until estimated), so it is saved in checkpoints.

    Args:
        dataset_size: n, the number of instances in the memory bank.
        temperature: tau > 0, finite (paper: 0.07).
    """

    def __init__(self, dataset_size: int, temperature: float = 0.07) -> None:
        super().__init__()
        if isinstance(dataset_size, bool) or not isinstance(dataset_size, int) or dataset_size < 1:
            raise ValueError(f"dataset_size must be a positive int, got {dataset_size!r}")
        self.dataset_size = dataset_size
        self.temperature = _check_temperature(temperature)
        self.register_buffer("z", torch.tensor(-1.0, dtype=torch.float64))

    def forward(self, features: Tensor, positive_bank_feats: Tensor, noise_bank_feats: Tensor) -> Tensor:
        fixed = float(self.z) if float(self.z) > 0 else None
        loss, z = nce_memory_bank(
            features, positive_bank_feats, noise_bank_feats, self.dataset_size, self.temperature, fixed
        )
        if fixed is None:
            self.z.fill_(float(z))
        return loss

    def extra_repr(self) -> str:
        return f"dataset_size={self.dataset_size}, temperature={self.temperature}"
