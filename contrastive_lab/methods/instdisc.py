"""Instance discrimination with a memory bank (Wu et al. 2018, "Unsupervised Feature Learning via
Non-Parametric Instance Discrimination", Sec. 3). Chapter 07 teaches it beside MoCo's queue.

Every training image is its own class; the class "weights" are the memory bank entries v_i
(:class:`~contrastive_lab.memory.MemoryBank`). One step::

    f = normalize(g(f(x_i)))                 one augmented view per image
    positive v_i, negatives v'_1..v'_K from the bank (no gradient)
    loss = NCE (Eq. 4-7, Z fixed after the first batch)   or   InfoNCE (MoCo's Eq. 1)
         + lambda ||f_i - v_i||^2             (proximal term, Sec. 3.3; lambda = 0: off)
    v_i <- normalize(m v_i + (1 - m) f_i)     after the step (m = 0.5 in the official code)

With ``loss="nce"`` each sample gets its own K noise entries (as the official ``NCEAverage``);
with ``loss="infonce"`` one set of K entries is shared by the batch (like MoCo's queue, the form
MoCo's Fig. 3 compares), drawn from the images not in the batch. Needs the dataset ``index``
the engine passes with every batch.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ..config import Config, imagenet_r50, preset
from ..losses import NCEMemoryBankLoss, info_nce
from ..memory import MemoryBank
from ..momentum import check_momentum
from .base import Batch, BuildContext, Progress, ProjectionOptions, check_positive, register_method
from .moco import encoder_and_head, moco_v1_cifar10_cpu, unit

BANK_LOSSES = ("nce", "infonce")


@dataclass
class InstDiscOptions(ProjectionOptions):
    """Wu et al. 2018's settings (Sec. 3-4 and the official code)."""

    temperature: float = 0.07  # Wu et al. 2018 Sec. 4: tau = 0.07
    num_negatives: int = 4096  # K bank negatives per positive (Wu et al. 2018, Sec. 4)
    bank_momentum: float = 0.5  # v <- normalize(m v + (1-m) f) (official code, --nce-m)
    bank_loss: str = "nce"  # nce (Wu et al. Eq. 6) | infonce (MoCo Eq. 1 on bank negatives)
    proximal: float = 0.0  # proximal term lambda ||f_i - v_i||^2 (Wu et al. Sec. 3.3); 0 = off
    bn_splits: int = 1  # >1: split ("ghost") BN simulating this many GPUs (as the MoCo presets)

    def validate(self, cfg: Config) -> None:
        super().validate(cfg)
        check_positive(self.temperature, "temperature", " (Wu et al. 2018: 0.07)")
        check_momentum(self.bank_momentum, "bank_momentum")
        if self.bank_loss not in BANK_LOSSES:
            raise ValueError(f"bank_loss must be one of {BANK_LOSSES}, got {self.bank_loss!r}")
        if self.proximal < 0 or self.num_negatives < 1 or self.bn_splits < 1:
            raise ValueError(f"need proximal >= 0, num_negatives >= 1, bn_splits >= 1; got {self.proximal}, "
                             f"{self.num_negatives}, {self.bn_splits}")


class InstDisc(nn.Module):
    """Instance discrimination with a memory bank (see the module docstring)."""

    log_keys = ("pos_cos", "neg_cos")
    num_views = 1  # one augmented view per image (Wu et al. Sec. 3)

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
        self._pending: list[tuple[Tensor, Tensor]] = []  # (index, f) of this step, written in after_step

    def forward(self, batch: Batch) -> tuple[Tensor, dict]:
        index = batch.index
        if index is None:
            raise ValueError("InstDisc needs the dataset indices of the batch (Batch.index) to find its bank entries")
        f = unit(self.head(self.encoder(batch.views[0])))
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
            self._pending.append((index, f.detach()))
        return loss, logs

    @torch.no_grad()
    def after_step(self, progress: Progress) -> None:
        """Write this step's features into the bank: v_i <- normalize(m v_i + (1-m) f_i) (Sec. 3.2)."""
        for index, f in self._pending:
            self.bank.update(index, f)
        self._pending.clear()


def build_instdisc(cfg: Config, ctx: BuildContext) -> InstDisc:
    """InstDisc from a config; the bank gets one entry per training image (``ctx.num_images``)."""
    opts = cfg.options
    if ctx.num_images < 1:
        raise ValueError("InstDisc's memory bank needs the number of training images: pass "
                         "build_method(cfg, BuildContext(num_images=len(dataset), ...)) (the engine does)")
    encoder, head = encoder_and_head(cfg)
    return InstDisc(
        encoder, head, dataset_size=ctx.num_images, num_negatives=opts.num_negatives,
        temperature=opts.temperature, bank_momentum=opts.bank_momentum, loss=opts.bank_loss,
        proximal=opts.proximal,
    )


register_method("instdisc", InstDiscOptions, build_instdisc,
                "instance discrimination with a memory bank and NCE (Wu et al. 2018)")


@preset("instdisc-cifar10-cpu")
def instdisc_cifar10_cpu() -> Config:
    """Instance discrimination with a memory bank (Wu et al. 2018) on CIFAR-10 for a 2-core CPU.

    Wu et al. Sec. 3-4 and the official code: linear 128-d head, T = 0.07, NCE with K noise entries
    per sample, bank momentum 0.5, SGD with a step schedule. Views as MoCo v1 (which took them from
    this paper). CPU sizes as :func:`moco_v1_cifar10_cpu` (ResNet-10 x 0.5, batch 256, split BN,
    K = 1024 of the 5085 bank entries, lr 0.06, wd 5e-4, 15 epochs, lr x0.1 at epochs 9 and 12).
    """
    return moco_v1_cifar10_cpu().replace(method="instdisc", num_negatives=1024, bank_momentum=0.5)


@preset("instdisc-imagenet-r50")
def instdisc_imagenet_r50() -> Config:
    """InstDisc, ResNet-50 on ImageNet-1k (Wu et al. 2018, Sec. 4): 128-d features, T = 0.07, NCE with
    4096 noise samples, memory momentum 0.5 (official code), SGD lr 0.03, batch 256, 200 epochs,
    weight decay 1e-4 (the official script's default), lr x0.1 every 40 epochs after the first 120."""
    return imagenet_r50(method="instdisc", recipe="moco_v1", lr_schedule="step", lr_milestones="120,160",
                        options=InstDiscOptions(head="linear", temperature=0.07, num_negatives=4096,
                                                bank_momentum=0.5, bank_loss="nce"))
