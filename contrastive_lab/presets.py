"""Training configurations: one flat dataclass, and named presets that fill it in.

A preset is a small, readable function returning a :class:`Config`. The CLI resolves
``--preset NAME`` and then applies ``key=value`` overrides, so any field can be changed from
the command line (``epochs=1 batch_size=64 dataset=synthetic``). The resolved config is saved
into the run folder as ``config.json`` and inside every checkpoint.

Every default says where it comes from. Where a CPU preset departs from the paper (smaller
encoder, fewer epochs) the reason is the 2-core, 10-minute budget the book is written for.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from typing import Any


@dataclass
class Config:
    """Everything a training run needs. Field groups follow the data flow."""

    # method
    method: str = "simclr"  # simclr | moco_v1 | moco_v2 | instdisc | cpc (see methods.METHODS)
    # data
    dataset: str = "cifar10"  # see data.load_dataset
    data_root: str | None = None  # None -> $CONTRASTIVE_LAB_DATA or <repo>/data
    train_split: str = "train"
    test_split: str = "test"
    subset: int = 0  # >0: use only the first `subset` training images (smoke runs)
    label_subset_file: str = ""  # linear/finetune: text file of image file names to train on (SimCLR's 1%/10% lists)
    label_fraction: float = 1.0  # linear/finetune, <1: class-balanced random label subset (evaluate.label_subset)
    synthetic_size: int = 5000  # images per split when dataset=synthetic
    # views
    recipe: str = "simclr_cifar"  # see augment.RECIPES
    image_size: int = 32  # side of the training views
    eval_size: int = 0  # side of the images the kNN/linear evaluation encodes (0 -> image_size; FixRes)
    view_ops: str = "all"  # or a comma list of the ops to keep: crop,flip,jitter,gray,blur (SimCLR Fig. 5)
    crop_min_scale: float = 0.0  # >0: smallest crop area fraction instead of the recipe's (MoCo v1: 0.2)
    color_strength: float = 0.0  # >0: colour-jitter strength s, jitter (0.8s, 0.8s, 0.8s, 0.2s) (SimCLR App. A)
    gpu_views: bool = False  # ImageFolder: workers decode to fixed-size uint8, views drawn in batches on the device
    decode_size: int = 0  # gpu_views: side of the decoded uint8 square (0 -> image_size * 8 // 7, 256 for 224)
    # encoder f and head g
    encoder: str = "resnet18"
    cifar_stem: bool = True
    width: float = 1.0  # width multiplier (small ResNets, and CPC's patch_convnet)
    head: str = "simclr_v1"  # see heads.build_head
    proj_dim: int = 128  # SimCLR Sec. 2.1 / B.4: z is 128-d
    hidden_dim: int = 0  # 0 -> the head preset's default
    init_checkpoint: str = ""  # method linear/finetune: pre-training last.pt to evaluate ("random": untrained f)
    # loss
    temperature: float = 0.5  # SimCLR Table 5 / B.9: 0.5 for CIFAR-10
    # method-specific (ignored by methods that do not use them; methods validate what they use)
    queue_size: int = 4096  # MoCo K
    momentum_ema: float = 0.99  # MoCo m
    ema_schedule: str = "constant"  # constant | cosine: m rises from momentum_ema to 1 (BYOL Sec. 3.2)
    symmetric: bool = False  # MoCo: loss(q1,k2) + loss(q2,k1) (MoCo CIFAR-10 demo)
    shuffle_bn: bool = True  # MoCo Sec. 3.3: shuffle the key batch across devices / BN splits
    bn_splits: int = 1  # >1: split ("ghost") BN simulating this many GPUs (MoCo CIFAR-10 demo: 8)
    num_negatives: int = 4096  # InstDisc: memory-bank negatives per positive (Wu et al. 2018, Sec. 4)
    bank_momentum: float = 0.5  # InstDisc: v <- normalize(m v + (1-m) f) (official code, --nce-m)
    bank_loss: str = "nce"  # InstDisc: nce (Wu et al. Eq. 6) | infonce (MoCo Eq. 1 on bank negatives)
    proximal: float = 0.0  # InstDisc proximal term lambda ||f_i - v_i||^2 (Wu et al. Sec. 3.3); 0 = off
    patch_size: int = 8  # CPC: side of the square patches (CPC Sec. 3.2: 64 px on 256-px images)
    patch_stride: int = 4  # CPC: step between patches; < patch_size -> overlap (CPC: 32 px -> a 7x7 grid)
    cpc_offsets: int = 3  # CPC: K, predict the patches 1..K rows below (CPC Sec. 3.2: up to 5 on 7x7)
    cpc_norm: str = "layer"  # CPC patch net: layer (CPC v2 Sec. 4.1) | batch (leaks across patches) | none
    patch_augment: bool = True  # CPC v2 per-patch flips, colour dropping and crops (cpc.PatchAugment)
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
    accum_steps: int = 1  # micro-batches per optimizer step on each rank (NT-Xent: fewer negatives, see engine)
    epochs: int = 100
    max_steps: int = 0  # >0: stop after this many optimizer steps
    time_budget_s: float = 0.0  # >0: stop training after this much wall time (benchmarks)
    fit_to_budget: bool = False  # with time_budget_s: end the cosine at the budget (engine.ScheduleFitter)
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

    def evaluation_size(self) -> int:
        """Side of the images evaluation encodes: ``eval_size``, or the view size when it is 0."""
        return self.eval_size or self.image_size

    def replace(self, **changes: Any) -> Config:
        """A copy with some fields changed (validated)."""
        return validate(dataclasses.replace(self, **changes))

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True)


def validate(cfg: Config) -> Config:
    """Check value ranges, so a typo fails before any training starts."""
    positive = ["image_size", "batch_size", "epochs", "proj_dim", "knn_k", "checkpoint_every", "accum_steps"]
    for name in positive:
        if getattr(cfg, name) <= 0:
            raise ValueError(f"{name} must be > 0, got {getattr(cfg, name)}")
    if not cfg.temperature > 0:
        raise ValueError(f"temperature must be > 0, got {cfg.temperature}")
    _check_view_ops(cfg.view_ops)
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
                 "decode_size"]:
        if getattr(cfg, name) < 0:
            raise ValueError(f"{name} must be >= 0, got {getattr(cfg, name)}")
    if cfg.lr_schedule not in LR_SCHEDULES:
        raise ValueError(f"lr_schedule must be one of {', '.join(LR_SCHEDULES)}; got {cfg.lr_schedule!r}")
    milestones = parse_milestones(cfg.lr_milestones)
    if cfg.lr_schedule == "step" and not milestones:
        raise ValueError('lr_schedule=step needs lr_milestones, a comma list of epochs (e.g. "60,80")')
    if cfg.fit_to_budget and not (cfg.time_budget_s > 0 and cfg.lr_schedule == "cosine"):
        raise ValueError("fit_to_budget=true sizes the cosine schedule to the time budget: it needs "
                         f"time_budget_s > 0 and lr_schedule=cosine (got {cfg.time_budget_s:g}, {cfg.lr_schedule!r})")
    if not 0 < cfg.label_fraction <= 1:
        raise ValueError(f"label_fraction must be in (0, 1] (0.01 = 1% of the labels), got {cfg.label_fraction}")
    return cfg


LR_SCHEDULES = ("cosine", "step")
# fp64: every weight, buffer and view in float64, no autocast: slow, for numerical checks (the tests
# compare 2 ranks with 1 process in fp64, where summation order changes nothing at 1e-4)
PRECISIONS = ("auto", "fp32", "bf16", "fp16", "fp64")


def parse_milestones(text: str) -> list[float]:
    """``"60,80"`` -> ``[60.0, 80.0]``: the epochs at which a step schedule multiplies the lr by 0.1."""
    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise ValueError(f'lr_milestones must be a comma list of epochs like "60,80", got {text!r}') from None
    if any(v <= 0 for v in values) or values != sorted(set(values)):
        raise ValueError(f"lr_milestones must be positive and strictly increasing, got {text!r}")
    return values


VIEW_OPS = ("crop", "flip", "jitter", "gray", "blur")


def _check_view_ops(view_ops: str) -> list[str]:
    """The ops a ``view_ops`` string keeps ("all" = every op of the recipe)."""
    if view_ops == "all":
        return list(VIEW_OPS)
    ops = [op.strip() for op in view_ops.split(",") if op.strip()]
    unknown = sorted(set(ops) - set(VIEW_OPS))
    if unknown:
        raise ValueError(f"view_ops: unknown op(s) {unknown}; use 'all' or a comma list of {', '.join(VIEW_OPS)}")
    return ops


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


def apply_overrides(cfg: Config, overrides: list[str]) -> Config:
    """Apply ``["epochs=1", "dataset=synthetic"]`` to a config; unknown keys list the valid ones."""
    by_name = {f.name: f for f in fields(Config)}
    changes: dict[str, Any] = {}
    for item in overrides:
        if "=" not in item:
            raise ValueError(f"override {item!r} must look like key=value (e.g. epochs=1)")
        key, text = item.split("=", 1)
        key = key.strip().replace("-", "_")
        if key not in by_name:
            raise ValueError(f"unknown config key {key!r}; valid keys: {', '.join(sorted(by_name))}")
        kind = _TYPES[str(by_name[key].type)]
        try:
            changes[key] = _parse_value(text.strip(), kind)
        except ValueError as err:
            raise ValueError(f"bad value for {key}: {err}") from None
    return cfg.replace(**changes)


# --------------------------------------------------------------------------------------
# Presets
# --------------------------------------------------------------------------------------


def simclr_cifar10_cpu() -> Config:
    """SimCLR on CIFAR-10, sized for a 2-core CPU and a budget of minutes (``make demo``).

    From SimCLR App. B.9 (CIFAR-10): the CIFAR stem (3x3 conv, no max-pool), colour jitter
    strength s=0.5, no blur, LARS and weight decay 1e-6. For a run of minutes rather than
    hundreds of epochs we take the paper's short-training choices:

    * lr = 0.075 x sqrt(B) (App. B.1: with LARS, square-root scaling does better than linear
      scaling, 0.3 x B/256, for small batches and few epochs);
    * temperature 0.1 (Table 5, the ImageNet default; App. B.9 finds 0.5 best on CIFAR-10 in
      its long runs, but on cifar10-mini in 20 epochs 0.1-0.2 learn much faster: BENCHMARKS.md,
      "Tuning that led to the preset");
    * batch 128 (Sec. 5.2 / Fig. 9: large batches help most in short runs, yet on 5085 images
      batch 128 gives 39 steps per epoch where 1024 would give 4; chapter 06 measures both).

    Departures for the CPU budget: a ResNet-10 at half width instead of a ResNet-50, tens of
    epochs instead of 100-1000, 1 warmup epoch, and a **linear** projection head. SimCLR Sec. 4.2 /
    Fig. 8 compares no head, a linear head and the nonlinear (MLP) head and finds the MLP best
    after 100 epochs on ImageNet; in a run of minutes on cifar10-mini the order reverses: at equal
    steps, kNN on h was 0.468 (MLP), 0.488 (no head) and 0.494 (linear), and chapter 06 measures
    the same at width 0.25 (BENCHMARKS.md). The views are drawn at 24 px and the evaluation
    encodes the 32-px images (``eval_size``): a step is 1.5-2x cheaper, so the same minutes buy
    1.5-2x the steps, and a random crop magnifies objects anyway, so testing at the larger size
    matches the scale training saw (Touvron et al. 2019, "FixRes"). On cifar10-mini at equal
    time this gave kNN +0.011 and +0.028 over 32-px views in two seeds (BENCHMARKS.md). bf16
    autocast is used when the CPU has native bf16 (precision=auto).
    """
    return Config(
        method="simclr",
        dataset="cifar10",
        recipe="simclr_cifar",
        encoder="resnet10",
        width=0.5,
        head="linear",  # see above; SimCLR's own default is the 2-layer MLP, head="simclr_v1"
        temperature=0.1,
        optimizer="lars",
        base_lr=0.075,
        lr_scaling="sqrt",
        weight_decay=1e-6,
        batch_size=128,
        image_size=24,  # views; see above
        eval_size=32,  # kNN / linear evaluation on the images' own 32 px
        epochs=38,  # 4-7 minutes of training on 2 AVX512-BF16 cores, whose speed drifts ~1.7x (BENCHMARKS.md)
        max_steps=1482,  # = 38 epochs of cifar10-mini (39 steps each); on the full 50k CIFAR-10 the same minutes
        time_budget_s=510.0,  # `make demo` <= 10 min even without native bf16 (stops early, says so)
        warmup_epochs=1.0,
        knn_every=5,
        checkpoint_every=100,
    )


def simclr_cifar10() -> Config:
    """SimCLR on full CIFAR-10 following App. B.9: ResNet-50 with the CIFAR stem, s=0.5, no blur.

    App. B.9 sweeps batch size {256..4096}, lr {0.5, 1.0, 1.5} and T {0.1, 0.5, 1.0} with LARS
    and reports T=0.5 best; this preset takes batch 1024, lr 1.0, 1000 epochs (their longest).
    For one GPU; check the numbers against your own reading of App. B.9 before a long run.
    """
    return Config(
        method="simclr",
        dataset="cifar10",
        recipe="simclr_cifar",
        encoder="resnet50",
        head="simclr_v1",
        temperature=0.5,
        optimizer="lars",
        lr=1.0,  # absolute lr (App. B.9 sweep); not rescaled by the batch size
        weight_decay=1e-6,
        batch_size=1024,
        epochs=1000,
        warmup_epochs=10.0,
        knn_every=10,
        checkpoint_every=500,
    )


# MoCo and InstDisc -----------------------------------------------------------------------
# The CPU presets train on cifar10-mini (5085 images, 19 steps of 256 per epoch). Two numbers
# have to shrink with the dataset and with the run:
# * the queue / bank negatives K = 1024 (20% of the images). MoCo's K = 65536 is 5% of
#   ImageNet; with K close to the dataset size the queue would mostly hold an *older key of the
#   query's own image* (seen within the last K/B steps) as a "negative". The bank excludes the
#   positive explicitly, but K near n would just draw the same entries again and again.
# * the key-encoder momentum m = 0.99 (MoCo CIFAR-10 demo), not ImageNet's 0.999: the EMA
#   averages over ~1/(1-m) steps, 1000 steps for 0.999, longer than a whole CPU run (~300 steps).


def moco_v2_cifar10_cpu() -> Config:
    """MoCo v2 on CIFAR-10 for a 2-core CPU (chapters 07-08).

    MoCo v2 (Chen et al. 2020, "Improved Baselines ...", Table 1): MLP head (hidden = feature dim,
    ReLU, 128-d out), blur in the views (recipe ``moco_v2``), cosine lr, T = 0.2. CPU-sized after the
    MoCo CIFAR-10 demo (Colab by K. He): CIFAR stem, split BN with 8 splits (8 simulated GPUs of 32
    images), shuffling BN, SGD lr 0.06 / wd 5e-4, m = 0.99. Departures: a ResNet-10 at half width,
    batch 256, K = 1024 (see the note above), 15 epochs.
    """
    return Config(
        method="moco_v2",
        dataset="cifar10",
        recipe="moco_v2",
        encoder="resnet10",
        width=0.5,
        head="moco_v2",
        proj_dim=128,
        temperature=0.2,
        queue_size=1024,
        momentum_ema=0.99,
        bn_splits=8,
        shuffle_bn=True,
        optimizer="sgd",
        lr=0.06,
        weight_decay=5e-4,
        momentum=0.9,
        warmup_epochs=0.0,
        batch_size=256,
        epochs=15,
        knn_every=5,
        checkpoint_every=100,
    )


def moco_v1_cifar10_cpu() -> Config:
    """MoCo v1 on CIFAR-10 for a 2-core CPU: :func:`moco_v2_cifar10_cpu` with v1's choices.

    MoCo v1 (He et al. 2019, Sec. 3.3 and 4.1): linear 128-d head (the ResNet's fc), T = 0.07, views
    without blur (recipe ``moco_v1``), and a step schedule: lr x0.1 at 60% and 80% of training (the
    paper's epochs 120 and 160 of 200), here epochs 9 and 12 of 15.
    """
    return moco_v2_cifar10_cpu().replace(method="moco_v1", recipe="moco_v1", head="linear", temperature=0.07,
                                         lr_schedule="step", lr_milestones="9,12")


def instdisc_cifar10_cpu() -> Config:
    """Instance discrimination with a memory bank (Wu et al. 2018) on CIFAR-10 for a 2-core CPU.

    Wu et al. Sec. 3-4 and the official code: linear 128-d head, T = 0.07, NCE with K noise entries
    per sample, bank momentum 0.5, SGD with a step schedule. Views as MoCo v1 (which took them from
    this paper). CPU sizes as :func:`moco_v1_cifar10_cpu` (ResNet-10 x 0.5, batch 256, split BN,
    K = 1024 of the 5085 bank entries, lr 0.06, wd 5e-4, 15 epochs, lr x0.1 at epochs 9 and 12).
    """
    return moco_v1_cifar10_cpu().replace(method="instdisc", num_negatives=1024, bank_momentum=0.5)


def _imagenet_r50(**changes: Any) -> Config:
    """ResNet-50 on ImageNet (an ImageFolder with train/ and val/ under data_root), batch 256."""
    base = Config(
        dataset="imagefolder",
        test_split="val",
        image_size=224,
        encoder="resnet50",
        cifar_stem=False,
        proj_dim=128,
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
    return dataclasses.replace(base, **changes)


def moco_v1_imagenet_r50() -> Config:
    """MoCo v1, ResNet-50 on ImageNet-1k (He et al. 2019, Sec. 3.3 and 4): linear 128-d head, T = 0.07,
    K = 65536, m = 0.999, SGD lr 0.03 (batch 256 on 8 GPUs), wd 1e-4, momentum 0.9, 200 epochs.

    The lr is multiplied by 0.1 at epochs 120 and 160 (Sec. 4). Departures: the paper applies weight
    decay to every parameter; optim.param_groups spares BN and biases. On 8 GPUs the engine converts
    BN to SyncBatchNorm, so the key batch's statistics are global (shuffling BN then has no effect;
    global BN is the other cure for the leak, SimCLR Sec. 2.2).
    """
    return _imagenet_r50(method="moco_v1", recipe="moco_v1", head="linear", temperature=0.07,
                         queue_size=65536, momentum_ema=0.999, lr_schedule="step", lr_milestones="120,160")


def moco_v2_imagenet_r50() -> Config:
    """MoCo v2, ResNet-50 on ImageNet-1k (Chen et al. 2020, Sec. 2 and Table 1): v1 plus a 2-layer MLP
    head (hidden 2048, ReLU), blur in the views (``aug+``), cosine lr, T = 0.2; batch 256, lr 0.03,
    K = 65536, m = 0.999, 200 epochs (67.5% linear top-1 in Table 1). See moco_v1_imagenet_r50 for
    the departures (weight decay groups, BN under DDP)."""
    return _imagenet_r50(method="moco_v2", recipe="moco_v2", head="moco_v2", temperature=0.2,
                         queue_size=65536, momentum_ema=0.999)


def instdisc_imagenet_r50() -> Config:
    """InstDisc, ResNet-50 on ImageNet-1k (Wu et al. 2018, Sec. 4): 128-d features, T = 0.07, NCE with
    4096 noise samples, memory momentum 0.5 (official code), SGD lr 0.03, batch 256, 200 epochs,
    weight decay 1e-4 (the official script's default), lr x0.1 every 40 epochs after the first 120."""
    return _imagenet_r50(method="instdisc", recipe="moco_v1", head="linear", temperature=0.07,
                         num_negatives=4096, bank_momentum=0.5, bank_loss="nce", lr_schedule="step",
                         lr_milestones="120,160")


def simclr_imagenet_r50() -> Config:
    """SimCLR, ResNet-50 on ImageNet-1k, the paper's default setting (Chen et al. 2020, Sec. 2.3, App. B.1).

    Global batch 4096 (split over the GPUs; ``batch_size`` is global), LARS with lr = 0.3 x 4096/256 = 4.8
    and weight decay 1e-6, 10 warmup epochs then cosine decay without restarts, 100 epochs (Sec. 2.3;
    the best rows of Table 6 train 1000 epochs: ``epochs=1000``). T = 0.1 (Table 5: best with l2-normalised
    z at batch 4096; also the official README's ImageNet command). Views of App. A (colour strength 1,
    blur), 2-layer MLP head with BN, z 128-d (Sec. 2.1, B.4). Global BN (Sec. 2.2): the engine converts
    BN to SyncBatchNorm under torchrun, and NT-Xent gathers z with gradient, so the negatives span the
    global batch. For a small batch use ``lr_scaling=sqrt base_lr=0.075`` (App. B.1: lr = 0.075 sqrt(B)).
    """
    return _imagenet_r50(
        method="simclr", recipe="simclr_imagenet", head="simclr_v1", temperature=0.1, optimizer="lars",
        lr=0.0, base_lr=0.3, lr_scaling="linear", weight_decay=1e-6, momentum=0.9, warmup_epochs=10.0,
        batch_size=4096, epochs=100, checkpoint_every=500,
    )


# Linear evaluation and fine-tuning at ImageNet scale -------------------------------------------------
# These train a classifier on top of a pre-trained encoder with the same engine (DDP, checkpoints,
# resume, metrics.csv): ``train --preset linear-eval-moco-imagenet init_checkpoint=RUN/checkpoints/last.pt``.
# The encoder's architecture comes from the checkpoint. Training views are random crop + flip only
# (``view_ops=crop,flip``); the reported val top-1 uses resize to 8/7 of the size + centre crop.


def _classifier_imagenet(**changes: Any) -> Config:
    base = dict(method="linear", recipe="simclr_imagenet", view_ops="crop,flip", optimizer="sgd", momentum=0.9,
                weight_decay=0.0, warmup_epochs=0.0, checkpoint_every=500)
    return _imagenet_r50(**{**base, **changes})


def linear_eval_moco_imagenet() -> Config:
    """Linear evaluation as MoCo (He et al. 2019, Sec. 4.1; repo ``main_lincls.py``): frozen encoder (BN in
    eval mode), fc on the 2048-d features, SGD momentum 0.9, lr 30, no weight decay, batch 256, 100 epochs,
    lr x0.1 at epochs 60 and 80. Departure: the fc starts at zero (MoCo: N(0, 0.01); a convex problem)."""
    return _classifier_imagenet(lr=30.0, batch_size=256, epochs=100, lr_schedule="step", lr_milestones="60,80")


def linear_eval_simclr_imagenet() -> Config:
    """Linear evaluation as SimCLR (Chen et al. 2020, App. B.6, with B.5's recipe): frozen encoder, Nesterov
    momentum 0.9, lr = 0.1 x B/256 (1.6 at batch 4096), no weight decay, no warmup, cosine decay, 90 epochs,
    zero-initialised fc; random crop + flip for training, resize 256 / centre crop 224 for testing."""
    return _classifier_imagenet(nesterov=True, lr=0.0, base_lr=0.1, lr_scaling="linear", batch_size=4096,
                                epochs=90)


def finetune_simclr_imagenet_1pct() -> Config:
    """Semi-supervised fine-tuning as SimCLR (Chen et al. 2020, Sec. 6 and App. B.5) on the 1% label subset:
    the whole encoder is trained, Nesterov momentum 0.9, lr = 0.05 x B/256 (0.8 at 4096), no warmup, no
    weight decay, 60 epochs. The labelled images are the ones listed in SimCLR's ``1percent.txt`` (one
    file name per line, e.g. n01440764_10026.JPEG), looked up relative to the working directory, then
    the data root. With fewer than B labelled images per epoch lower ``batch_size``."""
    return _classifier_imagenet(method="finetune", nesterov=True, lr=0.0, base_lr=0.05, lr_scaling="linear",
                                batch_size=4096, epochs=60, label_subset_file="imagenet_subsets/1percent.txt")


def finetune_simclr_imagenet_10pct() -> Config:
    """As :func:`finetune_simclr_imagenet_1pct` on SimCLR's 10% subset (``10percent.txt``), 30 epochs (App. B.5)."""
    return dataclasses.replace(finetune_simclr_imagenet_1pct(), epochs=30,
                               label_subset_file="imagenet_subsets/10percent.txt")


def cpc_cifar10_cpu() -> Config:
    """CPC on CIFAR-10 for a 2-core CPU (van den Oord et al. 2018, Sec. 3.2; CPC v2, Hénaff et al. 2020).

    The 32-px image is cut into a 7x7 grid of overlapping 8-px patches with stride 4 (CPC: 64-px
    patches with stride 32 on 256 px), each encoded by ``cpc.PatchConvNet`` with LayerNorm (CPC v2);
    a row-causal PixelCNN-style context predicts the latents 1..3 rows below; per-patch flips,
    colour dropping and crops (CPC v2). Image-level views: random crop + flip only
    (``view_ops=crop,flip``), and CPC uses one view (``view1``). Adam (CPC Sec. 3.1 uses Adam with
    lr 2e-4; a larger lr suits a run of minutes), raw dot-product scores (temperature 1, Eq. 3).
    Batch 32: every prediction is compared with all 32 x 7 x (7 - k) candidate patches, a cost that
    grows with the square of the batch, so on a CPU small batches train faster per image.
    """
    return Config(
        method="cpc",
        dataset="cifar10",
        recipe="simclr_cifar",
        view_ops="crop,flip",
        encoder="patch_convnet",
        width=1.0,
        patch_size=8,
        patch_stride=4,
        cpc_offsets=3,
        cpc_norm="layer",
        patch_augment=True,
        temperature=1.0,
        optimizer="adamw",
        lr=2e-3,
        weight_decay=0.0,
        batch_size=32,
        epochs=10,
        warmup_epochs=0.2,
        knn_every=5,
        checkpoint_every=200,
    )


PRESETS: dict[str, Callable[[], Config]] = {
    "simclr-cifar10-cpu": simclr_cifar10_cpu,
    "simclr-cifar10": simclr_cifar10,
    "moco-v1-cifar10-cpu": moco_v1_cifar10_cpu,
    "moco-v2-cifar10-cpu": moco_v2_cifar10_cpu,
    "instdisc-cifar10-cpu": instdisc_cifar10_cpu,
    "moco-v1-imagenet-r50": moco_v1_imagenet_r50,
    "moco-v2-imagenet-r50": moco_v2_imagenet_r50,
    "instdisc-imagenet-r50": instdisc_imagenet_r50,
    "simclr-imagenet-r50": simclr_imagenet_r50,
    "linear-eval-moco-imagenet": linear_eval_moco_imagenet,
    "linear-eval-simclr-imagenet": linear_eval_simclr_imagenet,
    "finetune-simclr-imagenet-1pct": finetune_simclr_imagenet_1pct,
    "finetune-simclr-imagenet-10pct": finetune_simclr_imagenet_10pct,
    "cpc-cifar10-cpu": cpc_cifar10_cpu,
}


def get_preset(name: str) -> Config:
    """The named preset as a validated :class:`Config`."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; valid presets: {', '.join(sorted(PRESETS))}")
    return validate(PRESETS[name]())
