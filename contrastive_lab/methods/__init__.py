"""Methods: each one file, each an ``nn.Module`` mapping a :class:`Batch` of views to a loss.

========================  ==========================================================  =========
``simclr.py``             SimCLR: NT-Xent over two views (Chen et al. 2020)          ch. 05-06
``moco.py``               MoCo v1/v2: momentum encoder + queue (He et al. 2019)      ch. 07-08
``instdisc.py``           memory bank + NCE (Wu et al. 2018)                          ch. 07
``cpc.py``                contrastive predictive coding on image patches             ch. 09
``classifier.py``         linear evaluation and fine-tuning (``linear``, ``finetune``)  ch. 10
``byol.py``               BYOL: predictor + EMA target, no negatives (Grill et al.)   ch. 11
``simsiam.py``            SimSiam: predictor + stop-gradient (Chen & He 2021)        ch. 11
``dino.py``               DINO: teacher centering + sharpening (Caron et al. 2021)   ch. 11
``barlow.py``             Barlow Twins: cross-correlation -> I (Zbontar et al.)      ch. 11
``cmc.py``                CMC: L and ab channels as views (Tian et al. 2019)         ch. 12
``amdim.py``              AMDIM: global vs local features (Bachman et al. 2019)      ch. 12
``supcon.py``             SupCon: same-class positives (Khosla et al. 2020)          ch. 12
``clip.py``               CLIP: images vs captions (Radford et al. 2021)             ch. 12
========================  ==========================================================  =========

Every file holds its module, its options dataclass (with citations), its builder and its presets,
and registers itself (:func:`register_method`, :func:`contrastive_lab.config.preset`): adding a
method is adding a file and one import line below. The engine knows a method only through the
protocol in :mod:`contrastive_lab.methods.base`.
"""

from . import (  # noqa: F401  (each registers its method and presets)
    amdim,
    barlow,
    byol,
    classifier,
    clip,
    cmc,
    cpc,
    dino,
    instdisc,
    moco,
    simclr,
    simsiam,
    supcon,
)
from .barlow import BarlowOptions, BarlowTwins
from .base import (
    METHODS,
    Batch,
    BuildContext,
    Method,
    MethodSpec,
    Progress,
    ProjectionOptions,
    build_config_encoder,
    build_method,
    build_projection,
    encoder_kwargs,
    method_views,
    register_method,
)
from .byol import BYOL, BYOLOptions
from .classifier import CLASSIFIERS, Classifier, ClassifierOptions
from .cpc import CPCOptions, ImageCPC, make_image_cpc
from .dino import DINO, DINOOptions
from .instdisc import InstDisc, InstDiscOptions
from .load import load_method, load_state_into
from .moco import MoCo, MoCoOptions
from .simclr import SimCLR, SimCLROptions
from .simsiam import SimSiam, SimSiamOptions

__all__ = [
    "BYOL", "BYOLOptions", "BarlowOptions", "BarlowTwins", "DINO", "DINOOptions", "SimSiam", "SimSiamOptions",
    "METHODS", "Batch", "BuildContext", "CLASSIFIERS", "CPCOptions", "Classifier", "ClassifierOptions",
    "ImageCPC", "InstDisc", "InstDiscOptions", "Method", "MethodSpec", "MoCo", "MoCoOptions", "Progress",
    "ProjectionOptions", "SimCLR", "SimCLROptions", "build_config_encoder", "build_method", "build_projection",
    "encoder_kwargs", "load_method", "load_state_into", "make_image_cpc", "method_views", "register_method",
]  # fmt: skip
