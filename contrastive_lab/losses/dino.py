"""DINO's self-distillation loss: :func:`dino_loss`, the teacher's target :func:`teacher_probabilities`,
the loop twin :func:`dino_loss_reference` and :class:`DINOLoss`.

Caron et al. 2021, "Emerging Properties in Self-Supervised Vision Transformers", Eq. 1-4 and
Algorithm 1. A student g_s and a teacher g_t (an EMA of the student) map each view to K scores;
the teacher's scores are *centred* (minus c, an EMA of the teacher's batch means) and *sharpened*
(a low temperature tau_t), the student's are softened by tau_s:

    P_t(x) = softmax((g_t(x) - c) / tau_t),   P_s(x) = softmax(g_s(x) / tau_s)        Eq. 1, 4
    L = mean over pairs (x in the global views, x' in all views, x' != x) of H(P_t(x), P_s(x'))
    H(a, b) = - sum_k a_k log b_k                                                       Eq. 2-3

Centring alone would flatten P_t to the uniform distribution, sharpening alone would let one score
dominate: the two collapses of Sec. 5.3 / Fig. 7, balanced against each other. The teacher's
probabilities get no gradient (Algorithm 1: ``t.detach()``). Multi-crop: the student sees every
view (2 global + local crops), the teacher only the global ones.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ._common import _check_embeddings, _check_positive, _compute_dtype, _no_autocast

__all__ = ["DINOLoss", "dino_loss", "dino_loss_reference", "teacher_probabilities"]


def _check_dino_inputs(student: Tensor, teacher: Tensor, center: Tensor) -> None:
    """student (V, N, K) and teacher (G, N, K) with 1 <= G <= V, V >= 2, and a centre of K entries."""
    _check_embeddings(student, "student", ndims=(3,))
    _check_embeddings(teacher, "teacher", ndims=(3,))
    _check_embeddings(center.reshape(1, -1), "center")
    v, n, k = student.shape
    if teacher.shape[1:] != (n, k) or not 1 <= teacher.shape[0] <= v or v < 2:
        raise ValueError(f"student must be (V, N, K) with V >= 2 views and teacher (G, N, K) with G <= V global "
                         f"views, got {tuple(student.shape)} and {tuple(teacher.shape)}")
    if center.numel() != k:
        raise ValueError(f"center must have K = {k} entries (one per prototype), got shape {tuple(center.shape)}")


def teacher_probabilities(teacher: Tensor, center: Tensor, teacher_temperature: float) -> Tensor:
    """P_t = softmax((g_t - c) / tau_t) over the last dimension, detached (DINO Eq. 4, Algorithm 1)."""
    tau = _check_positive(teacher_temperature, "teacher_temperature", " (DINO: 0.04 -> 0.07)")
    with _no_autocast(teacher):
        dtype = _compute_dtype(teacher, center)
        return F.softmax((teacher.to(dtype) - center.to(dtype).reshape(-1)) / tau, dim=-1).detach()


def dino_loss(student: Tensor, teacher: Tensor, center: Tensor, student_temperature: float = 0.1,
              teacher_temperature: float = 0.04) -> Tensor:
    """The mean over view pairs (g, v), v != g, of the cross-entropy H(P_t(x_g), P_s(x_v)) (DINO Eq. 3).

    Args:
        student: (V, N, K) student scores of V views of N images; views 0..G-1 are the global views.
        teacher: (G, N, K) teacher scores of the G global views (no gradient flows into them).
        center: (K,) the centre c subtracted from the teacher's scores.
        student_temperature: tau_s (DINO: 0.1). teacher_temperature: tau_t (0.04, warmed up to 0.07).
    Returns a scalar in float32 (float64 for float64 input). All V x G pairs in one ``einsum``.
    """
    tau_s = _check_positive(student_temperature, "student_temperature", " (DINO: 0.1)")
    _check_dino_inputs(student, teacher, center)
    targets = teacher_probabilities(teacher, center, teacher_temperature)  # (G, N, K)
    with _no_autocast(student):
        log_p = F.log_softmax(student.to(targets.dtype) / tau_s, dim=-1)  # (V, N, K)
        ce = -torch.einsum("gnk,vnk->gv", targets, log_p) / student.shape[1]  # mean over the N images
        g, v = ce.shape
        keep = ~torch.eye(g, v, dtype=torch.bool, device=ce.device)  # skip a view against itself
        return ce[keep].mean()


def dino_loss_reference(student: Tensor, teacher: Tensor, center: Tensor, student_temperature: float = 0.1,
                        teacher_temperature: float = 0.04) -> Tensor:
    """DINO Eq. 1-3 with loops over pairs and images and plain exp/log (slow)."""
    terms = []
    for g in range(teacher.shape[0]):
        for v in range(student.shape[0]):
            if v == g:
                continue
            for t_row, s_row in zip(teacher[g], student[v]):
                p_t = torch.exp((t_row - center) / teacher_temperature).detach()
                p_t = p_t / p_t.sum()
                p_s = torch.exp(s_row / student_temperature)
                terms.append(-(p_t * torch.log(p_s / p_s.sum())).sum())
    return torch.stack(terms).mean()


class DINOLoss(nn.Module):
    """Module form of :func:`dino_loss` with fixed temperatures (the method schedules tau_t itself)."""

    def __init__(self, student_temperature: float = 0.1, teacher_temperature: float = 0.04) -> None:
        super().__init__()
        self.student_temperature = _check_positive(student_temperature, "student_temperature")
        self.teacher_temperature = _check_positive(teacher_temperature, "teacher_temperature")

    def forward(self, student: Tensor, teacher: Tensor, center: Tensor) -> Tensor:
        return dino_loss(student, teacher, center, self.student_temperature, self.teacher_temperature)

    def extra_repr(self) -> str:
        return f"student_temperature={self.student_temperature}, teacher_temperature={self.teacher_temperature}"
