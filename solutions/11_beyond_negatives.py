"""Solutions and model answers for chapter 11 (beyond negatives). For instructors; `make handout` leaves this out."""

import torch
import torch.nn.functional as F


def solution_11_1(z):
    """SimSiam's meter: the unbiased std over the batch of each coordinate of z / ||z||, averaged over d."""
    u = F.normalize(z.float(), dim=1)  # every row on the unit sphere (bf16 upcast)
    return u.std(dim=0).mean()  # std over the N rows (N - 1 in the denominator), mean over the d dimensions


def solution_11_2():
    """z_i / ||z_i|| = +-a / ||a||: coordinate j has mean -> 0 and std -> |a_j| / ||a||; average over j."""
    a = torch.randn(1, 256, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    return float((a.abs() / a.norm()).mean())


def solution_11_3(student, teacher, center, student_temperature, teacher_temperature):
    """DINO Eq. 1-3: centred, sharpened teacher targets; cross-entropy over every (global g, view v != g) pair."""
    p_t = torch.softmax((teacher.float() - center.float()) / teacher_temperature, dim=-1)  # (G, N, K), no grad
    log_p_s = torch.log_softmax(student.float() / student_temperature, dim=-1)  # (V, N, K), stable at small tau
    losses = [-(p_t[g] * log_p_s[v]).sum(-1).mean()  # H(P_t, P_s), mean over the N images
              for g in range(len(teacher)) for v in range(len(student)) if v != g]
    return torch.stack(losses).mean()


def solution_11_4(z1, z2, lambd):
    """Barlow Twins Eq. 1-2: BatchNorm-standardised views (biased variance, eps 1e-5), C = zA^T zB / N."""
    def standardise(z):
        z = z.float()
        return (z - z.mean(0)) / torch.sqrt(z.var(0, unbiased=False) + 1e-5)

    c = standardise(z1).T @ standardise(z2) / len(z1)  # (d, d) cross-correlation
    on_diag = (1 - torch.diagonal(c)).pow(2).sum()  # invariance: C_ii -> 1
    off_diag = (c - torch.diag(torch.diagonal(c))).pow(2).sum()  # redundancy reduction: C_ij -> 0, i != j
    return on_diag + lambd * off_diag


ANSWERS = {
    "11.1": "On a ray every z_i / ||z_i|| is the same unit vector, so every coordinate has std 0 over the batch. "
            "On a line through the origin the normalised rows are +-u: each coordinate takes two values, and "
            "its std is |u_j| (exercise 2), not 0, although the batch has rank 1.",
    "11.2": "u_i = s_i a / ||a||, so coordinate j takes the values +-a_j / ||a||; with random signs its sample "
            "mean tends to 0 and its std to |a_j| / ||a||, and std(z) -> (1/d) sum_j |a_j| / ||a||. For Gaussian "
            "a, E|a_j| = sqrt(2/pi) and ||a|| ~ sqrt(d), so the limit is about sqrt(2/pi)/sqrt(d) = 0.80/sqrt(d): "
            "80 % of the healthy value, for a batch of rank 1.",
    "11.3": "H(1/K, P_s) = -(1/K) sum_k log P_s(k) >= -log((1/K) sum_k P_s(k)) = log K by Jensen (log is "
            "concave), with equality iff every P_s(k) is equal, i.e. P_s uniform; equivalently H = log K + "
            "KL(uniform || P_s). All-zero scores give uniform teacher and student, so the loss is log 8.",
    "11.4": "With d identical standardised dimensions, C_ij = var / (var + eps) ~ 1 for every i, j: the diagonal "
            "term sum_i (1 - C_ii)^2 vanishes (up to eps) and the off-diagonal term is lambda times d(d - 1) "
            "entries equal to 1, so L = lambda d (d - 1); for d = 6, 30 lambda = 0.153.",
    "11.5": "The effective rank of z falls to well under half the healthy run's within the budget, as with the "
            "stop-gradient removed: without the predictor, SimSiam's loss is minimised by any z whose two views "
            "agree, and nothing keeps the directions apart (SimSiam Table 1: 0.1 % kNN).",
    "11.6": "Without the predictor the dynamics shrink every direction (Tian et al. 2021), and weight decay is what "
            "drives the weak ones to exactly 0: with weight_decay = 0 the no-predictor run collapses more slowly. "
            "Doubling base_lr at tau = 0 makes the online network move faster than the predictor can track, so "
            "that run is the less stable of the two; at this budget expect both effects to be small and read "
            "them against the healthy run's rank.",
    "11.7": "Without centering, the teacher's sharpened softmax lets one prototype win for every image; the "
            "student copies it and the EMA teacher follows, so top_prototype_share rises towards 1 and the "
            "per-image entropy towards 0. In the healthy run the centre subtracts each prototype's batch mean, "
            "which keeps the share near its initial value. If the healthy run's share starts to rise in a longer run, "
            "the centre adapts too slowly or the teacher is too sharp: a smaller centre momentum (the centre "
            "follows the batch mean faster) or a higher tau_t counters it.",
}
