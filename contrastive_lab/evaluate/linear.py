"""Linear evaluation on frozen features: softmax regression on h, the protocol every paper in the
book reports (SimCLR Sec. 2.3 / App. B.6; MoCo Sec. 4.1). Chapters 03, 05 and 10 use it.

This is the fast CPU form on precomputed features. At ImageNet scale, with augmented views and
DDP, linear evaluation is a training run instead: ``method=linear`` (methods/classifier.py).
"""

from __future__ import annotations

import math
import numbers

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..optim import param_groups, warmup_cosine
from ._checks import _as_features, _as_labels, _check_positive_int, _resolve_num_classes


def _standardizer(x: Tensor) -> tuple[Tensor, Tensor]:
    """Per-dimension mean and std of the training features; constant dimensions get std 1."""
    mean, std = x.mean(0), x.std(0, unbiased=False)
    return mean, torch.where(std > 1e-8, std, torch.ones_like(std))


def _fold_standardization(linear: nn.Linear, mean: Tensor, std: Tensor) -> nn.Linear:
    """W((x - mu)/sigma) + b  ==  (W/sigma) x + (b - W(mu/sigma)): one Linear on raw features."""
    folded = nn.Linear(linear.in_features, linear.out_features)
    with torch.no_grad():
        folded.weight.copy_(linear.weight / std)
        folded.bias.copy_(linear.bias - linear.weight @ (mean / std))
    return folded


def linear_probe(
    train_features: Tensor,
    train_labels: Tensor,
    test_features: Tensor,
    test_labels: Tensor,
    epochs: int = 100,
    lr: float = 0.01,
    weight_decay: float = 0.0,
    batch_size: int = 256,
    seed: int = 0,
    standardize: bool = True,
    num_classes: int | None = None,
) -> dict:
    r"""Linear evaluation on frozen features: softmax regression, report top-1.

    Minimises :math:`\frac1N\sum_i \mathrm{CE}(W \tilde x_i + b, y_i) + \frac{\lambda}{2}\|W\|^2` with
    :math:`\tilde x = (x - \mu)/\sigma` (train statistics) when ``standardize``. The protocol is SimCLR
    Sec 2.3 / App. B.6 and MoCo Sec 4.1 (a single fully-connected layer + softmax on the frozen
    encoder output, weight decay 0); they train it with SGD/LARS for 90-100 epochs. On CPU we use Adam
    (Kingma & Ba 2015), minibatches of ``batch_size``, lr cosine-decayed to 0 (SGDR), zero-initialised
    weights: the problem is convex, so this converges in a few seconds on 5000 x 512 features without
    tuning, and standardising the inputs makes one default lr work for any encoder's feature scale.
    ``weight_decay`` is the L2 coefficient :math:`\lambda` on W (not on b). Deterministic for a seed.

    Returns ``top1`` (test) and ``train_top1`` in [0, 1], ``history`` (mean training loss per epoch)
    and ``classifier``: an ``nn.Linear`` on *raw* features with the standardisation folded in.
    """
    train = _as_features(train_features, "train_features")
    test = _as_features(test_features, "test_features")
    if train.shape[1] != test.shape[1]:
        raise ValueError(f"train_features have D={train.shape[1]} but test_features have D={test.shape[1]}.")
    y_train = _as_labels(train_labels, len(train), "train_labels", num_classes)
    y_test = _as_labels(test_labels, len(test), "test_labels", num_classes)
    num_classes = _resolve_num_classes(num_classes, y_train, y_test)
    _check_positive_int(epochs, "epochs")
    _check_positive_int(batch_size, "batch_size")
    if isinstance(lr, bool) or not (isinstance(lr, numbers.Real) and math.isfinite(lr) and lr > 0):
        raise ValueError(f"lr must be a finite number > 0, got {lr!r}.")
    train, test = train.cpu(), test.cpu()
    mean, std = (
        _standardizer(train) if standardize else (torch.zeros(train.shape[1]), torch.ones(train.shape[1]))
    )
    x = (train - mean) / std

    head = nn.Linear(train.shape[1], num_classes)
    nn.init.zeros_(head.weight)
    nn.init.zeros_(head.bias)
    optimizer = torch.optim.Adam(param_groups(head, weight_decay), lr=lr)  # L2 on W only
    steps_per_epoch = math.ceil(len(x) / batch_size)
    generator = torch.Generator().manual_seed(seed)
    history, step = [], 0
    for _ in range(epochs):
        total = 0.0
        for idx in torch.randperm(len(x), generator=generator).split(batch_size):
            for group in optimizer.param_groups:
                group["lr"] = warmup_cosine(step, epochs * steps_per_epoch, 0, lr)
            loss = F.cross_entropy(head(x[idx]), y_train[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total, step = total + loss.item() * len(idx), step + 1
        history.append(total / len(x))

    classifier = _fold_standardization(head, mean, std)
    with torch.no_grad():
        train_top1 = float((classifier(train).argmax(1) == y_train).float().mean())
        top1 = float((classifier(test).argmax(1) == y_test).float().mean())
    return {"top1": top1, "train_top1": train_top1, "history": history, "classifier": classifier}
