"""Solutions and model answers for chapter 04 (NT-Xent). For instructors; `make handout` leaves this out."""

import math

import torch
import torch.nn.functional as F


def solution_04_2(z1, z2, temperature):
    """NT-Xent as SimCLR's Eq. 1, vectorised: a (2N, 2N) cosine matrix, diagonal masked, cross-entropy."""
    z = F.normalize(torch.cat([z1, z2]).float(), dim=1)  # 2N unit rows (bf16 input upcast)
    logits = z @ z.T / temperature
    logits.fill_diagonal_(float("-inf"))  # k != i: an anchor is not its own candidate
    n = len(z1)
    targets = torch.cat([torch.arange(n, 2 * n), torch.arange(n)])  # row i's positive: the other view
    return F.cross_entropy(logits, targets)  # mean over the 2N anchors


def solution_04_6():
    """Each anchor picks its positive among 2N - 1 candidates: the bound is log(2N - 1) = log(8191)."""
    return math.log(2 * 4096 - 1)


ANSWERS = {
    "04.1": "Interleaving changes which row holds which view, not which pairs are positives: the positive of "
            "row 2k is row 2k+1 and vice versa, so the targets become i XOR 1; the loss (a mean over the same "
            "2N anchors with the same candidates) is unchanged up to float rounding.",
    "04.3": "Through the normalisation, d z_hat / d z = (I - z_hat z_hat^T) / ||z||: a projection onto the "
            "tangent plane of the sphere at z_hat. Any component along z_hat would only change the norm, which "
            "the loss does not see, so the gradient is orthogonal to z_hat.",
    "04.5": "Alignment alone collapses: every embedding moves to one point, uniformity rises to 0 (its maximum). "
            "Adding lambda * uniformity spreads the points again; the picture approaches NT-Xent's, which "
            "optimises both terms at once (Wang & Isola 2020, Thm. 1).",
}
