"""What the engine knows about a method: the :class:`Method` protocol, the :class:`Batch` it trains
on, and the registry that maps names to builders.

A method is an ``nn.Module`` (chapter 05 builds SimCLR as one) that turns a batch of views into a
loss. The engine calls only what the protocol lists::

    loss, logs = method(batch)                  # forward: the loss of a Batch, and scalars to log
    method.after_step(progress)                 # optional: after optimizer.step() (EMA, queue, bank)
    method.state_dict()                         # everything a checkpoint must hold (buffers included)
    method.encoder                              # f, what kNN, the linear probe and `embed` evaluate

and reads a few optional attributes: ``head`` (g; the kNN monitor also scores z = g(h)),
``log_keys`` (extra metrics.csv columns), ``needs_labels`` (the batch carries class labels; False
for self-supervised methods, which never see them), ``num_views`` (views per image, default 2) or
``view_recipes`` (one recipe per view, for multi-crop), and ``fixed_lr_params`` (name prefixes of
parameters whose lr the schedule leaves at its base value: SimSiam's predictor, optim.param_groups).

A method file (``methods/simclr.py`` ...) holds the module, its options dataclass (the fields only
it uses, each with its paper citation), its builder ``build(cfg, ctx) -> Method``, and its presets,
and calls :func:`register_method`. The builder gets the counts it needs in a :class:`BuildContext`
(number of training images, steps), so no method reads the data itself.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from torch import Tensor, nn

from ..config import Config, register_options
from ..encoders import build_encoder
from ..heads import build_head
from ..views import ViewRecipe


@dataclass
class Batch:
    """One training step's input, on the device.

    ``views``: V tensors (B, 3, H_v, W_v), view v of every image (V = the method's ``num_views``);
    ``index``: (B,) dataset indices (InstDisc's memory bank); ``labels``: (B,) class labels, only for
    methods with ``needs_labels`` (else None); ``extras``: per-image tensors a dataset carries beside
    its images (its ``extras`` dict, e.g. CLIP's caption tokens), rows of this batch.
    """

    views: list[Tensor]
    index: Tensor
    labels: Tensor | None = None
    extras: dict[str, Tensor] = field(default_factory=dict)

    def chunk(self, parts: int) -> list[Batch]:
        """``parts`` equal micro-batches (gradient accumulation, engine.step.forward_backward)."""
        views = [v.chunk(parts) for v in self.views]
        index = self.index.chunk(parts)
        labels = self.labels.chunk(parts) if self.labels is not None else [None] * parts
        extras = {k: v.chunk(parts) for k, v in self.extras.items()}
        return [Batch([v[i] for v in views], index[i], labels[i], {k: v[i] for k, v in extras.items()})
                for i in range(parts)]


@dataclass(frozen=True)
class Progress:
    """Where the run is, for ``after_step``: ``step`` optimizer steps done of ``total_steps``."""

    step: int
    total_steps: int
    steps_per_epoch: int


@dataclass(frozen=True)
class BuildContext:
    """What the engine knows when it builds a method: counts from the data and the schedule, and
    the config's view recipe (multi-crop methods derive their views from it)."""

    num_images: int  # training images (a memory bank's size)
    num_classes: int  # classes in the training split (supervised methods)
    steps_per_epoch: int
    total_steps: int
    recipe: ViewRecipe | None = None


@runtime_checkable
class Method(Protocol):
    """The protocol the engine trains (see the module docstring for the optional attributes)."""

    encoder: nn.Module

    def __call__(self, batch: Batch) -> tuple[Tensor, dict[str, Tensor]]: ...

    def state_dict(self) -> dict[str, Any]: ...


@dataclass(frozen=True)
class MethodSpec:
    """A registered method: its name, options class, builder and a one-line summary."""

    name: str
    options: type
    build: Callable[[Config, BuildContext], nn.Module]
    summary: str = ""
    aliases: tuple[str, ...] = field(default=())


METHODS: dict[str, MethodSpec] = {}


def register_method(name: str, options: type, build: Callable[[Config, BuildContext], nn.Module],
                    summary: str = "") -> MethodSpec:
    """Make ``name`` trainable: ``Config(method=name)`` takes ``options``, the engine calls ``build``.

    A test registers a toy method this way from its own file: that is all a new method needs."""
    if name in METHODS and METHODS[name].build is not build:
        raise ValueError(f"method {name!r} is already registered by {METHODS[name].build.__module__}")
    spec = MethodSpec(name, options, build, summary)
    METHODS[name] = spec
    register_options(name, options)
    return spec


def build_method(cfg: Config, ctx: BuildContext | None = None) -> nn.Module:
    """The method named by ``cfg.method``, built from the config and the engine's counts.

    Without ``ctx`` (a chapter building a method by hand) the counts are unknown: zero images and
    classes, a schedule of ``max_steps`` (or 1); methods that need a count (InstDisc's bank size, a
    classifier's classes) then say so."""
    if cfg.method not in METHODS:
        raise ValueError(f"unknown method {cfg.method!r}; valid methods: {', '.join(sorted(METHODS))}")
    ctx = ctx or BuildContext(num_images=0, num_classes=0, steps_per_epoch=1, total_steps=max(cfg.max_steps, 1))
    return METHODS[cfg.method].build(cfg, ctx)


def method_views(method: nn.Module, recipe: ViewRecipe) -> list[ViewRecipe]:
    """The recipe of each view the method trains on: its ``view_recipes``, else ``num_views`` (default
    2) copies of the config's recipe."""
    own = getattr(method, "view_recipes", None)
    return list(own) if own else [recipe] * int(getattr(method, "num_views", 2))


# ----------------------------------------------------------------------------------------
# Pieces several methods share
# ----------------------------------------------------------------------------------------


@dataclass
class ProjectionOptions:
    """The projection head g of methods that have one (SimCLR Sec. 2.1 and 4.2)."""

    head: str = "simclr_v1"  # see heads.build_head: identity | linear | mlp | simclr_v1 | simclr_v2 | moco_v2
    proj_dim: int = 128  # SimCLR Sec. 2.1 / B.4: z is 128-d
    hidden_dim: int = 0  # 0 -> the head preset's default (the encoder's feature size)

    def validate(self, cfg: Config) -> None:
        if self.proj_dim <= 0 or self.hidden_dim < 0:
            raise ValueError(f"proj_dim must be > 0 and hidden_dim >= 0, got {self.proj_dim}, {self.hidden_dim}")


def encoder_kwargs(cfg: Config) -> dict:
    """The keyword arguments ``build_encoder`` takes for ``cfg.encoder``."""
    kwargs: dict = {"cifar_stem": cfg.cifar_stem}
    if cfg.encoder.startswith(("resnet10", "small")):
        kwargs["width"] = cfg.width
    return kwargs


def build_config_encoder(cfg: Config) -> nn.Module:
    """The encoder f named by the config (``encoder``, ``width``, ``cifar_stem``)."""
    return build_encoder(cfg.encoder, **encoder_kwargs(cfg))


def build_projection(cfg: Config, in_dim: int) -> nn.Module:
    """The head g of ``cfg.options`` (a :class:`ProjectionOptions`) on features of size ``in_dim``."""
    opts = cfg.options
    out_dim = None if opts.head == "identity" else opts.proj_dim  # "no head": z = h
    return build_head(opts.head, in_dim=in_dim, out_dim=out_dim, hidden_dim=opts.hidden_dim or None)


def check_positive(value: float, name: str, hint: str = "") -> None:
    """Options check: a number > 0 (temperatures, sizes)."""
    if isinstance(value, bool) or not value > 0:
        raise ValueError(f"{name} must be > 0, got {value}{hint}")
