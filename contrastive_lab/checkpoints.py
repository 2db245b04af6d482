"""Checkpoint files: written atomically, read safely, never holding NaN. (Chapter 05 saves and
resumes one; chapter 13 resumes one on several processes.)

* **Atomic writes.** :func:`save_checkpoint` writes a temporary file in the same folder, flushes and
  fsyncs it, then ``os.replace``-s it over the old one: a crash or SIGKILL at any moment leaves either
  the old checkpoint or the new one, never a torn mix. A temporary file orphaned by a SIGKILL is
  removed by :func:`remove_stale_temporaries` when the next run starts.
* **Safe reads.** :func:`load_checkpoint` loads with ``torch.load(weights_only=True)``: tensors and
  plain containers only, no pickled code runs. A corrupt file gets a message that says so; it never
  suggests ``weights_only=False``, the unsafe path.
* **Finite or not at all.** :func:`first_nonfinite` finds the first NaN/inf tensor in a state; the
  engine refuses to save one (so a diverging run never overwrites the last good checkpoint), and
  readers that evaluate a checkpoint refuse one too.

The format: a dict with ``version`` (:data:`CHECKPOINT_VERSION`), ``config`` (``Config.to_dict()``),
``step``, ``method`` (the method's ``state_dict``), ``optimizer``, ``scheduler``, ``context`` (the
counts the method was built with), ``fitted_steps``, ``knn_step`` (the last step the kNN monitor
measured; absent before 2026-12-07), ``results``, ``finished`` and ``rng``. Version 1 files (before the methods
had options classes) are read too: their flat config is converted (``config.config_from_dict``).
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import torch

from .config import Config, config_from_dict

CHECKPOINT_VERSION = 2
READABLE_VERSIONS = (1, 2)


class NonFiniteCheckpointError(RuntimeError):
    """A checkpoint (or a state about to become one) holds NaN or inf values."""


def save_checkpoint(state: dict[str, Any], path: str | Path) -> Path:
    """Write ``state`` atomically: temp file in the same folder, fsync, then ``os.replace``.

    ``os.replace`` is atomic on POSIX and Windows, so readers see either the old file or the new
    one, never a half-written mix, even if the process is killed during the write.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


_TEMPORARY = re.compile(r"^\..+\.tmp-(\d+)$")


def remove_stale_temporaries(folder: str | Path) -> list[Path]:
    """Delete the temporary files of :func:`save_checkpoint` left in ``folder`` by processes that
    no longer run (a SIGKILL during a write); return what was removed. Files of live processes stay."""
    removed = []
    folder = Path(folder)
    if not folder.is_dir():
        return removed
    for path in folder.iterdir():
        match = _TEMPORARY.match(path.name)
        if match and not _alive(int(match.group(1))):
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu",
                    require_finite: bool = False) -> dict[str, Any]:
    """Load a checkpoint written by :func:`save_checkpoint` (``weights_only=True``: no code runs).

    ``require_finite=True`` (what evaluation uses) refuses a checkpoint with NaN/inf tensors."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}; train first or pass the path to a last.pt file")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # truncated zip, wrong format, pickled code ...
        raise RuntimeError(
            f"cannot read checkpoint {path}: it is truncated or not a checkpoint written by contrastive_lab "
            f"({type(err).__name__}). Use an earlier checkpoint or retrain; do not load it with pickle."
        ) from None
    if not isinstance(state, dict) or state.get("version") not in READABLE_VERSIONS:
        found = state.get("version") if isinstance(state, dict) else type(state).__name__
        raise RuntimeError(f"{path} is not a contrastive_lab checkpoint (format version {found}; this version "
                           f"reads {', '.join(map(str, READABLE_VERSIONS))})")
    if require_finite:
        bad = first_nonfinite(state.get("method", {}))
        if bad:
            raise NonFiniteCheckpointError(
                f"{path} holds non-finite values (first: method.{bad}); the run diverged before it was saved. "
                "Evaluate an earlier checkpoint, or retrain with a lower lr, more warmup or grad_clip=1.0")
    return state


def checkpoint_config(state: dict[str, Any]) -> Config:
    """The validated :class:`Config` a checkpoint was trained with (version 1 flat configs converted)."""
    return config_from_dict(state["config"])


def first_nonfinite(obj: Any, prefix: str = "") -> str | None:
    """The key path of the first floating-point tensor in ``obj`` (nested dicts/lists/tuples) that
    holds NaN or inf, else None. ``first_nonfinite({"a": {"b": tensor([nan])}}) == "a.b"``."""
    if isinstance(obj, torch.Tensor):
        return prefix or "." if obj.is_floating_point() and not bool(torch.isfinite(obj).all()) else None
    if isinstance(obj, dict):
        items = obj.items()
    elif isinstance(obj, list | tuple):
        items = enumerate(obj)
    else:
        return None
    for key, value in items:
        found = first_nonfinite(value, f"{prefix}.{key}" if prefix else str(key))
        if found:
            return found
    return None
