"""Solutions and model answers for chapter 05 (SimCLR end to end). For instructors; `make handout` leaves this out."""

import torch
import torch.nn.functional as F


def solution_05_1(z, temperature):
    """Rows 2k and 2k + 1 are a pair: the target of row i is i XOR 1; otherwise NT-Xent as in chapter 04."""
    z = F.normalize(z.float(), dim=1)
    logits = z @ z.T / temperature
    logits.fill_diagonal_(float("-inf"))  # k != i
    targets = torch.arange(len(z)) ^ 1  # 0 <-> 1, 2 <-> 3, ...
    return F.cross_entropy(logits, targets)


def solution_05_6(w, grad, buf, lr, momentum, weight_decay, trust_coefficient=1e-3, eps=1e-8):
    """LARS (You et al. 2017, Alg. 1) with PyTorch's momentum convention, for one tensor."""
    g = grad + weight_decay * w  # L2 weight decay first: it is part of the gradient the ratio sees
    w_norm, g_norm = torch.linalg.vector_norm(w), torch.linalg.vector_norm(g)
    trust = trust_coefficient * w_norm / (g_norm + eps) if w_norm > 0 and g_norm > 0 else 1.0
    new_buf = momentum * buf + trust * g
    return w - lr * new_buf, new_buf


def solution_05_7():
    """0.3 B / 256 = 0.075 sqrt(B)  =>  sqrt(B) = 0.075 * 256 / 0.3 = 64  =>  B = 4096."""
    return (0.075 * 256 / 0.3) ** 2


ANSWERS = {
    "05.2": "With one batch of 2N, BN normalises every view with the statistics of all 2N views; with two calls, "
            "each view is normalised with its own half's statistics (N views of one augmentation draw), so the "
            "loss and gradients differ slightly, and the positives now share statistics the negatives of the "
            "other half do not: the leak SimCLR's global BN avoids (Sec. 2.2).",
    "05.3": "k = 1 is the noisiest (one neighbour decides); k = 20 and k = 200 are close, and k = 200 is the most "
            "stable for a random encoder, whose nearest neighbours are individually unreliable but whose "
            "similarity-weighted vote over many neighbours averages the noise out.",
    "05.4": "With the nonlinear simclr_v1 head, z can discard information nonlinearly; the kNN on h typically "
            "catches up with or overtakes the kNN on z, as SimCLR's Sec. 4.2 predicts for h vs z.",
    "05.5": "No: with a cosine schedule over twice the epochs the lr at the shorter run's last epoch is still "
            "half the peak, not zero; the short run's final kNN benefits from the annealing to lr 0 at its end, "
            "so the longer run's curve passes below that point at the same epoch and overtakes it later.",
    "05.7": "At B = 4096 both give 4.8 (SimCLR's ImageNet setting). Below it the square-root rule gives the "
            "larger lr: at B = 128, 0.075 x sqrt(128) = 0.85 against 0.3 x 128/256 = 0.15.",
}
