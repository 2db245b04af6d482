"""Solutions and model answers for chapter 09 (CPC). For instructors; `make handout` leaves this out."""

import math

import torch
import torch.nn.functional as F


def solution_09_7(latents, contexts, w, k):
    """L_k: predictions W_k c_t for t < T - k, positives z_{t+k}, candidates every z_s with s >= k of the batch."""
    steps = latents.shape[1]
    p = (contexts[:, : steps - k] @ w.T).reshape(-1, w.shape[0]).float()  # row i: one (b, t, column)
    z = latents[:, k:].reshape(-1, w.shape[0]).float()  # row i: its future; all rows: the candidates
    logits = p @ z.T  # Eq. 3's log-bilinear scores z_j^T W_k c_t
    return F.cross_entropy(logits, torch.arange(len(p)))  # Eq. 4, mean over the predictions


def solution_09_8():
    """N = 8 sequences x (20 - 4) candidate steps = 128 candidates, all scored alike: log 128."""
    return math.log(8 * (20 - 4))


ANSWERS = {
    "09.1": "With negatives only from the same sequence, the hidden class (shared by the whole sequence) never "
            "separates a positive from a negative, so the model learns the local phase: k=1 accuracy stays "
            "high but the probe on c_t falls towards chance. With negatives only from other sequences the "
            "class is what distinguishes them: the probe improves, while the fine temporal detail is learned "
            "less. The negatives from other sequences teach the hidden class.",
    "09.2": "Without phase noise the future is a deterministic function of the past and accuracy stays high for "
            "every k; with phase_noise=0.2 the phase decorrelates as k grows, so accuracy falls with k. What "
            "remains predictable far ahead is the slow feature (pitch, the class), which is what CPC's "
            "long-range predictions must encode.",
    "09.3": "A bilinear critic x^T W c can represent the linear part of the optimal log density ratio but not "
            "its quadratic ||x||^2 term, so its log N - L_N stays below the optimal critic's; with enough "
            "data it converges to the best bilinear approximation, and both stay capped at log N.",
    "09.4": "Batch norm mixes statistics over the batch and positions, so a latent can carry information about "
            "its neighbours (and its own future): the training accuracy at k=1 is higher (it partly cheats), "
            "but the linear probe is worse. Layer norm predicts 'worse' and learns the better representation.",
    "09.5": "Subclass ImageCPC, compute the loss on the batch and on view.flip(-2) (rows reversed, so the "
            "context runs bottom-up), and return their sum (or mean). The extra direction adds predictions "
            "and negatives per image; CPC v2 Fig. 3 reports a gain from it, and the probe usually improves a "
            "little at the cost of a second forward pass.",
    "09.6": "Test first: perturb the patches of row r and check with autograd that the contexts of rows < r have "
            "zero gradient with respect to them (in training mode). A GRU over the row means is causal by "
            "construction along the rows; pooling loses the column detail, so the probe is usually similar "
            "or slightly lower than RowCausalContext's.",
}
