"""DINO (Caron et al. 2021, "Emerging Properties in Self-Supervised Vision Transformers"): self-
distillation with no labels, here on the book's ResNets.

Chapter 11 builds it and takes it apart. A student and a teacher of the same architecture (Sec. 3.1,
Algorithm 1)::

    student: P_s(x) = softmax(g_s(x) / tau_s)                  every view (2 global + N local crops)
    teacher: P_t(x) = softmax((g_t(x) - c) / tau_t)            the 2 global views, no gradient
    L = mean over pairs x != x' of H(P_t(x), P_s(x'))           Eq. 2-3 (losses.dino_loss)
    loss.backward(); optimizer.step()                           (the engine: student only)
    theta_t <- l theta_t + (1 - l) theta_s                      EMA, l: 0.996 -> 1 (cosine)  } after_step
    c <- m c + (1 - m) mean_i g_t(x_i)                          Eq. 4, over the global batch  }

g = encoder -> :class:`DINOHead` (MLP, l2-normalised 256-d bottleneck z) -> :class:`Prototypes`
(K weight-normalised prototypes: the scores are cosines). Collapse is avoided by balancing two
opposite pressures (Sec. 3.1 and 5.3, Fig. 7): *centering* (subtracting c) stops one prototype
from dominating but pushes P_t towards uniform; *sharpening* (tau_t small) does the opposite.
With centering alone the teacher's entropy rises to log K (uniform collapse); with sharpening alone
it falls to 0 (one prototype wins); both cases end with KL(P_t || P_s) = 0. The logs show all three
(``teacher_entropy``, ``kl``, plus ``z_std``/``z_rank`` of z): chapter 11 trains the ablations
(``centering=false``; "no sharpening" = a teacher temperature equal to the student's).

The teacher's temperature warms up from 0.04 to 0.07 over the first epochs, per epoch as the
official ``DINOLoss.teacher_temp_schedule`` (:func:`teacher_temperature`). The prototypes get no
update during the first ``freeze_last_layer_epochs`` (``cancel_gradients_last_layer``): their
gradient is zero then (a zero gradient, not none, so DDP's reducer still sees them). Multi-crop
views come from ``view_recipes`` (the engine draws one batched view per recipe).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..collapse import collapse_logs
from ..config import Config, imagenet_r50, preset
from ..distributed import mean_over_all_rows
from ..losses import dino_loss, teacher_probabilities
from ..momentum import EMA_SCHEDULES, check_momentum, ema_momentum, momentum_copy, momentum_update_
from ..views import ViewRecipe, get_recipe
from .base import Batch, BuildContext, Progress, build_config_encoder, check_positive, register_method
from .byol import two_view_recipes
from .simclr import upcast


def teacher_temperature(epoch: int, warmup_epochs: int, start: float, end: float) -> float:
    """tau_t of epoch ``epoch``: ``np.linspace(start, end, warmup_epochs)[epoch]`` during the warmup,
    then ``end`` (official ``DINOLoss.teacher_temp_schedule``; Sec. 4 "Implementation details":
    0.04 -> 0.07 over the first 30 epochs)."""
    if epoch < 0 or warmup_epochs < 0 or not (start > 0 and end > 0):
        raise ValueError(f"epoch and warmup_epochs must be >= 0 and the temperatures > 0, got {epoch}, "
                         f"{warmup_epochs}, {start}, {end}")
    if epoch >= warmup_epochs:
        return end
    return start if warmup_epochs == 1 else start + (end - start) * epoch / (warmup_epochs - 1)


def scale_gradient(x: Tensor, scale: float) -> Tensor:
    """x in the forward pass, ``scale * grad`` in the backward (0: a zero gradient, the frozen last layer)."""
    return x if scale == 1.0 else x.detach() + scale * (x - x.detach())


class DINOHead(nn.Module):
    """The projection head: ``num_layers`` Linear layers in_dim -> hidden -> ... -> bottleneck with GELU
    (and BN if ``batch_norm``) between them, then l2 normalisation (official ``DINOHead``; weights
    trunc-normal with std 0.02, biases 0). ``out_dim`` is the bottleneck's size: z lives there."""

    def __init__(self, in_dim: int, hidden_dim: int = 2048, bottleneck_dim: int = 256, num_layers: int = 3,
                 batch_norm: bool = False) -> None:
        super().__init__()
        dims = [in_dim] + [hidden_dim] * (num_layers - 1) + [bottleneck_dim]
        layers: list[nn.Module] = []
        for i in range(num_layers):
            layers.append(nn.Linear(dims[i], dims[i + 1]))
            if i < num_layers - 1:
                layers += [nn.BatchNorm1d(dims[i + 1])] if batch_norm else []
                layers.append(nn.GELU())
        self.mlp = nn.Sequential(*layers)
        for m in self.mlp:
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)
        self.in_dim, self.out_dim = in_dim, bottleneck_dim

    def forward(self, h: Tensor) -> Tensor:
        """z = normalize(mlp(h)), (N, bottleneck)."""
        return F.normalize(self.mlp(h), dim=-1)


class Prototypes(nn.Module):
    """K prototypes w_k with their norm fixed to 1 (DINO's weight-normalised last layer with
    ``norm_last_layer=True``): scores_k = z . w_k / ||w_k||, cosines for a unit z."""

    def __init__(self, dim: int, count: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(nn.Linear(dim, count, bias=False).weight.detach().clone())

    def forward(self, z: Tensor, grad_scale: float = 1.0) -> Tensor:
        """(N, K) cosines, in float32 (float64 for float64 weights) even under autocast: tau_t = 0.04
        divides them, and bf16's 3 digits would blur the teacher's target."""
        w = scale_gradient(self.weight, grad_scale)
        with torch.autocast(device_type=z.device.type, enabled=False):
            return upcast(z).to(w.dtype) @ F.normalize(w, dim=1).T


@dataclass
class DINOOptions:
    """DINO's settings (Caron et al. 2021 and the official main_dino.py; the CPU preset departs, and says why)."""

    out_dim: int = 65536  # K prototypes (main_dino.py --out_dim)
    hidden_dim: int = 2048  # DINOHead's hidden layers
    bottleneck_dim: int = 256  # DINOHead's bottleneck: z
    head_layers: int = 3  # DINOHead nlayers
    head_bn: bool = False  # --use_bn_in_head
    student_temperature: float = 0.1  # tau_s (Sec. 4 "Implementation details")
    teacher_temperature: float = 0.07  # tau_t after the warmup (Sec. 4; README "boosting DINO": 0.07)
    warmup_teacher_temperature: float = 0.04  # tau_t at the start (Sec. 4)
    warmup_teacher_epochs: int = 30  # Sec. 4: linear warmup over the first 30 epochs
    centering: bool = True  # False: the ablation of Sec. 5.3 / Fig. 7 (collapse to one prototype)
    center_momentum: float = 0.9  # m of Eq. 4 (DINOLoss center_momentum)
    momentum_ema: float = 0.996  # teacher EMA lambda at the start (Sec. 4), cosine to 1
    ema_schedule: str = "cosine"  # cosine | constant
    local_crops: int = 8  # --local_crops_number (multi-crop, Sec. 3.1)
    local_size: int = 96  # side of a local crop (Sec. 3.1: 96^2)
    global_scale_min: float = 0.4  # --global_crops_scale (0.4, 1); ResNet-50 README: 0.14
    local_scale_min: float = 0.05  # --local_crops_scale (0.05, 0.4)
    local_scale_max: float = 0.4  # ResNet-50 README: 0.14
    freeze_last_layer_epochs: int = 1  # --freeze_last_layer
    asymmetric_views: bool = False  # global views blurred 1.0 / 0.1 (DataAugmentationDINO), locals 0.5

    def validate(self, cfg: Config) -> None:
        for name in ("out_dim", "hidden_dim", "bottleneck_dim", "head_layers", "student_temperature",
                     "teacher_temperature", "warmup_teacher_temperature", "local_size"):
            check_positive(getattr(self, name), name)
        for name in ("local_crops", "warmup_teacher_epochs", "freeze_last_layer_epochs"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        check_momentum(self.center_momentum, "center_momentum")
        check_momentum(self.momentum_ema, "momentum_ema")
        if self.ema_schedule not in EMA_SCHEDULES:
            raise ValueError(f"ema_schedule must be one of {EMA_SCHEDULES}, got {self.ema_schedule!r}")
        if not 0 < self.local_scale_min <= self.local_scale_max <= 1 or not 0 < self.global_scale_min <= 1:
            raise ValueError("crop scales must satisfy 0 < local_scale_min <= local_scale_max <= 1 and "
                             f"0 < global_scale_min <= 1, got {self.local_scale_min}, {self.local_scale_max}, "
                             f"{self.global_scale_min}")


def dino_recipes(recipe: ViewRecipe, opts: DINOOptions) -> list[ViewRecipe]:
    """2 global views (crop area ~ U(global_scale_min, 1)) and ``local_crops`` local ones
    (``local_size`` px, area ~ U(local_scale_min, local_scale_max)), as ``DataAugmentationDINO``."""
    wide = dataclasses.replace(recipe, crop_scale=(opts.global_scale_min, 1.0))
    local = dataclasses.replace(recipe, size=opts.local_size, crop_scale=(opts.local_scale_min, opts.local_scale_max),
                                blur_p=0.5 if opts.asymmetric_views else recipe.blur_p)
    return two_view_recipes(wide, opts.asymmetric_views) + [local] * opts.local_crops


class DINO(nn.Module):
    """Student (encoder, head, prototypes) and its EMA teacher, with the centre c (module docstring)."""

    log_keys = ("teacher_entropy", "kl", "z_std", "z_rank", "tau_t", "ema_m")

    def __init__(self, encoder: nn.Module, head: DINOHead, prototypes: Prototypes, opts: DINOOptions,
                 steps_per_epoch: int = 1, total_steps: int = 1, view_recipes: list[ViewRecipe] | None = None):
        super().__init__()
        self.encoder, self.head, self.prototypes = encoder, head, prototypes
        self.teacher_encoder, self.teacher_head = momentum_copy(encoder), momentum_copy(head)
        self.teacher_prototypes = momentum_copy(prototypes)
        self.register_buffer("center", torch.zeros(prototypes.weight.shape[0]))
        self.register_buffer("step", torch.zeros((), dtype=torch.long))  # optimizer steps so far
        self.opts, self.view_recipes = opts, list(view_recipes or [])
        self.steps_per_epoch, self.total_steps = max(int(steps_per_epoch), 1), max(int(total_steps), 1)
        self._pending: list[Tensor] = []  # this step's teacher batch means, for the centre (after_step)

    @property
    def epoch(self) -> int:
        return int(self.step) // self.steps_per_epoch

    def current_teacher_temperature(self) -> float:
        o = self.opts
        return teacher_temperature(self.epoch, o.warmup_teacher_epochs, o.warmup_teacher_temperature,
                                   o.teacher_temperature)

    def current_momentum(self) -> float:
        return ema_momentum(int(self.step), self.total_steps, self.opts.momentum_ema, self.opts.ema_schedule)

    def student(self, views: list[Tensor]) -> tuple[Tensor, Tensor]:
        """(scores (V, N, K), z of the first global view): one pass per resolution (``MultiCropWrapper``)."""
        n, scale = views[0].shape[0], 0.0 if self.epoch < self.opts.freeze_last_layer_epochs else 1.0
        z = [self.head(self.encoder(torch.cat(views[:2])))]
        if len(views) > 2:
            z.append(self.head(self.encoder(torch.cat(views[2:]))))
        z = upcast(torch.cat(z))
        return upcast(self.prototypes(z, grad_scale=scale)).view(len(views), n, -1), z[:n]

    @torch.no_grad()
    def teacher(self, globals_: list[Tensor]) -> Tensor:
        """Teacher scores of the global views, (2, N, K), without gradient."""
        z = self.teacher_head(self.teacher_encoder(torch.cat(globals_)))
        return upcast(self.teacher_prototypes(z)).view(len(globals_), globals_[0].shape[0], -1)

    def forward(self, batch: Batch) -> tuple[Tensor, dict]:
        if len(batch.views) < 2:
            raise ValueError(f"DINO needs at least the 2 global views, got {len(batch.views)}")
        scores, z = self.student(batch.views)
        t = self.teacher(batch.views[:2])
        tau_t = self.current_teacher_temperature()
        loss = dino_loss(scores, t, self.center, self.opts.student_temperature, tau_t)
        with torch.no_grad():
            p_t = teacher_probabilities(t, self.center, tau_t)
            entropy = -(p_t * torch.log(p_t.clamp_min(1e-30))).sum(-1).mean()
            logs = {"loss": loss.detach(), "teacher_entropy": entropy, "kl": loss.detach() - entropy,
                    **collapse_logs(z), "tau_t": torch.tensor(tau_t), "ema_m": torch.tensor(self.current_momentum())}
        if self.training and self.opts.centering:
            self._pending.append(t.flatten(0, 1).mean(0))
        return loss, logs

    @torch.no_grad()
    def after_step(self, progress: Progress) -> None:
        """The teacher's EMA update, then c <- m c + (1 - m) (this step's global batch mean) (Eq. 4)."""
        self.total_steps, self.steps_per_epoch = max(progress.total_steps, 1), max(progress.steps_per_epoch, 1)
        m = ema_momentum(progress.step - 1, self.total_steps, self.opts.momentum_ema, self.opts.ema_schedule)
        for teacher, student in ((self.teacher_encoder, self.encoder), (self.teacher_head, self.head),
                                 (self.teacher_prototypes, self.prototypes)):
            momentum_update_(teacher, student, m)
        if self._pending:
            batch_center = mean_over_all_rows(torch.stack(self._pending))  # over micro-batches and ranks
            cm = self.opts.center_momentum
            self.center.mul_(cm).add_(batch_center.to(self.center.dtype), alpha=1.0 - cm)
            self._pending.clear()
        self.step.fill_(progress.step)


def build_dino(cfg: Config, ctx: BuildContext) -> DINO:
    """DINO from a config: ``cfg.encoder``, the head and prototypes of the options, multi-crop views."""
    opts = cfg.options
    encoder = build_config_encoder(cfg)
    head = DINOHead(encoder.feature_dim, opts.hidden_dim, opts.bottleneck_dim, opts.head_layers, opts.head_bn)
    recipe = ctx.recipe or get_recipe(cfg.recipe, size=cfg.image_size)
    return DINO(encoder, head, Prototypes(opts.bottleneck_dim, opts.out_dim), opts, ctx.steps_per_epoch,
                ctx.total_steps, dino_recipes(recipe, opts))


register_method("dino", DINOOptions, build_dino, "DINO: self-distillation, centering + sharpening (Caron et al. 2021)")


# ----------------------------------------------------------------------------------------
# Presets
# ----------------------------------------------------------------------------------------


@preset("dino-cifar10-cpu")
def dino_cifar10_cpu() -> Config:
    """DINO on CIFAR-10 for a 2-core CPU and the 7-minute budget of ``simclr-cifar10-cpu``.

    simclr-cifar10-cpu's encoder, views (global crops 24 px, kNN at 32 px) and batch 128, so the
    one-budget table compares the objectives. DINO's parts at CPU scale: K = 4096 prototypes
    (65536 is for ImageNet's 1.28M images; cifar10-mini has 5085), head 256 -> 1024 -> 1024 -> 256-d
    z; 2 global crops (area 0.14-1, the ResNet-50 README's setting) and 4 local crops of 12 px (area
    0.05-0.14; 96/224 of the side as in the paper would be 10 px); tau_s = 0.1 and tau_t warmed up
    0.04 -> 0.07 over the first 30 % of the epochs (the paper's 30 of 100); teacher momentum 0.99 ->
    1 (a run of ~1000 steps; see byol-cifar10-cpu); the prototypes frozen for the first epoch. SGD
    as the README's ResNet-50 command (lr 0.03 x B/256, wd 1e-4), 1 warmup epoch, gradients clipped at
    3 (main_dino.py --clip_grad). 20 epochs (780 steps) instead of SimCLR's 38: with the local crops
    and the teacher a DINO step cost 1.87x a SimCLR step on this machine (1348 vs 722 ms, loaded).
    """
    return Config(
        method="dino",
        dataset="cifar10",
        recipe="simclr_cifar",
        encoder="resnet10",
        width=0.5,
        options=DINOOptions(out_dim=4096, hidden_dim=1024, bottleneck_dim=256, momentum_ema=0.99,
                            warmup_teacher_epochs=6, local_crops=4, local_size=12, global_scale_min=0.14,
                            local_scale_min=0.05, local_scale_max=0.14),
        optimizer="sgd",
        base_lr=0.03,
        lr_scaling="linear",
        weight_decay=1e-4,
        momentum=0.9,
        grad_clip=3.0,
        batch_size=128,
        image_size=24,
        eval_size=32,
        epochs=20,
        time_budget_s=510.0,
        warmup_epochs=1.0,
        knn_every=5,
        checkpoint_every=100,
    )


@preset("dino-imagenet-r50")
def dino_imagenet_r50() -> Config:
    """DINO, ResNet-50 on ImageNet-1k: the official README's ResNet-50 command with main_dino.py's defaults.

    README ("ResNet-50 and other convnets trainings"): SGD, weight decay 1e-4 constant (``--weight_decay
    1e-4 --weight_decay_end 1e-4``), global crops (0.14, 1), local crops (0.05, 0.14). main_dino.py:
    lr 0.0005 x B/256 is AdamW's; for SGD the README's later version passes lr 0.03 (x B/256), with 10
    warmup epochs and cosine decay; batch 64 per GPU x 8 GPUs = 512, 100 epochs, K = 65536, 8 local
    crops of 96 px, teacher momentum 0.996 -> 1, tau_s = 0.1, gradient clipping at 3, the last layer
    frozen for 1 epoch. tau_t warms up 0.04 -> 0.07 over 30 epochs (Sec. 4; README "boosting").
    Departures: no solarization (views module), min_lr 0 instead of 1e-6, the views of recipe
    ``byol`` (jitter (0.4, 0.4, 0.2, 0.1), gray 0.2 as DataAugmentationDINO) with blur 1.0 / 0.1 on the
    global views and 0.5 on the local ones.
    """
    return imagenet_r50(
        method="dino", recipe="byol",
        options=DINOOptions(global_scale_min=0.14, local_scale_max=0.14, asymmetric_views=True),
        optimizer="sgd", lr=0.0, base_lr=0.03, lr_scaling="linear", weight_decay=1e-4, momentum=0.9,
        grad_clip=3.0, warmup_epochs=10.0, batch_size=512, epochs=100,
    )

