"""Solutions and model answers for chapter 13 (scaling up). For instructors; `make handout` leaves this out."""

import math


def solution_13_7(base_lr, per_gpu_batch, gpus, rule):
    """The rule sees the global batch B = b x G (SimCLR Sec. 2.3 linear, App. B.1 sqrt)."""
    batch = per_gpu_batch * gpus
    return base_lr * batch / 256 if rule == "linear" else base_lr * math.sqrt(batch)


def solution_13_8(epochs, num_images, batch_size, gpus, step_time_s):
    """steps = epochs x floor(N / B); GPU-hours = steps x t_step x G / 3600."""
    steps = epochs * (num_images // batch_size)
    return steps * step_time_s * gpus / 3600


ANSWERS = {
    "13.1": "The run is exact because the sampler's permutation is a function of (seed, epoch) "
            "(engine.sample_seed) and the checkpoint stores the model, optimizer, scheduler, the step and "
            "torch's CPU RNG state (which draws the views); resuming at step 4 restores all of them, so steps "
            "5-8 see the same batches and views and the final weights equal the straight run's.",
    "13.2": "They still match up to float rounding: each of the 4 ranks gets B/4 images of the same global "
            "batch, the gathered loss and DDP's gradient average reproduce the single-process gradient, and "
            "the lr is computed from the global batch, so it is unchanged.",
    "13.3": "Each rank then computes the loss of all 2B anchors, and DDP averages the G identical copies of "
            "that gradient... but the all-gather passes gradient back to every rank's rows from every rank, so "
            "the summed gradient is G times too large; divide the loss by G (or keep the local anchors only).",
    "13.4": "Gradient accumulation splits each rank's batch into 2 micro-batches and contrasts within each, so "
            "an anchor sees the negatives of its micro-batch only: 2(B/2) - 2 = B - 2 with B the global batch "
            "(after gathering), half as many; the weights differ from accum_steps=1 because NT-Xent does not "
            "decompose over micro-batches.",
    "13.5": "With t(G) = t(8) x (8 / G) x 1.05^log2(G / 8), solve steps x t(G) <= 72 h for the smallest G "
            "that divides the batch; GPU-hours = wall x G grow by 5% per doubling, so the 3-day run costs "
            "1.05^log2(G / 8) times the 8-GPU GPU-hours.",
    "13.6": "The preset's global batch over 8 GPUs gives the per-GPU batch (batch_size / 8); the linear "
            "evaluation uses the step schedule (lr x0.1 at the milestone epochs, MoCo's main_lincls.py), not "
            "the cosine; the rendered script passes OVERRIDES through to the train command.",
}
