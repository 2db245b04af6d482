"""SimSiam (Chen & He 2021, "Exploring Simple Siamese Representation Learning").

Chapter 11 builds it and takes it apart. One encoder, both views, no negatives, no momentum
encoder (Sec. 3, Algorithm 1)::

    z1, z2 = f(x1), f(x2)                      f = backbone + projection MLP (BN on every layer)
    p1, p2 = h(z1), h(z2)                      h = prediction MLP (a bottleneck: 2048 -> 512 -> 2048)
    L = D(p1, stopgrad(z2))/2 + D(p2, stopgrad(z1))/2,   D(p, z) = -cos(p, z)       Eq. 1-4

Without the stop-gradient the same network collapses at once (Sec. 4.1, Fig. 2: the std of the
l2-normalised output falls to 0 and kNN accuracy to chance); without the predictor it collapses
too (Table 1, "no pred": 0.1 %). Sec. 5 reads SimSiam as an alternating (EM-like) optimisation:
the stop-gradient makes z a fixed target for one step, the predictor h learns to map a view to the
expectation of the targets over views. Training the predictor at a fixed lr (``fix_predictor_lr``)
is Table 1's best variant ("lr not decayed", 68.1 vs 67.7 %) and the official code's
``--fix-pred-lr``: the method names its predictor in ``fixed_lr_params`` and the schedule leaves
that group at the base lr (:func:`contrastive_lab.optim.param_groups`).

:class:`SiameseProjector` (Linear-BN-ReLU layers, then a bias-free Linear, optionally followed by
an affine-free BN) is also Barlow Twins' projector.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor, nn

from ..collapse import collapse_logs
from ..config import Config, imagenet_r50, preset
from ..heads import MLPHead, PredictorHead
from ..losses import simsiam_loss
from .base import Batch, BuildContext, build_config_encoder, check_positive, register_method
from .simclr import upcast


class SiameseProjector(MLPHead):
    """``num_layers`` Linear layers in_dim -> hidden -> ... -> out_dim with BN + ReLU between them, the
    last Linear without bias, then (``out_bn``) ``BatchNorm1d(out_dim, affine=False)``.

    SimSiam Sec. 3 ("Baseline settings") / official ``builder.py``: 3 layers, BN on each *including the
    output* (no ReLU there); CIFAR (App. D): 2 layers. Barlow Twins (official ``main.py``): 3 bias-free layers of 8192,
    no output BN (the loss standardises z itself).
    """

    def __init__(self, in_dim: int, hidden_dim: int, out_dim: int, num_layers: int = 3, out_bn: bool = True):
        super().__init__(in_dim, hidden_dim, out_dim, num_layers=num_layers, batch_norm=True, last_bn=False)
        last_in = self.layers[-1].in_features
        self.layers[-1] = nn.Linear(last_in, out_dim, bias=False)  # a bias before BN (or standardising) cancels
        if out_bn:
            self.layers.append(nn.BatchNorm1d(out_dim, affine=False))


@dataclass
class SimSiamOptions:
    """SimSiam's settings (Chen & He 2021; the CPU preset says where it departs, and why)."""

    proj_dim: int = 2048  # Sec. 3, "Baseline settings" (ImageNet): z is 2048-d
    hidden_dim: int = 2048  # Sec. 3: the projection MLP's hidden layers
    proj_layers: int = 3  # Sec. 3: 3 layers on ImageNet (App. D, CIFAR: 2)
    predictor_hidden_dim: int = 512  # Sec. 3: the predictor's bottleneck (2048 -> 512 -> 2048)
    predictor: bool = True  # False: no predictor h (Table 1 "no pred": collapses)
    stop_gradient: bool = True  # False: the collapsing ablation of Sec. 4.1 / Fig. 2
    fix_predictor_lr: bool = True  # Table 1 "lr not decayed" / official --fix-pred-lr

    def validate(self, cfg: Config) -> None:
        for name in ("proj_dim", "hidden_dim", "proj_layers", "predictor_hidden_dim"):
            check_positive(getattr(self, name), name)
        if self.fix_predictor_lr and not self.predictor:
            raise ValueError("fix_predictor_lr=true needs a predictor; pass fix_predictor_lr=false with predictor=false")


class SimSiam(nn.Module):
    """f = encoder + projector, h = predictor, stop-gradient on the targets (module docstring)."""

    log_keys = ("pos_cos", "z_std", "z_rank")

    def __init__(self, encoder: nn.Module, head: nn.Module, predictor: nn.Module, stop_gradient: bool = True,
                 fix_predictor_lr: bool = False) -> None:
        super().__init__()
        self.encoder, self.head, self.predictor = encoder, head, predictor
        self.stop_gradient = bool(stop_gradient)
        self.fixed_lr_params = ("predictor.",) if fix_predictor_lr else ()

    def branch(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """(z, p) = (f(x), h(f(x))) of one view."""
        z = self.head(self.encoder(x))
        return z, self.predictor(z)

    def forward(self, batch: Batch) -> tuple[Tensor, dict]:
        view1, view2 = batch.views
        z1, p1 = self.branch(view1)  # one pass per view, as the official code (BN statistics per view)
        z2, p2 = self.branch(view2)
        z1, z2, p1, p2 = (upcast(x) for x in (z1, z2, p1, p2))
        loss = simsiam_loss(p1, p2, z1, z2, stop_gradient=self.stop_gradient)
        logs = {"loss": loss.detach(), "pos_cos": -loss.detach(), **collapse_logs(z1)}
        return loss, logs


def build_simsiam(cfg: Config, ctx: BuildContext | None = None) -> SimSiam:
    """SimSiam from a config: ``cfg.encoder`` + :class:`SiameseProjector` as f, :class:`PredictorHead` as h."""
    opts = cfg.options
    encoder = build_config_encoder(cfg)
    head = SiameseProjector(encoder.feature_dim, opts.hidden_dim, opts.proj_dim, opts.proj_layers, out_bn=True)
    predictor = PredictorHead(opts.proj_dim, opts.predictor_hidden_dim) if opts.predictor else nn.Identity()
    return SimSiam(encoder, head, predictor, stop_gradient=opts.stop_gradient,
                   fix_predictor_lr=opts.fix_predictor_lr and opts.predictor)


register_method("simsiam", SimSiamOptions, build_simsiam, "SimSiam: predictor + stop-gradient (Chen & He 2021)")


# ----------------------------------------------------------------------------------------
# Presets
# ----------------------------------------------------------------------------------------


@preset("simsiam-cifar10-cpu")
def simsiam_cifar10_cpu() -> Config:
    """SimSiam on CIFAR-10 for a 2-core CPU and the 7-minute budget of ``simclr-cifar10-cpu``.

    SimSiam's CIFAR-10 setting (App. D): a ResNet-18 variant with the CIFAR stem, the 2-layer
    projection MLP, SGD with momentum 0.9, weight decay 5e-4, lr = 0.03 x B/256 (batch 512, 800
    epochs), cosine schedule, no warmup, the predictor at a fixed lr (Sec. 4.2). Departures for the
    CPU budget: simclr-cifar10-cpu's encoder, views (24 px, kNN at 32 px) and batch 128 (SimSiam
    "works with typical batch sizes", Sec. 4.3 / Table 2: 64 to 4096 within 1.5 points), so the
    one-budget table compares the objectives; the projector 256 -> 1024 -> 1024-d and predictor
    bottleneck 256 (the paper's 2048 / 512 scaled with the 256-d h), and tens of epochs.
    """
    return Config(
        method="simsiam",
        dataset="cifar10",
        recipe="simclr_cifar",
        encoder="resnet10",
        width=0.5,
        options=SimSiamOptions(proj_dim=1024, hidden_dim=1024, proj_layers=2, predictor_hidden_dim=256),
        optimizer="sgd",
        base_lr=0.03,
        lr_scaling="linear",
        weight_decay=5e-4,
        momentum=0.9,
        batch_size=128,
        image_size=24,
        eval_size=32,
        epochs=38,
        time_budget_s=510.0,
        warmup_epochs=0.0,
        knn_every=5,
        checkpoint_every=100,
    )


@preset("simsiam-imagenet-r50")
def simsiam_imagenet_r50() -> Config:
    """SimSiam, ResNet-50 on ImageNet-1k (Chen & He 2021, Sec. 3 "Baseline settings").

    SGD, lr = 0.05 x B/256 with B = 512 (lr 0.1), momentum 0.9, weight decay 1e-4, cosine decay, no
    warmup, 100 epochs (67.7 % linear top-1, 68.1 % with the predictor's lr fixed: Table 1); projector
    3 x 2048 with BN on every layer, predictor 2048 -> 512 -> 2048 at a fixed lr; MoCo v2's views (the
    official ``main_simsiam.py`` uses MoCo v2's augmentation: crop (0.2, 1), blur p = 0.5). Under
    torchrun the engine converts BN to SyncBatchNorm (Sec. 3: SyncBN over the paper's 8 GPUs).
    """
    return imagenet_r50(
        method="simsiam", recipe="moco_v2", options=SimSiamOptions(),
        optimizer="sgd", lr=0.0, base_lr=0.05, lr_scaling="linear", weight_decay=1e-4, momentum=0.9,
        warmup_epochs=0.0, batch_size=512, epochs=100,
    )
