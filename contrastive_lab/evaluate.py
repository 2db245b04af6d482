"""Evaluation protocols for self-supervised representations.

* :func:`knn_accuracy` - weighted cosine k-nearest-neighbour classifier on frozen features (Wu et al.
  2018, Sec 3.4); :class:`KNNMonitor` runs it during training like MoCo's CIFAR demo.
* :func:`linear_probe` - linear evaluation protocol: a linear classifier on frozen features (SimCLR,
  Chen et al. 2020, Sec 2.3 and App. B.6; MoCo, He et al. 2020, Sec 4.1).
* :func:`label_subset` + :func:`finetune` - semi-supervised evaluation: fine-tune the whole encoder on
  a class-balanced 1% / 10% label subset (SimCLR Sec 6 and App. B.5).
* :func:`feature_alignment_uniformity` - alignment and uniformity (Wang & Isola 2020, Sec 4.1).

Everything works on precomputed features where it can: :func:`extract_features` runs the encoder
once, in eval mode and without gradients, and returns float32 CPU features.
"""

from __future__ import annotations

import copy
import math
import numbers
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .optim import build_optimizer, build_scheduler, param_groups, warmup_cosine
from .runtime import autocast_dtype

__all__ = [
    "KNNMonitor",
    "extract_features",
    "feature_alignment_uniformity",
    "finetune",
    "knn_accuracy",
    "knn_predict",
    "knn_predict_reference",
    "label_subset",
    "linear_probe",
    "project_features",
]

Transform = Callable[[Tensor], Tensor]


# ----------------------------------------------------------------------------------------
# Input checks shared by every protocol
# ----------------------------------------------------------------------------------------


def _as_images(images_or_dataset) -> Tensor:
    images = getattr(images_or_dataset, "images", images_or_dataset)
    if not isinstance(images, Tensor):
        raise TypeError(
            "expected a (N, C, H, W) image tensor or a dataset with an `.images` tensor, "
            f"got {type(images_or_dataset).__name__}."
        )
    if images.ndim != 4 or len(images) == 0:
        raise ValueError(f"images must be a non-empty (N, C, H, W) tensor, got shape {tuple(images.shape)}.")
    if images.dtype != torch.uint8 and not images.is_floating_point():
        raise TypeError(f"images must be uint8 or floating point, got {images.dtype}.")
    return images


def _as_features(x, name: str) -> Tensor:
    x = torch.as_tensor(x)
    if x.ndim != 2 or len(x) == 0 or not x.is_floating_point():
        raise ValueError(
            f"{name} must be a non-empty float (N, D) tensor, got {x.dtype} of shape {tuple(x.shape)}."
        )
    if not torch.isfinite(x).all():
        raise ValueError(f"{name} contains NaN or inf; the encoder probably diverged.")
    return x.float()


def _as_labels(y, n: int, name: str, num_classes: int | None = None) -> Tensor:
    y = torch.as_tensor(y)
    if y.ndim != 1 or y.dtype.is_floating_point or y.dtype == torch.bool:
        raise ValueError(f"{name} must be a 1-D integer tensor, got {y.dtype} of shape {tuple(y.shape)}.")
    if len(y) != n:
        raise ValueError(f"{name} has {len(y)} entries but there are {n} examples (rows); they must match.")
    y = y.long().cpu()
    if len(y) and y.min() < 0:
        raise ValueError(f"{name} contains negative class {int(y.min())}; labels must be 0..num_classes-1.")
    if num_classes is not None and len(y) and y.max() >= num_classes:
        raise ValueError(f"{name} contains class {int(y.max())} but num_classes={num_classes}.")
    return y


def _resolve_num_classes(num_classes: int | None, *labels: Tensor) -> int:
    if num_classes is None:
        return int(max(int(y.max()) for y in labels)) + 1
    if not _is_int(num_classes) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive integer or None, got {num_classes!r}.")
    return num_classes


def _is_int(value: object) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _check_positive_int(value, name: str) -> int:
    if not _is_int(value) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}.")
    return value


def _encoder_device(encoder: nn.Module, device: torch.device | str | None) -> torch.device:
    params = list(encoder.parameters()) + list(encoder.buffers())
    own = params[0].device if params else torch.device("cpu")
    if device is None:
        return own
    device = torch.device(device)
    if params and (own.type != device.type or (device.index is not None and own != device)):
        raise ValueError(
            f"the encoder lives on {own} but device={device}; move it first with encoder.to(device)."
        )
    return device


def _default_transform(x: Tensor) -> Tensor:
    return x.float() / 255.0 if x.dtype == torch.uint8 else x


# ----------------------------------------------------------------------------------------
# Features
# ----------------------------------------------------------------------------------------


@torch.no_grad()
def extract_features(
    encoder: nn.Module,
    images_or_dataset,
    batch_size: int = 256,
    device: torch.device | str | None = None,
    transform: Transform | None = None,
    normalize: bool = False,
    autocast: bool = True,
) -> Tensor:
    """Run a frozen encoder over all images; return float32 features ``(N, D)`` on the CPU.

    ``images_or_dataset``: a uint8 or float ``(N, C, H, W)`` tensor, or an object with ``.images``.
    ``transform`` is applied to each batch after it is moved to ``device`` (e.g. uint8 -> normalised
    float); by default uint8 becomes ``x / 255`` and float input is used as is. ``device`` defaults to
    where the encoder's parameters are; the encoder is never moved. ``normalize=True`` L2-normalises each
    row. ``autocast=True`` uses the mixed-precision dtype :func:`contrastive_lab.runtime.autocast_dtype`
    picks (bf16 only where the hardware has it). The encoder runs in eval mode (BatchNorm uses its running
    statistics) and every submodule's train/eval flag is restored afterwards.
    """
    if not isinstance(encoder, nn.Module):
        raise TypeError(f"encoder must be an nn.Module, got {type(encoder).__name__}.")
    images = _as_images(images_or_dataset)
    _check_positive_int(batch_size, "batch_size")
    device = _encoder_device(encoder, device)
    transform = transform or _default_transform
    dtype = autocast_dtype(device) if autocast else None
    modes = [(m, m.training) for m in encoder.modules()]
    encoder.eval()
    try:
        chunks = []
        for batch in images.split(batch_size):
            x = transform(batch.to(device, non_blocking=True))
            with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
                out = encoder(x)
            if not isinstance(out, Tensor) or out.ndim != 2 or len(out) != len(batch):
                shape = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
                raise ValueError(
                    f"the encoder must return (batch, D) features; got {shape} for {len(batch)} images."
                )
            chunks.append(out.float().cpu())
    finally:
        for m, mode in modes:
            m.train(mode)
    features = torch.cat(chunks)
    return F.normalize(features, dim=1) if normalize else features


def project_features(head: nn.Module, features: Tensor, batch_size: int = 1024) -> Tensor:
    """z = g(h): run a projection head over precomputed encoder features h; float32 ``(N, D_z)``.

    kNN on z is what the monitors the textbook follows evaluate: in Wu et al. 2018 (Sec. 3.1, 3.4)
    and MoCo's CIFAR-10 demo the "network output" is the 128-d output of a final linear layer,
    which is our linear head g. SimCLR (Sec. 4.2) finds h better than z for *linear* evaluation;
    for the cosine kNN, z lives in the space the contrastive loss shaped. Runs on the head's device
    in eval mode (its BatchNorm layers, if any, use their running statistics); every submodule's
    train/eval flag is restored afterwards.
    """
    if not isinstance(head, nn.Module):
        raise TypeError(f"head must be an nn.Module, got {type(head).__name__}.")
    features = _as_features(features, "features")
    _check_positive_int(batch_size, "batch_size")
    params = list(head.parameters())
    device = params[0].device if params else features.device
    dtype = params[0].dtype if params else torch.float32  # float64 heads (precision=fp64) get float64 input
    modes = [(m, m.training) for m in head.modules()]
    head.eval()
    try:
        with torch.no_grad():
            chunks = [head(h.to(device, dtype)).float().cpu() for h in features.split(batch_size)]
    finally:
        for m, mode in modes:
            m.train(mode)
    return torch.cat(chunks)


# ----------------------------------------------------------------------------------------
# Weighted kNN (Wu et al. 2018, Sec 3.4; MoCo's CIFAR-10 demo monitor)
# ----------------------------------------------------------------------------------------


def _check_knn(train_features, train_labels, test_features, k, temperature, num_classes):
    train = _as_features(train_features, "train_features")
    test = _as_features(test_features, "test_features")
    if train.shape[1] != test.shape[1]:
        raise ValueError(f"train_features have D={train.shape[1]} but test_features have D={test.shape[1]}.")
    labels = _as_labels(train_labels, len(train), "train_labels", num_classes)
    _check_k_temperature(k, temperature, len(train))
    return train, labels, test, _resolve_num_classes(num_classes, labels)


def _check_k_temperature(k: int, temperature: float, n_train: int) -> None:
    if not _is_int(k) or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}.")
    if k > n_train:
        raise ValueError(f"k={k} exceeds the number of training features ({n_train}); pass k <= {n_train}.")
    if (
        isinstance(temperature, bool)
        or not isinstance(temperature, numbers.Real)
        or not (math.isfinite(temperature) and temperature > 0)
    ):
        raise ValueError(f"temperature must be a finite number > 0, got {temperature!r}.")


def knn_predict(
    train_features: Tensor,
    train_labels: Tensor,
    test_features: Tensor,
    k: int = 200,
    temperature: float = 0.1,
    num_classes: int | None = None,
    batch_size: int = 256,
) -> Tensor:
    r"""Weighted cosine kNN class predictions, ``(N_test,)`` long tensor.

    With :math:`s_i = \cos(x, x_i)` over the k most similar training features :math:`N_k(x)`:

    .. math:: \hat y(x) = \arg\max_c \sum_{i \in N_k(x)} e^{s_i / \tau}\, [y_i = c]

    (Wu et al. 2018, Sec 3.4; k=200, tau=0.1 as in MoCo's CIFAR demo). Test rows are processed
    ``batch_size`` at a time, so memory is ``batch_size x N_train``. For stability the weights are
    computed as :math:`e^{(s_i - \max_j s_j)/\tau}`; a common factor per row leaves the argmax unchanged.
    Ties (equal votes) go to the lowest class index. ``num_classes`` defaults to ``max(train_labels) + 1``.
    """
    train, labels, test, num_classes = _check_knn(
        train_features, train_labels, test_features, k, temperature, num_classes
    )
    _check_positive_int(batch_size, "batch_size")
    train, labels = F.normalize(train, dim=1), labels.to(train.device)
    preds = []
    for chunk in F.normalize(test.to(train.device), dim=1).split(batch_size):
        sim, idx = (chunk @ train.T).topk(k, dim=1)  # (b, k), sorted descending
        weights = ((sim - sim[:, :1]) / temperature).exp()
        votes = torch.zeros(len(chunk), num_classes, device=train.device)
        votes.scatter_add_(1, labels[idx], weights)
        preds.append(votes.argmax(dim=1))
    return torch.cat(preds).cpu()


def knn_predict_reference(
    train_features,
    train_labels,
    test_features,
    k: int = 200,
    temperature: float = 0.1,
    num_classes: int | None = None,
) -> Tensor:
    """Slow, readable version of :func:`knn_predict`: one test point at a time, NumPy float64."""
    train, labels, test, num_classes = _check_knn(
        train_features, train_labels, test_features, k, temperature, num_classes
    )
    train = train.double().numpy()
    train = train / np.maximum(np.linalg.norm(train, axis=1, keepdims=True), 1e-12)
    preds = []
    for x in test.double().numpy():
        x = x / max(np.linalg.norm(x), 1e-12)
        sims = train @ x
        neighbours = np.argsort(-sims, kind="stable")[:k]
        votes = np.zeros(num_classes)
        for i in neighbours:
            votes[labels[i]] += np.exp(sims[i] / temperature)
        preds.append(int(np.argmax(votes)))
    return torch.tensor(preds, dtype=torch.long)


def knn_accuracy(
    train_features: Tensor,
    train_labels: Tensor,
    test_features: Tensor,
    test_labels: Tensor,
    k: int = 200,
    temperature: float = 0.1,
    num_classes: int | None = None,
    batch_size: int = 256,
) -> float:
    """Top-1 accuracy in [0, 1] of :func:`knn_predict` (Wu et al. 2018, Sec 3.4)."""
    preds = knn_predict(train_features, train_labels, test_features, k, temperature, num_classes, batch_size)
    test_labels = _as_labels(test_labels, len(preds), "test_labels", num_classes)
    return float((preds == test_labels).float().mean())


class KNNMonitor:
    """Online kNN monitor: ``monitor(encoder) -> top-1`` on fixed train/test images.

    Extracts features of both sets with :func:`extract_features` (eval mode, no grad) and returns
    :func:`knn_accuracy`. As in MoCo's CIFAR-10 demo, the "train" set is the memory of labelled
    neighbours and the score tracks representation quality while pre-training runs.
    """

    def __init__(
        self,
        train_images,
        train_labels,
        test_images,
        test_labels,
        transform: Transform | None = None,
        k: int = 200,
        temperature: float = 0.1,
        batch_size: int = 256,
        num_classes: int | None = None,
    ) -> None:
        self.train_images, self.test_images = _as_images(train_images), _as_images(test_images)
        self.train_labels = _as_labels(train_labels, len(self.train_images), "train_labels", num_classes)
        self.test_labels = _as_labels(test_labels, len(self.test_images), "test_labels", num_classes)
        _check_k_temperature(k, temperature, len(self.train_images))  # fail at construction, not mid-run
        self.transform, self.k, self.temperature = transform, k, temperature
        self.batch_size, self.num_classes = _check_positive_int(batch_size, "batch_size"), num_classes

    def __call__(self, encoder: nn.Module, device: torch.device | str | None = None) -> float:
        feats = [
            extract_features(encoder, x, self.batch_size, device, self.transform)
            for x in (self.train_images, self.test_images)
        ]
        return knn_accuracy(
            feats[0],
            self.train_labels,
            feats[1],
            self.test_labels,
            self.k,
            self.temperature,
            self.num_classes,
            self.batch_size,
        )


# ----------------------------------------------------------------------------------------
# Linear evaluation protocol
# ----------------------------------------------------------------------------------------


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


# ----------------------------------------------------------------------------------------
# Semi-supervised evaluation: label subsets and fine-tuning
# ----------------------------------------------------------------------------------------


def label_subset(labels, fraction: float, seed: int = 0, per_class: bool = True) -> Tensor:
    """Sorted indices of a random ``fraction`` of the examples, class-balanced by default.

    ``per_class=True``: from each class with n_c examples keep round(fraction x n_c) (half rounds up,
    at least 1), like SimCLR's 1% / 10% ImageNet subsets "sampled in a class-balanced way" (Sec 6;
    SimCLR ships fixed subset files, here the subset is drawn from ``seed``). ``per_class=False``: a
    uniform random subset of round(fraction x N) examples. Each class (or the whole set) is shuffled
    once with the seed and a prefix is kept, so for one seed smaller fractions are subsets of larger ones.
    """
    labels = torch.as_tensor(labels)
    labels = _as_labels(labels, len(labels), "labels")
    if len(labels) == 0:
        raise ValueError("labels is empty; there is nothing to subsample.")
    if isinstance(fraction, bool) or not (isinstance(fraction, numbers.Real) and 0 < fraction <= 1):
        raise ValueError(f"fraction must be in (0, 1], got {fraction!r} (e.g. 0.01 for the 1% subset).")
    generator = torch.Generator().manual_seed(seed)
    keep = lambda n: max(1, int(fraction * n + 0.5))
    if not per_class:
        return torch.randperm(len(labels), generator=generator)[: keep(len(labels))].sort().values
    picked = []
    for c in labels.unique(sorted=True):
        members = (labels == c).nonzero().flatten()
        picked.append(members[torch.randperm(len(members), generator=generator)][: keep(len(members))])
    return torch.cat(picked).sort().values


def finetune(
    encoder: nn.Module,
    images: Tensor,
    labels: Tensor,
    test_images: Tensor,
    test_labels: Tensor,
    fraction: float = 0.1,
    epochs: int = 30,
    lr: float = 0.05,
    batch_size: int = 64,
    transform: Transform | None = None,
    device: torch.device | str | None = None,
    seed: int = 0,
    optimizer: str = "sgd",
    weight_decay: float = 0.0,
    test_transform: Transform | None = None,
    num_classes: int | None = None,
) -> dict:
    """Fine-tune a copy of ``encoder`` plus a new linear head on a class-balanced label subset.

    SimCLR Sec 6 / App. B.5 fine-tunes the whole network on 1% or 10% of the labels with Nesterov
    momentum 0.9, lr = 0.05 x BatchSize/256, no warmup, no weight decay, 60 / 30 epochs. Here:
    :func:`label_subset` picks the examples; ``build_optimizer(optimizer, ...)`` (for "sgd": Nesterov,
    momentum 0.9) with a per-step cosine schedule; plain fp32 cross-entropy. ``lr`` is used as given
    (no batch-size scaling). ``transform`` maps a uint8 batch to encoder input (it may augment);
    ``test_transform`` (default: ``transform``) is used for evaluation.

    The caller's encoder is not modified: a deep copy is trained, on ``device`` (default: where the
    encoder is). The global RNG is seeded with ``seed`` inside ``torch.random.fork_rng``, so runs are
    repeatable (on the CPU) and the caller's RNG state is untouched.

    Returns ``top1`` (test), ``train_top1`` (labelled subset), ``history`` (loss per epoch),
    ``num_labelled`` and ``model`` (the fine-tuned ``nn.Sequential(encoder, head)``).
    """
    images, test_images = _as_images(images), _as_images(test_images)
    labels = _as_labels(labels, len(images), "labels", num_classes)
    test_labels = _as_labels(test_labels, len(test_images), "test_labels", num_classes)
    num_classes = _resolve_num_classes(num_classes, labels, test_labels)
    _check_positive_int(epochs, "epochs")
    _check_positive_int(batch_size, "batch_size")
    device = _encoder_device(encoder, None) if device is None else torch.device(device)  # the copy moves
    transform = transform or _default_transform
    test_transform = test_transform or transform
    subset = label_subset(labels, fraction, seed)

    fork_devices = (
        [device.index if device.index is not None else torch.cuda.current_device()]
        if device.type == "cuda"
        else []
    )
    with torch.random.fork_rng(devices=fork_devices):
        torch.manual_seed(seed)
        model = copy.deepcopy(encoder).to(device)
        dim = extract_features(
            model, images[:2], device=device, transform=test_transform, autocast=False
        ).shape[1]
        net = nn.Sequential(model, nn.Linear(dim, num_classes)).to(device)
        history = _train_classifier(
            net,
            images[subset],
            labels[subset],
            transform,
            device,
            epochs,
            lr,
            batch_size,
            optimizer,
            weight_decay,
        )

    def top1(x: Tensor, y: Tensor) -> float:
        logits = extract_features(net, x, batch_size, device, test_transform, autocast=False)
        return float((logits.argmax(1) == y).float().mean())

    return {
        "top1": top1(test_images, test_labels),
        "train_top1": top1(images[subset], labels[subset]),
        "history": history,
        "num_labelled": len(subset),
        "model": net,
    }


def _train_classifier(
    net, images, labels, transform, device, epochs, lr, batch_size, optimizer, weight_decay
):
    """Minibatch cross-entropy training of ``net`` (train mode), cosine lr per step; loss per epoch."""
    num_batches = math.ceil(len(images) / batch_size)
    extra = {"nesterov": True} if optimizer == "sgd" else {}
    opt = build_optimizer(optimizer, net, lr=lr, weight_decay=weight_decay, **extra)
    scheduler = build_scheduler(opt, total_steps=epochs * num_batches, warmup_steps=0)
    net.train()
    history = []
    for _ in range(epochs):
        total = 0.0
        # tensor_split: near-equal batches, so BatchNorm never sees a lone example at the epoch's end.
        for idx in torch.randperm(len(images)).tensor_split(num_batches):
            x, y = transform(images[idx].to(device)), labels[idx].to(device)
            loss = F.cross_entropy(net(x), y)
            if not torch.isfinite(loss):
                raise FloatingPointError(f"fine-tuning loss became {float(loss)}; lower lr (now {lr}).")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            scheduler.step()
            total += loss.item() * len(idx)
        history.append(total / len(images))
    return history


# ----------------------------------------------------------------------------------------
# Alignment and uniformity (Wang & Isola 2020)
# ----------------------------------------------------------------------------------------


def feature_alignment_uniformity(z1: Tensor, z2: Tensor, alpha: float = 2.0, t: float = 2.0) -> dict:
    r"""Alignment and uniformity of features of two views of the same images (Wang & Isola 2020).

    Rows are first L2-normalised onto the unit sphere (the paper's setting, Sec 4.1), then

    .. math::
        \mathcal L_\text{align} = \mathbb E\,\|f(x) - f(y)\|_2^\alpha, \qquad
        \mathcal L_\text{uniform} = \log \mathbb E_{i \ne j}\, e^{-t \|f(x_i) - f(x_j)\|_2^2}

    (Eqs. 4 and 5 / Sec 4.1, alpha = t = 2). Uniformity is averaged over the two views, as in the
    paper's reference code. Lower is better for both. The formulas come from
    :func:`contrastive_lab.losses.alignment` and :func:`contrastive_lab.losses.uniformity`.
    """
    from .losses import alignment, uniformity  # lazy: losses imports nothing from here

    z1, z2 = _as_features(z1, "z1"), _as_features(z2, "z2")
    if z1.shape != z2.shape:
        raise ValueError(
            f"z1 and z2 must be paired views with the same shape, got {tuple(z1.shape)} and "
            f"{tuple(z2.shape)}."
        )
    if len(z1) < 2:
        raise ValueError("uniformity needs at least 2 feature rows.")
    z1, z2 = F.normalize(z1, dim=1), F.normalize(z2, dim=1)
    align = alignment(z1, z2, alpha=alpha)
    unif = (uniformity(z1, t=t) + uniformity(z2, t=t)) / 2
    return {"alignment": float(align), "uniformity": float(unif)}
