"""Where the code runs: smoke mode, device choice, and bf16 autocast detection.

Everything that depends on the machine (rather than on the maths) lives here, so the
rest of the library can ask one question ("is bf16 fast here?") instead of guessing.
"""

from __future__ import annotations

import os
from functools import cache

import torch

SMOKE_ENV = "CONTRASTIVE_LAB_SMOKE"


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
