"""One optimizer step: forward and backward of a batch (in micro-batches if asked), gradient
clipping, the optimizer and schedule steps, and the method's ``after_step`` hook (MoCo's momentum
update and enqueue, InstDisc's bank write). Chapter 05 writes this step by hand once.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import torch
from torch import Tensor, nn

from ..methods import Batch, Progress
from ..optim import clip_grad


class TrainingDiverged(RuntimeError):
    """The loss, a gradient or a weight became NaN or infinite; the last good checkpoint was kept."""


def forward_backward(model: nn.Module, batch: Batch, accum_steps: int, autocast,
                     check_loss: Callable[[Tensor], None]) -> tuple[Tensor, dict[str, Tensor]]:
    """Forward and backward of this rank's batch as ``accum_steps`` equal micro-batches.

    Micro-batch ``a`` has loss L_a; ``L_a / A`` is back-propagated, so the accumulated gradient is

        g = (1/A) sum_a grad L_a,

    the mean of the micro-batch gradients. For a loss that is a mean over independent samples, in a
    network without batch-coupled layers, that is exactly the full-batch gradient. **NT-Xent is not
    such a loss**: each micro-batch contrasts only within itself (under DDP, within the global
    micro-batch gathered over ranks), so an anchor sees 2B/A - 2 negatives instead of 2B - 2, and
    BN normalises over micro-batches. Accumulation saves memory, not the large-batch effect
    (SimCLR Fig. 9 is about negatives). MoCo's momentum update and enqueue run once per optimizer
    step, after it (``after_step``), with the keys of all micro-batches. Under DDP the gradient
    all-reduce runs once, with the last micro-batch (``no_sync`` on the others). ``check_loss(loss)``
    runs before each backward (NaN guard). Returns the mean micro-batch loss and the mean of each
    log, accumulated in float64 (so the logged mean over ranks is exact).
    """
    no_sync = getattr(model, "no_sync", None)
    total, logs_sum = torch.zeros((), dtype=torch.float64), {}
    parts = batch.chunk(accum_steps) if accum_steps > 1 else [batch]
    for a, part in enumerate(parts):
        last = a == len(parts) - 1
        with contextlib.nullcontext() if (last or no_sync is None) else no_sync():
            with autocast:
                loss, logs = model(part)
            check_loss(loss)
            (loss if accum_steps == 1 else loss / accum_steps).backward()
        total = total + loss.detach().double().cpu()
        for k, v in logs.items():
            logs_sum[k] = logs_sum.get(k, 0.0) + torch.as_tensor(v).detach().double()
    n = len(parts)
    return total / n, {k: v / n for k, v in logs_sum.items()}


def to_device(batch: Batch, device: torch.device, dtype: torch.dtype, channels_last: bool) -> Batch:
    """The batch on the device: views in the model's dtype (and channels_last), indices and labels too."""
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    views = [v.to(device, dtype, non_blocking=True).contiguous(memory_format=fmt) for v in batch.views]
    labels = batch.labels.to(device) if batch.labels is not None else None
    return Batch(views, batch.index.to(device), labels, {k: v.to(device) for k, v in batch.extras.items()})


def optimizer_step(run, batch: Batch) -> dict[str, Tensor]:
    """One step of ``run`` (an :class:`~contrastive_lab.engine.run.Run`) on ``batch``: forward,
    backward, clip, optimizer and lr-schedule steps, then the method's ``after_step``. Returns the logs
    (``loss`` and the method's own); ``run.step`` counts the step."""
    batch = to_device(batch, run.device, run.dtype, run.cfg.channels_last)
    run.optimizer.zero_grad(set_to_none=True)
    loss, logs = forward_backward(run.model, batch, run.cfg.accum_steps, run.autocast(), run.check_loss)
    if run.cfg.grad_clip:
        try:
            clip_grad(run.method.parameters(), run.cfg.grad_clip)
        except RuntimeError as err:  # clip_grad raises on a non-finite gradient norm
            raise TrainingDiverged(f"non-finite gradient at step {run.step + 1}: {err}; the update was not "
                                   f"applied and the last good checkpoint {run.ckpt_path} was kept") from None
    run.optimizer.step()
    run.scheduler.step()
    run.step += 1
    hook = getattr(run.method, "after_step", None)
    if hook is not None:
        hook(Progress(run.step, run.total_steps, run.steps_per_epoch))
    return {"loss": loss, **logs}
