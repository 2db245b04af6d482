"""Solutions and model answers for chapter 12 (views and modalities). For instructors; `make handout` leaves
this out."""

import torch
import torch.nn.functional as F


def solution_12_1(z, temperature, graph):
    """CMC Eq. 3, 5, 6: for every edge of the graph, both directions of an in-batch InfoNCE, summed."""
    m = len(z)
    edges = [(0, j) for j in range(1, m)] if graph == "core" else [(i, j) for i in range(m) for j in range(i + 1, m)]
    unit = [F.normalize(x.float(), dim=1) for x in z]
    target = torch.arange(len(z[0]))  # scene k of view i is matched by scene k of view j
    total = 0
    for i, j in edges:
        logits = unit[i] @ unit[j].T / temperature
        total = total + F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)  # L^{ij} + L^{ji}
    return total


def solution_12_2(features, labels, temperature):
    """SupCon's L_out (Eq. 2), the mean over the V N anchors."""
    n, v, _ = features.shape
    z = F.normalize(features.float().transpose(0, 1).reshape(v * n, -1), dim=1)  # row a*N + k: view a of image k
    y = labels.repeat(v)
    self_mask = torch.eye(v * n, dtype=torch.bool)
    logits = (z @ z.T / temperature).masked_fill(self_mask, float("-inf"))  # A(i) = I \ {i}
    log_prob = F.log_softmax(logits, dim=1).masked_fill(self_mask, 0.0)  # 0, not -inf, where never used
    positives = (y[:, None] == y[None, :]) & ~self_mask  # P(i): same label, not i
    per_anchor = -(log_prob * positives).sum(1) / positives.sum(1)  # 1/|P(i)| outside the log
    return per_anchor.mean()


def solution_12_4(image_emb, text_emb, logit_scale):
    """CLIP Fig. 3: the mean of the row (image -> text) and column (text -> image) cross-entropies."""
    logits = logit_scale * F.normalize(image_emb.float(), dim=1) @ F.normalize(text_emb.float(), dim=1).T
    target = torch.arange(len(logits))  # pair i sits on the diagonal
    return (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2


ANSWERS = {
    "12.1": "The full graph of three views has the edges (0,1), (0,2), (1,2) and the core graph (0,1), (0,2), so "
            "their difference is the two-view loss of views 1 and 2. Training with a third view usually moves the "
            "kNN top-1 by about a point at this budget, within the seed-to-seed spread: report both numbers with "
            "the spread before reading a gain into it.",
    "12.2": "L_in <= L_out by Jensen: -log of a mean is at most the mean of -log. Inside the log, 1/|P(i)| becomes "
            "the additive constant log |P(i)|, which does not depend on the embeddings, so the gradients with and "
            "without the division are identical.",
    "12.3": "With every label distinct, P(i) holds only the anchor's other view, so L_out is the mean over the 2N "
            "anchors of -log softmax at the other view over the 2N - 1 other samples: NT-Xent. With "
            "label_share = 0 no image keeps its label and training_labels gives image k the unique class -1 - k.",
    "12.4": "At init_temperature = 0.009 the scale exp(t) = 111 is clamped to 100, and clamp passes no gradient to "
            "its input above the bound, so t.grad = 0; at 0.011, exp(t) = 91 is below the bound and t receives "
            "the gradient of the loss.",
    "12.5": "Every held-out synonym is unknown to the tokenizer, so all ten prompts become 'a photo of a <unk> .' "
            "or 'a photo of an <unk> .' (aircraft, auto, amphibian take 'an'): two distinct prototypes. Ties go "
            "to the lowest class of each group, 0 (airplane) and 2 (bird), so the accuracy is at most their share "
            "of the test set. A byte-pair tokenizer splits an unseen word into known sub-word pieces, so the "
            "prompts stay distinct.",
    "12.6": "The mean word embedding ignores order, so permuted sentences (and templates that differ only in word "
            "order) embed identically; since the captions carry the class word, which alone determines the label, "
            "the zero-shot accuracy per template changes little.",
}
