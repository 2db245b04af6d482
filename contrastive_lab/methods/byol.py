"""BYOL (Grill et al. 2020, "Bootstrap Your Own Latent: A New Approach to Self-Supervised Learning").

Chapter 11 builds it and takes it apart. Two networks, no negatives (Sec. 3.1, Fig. 2)::

    online:  y = f(x),   z = g(y),   p = q(z)         encoder, projector, predictor (trained)
    target:  y' = f'(x'), z' = g'(y')                 an EMA of the online f, g; no gradient
    L = || p/||p|| - z'/||z'|| ||^2 = 2 - 2 cos(p, z')     Eq. 2, for (x, x') and swapped (Eq. 3)
    loss.backward(); optimizer.step()                           (the engine: online weights only)
    xi <- tau xi + (1 - tau) theta                              Sec. 3.1, in after_step
    tau_k = 1 - (1 - tau_base)(cos(pi k / K) + 1) / 2          Sec. 3.2: tau_base = 0.996 -> 1

Why does a constant output not win? Nothing in the loss forbids it; the asymmetry does: the
predictor q sits on the online side only and the target is a slow average that gets no gradient.
Sec. 3.2 / App. I argue that with an optimal predictor the target dynamics do not follow the
gradient of any loss, and Table 5 shows the failure cases: tau = 0 (the target *is* the online
network) gives 0.3 % top-1 after 300 epochs, a collapse. Tian, Chen & Ganguli 2021 ("Understanding
self-supervised learning dynamics without contrastive pairs") derive when the predictor and the
EMA keep the eigen-directions of the embedding alive. ``predictor=False`` and ``momentum_ema=0``
are the ablations chapter 11 trains. The collapse of z is logged at every step (``z_std``,
``z_rank``: :mod:`contrastive_lab.collapse`).

The other methods of chapter 11 share two pieces defined here: :func:`ema_momentum` (the target
EMA's schedule) and :func:`two_view_recipes` (BYOL's asymmetric views T, T').
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ..collapse import collapse_logs
from ..config import Config, imagenet_r50, preset
from ..heads import PredictorHead
from ..losses import byol_loss
from ..momentum import EMA_SCHEDULES, check_momentum, ema_momentum, momentum_copy, momentum_update_
from ..views import ViewRecipe
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


def two_view_recipes(recipe: ViewRecipe, asymmetric: bool) -> list[ViewRecipe]:
    """The recipes of BYOL's two views: the config's recipe twice, or with ``asymmetric`` its T and T'
    (Table 6: blur p = 1.0 for the first view, 0.1 for the second; solarization is not implemented)."""
    if not asymmetric:
        return [recipe, recipe]
    return [dataclasses.replace(recipe, blur_p=1.0), dataclasses.replace(recipe, blur_p=0.1)]


@dataclass
class BYOLOptions(ProjectionOptions):
    """BYOL's settings (Grill et al. 2020; the CPU preset says where it departs, and why)."""

    head: str = "mlp"  # projector g (Sec. 3.3): Linear -> BN -> ReLU -> Linear
    proj_dim: int = 256  # Sec. 3.3: z is 256-d
    hidden_dim: int = 4096  # Sec. 3.3: the projector's hidden layer has 4096 units
    predictor_hidden_dim: int = 4096  # Sec. 3.3: q has the projector's architecture
    predictor: bool = True  # False: no predictor q (the collapsing ablation, chapter 11)
    momentum_ema: float = 0.996  # tau_base (Sec. 3.2)
    ema_schedule: str = "cosine"  # Sec. 3.2: tau rises from tau_base to 1 | constant
    asymmetric_views: bool = False  # Table 6: blur 1.0 on view 1, 0.1 on view 2 (ImageNet presets)

    def validate(self, cfg: Config) -> None:
        super().validate(cfg)
        check_positive(self.predictor_hidden_dim, "predictor_hidden_dim", " (BYOL: 4096)")
        check_momentum(self.momentum_ema, "momentum_ema")
        if self.ema_schedule not in EMA_SCHEDULES:
            raise ValueError(f"ema_schedule must be one of {EMA_SCHEDULES}, got {self.ema_schedule!r}")
        if self.head == "identity":
            raise ValueError("BYOL needs a projector g (head=mlp, Sec. 3.3); head=identity has no z to predict")


class BYOL(nn.Module):
    """Online f, g, q and the EMA target f', g' (see the module docstring)."""

    log_keys = ("pos_cos", "z_std", "z_rank", "ema_m")

    def __init__(self, encoder: nn.Module, head: nn.Module, predictor: nn.Module, momentum: float = 0.996,
                 ema_schedule: str = "cosine", total_steps: int = 1,
                 view_recipes: list[ViewRecipe] | None = None) -> None:
        super().__init__()
        self.momentum = check_momentum(momentum, "momentum_ema")
        ema_momentum(0, max(total_steps, 1), self.momentum, ema_schedule)  # validates the schedule
        self.encoder, self.head, self.predictor = encoder, head, predictor
        self.target_encoder, self.target_head = momentum_copy(encoder), momentum_copy(head)
        self.register_buffer("step", torch.zeros((), dtype=torch.long))  # optimizer steps (EMA updates) so far
        self.ema_schedule, self.total_steps = ema_schedule, max(int(total_steps), 1)
        self.view_recipes = list(view_recipes or [])

    def current_momentum(self) -> float:
        """tau of the next EMA update (after optimizer step ``self.step + 1``)."""
        return ema_momentum(int(self.step), self.total_steps, self.momentum, self.ema_schedule)

    def online(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """(z, p) = (g(f(x)), q(g(f(x)))) of one view, with gradient."""
        z = self.head(self.encoder(x))
        return z, self.predictor(z)

    @torch.no_grad()
    def target(self, x: Tensor) -> Tensor:
        """z' = g'(f'(x)) of one view, without gradient (the target network)."""
        return self.target_head(self.target_encoder(x))

    def forward(self, batch: Batch) -> tuple[Tensor, dict]:
        view1, view2 = batch.views
        z1, p1 = self.online(view1)  # each view its own pass (BN statistics per view, as the official code)
        z2, p2 = self.online(view2)
        t1, t2 = self.target(view1), self.target(view2)
        p1, p2, t1, t2 = (upcast(x) for x in (p1, p2, t1, t2))
        loss = byol_loss(p1, t2) + byol_loss(p2, t1)  # Eq. 3: L + L~
        with torch.no_grad():
            pos = nn.functional.cosine_similarity(p1, t2).mean()
            logs = {"loss": loss.detach(), "pos_cos": pos, **collapse_logs(upcast(z1)),
                    "ema_m": torch.tensor(self.current_momentum())}
        return loss, logs

    @torch.no_grad()
    def after_step(self, progress: Progress) -> None:
        """xi <- tau xi + (1 - tau) theta for the target's f' and g' (after the optimizer step)."""
        self.total_steps = max(progress.total_steps, 1)
        m = ema_momentum(progress.step - 1, self.total_steps, self.momentum, self.ema_schedule)
        momentum_update_(self.target_encoder, self.encoder, m)
        momentum_update_(self.target_head, self.head, m)
        self.step.fill_(progress.step)


def build_byol(cfg: Config, ctx: BuildContext) -> BYOL:
    """BYOL from a config: ``cfg.encoder`` as f, the options' projector g and predictor q."""
    opts = cfg.options
    encoder = build_config_encoder(cfg)
    head = build_projection(cfg, encoder.feature_dim)
    predictor = PredictorHead(head.out_dim, opts.predictor_hidden_dim) if opts.predictor else nn.Identity()
    recipes = two_view_recipes(ctx.recipe, opts.asymmetric_views) if ctx.recipe is not None else None
    return BYOL(encoder, head, predictor, momentum=opts.momentum_ema, ema_schedule=opts.ema_schedule,
                total_steps=ctx.total_steps, view_recipes=recipes)


register_method("byol", BYOLOptions, build_byol, "BYOL: online + predictor vs an EMA target (Grill et al. 2020)")


# ----------------------------------------------------------------------------------------
# Presets
# ----------------------------------------------------------------------------------------


@preset("byol-cifar10-cpu")
def byol_cifar10_cpu() -> Config:
    """BYOL on CIFAR-10 for a 2-core CPU and the 7-minute budget of ``simclr-cifar10-cpu``.

    The encoder, views and evaluation are simclr-cifar10-cpu's (ResNet-10 at half width with the CIFAR
    stem, ``simclr_cifar`` views at 24 px, kNN on the 32-px images, batch 128, bf16 where native), so
    the one-budget table (chapter 11) compares the objectives. BYOL's own parts at CPU scale:

    * projector and predictor as Sec. 3.3 (Linear -> BN -> ReLU -> Linear) with hidden 1024 and
      z 128-d instead of 4096 and 256 (the encoder's h is 256-d, not 2048);
    * tau_base = 0.99 instead of 0.996, with the cosine schedule to 1 (Sec. 3.2): the EMA averages
      over ~1/(1 - tau) steps, 250 for 0.996, a quarter of a run of ~1000 steps (MoCo's CIFAR-10
      demo uses 0.99 for the same reason);
    * LARS with SimCLR's small-batch rule lr = 0.075 sqrt(B) (App. B.1) and weight decay 1.5e-6
      (BYOL App. C: LARS, wd 1.5e-6, biases and BN excluded; its lr 0.2 x B/256 is for batch 4096),
      1 warmup epoch;
    * 31 epochs (1209 steps) instead of SimCLR's 38: a BYOL step cost 1.23x a SimCLR step on this
      machine (the target's forward and the predictor; 886 vs 722 ms on a loaded 2-core CPU), so
      the schedule is cut to fit the same minutes; time_budget_s as SimCLR's.
    """
    return Config(
        method="byol",
        dataset="cifar10",
        recipe="simclr_cifar",
        encoder="resnet10",
        width=0.5,
        options=BYOLOptions(head="mlp", proj_dim=128, hidden_dim=1024, predictor_hidden_dim=1024, momentum_ema=0.99),
        optimizer="lars",
        base_lr=0.075,
        lr_scaling="sqrt",
        weight_decay=1.5e-6,
        batch_size=128,
        image_size=24,
        eval_size=32,
        epochs=31,
        time_budget_s=510.0,
        warmup_epochs=1.0,
        knn_every=5,
        checkpoint_every=100,
    )


@preset("byol-imagenet-r50")
def byol_imagenet_r50() -> Config:
    """BYOL, ResNet-50 on ImageNet-1k (Grill et al. 2020, Sec. 3.3 and App. C).

    Projector and predictor 2048 -> 4096 -> 256 (Sec. 3.3); LARS, lr = 0.2 x B/256 with B = 4096
    (lr 3.2), weight decay 1.5e-6, biases and BN excluded from both, 10 warmup epochs then cosine,
    1000 epochs; tau_base = 0.996 with the cosine schedule (Sec. 3.2); the views T and T' of Table 6
    (recipe ``byol``, blur 1.0 / 0.1, ``asymmetric_views``). Departures: no solarization in T' (the
    views module has none); the engine turns BN into SyncBatchNorm under torchrun, so the batch
    statistics span the global batch as BYOL's TPU code does.
    """
    return imagenet_r50(
        method="byol", recipe="byol", options=BYOLOptions(asymmetric_views=True),
        optimizer="lars", lr=0.0, base_lr=0.2, lr_scaling="linear", weight_decay=1.5e-6, momentum=0.9,
        warmup_epochs=10.0, batch_size=4096, epochs=1000, checkpoint_every=500,
    )
