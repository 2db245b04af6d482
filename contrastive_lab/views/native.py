"""The compiled fast path of :class:`~contrastive_lab.views.batched.BatchedViews` on CPU: crop +
resize + flip (``csrc/crop.c``) and colour jitter + grayscale (``csrc/colour.c``).

Chapter 01 (``chapters/01_augmentation.py``) teaches the ops these kernels speed up; the C files
sit beside them in ``contrastive_lab/views/csrc/``.

Why: at CIFAR sizes the batched view pipeline written in PyTorch is ~800 small ops per batch,
and on a 2-core CPU their per-op overhead is most of its cost: the colour jitter
(:func:`ops.color_jitter` + :func:`ops.grayscale_`) takes ~3.6 ms and the crop
(:func:`ops.crop_resize_flip`, dense matmuls) ~1.2 ms of ~6 ms per 128 views at 24 px. The
same maths as one C loop per image, while the image sits in L1 cache (and, for the crop, only
the few input pixels inside each output pixel's filter support), takes a fraction of that
(BENCHMARKS.md has the numbers).

How: the C files are plain C99 with no PyTorch headers, so any C compiler builds them in about a
second. It is compiled on first use into a cache folder (:func:`contrastive_lab.runtime.cache_dir`:
``$CONTRASTIVE_LAB_CACHE``, else ``$XDG_CACHE_HOME/contrastive_lab`` or ``~/.cache/contrastive_lab``),
named by a hash of the source, the flags, the compiler (:func:`contrastive_lab.runtime.c_compiler`)
and the CPU (it is built with ``-march=native``), written to a temporary file and renamed, so two
processes never load a half-written library. It is called through ``ctypes`` on the tensors' memory.

The PyTorch versions in :mod:`contrastive_lab.views.ops` stay the readable definitions;
``tests/test_native.py`` checks that each pair agrees (to ~1e-6: float rounding) on every op, op
order, crop box and edge case. The switch ``CONTRASTIVE_LAB_NATIVE``
(:func:`contrastive_lab.runtime.native_mode`): unset or ``auto`` = use it when it builds, and warn
once (then use PyTorch) when it does not; ``1`` = require it (an error if it cannot be built);
``0`` = never. It is read once, when the first batch of views is drawn;
``BatchedViews(native=...)`` chooses per object.
"""
from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import subprocess
import tempfile
import warnings
from functools import cache
from importlib import resources
from pathlib import Path

import torch
from torch import Tensor

from ..runtime import NATIVE_ENV, c_compiler, cache_dir, native_mode

SOURCES = ("colour.c", "crop.c")
# -fopenmp-simd honours the `#pragma omp simd` loops without linking an OpenMP runtime (PyTorch
# brings its own); -fno-math-errno / -fno-trapping-math let floorf vectorise. No -ffast-math:
# the results must follow IEEE float like PyTorch's.
FLAGS = ["-O3", "-fopenmp-simd", "-fno-math-errno", "-fno-trapping-math", "-shared", "-fPIC"]
TUNED = ["-march=native"]  # tried first; dropped if the compiler rejects it


class NativeBuildError(RuntimeError):
    """The C kernels could not be compiled or loaded."""


def _cpu_id() -> str:
    """Identifies the instruction set the library is tuned for (``-march=native``)."""
    ident = [platform.machine(), platform.processor()]
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            ident += [line for line in f if line.startswith(("flags", "model name", "Features"))][:2]
    except OSError:
        pass
    return "|".join(ident)


def _compile(cc: str, sources: list[Path], target: Path) -> None:
    """Compile ``sources`` into the shared library ``target`` (atomically: temp file, then rename)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(suffix=".so", dir=target.parent)
    os.close(fd)
    try:
        errors = ""
        for extra in (TUNED, []):
            proc = subprocess.run([cc, *FLAGS, *extra, "-o", tmp, *map(str, sources), "-lm"],
                                  capture_output=True, text=True, timeout=120)
            if proc.returncode == 0:
                os.replace(tmp, target)
                return
            errors = proc.stderr.strip()[-2000:]
        raise NativeBuildError(f"{cc} failed to compile {', '.join(p.name for p in sources)}:\n{errors}")
    except (OSError, subprocess.SubprocessError) as e:
        raise NativeBuildError(f"could not run the C compiler {cc!r}: {e}") from e
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def build() -> Path:
    """Compile the kernels if the cache does not hold them yet; return the library's path."""
    cc = c_compiler()
    if not cc:
        raise NativeBuildError("no C compiler found (looked for $CC, cc, gcc, clang)")
    try:
        version = subprocess.run([cc, "--version"], capture_output=True, text=True, timeout=60).stdout
    except (OSError, subprocess.SubprocessError) as e:
        raise NativeBuildError(f"could not run the C compiler {cc!r}: {e}") from e
    with resources.as_file(resources.files("contrastive_lab.views") / "csrc") as folder:
        sources = [Path(folder) / name for name in SOURCES]
        texts = [p.read_text(encoding="utf-8") for p in sources]
        key = "\0".join([*texts, " ".join(FLAGS + TUNED), cc, version, _cpu_id()])
        target = cache_dir() / f"views-{hashlib.sha256(key.encode()).hexdigest()[:16]}.so"
        if not target.exists():
            _compile(cc, sources, target)
    return target


@cache
def _library() -> ctypes.CDLL | None:
    """The loaded kernel, or None when the mode is off or (in auto mode) it could not be built."""
    if native_mode() == "off":
        return None
    try:
        lib = ctypes.CDLL(str(build()))
    except (NativeBuildError, OSError) as e:
        if native_mode() == "on":
            raise NativeBuildError(f"{NATIVE_ENV}=1 but the compiled view kernels are unavailable: {e}") from e
        warnings.warn(f"contrastive_lab: using the PyTorch view pipeline (same views, slower on CPU) because "
                      f"the compiled kernels are unavailable: {e}. Set {NATIVE_ENV}=0 to silence this.", stacklevel=3)
        return None
    p, i64 = ctypes.c_void_p, ctypes.c_int64
    lib.colour_jitter_gray.argtypes = [p, i64, i64, p, p, p, p, ctypes.c_int]
    lib.colour_jitter_gray.restype = ctypes.c_int
    lib.crop_resize_flip.argtypes = [p, ctypes.c_int, p, i64, i64, i64, i64, p, p, p, p, p]
    lib.crop_resize_flip.restype = ctypes.c_int
    return lib


def available() -> bool:
    """True when the compiled view kernels are in use (builds them on the first call)."""
    return _library() is not None


def supports(x: Tensor) -> bool:
    """The kernels handle contiguous uint8 or float32 B x 3 x H x W CPU batches; anything else
    (float64, CUDA) takes the PyTorch path."""
    return x.device.type == "cpu" and x.dtype in (torch.uint8, torch.float32) and x.is_contiguous() \
        and x.ndim == 4 and x.shape[1] == 3


def _loaded() -> ctypes.CDLL:
    """The loaded kernel library, or :class:`NativeBuildError` when it is not in use."""
    lib = _library()
    if lib is None:
        raise NativeBuildError(f"the compiled view kernels are not available ({NATIVE_ENV}={native_mode()}).")
    return lib


def crop_resize_flip(images: Tensor, top: Tensor, left: Tensor, height: Tensor, width: Tensor, flip: Tensor,
                     size: int) -> Tensor:
    """Per-sample crop ``[top, top + height) x [left, left + width)``, antialiased bilinear resize to
    ``size`` x ``size`` and horizontal flip where ``flip`` is set: the same map as
    :func:`ops.crop_resize_flip` (banded instead of dense resampling matrices). ``images``:
    B x 3 x H x W uint8 (scaled by 1/255) or float32, contiguous, CPU; returns float32 B x 3 x size x size.
    Every box must lie inside the image (the C checks it before reading)."""
    lib = _loaded()
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise ValueError(f"size must be a positive int, got {size!r}.")
    if not supports(images):
        raise ValueError(f"images must be a contiguous uint8 or float32 B x 3 x H x W CPU tensor, got "
                         f"{images.dtype} {tuple(images.shape)} on {images.device}.")
    b, _, h, w = images.shape
    boxes = [t.to("cpu", torch.int64).contiguous() for t in (top, left, height, width)]
    flip = flip.to("cpu", torch.uint8).contiguous()
    if any(len(t) != b for t in (*boxes, flip)):
        raise ValueError(f"crop parameters must have one entry per image ({b}).")
    out = torch.empty(b, 3, size, size, dtype=torch.float32)
    status = lib.crop_resize_flip(images.data_ptr(), int(images.dtype == torch.uint8), out.data_ptr(), b, h, w,
                                  size, *(t.data_ptr() for t in boxes), flip.data_ptr())
    if status > 0:
        i = status - 1
        raise ValueError(f"crop box of sample {i} (top {int(boxes[0][i])}, left {int(boxes[1][i])}, height "
                         f"{int(boxes[2][i])}, width {int(boxes[3][i])}) leaves the {h} x {w} image.")
    if status == -1:
        raise MemoryError("crop_resize_flip: out of memory for its weight buffers.")
    if status != 0:
        raise RuntimeError(f"crop_resize_flip: internal error {status} (filter support larger than allocated).")
    return out


def colour_jitter_gray_(x: Tensor, jitter: Tensor, order: Tensor, factors: Tensor, gray: Tensor,
                        gray_first: bool) -> Tensor:
    """In place on ``x`` (B x 3 x H x W float32, contiguous, CPU, values in [0, 1]): per-sample
    ColorJitter with op order ``order`` (B x 4) and ``factors`` (B x 4: brightness, contrast,
    saturation, hue) where ``jitter`` is set, and RandomGrayscale where ``gray`` is set (before the
    jitter if ``gray_first``). The same map as ``ops.grayscale_(ops.color_jitter(x, p), p.gray)``
    (or the reverse order). Raises :class:`NativeBuildError` when the kernel is unavailable."""
    lib = _loaded()
    if not (supports(x) and x.dtype == torch.float32):
        raise ValueError(f"x must be a contiguous float32 B x 3 x H x W CPU tensor, got {x.dtype} "
                         f"{tuple(x.shape)} on {x.device} (contiguous: {x.is_contiguous()}).")
    b, _, h, w = x.shape
    jitter = jitter.to("cpu", torch.uint8).contiguous()
    gray = gray.to("cpu", torch.uint8).contiguous()
    order = order.to("cpu", torch.int64).contiguous()
    factors = factors.to("cpu", torch.float32).contiguous()
    if not (len(jitter) == len(gray) == b and order.shape == (b, 4) and factors.shape == (b, 4)):
        raise ValueError(f"parameters for a batch of {b}: jitter and gray need {b} entries, order and "
                         f"factors shape ({b}, 4); got {len(jitter)}, {len(gray)}, {tuple(order.shape)}, "
                         f"{tuple(factors.shape)}.")
    status = lib.colour_jitter_gray(x.data_ptr(), b, h * w, jitter.data_ptr(), order.data_ptr(),
                                    factors.data_ptr(), gray.data_ptr(), int(gray_first))
    if status:
        raise ValueError(f"order of sample {status - 1} is {order[status - 1].tolist()}; it must hold the op ids "
                         "0-3 (brightness, contrast, saturation, hue).")
    return x
