"""Methods: each maps a batch of views to a loss and a dict of logs. The engine trains any of them.

A method is an ``nn.Module`` whose ``forward(view1, view2, index)`` returns ``(loss, logs)``.
It owns everything that has to be saved to resume exactly (encoders, heads, queues, memory
banks) as parameters or buffers, so ``state_dict()`` is the whole method. ``method.encoder`` is
the representation f(.) that evaluation uses.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from .cpc import ImageCPC, make_image_cpc
from .encoders import build_encoder
from .heads import build_head
from .losses import NCEMemoryBankLoss, info_nce, nt_xent
from .memory import (
    KeyQueue,
    MemoryBank,
    batch_shuffle,
    batch_unshuffle,
    check_momentum,
    convert_to_split_batchnorm,
    cosine_momentum,
    momentum_copy,
    momentum_update_,
)
from .presets import Config


class SimCLR(nn.Module):
    """SimCLR (Chen et al. 2020, Algorithm 1): x -> two views -> f -> g -> NT-Xent.

    Both views go through the encoder in ONE forward pass, so batch norm normalises over all
    2N views, as in the reference implementation (which concatenates the views on the batch
    axis). Under DDP, ``gather=True`` makes the negatives span the global batch (Sec. 2.2);
    global BN (Sec. 2.2, "Global BN") is the engine's job (SyncBatchNorm on GPUs).
    """

    log_keys = ("pos_cos",)  # extra metrics.csv columns (besides loss)

    def __init__(self, encoder: nn.Module, head: nn.Module, temperature: float = 0.5, gather: bool = True):
        super().__init__()
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        self.encoder, self.head = encoder, head
        self.temperature, self.gather = temperature, gather

    def forward(self, view1: Tensor, view2: Tensor, index: Tensor | None = None) -> tuple[Tensor, dict]:
        h = self.encoder(torch.cat([view1, view2]))  # representation h = f(x), (2N, feature_dim)
        z = self.head(h)  # projection z = g(h), (2N, proj_dim)
        z1, z2 = _upcast(z).chunk(2)
        loss = nt_xent(z1, z2, temperature=self.temperature, gather=self.gather)
        with torch.no_grad():
            pos = nn.functional.cosine_similarity(z1, z2).mean()
        return loss, {"loss": loss.detach(), "pos_cos": pos}


def build_simclr(cfg: Config) -> SimCLR:
    encoder = build_encoder(cfg.encoder, **encoder_kwargs(cfg))
    out_dim = None if cfg.head == "identity" else cfg.proj_dim  # "no head": z = h
    head = build_head(cfg.head, in_dim=encoder.feature_dim, out_dim=out_dim, hidden_dim=cfg.hidden_dim or None)
    return SimCLR(encoder, head, temperature=cfg.temperature)


def encoder_kwargs(cfg: Config) -> dict:
    """The keyword arguments ``build_encoder`` takes for ``cfg.encoder``."""
    kwargs: dict = {"cifar_stem": cfg.cifar_stem}
    if cfg.encoder.startswith(("resnet10", "small")):
        kwargs["width"] = cfg.width
    return kwargs


# ----------------------------------------------------------------------------------------
# Memory bank and queue methods: InstDisc (Wu et al. 2018), MoCo v1/v2 (He et al. 2019; Chen et al. 2020)
# ----------------------------------------------------------------------------------------


def _upcast(x: Tensor) -> Tensor:
    """bf16/fp16 embeddings (autocast) -> float32; float32 and float64 (precision=fp64) stay as they are."""
    return x if x.dtype in (torch.float32, torch.float64) else x.float()


def _unit(x: Tensor) -> Tensor:
    """Row-wise L2 normalisation in float32, or float64 under precision=fp64 (see :func:`_upcast`)."""
    return nn.functional.normalize(_upcast(x), dim=1)


class MoCo(nn.Module):
    """Momentum Contrast (He et al. 2019, Algorithm 1), v1 and v2 (Chen et al. 2020, "Improved
    Baselines with Momentum Contrastive Learning"; the versions differ only in config: head, views,
    temperature and lr schedule, see the presets).

    One step, as ``moco/builder.py``::

        theta_k <- m theta_k + (1 - m) theta_q                 (Eq. 2, before the keys are encoded)
        q = normalize(g_q(f_q(x_q)))                            (queries, with gradient)
        k = normalize(g_k(f_k(shuffle(x_k)))), unshuffled       (keys, no gradient, shuffling BN)
        loss = InfoNCE(q, k, queue) = -log exp(q.k/T) / (exp(q.k/T) + sum_j exp(q.n_j/T))   (Eq. 1)
        queue <- enqueue(k)                                     (after the loss)

    ``symmetric=True`` adds the swapped pair, loss(q1, k2) + loss(q2, k1), and enqueues both key
    sets (MoCo CIFAR-10 demo; it behaves like twice the epochs). ``ema_schedule="cosine"`` raises m
    from its base value to 1 over ``total_steps`` (BYOL, Grill et al. 2020, Sec. 3.2); the step
    counter is a buffer, so a resumed run continues the schedule. ``self.encoder`` (the query
    encoder f_q) is the representation that evaluation uses, as in MoCo's linear protocol.

    The key encoder's BN buffers are neither copied nor averaged (official code: only parameters
    get the momentum update); it runs in train mode and keeps its own running statistics.
    """

    log_keys = ("pos_cos", "neg_cos", "top1", "ema_m")

    def __init__(
        self,
        encoder: nn.Module,
        head: nn.Module,
        queue_size: int = 65536,
        temperature: float = 0.07,
        momentum: float = 0.999,
        ema_schedule: str = "constant",
        total_steps: int = 0,
        symmetric: bool = False,
        shuffle_bn: bool = True,
    ) -> None:
        super().__init__()
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0, got {temperature} (MoCo v1: 0.07, v2: 0.2)")
        self.momentum = check_momentum(momentum, "momentum_ema")
        if ema_schedule not in EMA_SCHEDULES:
            raise ValueError(f"ema_schedule must be one of {EMA_SCHEDULES}, got {ema_schedule!r}")
        if ema_schedule == "cosine" and total_steps < 1:
            raise ValueError("ema_schedule='cosine' needs total_steps >= 1 (the length of the schedule)")
        self.encoder, self.head = encoder, head
        self.key_encoder, self.key_head = momentum_copy(encoder), momentum_copy(head)
        self.queue = KeyQueue(queue_size, head.out_dim)
        self.register_buffer("step", torch.zeros((), dtype=torch.long))
        self.temperature, self.ema_schedule, self.total_steps = float(temperature), ema_schedule, total_steps
        self.symmetric, self.shuffle_bn = bool(symmetric), bool(shuffle_bn)

    def current_momentum(self) -> float:
        """m for the next update: constant, or :func:`~contrastive_lab.memory.cosine_momentum`."""
        if self.ema_schedule == "cosine":
            return cosine_momentum(int(self.step), self.total_steps, self.momentum)
        return self.momentum

    @torch.no_grad()
    def update_key_encoder(self) -> float:
        """One EMA step of the key encoder and head (MoCo Eq. 2); returns the m that was used."""
        m = self.current_momentum()
        momentum_update_(self.key_encoder, self.encoder, m)
        momentum_update_(self.key_head, self.head, m)
        self.step += 1
        return m

    def queries(self, x: Tensor) -> Tensor:
        """q = normalize(g_q(f_q(x))), (N, D) float32, with gradient."""
        return _unit(self.head(self.encoder(x)))

    @torch.no_grad()
    def keys(self, x: Tensor) -> Tensor:
        """k = normalize(g_k(f_k(x))), computed on the shuffled batch and shuffled back (Sec. 3.3)."""
        if self.shuffle_bn:
            x, idx_unshuffle = batch_shuffle(x)
        k = _unit(self.key_head(self.key_encoder(x)))
        return batch_unshuffle(k, idx_unshuffle) if self.shuffle_bn else k

    @torch.no_grad()
    def logits(self, q: Tensor, k: Tensor) -> Tensor:
        """Algorithm 1's logits, (N, 1+K): column 0 is l_pos = q.k+/T, columns 1..K are q.queue/T."""
        l_pos = (q * k).sum(dim=1, keepdim=True)
        l_neg = q @ self.queue.keys.T
        return torch.cat([l_pos, l_neg], dim=1) / self.temperature

    def contrastive_loss(self, x_q: Tensor, x_k: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """(InfoNCE of the queries of ``x_q`` against the keys of ``x_k`` and the queue, q, k)."""
        q, k = self.queries(x_q), self.keys(x_k)
        loss = info_nce(q, k, self.queue.keys.clone(), temperature=self.temperature)
        return loss, q, k

    def forward(self, view1: Tensor, view2: Tensor, index: Tensor | None = None) -> tuple[Tensor, dict]:
        m = self.update_key_encoder() if self.training else self.current_momentum()
        if self.symmetric:
            loss_12, q1, k2 = self.contrastive_loss(view1, view2)
            loss_21, q2, k1 = self.contrastive_loss(view2, view1)
            loss, q, k = loss_12 + loss_21, torch.cat([q1, q2]), torch.cat([k2, k1])
            enqueue = torch.cat([k1, k2])
        else:
            loss, q, k = self.contrastive_loss(view1, view2)
            enqueue = k
        with torch.no_grad():
            logits = self.logits(q.detach(), k)
            logs = {
                "loss": loss.detach(),
                "pos_cos": (q * k).sum(1).mean(),
                "neg_cos": logits[:, 1:].mean() * self.temperature,
                "top1": (logits.argmax(1) == 0).float().mean(),  # pretext accuracy: positive ranked first
                "ema_m": torch.tensor(m),
            }
        if self.training:
            self.queue.enqueue(enqueue)
        return loss, logs


class InstDisc(nn.Module):
    """Instance discrimination with a memory bank (Wu et al. 2018, Sec. 3).

    Every training image is its own class; the class "weights" are the memory bank entries v_i
    (:class:`~contrastive_lab.memory.MemoryBank`). One step::

        f = normalize(g(f(x_i)))                 (one augmented view; ``view2`` is not used)
        positive v_i, negatives v'_1..v'_K from the bank (no gradient)
        loss = NCE (Eq. 4-7, Z fixed after the first batch)   or   InfoNCE (MoCo's Eq. 1)
             + lambda ||f_i - v_i||^2             (proximal term, Sec. 3.3; lambda = 0: off)
        v_i <- normalize(m v_i + (1 - m) f_i)     (after the loss; m = 0.5 in the official code)

    With ``loss="nce"`` each sample gets its own K noise entries (as the official ``NCEAverage``);
    with ``loss="infonce"`` one set of K entries is shared by the batch (like MoCo's queue, the form
    MoCo's Fig. 3 compares), drawn from the images not in the batch. Needs the dataset ``index``
    the engine passes with every batch.
    """

    log_keys = ("pos_cos", "neg_cos")

    def __init__(
        self,
        encoder: nn.Module,
        head: nn.Module,
        dataset_size: int,
        num_negatives: int = 4096,
        temperature: float = 0.07,
        bank_momentum: float = 0.5,
        loss: str = "nce",
        proximal: float = 0.0,
    ) -> None:
        super().__init__()
        if loss not in BANK_LOSSES:
            raise ValueError(f"bank_loss must be one of {BANK_LOSSES}, got {loss!r}")
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0, got {temperature} (Wu et al. 2018: 0.07)")
        if not proximal >= 0:
            raise ValueError(f"proximal (lambda) must be >= 0, got {proximal}")
        if isinstance(num_negatives, bool) or not isinstance(num_negatives, int) or num_negatives < 1:
            raise ValueError(f"num_negatives must be a positive int, got {num_negatives!r}")
        if num_negatives >= dataset_size:
            raise ValueError(
                f"num_negatives={num_negatives} must be smaller than the {dataset_size} images in the memory "
                "bank (negatives are drawn from the other images); lower num_negatives"
            )
        self.encoder, self.head = encoder, head
        self.bank = MemoryBank(dataset_size, head.out_dim, momentum=bank_momentum)
        self.nce = NCEMemoryBankLoss(dataset_size, temperature) if loss == "nce" else None
        self.num_negatives, self.temperature, self.loss_kind = num_negatives, float(temperature), loss
        self.proximal = float(proximal)

    def forward(self, view1: Tensor, view2: Tensor | None = None, index: Tensor | None = None) -> tuple[Tensor, dict]:
        if index is None:
            raise ValueError("InstDisc needs the dataset indices of the batch (index=...) to find its bank entries")
        f = _unit(self.head(self.encoder(view1)))
        v_pos = self.bank(index)
        if self.nce is not None:
            v_neg = self.bank.bank[self.bank.sample_negatives(index, self.num_negatives)]  # (B, K, D)
            loss = self.nce(f, v_pos, v_neg)
        else:
            v_neg = self.bank.bank[self.bank.sample_shared_negatives(index, self.num_negatives)]  # (K, D)
            loss = info_nce(f, v_pos, v_neg, temperature=self.temperature)
        if self.proximal:
            loss = loss + self.proximal * (f - v_pos).pow(2).sum(1).mean()
        with torch.no_grad():
            neg = torch.einsum("bd,bkd->bk", f, v_neg) if v_neg.ndim == 3 else f @ v_neg.T
            logs = {"loss": loss.detach(), "pos_cos": (f * v_pos).sum(1).mean(), "neg_cos": neg.mean()}
        if self.training:
            self.bank.update(index, f.detach())
        return loss, logs


EMA_SCHEDULES = ("constant", "cosine")
BANK_LOSSES = ("nce", "infonce")


def num_train_images(cfg: Config) -> int:
    """How many images the engine will train on (the memory bank's size n), as ``engine.build_batches``
    counts them: the training split, cut to ``cfg.subset`` for in-memory datasets."""
    from .engine import load_split  # lazy: the engine imports this module

    dataset = load_split(cfg, cfg.train_split)
    n = len(dataset)
    return min(n, cfg.subset) if (cfg.subset and hasattr(dataset, "images")) else n


def total_train_steps(cfg: Config) -> int:
    """The engine's total_steps: epochs x (images // batch_size), capped by ``max_steps``."""
    steps = cfg.epochs * (num_train_images(cfg) // cfg.batch_size)
    return min(steps, cfg.max_steps) if cfg.max_steps else steps


def _encoder_and_head(cfg: Config) -> tuple[nn.Module, nn.Module]:
    encoder = build_encoder(cfg.encoder, **encoder_kwargs(cfg))
    if cfg.bn_splits > 1:
        convert_to_split_batchnorm(encoder, cfg.bn_splits)
    out_dim = None if cfg.head == "identity" else cfg.proj_dim
    head = build_head(cfg.head, in_dim=encoder.feature_dim, out_dim=out_dim, hidden_dim=cfg.hidden_dim or None)
    return encoder, head


def build_moco(cfg: Config) -> MoCo:
    """MoCo from a config (methods ``moco_v1`` and ``moco_v2``: same algorithm, different presets)."""
    if cfg.bn_splits < 1:
        raise ValueError(f"bn_splits must be >= 1 (1 = plain BN), got {cfg.bn_splits}")
    encoder, head = _encoder_and_head(cfg)
    total = total_train_steps(cfg) if cfg.ema_schedule == "cosine" else 0
    return MoCo(
        encoder, head, queue_size=cfg.queue_size, temperature=cfg.temperature, momentum=cfg.momentum_ema,
        ema_schedule=cfg.ema_schedule, total_steps=total, symmetric=cfg.symmetric, shuffle_bn=cfg.shuffle_bn,
    )


def build_instdisc(cfg: Config) -> InstDisc:
    """InstDisc from a config; the bank gets one entry per training image."""
    if cfg.bn_splits < 1:
        raise ValueError(f"bn_splits must be >= 1 (1 = plain BN), got {cfg.bn_splits}")
    encoder, head = _encoder_and_head(cfg)
    return InstDisc(
        encoder, head, dataset_size=num_train_images(cfg), num_negatives=cfg.num_negatives,
        temperature=cfg.temperature, bank_momentum=cfg.bank_momentum, loss=cfg.bank_loss,
        proximal=cfg.proximal,
    )


def build_cpc(cfg: Config) -> ImageCPC:
    """Image CPC from a config (``cpc.ImageCPC``: van den Oord et al. 2018, Sec. 3.2; Hénaff et al. 2020).

    CPC predicts one part of an image from another, so it trains on ONE view: ``forward`` uses
    ``view1`` and ignores ``view2``. ``method.encoder`` maps images to the patch features
    mean-pooled over the grid, which the kNN monitor and the linear probe evaluate.
    """
    if cfg.encoder != "patch_convnet":
        raise ValueError(
            f"method=cpc encodes patches with encoder=patch_convnet, got encoder={cfg.encoder!r}; "
            "to put another network on the patches, build cpc.ImageCPC(cpc.PatchGridEncoder(net), ...) yourself"
        )
    return make_image_cpc(
        image_size=cfg.image_size, patch_size=cfg.patch_size, stride=cfg.patch_stride, width=cfg.width,
        norm=cfg.cpc_norm, max_offset=cfg.cpc_offsets, temperature=cfg.temperature,
        patch_augment=cfg.patch_augment,
    )


METHODS: dict[str, Callable[[Config], nn.Module]] = {
    "simclr": build_simclr,
    "moco_v1": build_moco,
    "moco_v2": build_moco,
    "instdisc": build_instdisc,
    "cpc": build_cpc,
}


def build_method(cfg: Config) -> nn.Module:
    """The method named by ``cfg.method``, built from the config."""
    if cfg.method not in METHODS:
        raise ValueError(f"unknown method {cfg.method!r}; valid methods: {', '.join(sorted(METHODS))}")
    return METHODS[cfg.method](cfg)
