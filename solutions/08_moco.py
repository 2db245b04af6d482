"""Solutions and model answers for chapter 08 (MoCo). For instructors; `make handout` leaves this out."""

import math

import torch


def solution_08_7(key_params, query_params, m):
    """MoCo Eq. 2, theta_k <- m theta_k + (1 - m) theta_q, tensor by tensor (a new list; inputs untouched)."""
    with torch.no_grad():
        return [m * k + (1.0 - m) * q for k, q in zip(key_params, query_params)]


def solution_08_8(step, total_steps, base):
    """BYOL's schedule m_t = 1 - (1 - m_0)(cos(pi t / T) + 1) / 2, with t clamped to T."""
    t = min(step, total_steps) / total_steps
    return 1.0 - (1.0 - base) * (math.cos(math.pi * t) + 1.0) / 2.0


ANSWERS = {
    "08.1": "The symmetric loss encodes both views with both encoders, so a step costs about twice as much and "
            "sees twice the pairs; at equal wall time it is roughly a wash with doubling the epochs of the "
            "asymmetric loss, at equal epochs it usually gains a few kNN points.",
    "08.2": "m = 0.9 at the start moves the key encoder 10x faster than 0.99, so the queue is less consistent "
            "early; the cosine raises m to 1, freezing it as the lr decays. On a short CIFAR run the two end "
            "within about a point of kNN; constant 0.99 is the safer default for a small queue.",
    "08.3": "With bn_splits=1 every BN layer normalises the whole batch of 256; a permutation of the batch "
            "does not change its mean or variance (sums are order-independent), so shuffling changes nothing "
            "and the leak it was meant to block is the full-batch one, which is weak: shuffling no longer matters.",
    "08.4": "After momentum_update_, also set buffer_k <- m buffer_k + (1 - m) buffer_q for the running mean and "
            "variance (not num_batches_tracked). The key encoder's own running statistics already track the "
            "key batches it sees, so the kNN of the two variants is close; the averaged one follows the query "
            "encoder's statistics more closely.",
    "08.5": "Changing tau from 0.07 to 0.2 alone recovers a large part of the v1 -> v2 'MLP' row's gain; MoCo v2 "
            "Table 1 shows the MLP gain is measured at tau = 0.2, and at tau = 0.07 the linear head is worse.",
    "08.6": "batch_shuffle draws perm (the same on every rank: rank 0's is broadcast) and gives rank r the rows "
            "x_all[perm[rn:(r+1)n]]; batch_unshuffle gathers these slices in rank order, which is x_all[perm], "
            "and takes y[argsort(perm)][rn:(r+1)n]. Since perm[argsort(perm)] is the identity, "
            "x_all[perm][argsort(perm)] = x_all, so rank r gets back x_all[rn:(r+1)n], its own x.",
}
