"""Evaluation protocols for self-supervised representations: what a trained encoder is good for.

=========================  ======================================================================
``features.py``            :func:`extract_features` (h of a frozen encoder), :func:`project_features`
                           (z = g(h)), :func:`eval_transform` (evaluation preprocessing)
``knn.py``                 weighted cosine kNN (Wu et al. 2018, Sec. 3.4) and :class:`KNNMonitor`,
                           the monitor every run prints, on h and on z
``linear.py``              :func:`linear_probe`: softmax regression on frozen features (SimCLR
                           Sec. 2.3 / App. B.6; MoCo Sec. 4.1)
``geometry.py``            alignment and uniformity (Wang & Isola 2020, Sec. 4.1)
``collapse.py``            :func:`feature_collapse`: std of the l2-normalised features and their
                           effective rank, on h and z (SimSiam Fig. 2; RankMe; chapter 11)
``retrieval.py``           faiss indexes (flat, HNSW, IVF-PQ), recall@k and mAP with ties handled,
                           an approximate index's recall against exact search (chapter 10)
``novelty.py``             novelty detection: kNN cosine-distance scores, the Mahalanobis baseline,
                           AUROC / AP / ROC from scikit-learn (chapter 10)
``index_scaling.py``       large galleries made from real embeddings, and each index kind's build
                           time, bytes, queries/s and recall (chapter 10, benchmarks/bench_index.py)
``maps.py``                UMAP / t-SNE 2-D maps of an embedding (chapter 10)
``zeroshot.py``            CLIP's zero-shot classification from prompts, prompt ensembling and
                           image<->caption recall@k (Radford et al. 2021, Sec. 3.1; chapter 12)
=========================  ======================================================================

Everything works on precomputed features where it can. Fine-tuning and linear evaluation *with
augmented views* are training runs of the engine (``method=finetune|linear``,
:mod:`contrastive_lab.methods.classifier`), so they get DDP, checkpoints and resume too.
"""

from .collapse import collapse_metrics, feature_collapse
from .features import eval_transform, extract_features, has_projection, project_features
from .geometry import feature_alignment_uniformity
from .index_scaling import KNOBS, index_bytes, measure_index, tile_with_noise
from .knn import KNNMonitor, knn_accuracy, knn_on_h_and_z, knn_predict, knn_predict_reference
from .linear import linear_probe
from .maps import MAP_METHODS, embedding_map
from .novelty import detection_metrics, knn_novelty_scores, knn_novelty_scores_reference, mahalanobis_scores
from .retrieval import (
    INDEX_KINDS,
    build_index,
    default_nlist,
    default_pq_m,
    index_kind,
    load_index,
    mean_average_precision,
    neighbour_recall,
    recall_at_k,
    save_index,
    search,
)
from .zeroshot import (
    caption_relevance,
    class_prototypes,
    encode_texts,
    prompt_texts,
    recall_at_k_relevance,
    recall_at_k_relevance_reference,
    retrieval_recalls,
    zero_shot_accuracy,
    zero_shot_predict,
)

__all__ = [
    "INDEX_KINDS", "KNNMonitor", "KNOBS", "MAP_METHODS", "build_index", "default_nlist", "default_pq_m",
    "detection_metrics", "embedding_map", "eval_transform", "extract_features", "feature_alignment_uniformity",
    "has_projection", "index_bytes", "index_kind", "knn_accuracy", "knn_novelty_scores", "knn_novelty_scores_reference",
    "knn_on_h_and_z", "knn_predict", "knn_predict_reference", "linear_probe", "load_index", "mahalanobis_scores",
    "mean_average_precision", "measure_index", "neighbour_recall", "project_features", "recall_at_k", "save_index",
    "search", "tile_with_noise",
    "collapse_metrics", "feature_collapse",
    "caption_relevance", "class_prototypes", "encode_texts", "prompt_texts", "recall_at_k_relevance",
    "recall_at_k_relevance_reference", "retrieval_recalls", "zero_shot_accuracy", "zero_shot_predict",
]  # fmt: skip
