"""Evaluating a joint image-text embedding (CLIP, chapter 12): zero-shot classification from prompts,
prompt ensembling, and image->text / text->image recall@k.

* **Zero-shot** (Radford et al. 2021, Sec. 3.1.2): embed one prompt per class, "a photo of a {class}.",
  and classify an image by the prompt its embedding is most similar to (cosine); the text encoder
  *is* the classifier's weight matrix. :func:`class_prototypes` builds it, :func:`zero_shot_predict`
  applies it.
* **Prompt ensembling** (Sec. 3.1.4): average the normalised embeddings of several prompts per class
  (templates x synonyms) "in embedding space", then renormalise: one prototype per class, at the
  cost of one.
* **Retrieval** (CLIP also reports zero-shot image-text retrieval, on Flickr30k and MSCOCO): rank
  every caption for an image (and every image for a caption) by cosine and count a query a hit at k
  when a relevant item is among its top k, :func:`recall_at_k_relevance`. Generated captions repeat
  (two images of dark red cars may share one), so :func:`caption_relevance` dedupes them and marks
  every image a caption was written for.

Chapter 10's :func:`~contrastive_lab.evaluate.retrieval.recall_at_k` counts an item relevant when it
has the query's *class*; a caption belongs to *some* images, a relation no class labels express, so
the instance-level recall here takes the relevance matrix itself. (The class-level image->caption
recall is chapter 10's function, with each caption labelled by its image's class: chapter 12 uses both.)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from ..data import fill_template

Embed = Callable[[Tensor], Tensor]


@torch.no_grad()
def encode_texts(embed_text: Embed, tokens: Tensor, batch_size: int = 512) -> Tensor:
    """L2-normalised float32 CPU embeddings of (M, L) token rows, ``batch_size`` at a time."""
    if tokens.ndim != 2:
        raise ValueError(f"tokens must be (M, L), got {tuple(tokens.shape)}")
    return torch.cat([F.normalize(embed_text(t).float(), dim=1).cpu() for t in tokens.split(batch_size)])


def prompt_texts(synonyms: Sequence[Sequence[str]], templates: Sequence[str]) -> list[list[str]]:
    """For each class, every template filled with every one of its synonyms (``{cls}`` slots only)."""
    if not templates or any(not s for s in synonyms):
        raise ValueError("need at least one template and one synonym per class")
    return [[fill_template(t, s) for t in templates for s in names] for names in synonyms]


def class_prototypes(embed_text: Embed, tokenize: Callable[[Sequence[str]], Tensor],
                     synonyms: Sequence[Sequence[str]], templates: Sequence[str], device=None) -> Tensor:
    """(C, E) zero-shot weights: per class the mean of the normalised embeddings of its prompts
    (:func:`prompt_texts`), renormalised (CLIP Sec. 3.1.4, ensembling in embedding space)."""
    prompts = prompt_texts(synonyms, templates)
    flat = tokenize([p for row in prompts for p in row])
    emb = encode_texts(embed_text, flat.to(device) if device is not None else flat)
    per_class = emb.split([len(row) for row in prompts])  # classes may have different numbers of synonyms
    return F.normalize(torch.stack([e.mean(0) for e in per_class]), dim=1)


def zero_shot_predict(image_emb: Tensor, prototypes: Tensor) -> Tensor:
    """(N,) class of each image: the prototype of largest cosine (ties: the lowest class)."""
    if image_emb.ndim != 2 or prototypes.ndim != 2 or image_emb.shape[1] != prototypes.shape[1]:
        raise ValueError(f"need image_emb (N, E) and prototypes (C, E), got {tuple(image_emb.shape)} and "
                         f"{tuple(prototypes.shape)}")
    return (F.normalize(image_emb.float(), dim=1) @ F.normalize(prototypes.float(), dim=1).T).argmax(1)


def zero_shot_accuracy(image_emb: Tensor, labels: Tensor, prototypes: Tensor) -> float:
    """Top-1 accuracy in [0, 1] of :func:`zero_shot_predict`."""
    return float((zero_shot_predict(image_emb, prototypes).cpu() == labels.cpu()).float().mean())


def recall_at_k_relevance(scores: Tensor, relevant: Tensor, ks: Sequence[int] = (1, 5, 10)) -> dict[int, float]:
    """Share of queries (rows) with a relevant gallery item (column) among their k highest scores.

    ``scores`` (Q, G), ``relevant`` (Q, G) bool; every query needs at least one relevant item. Ties
    are broken by column order (``torch.topk``), which only matters for exactly equal scores."""
    if scores.shape != relevant.shape or relevant.dtype != torch.bool:
        raise ValueError(f"scores and relevant must be (Q, G), relevant bool; got {tuple(scores.shape)}, "
                         f"{tuple(relevant.shape)} {relevant.dtype}")
    if not bool(relevant.any(1).all()):
        raise ValueError("every query needs at least one relevant gallery item")
    out = {}
    for k in ks:
        if not 1 <= k <= scores.shape[1]:
            raise ValueError(f"k={k} must lie in 1..{scores.shape[1]} (the gallery size)")
        top = scores.topk(k, dim=1).indices
        out[k] = float(relevant.gather(1, top).any(1).float().mean())
    return out


def recall_at_k_relevance_reference(scores: Tensor, relevant: Tensor, ks: Sequence[int] = (1, 5, 10)) -> dict[int, float]:
    """:func:`recall_at_k_relevance` by sorting each query's gallery with Python (slow; tests)."""
    out = {}
    for k in ks:
        hits = 0
        for row, rel in zip(scores.tolist(), relevant.tolist()):
            order = sorted(range(len(row)), key=lambda j: (-row[j], j))
            hits += any(rel[j] for j in order[:k])
        out[k] = hits / len(scores)
    return out


def caption_relevance(tokens: Tensor) -> tuple[Tensor, Tensor]:
    """(unique captions (T, L), relevant (N, T) bool) for the (N, K, L) caption tokens of N images:
    caption t is relevant to image i when it is one of the captions generated for i."""
    if tokens.ndim != 3:
        raise ValueError(f"tokens must be (N, K, L), got {tuple(tokens.shape)}")
    n, k, _ = tokens.shape
    unique, inverse = torch.unique(tokens.flatten(0, 1), dim=0, return_inverse=True)
    relevant = torch.zeros(n, len(unique), dtype=torch.bool)
    relevant[torch.arange(n).repeat_interleave(k), inverse.cpu()] = True
    return unique, relevant


def retrieval_recalls(image_emb: Tensor, text_emb: Tensor, relevant: Tensor,
                      ks: Sequence[int] = (1, 5, 10)) -> dict[str, dict[int, float]]:
    """Image->text and text->image recall@k of normalised embeddings (N, E) and (T, E)."""
    scores = F.normalize(image_emb.float(), dim=1) @ F.normalize(text_emb.float(), dim=1).T
    return {"image_to_text": recall_at_k_relevance(scores, relevant, ks),
            "text_to_image": recall_at_k_relevance(scores.T, relevant.T, ks)}
