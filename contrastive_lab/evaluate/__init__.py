"""Evaluation protocols for self-supervised representations: what a trained encoder is good for.

=========================  ======================================================================
``features.py``            :func:`extract_features` (h of a frozen encoder), :func:`project_features`
                           (z = g(h)), :func:`eval_transform` (evaluation preprocessing)
``knn.py``                 weighted cosine kNN (Wu et al. 2018, Sec. 3.4) and :class:`KNNMonitor`,
                           the monitor every run prints, on h and on z
``linear.py``              :func:`linear_probe`: softmax regression on frozen features (SimCLR
                           Sec. 2.3 / App. B.6; MoCo Sec. 4.1)
``geometry.py``            alignment and uniformity (Wang & Isola 2020, Sec. 4.1)
=========================  ======================================================================

Everything works on precomputed features where it can. Fine-tuning and linear evaluation *with
augmented views* are training runs of the engine (``method=finetune|linear``,
:mod:`contrastive_lab.methods.classifier`), so they get DDP, checkpoints and resume too.
"""

from .features import eval_transform, extract_features, has_projection, project_features
from .geometry import feature_alignment_uniformity
from .knn import KNNMonitor, knn_accuracy, knn_on_h_and_z, knn_predict, knn_predict_reference
from .linear import linear_probe

__all__ = [
    "KNNMonitor", "eval_transform", "extract_features", "feature_alignment_uniformity", "has_projection",
    "knn_accuracy", "knn_on_h_and_z", "knn_predict", "knn_predict_reference", "linear_probe",
    "project_features",
]  # fmt: skip
