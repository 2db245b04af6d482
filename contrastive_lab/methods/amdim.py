"""AMDIM-style local-global InfoNCE (Bachman, Hjelm & Buchwalter 2019, "Learning Representations by
Maximizing Mutual Information Across Views"). Chapter 12 trains it beside SimCLR, CMC and CLIP.

Two views of an image, as in SimCLR, but the positive pairs are (global feature of one view, *local*
feature of the other view at one position)::

    l3, l4, h = f(x)                          the encoder's stage-3 and stage-4 maps and h = avgpool(l4)
    g = g_glob(h)                             the global summary, D-dimensional
    u = g_loc(l3)                             a 1x1-conv head: a D-dimensional feature at every position
    L = (NCE(g^1 -> u^2) + NCE(g^2 -> u^1)) / 2     losses.amdim_nce: every position of the other view
                                                    is a positive, every position of the other images a negative

``multiscale`` adds the same loss to the stage-4 map (AMDIM predicts from the 1x1 global feature to
its 5x5 and 7x7 maps, the "1->5" and "1->7" terms; its third term, "5->5", a local feature of one
view predicting the other view's local features, is left to chapter 12's exercises).

How it relates to the book's other methods: Deep InfoMax (Hjelm et al. 2019) maximises the mutual
information between an image's global feature and its *own* local features; AMDIM takes the two
from *different* views, which makes it a two-view method like SimCLR. CPC (chapter 09) also
contrasts local features, but predicts them from a causal *context* of other patches of the same
view. Negatives are batch-wide (all positions of all other images), gathered over ranks under DDP.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ..config import Config, preset
from ..losses import amdim_nce
from .base import (
    Batch,
    BuildContext,
    ProjectionOptions,
    build_config_encoder,
    build_projection,
    check_positive,
    register_method,
)
from .simclr import simclr_cifar10_cpu, upcast


@dataclass
class AMDIMOptions(ProjectionOptions):
    """AMDIM's settings (the paper and its official code, amdim-public ``costs.py``)."""

    multiscale: bool = False  # also contrast the global feature with the stage-4 map (AMDIM: 1->5 and 1->7)
    score_clip: float = 10.0  # c in c tanh(s / c) (official LossMultiNCE, tclip=10)
    score_penalty: float = 0.05  # lambda of the squared-score penalty (official NCE_MI_MULTI: 5e-2)

    def validate(self, cfg: Config) -> None:
        super().validate(cfg)
        check_positive(self.score_clip, "score_clip", " (AMDIM: 10)")
        if self.score_penalty < 0:
            raise ValueError(f"score_penalty must be >= 0 (AMDIM: 0.05), got {self.score_penalty}")
        if not cfg.encoder.startswith(("resnet", "small")):
            raise ValueError(f"AMDIM reads the stage maps of a ResNet encoder, got encoder={cfg.encoder!r}")


class LocalHead(nn.Module):
    """A D-dimensional feature at every position of a (B, C, H, W) map: a 1x1 conv plus a 1x1-conv MLP
    residual (AMDIM's "NiN" heads), returned as (B, H*W, D)."""

    def __init__(self, in_channels: int, dim: int):
        super().__init__()
        self.linear = nn.Conv2d(in_channels, dim, 1)
        self.mlp = nn.Sequential(nn.Conv2d(in_channels, dim, 1), nn.ReLU(inplace=True), nn.Conv2d(dim, dim, 1))
        self.out_dim = dim

    def forward(self, x: Tensor) -> Tensor:
        return (self.linear(x) + self.mlp(x)).flatten(2).transpose(1, 2)


def resnet_maps(encoder: nn.Module, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """(stage-3 map, stage-4 map, h) of a ResNet (torchvision's or :class:`SmallResNet`): the forward
    pass of ``encoder(x)`` with its two last maps kept; h equals ``encoder(x)``."""
    e = encoder
    x = e.maxpool(e.relu(e.bn1(e.conv1(x))))
    l3 = e.layer3(e.layer2(e.layer1(x)))
    l4 = e.layer4(l3)
    return l3, l4, e.fc(torch.flatten(e.avgpool(l4), 1))


def stage_channels(encoder: nn.Module) -> tuple[int, int]:
    """Channels of the stage-3 and stage-4 maps (the last conv of each stage's last block)."""
    def out_channels(stage: nn.Module) -> int:
        return [m for m in stage.modules() if isinstance(m, nn.Conv2d)][-1].out_channels
    return out_channels(encoder.layer3), out_channels(encoder.layer4)


class AMDIM(nn.Module):
    """Two views -> f -> global and local features -> local-global NCE both ways (module docstring)."""

    log_keys = ("nce_l3", "nce_l4")

    def __init__(self, encoder: nn.Module, head: nn.Module, multiscale: bool = False, score_clip: float = 10.0,
                 score_penalty: float = 0.05, gather: bool = True):
        super().__init__()
        self.encoder, self.head = encoder, head  # head: the global summary g = g_glob(h)
        c3, c4 = stage_channels(encoder)
        self.local_heads = nn.ModuleList([LocalHead(c3, head.out_dim)] + ([LocalHead(c4, head.out_dim)] if multiscale else []))
        self.clip, self.penalty, self.gather = float(score_clip), float(score_penalty), gather

    def forward(self, batch: Batch) -> tuple[Tensor, dict]:
        view1, view2 = batch.views
        l3, l4, h = resnet_maps(self.encoder, torch.cat([view1, view2]))  # one pass: BN sees 2N views
        g1, g2 = upcast(self.head(h)).chunk(2)
        loss, logs = 0, {}
        for name, local_head, maps in zip(("nce_l3", "nce_l4"), self.local_heads, (l3, l4)):
            u1, u2 = upcast(local_head(maps)).chunk(2)
            term = (amdim_nce(g1, u2, self.clip, self.penalty, self.gather)
                    + amdim_nce(g2, u1, self.clip, self.penalty, self.gather)) / 2
            loss, logs[name] = loss + term, term.detach()
        return loss, {"loss": loss.detach(), **logs}


def build_amdim(cfg: Config, ctx: BuildContext | None = None) -> AMDIM:
    """AMDIM from a config: ``cfg.encoder`` as f, the options' head as the global summary."""
    o = cfg.options
    encoder = build_config_encoder(cfg)
    return AMDIM(encoder, build_projection(cfg, encoder.feature_dim), o.multiscale, o.score_clip, o.score_penalty)


register_method("amdim", AMDIMOptions, build_amdim, "AMDIM: global features predict the other view's local ones")


@preset("amdim-cifar10-cpu")
def amdim_cifar10_cpu() -> Config:
    """AMDIM-style local-global InfoNCE on CIFAR-10 for a 2-core CPU: ``simclr-cifar10-cpu`` with the loss
    replaced, so chapter 12 compares the objectives at one budget (ResNet-10 x 0.5, CIFAR stem,
    24-px SimCLR views evaluated at 32 px, LARS, batch 128, 15 epochs).

    AMDIM's own choices kept: raw dot-product scores over sqrt(D), soft-clipped at c = 10, with a
    squared-score penalty of 0.05 (official ``costs.py``); the global feature of one view against the
    stage-3 map of the other (6 x 6 positions for 24-px views, where AMDIM's ImageNet encoder has 5 x 5
    and 7 x 7 maps). Departures: the book's ResNet instead of AMDIM's own wide encoder, a linear
    global head and 128-d features (AMDIM: 1024-2048), AMDIM's Adam replaced by the SimCLR preset's LARS.
    """
    return simclr_cifar10_cpu().replace(method="amdim", epochs=15, max_steps=0, time_budget_s=0.0)
