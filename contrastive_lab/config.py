"""The run configuration: what every run shares, plus the options of its method.

A run is described by one :class:`Config`. Its fields are the ones *every* run has (data, views,
encoder, optimisation, execution, monitoring); what only one method uses (MoCo's queue size,
InstDisc's bank momentum, CPC's patch grid) lives in that method's own options dataclass, defined in
its file under ``contrastive_lab/methods/`` and held in ``Config.options``. So a reader who opens
``methods/moco.py`` finds MoCo's settings beside MoCo's code, with the paper section each default
comes from.

::

    cfg = get_preset("moco-v2-cifar10-cpu")          # contrastive_lab.presets
    cfg.batch_size, cfg.options.queue_size           # shared field, method option
    cfg.replace(batch_size=128, queue_size=4096)     # either kind, by name (validated)
    apply_overrides(cfg, ["queue_size=1024"])        # the CLI's key=value overrides

The method registry (``methods/registry.py``) tells this module which options class belongs to
which method name (:func:`register_options`); nothing here imports a method. Presets are registered
here too (:func:`preset`), by the method files that define them, so a new method is one new file.

Every default says where it comes from. Where a CPU preset departs from the paper (smaller
encoder, fewer epochs) the reason is the 2-core, 10-minute budget the book is written for.
Chapter 05 walks through a config; the CLI's ``train --help`` lists every key with its comment.
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import re
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from typing import Any

PRECISIONS = ("auto", "fp32", "bf16", "fp16", "fp64")  # fp64: everything in float64, for numerical checks
LR_SCHEDULES = ("cosine", "step")
VIEW_OPS = ("crop", "flip", "jitter", "gray", "blur")
# Keys that may change when a run is resumed: they change how a run is watched, fed or stopped, not
# what it computes. Every other key defines the run; ``--resume`` refuses a change to one of them.
SAFE_ON_RESUME = ("num_workers", "knn_every", "knn_max_train", "figures", "tensorboard", "time_budget_s",
                  "checkpoint_every", "data_root")


@dataclass
class Config:
    """Everything a training run shares. Field groups follow the data flow; ``options`` holds the
    method's own settings (an instance of the options class its file registers)."""

    # method
    method: str = "simclr"  # the registered method (python -m contrastive_lab presets lists them)
    # data
    dataset: str = "cifar10"  # see data.load_dataset
    data_root: str | None = None  # None -> $CONTRASTIVE_LAB_DATA or <repo>/data (resolved when a run starts)
    train_split: str = "train"
    test_split: str = "test"
    subset: int = 0  # >0: use only the first `subset` training images (smoke runs)
    synthetic_size: int = 5000  # images per split when dataset=synthetic
    # views
    recipe: str = "simclr_cifar"  # see views.RECIPES
    image_size: int = 32  # side of the training views
    eval_size: int = 0  # side of the images the kNN/linear evaluation encodes (0 -> image_size; FixRes)
    view_ops: str = "all"  # or a comma list of the ops to keep: crop,flip,jitter,gray,blur (SimCLR Fig. 5)
    crop_min_scale: float = 0.0  # >0: smallest crop area fraction instead of the recipe's (MoCo v1: 0.2)
    color_strength: float = 0.0  # >0: colour-jitter strength s, jitter (0.8s, 0.8s, 0.8s, 0.2s) (SimCLR App. A)
    gpu_views: bool = False  # ImageFolder: workers decode to fixed-size uint8, views drawn in batches on the device
    decode_size: int = 0  # gpu_views: side of the decoded uint8 square (0 -> image_size * 8 // 7, 256 for 224)
    # encoder f
    encoder: str = "resnet18"
    cifar_stem: bool = True
    width: float = 1.0  # width multiplier (small ResNets, and CPC's patch_convnet)
    # optimisation
    optimizer: str = "lars"  # sgd | adamw | lars
    lr: float = 0.0  # 0 -> base_lr scaled by the batch size (optim.scale_lr)
    base_lr: float = 0.3  # SimCLR App. B.1: lr = 0.3 x BatchSize / 256
    lr_scaling: str = "linear"  # linear (Goyal et al. 2017; SimCLR Sec. 2.3) | sqrt (SimCLR App. B.1)
    lr_schedule: str = "cosine"  # cosine (after warmup; SimCLR Sec. 2.3) | step (x0.1 at each lr_milestones epoch)
    lr_milestones: str = ""  # step schedule: comma list of epochs, e.g. "60,80" (MoCo Sec. 4.1 linear eval)
    nesterov: bool = False  # sgd only: Nesterov momentum (SimCLR App. B.5 fine-tuning, B.6 linear eval)
    weight_decay: float = 1e-6  # SimCLR App. B.1 (LARS)
    momentum: float = 0.9
    warmup_epochs: float = 10.0  # SimCLR App. B.1
    grad_clip: float = 0.0  # 0 -> off
    batch_size: int = 512  # the GLOBAL batch: the engine splits it evenly over the ranks
    accum_steps: int = 1  # micro-batches per optimizer step on each rank (NT-Xent: fewer negatives, see engine.step)
    epochs: int = 100
    max_steps: int = 0  # >0: stop after this many optimizer steps
    time_budget_s: float = 0.0  # >0: stop training after this much wall time (benchmarks)
    fit_to_budget: bool = False  # with time_budget_s: end the cosine at the budget (engine.budget.ScheduleFitter)
    # execution
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda
    precision: str = "auto"  # auto (bf16 where the hardware has it) | fp32 | bf16 | fp16 | fp64 (numerical checks)
    channels_last: bool = True
    compile: bool = False
    gemm_weight_grad: bool = True  # CPU bf16: conv weight gradients on small maps as one GEMM (encoders.GemmGradConv2d)
    num_workers: int = 4  # DataLoader workers (ImageFolder data only)
    # monitoring and checkpoints
    knn_every: int = 0  # epochs between kNN monitor evaluations (0 -> only at the end)
    knn_k: int = 200  # Wu et al. 2018 Sec. 3.4 / MoCo's monitor
    knn_t: float = 0.1
    knn_max_train: int = 0  # >0: subsample the kNN memory (big datasets)
    checkpoint_every: int = 200  # optimizer steps between checkpoints (and one at the end)
    tensorboard: bool = False
    figures: bool = True
    # the method's own settings: an instance of its options class (None -> that class's defaults)
    options: Any = None

    def __post_init__(self) -> None:
        if self.options is None or isinstance(self.options, dict):
            self.options = options_type(self.method)(**(self.options or {}))

    def evaluation_size(self) -> int:
        """Side of the images evaluation encodes: ``eval_size``, or the view size when it is 0."""
        return self.eval_size or self.image_size

    def replace(self, **changes: Any) -> Config:
        """A validated copy with some fields changed: shared fields and the method's options by name.

        Changing ``method`` switches the options to the new method's class, keeping the values of the
        fields both classes have (``moco_v2`` -> ``moco_v1`` keeps the queue size)."""
        shared = {f.name for f in fields(Config)} - {"options"}
        method = changes.get("method", self.method)
        target = options_type(method)
        old = asdict(self.options)
        kept = {k: v for k, v in old.items() if k in {f.name for f in fields(target)}}
        own = {f.name for f in fields(target)}
        unknown = sorted(set(changes) - shared - own - {"options"})
        if unknown:
            raise ValueError(f"unknown config key(s) {unknown} for method {method!r}; valid keys: "
                             f"{', '.join(sorted(shared | own))}")
        option_changes = {k: v for k, v in changes.items() if k in own and k not in shared}
        options = changes.get("options") or target(**{**kept, **option_changes})
        top = {k: v for k, v in changes.items() if k in shared}
        return validate(dataclasses.replace(self, **top, options=options))

    def to_dict(self) -> dict[str, Any]:
        """Shared fields plus ``options`` as a nested dict (what config.json and checkpoints store)."""
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)


# ----------------------------------------------------------------------------------------
# Which options class belongs to which method (filled by methods/registry.py)
# ----------------------------------------------------------------------------------------

_OPTION_TYPES: dict[str, type] = {}


def register_options(method: str, options_type_: type) -> None:
    """Record that ``method``'s settings are the dataclass ``options_type_`` (called by the registry)."""
    if not dataclasses.is_dataclass(options_type_):
        raise TypeError(f"options of method {method!r} must be a dataclass, got {options_type_!r}")
    _OPTION_TYPES[method] = options_type_


def options_type(method: str) -> type:
    """The options dataclass of ``method``; a clear error for an unknown name."""
    if method not in _OPTION_TYPES:
        raise ValueError(f"unknown method {method!r}; valid methods: {', '.join(sorted(_OPTION_TYPES)) or '(none)'}"
                         " (they register when contrastive_lab.methods is imported)")
    return _OPTION_TYPES[method]


def config_keys(method: str) -> list[str]:
    """Every key ``key=value`` accepts for ``method``: the shared fields and its options."""
    shared = [f.name for f in fields(Config) if f.name != "options"]
    return shared + [f.name for f in fields(options_type(method))]


def config_from_dict(data: dict[str, Any]) -> Config:
    """A validated Config from ``Config.to_dict()`` output (config.json, checkpoints).

    Checkpoints of version 1 (before the methods had options classes) stored one flat dict; its
    method keys are moved into the options, and keys the method does not use are dropped (they were
    ignored by that method then too)."""
    data = dict(data)
    if "options" not in data:  # version-1 flat config
        method = data.get("method", Config.method)
        own = {f.name for f in fields(options_type(method))}
        shared = {f.name for f in fields(Config)}
        data["options"] = {k: data.pop(k) for k in list(data) if k in own and k not in shared}
        data = {k: v for k, v in data.items() if k in shared}
    unknown = sorted(set(data) - {f.name for f in fields(Config)})
    if unknown:
        raise ValueError(f"config has unknown keys {unknown}; was it written by another version of contrastive_lab?")
    return validate(Config(**data))


# ----------------------------------------------------------------------------------------
# Validation
# ----------------------------------------------------------------------------------------


def validate(cfg: Config) -> Config:
    """Check value ranges of the shared fields, then the method's options, so a typo fails before
    any training starts."""
    if not isinstance(cfg.options, options_type(cfg.method)):
        raise TypeError(f"method {cfg.method!r} takes {options_type(cfg.method).__name__}, "
                        f"got options of type {type(cfg.options).__name__}")
    positive = ["image_size", "batch_size", "epochs", "knn_k", "checkpoint_every", "accum_steps"]
    for name in positive:
        if getattr(cfg, name) <= 0:
            raise ValueError(f"{name} must be > 0, got {getattr(cfg, name)}")
    check_view_ops(cfg.view_ops)
    if cfg.eval_size < 0:
        raise ValueError(f"eval_size must be >= 0 (0 = image_size), got {cfg.eval_size}")
    if not 0 <= cfg.color_strength <= 2.5:
        raise ValueError(f"color_strength must be in [0, 2.5] (hue 0.2s <= 0.5; 0 = the recipe's), "
                         f"got {cfg.color_strength}")
    if not 0 <= cfg.crop_min_scale <= 1:
        raise ValueError(f"crop_min_scale must be in [0, 1] (0 = the recipe's own), got {cfg.crop_min_scale}")
    if cfg.precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}; got {cfg.precision!r}")
    if cfg.device not in ("auto", "cpu", "cuda") and not cfg.device.startswith("cuda:"):
        raise ValueError(f"device must be auto, cpu or cuda[:N]; got {cfg.device!r}")
    for name in ["lr", "weight_decay", "warmup_epochs", "grad_clip", "max_steps", "time_budget_s", "subset",
                 "decode_size", "knn_every", "knn_max_train", "num_workers"]:
        if getattr(cfg, name) < 0:
            raise ValueError(f"{name} must be >= 0, got {getattr(cfg, name)}")
    if not cfg.knn_t > 0:
        raise ValueError(f"knn_t must be > 0 (Wu et al. 2018: 0.1), got {cfg.knn_t}")
    if cfg.lr_schedule not in LR_SCHEDULES:
        raise ValueError(f"lr_schedule must be one of {', '.join(LR_SCHEDULES)}; got {cfg.lr_schedule!r}")
    milestones = parse_milestones(cfg.lr_milestones)
    if cfg.lr_schedule == "step" and not milestones:
        raise ValueError('lr_schedule=step needs lr_milestones, a comma list of epochs (e.g. "60,80")')
    if cfg.fit_to_budget and not (cfg.time_budget_s > 0 and cfg.lr_schedule == "cosine"):
        raise ValueError("fit_to_budget=true sizes the cosine schedule to the time budget: it needs "
                         f"time_budget_s > 0 and lr_schedule=cosine (got {cfg.time_budget_s:g}, {cfg.lr_schedule!r})")
    check = getattr(cfg.options, "validate", None)
    if check is not None:
        check(cfg)
    return cfg


def parse_milestones(text: str) -> list[float]:
    """``"60,80"`` -> ``[60.0, 80.0]``: the epochs at which a step schedule multiplies the lr by 0.1."""
    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise ValueError(f'lr_milestones must be a comma list of epochs like "60,80", got {text!r}') from None
    if any(v <= 0 for v in values) or values != sorted(set(values)):
        raise ValueError(f"lr_milestones must be positive and strictly increasing, got {text!r}")
    return values


def check_view_ops(view_ops: str) -> list[str]:
    """The ops a ``view_ops`` string keeps ("all" = every op of the recipe)."""
    if view_ops == "all":
        return list(VIEW_OPS)
    ops = [op.strip() for op in view_ops.split(",") if op.strip()]
    unknown = sorted(set(ops) - set(VIEW_OPS))
    if unknown:
        raise ValueError(f"view_ops: unknown op(s) {unknown}; use 'all' or a comma list of {', '.join(VIEW_OPS)}")
    return ops


def resume_changes(saved: Config, requested: Config) -> tuple[dict[str, tuple], dict[str, tuple]]:
    """The keys whose values differ between a run's saved config and the one asked for on resume,
    split into (defining, safe): ``{key: (saved, requested)}``. Safe keys are :data:`SAFE_ON_RESUME`."""
    old, new = _flat(saved), _flat(requested)
    differ = {k: (old.get(k), new.get(k)) for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)}
    safe = {k: v for k, v in differ.items() if k in SAFE_ON_RESUME}
    return {k: v for k, v in differ.items() if k not in safe}, safe


def _flat(cfg: Config) -> dict[str, Any]:
    values = cfg.to_dict()
    return {**{k: v for k, v in values.items() if k != "options"}, **values["options"]}


# ----------------------------------------------------------------------------------------
# key=value overrides (the command line)
# ----------------------------------------------------------------------------------------


def _parse_value(text: str, kind: type) -> Any:
    """Turn the right-hand side of ``key=value`` into the field's type."""
    if kind is bool:
        lowered = text.lower()
        if lowered in ("1", "true", "yes", "on"):
            return True
        if lowered in ("0", "false", "no", "off"):
            return False
        raise ValueError(f"expected true/false, got {text!r}")
    if text.lower() in ("none", "null") and kind is not str:
        return None
    return kind(text)


_TYPES = {"int": int, "float": float, "str": str, "bool": bool, "str | None": str}


def _field_types(cfg: Config) -> dict[str, type]:
    types = {f.name: _TYPES[str(f.type)] for f in fields(Config) if f.name != "options"}
    types.update({f.name: _TYPES[str(f.type)] for f in fields(cfg.options)})
    return types


def apply_overrides(cfg: Config, overrides: list[str]) -> Config:
    """Apply ``["epochs=1", "queue_size=1024"]``: shared keys and the method's options; an unknown
    key lists the valid ones. A ``method=...`` override is applied first, so its options parse."""
    pairs = []
    for item in overrides:
        if "=" not in item:
            raise ValueError(f"override {item!r} must look like key=value (e.g. epochs=1)")
        key, text = item.split("=", 1)
        pairs.append((key.strip().replace("-", "_"), text.strip()))
    for key, text in pairs:
        if key == "method":
            cfg = cfg.replace(method=text)
    types, changes = _field_types(cfg), {}
    for key, text in pairs:
        if key == "method":
            continue
        if key not in types:
            raise ValueError(f"unknown config key {key!r}; valid keys: {', '.join(sorted(types))}")
        try:
            changes[key] = _parse_value(text, types[key])
        except ValueError as err:
            raise ValueError(f"bad value for {key}: {err}") from None
    return cfg.replace(**changes)


def field_comments(cls: type) -> dict[str, str]:
    """Each field's trailing ``# comment`` in ``cls``'s source (its one-line documentation)."""
    comments = {}
    for line in inspect.getsource(cls).splitlines():
        match = re.match(r"\s+(\w+): [^=]+=[^#]*#\s*(.+)$", line)
        if match:
            comments[match.group(1)] = match.group(2).strip()
    return comments


# ----------------------------------------------------------------------------------------
# Presets: named functions returning a Config, registered by the method files
# ----------------------------------------------------------------------------------------

PRESETS: dict[str, Callable[[], Config]] = {}


def preset(name: str) -> Callable[[Callable[[], Config]], Callable[[], Config]]:
    """Decorator: register a function returning a :class:`Config` as the preset ``name``."""

    def register(fn: Callable[[], Config]) -> Callable[[], Config]:
        if name in PRESETS and PRESETS[name] is not fn:
            raise ValueError(f"preset {name!r} is registered twice ({PRESETS[name].__module__}, {fn.__module__})")
        PRESETS[name] = fn
        return fn

    return register


def imagenet_r50(**changes: Any) -> Config:
    """The shared base of the ImageNet presets: ResNet-50 on an ImageFolder with ``train/`` and ``val/``
    under data_root, batch 256, SGD (MoCo Sec. 4: lr 0.03, momentum 0.9, wd 1e-4), 200 epochs."""
    base = dict(
        dataset="imagefolder",
        test_split="val",
        image_size=224,
        encoder="resnet50",
        cifar_stem=False,
        optimizer="sgd",
        lr=0.03,
        weight_decay=1e-4,
        momentum=0.9,
        warmup_epochs=0.0,
        batch_size=256,
        epochs=200,
        num_workers=8,
        knn_max_train=100_000,
        checkpoint_every=1000,
    )
    return Config(**{**base, **changes})
