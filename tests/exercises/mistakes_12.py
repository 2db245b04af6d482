"""Plausible wrong answers to chapter 12's checked exercises, with the problem the checker must name."""

import torch
import torch.nn.functional as F


def _edges(m, graph):
    return [(0, j) for j in range(1, m)] if graph == "core" else [(i, j) for i in range(m) for j in range(i + 1, m)]


def _direction(a, b, tau):
    """-mean_k log softmax_j(a_k . b_j / tau) at j = k, by rows."""
    a, b = F.normalize(a.double(), dim=1), F.normalize(b.double(), dim=1)
    logp = torch.log_softmax(a @ b.T / tau, dim=1)
    return -logp.diagonal().mean()


def cmc_averaged(z, tau, graph):
    return sum((_direction(z[i], z[j], tau) + _direction(z[j], z[i], tau)) / 2 for i, j in _edges(len(z), graph))


def cmc_one_way(z, tau, graph):
    return sum(_direction(z[i], z[j], tau) for i, j in _edges(len(z), graph))


def cmc_always_core(z, tau, graph):
    return sum(_direction(z[0], z[j], tau) + _direction(z[j], z[0], tau) for j in range(1, len(z)))


def cmc_mean_over_pairs(z, tau, graph):
    edges = _edges(len(z), graph)
    return sum(_direction(z[i], z[j], tau) + _direction(z[j], z[i], tau) for i, j in edges) / len(edges)


def _rows(features, labels):
    n, v, _ = features.shape
    z = F.normalize(features.double(), dim=2).reshape(n * v, -1)  # image-major: row k*V + a
    return z, labels.repeat_interleave(v)


def supcon_l_in(features, labels, tau):
    z, y = _rows(features, labels)
    losses = []
    for i in range(len(z)):
        others = [a for a in range(len(z)) if a != i]
        denom = torch.logsumexp(torch.stack([z[i] @ z[a] / tau for a in others]), 0)
        pos = [p for p in others if y[p] == y[i]]
        mean_prob = torch.stack([torch.exp(z[i] @ z[p] / tau - denom) for p in pos]).mean()
        losses.append(-torch.log(mean_prob))
    return torch.stack(losses).mean()


def supcon_self_in_denominator(features, labels, tau):
    z, y = _rows(features, labels)
    logp = torch.log_softmax(z @ z.T / tau, dim=1)  # the diagonal is never masked
    pos = (y[:, None] == y[None, :]).double() - torch.eye(len(z), dtype=torch.float64)
    return (-(logp * pos).sum(1) / pos.sum(1)).mean()


def supcon_self_positive(features, labels, tau):
    z, y = _rows(features, labels)
    logp = torch.log_softmax(z @ z.T / tau, dim=1)
    pos = (y[:, None] == y[None, :]).double()  # includes i itself
    return (-(logp * pos).sum(1) / pos.sum(1)).mean()


def supcon_other_view_only(features, labels, tau):
    z, _ = _rows(features, labels)
    n, v, _ = features.shape
    img = torch.arange(n).repeat_interleave(v)
    eye = torch.eye(len(z), dtype=torch.bool)
    logp = torch.log_softmax((z @ z.T / tau).masked_fill(eye, float("-inf")), dim=1).masked_fill(eye, 0)
    pos = (img[:, None] == img[None, :]) & ~eye
    return (-(logp * pos).sum(1) / pos.sum(1)).mean()


def _unit(x):
    return x.double() / x.double().norm(dim=1, keepdim=True)


def clip_rows_only(image_emb, text_emb, scale):
    logits = float(scale) * _unit(image_emb) @ _unit(text_emb).T
    return -torch.log_softmax(logits, dim=1).diagonal().mean()


def clip_summed(image_emb, text_emb, scale):
    logits = float(scale) * _unit(image_emb) @ _unit(text_emb).T
    return -torch.log_softmax(logits, dim=1).diagonal().mean() - torch.log_softmax(logits, dim=0).diagonal().mean()


def clip_not_normalised(image_emb, text_emb, scale):
    logits = float(scale) * image_emb.double() @ text_emb.double().T
    return -(torch.log_softmax(logits, 1).diagonal().mean() + torch.log_softmax(logits, 0).diagonal().mean()) / 2


def clip_scale_as_log(image_emb, text_emb, scale):
    """The logit scale read as its log t (exp applied once more)."""
    logits = torch.exp(torch.as_tensor(float(scale), dtype=torch.float64)) * _unit(image_emb) @ _unit(text_emb).T
    target = torch.arange(len(logits))
    return (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2


MISTAKES = {
    "12.1": [
        (cmc_averaged, "averaged"),
        (cmc_one_way, "only one direction"),
        (cmc_always_core, "the core graph"),
        (cmc_mean_over_pairs, None),
    ],
    "12.2": [
        (supcon_l_in, "L_in"),
        (supcon_self_in_denominator, "own denominator"),
        (supcon_self_positive, "among its own positives"),
        (supcon_other_view_only, "the labels are ignored"),
    ],
    "12.4": [
        (clip_rows_only, "only one direction"),
        (clip_summed, "summed, not averaged"),
        (clip_not_normalised, "not L2-normalised"),
        (clip_scale_as_log, None),
    ],
}
