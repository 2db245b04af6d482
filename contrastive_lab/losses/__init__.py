"""Contrastive losses, each in a readable reference form and a fast vectorised form.

=====================  ================  ===================================================  =======
loss                   file              paper, equation                                      chapter
=====================  ================  ===================================================  =======
``nt_xent``            ``ntxent.py``     SimCLR's NT-Xent (Chen et al. 2020, Eq. 1, Alg. 1)   04, 05
``info_nce``           ``infonce.py``    MoCo's InfoNCE over a queue (He et al. 2019, Eq. 1)  07, 08
``nce_memory_bank``    ``nce.py``        InstDisc's NCE (Wu et al. 2018, Eq. 4-7)             07
``cpc_info_nce``       ``cpc.py``        CPC's InfoNCE (van den Oord et al. 2018, Eq. 4)      09
``cpc_loss``           ``cpc.py``        the same over offsets k = 1..K (Eq. 3-4)             09
``clip_loss``          ``clip.py``       CLIP's symmetric loss (Radford et al. 2021, Fig. 3)  12
``cmc_loss``           ``cmc.py``        CMC's multiview loss (Tian et al. 2019, Eq. 2-6)     12
``amdim_nce``          ``amdim.py``      AMDIM's local-global NCE (Bachman et al. 2019)       12
``supcon_loss``        ``supcon.py``     SupCon's L_out (Khosla et al. 2020, Eq. 2)           12
``byol_loss``          ``byol.py``       BYOL's normalised MSE (Grill et al. 2020, Eq. 2)     11
``simsiam_loss``       ``simsiam.py``    SimSiam's negative cosine, stop-grad (Eq. 1-4)       11
``dino_loss``          ``dino.py``       DINO's teacher/student cross-entropy (Eq. 1-4)       11
``barlow_twins_loss``  ``barlow.py``     Barlow Twins' cross-correlation (Eq. 1-2)            11
``alignment``          ``geometry.py``   Wang & Isola 2020, Eq. 4                             04
``uniformity``         ``geometry.py``   Wang & Isola 2020, Eq. 5                             04
=====================  ================  ===================================================  =======

Each file holds one family: the fast function, its ``*_reference`` loop twin and its
``nn.Module`` form; ``_common.py`` holds the argument checks and numerics they share. The files
are named for the family (``ntxent.py``), not the function (``nt_xent``), so that
``contrastive_lab.losses.nt_xent`` is the function and ``contrastive_lab.losses.ntxent`` its module.

Conventions shared by all losses here:

* Inputs are *unnormalised* embeddings; each loss L2-normalises them itself (except CPC,
  whose scores are raw dot products by default, as in the paper). Normalising twice is
  harmless, so already-normalised inputs are fine too.
* Every loss returns the **mean** over its anchors (rows).
* Precision: similarities and log-softmax are computed in float32 (float64 if any input is
  float64) with autocast disabled, so fp16/bf16 embeddings are safe; the loss is returned
  in that compute dtype (float32 for fp16/bf16/fp32 inputs). Gradients flow back to the
  inputs in their own dtype.
* Bad input raises ValueError/TypeError naming the argument: wrong shapes, batches below 2
  samples, temperatures that are not finite and > 0, NaN/inf embeddings. (The
  NaN/inf check reads one boolean back from the device per input: a tiny sync on GPU.)
* Each ``foo_reference`` spells out the paper's per-anchor formula with Python loops. They
  are slow, for reading and testing only; ``foo`` is what training code calls.
"""

from __future__ import annotations

from .amdim import amdim_nce, amdim_nce_reference, tanh_clip
from .barlow import (
    BarlowTwinsLoss,
    barlow_twins_loss,
    barlow_twins_loss_reference,
    cross_correlation,
    redundancy_reduction,
)
from .byol import BYOLLoss, byol_loss, byol_loss_reference
from .clip import ClipLoss, clip_loss, clip_loss_reference
from .cmc import CMC_GRAPHS, cmc_edges, cmc_loss, cmc_loss_reference
from .cpc import (
    CPCInfoNCELoss,
    cpc_accuracy,
    cpc_info_nce,
    cpc_info_nce_reference,
    cpc_loss,
    cpc_loss_reference,
)
from .dino import DINOLoss, dino_loss, dino_loss_reference, teacher_probabilities
from .geometry import alignment, alignment_reference, uniformity, uniformity_reference
from .infonce import InfoNCELoss, info_nce, info_nce_reference
from .nce import NCEMemoryBankLoss, nce_memory_bank, nce_memory_bank_reference
from .ntxent import NTXentLoss, nt_xent, nt_xent_reference
from .simsiam import (
    SimSiamLoss,
    negative_cosine,
    negative_cosine_reference,
    simsiam_loss,
    simsiam_loss_reference,
)
from .supcon import SupConLoss, supcon_loss, supcon_loss_reference

__all__ = [
    "nt_xent", "nt_xent_reference", "NTXentLoss",
    "info_nce", "info_nce_reference", "InfoNCELoss",
    "nce_memory_bank", "nce_memory_bank_reference", "NCEMemoryBankLoss",
    "cpc_info_nce", "cpc_info_nce_reference", "cpc_accuracy", "CPCInfoNCELoss",
    "cpc_loss", "cpc_loss_reference",
    "clip_loss", "clip_loss_reference", "ClipLoss",
    "cmc_loss", "cmc_loss_reference", "cmc_edges", "CMC_GRAPHS",
    "amdim_nce", "amdim_nce_reference", "tanh_clip",
    "supcon_loss", "supcon_loss_reference", "SupConLoss",
    "alignment", "alignment_reference", "uniformity", "uniformity_reference",
    "byol_loss", "byol_loss_reference", "BYOLLoss",
    "negative_cosine", "negative_cosine_reference", "simsiam_loss", "simsiam_loss_reference", "SimSiamLoss",
    "dino_loss", "dino_loss_reference", "teacher_probabilities", "DINOLoss",
    "barlow_twins_loss", "barlow_twins_loss_reference", "cross_correlation", "redundancy_reduction",
    "BarlowTwinsLoss",
]  # fmt: skip
