"""How close is the demo step to the machine? Model FLOP utilisation, per layer, and what helps.

In one run, on one CPU process:

1. **The machine's ceiling**: the FLOP/s of a large square GEMM (fp32 at 2048; bf16 at 2048 where
   the CPU has native bf16, else at 512, as emulated bf16 runs at ~1 GFLOP/s) and of the GEMMs the
   encoder's convolutions amount to (im2col: M = batch x output positions, K = C_in x k x k,
   N = C_out), timed with ``torch.mm``.
2. **The demo step's FLOPs**, forward + backward, counted from the model by PyTorch's
   ``FlopCounterMode`` (a multiply-add counts 2), per top-level module.
3. **Model FLOP utilisation** (MFU, Chowdhery et al. 2022, App. B): step FLOPs / step seconds /
   ceiling, for the model-only bound and for the engine's full step.
4. **Where the time goes**: each convolution of the encoder alone (forward, input gradient, weight
   gradient, at its shape in the step, channels_last) against the GEMM of its size, and the profiler's
   operator table of one step.
5. **What is known to help on CPU**, each against the baseline in an interleaved measurement
   (bound img/s): a larger micro-batch (256 instead of 128 images per step), ``torch.compile``
   with the inductor CPU backend, and, for the evaluation pass (eval mode: ``embed``, the kNN
   monitor), BatchNorm folded into the convolutions. oneDNN Graph fusion
   (``torch.jit.enable_onednn_fusion``) applies only to TorchScript inference; it is not a training
   path and is not measured.

    python benchmarks/bench_utilisation.py --out benchmarks/results/bench_utilisation.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_train import batch_stream, interleaved_medians, machine, model_step  # noqa: E402

from contrastive_lab.engine import open_run, optimizer_step  # noqa: E402
from contrastive_lab.engine.step import to_device  # noqa: E402
from contrastive_lab.presets import apply_overrides, get_preset  # noqa: E402
from contrastive_lab.runtime import cpu_supports_bf16  # noqa: E402


def gemm_flops_per_s(m: int, k: int, n: int, dtype: torch.dtype, reps: int) -> float:
    """FLOP/s of ``(m, k) @ (k, n)`` in ``dtype`` (2 m k n FLOPs), the median of ``reps`` calls."""
    a, b = torch.randn(m, k).to(dtype), torch.randn(k, n).to(dtype)
    (seconds,) = interleaved_medians([lambda: torch.mm(a, b)], reps, warmup=2)
    return 2 * m * k * n / seconds


def conv_shapes(run, batch) -> list[dict]:
    """Every Conv2d of the encoder with its input shape in this step (forward hooks, one forward)."""
    shapes = []
    hooks = [m.register_forward_hook(lambda mod, inp, out, name=name: shapes.append(
        {"layer": name, "input": tuple(inp[0].shape), "output": tuple(out.shape), "weight": tuple(mod.weight.shape),
         "stride": mod.stride[0], "padding": mod.padding[0]}))
        for name, m in run.method.encoder.named_modules() if isinstance(m, nn.Conv2d)]
    try:
        with torch.no_grad(), run.autocast():
            run.model(batch)
    finally:
        for h in hooks:
            h.remove()
    seen, unique = set(), []
    for s in shapes:  # the online encoder runs once per view batch; BYOL-style targets twice: keep the first
        if s["layer"] not in seen:
            seen.add(s["layer"])
            unique.append(s)
    return unique


def conv_layer_table(shapes: list[dict], reps: int) -> list[dict]:
    """Each convolution alone, fp32 channels_last: forward + input grad + weight grad, against the GEMM
    of its im2col size (M = N_img x H_out x W_out, K = C_in k k, N = C_out) in three products."""
    rows = []
    for s in shapes:
        x = torch.randn(s["input"]).contiguous(memory_format=torch.channels_last)
        w = torch.randn(s["weight"]).contiguous(memory_format=torch.channels_last)
        first = s["input"][1] == 3  # the stem: the image needs no gradient
        x.requires_grad_(not first)
        w.requires_grad_(True)
        out = F.conv2d(x, w, stride=s["stride"], padding=s["padding"])
        grad = torch.randn_like(out).contiguous(memory_format=torch.channels_last)

        def fwd_bwd(x=x, w=w, grad=grad, stride=s["stride"], padding=s["padding"]):
            F.conv2d(x, w, stride=stride, padding=padding).backward(grad)

        (seconds,) = interleaved_medians([fwd_bwd], reps, warmup=2)
        n_img, _, h_out, w_out = s["output"]
        m, k, n = n_img * h_out * w_out, w.shape[1] * w.shape[2] * w.shape[3], w.shape[0]
        products = 2 if first else 3  # forward and weight grad (+ input grad except for the stem)
        flops = 2 * m * k * n * products
        gemm = gemm_flops_per_s(m, k, n, torch.float32, reps)
        rows.append({**{key: s[key] for key in ("layer", "input", "weight", "stride")}, "gemm_mkn": [m, k, n],
                     "ms": round(1000 * seconds, 2), "gflop": round(flops / 1e9, 3),
                     "gflop_per_s": round(flops / seconds / 1e9, 1), "same_size_gemm_gflop_per_s": round(gemm / 1e9, 1)})
    return rows


def step_flops(run, batch) -> tuple[int, dict[str, int]]:
    """Forward + backward FLOPs of one step of the method, total and per top-level submodule."""
    with FlopCounterMode(display=False, depth=2) as counter:
        with run.autocast():
            loss, _ = run.model(batch)
        loss.backward()
    run.optimizer.zero_grad(set_to_none=True)
    per_module = {}
    for name, ops in counter.get_flop_counts().items():
        if name != "Global" and name.count(".") == 1:  # e.g. SimCLR.encoder, SimCLR.head
            per_module[name] = int(sum(ops.values()))
    return counter.get_total_flops(), per_module


def profile_ops(run, batch, top: int = 12) -> list[dict]:
    """The profiler's operator table of two model steps: self CPU time per operator, largest first."""
    from torch.profiler import ProfilerActivity, profile

    model_step(run, batch)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(2):
            model_step(run, batch)
    events = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
    total = sum(e.self_cpu_time_total for e in events)
    return [{"op": e.key, "calls": e.count // 2, "self_ms_per_step": round(e.self_cpu_time_total / 2000, 2),
             "share": round(e.self_cpu_time_total / total, 4)} for e in events[:top]]


def bound_img_per_s(runs: list, batches: list, reps: int) -> list[float]:
    """Interleaved model-only bounds of several runs (images per second)."""
    seconds = interleaved_medians([lambda r=r, b=b: model_step(r, b) for r, b in zip(runs, batches)], reps)
    return [b.index.numel() / s for b, s in zip(batches, seconds)]


def fold_bn_(model: nn.Module) -> nn.Module:
    """Fold each eval-mode BatchNorm into the convolution before it (``torch.nn.utils.fusion``:
    W' = W gamma / sqrt(var + eps), b' = beta - mean gamma / sqrt(var + eps)), in place: the ResNet
    pairs (conv1, bn1), (conv2, bn2) and each downsample's (0, 1); the BN becomes ``nn.Identity``."""
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    for module in list(model.modules()):
        for conv_name, bn_name in (("conv1", "bn1"), ("conv2", "bn2"), ("0", "1")):
            conv, bn = getattr(module, conv_name, None), getattr(module, bn_name, None)
            if isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d):
                setattr(module, conv_name, fuse_conv_bn_eval(conv, bn))
                setattr(module, bn_name, nn.Identity())
    return model


def fold_bn_eval(encoder: nn.Module, images: torch.Tensor, reps: int) -> dict:
    """Eval-mode forward (the embedding pass) with BatchNorm folded into the convolutions vs as is,
    interleaved; checks that the outputs agree."""
    import copy

    encoder = encoder.eval()
    fused = fold_bn_(copy.deepcopy(encoder))
    with torch.no_grad():
        diff = float((fused(images) - encoder(images)).abs().max())
        plain, folded = interleaved_medians([lambda: encoder(images), lambda: fused(images)], reps)
    encoder.train()
    n = len(images)
    return {"batch": n, "plain_img_per_s": round(n / plain, 1), "bn_folded_img_per_s": round(n / folded, 1),
            "speedup": round(plain / folded, 3), "max_abs_diff": diff,
            "batchnorms_left": sum(isinstance(m, nn.BatchNorm2d) for m in fused.modules())}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="simclr-cifar10-cpu")
    parser.add_argument("--reps", type=int, default=10, help="timed rounds per measurement (medians)")
    parser.add_argument("--skip", nargs="*", default=[], choices=["layers", "profile", "microbatch", "compile", "fold"])
    parser.add_argument("--out", default="benchmarks/results/bench_utilisation.json")
    parser.add_argument("overrides", nargs="*", metavar="key=value")
    args = parser.parse_args(argv)
    torch.set_num_threads(2)
    cfg = apply_overrides(get_preset(args.preset), args.overrides).replace(device="cpu")
    report = {"command": "python " + " ".join(sys.argv), "machine": machine(), "preset": args.preset,
              "overrides": args.overrides, "native_bf16": cpu_supports_bf16()}

    # 1. the ceiling
    # without native bf16 the bf16 GEMM is emulated (~1 GFLOP/s on the AVX2 machine): a 512 one says so
    bf16_n = 2048 if cpu_supports_bf16() else 512
    report["ceiling_gflop_per_s"] = {
        "fp32_square": round(gemm_flops_per_s(2048, 2048, 2048, torch.float32, args.reps) / 1e9, 1),
        "bf16_square": round(gemm_flops_per_s(bf16_n, bf16_n, bf16_n, torch.bfloat16, 3) / 1e9, 1),
        "sizes": {"fp32_square": 2048, "bf16_square": bf16_n},
    }
    print(json.dumps(report, indent=2), flush=True)

    run = open_run(cfg, None, verbose=False)
    stream = batch_stream(run.batches)
    batch = to_device(next(stream), run.device, run.dtype, cfg.channels_last)
    run.model.train()
    precision = "bf16" if run.amp_dtype == torch.bfloat16 else "fp32"
    ceiling = report["ceiling_gflop_per_s"][f"{precision}_square"] * 1e9

    # 2-3. FLOPs and MFU
    flops, per_module = step_flops(run, batch)
    bound, full = interleaved_medians([lambda: model_step(run, batch), lambda: optimizer_step(run, next(stream))],
                                      args.reps)
    report["step"] = {
        "precision": precision, "images": cfg.batch_size, "views": len(batch.views),
        "gflop_fwd_bwd": round(flops / 1e9, 2), "gflop_per_module": {k: round(v / 1e9, 2) for k, v in per_module.items()},
        "bound_ms": round(1000 * bound, 1), "full_ms": round(1000 * full, 1),
        "bound_gflop_per_s": round(flops / bound / 1e9, 1), "full_gflop_per_s": round(flops / full / 1e9, 1),
        "mfu_bound": round(flops / bound / ceiling, 4), "mfu_full": round(flops / full / ceiling, 4),
    }
    print(json.dumps(report["step"], indent=2), flush=True)

    # 4. where the time goes
    if "layers" not in args.skip:
        rows = conv_layer_table(conv_shapes(run, batch), args.reps)
        report["conv_layers"] = rows
        report["conv_ms_sum"] = round(sum(r["ms"] for r in rows), 1)
        for r in rows:
            print(r, flush=True)
    if "profile" not in args.skip:
        report["profile_top_ops"] = profile_ops(run, batch)
        for r in report["profile_top_ops"]:
            print(r, flush=True)

    # 5. what helps
    trials = {}
    if "microbatch" not in args.skip:
        big = open_run(cfg.replace(batch_size=2 * cfg.batch_size), None, verbose=False)
        big_batch = to_device(next(batch_stream(big.batches)), big.device, big.dtype, cfg.channels_last)
        base, doubled = bound_img_per_s([run, big], [batch, big_batch], args.reps)
        trials["microbatch"] = {"batch": cfg.batch_size, "img_per_s": round(base, 1), "batch_2x": 2 * cfg.batch_size,
                                "img_per_s_2x": round(doubled, 1), "speedup": round(doubled / base, 3)}
        del big
        print(trials["microbatch"], flush=True)
    if "compile" not in args.skip:
        start = time.perf_counter()
        compiled = open_run(cfg.replace(compile=True), None, verbose=False)
        model_step(compiled, batch)  # compiles forward and backward
        compile_s = time.perf_counter() - start
        plain = open_run(cfg.replace(gemm_weight_grad=False), None, verbose=False)  # compile turns it off too
        base, comp = bound_img_per_s([plain, compiled], [batch, batch], args.reps)
        trials["torch_compile_inductor"] = {"img_per_s_eager": round(base, 1), "img_per_s_compiled": round(comp, 1),
                                            "speedup": round(comp / base, 3), "compile_seconds": round(compile_s, 1)}
        del compiled, plain
        print(trials["torch_compile_inductor"], flush=True)
    if "fold" not in args.skip:
        images = batch.views[0][:256].float()
        trials["eval_bn_folded"] = fold_bn_eval(run.method.encoder, images, args.reps)
    report["trials"] = trials
    print(json.dumps(trials, indent=2))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    print(f"saved {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
