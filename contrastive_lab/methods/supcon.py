"""Supervised contrastive learning (Khosla et al. 2020, "Supervised Contrastive Learning"): SimCLR's
two views and projection head, with every image of the anchor's class as a positive. Chapter 12
compares it with cross-entropy and with SimCLR, and shrinks the share of labelled images. One step::

    h = f(x)  for both views of N images (one forward pass, 2N views)
    z = normalize(g(h))                            2-layer MLP head, 128-d (Sec. 4)
    L = L_out(z, y; tau)                           Eq. 2: mean over the 2N anchors, positives = same label

``label_share < 1`` keeps the labels of only that share of the training images (a seeded, uniform
subset, fixed for the run); an unlabelled image is its own class, so its only positive is its other
view, as in SimCLR. ``label_share=0`` is SimCLR's NT-Xent exactly (losses/supcon.py shows why).
Under DDP the candidates are the global batch (``losses.supcon_loss(gather=True)``). The
representation kept is h (Sec. 3.1: the projection head is discarded after training).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ..config import Config, imagenet_r50, preset
from ..losses import supcon_loss
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
class SupConOptions(ProjectionOptions):
    """SupCon's settings (Khosla et al. 2020; head fields from :class:`ProjectionOptions`)."""

    temperature: float = 0.1  # Sec. 4: tau = 0.1 (also the official CIFAR commands, --temp 0.1)
    label_share: float = 1.0  # share of training images whose labels are used (0 = SimCLR); not label_fraction,
    #                           which would drop the unlabelled images (classifier runs)

    def validate(self, cfg: Config) -> None:
        super().validate(cfg)
        check_positive(self.temperature, "temperature", " (SupCon: 0.1)")
        if not 0 <= self.label_share <= 1:
            raise ValueError(f"label_share must be in [0, 1] (1 = every label, 0 = SimCLR), got {self.label_share}")


class SupCon(nn.Module):
    """Two views -> f -> g -> L_out with the batch's labels (see the module docstring)."""

    needs_labels = True
    log_keys = ("pos_cos", "positives")

    def __init__(self, encoder: nn.Module, head: nn.Module, temperature: float = 0.1, num_images: int = 0,
                 label_share: float = 1.0, seed: int = 0, gather: bool = True):
        super().__init__()
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        self.encoder, self.head = encoder, head
        self.temperature, self.gather, self.label_share = float(temperature), gather, float(label_share)
        if label_share < 1:
            if num_images < 1:
                raise ValueError("label_share < 1 needs the number of training images (BuildContext.num_images)")
            order = torch.randperm(num_images, generator=torch.Generator().manual_seed(seed))
            labelled = torch.zeros(num_images, dtype=torch.bool)
            labelled[order[: round(label_share * num_images)]] = True
            self.register_buffer("labelled", labelled)  # which dataset indices keep their label

    def training_labels(self, labels: Tensor, index: Tensor) -> Tensor:
        """The labels SupCon sees: the class of a labelled image, ``-1 - index`` (a class of its own) for
        an unlabelled one."""
        if self.label_share >= 1:
            return labels
        keep = self.labelled.to(index.device)[index]
        return torch.where(keep, labels, -1 - index.long())

    def forward(self, batch: Batch) -> tuple[Tensor, dict]:
        if batch.labels is None:
            raise ValueError("SupCon needs the labels of the batch (Batch.labels; the engine passes them because "
                             "SupCon.needs_labels is True)")
        view1, view2 = batch.views
        z = upcast(self.head(self.encoder(torch.cat([view1, view2]))))
        features = torch.stack(z.chunk(2), dim=1)  # (N, 2, D)
        labels = self.training_labels(batch.labels, batch.index)
        loss = supcon_loss(features, labels, self.temperature, gather=self.gather)
        with torch.no_grad():
            same = (labels[:, None] == labels[None, :]).float().sum(1)  # this rank's same-label images, itself too
            logs = {"loss": loss.detach(), "pos_cos": nn.functional.cosine_similarity(*features.unbind(1)).mean(),
                    "positives": 2 * same.mean() - 1}  # positives per anchor within this rank's batch
        return loss, logs


def build_supcon(cfg: Config, ctx: BuildContext) -> SupCon:
    """SupCon from a config: ``cfg.encoder`` as f, the options' head as g."""
    o = cfg.options
    encoder = build_config_encoder(cfg)
    return SupCon(encoder, build_projection(cfg, encoder.feature_dim), o.temperature, ctx.num_images, o.label_share,
                  cfg.seed)


register_method("supcon", SupConOptions, build_supcon, "supervised contrastive learning, L_out (Khosla et al. 2020)")


@preset("supcon-cifar10-cpu")
def supcon_cifar10_cpu() -> Config:
    """SupCon on CIFAR-10 for a 2-core CPU: ``simclr-cifar10-cpu`` with SupCon's loss and labels.

    Everything the two methods share is the SimCLR preset's (ResNet-10 x 0.5 with the CIFAR stem,
    24-px SimCLR views evaluated at 32 px, LARS with lr 0.075 sqrt(B), batch 128, a linear head), so
    chapter 12 compares the positives and nothing else. T = 0.1 (SupCon Sec. 4, and the official
    repo's CIFAR command ``--temp 0.1``). Departures from the paper: its 2-layer MLP head, batch 1024
    (CIFAR, official commands) to 6144, SGD/LARS lr 0.5 and 1000 epochs do not fit a CPU budget; the
    run has 15 epochs.
    """
    base = simclr_cifar10_cpu()
    return base.replace(method="supcon", temperature=0.1, epochs=15, max_steps=0, time_budget_s=0.0)


@preset("supcon-imagenet-r50")
def supcon_imagenet_r50() -> Config:
    """SupCon, ResNet-50 on ImageNet-1k (Khosla et al. 2020, Sec. 4 and App.): T = 0.1, the 2-layer MLP
    projection head to 128-d, normalised, LARS with warmup and cosine decay, a large batch (the paper
    trains with batches up to 6144; 4096 here, SimCLR's ImageNet batch), and several hundred
    pre-training epochs (350 here). The paper's best views are AutoAugment / RandAugment, which this
    library does not have: the views are SimCLR's (the paper's "SimAugment" is SimCLR's colour
    distortion and blur plus a warp). lr by SimCLR's LARS rule, 0.3 x B/256. After pre-training the
    head is dropped and a linear classifier is trained on frozen h (``linear-eval-simclr-imagenet``).
    Check these numbers against the paper's training details before a long run.
    """
    return imagenet_r50(
        method="supcon", recipe="simclr_imagenet", options=SupConOptions(head="simclr_v1", temperature=0.1),
        optimizer="lars", lr=0.0, base_lr=0.3, lr_scaling="linear", weight_decay=1e-6, warmup_epochs=10.0,
        batch_size=4096, epochs=350, checkpoint_every=500,
    )
