"""Rebuild a trained method from its checkpoint: the one way the CLI's ``eval``/``embed``, the
fine-tuning and linear-evaluation methods and the chapters get a trained encoder back.

The checkpoint stores the config and the counts the method was built with (``context``), so the
method is rebuilt exactly as it was trained, then its ``state_dict`` is loaded. A config whose
architecture no longer matches its weights (an edited config.json, a mismatched file) gets one line
naming the first tensors that differ, not PyTorch's page of size mismatches.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

from ..checkpoints import checkpoint_config, load_checkpoint
from ..config import Config
from .base import BuildContext, build_method


def checkpoint_context(state: dict[str, Any], cfg: Config) -> BuildContext:
    """The :class:`BuildContext` a checkpoint's method was built with. Version-1 files did not store
    it: the counts are read off the weights (the memory bank's rows, the classifier's outputs)."""
    if "context" in state:
        return BuildContext(**state["context"])
    weights = state["method"]
    bank = weights.get("bank.bank")
    fc = weights.get("fc.weight")
    total = int(state.get("fitted_steps") or 0) or int(state.get("step", 0))
    return BuildContext(num_images=int(bank.shape[0]) if bank is not None else 0,
                        num_classes=int(fc.shape[0]) if fc is not None else 0,
                        steps_per_epoch=1, total_steps=max(total, 1))


def load_state_into(method: nn.Module, weights: dict[str, Any], source: str) -> None:
    """``method.load_state_dict(weights)`` with a one-line error when the shapes or names differ."""
    own = method.state_dict()
    missing = sorted(set(own) - set(weights))
    extra = sorted(set(weights) - set(own))
    shapes = [k for k in own if k in weights and tuple(own[k].shape) != tuple(weights[k].shape)]
    if missing or extra or shapes:
        detail = "; ".join(part for part in (
            f"{len(shapes)} tensors differ in shape (first: {shapes[0]} {tuple(weights[shapes[0]].shape)} in the "
            f"file vs {tuple(own[shapes[0]].shape)} built)" if shapes else "",
            f"missing {missing[:3]}" if missing else "", f"unexpected {extra[:3]}" if extra else "") if part)
        raise RuntimeError(f"{source} does not fit the model its config builds ({detail}); was the config "
                           "edited, or the architecture changed (encoder, width, head, proj_dim)?")
    method.load_state_dict(weights)


def load_method(path: str | Path, require_finite: bool = True) -> tuple[Config, nn.Module]:
    """(config, method in eval mode) from a ``last.pt`` written by the engine; NaN weights refused."""
    state = load_checkpoint(path, require_finite=require_finite)
    cfg = checkpoint_config(state)
    method = build_method(cfg, checkpoint_context(state, cfg))
    load_state_into(method, state["method"], str(path))
    return cfg, method.eval()
