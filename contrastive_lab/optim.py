"""Optimisers and learning-rate schedules for contrastive pre-training.

SimCLR (Chen et al. 2020) trains with LARS (You, Gitman & Ginsburg 2017, "Large Batch Training of
Convolutional Networks", arXiv:1708.03888) "for all batch sizes" (Sec 2.2), with a linear warmup
followed by cosine decay without restarts (Sec 2.3, "Default setting"), learning rate
0.3 x BatchSize/256 (Sec 2.3) or 0.075 x sqrt(BatchSize) for small batches (App. B.1), and weight
decay 1e-6. Batch-norm parameters and biases get neither weight decay nor the LARS trust ratio
(google-research/simclr, ``lars_optimizer.py`` with ``exclude_from_weight_decay=['batch_normalization',
'bias']``). Here the same rule is expressed by shape: every parameter with ``ndim <= 1`` is excluded.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Iterable

import torch
from torch import nn
from torch.optim.lr_scheduler import LambdaLR

__all__ = [
    "FixedLR",
    "LARS",
    "ScheduledLR",
    "StepDecay",
    "WarmupCosine",
    "build_lr_schedule",
    "build_optimizer",
    "build_scheduler",
    "clip_grad",
    "param_groups",
    "scale_lr",
    "warmup_cosine",
]

OPTIMIZERS = ("sgd", "adamw", "lars")
# Extra keyword arguments each optimizer accepts through ``build_optimizer(**kw)``.
_EXTRA_KWARGS = {
    "sgd": ("nesterov",),
    "adamw": ("betas", "eps"),
    "lars": ("trust_coefficient", "eps", "lr_in_momentum"),
}


def _check_nonneg(name: str, value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a number, got {type(value).__name__}.")
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{name} must be a finite number >= 0, got {value}.")
    return float(value)


def _is_int(value: object) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _check_lr(lr: float) -> float:
    lr = _check_nonneg("lr", lr)
    if lr == 0:
        raise ValueError("lr must be > 0 (schedules multiply it; a zero base lr never trains).")
    return lr


def param_groups(model: nn.Module, weight_decay: float, fixed_lr: tuple[str, ...] = ()) -> list[dict]:
    """Split trainable parameters into a decayed group and an excluded group.

    Excluded (``weight_decay=0``, ``lars_exclude=True``): every parameter with ``ndim <= 1``, i.e.
    all biases and the affine weights of BatchNorm / LayerNorm / GroupNorm (and scalars such as a
    learnable temperature). Everything else (conv kernels, linear weights, embeddings) gets
    ``weight_decay`` and LARS adaptation. Frozen parameters (``requires_grad=False``) are left out;
    empty groups are dropped. Source: google-research/simclr excludes 'batch_normalization' and
    'bias' from both weight decay and layer adaptation (``lars_optimizer.py``, ``model_util.py``).

    ``fixed_lr``: name prefixes (``"predictor."``) of parameters whose learning rate the schedule
    must not change; they go into groups of their own marked ``fixed_lr=True`` (after the scheduled
    ones), which :func:`build_lr_schedule` keeps at the base lr. SimSiam (Chen & He 2021, Sec. 4.2,
    Table 1) trains its predictor at a fixed lr (official code: ``--fix-pred-lr``). A prefix that
    names no trainable parameter is an error.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"param_groups expects an nn.Module, got {type(model).__name__}.")
    weight_decay = _check_nonneg("weight_decay", weight_decay)
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    unmatched = [f for f in fixed_lr if not any(n.startswith(f) for n, _ in named)]
    if unmatched:
        raise ValueError(f"fixed_lr names {unmatched}, but no trainable parameter of {type(model).__name__} "
                         "starts with that prefix (parameter names look like 'predictor.layers.0.weight').")
    groups = []
    for fixed in (False, True):
        chosen = [p for n, p in named if any(n.startswith(f) for f in fixed_lr) == fixed]
        groups += [
            {"params": [p for p in chosen if p.ndim > 1], "weight_decay": weight_decay, "lars_exclude": False,
             "fixed_lr": fixed},
            {"params": [p for p in chosen if p.ndim <= 1], "weight_decay": 0.0, "lars_exclude": True,
             "fixed_lr": fixed},
        ]
    if not named:
        raise ValueError(f"{type(model).__name__} has no trainable parameters; nothing to optimise.")
    return [g for g in groups if g["params"]]


class LARS(torch.optim.Optimizer):
    r"""Layer-wise Adaptive Rate Scaling (You, Gitman & Ginsburg 2017, Algorithm 1) with momentum.

    For each parameter tensor ``w`` with gradient ``g`` in a group with ``lars_exclude=False``::

        g      <- g + wd * w                                      (L2 weight decay)
        trust  <- eta * ||w|| / (||g|| + eps)   if ||w|| > 0 and ||g|| > 0, else 1
        v      <- m * v + trust * g                               (momentum buffer, starts at 0)
        w      <- w - lr * v

    In groups with ``lars_exclude=True`` the trust ratio is fixed to 1, so the update is exactly
    ``torch.optim.SGD(momentum=m, dampening=0)``; their weight decay is the group's ``weight_decay``
    (0 when the groups come from :func:`param_groups`).

    Variants (all agree while lr is constant):

    * ``lr_in_momentum=True`` reproduces google-research/simclr ``lars_optimizer.py`` exactly
      ("classic momentum"): ``v <- m v + lr * trust * g``; ``w <- w - v``. When a schedule changes lr,
      SimCLR's buffer keeps the old lr of past steps, while the default (PyTorch convention, also used by
      the Barlow Twins / VICReg ports) rescales the whole buffer at once.
    * SimCLR TF has no ``eps``; ``eps=0`` matches it. SimCLR's non-default ``classic_momentum=False``
      computes the trust ratio from the momentum buffer instead of the gradient (not implemented).
    * NVIDIA's LARC clips the trust ratio at 1 relative to lr (not implemented).
    """

    def __init__(
        self,
        params: Iterable,
        lr: float,
        momentum: float = 0.9,
        weight_decay: float = 1e-6,
        trust_coefficient: float = 0.001,
        eps: float = 1e-8,
        lr_in_momentum: bool = False,
    ) -> None:
        _check_lr(lr)
        if not 0.0 <= _check_nonneg("momentum", momentum) < 1.0:
            raise ValueError(f"momentum must be in [0, 1), got {momentum}.")
        _check_nonneg("weight_decay", weight_decay)
        if _check_nonneg("trust_coefficient", trust_coefficient) == 0:
            raise ValueError("trust_coefficient must be > 0 (SimCLR uses 0.001).")
        _check_nonneg("eps", eps)
        defaults = dict(
            lr=lr,
            momentum=momentum,
            weight_decay=weight_decay,
            trust_coefficient=trust_coefficient,
            eps=eps,
            lars_exclude=False,
            lr_in_momentum=lr_in_momentum,
        )
        super().__init__(params, defaults)

    @staticmethod
    def trust_ratio(w: torch.Tensor, g: torch.Tensor, trust_coefficient: float, eps: float) -> torch.Tensor:
        """eta * ||w|| / (||g|| + eps) when both norms are positive, else 1 (You et al. 2017, Eq. 6)."""
        w_norm, g_norm = torch.linalg.vector_norm(w), torch.linalg.vector_norm(g)
        ratio = trust_coefficient * w_norm / (g_norm + eps)
        return torch.where((w_norm > 0) & (g_norm > 0), ratio, torch.ones_like(ratio))

    @torch.no_grad()
    def step(self, closure: Callable[[], torch.Tensor] | None = None) -> torch.Tensor | None:
        """One LARS update of every parameter that has a gradient (see the class docstring)."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            lr, m = group["lr"], group["momentum"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                if p.grad.is_sparse:
                    raise RuntimeError("LARS does not support sparse gradients.")
                g = p.grad
                if group["weight_decay"] != 0:
                    g = g.add(p, alpha=group["weight_decay"])
                if not group["lars_exclude"]:
                    g = g * self.trust_ratio(p, g, group["trust_coefficient"], group["eps"])
                state = self.state[p]
                if "momentum_buffer" not in state:
                    state["momentum_buffer"] = torch.zeros_like(p)
                buf = state["momentum_buffer"]
                if group["lr_in_momentum"]:  # SimCLR TF: v <- m v + lr g ; w <- w - v
                    buf.mul_(m).add_(g, alpha=lr)
                    p.sub_(buf)
                else:  # PyTorch convention: v <- m v + g ; w <- w - lr v
                    buf.mul_(m).add_(g)
                    p.add_(buf, alpha=-lr)
        return loss


def build_optimizer(
    name: str,
    model: nn.Module,
    lr: float,
    weight_decay: float,
    momentum: float | None = None,
    fixed_lr: tuple[str, ...] = (),
    **kw,
) -> torch.optim.Optimizer:
    """Build "sgd" | "adamw" | "lars" over :func:`param_groups` (no decay on norms and biases;
    ``fixed_lr`` prefixes get groups the lr schedule leaves alone).

    ``momentum`` defaults to 0.9 for sgd and lars; for adamw it sets beta1, i.e.
    ``betas=(momentum, 0.999)`` (default: torch's ``(0.9, 0.999)``), and may not be combined with ``betas``.
    Extra keywords: sgd ``nesterov``; adamw ``betas``, ``eps``; lars ``trust_coefficient``, ``eps``,
    ``lr_in_momentum``. SimCLR pre-training: ``build_optimizer("lars", model, scale_lr(0.3, B), 1e-6)``.
    """
    if not isinstance(name, str) or name.lower() not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {name!r}; valid names are {', '.join(OPTIMIZERS)}.")
    name = name.lower()
    lr = _check_lr(lr)
    unknown = sorted(set(kw) - set(_EXTRA_KWARGS[name]))
    if unknown:
        raise TypeError(f"{name} does not accept {unknown}; allowed extra arguments: {_EXTRA_KWARGS[name]}.")
    groups = param_groups(model, weight_decay, fixed_lr)
    if name == "adamw":
        if momentum is not None:  # Adam's beta1 is its momentum coefficient (Kingma & Ba 2015, Alg. 1)
            if "betas" in kw:
                raise ValueError("pass either momentum (= beta1) or betas to adamw, not both.")
            kw["betas"] = (_check_nonneg("momentum", momentum), 0.999)
        return torch.optim.AdamW(groups, lr=lr, **kw)
    momentum = 0.9 if momentum is None else momentum
    if name == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=_check_nonneg("momentum", momentum), **kw)
    return LARS(groups, lr=lr, momentum=momentum, weight_decay=weight_decay, **kw)


def warmup_cosine(
    step: int, total_steps: int, warmup_steps: int, base_lr: float, final_lr: float = 0.0
) -> float:
    r"""Learning rate at optimizer step ``step`` (0-based): linear warmup, then cosine decay.

    .. math::
        \eta_t = \eta \frac{t+1}{W} \quad (t < W), \qquad
        \eta_t = \eta_f + \tfrac12(\eta - \eta_f)\bigl(1 + \cos(\pi \tfrac{t-W}{T-W})\bigr) \quad (W \le t \le T)

    and :math:`\eta_f` for :math:`t \ge T` (so calling one step past the end is harmless).
    Cosine annealing without restarts: SGDR (Loshchilov & Hutter 2017, Eq. 5); warmup + cosine as in
    SimCLR Sec 2.3 / App. B. SimCLR's TF code warms up with ``t / W`` (lr 0 at the first step); we use
    ``(t + 1) / W`` so no step is wasted, reaching ``base_lr`` at step ``W - 1``.
    """
    if not _is_int(step) or step < 0:
        raise ValueError(f"step must be an integer >= 0, got {step!r}.")
    if not _is_int(total_steps) or total_steps < 1:
        raise ValueError(f"total_steps must be an integer >= 1, got {total_steps!r}.")
    if not _is_int(warmup_steps) or not 0 <= warmup_steps <= total_steps:
        raise ValueError(
            f"warmup_steps must be an integer in [0, total_steps={total_steps}], got {warmup_steps!r}."
        )
    base_lr, final_lr = _check_nonneg("base_lr", base_lr), _check_nonneg("final_lr", final_lr)
    if step >= total_steps:
        return final_lr
    if step < warmup_steps:
        return base_lr * (step + 1) / warmup_steps
    progress = (step - warmup_steps) / (total_steps - warmup_steps)
    return final_lr + 0.5 * (base_lr - final_lr) * (1.0 + math.cos(math.pi * progress))


class WarmupCosine:
    """Picklable multiplier ``step -> warmup_cosine(step, ..., base_lr=1, final_lr=final_lr_ratio)``.

    A callable object (not a lambda) so that ``LambdaLR.state_dict()`` saves its settings.
    """

    def __init__(self, total_steps: int, warmup_steps: int, final_lr_ratio: float = 0.0) -> None:
        if not 0.0 <= _check_nonneg("final_lr_ratio", final_lr_ratio) <= 1.0:
            raise ValueError(f"final_lr_ratio must be in [0, 1], got {final_lr_ratio}.")
        warmup_cosine(0, total_steps, warmup_steps, 1.0, final_lr_ratio)  # validates the arguments
        self.total_steps, self.warmup_steps, self.final_lr_ratio = total_steps, warmup_steps, final_lr_ratio

    def __call__(self, step: int) -> float:
        return warmup_cosine(step, self.total_steps, self.warmup_steps, 1.0, self.final_lr_ratio)


class StepDecay:
    """Picklable lr multiplier: linear warmup over ``warmup_steps``, then x``gamma`` at each milestone
    step (MoCo Sec. 4.1, ``main_lincls.py``: lr x0.1 at epochs 60 and 80)."""

    def __init__(self, milestones: list[int], warmup_steps: int = 0, gamma: float = 0.1):
        self.milestones, self.warmup_steps, self.gamma = list(milestones), warmup_steps, gamma

    def __call__(self, step: int) -> float:
        if step < self.warmup_steps:
            return (step + 1) / self.warmup_steps
        return self.gamma ** sum(step >= m for m in self.milestones)


class FixedLR:
    """Picklable lr multiplier 1 at every step: the groups :func:`param_groups` marks ``fixed_lr``
    (SimSiam's predictor, Sec. 4.2) keep their base lr, no warmup and no decay."""

    fixed = True

    def __call__(self, step: int) -> float:
        return 1.0


class ScheduledLR(LambdaLR):
    """A per-step ``LambdaLR`` driven through its own interface: ``warmup_steps``, ``total_steps``
    (None for a step schedule, which has no end) and :meth:`resize`, which moves the end of a
    cosine schedule (``fit_to_budget``). Its ``state_dict`` is LambdaLR's, multiplier settings included."""

    @property
    def warmup_steps(self) -> int:
        return self.lr_lambdas[0].warmup_steps

    @property
    def total_steps(self) -> int | None:
        return getattr(self.lr_lambdas[0], "total_steps", None)

    def resize(self, total_steps: int) -> None:
        """End the cosine decay at ``total_steps`` from now on (the lr of the next step follows it)."""
        if self.total_steps is None:
            raise ValueError("a step schedule has no length to resize; fit_to_budget needs lr_schedule=cosine")
        for fn in self.lr_lambdas:
            if getattr(fn, "fixed", False):  # a fixed-lr group has no length
                continue
            warmup_cosine(0, total_steps, fn.warmup_steps, 1.0, fn.final_lr_ratio)  # validates
            fn.total_steps = total_steps


def build_scheduler(
    optimizer: torch.optim.Optimizer, total_steps: int, warmup_steps: int, final_lr_ratio: float = 0.0
) -> ScheduledLR:
    """Per-step schedule with lr_t = base_lr * warmup_cosine(t, T, W, 1, final_lr_ratio).

    Call ``scheduler.step()`` once after every ``optimizer.step()``. The first optimizer step already
    runs at ``base_lr / W``. ``final_lr_ratio`` is the final lr as a fraction of each group's base lr.
    """
    if not isinstance(optimizer, torch.optim.Optimizer):
        raise TypeError(f"build_scheduler expects a torch.optim.Optimizer, got {type(optimizer).__name__}.")
    return ScheduledLR(optimizer, WarmupCosine(total_steps, warmup_steps, final_lr_ratio))


def build_lr_schedule(optimizer: torch.optim.Optimizer, kind: str, total_steps: int, warmup_steps: int,
                      milestones: list[int] | None = None) -> ScheduledLR:
    """``kind="cosine"``: warmup + cosine to zero (SimCLR Sec. 2.3); ``kind="step"``: warmup, then lr x0.1
    at each of the ``milestones`` (optimizer steps; MoCo Sec. 4 and its linear evaluation). Groups
    marked ``fixed_lr`` (:func:`param_groups`) keep their base lr (:class:`FixedLR`)."""
    if kind == "step":
        schedule = StepDecay(list(milestones or []), warmup_steps)
    elif kind == "cosine":
        schedule = WarmupCosine(total_steps, warmup_steps)
    else:
        raise ValueError(f"unknown lr schedule {kind!r}; use 'cosine' or 'step'")
    if not any(g.get("fixed_lr") for g in optimizer.param_groups):
        return ScheduledLR(optimizer, schedule)
    if optimizer.param_groups[0].get("fixed_lr"):
        raise ValueError("the first parameter group must be a scheduled one (param_groups puts fixed_lr last)")
    return ScheduledLR(optimizer, [FixedLR() if g.get("fixed_lr") else schedule for g in optimizer.param_groups])


def scale_lr(base_lr: float, batch_size: int, rule: str = "linear") -> float:
    """Batch-size learning-rate scaling from SimCLR.

    * ``"linear"``: lr = base_lr x batch_size / 256 (SimCLR Sec 2.3: 4.8 = 0.3 x 4096/256);
    * ``"sqrt"``:   lr = base_lr x sqrt(batch_size) (SimCLR App. B.1: 0.075 x sqrt(BatchSize), better for
      small batches and short training). Note the sqrt rule has no /256: base_lr is the coefficient.
    """
    base_lr = _check_lr(base_lr)
    if not _is_int(batch_size) or batch_size < 1:
        raise ValueError(f"batch_size must be an integer >= 1, got {batch_size!r}.")
    if rule == "linear":
        return base_lr * batch_size / 256
    if rule == "sqrt":
        return base_lr * math.sqrt(batch_size)
    raise ValueError(f"unknown scaling rule {rule!r}; use 'linear' or 'sqrt'.")


def clip_grad(model_or_params: nn.Module | Iterable[torch.Tensor], max_norm: float) -> float:
    """Rescale gradients so their global L2 norm is at most ``max_norm``; return the norm before.

    g <- g * min(1, max_norm / ||g||_2) over all gradients jointly (Pascanu et al. 2013, Alg. 1).
    Raises if the norm is NaN/inf, which usually means the loss diverged.
    """
    if _check_nonneg("max_norm", max_norm) == 0:
        raise ValueError("max_norm must be > 0.")
    params = model_or_params.parameters() if isinstance(model_or_params, nn.Module) else model_or_params
    total = torch.nn.utils.clip_grad_norm_(list(params), max_norm, error_if_nonfinite=True)
    return float(total)
