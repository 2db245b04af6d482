"""From a config to the pieces of a run: the data, the views, the device and precision, the learning
rate, and the model made ready for the device (global BN, GEMM weight gradients, channels_last,
DDP). Chapter 05 walks through these; chapter 13 the multi-process parts.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn
from torchvision.transforms import v2

from ..batchnorm import convert_to_global_batchnorm
from ..config import Config, check_view_ops
from ..data import load_dataset, make_synthetic
from ..encoders import use_gemm_weight_grad_
from ..evaluate import eval_transform, extract_features
from ..optim import scale_lr
from ..runtime import autocast_dtype
from ..views import ViewRecipe, get_recipe, simclr_jitter


def load_split(cfg: Config, split: str):
    """The dataset named in the config (synthetic data is generated, others read from disk)."""
    if cfg.dataset == "synthetic":
        # generated at the size evaluation sees (the data's own size); the views resample it
        return make_synthetic(n=cfg.synthetic_size, image_size=cfg.evaluation_size(), seed=cfg.seed, split=split)
    return load_dataset(cfg.dataset, split=split, root=cfg.data_root)


def view_recipe(cfg: Config) -> ViewRecipe:
    """The config's view recipe at ``image_size`` (crop area from ``crop_min_scale`` and jitter
    from ``color_strength`` when > 0), with the ops not in ``view_ops`` switched off.

    Switching an op off sets it to its identity: crop -> the whole image (scale and aspect 1),
    flip/jitter/gray/blur -> probability 0. This is how SimCLR's composition study (Fig. 5)
    keeps one or two operations at a time.
    """
    keep = check_view_ops(cfg.view_ops)
    off = {
        "crop": {"crop_scale": (1.0, 1.0), "crop_ratio": (1.0, 1.0)},
        "flip": {"flip_p": 0.0},
        "jitter": {"jitter_p": 0.0},
        "gray": {"gray_p": 0.0},
        "blur": {"blur_p": 0.0},
    }
    overrides: dict[str, Any] = {"size": cfg.image_size}
    if cfg.crop_min_scale > 0:
        overrides["crop_scale"] = (cfg.crop_min_scale, 1.0)
    if cfg.color_strength > 0:
        overrides["jitter"] = simclr_jitter(cfg.color_strength)
    for op, identity in off.items():
        if op not in keep:
            overrides.update(identity)
    return get_recipe(cfg.recipe, **overrides)


def resolve_device(cfg: Config, local_rank: int) -> torch.device:
    """``auto``: this rank's GPU when there is one, else the CPU."""
    if cfg.device == "auto":
        return torch.device(f"cuda:{local_rank}") if torch.cuda.is_available() else torch.device("cpu")
    if cfg.device.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError("device=cuda was requested but no CUDA GPU is visible; use device=cpu or auto")
    return torch.device(cfg.device)


def resolve_precision(cfg: Config, device: torch.device) -> torch.dtype | None:
    """The autocast dtype, None = none. ``auto`` picks bf16 where the hardware runs it natively
    (:func:`contrastive_lab.runtime.autocast_dtype`); fp32 and fp64 use no autocast."""
    if cfg.precision == "auto":
        return autocast_dtype(device)
    if cfg.precision == "fp16" and device.type == "cpu":
        raise ValueError("precision=fp16 is for GPUs; on the CPU use bf16 (if supported) or fp32")
    return {"fp32": None, "fp64": None, "bf16": torch.bfloat16, "fp16": torch.float16}[cfg.precision]


def model_dtype(cfg: Config) -> torch.dtype:
    """The dtype of the weights, buffers and views: float64 for ``precision=fp64`` (numerical checks),
    else float32 (bf16/fp16 run under autocast on float32 weights)."""
    return torch.float64 if cfg.precision == "fp64" else torch.float32


def resolve_lr(cfg: Config) -> float:
    """An explicit ``lr`` wins; else SimCLR's rule, base_lr x B/256 (App. B.1), on the global batch."""
    return cfg.lr if cfg.lr > 0 else scale_lr(cfg.base_lr, cfg.batch_size, rule=cfg.lr_scaling)


def config_eval_transform(cfg: Config):
    """:func:`~contrastive_lab.evaluate.eval_transform` with the run's normalisation, size and dtype."""
    recipe = view_recipe(cfg)
    return eval_transform(recipe.mean, recipe.std, cfg.evaluation_size(), model_dtype(cfg))


def encode(encoder: nn.Module, images: Tensor, cfg: Config, device) -> Tensor:
    """Features h of uint8 images, preprocessed like the training views, in the run's precision."""
    return extract_features(encoder, images, device=device, transform=config_eval_transform(cfg),
                            autocast=cfg.precision not in ("fp32", "fp64"))


def center_crop_pipeline(cfg: Config):
    """Test-time preprocessing of ImageFolder images: resize the shorter side to 8/7 of the
    evaluation size (``eval_size`` or ``image_size``; 256 for 224), centre crop, normalise
    (SimCLR App. B.5; MoCo ``main_lincls.py``)."""
    recipe = view_recipe(cfg)
    size = cfg.evaluation_size()
    return v2.Compose([
        v2.Resize(size * 8 // 7, antialias=True),
        v2.CenterCrop(size),
        v2.ToDtype(model_dtype(cfg), scale=True),
        v2.Normalize(mean=list(recipe.mean), std=list(recipe.std)),
    ])


def prepare_model(method: nn.Module, cfg: Config, device: torch.device, world: int) -> nn.Module:
    """Move to the device and dtype, convert BN for multi-process runs, GEMM weight gradients (CPU
    bf16), channels_last."""
    frozen = {name for name, p in method.named_parameters() if not p.requires_grad}
    if world > 1 and device.type == "cuda":
        method = nn.SyncBatchNorm.convert_sync_batchnorm(method)  # global BN (SimCLR Sec. 2.2)
    elif world > 1:
        method = convert_to_global_batchnorm(method)  # the same on CPU processes
    for name, p in method.named_parameters():  # the conversion builds new BN parameters: keep frozen
        if name in frozen:  # ones frozen (MoCo's key encoder), or DDP waits for their gradients
            p.requires_grad_(False)
    method = method.to(device, model_dtype(cfg))
    if cfg.gemm_weight_grad and not cfg.compile:  # same parameters; only the backward's arithmetic differs
        use_gemm_weight_grad_(method)
    if cfg.channels_last:
        method = method.to(memory_format=torch.channels_last)
    return method


def wrap_ddp(method: nn.Module, device: torch.device, world: int) -> nn.Module:
    """DistributedDataParallel around the method when there are several processes (else the method)."""
    if world == 1:
        return method
    ids = [device.index] if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(method, device_ids=ids, broadcast_buffers=False)
