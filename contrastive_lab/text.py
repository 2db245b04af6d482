"""Text encoders: caption tokens -> one feature vector per caption, the text tower of CLIP.
Chapter 12 trains them with CLIP on the captions of :mod:`contrastive_lab.data.captions`.

CLIP (Radford et al. 2021, Sec. 2.4) encodes text with a Transformer (Vaswani et al. 2017, with
the modifications of GPT-2, Radford et al. 2019): 12 layers, width 512, 8 heads, masked (causal)
self-attention, and "the activations of the highest layer of the transformer at the [EOS] token
are treated as the feature representation of the text", layer-normalised and then linearly
projected into the joint space. Two encoders here:

* :class:`TextTransformer`: that design at book scale (2 layers of width 64 by default). Word order
  matters to it: "a red car" and "a car, mostly red" differ. It is the default, because it is
  CLIP's and because it can tell templates apart (chapter 12 plots zero-shot accuracy per template).
* :class:`BagOfWords`: the mean of the word embeddings. It ignores order and has no attention; on
  captions made of a class word and a few attribute words that loses little, costs almost nothing,
  and is the baseline an exercise compares.

Both take (B, L) int64 tokens ``[<sos>, w_1 .. w_n, <eos>, <pad> ...]`` (ids 2, ..., 3, 0, see
:class:`~contrastive_lab.data.CaptionTokenizer`) and return (B, width) features; ``feature_dim``
is the width, as the image encoders' ``feature_dim`` is the length of h.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

PAD, UNK, SOS, EOS = 0, 1, 2, 3
TEXT_ENCODERS = ("transformer", "bag")


def _check_tokens(tokens: Tensor, vocab_size: int, length: int | None = None) -> None:
    if not isinstance(tokens, Tensor) or tokens.ndim != 2 or tokens.dtype != torch.long:
        raise ValueError(f"tokens must be an int64 tensor (B, L), got {getattr(tokens, 'dtype', type(tokens))} "
                         f"{tuple(getattr(tokens, 'shape', ()))}")
    if length is not None and tokens.shape[1] > length:
        raise ValueError(f"captions of {tokens.shape[1]} tokens exceed the encoder's context of {length}")
    if tokens.numel() and (int(tokens.min()) < 0 or int(tokens.max()) >= vocab_size):
        raise ValueError(f"token ids must lie in 0..{vocab_size - 1} (the vocabulary the text encoder was built "
                         f"for), got {int(tokens.min())}..{int(tokens.max())}")


class Block(nn.Module):
    """One pre-LayerNorm transformer block: x + attn(LN(x)), then x + MLP(LN(x)) (GPT-2's order)."""

    def __init__(self, width: int, heads: int):
        super().__init__()
        self.ln_1, self.ln_2 = nn.LayerNorm(width), nn.LayerNorm(width)
        self.attn = nn.MultiheadAttention(width, heads, batch_first=True)
        self.mlp = nn.Sequential(nn.Linear(width, 4 * width), nn.GELU(), nn.Linear(4 * width, width))

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        h = self.ln_1(x)
        x = x + self.attn(h, h, h, attn_mask=mask, need_weights=False)[0]
        return x + self.mlp(self.ln_2(x))


class TextTransformer(nn.Module):
    """Token + position embeddings, ``layers`` causal transformer blocks, a final LayerNorm, and the
    feature at each caption's ``<eos>`` token (CLIP Sec. 2.4)."""

    def __init__(self, vocab_size: int, width: int = 64, layers: int = 2, heads: int = 4, length: int = 16):
        super().__init__()
        if width % heads:
            raise ValueError(f"text width {width} must be divisible by the number of heads {heads}")
        self.vocab_size, self.length, self.feature_dim = vocab_size, length, width
        self.token_embedding = nn.Embedding(vocab_size, width)
        self.positional_embedding = nn.Parameter(torch.empty(length, width))
        self.blocks = nn.ModuleList(Block(width, heads) for _ in range(layers))
        self.ln_final = nn.LayerNorm(width)
        nn.init.normal_(self.token_embedding.weight, std=0.02)  # CLIP's initialisation (model.py)
        nn.init.normal_(self.positional_embedding, std=0.01)
        causal = torch.full((length, length), float("-inf")).triu(1)  # position t sees positions <= t
        self.register_buffer("causal_mask", causal, persistent=False)

    def forward(self, tokens: Tensor) -> Tensor:
        _check_tokens(tokens, self.vocab_size, self.length)
        eos = tokens == EOS
        if not bool(eos.any(1).all()):
            raise ValueError("every caption needs an <eos> token (id 3): its feature is read there")
        n = tokens.shape[1]
        x = self.token_embedding(tokens) + self.positional_embedding[:n].to(self.token_embedding.weight.dtype)
        mask = self.causal_mask[:n, :n].to(x.dtype)
        for block in self.blocks:
            x = block(x, mask)
        x = self.ln_final(x)
        return x[torch.arange(len(x), device=x.device), eos.int().argmax(1)]  # the first <eos> of each row


class BagOfWords(nn.Module):
    """The mean embedding of a caption's words (ids > 3: no <pad>, <sos>, <eos>; <unk> counts), then a
    LayerNorm. Order-free: "a red car" == "car red a"."""

    def __init__(self, vocab_size: int, width: int = 64, length: int = 16):
        super().__init__()
        self.vocab_size, self.length, self.feature_dim = vocab_size, length, width
        self.token_embedding = nn.Embedding(vocab_size, width)
        nn.init.normal_(self.token_embedding.weight, std=0.02)
        self.ln_final = nn.LayerNorm(width)

    def forward(self, tokens: Tensor) -> Tensor:
        _check_tokens(tokens, self.vocab_size, self.length)
        words = ((tokens > EOS) | (tokens == UNK)).to(self.token_embedding.weight.dtype)
        total = (self.token_embedding(tokens) * words.unsqueeze(-1)).sum(1)
        return self.ln_final(total / words.sum(1, keepdim=True).clamp_min(1))


def build_text_encoder(kind: str, vocab_size: int, width: int = 64, layers: int = 2, heads: int = 4,
                       length: int = 16) -> nn.Module:
    """``transformer`` (:class:`TextTransformer`) or ``bag`` (:class:`BagOfWords`; layers/heads unused)."""
    if kind not in TEXT_ENCODERS:
        raise ValueError(f"text encoder must be one of {TEXT_ENCODERS}, got {kind!r}")
    if vocab_size <= EOS + 1 or width < 1 or layers < 1 or heads < 1 or length < 3:
        raise ValueError(f"need vocab_size > 4, width, layers, heads >= 1 and length >= 3; got {vocab_size}, "
                         f"{width}, {layers}, {heads}, {length}")
    if kind == "bag":
        return BagOfWords(vocab_size, width, length)
    return TextTransformer(vocab_size, width, layers, heads, length)
