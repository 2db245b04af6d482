"""Where the code runs: the environment variables, device choice, and bf16 autocast detection.

Everything that depends on the machine or the shell (rather than on the maths) lives here, so the
rest of the library asks one question ("is bf16 fast here?", "where is the data?") instead of
guessing. **This is the only module that reads the environment** (``distributed`` reads torchrun's
variables, which belong to the launcher): a test greps the package for it. The settings:

==========================  ======================================================  ==============
``CONTRASTIVE_LAB_SMOKE``   smoke mode: every chapter runs in seconds (CI)           ``smoke_mode``
``CONTRASTIVE_LAB_DATA``    the data root (default ``<repo>/data``)                   ``env_data_root``
``CONTRASTIVE_LAB_NATIVE``  compiled view kernels: auto (default), 1 = required, 0    ``native_mode``
``CONTRASTIVE_LAB_CACHE``   where the compiled kernels are kept                        ``cache_dir``
==========================  ======================================================  ==============

Read at the edge and passed down: the CLI and the engine's run setup resolve them once (the data
root is written into the run's ``config.json``); library functions take explicit arguments and
fall back to these only when called without them.
"""

from __future__ import annotations

import os
import resource
import shutil
import sys
import time
from functools import cache
from pathlib import Path

import torch

SMOKE_ENV = "CONTRASTIVE_LAB_SMOKE"
DATA_ENV = "CONTRASTIVE_LAB_DATA"
NATIVE_ENV = "CONTRASTIVE_LAB_NATIVE"
CACHE_ENV = "CONTRASTIVE_LAB_CACHE"
_IMPORTED_AT = time.monotonic()  # a chapter imports the library in its first cell


def smoke_mode() -> bool:
    """True when ``CONTRASTIVE_LAB_SMOKE`` is set to a truthy value ("1", "true", "yes").

    Chapters and scripts read this one switch: in smoke mode every chapter runs in seconds
    (tiny data, one or two steps) so CI can execute the whole book; otherwise (demo mode,
    the default) they show real results in at most ten minutes on a 2-core CPU.
    """
    value = os.environ.get(SMOKE_ENV, "").strip().lower()
    if value in ("", "0", "false", "no", "off"):
        return False
    if value in ("1", "true", "yes", "on"):
        return True
    raise ValueError(
        f"{SMOKE_ENV}={value!r} is not understood; set it to 1 (smoke mode) or 0 / unset (demo mode)."
    )


def env_data_root() -> Path | None:
    """``$CONTRASTIVE_LAB_DATA`` as a path, or None when unset (``data.data_root`` then uses ``<repo>/data``)."""
    value = os.environ.get(DATA_ENV, "").strip()
    return Path(value).expanduser() if value else None


def native_mode() -> str:
    """``"auto"``, ``"on"`` or ``"off"``, from ``$CONTRASTIVE_LAB_NATIVE`` (the compiled view kernels)."""
    value = os.environ.get(NATIVE_ENV, "").strip().lower()
    if value in ("", "auto"):
        return "auto"
    if value in ("1", "true", "yes", "on"):
        return "on"
    if value in ("0", "false", "no", "off"):
        return "off"
    raise ValueError(f"{NATIVE_ENV}={value!r} is not understood; use 1 (require the compiled view "
                     "kernels), 0 (never use it) or auto / unset (use it when a C compiler is available).")


def cache_dir() -> Path:
    """Where compiled kernels are kept: ``$CONTRASTIVE_LAB_CACHE``, else ``$XDG_CACHE_HOME`` or
    ``~/.cache``, then ``contrastive_lab``."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "contrastive_lab"


def c_compiler() -> str | None:
    """``$CC``, else the first of cc, gcc, clang on the PATH; None when there is none."""
    return os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")


def pick(smoke, demo):
    """Return ``smoke`` in smoke mode and ``demo`` otherwise (a chapter's knob in one line)."""
    return smoke if smoke_mode() else demo


def default_device() -> torch.device:
    """CUDA if present, else CPU. (MPS is left out: several ops we need are still missing there.)"""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


@cache
def cpu_supports_bf16() -> bool:
    """Does this CPU have native bf16 matrix instructions (AVX512-BF16 or AMX)?

    Detected, never assumed: we read the instruction-set level PyTorch's oneDNN reports and,
    on Linux, the CPU flags. Without native support, bf16 autocast on CPU is *slower* than fp32.
    """
    flags = ""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("flags"):
                    flags = line
                    break
    except OSError:
        pass
    if any(tok in flags.split() for tok in ("avx512_bf16", "amx_bf16")):
        return True
    try:
        cap = torch.backends.cpu.get_cpu_capability()  # e.g. "AVX512", "AVX2", "DEFAULT"
    except AttributeError:  # pragma: no cover - very old torch
        return False
    return "AMX" in cap.upper()


def autocast_dtype(device: torch.device | str) -> torch.dtype | None:
    """The mixed-precision dtype worth using on ``device``, or None for plain fp32.

    * CUDA: bf16 where the GPU supports it (Ampere and newer), else fp16.
    * CPU: bf16 only when :func:`cpu_supports_bf16` says the hardware has it.
    """
    device = torch.device(device)
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if device.type == "cpu" and cpu_supports_bf16():
        return torch.bfloat16
    return None


def peak_memory_mib() -> float:
    """This process's peak resident memory so far in MiB (``getrusage``'s ``ru_maxrss``: KiB on
    Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10


def chapter_report(start: float | None = None) -> str:
    """One line for a chapter's last cell: the wall time since ``start`` (a ``time.monotonic()``
    value; default: when this module was first imported, i.e. the chapter's first cell), the peak
    memory, the mode and the CPU's bf16 support. README's table of demo times is read from it."""
    seconds = time.monotonic() - (_IMPORTED_AT if start is None else start)
    mode = "smoke" if smoke_mode() else "demo"
    bf16 = "bf16 autocast" if cpu_supports_bf16() else "fp32 (no native bf16 on this CPU)"
    return (f"chapter report: {seconds / 60:.1f} min wall, peak memory {peak_memory_mib():.0f} MiB, "
            f"{mode} mode, {torch.get_num_threads()} threads, {bf16}")
