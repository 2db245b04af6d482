"""The training engine: one loop for every method, on a CPU, one GPU, or many GPUs under torchrun.

=====================  ========================================================================
``loop.py``            :func:`train` (the whole algorithm, top to bottom) and :func:`run_steps`
``run.py``             :class:`Run` and :func:`open_run`: setup, resume, checkpoint, finish
``step.py``            one optimizer step: forward/backward in micro-batches, clip, hooks
``setup.py``           config -> data, views, device, precision, lr, the model made ready (DDP)
``batches.py``         in-memory batches with views drawn on the device (exact resume)
``loader.py``          ImageFolder batches through DataLoader workers, sharded over ranks
``budget.py``          time budgets and fitting the cosine schedule to one
``signals.py``         SIGINT / SIGTERM / SIGUSR1: finish the step, save, stop
``logging.py``         metrics.csv, TensorBoard, progress bars
``evaluation.py``      the classifier's test top-1 at the end of a linear/fine-tuning run
``figures.py``         the run folder's figures
=====================  ========================================================================

The design choices, and why:

* **Data on the device.** CIFAR-sized datasets live as one uint8 tensor on the device; each step
  indexes a batch and :class:`~contrastive_lab.views.BatchedViews` draws the views of every image in
  one call. ImageFolder data streams through persistent DataLoader workers instead.
* **Exact resume.** Batch order and views derive from the seed and saved generator states, so a
  resumed run ends bit-identical to an uninterrupted one; a resume with a changed config is refused.
* **Safe checkpoints.** Atomic writes, ``weights_only`` reads, and never a NaN checkpoint
  (:mod:`contrastive_lab.checkpoints`). A signal finishes the step, saves and stops.
* **DDP, not a custom engine.** ``batch_size`` is the *global* batch, split evenly over ranks, so
  the lr does not depend on the number of GPUs; rank 0 writes the files.
* **A method is a protocol** (:mod:`contrastive_lab.methods.base`): forward on a ``Batch``, an
  optional ``after_step``, its ``state_dict`` and its ``encoder``. Nothing here names a method.
"""

from .batches import TensorBatches, check_batch_split, epoch_order, slice_params, training_images
from .budget import ScheduleFitter, steps_that_fit
from .evaluation import classifier_top1
from .loader import EpochBatchSampler, LoaderBatches, SeededViews, decode_transform, sample_seed
from .logging import METRIC_FIELDS, MetricsLog, read_metrics
from .loop import run_steps, train
from .run import Run, open_run, save
from .setup import (
    center_crop_pipeline,
    config_eval_transform,
    encode,
    load_split,
    model_dtype,
    prepare_model,
    resolve_device,
    resolve_lr,
    resolve_precision,
    view_recipe,
    wrap_ddp,
)
from .signals import StopSignals, exit_code
from .step import TrainingDiverged, forward_backward, optimizer_step

__all__ = [
    "METRIC_FIELDS", "EpochBatchSampler", "LoaderBatches", "MetricsLog", "Run", "ScheduleFitter", "SeededViews",
    "StopSignals", "TensorBatches", "TrainingDiverged", "center_crop_pipeline", "check_batch_split",
    "classifier_top1", "config_eval_transform", "decode_transform", "encode", "epoch_order", "exit_code",
    "forward_backward", "load_split", "model_dtype", "open_run", "optimizer_step", "prepare_model",
    "read_metrics", "resolve_device", "resolve_lr", "resolve_precision", "run_steps", "sample_seed", "save",
    "slice_params", "steps_that_fit", "train", "training_images", "view_recipe", "wrap_ddp",
]  # fmt: skip
