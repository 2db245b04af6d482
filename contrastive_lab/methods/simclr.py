"""SimCLR (Chen et al. 2020, "A Simple Framework for Contrastive Learning of Visual Representations").

Chapter 05 trains it end to end; chapter 06 takes its ablations apart. Algorithm 1, for a batch of N
images and their two views x_{2k-1}, x_{2k}::

    h = f(x)                      encoder (a ResNet; both views in ONE forward pass, so BN sees 2N views)
    z = g(h)                      projection head (Sec. 2.1: a 2-layer MLP, 128-d out)
    L = NT-Xent(z; tau)           Eq. 1: each z_i against its positive and 2(N-1) negatives

      l(i, j) = -log  exp(sim(z_i, z_j)/tau) / sum_{k != i} exp(sim(z_i, z_k)/tau)

The representation kept after pre-training is h, not z (Sec. 4.2). Under DDP the negatives span the
global batch (``gather``: :func:`contrastive_lab.losses.nt_xent` all-gathers z with gradient) and
BN is global (Sec. 2.2; the engine converts it).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ..config import Config, imagenet_r50, preset
from ..losses import nt_xent
from .base import (
    Batch,
    BuildContext,
    ProjectionOptions,
    build_config_encoder,
    build_projection,
    check_positive,
    register_method,
)


def upcast(x: Tensor) -> Tensor:
    """bf16/fp16 embeddings (autocast) -> float32; float32 and float64 (precision=fp64) stay as they are."""
    return x if x.dtype in (torch.float32, torch.float64) else x.float()


@dataclass
class SimCLROptions(ProjectionOptions):
    """SimCLR's own settings (the head fields come from :class:`ProjectionOptions`)."""

    temperature: float = 0.5  # SimCLR Table 5 / B.9: 0.5 for CIFAR-10

    def validate(self, cfg: Config) -> None:
        super().validate(cfg)
        check_positive(self.temperature, "temperature", " (SimCLR: 0.1 on ImageNet, 0.5 on CIFAR-10)")


class SimCLR(nn.Module):
    """x -> two views -> f -> g -> NT-Xent (Algorithm 1), see the module docstring."""

    log_keys = ("pos_cos",)  # extra metrics.csv columns (besides loss)

    def __init__(self, encoder: nn.Module, head: nn.Module, temperature: float = 0.5, gather: bool = True):
        super().__init__()
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        self.encoder, self.head = encoder, head
        self.temperature, self.gather = temperature, gather

    def forward(self, batch: Batch) -> tuple[Tensor, dict]:
        view1, view2 = batch.views
        h = self.encoder(torch.cat([view1, view2]))  # representation h = f(x), (2N, feature_dim)
        z = self.head(h)  # projection z = g(h), (2N, proj_dim)
        z1, z2 = upcast(z).chunk(2)
        loss = nt_xent(z1, z2, temperature=self.temperature, gather=self.gather)
        with torch.no_grad():
            pos = nn.functional.cosine_similarity(z1, z2).mean()
        return loss, {"loss": loss.detach(), "pos_cos": pos}


def build_simclr(cfg: Config, ctx: BuildContext | None = None) -> SimCLR:
    """SimCLR from a config: ``cfg.encoder`` as f, the options' head as g."""
    encoder = build_config_encoder(cfg)
    return SimCLR(encoder, build_projection(cfg, encoder.feature_dim), temperature=cfg.options.temperature)


register_method("simclr", SimCLROptions, build_simclr, "SimCLR: NT-Xent over two views (Chen et al. 2020)")


# ----------------------------------------------------------------------------------------
# Presets
# ----------------------------------------------------------------------------------------


@preset("simclr-cifar10-cpu")
def simclr_cifar10_cpu() -> Config:
    """SimCLR on CIFAR-10, sized for a 2-core CPU and a budget of minutes (``make demo``).

    From SimCLR App. B.9 (CIFAR-10): the CIFAR stem (3x3 conv, no max-pool), colour jitter
    strength s=0.5, no blur, LARS and weight decay 1e-6. For a run of minutes rather than
    hundreds of epochs we take the paper's short-training choices:

    * lr = 0.075 x sqrt(B) (App. B.1: with LARS, square-root scaling does better than linear
      scaling, 0.3 x B/256, for small batches and few epochs);
    * temperature 0.1 (Table 5, the ImageNet default; App. B.9 finds 0.5 best on CIFAR-10 in
      its long runs; on cifar10-mini, in runs of minutes, 0.1 scored above 0.5 and 0.2 in the
      screening behind this preset: BENCHMARKS.md, "Tuning that led to the preset");
    * batch 128 (Sec. 5.2 / Fig. 9: large batches help most in short runs, yet on 5085 images
      batch 128 gives 39 steps per epoch where 1024 would give 4; chapter 06 measures both).

    Departures for the CPU budget: a ResNet-10 at half width instead of a ResNet-50, tens of
    epochs instead of 100-1000, 1 warmup epoch, and a **linear** projection head. SimCLR Sec. 4.2 /
    Fig. 8 compares no head, a linear head and the nonlinear (MLP) head and finds the MLP best
    after 100 epochs on ImageNet; in a run of minutes on cifar10-mini the order reverses: at equal
    steps, kNN on h was 0.468 (MLP), 0.488 (no head) and 0.494 (linear), and chapter 06 measures
    the same at width 0.25 (BENCHMARKS.md). The views are drawn at 24 px and the evaluation
    encodes the 32-px images (``eval_size``): a step is 1.5-2x cheaper, so the same minutes buy
    1.5-2x the steps, and a random crop magnifies objects anyway, so testing at the larger size
    matches the scale training saw (Touvron et al. 2019, "FixRes"). On cifar10-mini at equal
    time this gave kNN +0.011 and +0.028 over 32-px views in two seeds (BENCHMARKS.md). bf16
    autocast is used when the CPU has native bf16 (precision=auto).
    """
    return Config(
        method="simclr",
        dataset="cifar10",
        recipe="simclr_cifar",
        encoder="resnet10",
        width=0.5,
        # see above; SimCLR's own default is the 2-layer MLP, head="simclr_v1"
        options=SimCLROptions(head="linear", temperature=0.1),
        optimizer="lars",
        base_lr=0.075,
        lr_scaling="sqrt",
        weight_decay=1e-6,
        batch_size=128,
        image_size=24,  # views; see above
        eval_size=32,  # kNN / linear evaluation on the images' own 32 px
        epochs=38,  # 4-7 minutes of training on 2 AVX512-BF16 cores, whose speed drifts ~1.7x (BENCHMARKS.md)
        max_steps=1482,  # = 38 epochs of cifar10-mini (39 steps each); on the full 50k CIFAR-10 the same minutes
        time_budget_s=510.0,  # `make demo` <= 10 min even without native bf16 (stops early, says so)
        warmup_epochs=1.0,
        knn_every=5,
        checkpoint_every=100,
    )


@preset("simclr-cifar10")
def simclr_cifar10() -> Config:
    """SimCLR on full CIFAR-10 following App. B.9: ResNet-50 with the CIFAR stem, s=0.5, no blur.

    App. B.9 sweeps batch size {256..4096}, lr {0.5, 1.0, 1.5} and T {0.1, 0.5, 1.0} with LARS
    and reports T=0.5 best; this preset takes batch 1024, lr 1.0, 1000 epochs (their longest).
    For one GPU; check the numbers against your own reading of App. B.9 before a long run.
    """
    return Config(
        method="simclr",
        dataset="cifar10",
        recipe="simclr_cifar",
        encoder="resnet50",
        options=SimCLROptions(head="simclr_v1", temperature=0.5),
        optimizer="lars",
        lr=1.0,  # absolute lr (App. B.9 sweep); not rescaled by the batch size
        weight_decay=1e-6,
        batch_size=1024,
        epochs=1000,
        warmup_epochs=10.0,
        knn_every=10,
        checkpoint_every=500,
    )


@preset("simclr-imagenet-r50")
def simclr_imagenet_r50() -> Config:
    """SimCLR, ResNet-50 on ImageNet-1k, the paper's default setting (Chen et al. 2020, Sec. 2.3, App. B.1).

    Global batch 4096 (split over the GPUs; ``batch_size`` is global), LARS with lr = 0.3 x 4096/256 = 4.8
    and weight decay 1e-6, 10 warmup epochs then cosine decay without restarts, 100 epochs (Sec. 2.3;
    the best rows of Table 6 train 1000 epochs: ``epochs=1000``). T = 0.1 (Table 5: best with l2-normalised
    z at batch 4096; also the official README's ImageNet command). Views of App. A (colour strength 1,
    blur), 2-layer MLP head with BN, z 128-d (Sec. 2.1, B.4). Global BN (Sec. 2.2): the engine converts
    BN to SyncBatchNorm under torchrun, and NT-Xent gathers z with gradient, so the negatives span the
    global batch. For a small batch use ``lr_scaling=sqrt base_lr=0.075`` (App. B.1: lr = 0.075 sqrt(B)).
    """
    return imagenet_r50(
        method="simclr", recipe="simclr_imagenet", options=SimCLROptions(head="simclr_v1", temperature=0.1),
        optimizer="lars", lr=0.0, base_lr=0.3, lr_scaling="linear", weight_decay=1e-6, momentum=0.9,
        warmup_epochs=10.0, batch_size=4096, epochs=100, checkpoint_every=500,
    )
