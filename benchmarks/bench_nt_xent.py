"""Forward+backward time of ``nt_xent`` vs a straightforward implementation (and the loop reference).

Usage: .venv/bin/python benchmarks/bench_nt_xent.py [--n 512] [--d 128] [--repeats 30] [--device cpu]

"Straightforward" = what many blog posts write: exponentiate the full similarity matrix,
kill the diagonal with a large constant, divide by row sums, take the log (no log-sum-exp).
It is vectorised too, so this measures the cost of our extras (masking with -inf, the
cross-entropy kernel, input validation) and shows the naive form overflowing at small tau.
The loop reference (``nt_xent_reference``) is timed at a small N only, for context.
Reported numbers are medians over ``--repeats`` runs after warm-up, fp32, 2 CPU threads.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F

from contrastive_lab.losses import nt_xent, nt_xent_reference


def naive_nt_xent(z1: torch.Tensor, z2: torch.Tensor, temperature: float = 0.5) -> torch.Tensor:
    """Blog-style NT-Xent: exp of all similarities, diagonal removed by a large constant."""
    z = F.normalize(torch.cat([z1, z2]), dim=1)
    n2 = z.shape[0]
    sim = torch.exp((z @ z.T - 1e9 * torch.eye(n2, device=z.device)) / temperature)
    pos = torch.exp((z[: n2 // 2] * z[n2 // 2 :]).sum(dim=1) / temperature).repeat(2)
    return -torch.log(pos / sim.sum(dim=1)).mean()


def time_fwd_bwd(
    fns: dict[str, Callable], z1: torch.Tensor, z2: torch.Tensor, repeats: int, warmup: int = 3
) -> dict[str, float]:
    """Median seconds of one forward+backward of each ``fn(z1, z2)``.

    The functions take turns (round-robin), so load from other processes on a shared
    machine affects all of them alike instead of whichever happened to run at that moment.
    """
    sync = torch.cuda.synchronize if z1.device.type == "cuda" else (lambda: None)
    times: dict[str, list[float]] = {name: [] for name in fns}
    for i in range(warmup + repeats):
        for name, fn in fns.items():
            z1.grad = z2.grad = None
            sync()
            start = time.perf_counter()
            fn(z1, z2).backward()
            sync()
            if i >= warmup:
                times[name].append(time.perf_counter() - start)
    return {name: statistics.median(ts) for name, ts in times.items()}


def machine_info(device: torch.device) -> str:
    lines = [
        f"date: {datetime.datetime.now().isoformat(timespec='seconds')}",
        f"python {platform.python_version()}, torch {torch.__version__}, {platform.platform()}",
        f"cpu: {platform.processor() or platform.machine()}, os.cpu_count()={os.cpu_count()}, "
        f"torch threads={torch.get_num_threads()}, capability={torch.backends.cpu.get_cpu_capability()}",
    ]
    if device.type == "cuda":
        lines.append(f"gpu: {torch.cuda.get_device_name(device)}")
    return "\n".join(lines)


def make_inputs(n: int, d: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return tuple(torch.randn(n, d, generator=g).to(device).requires_grad_() for _ in range(2))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=512, help="pairs per batch (2N anchors)")
    parser.add_argument("--d", type=int, default=128, help="embedding dim")
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--ref-n", type=int, default=16, help="N for the (slow) loop reference")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    torch.set_num_threads(2)
    device = torch.device(args.device)
    print(machine_info(device))

    z1, z2 = make_inputs(args.n, args.d, device)
    diff = (nt_xent(z1, z2) - naive_nt_xent(z1, z2)).abs().item()
    print(f"\nN={args.n}, D={args.d}, fp32, tau=0.5, {args.repeats} repeats | |nt_xent - naive| = {diff:.2e}")
    medians = time_fwd_bwd({"nt_xent": nt_xent, "naive": naive_nt_xent}, z1, z2, args.repeats)
    for name, sec in medians.items():
        print(f"  {name:34s} fwd+bwd median {1e3 * sec:8.2f} ms")
    aligned = z1.detach() + 0.05 * z2.detach()  # views nearly aligned, as after training
    small_tau = {
        name: fn(z1.detach(), aligned, 0.01).item()
        for name, fn in [("nt_xent", nt_xent), ("naive", naive_nt_xent)]
    }
    print(f"  tau=0.01, aligned views: {small_tau} (naive overflows: exp(100) > float32 max)")

    r1, r2 = make_inputs(args.ref_n, args.d, device)
    fns = {"nt_xent": nt_xent, "nt_xent_reference (Python loops)": nt_xent_reference}
    print(f"\nN={args.ref_n} (context)")
    for name, sec in time_fwd_bwd(fns, r1, r2, max(3, args.repeats // 10)).items():
        print(f"  {name:34s} fwd+bwd median {1e3 * sec:8.2f} ms")


if __name__ == "__main__":
    main()
