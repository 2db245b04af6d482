"""Tests for contrastive_lab.evaluate: features, weighted kNN, the kNN monitor, linear probe, label subsets
(contrastive_lab.data.label_subset). Fine-tuning is a training run: tests/test_classifier.py."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from contrastive_lab.data import label_subset
from contrastive_lab.evaluate import (
    KNNMonitor,
    extract_features,
    feature_alignment_uniformity,
    knn_accuracy,
    knn_on_h_and_z,
    knn_predict,
    knn_predict_reference,
    linear_probe,
    project_features,
)


class TinyEncoder(nn.Module):
    """conv -> BN -> ReLU -> global average pool -> (B, 8)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)

    def forward(self, x):
        return F.relu(self.bn(self.conv(x))).mean((2, 3))


class MeanColour(nn.Module):
    """Parameter-free 'identity-like' encoder: the mean colour of the image, (B, 3)."""

    def forward(self, x):
        return x.mean((2, 3))


def colour_images(n_per_class: int, num_classes: int = 3, size: int = 6, seed: int = 0, noise: int = 20):
    """uint8 images whose class is which channel is bright: class-separable by mean colour."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(num_classes).repeat_interleave(n_per_class)
    images = torch.randint(0, noise, (len(labels), 3, size, size), generator=g)
    images[torch.arange(len(labels)), labels % 3] += 180
    perm = torch.randperm(len(labels), generator=g)
    return images[perm].to(torch.uint8), labels[perm]


# ----------------------------------------------------------------------------- extract_features
def test_extract_features_matches_one_big_forward_and_restores_modes():
    torch.manual_seed(0)
    enc = TinyEncoder()
    enc.bn.running_mean.uniform_(-0.1, 0.1)
    enc.train()
    enc.bn.eval()  # a mixed state must be restored exactly
    images, _ = colour_images(3, seed=1)  # 9 images, batch_size 4 -> uneven last batch
    stats = enc.bn.running_mean.clone()
    transform = lambda x: (x.float() / 255 - 0.5) / 0.25
    feats = extract_features(enc, images, batch_size=4, transform=transform, autocast=False)

    ref = copy.deepcopy(enc).eval()
    with torch.no_grad():
        want = ref(transform(images))
    assert feats.dtype == torch.float32 and feats.device.type == "cpu" and not feats.requires_grad
    torch.testing.assert_close(feats, want)
    assert enc.training and not enc.bn.training and enc.conv.training
    assert torch.equal(enc.bn.running_mean, stats)  # eval mode: BN statistics untouched


def test_extract_features_dataset_default_transform_and_normalize():
    images, labels = colour_images(4)

    class DS:
        pass

    ds = DS()
    ds.images = images
    enc = MeanColour()
    feats = extract_features(enc, ds, batch_size=5, autocast=False)
    torch.testing.assert_close(feats, images.float().mean((2, 3)) / 255)  # default: uint8 -> x / 255
    unit = extract_features(enc, images, normalize=True, autocast=False)
    torch.testing.assert_close(unit.norm(dim=1), torch.ones(len(images)))
    floats = images.float() / 255
    torch.testing.assert_close(extract_features(enc, floats, autocast=False), feats)  # float input as is


def test_extract_features_autocast_close_to_fp32():
    torch.manual_seed(0)
    enc, images = TinyEncoder(), colour_images(4)[0]
    a = extract_features(enc, images, autocast=True)
    b = extract_features(enc, images, autocast=False)
    assert a.dtype == torch.float32
    torch.testing.assert_close(a, b, rtol=5e-2, atol=5e-2)


def test_extract_features_errors():
    enc = MeanColour()
    with pytest.raises(TypeError, match=r"\(N, C, H, W\) image tensor or a dataset"):
        extract_features(enc, [1, 2, 3])
    with pytest.raises(ValueError, match=r"non-empty \(N, C, H, W\)"):
        extract_features(enc, torch.zeros(2, 3, 4))
    with pytest.raises(TypeError, match="uint8 or floating point"):
        extract_features(enc, torch.zeros(2, 3, 4, 4, dtype=torch.int64))
    with pytest.raises(ValueError, match=r"must return \(batch, D\) features; got \(2, 3, 4, 4\)"):
        extract_features(nn.Identity(), torch.zeros(2, 3, 4, 4))
    with pytest.raises(ValueError, match="encoder lives on cpu but device=cuda"):
        extract_features(TinyEncoder(), torch.zeros(2, 3, 4, 4), device="cuda")
    with pytest.raises(ValueError, match="batch_size must be a positive integer"):
        extract_features(enc, torch.zeros(2, 3, 4, 4), batch_size=0)
    with pytest.raises(TypeError, match="encoder must be an nn.Module"):
        extract_features(lambda x: x, torch.zeros(2, 3, 4, 4))


# ----------------------------------------------------------------------------- kNN
def test_knn_hand_computed_example():
    # Train: a=(1,0) class 0; b=(0,1) class 1; c=(0.8,0.6) class 1. Query q=(1,0): cos = 1, 0, 0.8.
    train = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.8, 0.6]])
    labels = torch.tensor([0, 1, 1])
    q = torch.tensor([[2.0, 0.0], [0.0, 3.0]])  # scale must not matter (cosine)
    # T=1, k=3: votes c0 = e^1 = 2.718 ; c1 = e^0.8 + e^0 = 3.226  -> class 1
    assert knn_predict(train, labels, q, k=3, temperature=1.0).tolist() == [1, 1]
    # T=0.1, k=3: c0 = e^10 = 22026 ; c1 = e^8 + e^0 = 2982 -> class 0
    assert knn_predict(train, labels, q, k=3, temperature=0.1).tolist() == [0, 1]
    # T=1, k=2: neighbours a (1.0) and c (0.8): c0 = e^1 > c1 = e^0.8 -> class 0
    assert knn_predict(train, labels, q, k=2, temperature=1.0).tolist() == [0, 1]
    assert knn_accuracy(train, labels, q, torch.tensor([0, 1]), k=3, temperature=1.0) == 0.5


@pytest.mark.parametrize(
    "k,temperature,batch_size", [(1, 0.1, 7), (15, 0.1, 32), (40, 0.5, 1000), (60, 0.01, 5)]
)
def test_knn_fast_matches_reference(k, temperature, batch_size):
    g = torch.Generator().manual_seed(k)
    centres = torch.randn(5, 16, generator=g)
    train_labels = torch.randint(0, 5, (300,), generator=g)
    test_labels = torch.randint(0, 5, (90,), generator=g)
    train = centres[train_labels] + 1.5 * torch.randn(300, 16, generator=g)
    test = centres[test_labels] + 1.5 * torch.randn(90, 16, generator=g)
    fast = knn_predict(train, train_labels, test, k=k, temperature=temperature, batch_size=batch_size)
    ref = knn_predict_reference(train, train_labels, test, k=k, temperature=temperature)
    assert torch.equal(fast, ref)
    acc = knn_accuracy(train, train_labels, test, test_labels, k=k, temperature=temperature)
    assert acc == pytest.approx(float((ref == test_labels).float().mean()))
    assert acc > 0.5  # the clusters are informative: far above chance (0.2)


def test_knn_num_classes_and_numpy_labels():
    train = torch.eye(3)
    preds = knn_predict(train, np.array([0, 1, 2]), train, k=1, num_classes=10)
    assert preds.tolist() == [0, 1, 2]
    assert knn_accuracy(train, [0, 1, 2], train, [0, 1, 2], k=1) == 1.0


def test_knn_errors():
    tr, y = torch.randn(10, 4), torch.arange(10) % 3
    with pytest.raises(ValueError, match="train_features have D=4 but test_features have D=5"):
        knn_predict(tr, y, torch.randn(2, 5), k=3)
    with pytest.raises(ValueError, match=r"train_labels has 9 entries but there are 10 examples"):
        knn_predict(tr, y[:9], tr, k=3)
    with pytest.raises(ValueError, match="k must be a positive integer"):
        knn_predict(tr, y, tr, k=0)
    with pytest.raises(
        ValueError, match=r"k=11 exceeds the number of training features \(10\); pass k <= 10"
    ):
        knn_predict(tr, y, tr, k=11)
    with pytest.raises(ValueError, match="negative class -1"):
        knn_predict(tr, y - 1, tr, k=3)
    with pytest.raises(ValueError, match="contains class 2 but num_classes=2"):
        knn_predict(tr, y, tr, k=3, num_classes=2)
    with pytest.raises(ValueError, match="test_labels contains class 5 but num_classes=3"):
        knn_accuracy(tr, y, tr, torch.full((10,), 5), k=3, num_classes=3)
    with pytest.raises(ValueError, match="1-D integer tensor"):
        knn_predict(tr, y.float(), tr, k=3)
    with pytest.raises(ValueError, match="temperature must be a finite number > 0"):
        knn_predict(tr, y, tr, k=3, temperature=0.0)
    with pytest.raises(ValueError, match="NaN or inf"):
        knn_predict(tr, y, torch.full((2, 4), float("nan")), k=3)
    with pytest.raises(ValueError, match=r"float \(N, D\) tensor"):
        knn_predict(tr[0], y, tr, k=3)


def test_knn_monitor_on_separable_images():
    train_x, train_y = colour_images(20, seed=0)
    test_x, test_y = colour_images(10, seed=1)
    monitor = KNNMonitor(
        train_x, train_y, test_x, test_y, transform=None, k=10, temperature=0.1, batch_size=16
    )
    enc = MeanColour()
    assert monitor(enc) == {"h": 1.0}  # no head: h only
    want = knn_accuracy(extract_features(enc, train_x), train_y, extract_features(enc, test_x), test_y, k=10)
    assert monitor(enc)["h"] == want
    head = nn.Linear(3, 2)  # with a head that projects, also z = g(h), by the same kNN
    h_train, h_test = extract_features(enc, train_x), extract_features(enc, test_x)
    with torch.no_grad():
        want_z = knn_accuracy(head(h_train), train_y, head(h_test), test_y, k=10)
    assert monitor(enc, head) == {"h": want, "z": pytest.approx(want_z)}
    assert knn_on_h_and_z(h_train, train_y, h_test, test_y, head, k=500) == monitor(enc, head)  # k capped at 20

    # A constant encoder carries no information: every query sees the same neighbours.
    class Constant(nn.Module):
        def forward(self, x):
            return torch.ones(len(x), 2)

    assert monitor(Constant())["h"] == pytest.approx(1 / 3)
    with pytest.raises(ValueError, match="k=61 exceeds the number of training features"):
        KNNMonitor(train_x, train_y, test_x, test_y, k=61)
    with pytest.raises(ValueError, match="test_labels has 5 entries"):
        KNNMonitor(train_x, train_y, test_x, test_y[:5])


# ----------------------------------------------------------------------------- linear probe
def gaussians(n, num_classes=5, dim=32, spread=0.3, seed=0, scale=1.0):
    g = torch.Generator().manual_seed(seed)
    centres = 3 * torch.randn(num_classes, dim, generator=torch.Generator().manual_seed(123))
    y = torch.randint(0, num_classes, (n,), generator=g)
    x = centres[y] + spread * torch.randn(n, dim, generator=g)
    return scale * x + 7.0, y


def test_linear_probe_separable_reaches_100_percent():
    xtr, ytr = gaussians(200, seed=0, scale=50.0)  # badly scaled raw features: standardisation copes
    xte, yte = gaussians(200, seed=1, scale=50.0)
    out = linear_probe(xtr, ytr, xte, yte, epochs=8, batch_size=50)
    assert out["top1"] == 1.0 and out["train_top1"] == 1.0
    assert len(out["history"]) == 8 and out["history"][-1] < out["history"][0] < math.log(5) + 1e-6
    with torch.no_grad():  # the returned classifier works on raw features
        assert float((out["classifier"](xte).argmax(1) == yte).float().mean()) == out["top1"]


def test_linear_probe_random_labels_is_chance():
    g = torch.Generator().manual_seed(0)
    xtr, xte = torch.randn(300, 32, generator=g), torch.randn(1000, 32, generator=g)
    ytr, yte = torch.randint(0, 5, (300,), generator=g), torch.randint(0, 5, (1000,), generator=g)
    out = linear_probe(xtr, ytr, xte, yte, epochs=20, batch_size=100)
    assert abs(out["top1"] - 0.2) < 0.06  # 4.7 standard errors of a 1000-sample chance accuracy
    assert out["train_top1"] > 0.35  # but it does fit (memorise) the training set


def test_linear_probe_deterministic_with_seed():
    xtr, ytr = gaussians(200, spread=3.0, seed=0)
    xte, yte = gaussians(100, spread=3.0, seed=1)
    a = linear_probe(xtr, ytr, xte, yte, epochs=3, seed=3, batch_size=32)
    b = linear_probe(xtr, ytr, xte, yte, epochs=3, seed=3, batch_size=32)
    c = linear_probe(xtr, ytr, xte, yte, epochs=3, seed=4, batch_size=32)
    assert a["history"] == b["history"] and a["top1"] == b["top1"]
    assert torch.equal(a["classifier"].weight, b["classifier"].weight)
    assert a["history"] != c["history"]  # the seed drives the minibatch order


def test_linear_probe_reaches_lbfgs_optimum_of_regularised_objective():
    # With weight_decay > 0 the objective CE + wd/2 ||W||^2 is strongly convex: compare to full-batch L-BFGS.
    xtr, ytr = gaussians(300, spread=4.0, seed=0, dim=8)
    xtr = (xtr - xtr.mean(0)) / xtr.std(0, unbiased=False)
    wd = 1e-2
    out = linear_probe(
        xtr, ytr, xtr, ytr, epochs=150, lr=0.05, weight_decay=wd, batch_size=300, standardize=False
    )

    def objective(w, b):
        return F.cross_entropy(xtr.double() @ w.T + b, ytr) + 0.5 * wd * (w**2).sum()

    w = torch.zeros(5, 8, dtype=torch.float64, requires_grad=True)
    b = torch.zeros(5, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS(
        [w, b], max_iter=100, tolerance_grad=1e-12, tolerance_change=1e-14, line_search_fn="strong_wolfe"
    )

    def closure():
        opt.zero_grad()
        loss = objective(w, b)
        loss.backward()
        return loss

    opt.step(closure)
    best = objective(w, b).item()
    got = objective(
        out["classifier"].weight.detach().double(), out["classifier"].bias.detach().double()
    ).item()
    assert best <= got < best + 1e-3


def test_linear_probe_errors():
    x, y = torch.randn(10, 4), torch.arange(10) % 2
    with pytest.raises(ValueError, match="train_features have D=4 but test_features have D=3"):
        linear_probe(x, y, torch.randn(5, 3), y[:5])
    with pytest.raises(ValueError, match="test_labels has 4 entries but there are 5"):
        linear_probe(x, y, x[:5], y[:4])
    with pytest.raises(ValueError, match="lr must be a finite number > 0"):
        linear_probe(x, y, x, y, lr=-1.0)
    with pytest.raises(ValueError, match="epochs must be a positive integer"):
        linear_probe(x, y, x, y, epochs=0)
    with pytest.raises(ValueError, match="weight_decay must be a finite number >= 0"):
        linear_probe(x, y, x, y, weight_decay=-1.0)


# ----------------------------------------------------------------------------- label subsets
def test_label_subset_counts_per_class():
    labels = torch.cat(
        [torch.full((100,), 0), torch.full((50,), 1), torch.full((7,), 2), torch.full((1,), 3)]
    )
    labels = labels[torch.randperm(len(labels), generator=torch.Generator().manual_seed(0))]
    idx = label_subset(labels, 0.1, seed=0)
    counts = torch.bincount(labels[idx], minlength=4).tolist()
    assert counts == [10, 5, 1, 1]  # round-half-up(0.7) = 1 ; 0.1 -> at least 1
    assert counts == [max(1, math.floor(0.1 * n + 0.5)) for n in (100, 50, 7, 1)]
    assert torch.equal(idx, idx.sort().values) and len(idx.unique()) == len(idx)
    assert label_subset(labels, 1.0).tolist() == list(range(len(labels)))


def test_label_subset_determinism_nesting_and_seeds():
    labels = torch.arange(1000) % 10
    a, b = label_subset(labels, 0.1, seed=1), label_subset(labels, 0.1, seed=1)
    assert torch.equal(a, b)
    assert not torch.equal(a, label_subset(labels, 0.1, seed=2))
    small = set(label_subset(labels, 0.01, seed=1).tolist())
    assert len(small) == 10 and small <= set(a.tolist())  # 1% subset is inside the 10% subset
    rest = set(range(1000)) - set(a.tolist())
    assert len(rest) == 900 and rest.isdisjoint(a.tolist())
    flat = label_subset(labels, 0.05, seed=0, per_class=False)
    assert len(flat) == 50 and len(flat.unique()) == 50 and int(flat.max()) < 1000


def test_label_subset_errors():
    with pytest.raises(ValueError, match=r"fraction must be in \(0, 1\]"):
        label_subset(torch.arange(5), 0.0)
    with pytest.raises(ValueError, match=r"fraction must be in \(0, 1\]"):
        label_subset(torch.arange(5), 1.5)
    with pytest.raises(ValueError, match="labels is empty"):
        label_subset(torch.zeros(0, dtype=torch.long), 0.1)
    with pytest.raises(ValueError, match="1-D integer tensor"):
        label_subset(torch.rand(5), 0.5)


# ----------------------------------------------------------------------------- alignment / uniformity
def test_feature_alignment_uniformity_matches_direct_formulas():
    g = torch.Generator().manual_seed(0)
    z1 = torch.randn(20, 6, generator=g)
    z2 = z1 + 0.3 * torch.randn(20, 6, generator=g)
    out = feature_alignment_uniformity(3 * z1, z2)  # the scale of z1 must not matter (sphere)
    a, b = F.normalize(z1.double(), dim=1), F.normalize(z2.double(), dim=1)
    align = ((a - b).norm(dim=1) ** 2).mean()

    def unif(z):
        d2 = [float((z[i] - z[j]).pow(2).sum()) for i in range(len(z)) for j in range(len(z)) if i < j]
        return math.log(np.mean(np.exp(-2.0 * np.array(d2))))

    assert out["alignment"] == pytest.approx(float(align), rel=1e-5)
    assert out["uniformity"] == pytest.approx((unif(a) + unif(b)) / 2, rel=1e-5)
    with pytest.raises(ValueError, match="same shape"):
        feature_alignment_uniformity(z1, z2[:5])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_paths():
    torch.manual_seed(0)
    enc = TinyEncoder().cuda()
    x, y = colour_images(10, noise=120)
    feats = extract_features(enc, x, batch_size=7)  # device inferred from the encoder, autocast on
    assert feats.device.type == "cpu" and feats.dtype == torch.float32
    assert KNNMonitor(x, y, x, y, k=5)(enc)["h"] > 0.5


# ----------------------------------------------------------------------------------------
# project_features: z = g(h) for the kNN on the head's output
# ----------------------------------------------------------------------------------------


def test_project_features_is_the_head_in_eval_mode_and_restores_train_mode():
    torch.manual_seed(0)
    head = nn.Sequential(nn.Linear(6, 5), nn.BatchNorm1d(5), nn.ReLU(), nn.Linear(5, 3))
    head.train()
    with torch.no_grad():
        head(torch.randn(32, 6) * 3 + 1)  # running statistics that differ from the batch's own
    h = torch.randn(10, 6, dtype=torch.float64)
    z = project_features(head, h, batch_size=3)  # chunks of 3, 3, 3, 1
    assert z.dtype == torch.float32 and z.shape == (10, 3)
    assert all(m.training for m in head.modules())
    w1, b1 = head[0].weight.detach(), head[0].bias.detach()
    bn = head[1]
    x = (h.float() @ w1.T + b1 - bn.running_mean) / torch.sqrt(bn.running_var + bn.eps) * bn.weight.detach() \
        + bn.bias.detach()
    expected = x.clamp_min(0) @ head[3].weight.detach().T + head[3].bias.detach()
    torch.testing.assert_close(z, expected, rtol=1e-5, atol=1e-5)


def test_project_features_rejects_bad_input():
    with pytest.raises(TypeError, match="head must be an nn.Module"):
        project_features(lambda h: h, torch.randn(2, 3))
    with pytest.raises(ValueError, match="non-empty float"):
        project_features(nn.Identity(), torch.zeros(4, dtype=torch.long))
    with pytest.raises(ValueError, match="NaN or inf"):
        project_features(nn.Identity(), torch.tensor([[float("nan"), 1.0]]))
