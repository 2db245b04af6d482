"""Chapter 12's checked exercises: CMC's loss over the core or the full graph of M views with batch
negatives (12.1, against ``losses.cmc_loss``), SupCon's L_out (12.2, against ``losses.supcon_loss``)
and CLIP's symmetric InfoNCE with a logit scale (12.4, against ``losses.clip_loss``)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from ..losses import clip_loss, cmc_edges, cmc_loss, supcon_loss
from .core import Case, Diagnosis, Exercise, register


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# --------------------------------------------------------------------------- 12.1 CMC over a graph of views


def _multiview(m: int, n: int, d: int, seed: int, scale: float = 1.0,
               dtype: torch.dtype = torch.float32) -> list[Tensor]:
    """M views of N scenes: a shared cause plus view-specific noise, so the views agree in part."""
    g = _gen(seed)
    shared = torch.randn(n, d, generator=g)
    return [(scale * (shared + 0.8 * torch.randn(n, d, generator=g))).to(dtype) for _ in range(m)]


def _cmc_cases() -> list[Case]:
    same = torch.randn(1, 8, generator=_gen(129)).expand(6, 8).contiguous()
    return [
        Case("2 views (L, ab), 8 scenes, tau = 0.1", (_multiview(2, 8, 16, 120), 0.1, "core")),
        Case("3 views, full graph, tau = 0.07", (_multiview(3, 8, 16, 121), 0.07, "full")),
        Case("3 views, core graph (view 1 against the others)", (_multiview(3, 8, 16, 122), 0.07, "core")),
        Case("4 views, full graph, batch of 2", (_multiview(4, 2, 8, 123), 0.1, "full")),
        Case("collapsed views (every embedding equal: each direction costs log N)", ([same, same, same], 0.1, "full")),
        Case("unnormalised views (norm ~100), tau = 0.5", (_multiview(3, 8, 16, 124, scale=30.0), 0.5, "full")),
        Case("large temperature tau = 10", (_multiview(3, 8, 16, 125), 10.0, "full")),
        Case("bf16 input", (_multiview(3, 8, 16, 126, dtype=torch.bfloat16), 0.1, "full")),
    ]


def _cmc_one_direction(z: list[Tensor], temperature: float, graph: str) -> Tensor:
    """Only L^{Vi,Vj} (anchors from the first view of each pair), not L^{Vj,Vi}."""
    unit = [F.normalize(x.double(), dim=1) for x in z]
    target = torch.arange(len(z[0]))
    return sum(F.cross_entropy(unit[i] @ unit[j].T / temperature, target) for i, j in cmc_edges(len(z), graph))


def _cmc_unnormalised(z: list[Tensor], temperature: float, graph: str) -> Tensor:
    """Dot products of the raw embeddings instead of cosines."""
    zz = [x.double() for x in z]
    target = torch.arange(len(z[0]))
    total = 0
    for i, j in cmc_edges(len(z), graph):
        logits = zz[i] @ zz[j].T / temperature
        total = total + F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)
    return total


register(Exercise(
    id="12.1",
    title="CMC's loss over the core or the full graph of views",
    cases=_cmc_cases,
    reference=cmc_loss,
    hint="for every pair (i, j), i < j, of the graph (core: (0, j) for j >= 1; full: every pair) add both "
         "directions: the cross-entropy of the rows of normalize(z[i]) @ normalize(z[j]).T / tau with targets "
         "arange(N) (view i's anchors pick their scene in view j), and the same for the columns (j -> i); each "
         "direction is a mean over the N anchors, and the pairs and directions are summed (Eq. 3, 5, 6).",
    diagnoses=(
        Diagnosis("each pair's two directions are averaged (CLIP's / 2); CMC's Eq. 3 sums them",
                  lambda z, t, g: cmc_loss(z, t, g) / 2),
        Diagnosis("only one direction per pair (L^{Vi,Vj} without L^{Vj,Vi})", _cmc_one_direction),
        Diagnosis("the core graph (every view against view 1) is used where the full graph is asked for",
                  lambda z, t, g: cmc_loss(z, t, "core")),
        Diagnosis("the embeddings are not L2-normalised (dot products, not cosines)", _cmc_unnormalised),
    ),
))

# --------------------------------------------------------------------------- 12.2 SupCon's L_out


def _supcon_case(labels: list[int], views: int, d: int, seed: int, scale: float = 1.0,
                 dtype: torch.dtype = torch.float32) -> tuple[Tensor, Tensor]:
    """Features (N, V, D) clustered by label (class mean + noise), and the (N,) labels."""
    g = _gen(seed)
    y = torch.tensor(labels)
    means = torch.randn(int(y.max()) + 1, d, generator=g)
    features = means[y][:, None, :] + 0.9 * torch.randn(len(y), views, d, generator=g)
    return (scale * features).to(dtype), y


def _supcon_cases() -> list[Case]:
    return [
        Case("8 images in 2 views, 3 classes, tau = 0.1", (*_supcon_case([0, 1, 0, 2, 1, 0, 2, 2], 2, 16, 130), 0.1)),
        Case("batch of 2 images of one class", (*_supcon_case([4, 4], 2, 8, 131), 0.1)),
        Case("all labels distinct (SupCon is SimCLR's NT-Xent), tau = 0.5",
             (*_supcon_case([0, 1, 2, 3, 4, 5], 2, 8, 132), 0.5)),
        Case("a single class (every other sample a positive)", (*_supcon_case([3] * 6, 2, 8, 133), 0.1)),
        Case("3 views per image", (*_supcon_case([0, 1, 1, 0, 2], 3, 8, 134), 0.2)),
        Case("unnormalised features (norm ~100), small tau = 0.05",
             (*_supcon_case([0, 1, 0, 1, 2, 2], 2, 8, 135, scale=25.0), 0.05)),
        Case("bf16 input", (*_supcon_case([0, 1, 0, 2, 1, 0], 2, 16, 136, dtype=torch.bfloat16), 0.1)),
    ]


def _supcon_parts(features: Tensor, labels: Tensor, temperature: float, *, mask_self: bool = True):
    """Per-sample logits (view-major rows a*N + k), the self mask and the positive mask (self excluded)."""
    n, v, _ = features.shape
    z = F.normalize(features.double().transpose(0, 1).reshape(v * n, -1), dim=1)
    y = labels.repeat(v)
    eye = torch.eye(v * n, dtype=torch.bool)
    logits = z @ z.T / temperature
    if mask_self:
        logits = logits.masked_fill(eye, -math.inf)
    return logits, eye, (y[:, None] == y[None, :]) & ~eye


def _supcon_in(features, labels, temperature):
    logits, eye, pos = _supcon_parts(features, labels, temperature)
    prob = F.softmax(logits, dim=1)
    return (-torch.log((prob * pos).sum(1) / pos.sum(1))).mean()


def _supcon_self_candidate(features, labels, temperature):
    """A(i) = I: the anchor stays in its own denominator (positives still exclude it)."""
    logits, eye, pos = _supcon_parts(features, labels, temperature, mask_self=False)
    log_prob = F.log_softmax(logits, dim=1)
    return (-(log_prob * pos).sum(1) / pos.sum(1)).mean()


def _supcon_self_positive(features, labels, temperature):
    """The anchor among its own positives and candidates (no mask at all)."""
    logits, eye, pos = _supcon_parts(features, labels, temperature, mask_self=False)
    pos = pos | eye
    log_prob = F.log_softmax(logits, dim=1)
    return (-(log_prob * pos).sum(1) / pos.sum(1)).mean()


register(Exercise(
    id="12.2",
    title="SupCon's L_out",
    cases=_supcon_cases,
    reference=supcon_loss,
    hint="flatten (N, V, D) to V N unit rows z with labels y (labels.repeat(V) if the rows are view-major); "
         "logits z @ z.T / tau with the diagonal set to -inf (A(i) excludes i); log_softmax over each row; the "
         "positives of row i are the other rows with y_p = y_i (not i itself); per anchor, minus the MEAN of its "
         "positives' log-probabilities (1/|P(i)| outside the log); return the mean over the V N anchors.",
    diagnoses=(
        Diagnosis("L_in (the mean over the positives inside the log) instead of L_out", _supcon_in),
        Diagnosis("the anchor stays in its own denominator (A(i) must exclude i: mask the diagonal)",
                  _supcon_self_candidate),
        Diagnosis("the anchor is counted among its own positives", _supcon_self_positive),
        Diagnosis("the labels are ignored: only an image's other views are its positives (that is SimCLR)",
                  lambda f, y, t: supcon_loss(f, torch.arange(len(y)), t)),
        Diagnosis("the sum over the anchors (Eq. 2 as printed); the library and this exercise take the mean",
                  lambda f, y, t: supcon_loss(f, y, t) * f.shape[0] * f.shape[1]),
    ),
))

# --------------------------------------------------------------------------- 12.4 CLIP's symmetric loss


def _pairs(n: int, d: int, seed: int, scale: float = 1.0, dtype: torch.dtype = torch.float32) -> tuple[Tensor, Tensor]:
    g = _gen(seed)
    img = torch.randn(n, d, generator=g)
    txt = img + torch.randn(n, d, generator=g)
    return (scale * img).to(dtype), (scale * txt).to(dtype)


def _clip_cases() -> list[Case]:
    img, _ = _pairs(8, 16, 146)
    return [
        Case("8 pairs, logit scale 1/0.07", (*_pairs(8, 16, 140), 1 / 0.07)),
        Case("batch of 2", (*_pairs(2, 4, 141), 1 / 0.07)),
        Case("logit scale 100 (the clamp's maximum: temperature 0.01)", (*_pairs(16, 8, 142), 100.0)),
        Case("logit scale 1 (temperature 1)", (*_pairs(16, 8, 143), 1.0)),
        Case("logit scale given as a 0-dim tensor, as ClipLoss passes it", (*_pairs(8, 16, 144), torch.tensor(20.0))),
        Case("unnormalised embeddings (norm ~100)", (*_pairs(8, 16, 145, scale=25.0), 1 / 0.07)),
        Case("a collapsed text encoder (every caption the same embedding)",
             (img, torch.randn(1, 16, generator=_gen(147)).expand(8, 16).contiguous(), 1 / 0.07)),
        Case("bf16 input", (*_pairs(8, 16, 148, dtype=torch.bfloat16), 1 / 0.07)),
    ]


def _clip_logits(image_emb, text_emb, logit_scale, normalise=True, divide=False):
    i, t = image_emb.double(), text_emb.double()
    if normalise:
        i, t = F.normalize(i, dim=1), F.normalize(t, dim=1)
    s = float(logit_scale)
    return i @ t.T / s if divide else s * i @ t.T


def _ce_both(logits):
    target = torch.arange(len(logits))
    return (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2


register(Exercise(
    id="12.4",
    title="CLIP's symmetric loss with a logit scale",
    cases=_clip_cases,
    reference=clip_loss,
    hint="logits = s * normalize(I) @ normalize(T).T (N x N, the pairs on the diagonal; s multiplies, it is "
         "1/temperature); the loss is the MEAN of the cross-entropy over the rows (image -> text) and over the "
         "columns (text -> image, logits.T), each with targets arange(N). Upcast bf16 to float32.",
    diagnoses=(
        Diagnosis("only one direction (image -> text rows); CLIP averages it with text -> image (the columns)",
                  lambda i, t, s: F.cross_entropy(_clip_logits(i, t, s), torch.arange(len(i)))),
        Diagnosis("the two directions are summed, not averaged", lambda i, t, s: 2 * clip_loss(i, t, s)),
        Diagnosis("the embeddings are not L2-normalised (dot products, not cosines)",
                  lambda i, t, s: _ce_both(_clip_logits(i, t, s, normalise=False))),
        Diagnosis("the similarities are divided by the logit scale (it multiplies them: s = 1/temperature)",
                  lambda i, t, s: _ce_both(_clip_logits(i, t, s, divide=True))),
    ),
))
