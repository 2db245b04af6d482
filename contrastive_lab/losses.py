"""Contrastive losses, each in a readable reference form and a fast vectorised form.

=====================  ===========================================================
``nt_xent``            SimCLR's NT-Xent (Chen et al. 2020, Eq. 1 and Alg. 1)
``info_nce``           MoCo's InfoNCE with a queue of negatives (He et al. 2019, Eq. 1)
``nce_memory_bank``    Instance discrimination with NCE (Wu et al. 2018, Eq. 4-7)
``cpc_info_nce``       CPC's InfoNCE over predicted latents (van den Oord et al. 2018, Eq. 4)
``clip_loss``          CLIP's symmetric loss (Radford et al. 2021, Fig. 3)
``alignment``          Wang & Isola 2020, Eq. 4
``uniformity``         Wang & Isola 2020, Eq. 5
=====================  ===========================================================

Conventions shared by all losses here:

* Inputs are *unnormalised* embeddings; each loss L2-normalises them itself (except CPC,
  whose scores are raw dot products by default, as in the paper). Normalising twice is
  harmless, so already-normalised inputs are fine too.
* Every loss returns the **mean** over its anchors (rows).
* Precision: similarities and log-softmax are computed in float32 (float64 if any input is
  float64) with autocast disabled, so fp16/bf16 embeddings are safe; the loss is returned
  in that compute dtype (float32 for fp16/bf16/fp32 inputs). Gradients flow back to the
  inputs in their own dtype.
* Bad input raises ValueError/TypeError naming the argument: wrong shapes, batches below 2
  samples, temperatures that are not finite and > 0, NaN/inf embeddings. (The
  NaN/inf check reads one boolean back from the device per input: a tiny sync on GPU.)
* Each ``foo_reference`` spells out the paper's per-anchor formula with Python loops. They
  are slow, for reading and testing only; ``foo`` is what training code calls.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from contrastive_lab.distributed import all_gather_with_grad, get_rank, get_world_size

__all__ = [
    "nt_xent", "nt_xent_reference", "NTXentLoss",
    "info_nce", "info_nce_reference", "InfoNCELoss",
    "nce_memory_bank", "nce_memory_bank_reference", "NCEMemoryBankLoss",
    "cpc_info_nce", "cpc_info_nce_reference", "cpc_accuracy", "CPCInfoNCELoss",
    "clip_loss", "clip_loss_reference", "ClipLoss",
    "alignment", "alignment_reference", "uniformity", "uniformity_reference",
]  # fmt: skip


# --------------------------------------------------------------------------- validation


def _check_positive(value: float, name: str, hint: str = "") -> float:
    """A finite Python number > 0 (temperatures, exponents, scales), else TypeError/ValueError."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a float, got {type(value).__name__}")
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a finite number > 0, got {value}{hint}")
    return float(value)


def _check_temperature(temperature: float) -> float:
    return _check_positive(temperature, "temperature", "; typical values are 0.05-0.5")


def _check_embeddings(x: Tensor, name: str, ndims: tuple[int, ...] = (2,)) -> None:
    """Tensor of floats with one of the allowed numbers of dims and only finite values."""
    if not isinstance(x, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.ndim not in ndims:
        dims = " or ".join(f"{d}-D" for d in ndims)
        raise ValueError(f"{name} must be a {dims} tensor, got shape {tuple(x.shape)}")
    if not x.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got dtype {x.dtype}")
    if not bool(torch.isfinite(x).all()):
        raise ValueError(
            f"{name} contains non-finite values (NaN or inf); check the encoder output "
            "(diverged training, fp16 overflow) before computing the loss"
        )


def _check_pair(a: Tensor, b: Tensor, name_a: str, name_b: str) -> None:
    """Two finite embeddings of identical shape (N, D)."""
    _check_embeddings(a, name_a)
    _check_embeddings(b, name_b)
    if a.shape != b.shape:
        raise ValueError(
            f"{name_a} and {name_b} must have the same shape (N, D), "
            f"got {tuple(a.shape)} and {tuple(b.shape)}"
        )


def _check_batch(n: int, loss: str, rows: str) -> None:
    """A batch of at least 2 samples; ``rows`` says where the n samples were counted."""
    if n < 2:
        raise ValueError(
            f"batch size {n} is too small for {loss} ({rows}): contrastive losses need at least "
            "2 samples per batch; pass a larger batch"
        )


# --------------------------------------------------------------------------- numerics


def _compute_dtype(*xs: Tensor) -> torch.dtype:
    """float64 if any input is float64, else float32 (fp16/bf16 are upcast)."""
    return torch.float64 if any(x.dtype == torch.float64 for x in xs) else torch.float32


def _no_autocast(x: Tensor) -> torch.autocast:
    """Context that turns autocast off, so matmuls inside really run in the compute dtype."""
    return torch.autocast(device_type=x.device.type, enabled=False)


def _l2_normalize(x: Tensor, dtype: torch.dtype) -> Tensor:
    """x / ||x||_2 row-wise in ``dtype``, safe for huge norms.

    Dividing by the (detached) largest |entry| first keeps ||x||^2 from overflowing; it
    does not change the result or its gradient, because normalisation is scale-invariant.
    """
    x = x.to(dtype)
    scale = x.detach().abs().amax(dim=-1, keepdim=True).clamp_min(torch.finfo(dtype).tiny)
    return F.normalize(x / scale, dim=-1)


def _cosine_reference(u: Tensor, v: Tensor) -> Tensor:
    """sim(u, v) = u^T v / (||u|| ||v||), SimCLR's notation."""
    return torch.dot(u, v) / (u.norm() * v.norm())


# --------------------------------------------------------------------------- SimCLR


def _nt_xent_targets(n: int, world: int, rank: int, device: torch.device) -> tuple[Tensor, Tensor]:
    """Column of each local anchor's own entry and of its positive among the 2*W*N candidates.

    Local anchors are ``[z1; z2]`` (2N rows). Candidates are ``[Z1; Z2]`` gathered from all
    ranks (rank-major), so local row i of z1 sits at global row ``rank*N + i`` of Z1.
    """
    total = world * n
    a = torch.arange(2 * n, device=device)
    view, row = a // n, rank * n + a % n
    return view * total + row, (1 - view) * total + row


def nt_xent(z1: Tensor, z2: Tensor, temperature: float = 0.5, gather: bool = False) -> Tensor:
    """SimCLR's normalised temperature-scaled cross-entropy (NT-Xent), mean over 2N anchors.

    SimCLR (Chen et al. 2020), Eq. 1 and Algorithm 1. With z_{2k-1}, z_{2k} the two views
    of example k and sim(u, v) = u^T v / (||u|| ||v||)::

        l(i, j) = -log  exp(sim(z_i, z_j)/tau) / sum_{k=1..2N, k != i} exp(sim(z_i, z_k)/tau)
        L = 1/(2N) sum_{k=1..N} [ l(2k-1, 2k) + l(2k, 2k-1) ]

    so every one of the 2N anchors has 1 positive and 2(N-1) negatives. Computed as a
    cross-entropy over a (2N, 2N) logit matrix whose diagonal (self-similarity) is -inf,
    i.e. with log-sum-exp, stable down to tiny temperatures.

    Note: the official TF code (``add_contrastive_loss``) returns ``loss_a + loss_b``, each
    a mean over N anchors, which is **2x** this value. Gradients differ by the same factor.

    Args:
        z1, z2: (N, D) *unnormalised* embeddings of the two views (row k of each is a
            positive pair), N >= 2 (over all ranks with ``gather``); normalised here. Any float dtype; fp16/bf16 are upcast.
        temperature: tau > 0 (SimCLR's code defaults to 0.1 for ImageNet; App. B.9 uses
            0.5 on CIFAR-10).
        gather: under ``torch.distributed``, contrast against the negatives of *all* ranks:
            the embeddings are all-gathered with gradient (:func:`all_gather_with_grad`),
            the anchors stay this rank's 2N, and the positive sits at this rank's offset.
            The result is this rank's mean; see ``all_gather_with_grad`` for why DDP then
            yields exactly the single-process gradient. Identity when not distributed.

    Returns:
        Scalar loss in float32 (float64 if an input is float64).
    """
    temperature = _check_temperature(temperature)
    _check_pair(z1, z2, "z1", "z2")
    n, world = z1.shape[0], (get_world_size() if gather else 1)
    _check_batch(n * world, "nt_xent", f"N={n} pairs in z1, z2 on {world} rank(s); one pair has no negatives")
    with _no_autocast(z1):
        dtype = _compute_dtype(z1, z2)
        z1n, z2n = _l2_normalize(z1, dtype), _l2_normalize(z2, dtype)
        anchors = torch.cat([z1n, z2n])  # (2N, D)
        rank, candidates = 0, anchors
        if world > 1:
            both = all_gather_with_grad(torch.cat([z1n, z2n], dim=1))  # one collective: (W*N, 2D)
            rank, candidates = get_rank(), torch.cat(both.chunk(2, dim=1))  # (2*W*N, D)
        self_col, pos_col = _nt_xent_targets(n, world, rank, z1.device)
        logits = (anchors / temperature) @ candidates.T  # (2N, 2WN); scaling (2N, D) is cheaper
        rows = torch.arange(2 * n, device=z1.device)
        logits.index_put_((rows, self_col), logits.new_tensor(float("-inf")))  # k != i in Eq. 1
        return F.cross_entropy(logits, pos_col)


def nt_xent_reference(z1: Tensor, z2: Tensor, temperature: float = 0.5) -> Tensor:
    """NT-Xent written as SimCLR's Algorithm 1: loops over anchors, plain exp/log (slow)."""
    n = z1.shape[0]
    z = [z1[k // 2] if k % 2 == 0 else z2[k // 2] for k in range(2 * n)]  # z_{2k-1}, z_{2k}

    def ell(i: int, j: int) -> Tensor:
        num = torch.exp(_cosine_reference(z[i], z[j]) / temperature)
        den = sum(torch.exp(_cosine_reference(z[i], z[k]) / temperature) for k in range(2 * n) if k != i)
        return -torch.log(num / den)

    return sum(ell(2 * k, 2 * k + 1) + ell(2 * k + 1, 2 * k) for k in range(n)) / (2 * n)


class NTXentLoss(nn.Module):
    """Module form of :func:`nt_xent` (SimCLR, Chen et al. 2020, Eq. 1).

    Args:
        temperature: tau > 0, finite.
        gather: contrast against negatives from all ranks under torch.distributed.
    """

    def __init__(self, temperature: float = 0.5, gather: bool = False) -> None:
        super().__init__()
        self.temperature = _check_temperature(temperature)
        self.gather = bool(gather)

    def forward(self, z1: Tensor, z2: Tensor) -> Tensor:
        return nt_xent(z1, z2, self.temperature, self.gather)

    def extra_repr(self) -> str:
        return f"temperature={self.temperature}, gather={self.gather}"


# --------------------------------------------------------------------------- MoCo


def _check_info_nce_inputs(query: Tensor, key: Tensor, negatives: Tensor) -> None:
    _check_pair(query, key, "query", "key")
    _check_batch(query.shape[0], "info_nce", f"N={query.shape[0]} rows in query and key")
    _check_embeddings(negatives, "negatives")
    if negatives.shape[0] < 1 or negatives.shape[1] != query.shape[1]:
        raise ValueError(
            f"negatives must have shape (K, D) with K >= 1 and D = {query.shape[1]} "
            f"(the query's dim), got {tuple(negatives.shape)}"
        )


def info_nce(query: Tensor, key: Tensor, negatives: Tensor, temperature: float = 0.07) -> Tensor:
    """MoCo's InfoNCE: one positive key vs a queue of K negatives, mean over N queries.

    MoCo (He et al. 2019), Eq. 1 and Algorithm 1 (``logits = cat([l_pos, l_neg])``, label 0)::

        L_q = -log  exp(q . k+ / tau) / sum_{i=0..K} exp(q . k_i / tau)

    where k_0 = k+ (positive logit at index 0) and k_1..k_K are the queue's negatives.

    Args:
        query: (N, D) queries q from the encoder being trained, N >= 2.
        key: (N, D) positive keys k+; in MoCo they come from the momentum encoder under
            ``no_grad`` -- this function does not detach them, the caller decides.
        negatives: (K, D) negative keys (MoCo's queue, K = 65536 in the paper).
        temperature: tau > 0 (MoCo: 0.07; MoCo v2: 0.2).
        All three are L2-normalised here (MoCo's encoders output normalised vectors).

    Returns:
        Scalar loss in float32 (float64 if an input is float64).
    """
    temperature = _check_temperature(temperature)
    _check_info_nce_inputs(query, key, negatives)
    with _no_autocast(query):
        dtype = _compute_dtype(query, key, negatives)
        q, k, neg = (_l2_normalize(x, dtype) for x in (query, key, negatives))
        q = q / temperature  # dividing (N, D) is cheaper than dividing the (N, 1+K) logits
        l_pos = (q * k).sum(dim=1, keepdim=True)  # (N, 1)
        l_neg = q @ neg.T  # (N, K)
        logits = torch.cat([l_pos, l_neg], dim=1)
        labels = torch.zeros(q.shape[0], dtype=torch.long, device=q.device)  # positive at 0
        return F.cross_entropy(logits, labels)


def info_nce_reference(query: Tensor, key: Tensor, negatives: Tensor, temperature: float = 0.07) -> Tensor:
    """MoCo Eq. 1 with a loop over queries and plain exp/log (slow)."""
    losses = []
    for q, k_pos in zip(F.normalize(query, dim=1), F.normalize(key, dim=1)):
        keys = [k_pos] + list(F.normalize(negatives, dim=1))  # k_0 = k+
        den = sum(torch.exp(torch.dot(q, k_i) / temperature) for k_i in keys)
        losses.append(-torch.log(torch.exp(torch.dot(q, k_pos) / temperature) / den))
    return torch.stack(losses).mean()


class InfoNCELoss(nn.Module):
    """Module form of :func:`info_nce` (MoCo, He et al. 2019, Eq. 1).

    Args:
        temperature: tau > 0, finite (MoCo default 0.07).
    """

    def __init__(self, temperature: float = 0.07) -> None:
        super().__init__()
        self.temperature = _check_temperature(temperature)

    def forward(self, query: Tensor, key: Tensor, negatives: Tensor) -> Tensor:
        return info_nce(query, key, negatives, self.temperature)

    def extra_repr(self) -> str:
        return f"temperature={self.temperature}"


# --------------------------------------------------------------------------- InstDisc (NCE)


def _check_nce_inputs(f: Tensor, v_pos: Tensor, v_noise: Tensor, n: int, z: float | None) -> None:
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


# --------------------------------------------------------------------------- CPC


def _cpc_rows(predictions: Tensor) -> str:
    return f"M={predictions.shape[0]} rows in predictions and targets; one row has no negatives"


def _cpc_scores(predictions: Tensor, targets: Tensor, normalize: bool) -> Tensor:
    """(M, M) scores s_ij = (W_k c_t)_i . z_j in the compute dtype (cosines if ``normalize``)."""
    dtype = _compute_dtype(predictions, targets)
    if normalize:
        return _l2_normalize(predictions, dtype) @ _l2_normalize(targets, dtype).T
    return predictions.to(dtype) @ targets.to(dtype).T


def cpc_info_nce(
    predictions: Tensor, targets: Tensor, temperature: float = 1.0, normalize: bool = False
) -> Tensor:
    """CPC's InfoNCE: pick the true future latent among M candidates, mean over rows.

    van den Oord, Li & Vinyals 2018, Eq. 3-4. The score is the log-bilinear
    f_k(x_{t+k}, c_t) = exp(z_{t+k}^T W_k c_t); with predictions p_i = W_k c_t (row i) and
    targets z_j (row j), row i's positive is z_i and the other M-1 targets are negatives::

        L_N = -mean_i log  exp(p_i . z_i / tau) / sum_{j=1..M} exp(p_i . z_j / tau)

    Args:
        predictions: (M, D) predicted latents W_k c_t, rows aligned with ``targets``, M >= 2.
        targets: (M, D) actual latents z_{t+k}.
        temperature: tau > 0; 1.0 (no scaling) is the paper's form.
        normalize: use cosine similarity instead of raw dot products (off in the paper).

    Returns:
        Scalar loss in float32 (float64 if an input is float64).
    """
    temperature = _check_temperature(temperature)
    _check_pair(predictions, targets, "predictions", "targets")
    _check_batch(predictions.shape[0], "cpc_info_nce", _cpc_rows(predictions))
    with _no_autocast(predictions):
        logits = _cpc_scores(predictions, targets, normalize) / temperature
        return F.cross_entropy(logits, torch.arange(logits.shape[0], device=logits.device))


def cpc_info_nce_reference(
    predictions: Tensor, targets: Tensor, temperature: float = 1.0, normalize: bool = False
) -> Tensor:
    """CPC Eq. 4 with a loop over rows and plain exp/log (slow)."""
    if normalize:
        predictions, targets = F.normalize(predictions, dim=1), F.normalize(targets, dim=1)
    losses = []
    for i, p in enumerate(predictions):
        f = [torch.exp(torch.dot(z_j, p) / temperature) for z_j in targets]  # Eq. 3
        losses.append(-torch.log(f[i] / sum(f)))
    return torch.stack(losses).mean()


@torch.no_grad()
def cpc_accuracy(predictions: Tensor, targets: Tensor, normalize: bool = False) -> Tensor:
    """Fraction of rows whose highest-scoring target is their own (argmax_j s_ij == i).

    The accuracy of CPC's M-way classification task (van den Oord et al. 2018, Sec. 2.3);
    temperature does not change the argmax. Ties count as correct only if index i wins.
    """
    _check_pair(predictions, targets, "predictions", "targets")
    _check_batch(predictions.shape[0], "cpc_accuracy", _cpc_rows(predictions))
    with _no_autocast(predictions):
        scores = _cpc_scores(predictions, targets, normalize)
        return (scores.argmax(dim=1) == torch.arange(scores.shape[0], device=scores.device)).float().mean()


class CPCInfoNCELoss(nn.Module):
    """Module form of :func:`cpc_info_nce` (van den Oord et al. 2018, Eq. 4).

    Args:
        temperature: tau > 0, finite (1.0 = the paper's unscaled scores).
        normalize: cosine instead of dot-product scores.
    """

    def __init__(self, temperature: float = 1.0, normalize: bool = False) -> None:
        super().__init__()
        self.temperature = _check_temperature(temperature)
        self.normalize = bool(normalize)

    def forward(self, predictions: Tensor, targets: Tensor) -> Tensor:
        return cpc_info_nce(predictions, targets, self.temperature, self.normalize)

    def extra_repr(self) -> str:
        return f"temperature={self.temperature}, normalize={self.normalize}"


# --------------------------------------------------------------------------- CLIP


def _check_logit_scale(logit_scale: float | Tensor) -> None:
    if isinstance(logit_scale, Tensor):
        if logit_scale.numel() != 1 or not logit_scale.is_floating_point():
            raise ValueError(f"logit_scale must be a float or a 1-element float tensor, got {logit_scale!r}")
        value = float(logit_scale.detach())
        if not math.isfinite(value) or value <= 0:
            raise ValueError(f"logit_scale must be a finite number > 0 (= 1/temperature), got {value}")
    else:
        _check_positive(logit_scale, "logit_scale", " (= 1/temperature; CLIP starts at 1/0.07)")


def clip_loss(image_emb: Tensor, text_emb: Tensor, logit_scale: float | Tensor) -> Tensor:
    """CLIP's symmetric cross-entropy over an N x N image-text similarity matrix.

    Radford et al. 2021, Fig. 3 (numpy-like pseudocode)::

        logits = s * normalize(I) @ normalize(T).T          # s = exp(t), the logit scale
        loss = (CE(logits, arange(N), axis=0) + CE(logits, arange(N), axis=1)) / 2

    i.e. the mean of the image->text (rows) and text->image (columns) cross-entropies.

    Args:
        image_emb, text_emb: (N, D) embeddings, N >= 2, row i of each a matching pair; normalised here.
        logit_scale: s = exp(t) > 0, the multiplier (not its log); a float or a 0-dim
            tensor (which receives gradient). :class:`ClipLoss` learns it.

    Returns:
        Scalar loss in float32 (float64 if an input is float64).
    """
    _check_logit_scale(logit_scale)
    _check_pair(image_emb, text_emb, "image_emb", "text_emb")
    _check_batch(image_emb.shape[0], "clip_loss", f"N={image_emb.shape[0]} rows in image_emb and text_emb")
    with _no_autocast(image_emb):
        dtype = _compute_dtype(image_emb, text_emb)
        i_e, t_e = _l2_normalize(image_emb, dtype), _l2_normalize(text_emb, dtype)
        scale = logit_scale.to(dtype).reshape(()) if isinstance(logit_scale, Tensor) else logit_scale
        logits = scale * i_e @ t_e.T  # (N images, N texts)
        labels = torch.arange(logits.shape[0], device=logits.device)
        return (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels)) / 2


def clip_loss_reference(image_emb: Tensor, text_emb: Tensor, logit_scale: float | Tensor) -> Tensor:
    """CLIP Fig. 3 with explicit loops over images (rows) and texts (columns) (slow)."""
    i_e, t_e = F.normalize(image_emb, dim=1), F.normalize(text_emb, dim=1)
    n = i_e.shape[0]
    e = [[torch.exp(logit_scale * torch.dot(i_e[a], t_e[b])) for b in range(n)] for a in range(n)]
    loss_img = sum(-torch.log(e[a][a] / sum(e[a][b] for b in range(n))) for a in range(n)) / n
    loss_txt = sum(-torch.log(e[b][b] / sum(e[a][b] for a in range(n))) for b in range(n)) / n
    return (loss_img + loss_txt) / 2


class ClipLoss(nn.Module):
    """CLIP loss with a learnable temperature (Radford et al. 2021, Sec. 2.5 and Fig. 3).

    The log logit scale t is a parameter initialised to log(1/0.07); the scale used is
    ``exp(t)`` clamped to at most 100 ("clipped to prevent scaling the logits by more than
    100", Sec. 2.5). While clamped, t gets no gradient.

    Args:
        init_temperature: initial temperature, so t_0 = log(1/init_temperature).
        max_logit_scale: upper bound on exp(t).
    """

    def __init__(self, init_temperature: float = 0.07, max_logit_scale: float = 100.0) -> None:
        super().__init__()
        init_temperature = _check_positive(init_temperature, "init_temperature")
        self.max_logit_scale = _check_positive(max_logit_scale, "max_logit_scale")
        self.log_logit_scale = nn.Parameter(torch.tensor(math.log(1.0 / init_temperature)))

    def logit_scale(self) -> Tensor:
        """The current multiplier min(exp(t), max_logit_scale)."""
        return self.log_logit_scale.exp().clamp(max=self.max_logit_scale)

    def forward(self, image_emb: Tensor, text_emb: Tensor) -> Tensor:
        return clip_loss(image_emb, text_emb, self.logit_scale())

    def extra_repr(self) -> str:
        return f"max_logit_scale={self.max_logit_scale}"


# --------------------------------------------------------------------------- Wang & Isola


def alignment(z1: Tensor, z2: Tensor, alpha: float = 2.0) -> Tensor:
    """Alignment of positive pairs: E ||f(x) - f(y)||_2^alpha (lower is better).

    Wang & Isola 2020, "Understanding Contrastive Representation Learning through Alignment
    and Uniformity on the Hypersphere", Eq. 4. Their code assumes L2-normalised features;
    here the inputs are **normalised inside**, so raw embeddings can be passed.

    Args:
        z1, z2: (N, D) embeddings, N >= 2; row i of each is a positive pair.
        alpha: exponent > 0 (paper default 2).
    """
    alpha = _check_positive(alpha, "alpha", " (paper default 2)")
    _check_pair(z1, z2, "z1", "z2")
    _check_batch(z1.shape[0], "alignment", f"N={z1.shape[0]} rows in z1 and z2")
    with _no_autocast(z1):
        dtype = _compute_dtype(z1, z2)
        return (_l2_normalize(z1, dtype) - _l2_normalize(z2, dtype)).norm(dim=1).pow(alpha).mean()


def alignment_reference(z1: Tensor, z2: Tensor, alpha: float = 2.0) -> Tensor:
    """Wang & Isola Eq. 4 with a loop over pairs (slow)."""
    terms = [(x / x.norm() - y / y.norm()).norm() ** alpha for x, y in zip(z1, z2)]
    return sum(terms) / len(terms)


def uniformity(z: Tensor, t: float = 2.0) -> Tensor:
    """Uniformity: log E_{x != y} exp(-t ||f(x) - f(y)||_2^2) (lower is better).

    Wang & Isola 2020, Eq. 5, over the N(N-1)/2 distinct pairs of the batch (``torch.pdist``
    as in their code), computed as logsumexp(-t d^2) - log(#pairs) for stability.
    Inputs are normalised inside.

    Args:
        z: (N, D) embeddings, N >= 2.
        t: > 0 (paper default 2).
    """
    t = _check_positive(t, "t", " (paper default 2)")
    _check_embeddings(z, "z")
    _check_batch(z.shape[0], "uniformity", f"N={z.shape[0]} rows in z; a pair needs 2")
    with _no_autocast(z):
        sq_dist = torch.pdist(_l2_normalize(z, _compute_dtype(z)), p=2).pow(2)
        return torch.logsumexp(-t * sq_dist, dim=0) - math.log(sq_dist.numel())


def uniformity_reference(z: Tensor, t: float = 2.0) -> Tensor:
    """Wang & Isola Eq. 5 with a loop over pairs i < j and plain exp/log (slow)."""
    u = [x / x.norm() for x in z]
    terms = [torch.exp(-t * (u[i] - u[j]).norm() ** 2) for i in range(len(u)) for j in range(i + 1, len(u))]
    return torch.log(sum(terms) / len(terms))
