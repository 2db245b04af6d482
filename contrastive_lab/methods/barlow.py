"""Barlow Twins (Zbontar, Jing, Misra, LeCun & Deny 2021, "Barlow Twins: Self-Supervised Learning
via Redundancy Reduction").

Chapter 11 builds it and takes it apart. One network, both views, no negatives, no predictor, no
EMA, no stop-gradient (Sec. 2, Algorithm 1)::

    zA, zB = g(f(yA)), g(f(yB))                     projector g: 3 bias-free layers of 8192
    zA, zB standardised along the batch             (mean 0, std 1 per dimension)
    C = zA^T zB / N                                 the cross-correlation matrix, D x D  (Eq. 2)
    L = sum_i (1 - C_ii)^2 + lambda sum_{i != j} C_ij^2                                 (Eq. 1)

The objective itself rules collapse out (Sec. 2): a constant embedding has no variance to
standardise, and the off-diagonal term forbids the other collapse, every dimension a copy of one
(C full of ones). With lambda = 0 the second guard is gone: the dimensions become redundant and the
effective rank of z falls (chapter 11's ablation). It is the information-bottleneck reading of
Sec. 2 / App. A, and the "dimensional collapse" of Jing, Vincent, LeCun & Tian 2022.

Under DDP the means, variances and C are reduced over all ranks with gradient
(:func:`~contrastive_lab.losses.cross_correlation`, as the official code's ``all_reduce(c)``), and
the engine turns the projector's BN into global BN, so W ranks equal one process on the global batch.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..collapse import collapse_logs
from ..config import Config, imagenet_r50, preset
from ..losses import cross_correlation, redundancy_reduction
from .base import Batch, BuildContext, build_config_encoder, check_positive, register_method
from .byol import two_view_recipes
from .simclr import upcast
from .simsiam import SiameseProjector


@dataclass
class BarlowOptions:
    """Barlow Twins' settings (Zbontar et al. 2021; the CPU preset departs, and says why)."""

    proj_dim: int = 8192  # Sec. 2 "Implementation details" / official --projector 8192-8192-8192
    hidden_dim: int = 8192  # the projector's hidden layers
    proj_layers: int = 3  # Linear-BN-ReLU, Linear-BN-ReLU, Linear (official main.py)
    lambd: float = 5.1e-3  # lambda of Eq. 1 (Sec. 2: ~5e-3; official --lambd 0.0051); 0 = the ablation
    asymmetric_views: bool = False  # BYOL's T, T' (blur 1.0 / 0.1): Sec. 2 follows BYOL's augmentations

    def validate(self, cfg: Config) -> None:
        for name in ("proj_dim", "hidden_dim", "proj_layers"):
            check_positive(getattr(self, name), name)
        if not self.lambd >= 0:
            raise ValueError(f"lambd must be >= 0 (Barlow Twins: 5.1e-3; 0 = no redundancy reduction), got {self.lambd}")


class BarlowTwins(nn.Module):
    """f, g and the cross-correlation loss (see the module docstring)."""

    log_keys = ("c_diag", "c_offdiag", "z_std", "z_rank")

    def __init__(self, encoder: nn.Module, head: nn.Module, lambd: float = 5.1e-3,
                 view_recipes: list | None = None) -> None:
        super().__init__()
        self.encoder, self.head, self.lambd = encoder, head, float(lambd)
        self.view_recipes = list(view_recipes or [])

    def forward(self, batch: Batch) -> tuple[torch.Tensor, dict]:
        view1, view2 = batch.views
        z1 = upcast(self.head(self.encoder(view1)))  # one pass per view, as the official code
        z2 = upcast(self.head(self.encoder(view2)))
        c = cross_correlation(z1, z2)
        loss = redundancy_reduction(c, self.lambd)
        with torch.no_grad():
            d = c.shape[0]
            diag = torch.diagonal(c)
            off = ((c.pow(2).sum() - diag.pow(2).sum()) / max(d * (d - 1), 1)).sqrt()
            logs = {"loss": loss.detach(), "c_diag": diag.mean(), "c_offdiag": off, **collapse_logs(z1)}
        return loss, logs


def build_barlow(cfg: Config, ctx: BuildContext) -> BarlowTwins:
    """Barlow Twins from a config: ``cfg.encoder`` and a :class:`SiameseProjector` without output BN."""
    opts = cfg.options
    encoder = build_config_encoder(cfg)
    head = SiameseProjector(encoder.feature_dim, opts.hidden_dim, opts.proj_dim, opts.proj_layers, out_bn=False)
    recipes = two_view_recipes(ctx.recipe, opts.asymmetric_views) if ctx.recipe is not None else None
    return BarlowTwins(encoder, head, opts.lambd, recipes)


register_method("barlow", BarlowOptions, build_barlow, "Barlow Twins: cross-correlation to the identity (Zbontar et al. 2021)")


# ----------------------------------------------------------------------------------------
# Presets
# ----------------------------------------------------------------------------------------


@preset("barlow-cifar10-cpu")
def barlow_cifar10_cpu() -> Config:
    """Barlow Twins on CIFAR-10 for a 2-core CPU and the 7-minute budget of ``simclr-cifar10-cpu``.

    simclr-cifar10-cpu's encoder, views (24 px, kNN at 32 px), batch 128, LARS with lr =
    0.075 sqrt(B) (SimCLR App. B.1's small-batch rule; Barlow Twins trains with LARS too, Sec. 2),
    1 warmup epoch, so the one-budget table compares the objectives. Barlow Twins' parts at CPU
    scale: a 3-layer projector of 1024 (the paper's 8192 is 4x its 2048-d h; here h is 256-d and
    Sec. 4 / Fig. 4 finds accuracy still rising with D, so 4x h is the paper's ratio), lambda =
    5.1e-3 as the paper, and weight decay 1.5e-6 (Sec. 2, "Implementation details").
    """
    return Config(
        method="barlow",
        dataset="cifar10",
        recipe="simclr_cifar",
        encoder="resnet10",
        width=0.5,
        options=BarlowOptions(proj_dim=1024, hidden_dim=1024, proj_layers=3, lambd=5.1e-3),
        optimizer="lars",
        base_lr=0.075,
        lr_scaling="sqrt",
        weight_decay=1.5e-6,
        batch_size=128,
        image_size=24,
        eval_size=32,
        epochs=38,
        time_budget_s=510.0,
        warmup_epochs=1.0,
        knn_every=5,
        checkpoint_every=100,
    )


@preset("barlow-imagenet-r50")
def barlow_imagenet_r50() -> Config:
    """Barlow Twins, ResNet-50 on ImageNet-1k (Zbontar et al. 2021, Sec. 2 "Implementation details").

    Projector 3 x 8192 (bias-free Linear, BN, ReLU), lambda = 5.1e-3 (official ``--lambd 0.0051``);
    LARS, batch 2048, lr 0.2 x B/256 for the weights (1.6), weight decay 1.5e-6, biases and BN
    excluded from LARS adaptation and weight decay, 10 warmup epochs then cosine, 1000 epochs; BYOL's
    views (recipe ``byol`` with blur 1.0 / 0.1, ``asymmetric_views``). Departures: the paper trains
    biases and BN parameters at lr 0.0048 x B/256 (0.024 x the weights' lr) and decays the lr to
    1/1000 instead of 0; here they share the weights' lr (the engine has one lr per run, as SimCLR's
    LARS code), and there is no solarization.
    """
    return imagenet_r50(
        method="barlow", recipe="byol", options=BarlowOptions(asymmetric_views=True),
        optimizer="lars", lr=0.0, base_lr=0.2, lr_scaling="linear", weight_decay=1.5e-6, momentum=0.9,
        warmup_epochs=10.0, batch_size=2048, epochs=1000, checkpoint_every=500,
    )
