"""A captioned image set built offline: captions generated from each image's label and from what
can be measured in its pixels, the word tokenizer over their vocabulary, and the ``cifar10_captions``
dataset whose caption tokens travel with the images. Chapter 12 trains CLIP on it.

CLIP (Radford et al. 2021) learns from 400M image-text pairs collected from the internet (Sec. 2.2).
A book that runs offline cannot download those, so it *writes* captions, and says exactly how:

* the **class word** comes from the label, through one of a few synonyms (``car``, ``automobile``,
  ``sedan``), so the text encoder must learn that they name one thing;
* **attributes measured on the image**: its brightness (mean luma, three bins), its dominant colour
  (the saturation-weighted hue histogram, seven names) and the orientation of its edges (the Sobel
  energy along x against y), so a caption also says something that differs between images of a class;
* several **sentence templates** put these words in different frames.

So a caption knows the class and three coarse facts about the pixels, nothing else: a CLIP trained
on them can at best learn the class (plus colour, brightness and orientation); beyond that the
captions carry no information. Some templates and one synonym per class are **held out** of
training (:data:`HELDOUT_TEMPLATES`, :data:`CIFAR10_SYNONYMS`) for zero-shot prompts. The
vocabulary is built from the training templates and synonyms only (:func:`caption_vocabulary`), so
a held-out *template* reuses known words in a new order, while a held-out *synonym* is a word the
text encoder never saw (``<unk>``): chapter 12 measures both. Generation is seeded and deterministic.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

from .cifar import load_cifar10
from .tensor import ImageTensorDataset

# class -> (synonyms used in training captions, synonym held out for zero-shot prompts)
CIFAR10_SYNONYMS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "airplane": (("airplane", "plane", "jet"), ("aircraft",)),
    "automobile": (("car", "automobile", "sedan"), ("auto",)),
    "bird": (("bird", "songbird"), ("fowl",)),
    "cat": (("cat", "kitten", "kitty"), ("feline",)),
    "deer": (("deer", "fawn", "stag"), ("doe",)),
    "dog": (("dog", "puppy", "hound"), ("pooch",)),
    "frog": (("frog", "toad"), ("amphibian",)),
    "horse": (("horse", "pony", "stallion"), ("mare",)),
    "ship": (("ship", "boat", "vessel"), ("freighter",)),
    "truck": (("truck", "lorry"), ("pickup",)),
}
TRAIN_TEMPLATES = (
    "a photo of a {cls}.",
    "a {light} photo of a {cls}.",
    "a photo of a {colour} {cls}.",
    "a {colour} {cls} in a {light} photo.",
    "a close photo of the {cls}, mostly {colour}.",
    "the {cls} in this {light} picture.",
    "a {light} image of a {colour} {cls}.",
    "a {cls} with {lines} lines.",  # only for images whose edges have an orientation
)
# zero-shot prompts never seen in training ("is" is not in the vocabulary: it becomes <unk>)
HELDOUT_TEMPLATES = ("a picture of a {cls}.", "this is a {cls}.", "the {cls}.", "an image of the {cls}.",
                     "a {cls} in a photo.")
LIGHT_WORDS = ("dark", "muted", "bright")  # mean luma < 0.42 | in between | > 0.54 (cifar10-mini tertiles)
LUMA_BINS = (0.42, 0.54)
COLOUR_WORDS = ("red", "orange", "yellow", "green", "blue", "purple", "brown", "gray")
HUE_EDGES = (15, 45, 70, 165, 260, 345)  # degrees: red | orange | yellow | green | blue | purple | red
LINE_WORDS = ("horizontal", "vertical")
SPECIAL_TOKENS = ("<pad>", "<unk>", "<sos>", "<eos>")  # ids 0..3
CAPTION_LENGTH = 16  # tokens per caption, <sos> and <eos> included (CLIP: 76, Sec. 2.4)


def image_attributes(images: Tensor) -> dict[str, Tensor]:
    """What the captions say about each uint8 image (N, 3, H, W), as indices into the word lists:
    ``light`` (:data:`LIGHT_WORDS`), ``colour`` (:data:`COLOUR_WORDS`), ``lines`` (0 horizontal,
    1 vertical, -1 neither: the Sobel energy along one axis is not 1.5x the other's)."""
    if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"image_attributes expects uint8 images (N, 3, H, W), got {images.dtype} {tuple(images.shape)}")
    x = images.float() / 255
    luma = 0.299 * x[:, 0] + 0.587 * x[:, 1] + 0.114 * x[:, 2]
    light = torch.bucketize(luma.mean((1, 2)), torch.tensor(LUMA_BINS))
    value, low = x.max(1).values, x.min(1).values
    sat = (value - low) / value.clamp_min(1e-6)
    r, g, b = x.unbind(1)
    hue = torch.rad2deg(torch.atan2(3**0.5 * (g - b), 2 * r - g - b)) % 360  # the hexagonal hue angle
    bins = torch.bucketize(hue, torch.tensor(HUE_EDGES, dtype=torch.float32)) % 6  # 6 -> red again
    weight = sat * (value > 0.2)
    histogram = torch.zeros(len(x), 6).scatter_add_(1, bins.flatten(1), weight.flatten(1))
    colour = histogram.argmax(1)
    warm_and_dark = (colour <= 2) & (value.mean((1, 2)) < 0.5)
    colour = torch.where(warm_and_dark, torch.full_like(colour, 6), colour)  # dark red/orange/yellow: brown
    colour = torch.where((sat > 0.25).float().mean((1, 2)) < 0.15, torch.full_like(colour, 7), colour)  # gray
    gy, gx = torch.gradient(luma, dim=(1, 2))
    ex, ey = gx.pow(2).mean((1, 2)), gy.pow(2).mean((1, 2))
    lines = torch.full_like(colour, -1)
    lines = torch.where(ey > 1.5 * ex, torch.zeros_like(lines), lines)  # brightness changes along y: horizontal
    lines = torch.where(ex > 1.5 * ey, torch.ones_like(lines), lines)
    return {"light": light, "colour": colour, "lines": lines}


def fill_template(template: str, cls: str, light: str = "", colour: str = "", lines: str = "") -> str:
    """A template with its slots filled, "a" before a vowel turned into "an"."""
    text = template.format(cls=cls, light=light, colour=colour, lines=lines)
    return re.sub(r"\ba (?=[aeiou])", "an ", text)


def class_synonyms(classes: Sequence[str], held_out: bool = False) -> list[tuple[str, ...]]:
    """The training (or held-out) synonyms of each class; a class outside :data:`CIFAR10_SYNONYMS` is
    named by itself in training and has no held-out synonym."""
    table = [CIFAR10_SYNONYMS.get(c, ((c.replace("_", " "),), ())) for c in classes]
    return [held if held_out else train for train, held in table]


def generate_captions(images: Tensor, labels: Tensor, classes: Sequence[str], per_image: int = 5,
                      seed: int = 0) -> list[list[str]]:
    """``per_image`` captions of each image, drawn from :data:`TRAIN_TEMPLATES` and the training
    synonyms with ``numpy.random.default_rng(seed)``: the same arguments give the same captions."""
    if isinstance(per_image, bool) or not isinstance(per_image, int) or per_image < 1:
        raise ValueError(f"per_image must be a positive int, got {per_image!r}")
    if labels.shape != (len(images),) or (labels < 0).any():
        raise ValueError("generate_captions needs one class label >= 0 per image")
    attributes = {k: v.tolist() for k, v in image_attributes(images).items()}
    synonyms, rng = class_synonyms(classes), np.random.default_rng(seed)
    captions = []
    for i, label in enumerate(labels.tolist()):
        lines = attributes["lines"][i]
        templates = TRAIN_TEMPLATES if lines >= 0 else TRAIN_TEMPLATES[:-1]
        words = dict(light=LIGHT_WORDS[attributes["light"][i]], colour=COLOUR_WORDS[attributes["colour"][i]],
                     lines=LINE_WORDS[lines] if lines >= 0 else "")
        picks = rng.integers(0, len(templates), per_image), rng.integers(0, len(synonyms[label]), per_image)
        captions.append([fill_template(templates[t], synonyms[label][s], **words) for t, s in zip(*picks)])
    return captions


def words_of(text: str) -> list[str]:
    """Lower-cased words and the punctuation marks ``.`` and ``,``: the tokenizer's units."""
    return re.findall(r"[a-z]+|[.,]", text.lower())


def caption_vocabulary(classes: Sequence[str]) -> list[str]:
    """Every word training captions can contain, sorted, after the special tokens: the words of
    :data:`TRAIN_TEMPLATES`, the training synonyms and the attribute words (never the held-out ones)."""
    words = {w for t in TRAIN_TEMPLATES for w in words_of(re.sub(r"\{\w+\}", " ", t))}  # the slots left out
    words |= {"an"} | {w for syn in class_synonyms(classes) for s in syn for w in words_of(s)}
    words |= set(LIGHT_WORDS) | set(COLOUR_WORDS) | set(LINE_WORDS)
    return list(SPECIAL_TOKENS) + sorted(words)


class CaptionTokenizer:
    """Words -> ids over a fixed vocabulary (CLIP's is 49,152 byte-pair tokens, Sec. 2.4; ours is the
    caption vocabulary). ``encode`` gives ``[<sos>, w_1 .. w_n, <eos>, <pad> ...]`` of ``length``
    tokens; an unknown word becomes ``<unk>``; a text too long keeps its first length - 2 words."""

    def __init__(self, vocabulary: Sequence[str], length: int = CAPTION_LENGTH):
        if list(vocabulary[: len(SPECIAL_TOKENS)]) != list(SPECIAL_TOKENS) or len(set(vocabulary)) != len(vocabulary):
            raise ValueError(f"vocabulary must start with {SPECIAL_TOKENS} and hold each word once")
        if length < 3:
            raise ValueError(f"length must be >= 3 (<sos>, a word, <eos>), got {length}")
        self.vocabulary, self.length = list(vocabulary), int(length)
        self.ids = {w: i for i, w in enumerate(self.vocabulary)}

    @classmethod
    def for_classes(cls, classes: Sequence[str], length: int = CAPTION_LENGTH) -> CaptionTokenizer:
        """The tokenizer of the captions of ``classes`` (:func:`caption_vocabulary`)."""
        return cls(caption_vocabulary(classes), length)

    def __len__(self) -> int:
        return len(self.vocabulary)

    def encode(self, texts: Sequence[str]) -> Tensor:
        """(len(texts), length) int64 token ids."""
        out = torch.zeros(len(texts), self.length, dtype=torch.long)
        for row, text in enumerate(texts):
            ids = [self.ids.get(w, 1) for w in words_of(text)][: self.length - 2]
            out[row, : len(ids) + 2] = torch.tensor([2, *ids, 3])
        return out

    def decode(self, tokens: Tensor) -> list[str]:
        """The words of each row of ``tokens`` (..., length), without the special tokens but ``<unk>``."""
        rows = tokens.reshape(-1, tokens.shape[-1]).tolist()
        return [" ".join(self.vocabulary[t] for t in row if t == 1 or t > 3) for row in rows]


def caption_tokens(dataset: ImageTensorDataset, per_image: int = 5, seed: int = 0) -> Tensor:
    """(N, per_image, CAPTION_LENGTH) tokens of :func:`generate_captions` for the dataset's images."""
    captions = generate_captions(dataset.images, dataset.labels, dataset.classes, per_image, seed)
    tokens = CaptionTokenizer.for_classes(dataset.classes).encode([c for row in captions for c in row])
    return tokens.view(len(dataset), per_image, -1)


def load_cifar10_captions(split: str = "train", root: str | os.PathLike | None = None, download: bool = True,
                          per_image: int = 5, seed: int = 0) -> ImageTensorDataset:
    """CIFAR-10 (or cifar10-mini) with ``per_image`` generated captions per image in
    ``extras["tokens"]`` (N, per_image, CAPTION_LENGTH); the name gains ``-captions``. The test
    split's captions are drawn with ``seed + 1``, so no caption draw is shared between the splits."""
    ds = load_cifar10(split, root=root, download=download)
    tokens = caption_tokens(ds, per_image, seed + (split == "test"))
    return ImageTensorDataset(ds.images, ds.labels, ds.classes, f"{ds.name}-captions", ds.split, {"tokens": tokens})
