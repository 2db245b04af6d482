"""Chapter 12's pieces without training: the losses of CMC, AMDIM, SupCon and CLIP against their loop
twins in float64 (values and gradients), the Lab channel views, the caption generator and its
tokenizer, the text encoders, zero-shot classification and recall@k."""

from __future__ import annotations

import math

import pytest
import torch

from contrastive_lab.data import CaptionTokenizer, generate_captions, image_attributes
from contrastive_lab.data.captions import CIFAR10_SYNONYMS, HELDOUT_TEMPLATES, caption_vocabulary
from contrastive_lab.evaluate import (
    caption_relevance,
    class_prototypes,
    recall_at_k_relevance,
    recall_at_k_relevance_reference,
    zero_shot_accuracy,
    zero_shot_predict,
)
from contrastive_lab.losses import (
    ClipLoss,
    amdim_nce,
    amdim_nce_reference,
    clip_loss,
    cmc_edges,
    cmc_loss,
    cmc_loss_reference,
    nt_xent,
    supcon_loss,
    supcon_loss_reference,
)
from contrastive_lab.text import BagOfWords, TextTransformer, build_text_encoder
from contrastive_lab.views.colorspace import rgb_to_lab, rgb_to_lab_reference, sobel_magnitude, split_channels

CLASSES = list(CIFAR10_SYNONYMS)


def f64(*shape, seed=0, grad=True):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g, dtype=torch.float64).requires_grad_(grad)


def assert_same_value_and_grad(fast, slow, inputs):
    torch.testing.assert_close(fast, slow, rtol=1e-12, atol=1e-12)
    g_fast = torch.autograd.grad(fast, inputs, retain_graph=True)
    g_slow = torch.autograd.grad(slow, inputs)
    for a, b in zip(g_fast, g_slow):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


# ------------------------------------------------------------------------------------------ losses


@pytest.mark.parametrize("graph", ["core", "full"])
@pytest.mark.parametrize("bank", [False, True])
def test_cmc_loss_equals_its_loop_twin_with_gradients(graph, bank):
    z = [f64(5, 4, seed=s) for s in range(3)]
    keys = [f64(5, 4, seed=10 + s) for s in range(3)] if bank else None
    negatives = [f64(7, 4, seed=20 + s) for s in range(3)] if bank else None
    inputs = z + (keys + negatives if bank else [])
    assert_same_value_and_grad(cmc_loss(z, 0.2, graph, keys, negatives), cmc_loss_reference(z, 0.2, graph, keys, negatives),
                               inputs)


def test_cmc_graphs_pair_the_views_as_eq_5_and_6():
    assert cmc_edges(2, "core") == cmc_edges(2, "full") == [(0, 1)]
    assert cmc_edges(4, "core") == [(0, 1), (0, 2), (0, 3)]
    assert cmc_edges(4, "full") == [(0, 1), (0, 2), (0, 3), (1, 2), (1, 3), (2, 3)]
    with pytest.raises(ValueError, match="graph must be one of"):
        cmc_edges(3, "star")
    with pytest.raises(ValueError, match="both keys and negatives"):
        cmc_loss([f64(3, 2), f64(3, 2, seed=1)], keys=[f64(3, 2), f64(3, 2)])


def test_two_view_cmc_with_batch_negatives_is_twice_clip_at_a_fixed_temperature():
    a, b = f64(6, 3, grad=False), f64(6, 3, seed=1, grad=False)
    torch.testing.assert_close(cmc_loss([a, b], 0.25), 2 * clip_loss(a, b, 4.0), rtol=1e-12, atol=0)


def test_amdim_nce_equals_its_loop_twin_with_gradients():
    g, local = f64(4, 6), f64(4, 3, 6, seed=1)
    assert_same_value_and_grad(amdim_nce(g, local, 2.0, 0.1), amdim_nce_reference(g, local, 2.0, 0.1), [g, local])
    # without clipping or penalty the loss falls when the positives' scores rise
    aligned = amdim_nce(local.detach().mean(1), local.detach(), clip=1e6, penalty=0.0)
    assert aligned < amdim_nce(g.detach(), local.detach(), clip=1e6, penalty=0.0)


def test_supcon_equals_its_loop_twin_with_anchors_whose_only_positive_is_their_other_view():
    features = f64(6, 2, 5)
    labels = torch.tensor([0, 1, 0, 2, 1, 3])  # images 3 and 5: no other image of their class
    assert_same_value_and_grad(supcon_loss(features, labels, 0.3), supcon_loss_reference(features, labels, 0.3),
                               [features])


def test_supcon_with_one_view_leaves_anchors_without_a_positive_out_of_the_mean():
    features = f64(5, 1, 4)
    labels = torch.tensor([0, 0, 1, 2, 1])  # image 3 has no positive at all
    fast = supcon_loss(features, labels, 0.5)
    assert_same_value_and_grad(fast, supcon_loss_reference(features, labels, 0.5), [features])
    (grad,) = torch.autograd.grad(supcon_loss(features, labels, 0.5), features)
    assert grad[3].abs().max() > 0  # image 3 is still a candidate (a negative) of the other anchors
    with pytest.raises(ValueError, match="no anchor has a positive"):
        supcon_loss(f64(4, 1, 3), torch.arange(4))


def test_supcon_with_one_positive_per_anchor_is_nt_xent():
    features = f64(8, 2, 6)
    fast = supcon_loss(features, torch.arange(8), 0.2)
    reference = nt_xent(features[:, 0], features[:, 1], 0.2)
    assert_same_value_and_grad(fast, reference, [features])


def test_clip_loss_is_symmetric_and_its_learnt_scale_clamps_at_100():
    i_e, t_e = f64(5, 4, grad=False), f64(5, 4, seed=1, grad=False)
    torch.testing.assert_close(clip_loss(i_e, t_e, 7.0), clip_loss(t_e, i_e, 7.0), rtol=1e-12, atol=0)
    loss = ClipLoss(init_temperature=0.005)  # exp(t) = 200 > 100
    value = loss(i_e, t_e)
    assert float(loss.logit_scale().detach()) == 100.0
    torch.testing.assert_close(value, clip_loss(i_e, t_e, 100.0), rtol=1e-12, atol=1e-12)
    value.backward()
    assert float(loss.log_logit_scale.grad) == 0.0  # clamped: t learns nothing until it comes back below
    free = ClipLoss(init_temperature=0.07)
    free(i_e, t_e).backward()
    assert float(free.log_logit_scale.grad) != 0.0


# ------------------------------------------------------------------------------------------ Lab views


def test_rgb_to_lab_matches_the_formula_and_known_colours():
    pixels = torch.rand(20, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    lab = rgb_to_lab(pixels.view(20, 3, 1, 1)).view(20, 3)
    for p, got in zip(pixels.tolist(), lab):
        torch.testing.assert_close(got, torch.tensor(rgb_to_lab_reference(p), dtype=torch.float64))
    known = torch.tensor([[1.0, 1, 1], [0, 0, 0], [1, 0, 0]], dtype=torch.float64).view(3, 3, 1, 1)
    expected = torch.tensor([[100.0, 0, 0], [0, 0, 0], [53.24, 80.09, 67.20]], dtype=torch.float64)
    torch.testing.assert_close(rgb_to_lab(known).view(3, 3), expected, atol=0.02, rtol=0)


def test_channel_views_split_lightness_from_colour():
    gray = torch.full((2, 3, 8, 8), 0.5, dtype=torch.float64)
    gray[1] = 0.8
    L, ab, grad = split_channels(gray, ["L", "ab", "grad"])
    assert L.shape == (2, 1, 8, 8) and ab.shape == (2, 2, 8, 8) and grad.shape == (2, 1, 8, 8)
    assert not torch.allclose(L[0], L[1])  # lightness differs ...
    torch.testing.assert_close(ab[0], ab[1], atol=1e-4, rtol=0)  # ... the colour of two grays does not (D65 rounding)
    assert grad.abs().max() < 1e-5  # a flat image has no edges
    step = torch.zeros(1, 1, 6, 6, dtype=torch.float64)
    step[..., 3:] = 1.0
    magnitude = sobel_magnitude(step)[0, 0]
    assert magnitude[:, 2:4].min() == pytest.approx(4.0) and magnitude[:, :2].max() < 1e-5
    with pytest.raises(ValueError, match="two or more distinct names"):
        split_channels(gray, ["L", "depth"])


# ------------------------------------------------------------------------------------------ captions


def coloured_images() -> torch.Tensor:
    """A bright red image, a dark blue one, a gray one with horizontal stripes."""
    images = torch.zeros(3, 3, 16, 16, dtype=torch.uint8)
    images[0, 0] = 255
    images[0, 1:] = 160
    images[1, 2] = 90
    images[2] = 150
    images[2, :, ::4] = 20
    return images


def test_image_attributes_measure_brightness_colour_and_edges():
    attrs = image_attributes(coloured_images())
    words = lambda key, table: [table[i] if i >= 0 else None for i in attrs[key].tolist()]
    assert words("light", ("dark", "muted", "bright")) == ["bright", "dark", "muted"]
    assert words("colour", ("red", "orange", "yellow", "green", "blue", "purple", "brown", "gray")) == ["red", "blue",
                                                                                                         "gray"]
    assert words("lines", ("horizontal", "vertical")) == [None, None, "horizontal"]


def test_caption_generator_is_deterministic_under_a_seed():
    images, labels = coloured_images(), torch.tensor([0, 8, 9])
    first = generate_captions(images, labels, CLASSES, per_image=6, seed=3)
    assert first == generate_captions(images, labels, CLASSES, per_image=6, seed=3)
    assert first != generate_captions(images, labels, CLASSES, per_image=6, seed=4)
    assert all(len(c) == 6 for c in first)
    assert all(any(s in text for s in CIFAR10_SYNONYMS["airplane"][0]) for text in first[0])
    many = generate_captions(images, labels, CLASSES, per_image=40, seed=0)
    assert any("red" in t for t in many[0]) and not any("horizontal" in t for t in many[0])
    assert any("horizontal lines" in t for t in many[2]) and not any("red" in t for t in many[2])


def test_tokenizer_knows_only_the_training_vocabulary():
    tok = CaptionTokenizer.for_classes(CLASSES)
    ids = tok.encode(["a photo of a car.", "a photo of an aircraft."])
    assert ids.shape == (2, tok.length) and ids[0, 0] == 2 and (ids[0] == 3).sum() == 1
    assert tok.decode(ids) == ["a photo of a car .", "a photo of an <unk> ."]  # the held-out synonym
    assert "aircraft" not in caption_vocabulary(CLASSES) and "is" not in tok.ids  # held out, both
    unknown = [t for t in HELDOUT_TEMPLATES if (tok.encode([t.format(cls="car")]) == 1).any()]
    assert unknown == ["this is a {cls}."]  # the other held-out templates reuse training words in new frames
    long = tok.encode(["a " * 40])
    assert long[0, -1] == 3  # truncated texts still end in <eos>


# ------------------------------------------------------------------------------------------ text encoders


def test_text_encoders_read_the_caption_up_to_eos_and_the_transformer_reads_the_order():
    torch.manual_seed(0)
    tok = CaptionTokenizer.for_classes(CLASSES)
    transformer, bag = TextTransformer(len(tok), 16, 1, 2, tok.length), BagOfWords(len(tok), 16, tok.length)
    a, b = tok.encode(["a red car."]), tok.encode(["car red a."])
    padded = a.clone()
    padded[0, -1] = 5  # a token after <eos> (where only padding belongs) is never read
    for encoder in (transformer, bag):
        assert encoder(a).shape == (1, 16)
    torch.testing.assert_close(transformer(a), transformer(padded))
    torch.testing.assert_close(bag(a), bag(b))  # order-free
    assert not torch.allclose(transformer(a), transformer(b))
    with pytest.raises(ValueError, match="token ids must lie in"):
        transformer(torch.full((1, 4), len(tok)))
    with pytest.raises(ValueError, match="must be one of"):
        build_text_encoder("lstm", len(tok))


# ------------------------------------------------------------------------------------------ zero-shot, retrieval


def test_zero_shot_with_the_true_text_embeddings_as_prototypes_is_exact():
    tok = CaptionTokenizer.for_classes(CLASSES)
    table = torch.randn(len(tok), 32, generator=torch.Generator().manual_seed(0))
    embed_text = lambda tokens: table[tokens].sum(1)  # a fixed text encoder: the sum of word vectors
    synonyms = [CIFAR10_SYNONYMS[c][0] for c in CLASSES]
    prototypes = class_prototypes(embed_text, tok.encode, synonyms, ["a photo of a {cls}.", "the {cls}."])
    assert prototypes.shape == (10, 32)
    torch.testing.assert_close(prototypes.norm(dim=1), torch.ones(10))
    labels = torch.arange(50) % 10
    scale = 0.5 + 1.5 * torch.rand(50, 1, generator=torch.Generator().manual_seed(1))  # cosine ignores the norm
    gap = torch.cdist(prototypes, prototypes).add(torch.eye(10) * 9).min()  # closest two classes
    noise = torch.randn(50, 32, generator=torch.Generator().manual_seed(2))
    images = scale * (prototypes[labels] + 0.2 * gap * noise / noise.norm(dim=1, keepdim=True))
    assert torch.equal(zero_shot_predict(images, prototypes), labels)
    assert zero_shot_accuracy(images, labels, prototypes) == 1.0
    assert zero_shot_accuracy(-images, labels, prototypes) < 0.5  # the opposite direction is not a class


def test_recall_at_k_counts_a_hit_when_a_relevant_item_is_in_the_top_k():
    scores = torch.tensor([[0.9, 0.1, 0.5], [0.1, 0.3, 0.2]])
    relevant = torch.tensor([[False, False, True], [True, False, False]])
    assert recall_at_k_relevance(scores, relevant, (1, 2, 3)) == {1: 0.0, 2: 0.5, 3: 1.0}
    random = torch.randn(30, 12, generator=torch.Generator().manual_seed(2))
    rel = torch.rand(30, 12, generator=torch.Generator().manual_seed(3)) < 0.2
    rel[:, 0] |= ~rel.any(1)
    assert recall_at_k_relevance(random, rel, (1, 3, 7)) == pytest.approx(recall_at_k_relevance_reference(random, rel, (1, 3, 7)))


def test_caption_relevance_dedupes_captions_shared_by_images():
    tokens = torch.tensor([[[2, 5, 3], [2, 6, 3]], [[2, 6, 3], [2, 7, 3]]])  # "6" is a caption of both images
    unique, relevant = caption_relevance(tokens)
    assert unique.tolist() == [[2, 5, 3], [2, 6, 3], [2, 7, 3]]
    assert relevant.tolist() == [[True, True, False], [False, True, True]]
    assert math.isclose(recall_at_k_relevance(torch.eye(2, 3), relevant, (1,))[1], 1.0)
