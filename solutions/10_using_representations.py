"""Solutions and model answers for chapter 10 (using representations). For instructors; `make handout` leaves this out."""

import torch
import torch.nn.functional as F


def solution_10_1(train_features, test_features, k):
    """Mean cosine distance to the k nearest training rows: 1 - mean of the k largest cosines."""
    train = F.normalize(train_features.double(), dim=1)  # unit rows: dot product = cosine
    test = F.normalize(test_features.double(), dim=1)
    nearest = (test @ train.T).topk(k, dim=1).values  # (N_test, k), the k most similar
    return 1.0 - nearest.mean(1)


def solution_10_2(scores, is_novel):
    """Mean over (novel, normal) pairs of 1 [novel scores higher] + 1/2 [tie]."""
    s = scores.double()
    diff = s[is_novel][:, None] - s[~is_novel][None, :]  # (n_novel, n_normal)
    return float(((diff > 0).double() + 0.5 * (diff == 0).double()).mean())


def solution_10_3(gallery, queries, candidates, k):
    """Exact cosine between each query and its valid candidates, the k best gallery ids first."""
    out = []
    for query, cand in zip(queries, candidates):
        cand = cand[cand >= 0]  # -1: the index found nothing for this slot
        rows = F.normalize(gallery[cand].double(), dim=1)
        sims = rows @ F.normalize(query.double(), dim=0)
        out.append(cand[sims.topk(k).indices])  # gallery ids, not positions in the list
    return torch.stack(out)


ANSWERS = {
    "10.1": "The mean over k = 50 neighbours smooths the score towards the local density of the whole training "
            "set and blurs small novel clusters; k = 1 is the most sensitive and the noisiest (one near-duplicate "
            "decides). A small k (5-10) is usually best on h; the k-th distance alone (Sun et al.) behaves like "
            "the mean for small k and is more robust to one outlying neighbour.",
    "10.2": "Expect a vehicle with a close sibling in training (automobile, with truck kept) to be the hardest to "
            "detect: its test images land next to trucks, because the encoder's neighbourhoods encode appearance "
            "(shape, background, colour) rather than the class name. An animal like cat has dog as a sibling too; "
            "the ranking says which appearance the encoder separates, not which label.",
    "10.3": "Re-ranking 100 IVF-PQ candidates with exact cosines recovers most of recall@10 (the true neighbours are "
            "usually in the shortlist, only mis-ordered by the 32-byte codes), at the cost of keeping the float32 "
            "vectors: N x D x 4 bytes, about 98 MiB for 100 000 x 256, i.e. the flat index's memory again on top "
            "of the 4.4 MiB of codes (faiss keeps them in IndexRefineFlat).",
    "10.4": "Memory grows linearly with M (about 2 M links of 4 bytes per vector on the bottom layer, 8 M with "
            "faiss's layout) and build time roughly with M x ef_construction; recall at efSearch 32 climbs fast "
            "from M = 8 to 16 and saturates by 32. The knee is usually M = 16 with ef_construction 40-200: past it "
            "memory and build time keep growing for little recall.",
    "10.5": "With 50 labels (1%) the linear probe on fixed features is usually better or equal: augmented views "
            "regularise, but 50 images give too little signal for the extra noise; at 10% the augmented linear "
            "evaluation catches up or passes the fixed-feature probe.",
    "10.6": "With max_steps raised, from scratch keeps improving at 100% of the labels and may pass the fine-tuned "
            "SSL encoder only after many epochs, if at all: on 5085 images a ResNet-10 from scratch overfits, "
            "while the SSL initialisation carries what pre-training learned. Index h for image search (z is "
            "made invariant to colour and other cues a user may search by); after fine-tuning h is pulled "
            "towards the classes, better for class retrieval and worse for near-duplicates and style.",
}
