"""Weight gradient of each convolution of the demo encoder: oneDNN's kernel vs one GEMM.

Usage: python benchmarks/bench_conv_grad.py [--preset simclr-cifar10-cpu] [--repeats 20]
       [--out benchmarks/results/bench_conv_grad.json]

For every convolution of the preset's encoder, at the shapes one training step gives it (2B views
of ``image_size`` px, channels_last, bf16 and fp32), times

* ``onednn``: ``aten.convolution_backward`` asked for the weight gradient only (what ``nn.Conv2d``
  runs), and
* ``gemm``: ``G^T im2col(x)`` as ``encoders.GemmGradConv2d`` computes it, im2col included,

and reports which path the library takes for that layer (``GEMM_GRAD_MAX_POSITIONS``). Medians of
``--repeats`` calls after warm-up, the two interleaved, 2 CPU threads. Also checks that the two
agree (relative error of the bf16 results).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import torch
from torch import nn

from contrastive_lab.encoders import GEMM_GRAD_MAX_POSITIONS, gemm_weight_grad
from contrastive_lab.methods import build_method
from contrastive_lab.presets import apply_overrides, get_preset


def conv_inputs(encoder: nn.Module, x: torch.Tensor) -> list[tuple[str, nn.Conv2d, torch.Tensor]]:
    """(name, conv, its input) for every Conv2d, recorded with forward hooks on one forward pass."""
    seen = []
    hooks = [m.register_forward_hook(lambda m, inp, out, name=name: seen.append((name, m, inp[0].detach())))
             for name, m in encoder.named_modules() if isinstance(m, nn.Conv2d)]
    with torch.no_grad():
        encoder(x)
    for h in hooks:
        h.remove()
    return seen


def time_layer(conv: nn.Conv2d, x: torch.Tensor, dtype: torch.dtype, repeats: int) -> dict:
    k, s, p = conv.kernel_size[0], conv.stride[0], conv.padding[0]
    x = x.to(dtype).contiguous(memory_format=torch.channels_last)
    w = conv.weight.detach().to(dtype).contiguous(memory_format=torch.channels_last)
    y = nn.functional.conv2d(x, w, stride=s, padding=p)
    g = torch.randn_like(y).contiguous(memory_format=torch.channels_last)

    def onednn():
        return torch.ops.aten.convolution_backward(g, x, w, None, [s, s], [p, p], [1, 1], False, [0, 0], 1,
                                                   [False, True, False])[1]

    def gemm():
        return gemm_weight_grad(g, x, k, s, p)

    ref, mine = onednn().float(), gemm().float()
    times = {"onednn": [], "gemm": []}
    for _ in range(3):
        onednn(), gemm()
    for _ in range(repeats):
        for name, fn in (("onednn", onednn), ("gemm", gemm)):
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    ms = {name: round(1000 * statistics.median(v), 2) for name, v in times.items()}
    return {**{f"{name}_ms": v for name, v in ms.items()}, "speedup": round(ms["onednn"] / ms["gemm"], 2),
            "rel_error": float((mine - ref).norm() / ref.norm().clamp_min(1e-12))}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="simclr-cifar10-cpu")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--out", default="benchmarks/results/bench_conv_grad.json")
    parser.add_argument("overrides", nargs="*", metavar="key=value")
    args = parser.parse_args(argv)
    torch.set_num_threads(2)
    cfg = apply_overrides(get_preset(args.preset), args.overrides)
    torch.manual_seed(0)
    encoder = build_method(cfg).encoder.to(memory_format=torch.channels_last)
    x = torch.randn(2 * cfg.batch_size, 3, cfg.image_size, cfg.image_size).contiguous(memory_format=torch.channels_last)
    rows = []
    for name, conv, inp in conv_inputs(encoder, x):
        k, s = conv.kernel_size[0], conv.stride[0]
        out = (inp.shape[-1] + 2 * conv.padding[0] - k) // s + 1
        row = {"layer": name, "shape": f"{conv.in_channels}->{conv.out_channels} k{k} s{s}, {inp.shape[-1]}->{out} px",
               "library_path": "gemm" if out * out <= GEMM_GRAD_MAX_POSITIONS else "onednn"}
        for dtype in (torch.bfloat16, torch.float32):
            row[str(dtype).replace("torch.", "")] = time_layer(conv, inp, dtype, args.repeats)
        rows.append(row)
        print(json.dumps(row))
    report = {"command": "python benchmarks/bench_conv_grad.py " + " ".join(sys.argv[1:] if argv is None else argv),
              "date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "machine": platform.processor()
              or platform.machine(), "torch": torch.__version__, "threads": torch.get_num_threads(),
              "preset": args.preset, "batch_views": 2 * cfg.batch_size, "image_size": cfg.image_size, "layers": rows}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2))
    print(f"saved {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
