"""Contrastive Predictive Coding (CPC): learn by predicting the future in latent space (chapter 09).

CPC (van den Oord, Li & Vinyals 2018, "Representation Learning with Contrastive Predictive
Coding", Sec. 2) has three parts and one loss:

* an **encoder** ``g_enc`` maps each piece of the input (a short window of a signal, a patch of
  an image) to a latent ``z_t = g_enc(x_t)``;
* an **autoregressive context network** ``g_ar`` summarises the latents up to now,
  ``c_t = g_ar(z_{<=t})``; it may never look ahead;
* one **linear map** ``W_k`` per offset ``k = 1..K`` turns the context into a prediction
  ``W_k c_t`` of the latent ``k`` steps ahead, scored by the log-bilinear model of Eq. 3,
  ``f_k(x_{t+k}, c_t) = exp(z_{t+k}^T W_k c_t)``;
* **InfoNCE** (Eq. 4) asks each prediction to pick its true future latent among N candidates,
  the other N-1 being latents of other time steps and other sequences in the batch.

The book builds CPC twice, and the pieces live where a reader would look for them:

* the loss, :func:`contrastive_lab.losses.cpc_loss` (InfoNCE summed over offsets) and its reference;
* ``cpc/sequence.py``: **1-D CPC** on a synthetic signal whose future depends on a hidden
  per-sequence latent: :func:`make_oscillation_sequences`, :class:`SignalEncoder`, :class:`SequenceCPC`,
  :func:`train_sequence_cpc`;
* ``cpc/patches.py``: **image CPC**'s overlapping grid of patches (:func:`extract_patches`), CPC v2's
  per-patch augmentation (:class:`PatchAugment`; Hénaff et al. 2020), the patch network
  (:class:`PatchConvNet`) pooled per patch (:class:`PatchGridEncoder`);
* ``cpc/context.py``: the row-causal PixelCNN-style context (:class:`RowCausalConv2d`,
  :class:`RowCausalContext`);
* ``methods/cpc.py``: the training method :class:`~contrastive_lab.methods.ImageCPC` (``method=cpc``)
  and its preset.

Causality, the one property everything rests on: the context at row i (time t) must not depend
on anything at rows > i (times > t); otherwise predicting "the future" is copying it. The tests
check it with autograd: the gradient of ``c_i`` with respect to later inputs is exactly zero.
"""

from .context import RowCausalContext, RowCausalConv2d
from .patches import (
    NORMS,
    PatchAugment,
    PatchAugmentParams,
    PatchConvNet,
    PatchGridEncoder,
    extract_patches,
    extract_patches_reference,
    grid_size,
)
from .sequence import (
    SequenceCPC,
    SequenceData,
    SignalEncoder,
    make_oscillation_sequences,
    train_sequence_cpc,
)

__all__ = [
    "NORMS", "PatchAugment", "PatchAugmentParams", "PatchConvNet", "PatchGridEncoder", "RowCausalContext",
    "RowCausalConv2d", "SequenceCPC", "SequenceData", "SignalEncoder", "extract_patches",
    "extract_patches_reference", "grid_size", "make_oscillation_sequences", "train_sequence_cpc",
]  # fmt: skip
