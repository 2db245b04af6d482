"""Contrastive Multiview Coding (Tian, Krishnan & Isola 2019, "Contrastive Multiview Coding"):
the views of an image are its channels, each encoded by its own network. Chapter 12 trains it.

CMC Sec. 3-4 on images: one random crop (+ flip) is converted to Lab and split into the lightness L
and the colour ab (:mod:`contrastive_lab.views.colorspace`); an encoder f_L sees only L, an encoder
f_ab only ab, and each must recognise the other's view of the same image (losses/cmc.py)::

    v_L, v_ab = split(crop(x))                              one crop, two channel views
    z_L = normalize(g_L(f_L(v_L))), z_ab = normalize(g_ab(f_ab(v_ab)))
    L = L^{L,ab} + L^{ab,L}                                 Eq. 3; more views: core (Eq. 5) or full graph (Eq. 6)

The candidates of each direction are the other view's memory bank (``negatives=bank``: the positive
is image i's bank entry, K shared bank negatives, the bank written with momentum after the step, as
CMC's ``NCEAverage``; chapter 07's :class:`~contrastive_lab.memory.MemoryBank`) or the batch
(``negatives=batch``: the form that is CLIP's loss at a fixed temperature). A third
view ``grad``, the gradient magnitude of L, stands in for the depth of CMC's NYU experiments.

The representation is the concatenation [f_L(L), f_ab(ab)] of an RGB image (CMC evaluates the
concatenated features, Sec. 4.2): :class:`ChannelSplitEncoder` takes the normalised RGB images the
engine's kNN monitor and linear probe feed every method and splits them itself.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ..config import Config, imagenet_r50, preset
from ..encoders import set_input_channels_
from ..losses import cmc_edges, cmc_loss
from ..memory import MemoryBank
from ..momentum import check_momentum
from ..views import get_recipe
from ..views.colorspace import CHANNEL_VIEWS, check_channel_views, split_channels
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
from .moco import unit

NEGATIVES = ("bank", "batch")


@dataclass
class CMCOptions(ProjectionOptions):
    """CMC's settings (Tian et al. 2019 and the official code, HobbitLong/CMC ``train_CMC.py``)."""

    cmc_views: str = "L,ab"  # comma list of channel views: L, ab, grad (Sec. 3.3: L and ab of Lab)
    graph: str = "core"  # core (Eq. 5: every view vs the first) | full (Eq. 6: every pair)
    negatives: str = "bank"  # bank (official code: a memory bank per view) | batch (the batch's other images)
    num_negatives: int = 4096  # K bank negatives per step (official --nce_k, README default 4096)
    bank_momentum: float = 0.5  # bank update v <- m v + (1 - m) z (official --nce_m 0.5)
    temperature: float = 0.07  # official --nce_t: 0.07 on ImageNet, 0.1 on STL-10

    def validate(self, cfg: Config) -> None:
        super().validate(cfg)
        check_channel_views(self.cmc_views.split(","))
        cmc_edges(len(self.cmc_views.split(",")), self.graph)  # checks the graph name
        if self.negatives not in NEGATIVES:
            raise ValueError(f"negatives must be one of {NEGATIVES}, got {self.negatives!r}")
        check_positive(self.temperature, "temperature", " (CMC: 0.07)")
        check_momentum(self.bank_momentum, "bank_momentum")
        if self.num_negatives < 1:
            raise ValueError(f"num_negatives must be >= 1, got {self.num_negatives}")


class ChannelSplitEncoder(nn.Module):
    """Normalised RGB (B, 3, H, W) -> [f_v(view_v)] concatenated, one encoder per channel view.

    ``mean``/``std`` undo the views' normalisation before the Lab conversion, which runs in the
    input's precision with autocast off (bf16 would round L to ~3 digits)."""

    def __init__(self, encoders: list[nn.Module], views: list[str], mean: tuple, std: tuple):
        super().__init__()
        self.views = check_channel_views(views)
        if len(encoders) != len(self.views):
            raise ValueError(f"need one encoder per view ({self.views}), got {len(encoders)}")
        self.encoders = nn.ModuleList(encoders)
        self.dims = [e.feature_dim for e in encoders]
        self.feature_dim = sum(self.dims)
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)

    def split(self, x: Tensor) -> list[Tensor]:
        """The channel views of normalised RGB images (views.colorspace.split_channels)."""
        with torch.autocast(device_type=x.device.type, enabled=False):
            rgb = x * self.std.to(x.dtype) + self.mean.to(x.dtype)
            return split_channels(rgb, self.views)

    def encode_views(self, x: Tensor) -> list[Tensor]:
        """[f_v(view_v)] for every view, each (B, dim_v)."""
        return [encoder(view) for encoder, view in zip(self.encoders, self.split(x))]

    def forward(self, x: Tensor) -> Tensor:
        return torch.cat(self.encode_views(x), dim=1)


class SplitHead(nn.Module):
    """One projection head per view on the concatenated h: z = [normalize(g_v(h_v))] (the kNN monitor's z)."""

    def __init__(self, heads: list[nn.Module], dims: list[int]):
        super().__init__()
        self.heads, self.dims = nn.ModuleList(heads), list(dims)
        self.in_dim, self.out_dim = sum(dims), sum(h.out_dim for h in heads)

    def project(self, hs: list[Tensor]) -> list[Tensor]:
        """[normalize(g_v(h_v))] for per-view features."""
        return [unit(head(h)) for head, h in zip(self.heads, hs)]

    def forward(self, h: Tensor) -> Tensor:
        return torch.cat(self.project(list(h.split(self.dims, dim=1))), dim=1)


class CMC(nn.Module):
    """CMC on the channel views of one crop (see the module docstring)."""

    num_views = 1  # one crop; the views are its channels
    log_keys = ("pos_cos",)

    def __init__(self, encoder: ChannelSplitEncoder, head: SplitHead, temperature: float = 0.07,
                 graph: str = "core", negatives: str = "bank", num_images: int = 0, num_negatives: int = 4096,
                 bank_momentum: float = 0.5, gather: bool = True):
        super().__init__()
        if negatives not in NEGATIVES:
            raise ValueError(f"negatives must be one of {NEGATIVES}, got {negatives!r}")
        self.encoder, self.head = encoder, head
        self.edges = cmc_edges(len(encoder.views), graph)
        self.temperature, self.graph, self.gather = float(temperature), graph, gather
        self.num_negatives = int(num_negatives)
        self.banks = None
        if negatives == "bank":
            if num_negatives >= num_images:
                raise ValueError(f"num_negatives={num_negatives} must be smaller than the {num_images} training "
                                 "images in the memory bank (lower num_negatives, or negatives=batch)")
            self.banks = nn.ModuleList(MemoryBank(num_images, h.out_dim, bank_momentum) for h in head.heads)
        self._pending: list[tuple[Tensor, list[Tensor]]] = []  # (index, z per view), written in after_step

    def forward(self, batch: Batch) -> tuple[Tensor, dict]:
        z = self.head.project(self.encoder.encode_views(batch.views[0]))
        if self.banks is None:
            loss = cmc_loss(z, self.temperature, self.graph, gather=self.gather)
        else:
            negative_index = self.banks[0].sample_shared_negatives(batch.index, self.num_negatives)
            keys = [bank(batch.index) for bank in self.banks]
            negatives = [bank.bank[negative_index] for bank in self.banks]
            loss = cmc_loss(z, self.temperature, self.graph, keys, negatives)
            if self.training:
                self._pending.append((batch.index, [v.detach() for v in z]))
        with torch.no_grad():
            pos = torch.stack([(z[i] * z[j]).sum(1).mean() for i, j in self.edges]).mean()
        return loss, {"loss": loss.detach(), "pos_cos": pos}

    @torch.no_grad()
    def after_step(self, progress: Progress) -> None:
        """Write this step's embeddings into each view's bank (v <- normalize(m v + (1 - m) z))."""
        for index, z in self._pending:
            for bank, z_v in zip(self.banks, z):
                bank.update(index, z_v)
        self._pending.clear()


def build_cmc(cfg: Config, ctx: BuildContext) -> CMC:
    """CMC from a config: one ``cfg.encoder`` per channel view (its conv1 taking that view's channels)
    and one options head per view; the bank (``negatives=bank``) has ``ctx.num_images`` entries."""
    o = cfg.options
    views = check_channel_views(o.cmc_views.split(","))
    encoders = [set_input_channels_(build_config_encoder(cfg), CHANNEL_VIEWS[v]) for v in views]
    recipe = get_recipe(cfg.recipe)
    encoder = ChannelSplitEncoder(encoders, views, recipe.mean, recipe.std)
    head = SplitHead([build_projection(cfg, e.feature_dim) for e in encoders], encoder.dims)
    if o.negatives == "bank" and ctx.num_images < 2:
        raise ValueError("CMC's memory bank needs the number of training images: pass build_method(cfg, "
                         "BuildContext(num_images=len(dataset), ...)) (the engine does), or negatives=batch")
    return CMC(encoder, head, o.temperature, o.graph, o.negatives, ctx.num_images, o.num_negatives, o.bank_momentum)


register_method("cmc", CMCOptions, build_cmc, "Contrastive Multiview Coding: L and ab channels (Tian et al. 2019)")


@preset("cmc-cifar10-cpu")
def cmc_cifar10_cpu() -> Config:
    """CMC on CIFAR-10 for a 2-core CPU: L and ab views of one crop, a ResNet-10 x 0.5 for each.

    From CMC and its official code: views L and ab (Sec. 3.3), random crop of area (0.2, 1) and flip
    as the only augmentation (``train_CMC.py``: RandomResizedCrop(scale=(0.2, 1.)), flip, RGB2Lab),
    linear 128-d embeddings, T = 0.07, a memory bank per view with momentum 0.5 and InfoNCE over the
    bank (the README's "Softmax-CE", better than NCE there), SGD with momentum 0.9 and weight decay
    1e-4. Departures: K = 1024 negatives of the 5085 bank entries (the note in methods/moco.py), two
    ResNet-10 x 0.5 with the CIFAR stem (two half-size networks cost what SimCLR's one network costs on
    its two views), 24-px crops evaluated at 32 px, batch 128, lr 0.06 with cosine decay, 15 epochs.
    """
    return Config(
        method="cmc",
        dataset="cifar10",
        recipe="simclr_cifar",
        view_ops="crop,flip",
        crop_min_scale=0.2,
        encoder="resnet10",
        width=0.5,
        options=CMCOptions(head="linear", proj_dim=128, temperature=0.07, negatives="bank", num_negatives=1024,
                           bank_momentum=0.5),
        optimizer="sgd",
        lr=0.06,
        weight_decay=1e-4,
        momentum=0.9,
        warmup_epochs=0.0,
        batch_size=128,
        image_size=24,
        eval_size=32,
        epochs=15,
        knn_every=5,
        checkpoint_every=100,
    )


@preset("cmc-imagenet-r50")
def cmc_imagenet_r50() -> Config:
    """CMC, L and ab, a ResNet-50 per view on ImageNet-1k (official README: "For ResNets, we use a
    standard ResNet model to encode each view"; ``train_CMC.py``): crop (0.2, 1) + flip, 128-d
    embeddings, a memory bank per view with K = 4096 negatives (README default; later scripts use
    16384), momentum 0.5, T = 0.07, SGD lr 0.03, momentum 0.9, weight decay 1e-4, batch 256, 240
    epochs with the lr x0.1 at epochs 120, 160 and 200. The loss is InfoNCE over the bank (the
    README's Softmax-CE variant), not the paper's NCE."""
    return imagenet_r50(
        method="cmc", recipe="simclr_imagenet", view_ops="crop,flip", crop_min_scale=0.2, lr=0.03,
        weight_decay=1e-4, batch_size=256, epochs=240, lr_schedule="step", lr_milestones="120,160,200",
        options=CMCOptions(head="linear", proj_dim=128, temperature=0.07, negatives="bank", num_negatives=4096,
                           bank_momentum=0.5),
    )
