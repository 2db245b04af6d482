"""Plausible wrong answers to chapter 10's checked exercises, with the problem the checker must name."""

import torch
import torch.nn.functional as F


def dot_product_scores(train, test, k):
    sims = test.float() @ train.float().T
    return 1 - sims.topk(k, dim=1).values.mean(1)


def kth_neighbour(train, test, k):
    sims = F.normalize(test.float(), dim=1) @ F.normalize(train.float(), dim=1).T
    return 1 - sims.sort(dim=1, descending=True).values[:, k - 1]


def euclidean_distance(train, test, k):
    a, b = F.normalize(test.float(), dim=1), F.normalize(train.float(), dim=1)
    return torch.cdist(a, b).topk(k, dim=1, largest=False).values.mean(1)


def strict_pairs(scores, is_novel):
    s = scores.float()
    return float((s[is_novel][:, None] > s[~is_novel][None, :]).float().mean())


def lower_is_novel(scores, is_novel):
    s = scores.double()
    diff = s[~is_novel][None, :] - s[is_novel][:, None]
    return float(((diff > 0).double() + 0.5 * (diff == 0).double()).mean())


def mean_over_all_pairs(scores, is_novel):
    s = scores.double()
    diff = s[:, None] - s[None, :]
    return float(((diff > 0).double() + 0.5 * (diff == 0).double()).mean())  # every pair, not (novel, normal)


def list_positions(gallery, queries, candidates, k):
    out = []
    for q, cand in zip(queries, candidates):
        sims = F.normalize(gallery[cand.clamp(min=0)].float(), dim=1) @ F.normalize(q.float(), dim=0)
        sims[cand < 0] = -2.0
        out.append(sims.topk(k).indices)
    return torch.stack(out)


def minus_one_is_last_row(gallery, queries, candidates, k):
    out = []
    for q, cand in zip(queries, candidates):
        sims = F.normalize(gallery[cand].float(), dim=1) @ F.normalize(q.float(), dim=0)
        out.append(cand[sims.topk(k).indices])
    return torch.stack(out)


def dot_product_rerank(gallery, queries, candidates, k):
    out = []
    for q, cand in zip(queries, candidates):
        cand = cand[cand >= 0]
        out.append(cand[(gallery[cand].float() @ q.float()).topk(k).indices])
    return torch.stack(out)


MISTAKES = {
    "10.1": [
        (dot_product_scores, "not L2-normalised"),
        (kth_neighbour, "the k-th neighbour alone"),
        (euclidean_distance, None),
    ],
    "10.2": [
        (strict_pairs, "ties count 0"),
        (lower_is_novel, "the direction is flipped"),
        (mean_over_all_pairs, None),
    ],
    "10.3": [
        (list_positions, "positions in the candidate list"),
        (minus_one_is_last_row, "a -1 slot (not found) was read as gallery row -1"),
        (dot_product_rerank, "not L2-normalised"),
    ],
}
