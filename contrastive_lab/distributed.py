"""Multi-process helpers: process-group setup from torchrun's environment, and all-gathers.

Contrastive losses get better with more negatives, so with data parallelism every rank
wants to contrast its anchors against the embeddings of *all* ranks (SimCLR, Chen et al.
2020, Sec. 2 "Global BN" and App. B; MoCo v3, Chen, Xie & He 2021, Alg. 1). A plain
``torch.distributed.all_gather`` returns tensors with no autograd history, so the gradient
that other ranks' losses send to *this* rank's embeddings is silently lost.
:class:`all_gather_with_grad` fixes that; its docstring proves the gradient is exact.

Every function here is a harmless identity / constant when the program was not launched
distributed, so the same training script runs on a laptop and under ``torchrun``.
"""

from __future__ import annotations

import os
from datetime import timedelta

import torch
import torch.distributed as dist
from torch import Tensor

_TORCHRUN_VARS = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")
_MAX_NDIM = 8  # all_gather_* check shapes by exchanging a fixed-size int64 vector


def is_distributed() -> bool:
    """True when a default process group exists (``torch.distributed`` is initialised)."""
    return dist.is_available() and dist.is_initialized()


def get_rank() -> int:
    """This process's rank in the default group, or 0 when not distributed."""
    return dist.get_rank() if is_distributed() else 0


def get_world_size() -> int:
    """Number of processes in the default group, or 1 when not distributed."""
    return dist.get_world_size() if is_distributed() else 1


def _env_int(name: str) -> int:
    value = os.environ[name]
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"environment variable {name}={value!r} must be an integer") from None


def init_distributed(backend: str | None = None, timeout_s: float | None = None) -> tuple[int, int, int]:
    """Join the process group described by torchrun's environment variables.

    ``torchrun --nproc_per_node=K script.py`` sets RANK, LOCAL_RANK, WORLD_SIZE, MASTER_ADDR
    and MASTER_PORT for each process. When none of them is set the script was started as
    a plain single process: nothing is initialised and ``(0, 0, 1)`` is returned. When only
    some are set, a ValueError names the missing ones (a half-configured launch would
    otherwise hang in ``init_process_group``).

    Args:
        backend: "nccl" or "gloo"; default nccl if CUDA is available, else gloo.
        timeout_s: seconds a collective may wait before failing (None: torch's default).

    Returns:
        ``(rank, local_rank, world_size)``. Calling it again when already initialised
        returns the current values without re-initialising.
    """
    present = [v for v in _TORCHRUN_VARS if v in os.environ]
    if not present:
        return 0, 0, 1
    missing = [v for v in _TORCHRUN_VARS if v not in os.environ]
    if missing:
        raise ValueError(
            f"distributed launch is half-configured: {present} are set but {missing} are not; "
            "launch with torchrun, or unset these variables for a single-process run"
        )
    rank, local_rank, world_size = _env_int("RANK"), _env_int("LOCAL_RANK"), _env_int("WORLD_SIZE")
    if is_distributed():
        return get_rank(), local_rank, get_world_size()
    backend = backend or ("nccl" if torch.cuda.is_available() else "gloo")
    if backend == "nccl" and not torch.cuda.is_available():
        raise ValueError("backend 'nccl' needs CUDA, which is not available here; use backend='gloo'")
    if backend == "nccl":
        torch.cuda.set_device(local_rank)  # one GPU per process, chosen by its local rank
    kwargs = {} if timeout_s is None else {"timeout": timedelta(seconds=timeout_s)}
    dist.init_process_group(backend=backend, init_method="env://", rank=rank, world_size=world_size, **kwargs)
    return rank, local_rank, world_size


def cleanup_distributed() -> None:
    """Destroy the default process group if one exists (no-op otherwise).

    A barrier first: otherwise a fast rank can tear down its gloo pairs while a slow rank is still
    finishing the last collective (e.g. the all_reduce in a backward pass), which intermittently
    aborts the slow process ("terminate called without an active exception").
    """
    if is_distributed():
        dist.barrier()
        dist.destroy_process_group()


def _check_same_shape(x: Tensor) -> None:
    """Raise ValueError on every rank if the ranks' tensors differ in shape.

    ``all_gather`` needs identical shapes; with different ones it fails with an opaque
    backend error or hangs. One tiny extra collective buys a clear message.
    """
    if x.ndim > _MAX_NDIM:
        raise ValueError(f"all_gather helpers support at most {_MAX_NDIM} dims, got shape {tuple(x.shape)}")
    code = torch.full((_MAX_NDIM + 1,), -1, dtype=torch.int64, device=x.device)
    code[0] = x.ndim
    code[1 : x.ndim + 1] = torch.tensor(x.shape, dtype=torch.int64)
    codes = [torch.empty_like(code) for _ in range(get_world_size())]
    dist.all_gather(codes, code)
    shapes = [tuple(c[1 : int(c[0]) + 1].tolist()) for c in codes]
    if len(set(shapes)) != 1:
        raise ValueError(
            f"all_gather needs the same tensor shape on every rank, got {shapes} (index = rank); "
            "use the same per-rank batch size (e.g. drop_last=True in the DataLoader)"
        )


def _gather_cat(x: Tensor) -> Tensor:
    parts = [torch.empty_like(x) for _ in range(get_world_size())]
    dist.all_gather(parts, x.contiguous())
    return torch.cat(parts, dim=0)


class _AllGatherWithGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:  # noqa: D102
        ctx.n = x.shape[0]
        return _gather_cat(x)

    @staticmethod
    def backward(ctx, grad_out: Tensor) -> Tensor:  # noqa: D102
        grad = grad_out.contiguous()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        start = get_rank() * ctx.n
        return grad[start : start + ctx.n]


def all_gather_with_grad(x: Tensor) -> Tensor:
    """Concatenate ``x`` from all ranks along dim 0, keeping the gradient path to every rank.

    Forward: ``y = cat([x_0, ..., x_{W-1}])`` (rank order). Backward: the incoming
    ``dL_r/dy`` is all-reduced (SUM) and this rank keeps its slice. This is the pattern of
    SimCLR's TPU code (cross-replica gather) and MoCo v3's ``concat_all_gather`` with grad.
    Identity when not distributed. Every rank must pass the same shape (checked).

    Gradient convention, and why it is exact under DDP
    --------------------------------------------------
    Let rank r hold embeddings x_r = f(b_r; theta) of its local batch b_r and compute a
    local loss L_r (a mean over its own anchors; it depends on x_r directly and on every
    x_s through y). Define the global loss as the mean over ranks, L = (1/W) sum_r L_r;
    with equal local batches this is exactly the single-process loss over the global
    batch (a mean over all anchors). Rank r's autograd gives, for its input x_r,

        g_r = dL_r/dx_r|direct + sum_s dL_s/dy[slice r]       (the all-reduce adds the sum)
            = d(sum_s L_s)/dx_r = W * dL/dx_r.

    Back-propagating g_r through f on rank r gives g_r * dx_r/dtheta, and DDP *averages*
    parameter gradients over ranks:

        (1/W) sum_r W * dL/dx_r * dx_r/dtheta = sum_r dL/dx_r * dx_r/dtheta = dL/dtheta,

    the gradient of the single-process loss over the global batch. So: keep each rank's
    loss a *mean over its local anchors*, do not rescale it, and let DDP average. (The
    per-rank input gradient itself is W times the single-process one; tests check exactly
    this factor.) Without the all-reduce, g_r would miss the sum over s != r and DDP would
    produce a wrong gradient.
    """
    if not is_distributed():
        return x
    _check_same_shape(x)
    return _AllGatherWithGrad.apply(x)


@torch.no_grad()
def all_gather_no_grad(x: Tensor) -> Tensor:
    """Concatenate ``x`` from all ranks along dim 0 (rank order) without autograd history.

    For tensors that get no gradient anyway, e.g. MoCo's momentum-encoder keys before they
    are enqueued (He et al. 2019, Alg. 1; MoCo code ``concat_all_gather``). Identity (a
    detached view) when not distributed. Every rank must pass the same shape (checked).
    """
    if not is_distributed():
        return x.detach()
    _check_same_shape(x)
    return _gather_cat(x)


def all_reduce_sum_with_grad(x: Tensor) -> Tensor:
    """sum_r x_r on every rank, keeping the gradient path to every rank (identity when not distributed).

    Backward: the incoming gradients are all-reduced (SUM), as for :func:`all_gather_with_grad`.
    When every rank computes the same loss L from the summed tensor (Barlow Twins' cross-correlation
    over the global batch, Zbontar et al. 2021, Algorithm 1), rank r's gradient for its own part is
    W * dL/dx_r, and DDP's average over ranks gives exactly the single-process gradient dL/dtheta.
    """
    if not is_distributed():
        return x
    from torch.distributed.nn.functional import all_reduce  # autograd-aware collectives

    return all_reduce(x.contiguous(), op=dist.ReduceOp.SUM)


@torch.no_grad()
def mean_over_all_rows(x: Tensor) -> Tensor:
    """The mean of the rows of ``x`` over every rank's rows: sum_r sum_i x_ri / (W N), no gradient.

    DINO's batch centre (Caron et al. 2021, ``update_center``: ``all_reduce`` of the batch sum, divided
    by the global count); the mean over dim 0 when not distributed. Every rank must pass the same N.
    """
    total = x.sum(dim=0)
    if is_distributed():
        _check_same_shape(x)
        dist.all_reduce(total)
    return total / (x.shape[0] * get_world_size())


def all_gather_object(obj):
    """A list with ``obj`` from every rank (rank order); ``[obj]`` when not distributed."""
    if not is_distributed():
        return [obj]
    out = [None] * get_world_size()
    dist.all_gather_object(out, obj)
    return out


# ----------------------------------------------------------------------------------------
# Reductions the training loop uses (plain values when not distributed)
# ----------------------------------------------------------------------------------------


def mean_over_ranks(values: dict[str, Tensor], device: torch.device) -> dict[str, float]:
    """Each scalar averaged over all ranks with one all-reduce (rank r's loss is the mean over its
    own images; the mean over ranks is the loss of the global batch). Plain floats when not distributed."""
    keys = sorted(values)
    if not keys:
        return {}
    stacked = torch.stack([torch.as_tensor(values[k]).detach().double().reshape(()).to(device) for k in keys])
    if is_distributed():
        dist.all_reduce(stacked)
        stacked /= get_world_size()
    return dict(zip(keys, stacked.tolist()))


def min_over_ranks(value: int, device: torch.device) -> int:
    """The smallest of the ranks' integers, on every rank (``value`` itself when not distributed)."""
    if not is_distributed():
        return value
    tensor = torch.tensor([-float(value)], device=device, dtype=torch.float64)
    dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
    return int(-tensor.item())


def any_rank(flag: bool, device: torch.device) -> bool:
    """True on every rank if ``flag`` is true on any rank (so all ranks leave the loop at the same step)."""
    if not is_distributed():
        return bool(flag)
    value = torch.tensor([float(bool(flag))], device=device)
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item())
