"""Momentum Contrast (He et al. 2019, "Momentum Contrast for Unsupervised Visual Representation
Learning"), v1 and v2 (Chen et al. 2020, "Improved Baselines with Momentum Contrastive Learning").

Chapter 08 builds it; chapter 07 compares its queue with the memory bank and the end-to-end batch.
The versions differ only in configuration (head, views, temperature, lr schedule: the presets
below). One step, in the order of the paper's Algorithm 1::

    q = normalize(g_q(f_q(x_q)))                               queries, with gradient
    k = normalize(g_k(f_k(shuffle(x_k)))), unshuffled          keys, no gradient (shuffling BN, Sec. 3.3)
    loss = -log exp(q.k+/T) / (exp(q.k+/T) + sum_j exp(q.n_j/T))   Eq. 1, n_j = the K queued keys
    loss.backward(); optimizer.step()                          (the engine)
    theta_k <- m theta_k + (1 - m) theta_q                     Eq. 2   } after_step
    queue <- enqueue(k)                                        Sec. 3.2 }

``symmetric=True`` adds the swapped pair, loss(q1, k2) + loss(q2, k1), and enqueues both key sets
(MoCo's CIFAR-10 demo; it behaves like twice the epochs). ``ema_schedule="cosine"`` raises m from
its base value to 1 over the schedule (BYOL, Grill et al. 2020, Sec. 3.2). ``self.encoder`` (the
query encoder f_q) is the representation evaluation uses, as in MoCo's linear protocol. The key
encoder's BN buffers are neither copied nor averaged (official code: only parameters get the
momentum update); it runs in train mode and keeps its own running statistics.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ..batchnorm import batch_shuffle, batch_unshuffle, convert_to_split_batchnorm
from ..config import Config, imagenet_r50, preset
from ..losses import info_nce
from ..memory import KeyQueue
from ..momentum import EMA_SCHEDULES, check_momentum, cosine_momentum, momentum_copy, momentum_update_
from .base import (
    Batch,
    BuildContext,
    Progress,
    ProjectionOptions,
    build_config_encoder,
    build_projection,
    check_positive,
    register_method,
)
from .simclr import upcast


def unit(x: Tensor) -> Tensor:
    """Row-wise L2 normalisation in float32, or float64 under precision=fp64 (:func:`upcast`)."""
    return nn.functional.normalize(upcast(x), dim=1)


@dataclass
class MoCoOptions(ProjectionOptions):
    """MoCo's settings (He et al. 2019; the CPU presets say where they depart, and why)."""

    temperature: float = 0.07  # MoCo v1 Sec. 3.3 (0.07); MoCo v2 Table 1 uses 0.2
    queue_size: int = 4096  # K, the queued negatives (ImageNet: 65536, Sec. 4)
    momentum_ema: float = 0.99  # m of Eq. 2 (ImageNet: 0.999, Sec. 3.2; MoCo's CIFAR-10 demo: 0.99)
    ema_schedule: str = "constant"  # constant | cosine: m rises from momentum_ema to 1 (BYOL Sec. 3.2)
    symmetric: bool = False  # loss(q1,k2) + loss(q2,k1) (MoCo CIFAR-10 demo)
    shuffle_bn: bool = True  # Sec. 3.3: shuffle the key batch across devices / BN splits
    bn_splits: int = 1  # >1: split ("ghost") BN simulating this many GPUs (MoCo CIFAR-10 demo: 8)

    def validate(self, cfg: Config) -> None:
        super().validate(cfg)
        check_positive(self.temperature, "temperature", " (MoCo v1: 0.07, v2: 0.2)")
        check_momentum(self.momentum_ema, "momentum_ema")
        if self.ema_schedule not in EMA_SCHEDULES:
            raise ValueError(f"ema_schedule must be one of {EMA_SCHEDULES}, got {self.ema_schedule!r}")
        if self.bn_splits < 1:
            raise ValueError(f"bn_splits must be >= 1 (1 = plain BN), got {self.bn_splits}")


class MoCo(nn.Module):
    """MoCo v1/v2 (see the module docstring): queries with gradient, momentum keys, a FIFO queue."""

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
        self.register_buffer("step", torch.zeros((), dtype=torch.long))  # momentum updates so far
        self.temperature, self.ema_schedule, self.total_steps = float(temperature), ema_schedule, total_steps
        self.symmetric, self.shuffle_bn = bool(symmetric), bool(shuffle_bn)
        self._pending: list[Tensor] = []  # keys of this step, enqueued in after_step

    def current_momentum(self) -> float:
        """m of the latest update (step t = ``self.step``): constant, or :func:`cosine_momentum`."""
        if self.ema_schedule == "cosine":
            return cosine_momentum(int(self.step), self.total_steps, self.momentum)
        return self.momentum

    def queries(self, x: Tensor) -> Tensor:
        """q = normalize(g_q(f_q(x))), (N, D), with gradient."""
        return unit(self.head(self.encoder(x)))

    @torch.no_grad()
    def keys(self, x: Tensor) -> Tensor:
        """k = normalize(g_k(f_k(x))), computed on the shuffled batch and shuffled back (Sec. 3.3)."""
        if self.shuffle_bn:
            x, idx_unshuffle = batch_shuffle(x)
        k = unit(self.key_head(self.key_encoder(x)))
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
        loss = info_nce(q, k, self.queue.keys, temperature=self.temperature)
        return loss, q, k

    def forward(self, batch: Batch) -> tuple[Tensor, dict]:
        view1, view2 = batch.views
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
                "ema_m": torch.tensor(self.current_momentum()),
            }
        if self.training:
            self._pending.append(enqueue)
        return loss, logs

    @torch.no_grad()
    def after_step(self, progress: Progress) -> None:
        """After the optimizer step: theta_k <- m theta_k + (1 - m) theta_q (Eq. 2), then enqueue this
        step's keys (all micro-batches'), oldest out (Algorithm 1's last two lines)."""
        self.total_steps = progress.total_steps if self.ema_schedule == "cosine" else self.total_steps
        self.step.fill_(progress.step)
        m = self.current_momentum()
        momentum_update_(self.key_encoder, self.encoder, m)
        momentum_update_(self.key_head, self.head, m)
        if self._pending:
            self.queue.enqueue(torch.cat(self._pending))
            self._pending.clear()


def encoder_and_head(cfg: Config) -> tuple[nn.Module, nn.Module]:
    """f (with split BN when ``bn_splits > 1``) and g, for the memory methods (MoCo, InstDisc)."""
    encoder = build_config_encoder(cfg)
    if cfg.options.bn_splits > 1:
        convert_to_split_batchnorm(encoder, cfg.options.bn_splits)
    return encoder, build_projection(cfg, encoder.feature_dim)


def build_moco(cfg: Config, ctx: BuildContext) -> MoCo:
    """MoCo from a config (methods ``moco_v1`` and ``moco_v2``: same algorithm, different presets)."""
    opts = cfg.options
    encoder, head = encoder_and_head(cfg)
    return MoCo(
        encoder, head, queue_size=opts.queue_size, temperature=opts.temperature, momentum=opts.momentum_ema,
        ema_schedule=opts.ema_schedule, total_steps=ctx.total_steps if opts.ema_schedule == "cosine" else 0,
        symmetric=opts.symmetric, shuffle_bn=opts.shuffle_bn,
    )


register_method("moco_v1", MoCoOptions, build_moco, "MoCo v1: momentum encoder + queue (He et al. 2019)")
register_method("moco_v2", MoCoOptions, build_moco, "MoCo v2: v1 + MLP head, blur, cosine lr (Chen et al. 2020)")


# ----------------------------------------------------------------------------------------
# Presets
# ----------------------------------------------------------------------------------------
# The CPU presets train on cifar10-mini (5085 images, 19 steps of 256 per epoch). Two numbers
# have to shrink with the dataset and with the run:
# * the queue / bank negatives K = 1024 (20% of the images). MoCo's K = 65536 is 5% of
#   ImageNet; with K close to the dataset size the queue would mostly hold an *older key of the
#   query's own image* (seen within the last K/B steps) as a "negative". (Chapter 07's sweep on
#   cifar10-mini found K=256 a little better still in its 10-epoch runs; chapter 07 says why the
#   presets keep 1024.)
# * the key-encoder momentum m = 0.99 (MoCo CIFAR-10 demo), not ImageNet's 0.999: the EMA
#   averages over ~1/(1-m) steps, 1000 steps for 0.999, longer than a whole CPU run (~300 steps).


@preset("moco-v2-cifar10-cpu")
def moco_v2_cifar10_cpu() -> Config:
    """MoCo v2 on CIFAR-10 for a 2-core CPU (chapters 07-08).

    MoCo v2 (Chen et al. 2020, "Improved Baselines ...", Table 1): MLP head (hidden = feature dim,
    ReLU, 128-d out), blur in the views (recipe ``moco_v2``), cosine lr, T = 0.2. CPU-sized after the
    MoCo CIFAR-10 demo (Colab by K. He): CIFAR stem, split BN with 8 splits (8 simulated GPUs of 32
    images), shuffling BN, SGD lr 0.06 / wd 5e-4, m = 0.99. Departures: a ResNet-10 at half width,
    batch 256, K = 1024 (see the note above), 15 epochs.
    """
    return Config(
        method="moco_v2",
        dataset="cifar10",
        recipe="moco_v2",
        encoder="resnet10",
        width=0.5,
        options=MoCoOptions(head="moco_v2", proj_dim=128, temperature=0.2, queue_size=1024, momentum_ema=0.99,
                            bn_splits=8, shuffle_bn=True),
        optimizer="sgd",
        lr=0.06,
        weight_decay=5e-4,
        momentum=0.9,
        warmup_epochs=0.0,
        batch_size=256,
        epochs=15,
        knn_every=5,
        checkpoint_every=100,
    )


@preset("moco-v1-cifar10-cpu")
def moco_v1_cifar10_cpu() -> Config:
    """MoCo v1 on CIFAR-10 for a 2-core CPU: :func:`moco_v2_cifar10_cpu` with v1's choices.

    MoCo v1 (He et al. 2019, Sec. 3.3 and 4.1): linear 128-d head (the ResNet's fc), T = 0.07, views
    without blur (recipe ``moco_v1``), and a step schedule: lr x0.1 at 60% and 80% of training (the
    paper's epochs 120 and 160 of 200), here epochs 9 and 12 of 15.
    """
    return moco_v2_cifar10_cpu().replace(method="moco_v1", recipe="moco_v1", head="linear", temperature=0.07,
                                         lr_schedule="step", lr_milestones="9,12")


@preset("moco-v1-imagenet-r50")
def moco_v1_imagenet_r50() -> Config:
    """MoCo v1, ResNet-50 on ImageNet-1k (He et al. 2019, Sec. 3.3 and 4): linear 128-d head, T = 0.07,
    K = 65536, m = 0.999, SGD lr 0.03 (batch 256 on 8 GPUs), wd 1e-4, momentum 0.9, 200 epochs.

    The lr is multiplied by 0.1 at epochs 120 and 160 (Sec. 4). Departures: the paper applies weight
    decay to every parameter; optim.param_groups spares BN and biases. On 8 GPUs the engine converts
    BN to SyncBatchNorm, so the key batch's statistics are global (shuffling BN then has no effect;
    global BN is the other cure for the leak, SimCLR Sec. 2.2).
    """
    return imagenet_r50(method="moco_v1", recipe="moco_v1", lr_schedule="step", lr_milestones="120,160",
                        options=MoCoOptions(head="linear", temperature=0.07, queue_size=65536, momentum_ema=0.999))


@preset("moco-v2-imagenet-r50")
def moco_v2_imagenet_r50() -> Config:
    """MoCo v2, ResNet-50 on ImageNet-1k (Chen et al. 2020, Sec. 2 and Table 1): v1 plus a 2-layer MLP
    head (hidden 2048, ReLU), blur in the views (``aug+``), cosine lr, T = 0.2; batch 256, lr 0.03,
    K = 65536, m = 0.999, 200 epochs (67.5% linear top-1 in Table 1). See moco_v1_imagenet_r50 for
    the departures (weight decay groups, BN under DDP)."""
    return imagenet_r50(method="moco_v2", recipe="moco_v2",
                        options=MoCoOptions(head="moco_v2", temperature=0.2, queue_size=65536, momentum_ema=0.999))
