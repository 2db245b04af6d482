"""CLIP (Radford et al. 2021, "Learning Transferable Visual Models From Natural Language Supervision")
at book scale: an image encoder and a text encoder trained so that an image and its caption meet.
Chapter 12 trains it on cifar10-mini with generated captions (``dataset=cifar10_captions``).

One step, Fig. 3's pseudocode::

    I_f = f(x)                 image encoder (a ResNet of the book)               (N, d_i)
    T_f = t(tokens)            text encoder (contrastive_lab.text), <eos> feature  (N, d_t)
    I_e = W_i I_f, T_e = W_t T_f   linear projections into the joint space (Sec. 2.3: "only a linear
                                   projection", no MLP head)                      (N, d_e)
    logits = exp(t) normalize(I_e) @ normalize(T_e).T
    loss = (CE(rows) + CE(columns)) / 2       losses.clip_loss: the symmetric InfoNCE

The log logit scale t is learnt, initialised to log(1/0.07) and exp(t) clipped at 100 (Sec. 2.5,
:class:`~contrastive_lab.losses.ClipLoss`). Each image's dataset entry holds K captions
(``batch.extras["tokens"]``, (N, K, L)); each step uses one of them, chosen from the image's index
and the step number, so every rank and a resumed run pick the same one. ``head`` is W_i (the kNN
monitor also scores z = W_i h), ``encoder`` is f. CLIP never reads ``batch.labels``: its
supervision is the captions, which here name the class (chapter 12 says what that means).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ..config import Config, preset
from ..data import CIFAR10_SYNONYMS, CaptionTokenizer
from ..losses import ClipLoss
from ..text import TEXT_ENCODERS, build_text_encoder
from .base import Batch, BuildContext, Progress, build_config_encoder, check_positive, register_method
from .simclr import upcast


@dataclass
class CLIPOptions:
    """CLIP's settings (Radford et al. 2021; book-scale sizes, the papers' in the comments)."""

    embed_dim: int = 128  # joint embedding size (CLIP RN50: 1024, Table 19)
    text_encoder: str = "transformer"  # transformer (CLIP Sec. 2.4) | bag (mean word embedding)
    text_width: int = 64  # CLIP: 512 (Sec. 2.4)
    text_layers: int = 2  # CLIP: 12 (Sec. 2.4)
    text_heads: int = 4  # CLIP: 8 (Sec. 2.4)
    vocab_size: int = 0  # 0 -> the cifar10_captions vocabulary (data.CaptionTokenizer); CLIP: 49,152 BPE tokens
    context_length: int = 16  # tokens per caption incl. <sos>/<eos> (data.CAPTION_LENGTH; CLIP: 76)
    init_temperature: float = 0.07  # Sec. 2.5: tau starts at 0.07 (Wu et al. 2018), t = log(1/tau) is learnt
    max_logit_scale: float = 100.0  # Sec. 2.5: "clipped to prevent scaling the logits by more than 100"

    def validate(self, cfg: Config) -> None:
        if self.text_encoder not in TEXT_ENCODERS:
            raise ValueError(f"text_encoder must be one of {TEXT_ENCODERS}, got {self.text_encoder!r}")
        for name in ("embed_dim", "text_width", "text_layers", "text_heads", "context_length"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.vocab_size < 0:
            raise ValueError(f"vocab_size must be >= 0 (0 = the cifar10_captions vocabulary), got {self.vocab_size}")
        check_positive(self.init_temperature, "init_temperature", " (CLIP: 0.07)")
        check_positive(self.max_logit_scale, "max_logit_scale", " (CLIP: 100)")


class CLIP(nn.Module):
    """Image encoder + text encoder + linear projections + the symmetric loss (module docstring)."""

    num_views = 1  # one random crop per image (CLIP Sec. 2.3: the only augmentation)
    log_keys = ("logit_scale", "i2t_top1")

    def __init__(self, encoder: nn.Module, text: nn.Module, embed_dim: int = 128, init_temperature: float = 0.07,
                 max_logit_scale: float = 100.0, gather: bool = True):
        super().__init__()
        self.encoder, self.text = encoder, text
        self.head = nn.Linear(encoder.feature_dim, embed_dim, bias=False)  # W_i
        self.text_proj = nn.Linear(text.feature_dim, embed_dim, bias=False)  # W_t
        self.loss = ClipLoss(init_temperature, max_logit_scale, gather=gather)
        self.register_buffer("step", torch.zeros((), dtype=torch.long))  # picks this step's caption

    def embed_images(self, images: Tensor) -> Tensor:
        """I_e = W_i f(x), (N, embed_dim), not normalised."""
        return self.head(self.encoder(images))

    def embed_text(self, tokens: Tensor) -> Tensor:
        """T_e = W_t t(tokens) for (N, L) tokens, (N, embed_dim), not normalised."""
        features = self.text(tokens)
        return self.text_proj(features.to(self.text_proj.weight.dtype))

    def captions_of(self, tokens: Tensor, index: Tensor) -> Tensor:
        """(N, L) tokens: the rows themselves, or of (N, K, L) the caption (index * 7919 + step * 104729)
        mod K of each image, a choice that depends only on the image and the step."""
        if tokens.ndim == 2:
            return tokens
        choice = (index.long() * 7919 + int(self.step) * 104729) % tokens.shape[1]
        return tokens[torch.arange(len(tokens), device=tokens.device), choice.to(tokens.device)]

    def forward(self, batch: Batch) -> tuple[Tensor, dict]:
        tokens = batch.extras.get("tokens")
        if tokens is None:
            raise ValueError("CLIP trains on image-caption pairs, but the batch has no extras['tokens']: use "
                             "dataset=cifar10_captions, or a dataset whose extras hold caption tokens")
        image_emb = upcast(self.embed_images(batch.views[0]))
        text_emb = upcast(self.embed_text(self.captions_of(tokens, batch.index)))
        loss = self.loss(image_emb, text_emb)
        with torch.no_grad():
            sims = nn.functional.normalize(image_emb, dim=1) @ nn.functional.normalize(text_emb, dim=1).T
            top1 = (sims.argmax(1) == torch.arange(len(sims), device=sims.device)).float().mean()
            logs = {"loss": loss.detach(), "logit_scale": self.loss.logit_scale().detach(), "i2t_top1": top1}
        return loss, logs

    @torch.no_grad()
    def after_step(self, progress: Progress) -> None:
        """Count the step (the next step's captions depend on it)."""
        self.step.fill_(progress.step)


def cifar10_vocab_size() -> int:
    """The size of the caption vocabulary of CIFAR-10's classes (data.CaptionTokenizer)."""
    return len(CaptionTokenizer.for_classes(list(CIFAR10_SYNONYMS)))


def build_clip(cfg: Config, ctx: BuildContext | None = None) -> CLIP:
    """CLIP from a config: ``cfg.encoder`` as the image encoder, the options' text encoder."""
    o = cfg.options
    text = build_text_encoder(o.text_encoder, o.vocab_size or cifar10_vocab_size(), o.text_width, o.text_layers,
                              o.text_heads, o.context_length)
    return CLIP(build_config_encoder(cfg), text, o.embed_dim, o.init_temperature, o.max_logit_scale)


register_method("clip", CLIPOptions, build_clip, "CLIP: images and their captions, symmetric InfoNCE (Radford et al. 2021)")


@preset("clip-cifar10-cpu")
def clip_cifar10_cpu() -> Config:
    """CLIP on cifar10-mini with generated captions (``dataset=cifar10_captions``), for a 2-core CPU.

    From CLIP (Radford et al. 2021): the symmetric loss with a learnt temperature starting at 0.07 and
    a logit scale clipped at 100 (Sec. 2.5); linear projections only (Sec. 2.3); a causal transformer
    text encoder read at <eos> (Sec. 2.4); random crops as the only image augmentation (Sec. 2.3; we
    also flip, which no caption word depends on, and keep crops of at least half the image so the
    object the caption names stays in view); AdamW with decoupled weight decay, cosine decay (Sec.
    2.5). Book-scale departures: the demo ResNet-10 at half width with the CIFAR stem (as
    ``simclr-cifar10-cpu``, 24-px views evaluated at 32 px), a 2-layer width-64 text transformer, a
    128-d joint space, batch 128 instead of 32,768, lr 2e-3 with 1 warmup epoch and weight decay 0.1
    (CLIP: 5e-4 and 0.2 for its ResNet-50, Table 19; a run of minutes takes a larger lr), 20 epochs.
    """
    return Config(
        method="clip",
        dataset="cifar10_captions",
        recipe="simclr_cifar",
        view_ops="crop,flip",
        crop_min_scale=0.5,
        encoder="resnet10",
        width=0.5,
        options=CLIPOptions(),
        optimizer="adamw",
        lr=2e-3,
        weight_decay=0.1,
        batch_size=128,
        image_size=24,
        eval_size=32,
        epochs=20,
        warmup_epochs=1.0,
        knn_every=5,
        checkpoint_every=100,
    )
