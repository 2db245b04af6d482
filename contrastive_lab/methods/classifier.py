"""Linear evaluation and fine-tuning as methods (``method=linear`` / ``method=finetune``): a linear
classifier on the features h of an encoder, trained by the same engine as pre-training, so
evaluation at ImageNet scale gets DDP, checkpoints and exact resume too. Chapter 10 uses it for the
label-efficiency curve (1%, 10%, 100% of the labels); ``init_checkpoint=random`` is the same
network trained from scratch with labels only.

* Linear evaluation (SimCLR Sec. 2.3 / App. B.6; MoCo Sec. 4.1): f is frozen, no gradient reaches
  it and its BN stays in eval mode (running statistics, as MoCo's ``main_lincls.py``); only ``fc``
  learns.
* Fine-tuning (SimCLR Sec. 6 / App. B.5): f and ``fc`` learn together.

The loss is the cross-entropy of ``fc(f(x))`` with the labels; ``fc`` starts at zero (SimCLR's
``zero_init_logits_layer``). The labelled images are all of them, a class-balanced
``label_fraction`` (``data.label_subset``), or the files named in ``label_subset_file`` (SimCLR's
``1percent.txt``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ..config import Config, imagenet_r50, preset
from .base import Batch, BuildContext, build_config_encoder, register_method
from .load import load_method

CLASSIFIERS = ("linear", "finetune")


@dataclass
class ClassifierOptions:
    """What a classifier run trains on top of."""

    init_checkpoint: str = ""  # pre-training last.pt to evaluate ("random": an untrained f, the from-scratch baseline)
    label_subset_file: str = ""  # text file of image file names to train on (SimCLR's 1%/10% lists; imagefolder)
    label_fraction: float = 1.0  # <1: class-balanced random label subset (data.label_subset), e.g. 0.01

    def validate(self, cfg: Config) -> None:
        if not 0 < self.label_fraction <= 1:
            raise ValueError(f"label_fraction must be in (0, 1] (0.01 = 1% of the labels), got {self.label_fraction}")
        if self.label_subset_file and self.label_fraction < 1:
            raise ValueError("set label_subset_file or label_fraction, not both")


class Classifier(nn.Module):
    """``fc(f(x))`` trained with cross-entropy; ``freeze`` = linear evaluation (see the module docstring)."""

    needs_labels = True
    num_views = 1  # the training view (random crop + flip); classifiers see one per image
    log_keys = ("train_top1", "val_top1")

    def __init__(self, encoder: nn.Module, num_classes: int, freeze: bool):
        super().__init__()
        if num_classes < 2:
            raise ValueError(f"a classifier needs at least 2 classes, got {num_classes}")
        self.encoder, self.freeze = encoder, freeze
        self.fc = nn.Linear(encoder.feature_dim, num_classes)
        nn.init.zeros_(self.fc.weight)
        nn.init.zeros_(self.fc.bias)
        if freeze:
            self.encoder.requires_grad_(False)

    def train(self, mode: bool = True) -> Classifier:
        super().train(mode)
        if self.freeze:
            self.encoder.eval()  # frozen BN statistics
        return self

    def classify(self, x: Tensor) -> Tensor:
        """The logits fc(f(x)); the engine reports their test top-1 at the end of the run (a method
        with ``classify`` is a classifier to the engine)."""
        if self.freeze:
            with torch.no_grad():
                h = self.encoder(x)
        else:
            h = self.encoder(x)
        return self.fc(h.to(self.fc.weight.dtype))  # bf16 under autocast -> float32 (float64 under fp64)

    def forward(self, batch: Batch) -> tuple[Tensor, dict]:
        if batch.labels is None:
            raise ValueError("Classifier needs the labels of the batch (Batch.labels; the engine passes them)")
        logits = self.classify(batch.views[0])
        loss = nn.functional.cross_entropy(logits, batch.labels)
        top1 = (logits.detach().argmax(1) == batch.labels).float().mean()
        return loss, {"loss": loss.detach(), "train_top1": top1}


def pretrained_encoder(path: str) -> tuple[nn.Module, Config]:
    """The encoder f of a pre-training checkpoint (any method) and that run's config."""
    pre, method = load_method(path)
    return method.encoder.train(), pre


def build_classifier(cfg: Config, ctx: BuildContext) -> Classifier:
    """:class:`Classifier` on the encoder of ``init_checkpoint`` (architecture from that checkpoint's
    config), or on an untrained ``cfg.encoder`` when ``init_checkpoint=random`` (the baseline)."""
    init = cfg.options.init_checkpoint
    if not init:
        raise ValueError(
            f"method={cfg.method} evaluates a pre-trained encoder: set init_checkpoint=RUN/checkpoints/last.pt "
            "(or init_checkpoint=random for the random-encoder baseline)"
        )
    encoder = build_config_encoder(cfg) if init == "random" else pretrained_encoder(init)[0]
    return Classifier(encoder, ctx.num_classes, freeze=cfg.method == "linear")


register_method("linear", ClassifierOptions, build_classifier, "linear evaluation of a frozen encoder")
register_method("finetune", ClassifierOptions, build_classifier, "fine-tuning an encoder with a linear head")


# ----------------------------------------------------------------------------------------
# Presets: linear evaluation and fine-tuning at ImageNet scale
# ----------------------------------------------------------------------------------------
# ``train --preset linear-eval-moco-imagenet init_checkpoint=RUN/checkpoints/last.pt``. The encoder's
# architecture comes from the checkpoint. Training views are random crop + flip only
# (``view_ops=crop,flip``); the reported val top-1 uses resize to 8/7 of the size + centre crop.


def classifier_imagenet(method: str = "linear", options: ClassifierOptions | None = None, **changes) -> Config:
    """The shared base of the ImageNet classifier presets (SGD, momentum 0.9, no weight decay, no warmup)."""
    base = dict(recipe="simclr_imagenet", view_ops="crop,flip", optimizer="sgd", momentum=0.9,
                weight_decay=0.0, warmup_epochs=0.0, checkpoint_every=500)
    return imagenet_r50(method=method, options=options or ClassifierOptions(), **{**base, **changes})


@preset("linear-eval-moco-imagenet")
def linear_eval_moco_imagenet() -> Config:
    """Linear evaluation as MoCo (He et al. 2019, Sec. 4.1; repo ``main_lincls.py``): frozen encoder (BN in
    eval mode), fc on the 2048-d features, SGD momentum 0.9, lr 30, no weight decay, batch 256, 100 epochs,
    lr x0.1 at epochs 60 and 80. Departure: the fc starts at zero (MoCo: N(0, 0.01); a convex problem)."""
    return classifier_imagenet(lr=30.0, batch_size=256, epochs=100, lr_schedule="step", lr_milestones="60,80")


@preset("linear-eval-simclr-imagenet")
def linear_eval_simclr_imagenet() -> Config:
    """Linear evaluation as SimCLR (Chen et al. 2020, App. B.6, with B.5's recipe): frozen encoder, Nesterov
    momentum 0.9, lr = 0.1 x B/256 (1.6 at batch 4096), no weight decay, no warmup, cosine decay, 90 epochs,
    zero-initialised fc; random crop + flip for training, resize 256 / centre crop 224 for testing."""
    return classifier_imagenet(nesterov=True, lr=0.0, base_lr=0.1, lr_scaling="linear", batch_size=4096, epochs=90)


@preset("finetune-simclr-imagenet-1pct")
def finetune_simclr_imagenet_1pct() -> Config:
    """Semi-supervised fine-tuning as SimCLR (Chen et al. 2020, Sec. 6 and App. B.5) on the 1% label subset:
    the whole encoder is trained, Nesterov momentum 0.9, lr = 0.05 x B/256 (0.8 at 4096), no warmup, no
    weight decay, 60 epochs. The labelled images are the ones listed in SimCLR's ``1percent.txt`` (one
    file name per line, e.g. n01440764_10026.JPEG), looked up relative to the working directory, then
    the data root. With fewer than B labelled images per epoch lower ``batch_size``."""
    return classifier_imagenet(
        method="finetune", options=ClassifierOptions(label_subset_file="imagenet_subsets/1percent.txt"),
        nesterov=True, lr=0.0, base_lr=0.05, lr_scaling="linear", batch_size=4096, epochs=60)


@preset("finetune-simclr-imagenet-10pct")
def finetune_simclr_imagenet_10pct() -> Config:
    """As :func:`finetune_simclr_imagenet_1pct` on SimCLR's 10% subset (``10percent.txt``), 30 epochs (App. B.5)."""
    return finetune_simclr_imagenet_1pct().replace(epochs=30, label_subset_file="imagenet_subsets/10percent.txt")


# ----------------------------------------------------------------------------------------
# Presets: linear evaluation and fine-tuning on CIFAR-10 for a 2-core CPU (chapter 10)
# ----------------------------------------------------------------------------------------
# The encoder of the demo preset (ResNet-10 x 0.5, CIFAR stem) unless init_checkpoint names another
# run; init_checkpoint=random trains the same network from scratch with labels only. The training
# views are random crop + flip (SimCLR App. B.5/B.6 use crop + flip). Every number below was chosen
# for cifar10-mini (5085 training images) on 2 CPU cores, by benchmarks/classifier_presets.py
# (results: benchmarks/results/classifier_presets.json); chapter 10 runs these presets as they are.


def classifier_cifar10(method: str, **changes) -> Config:
    """The shared base of the CIFAR-10 classifier presets.

    * SGD with Nesterov momentum 0.9, no weight decay, no warmup, cosine decay (SimCLR App. B.5/B.6).
    * batch 50: the 1% subset of cifar10-mini is 50 images (5 per class, ``data.label_subset``), and a
      batch may not exceed the labelled images; one step then sees all of them.
    * views at 24 px, evaluation on the images' own 32 px (``eval_size``), as the demo preset
      ``simclr-cifar10-cpu`` was trained: a step is ~1.8x cheaper than at 32 px (measured on this machine:
      0.14 vs 0.26 s per step at batch 50), and testing above the training size matches the scale random
      crops magnify objects to (Touvron et al. 2019, "FixRes").
    * ``knn_max_train=500``: the engine's kNN monitor at the start and the end of the run uses at most 500
      labelled images as memory (on all 5085 it costs more than the run's training steps); a classifier
      run's own result is its test top-1.
    """
    base = dict(method=method, dataset="cifar10", recipe="simclr_cifar", view_ops="crop,flip", encoder="resnet10",
                width=0.5, image_size=24, eval_size=32, optimizer="sgd", nesterov=True, momentum=0.9,
                weight_decay=0.0, warmup_epochs=0.0, batch_size=50, knn_every=0, knn_max_train=500,
                checkpoint_every=500, figures=False)
    return Config(**{**base, **changes})


@preset("linear-eval-cifar10-cpu")
def linear_eval_cifar10_cpu() -> Config:
    """Linear evaluation on CIFAR-10 with augmented views (SimCLR App. B.6: frozen encoder, Nesterov SGD,
    no weight decay, cosine) for a 2-core CPU: batch 50, lr 0.05 on the zero-initialised fc, 30 epochs and
    at most 60 steps. lr: best of {0.02, 0.05, 0.1, 0.5, 2.0} on cifar10-mini from the demo preset's
    checkpoint (test top-1 at 1% / 100% of the labels: 0.272 / 0.471 at 0.05, 0.273 / 0.460 at 0.1,
    0.264 / 0.430 at 0.5). Steps: 1% of the labels sees its 50 images 30 times (SimCLR fine-tunes 60
    epochs on 1%, App. B.5; halved here), 10% and 100% stop at 60 steps (6 and 0.6 epochs), so a run
    takes 5-8 s of which 1-3 s train. Set ``init_checkpoint=RUN/checkpoints/last.pt``;
    ``label_fraction=0.01`` keeps 1% of the labels."""
    return classifier_cifar10("linear", lr=0.05, epochs=30, max_steps=60)


@preset("finetune-cifar10-cpu")
def finetune_cifar10_cpu() -> Config:
    """Fine-tuning on CIFAR-10 (SimCLR Sec. 6 / App. B.5: the whole network, Nesterov SGD, no weight decay,
    no warmup) for a 2-core CPU: batch 50, lr 0.02, crops of at least 30% of the image, 30 epochs and at
    most 60 steps (as ``linear-eval-cifar10-cpu``). lr and crop: best on cifar10-mini from the demo
    preset's checkpoint of lr {0.005, 0.01, 0.02, 0.05, 0.1, 0.2} x smallest crop area {0.08 (the
    recipe's), 0.3} (top-1 at 1% / 100% of the labels: 0.280 / 0.453 at lr 0.02 and crop 0.3, 0.285 /
    0.421 at 0.02 and 0.08, 0.294 / 0.422 at 0.005, 0.253 / 0.419 at 0.05; SimCLR's rule, 0.05 x B/256,
    gives 0.01 at B = 50). From scratch (``init_checkpoint=random``) the same grid favours lr 0.1 (0.249 /
    0.350 against 0.228 / 0.306 at 0.05, crop 0.3): pass ``lr=0.1`` for a fair baseline, as chapter 10
    does. A run takes 8-14 s, 4-9 s of it training. Set ``init_checkpoint`` and ``label_fraction``
    (0.01, 0.1; class-balanced)."""
    return classifier_cifar10("finetune", lr=0.02, crop_min_scale=0.3, epochs=30, max_steps=60)
