"""Tests for contrastive_lab.views: recipes, parameter statistics, agreement with torchvision.

Independent references: torchvision's RandomResizedCrop sampler and its functional ops
(resized_crop, adjust_*, rgb_to_grayscale, gaussian_blur), binomial/KS statistics, and values
from the papers.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision import transforms as v1
from torchvision.transforms.v2 import functional as TF

from contrastive_lab import views as A
from contrastive_lab.views import ks_critical, ks_statistic

N_STATS = 20_000
PLAIN = dict(mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))  # no normalisation: compare raw pixels


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny tensors: intra-op threads only add overhead (and contention on a shared 2-core box)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def rand_images(b: int, h: int, w: int, seed: int = 0, dtype=torch.float64) -> torch.Tensor:
    return torch.rand(b, 3, h, w, generator=gen(seed), dtype=dtype)


def neutral_params(b: int, h: int, w: int, **overrides) -> A.ViewParams:
    """Identity parameters (full crop, nothing applied), with some fields overridden."""
    long = dict(dtype=torch.long)
    fields = dict(
        top=torch.zeros(b, **long), left=torch.zeros(b, **long),
        height=torch.full((b,), h, **long), width=torch.full((b,), w, **long),
        flip=torch.zeros(b, dtype=torch.bool), jitter=torch.zeros(b, dtype=torch.bool),
        brightness=torch.ones(b, dtype=torch.float64), contrast=torch.ones(b, dtype=torch.float64),
        saturation=torch.ones(b, dtype=torch.float64), hue=torch.zeros(b, dtype=torch.float64),
        order=torch.arange(4).repeat(b, 1), gray=torch.zeros(b, dtype=torch.bool),
        blur=torch.zeros(b, dtype=torch.bool), sigma=torch.ones(b, dtype=torch.float64),
    )
    fields.update(overrides)
    return A.ViewParams(**fields)


def binomial_ok(count: int, n: int, p: float, z: float = 5.0) -> bool:
    return abs(count - n * p) <= z * math.sqrt(n * p * (1 - p)) + 1e-9


def ks_by_loop(a: np.ndarray, b: np.ndarray) -> float:
    """D = max over every pooled value x of |F_a(x) - F_b(x)|, the empirical CDFs counted one by one."""
    gap = 0.0
    for x in [*a, *b]:
        fa = sum(1 for v in a if v <= x) / len(a)
        fb = sum(1 for v in b if v <= x) / len(b)
        gap = max(gap, abs(fa - fb))
    return gap


def ks_cases() -> list[tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(0)
    return [(rng.normal(size=60), rng.normal(0.3, 1.0, size=45)),
            (rng.integers(0, 5, size=50).astype(float), rng.integers(0, 6, size=70).astype(float)),  # ties
            (np.array([1.0, 2.0, 3.0]), np.array([4.0, 5.0])),  # disjoint: D = 1
            (np.array([0.5, 0.5]), np.array([0.5]))]  # identical: D = 0


def test_ks_statistic_is_the_largest_cdf_gap():
    """The library's KS statistic against a slow loop over the pooled values (numpy and torch input)."""
    cases = ks_cases()
    for a, b in cases:
        assert ks_statistic(a, b) == pytest.approx(ks_by_loop(a, b), abs=1e-12)
        assert ks_statistic(torch.from_numpy(a), torch.from_numpy(b)) == pytest.approx(ks_by_loop(a, b), abs=1e-12)
    assert ks_statistic(*cases[2]) == 1.0 and ks_statistic(*cases[3]) == 0.0
    with pytest.raises(ValueError, match="non-empty"):
        ks_statistic(np.array([]), np.array([1.0]))


def test_ks_statistic_matches_scipy():
    stats = pytest.importorskip("scipy.stats")
    for a, b in ks_cases():
        assert ks_statistic(a, b) == pytest.approx(stats.ks_2samp(a, b).statistic, abs=1e-12)


def test_ks_critical_is_smirnovs_asymptotic_value():
    assert ks_critical(100, 100, alpha=0.05) == pytest.approx(1.3581 * math.sqrt(2 / 100), rel=1e-4)
    assert ks_critical(50, 50, alpha=0.001) == pytest.approx(1.9495 * math.sqrt(2 / 50), rel=1e-4)  # table: 1.95
    with pytest.raises(ValueError, match="alpha must lie in"):
        ks_critical(10, 10, alpha=0.0)


# ---------------------------------------------------------------------------------------------
# Recipes
# ---------------------------------------------------------------------------------------------


def test_simclr_jitter_is_the_papers_strength_formula():
    assert A.simclr_jitter(1.0) == pytest.approx((0.8, 0.8, 0.8, 0.2))  # App. A, s = 1 (ImageNet)
    assert A.simclr_jitter(0.5) == pytest.approx((0.4, 0.4, 0.4, 0.1))  # App. B.9, s = 0.5 (CIFAR)
    assert A.simclr_jitter(0.0) == (0.0, 0.0, 0.0, 0.0)
    with pytest.raises(ValueError, match="hue <= 0.5"):
        A.simclr_cifar(jitter=A.simclr_jitter(3.0))  # hue 0.6: the recipe refuses it


def test_recipes_have_the_papers_parameters():
    s = A.simclr_imagenet()  # SimCLR App. A
    assert (s.size, s.crop_scale, s.flip_p) == (224, (0.08, 1.0), 0.5)
    assert s.crop_ratio == pytest.approx((3 / 4, 4 / 3))
    assert s.jitter == pytest.approx((0.8, 0.8, 0.8, 0.2)) and (s.jitter_p, s.gray_p) == (0.8, 0.2)
    assert (s.blur_p, s.blur_sigma, s.blur_kernel_frac) == (0.5, (0.1, 2.0), 0.1)
    assert s.mean == A.IMAGENET_MEAN and s.std == A.IMAGENET_STD
    c = A.simclr_cifar()  # App. B.9: s = 0.5, no blur
    assert (c.size, c.blur_p, c.crop_scale) == (32, 0.0, (0.08, 1.0))
    assert c.jitter == pytest.approx((0.4, 0.4, 0.4, 0.1)) and c.mean == A.CIFAR10_MEAN
    m1 = A.moco_v1()  # official repo main_moco.py
    assert (m1.crop_scale, m1.jitter, m1.jitter_p, m1.gray_p, m1.blur_p) == ((0.2, 1.0), (0.4,) * 4, 1.0, 0.2, 0.0)
    assert m1.gray_before_jitter and not m1.gray_before_jitter == s.gray_before_jitter
    m2 = A.moco_v2()  # aug_plus
    assert (m2.crop_scale, m2.jitter, m2.jitter_p, m2.gray_p) == ((0.2, 1.0), (0.4, 0.4, 0.4, 0.1), 0.8, 0.2)
    assert (m2.blur_p, m2.blur_sigma, m2.flip_p) == (0.5, (0.1, 2.0), 0.5)


def test_cifar_statistics_match_cifar10_mini():
    """CIFAR10_MEAN/STD (full train set) should be close to the cifar10-mini pixel statistics."""
    import pickle
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "shared/data/cifar10-mini/cifar-10-batches-py/test_batch"
    if not path.exists():
        pytest.skip("cifar10-mini not available")
    with open(path, "rb") as f:
        d = pickle.load(f, encoding="bytes")
    data = d.get("data", d.get(b"data"))
    x = np.asarray(data, dtype=np.float64).reshape(-1, 3, 32 * 32) / 255.0
    np.testing.assert_allclose(x.mean(axis=(0, 2)), A.CIFAR10_MEAN, atol=0.01)
    np.testing.assert_allclose(x.std(axis=(0, 2)), A.CIFAR10_STD, atol=0.01)


@pytest.mark.parametrize("size, expected", [(224, 23), (96, 9), (32, 3), (64, 7), (100, 11)])
def test_blur_kernel_follows_simclr_code(size, expected):
    # SimCLR data_util.py: k = size // 10, radius = k // 2, kernel = 2 * radius + 1
    assert A.simclr_imagenet(size=size).blur_kernel_size == expected == 2 * ((size // 10) // 2) + 1


def test_get_recipe_overrides_and_registry():
    assert set(A.RECIPES) == {"simclr_imagenet", "simclr_cifar", "moco_v1", "moco_v2", "byol"}
    for name in A.RECIPES:
        assert A.get_recipe(name).name == name
        r = A.get_recipe(name, size=96)
        assert r.size == 96 and r == A.RECIPES[name](size=96)
    assert A.get_recipe("simclr_cifar", size=32, gray_p=0.0).gray_p == 0.0
    with pytest.raises(ValueError, match=r"unknown recipe 'simclr'; valid recipes: \['byol', 'moco_v1', 'moco_v2'"):
        A.get_recipe("simclr")
    with pytest.raises(ValueError, match=r"unknown ViewRecipe field\(s\) \['sise'\]; valid fields"):
        A.get_recipe("moco_v2", sise=32)


def test_recipe_is_frozen_and_converts_lists():
    r = A.ViewRecipe(crop_scale=[0.5, 1], mean=[0.5, 0.5, 0.5])
    assert r.crop_scale == (0.5, 1.0) and r.mean == (0.5, 0.5, 0.5)
    with pytest.raises(AttributeError):
        r.size = 3  # type: ignore[misc]


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(size=0), "size must be a positive int"),
        (dict(size=32.0), "size must be a positive int"),
        (dict(flip_p=1.5), r"flip_p is a probability and must lie in \[0, 1\]"),
        (dict(gray_p=-0.1), r"gray_p is a probability"),
        (dict(jitter_p=2), r"jitter_p is a probability"),
        (dict(blur_p=True), r"blur_p is a probability"),
        (dict(crop_scale=(0.9, 0.1)), "crop_scale must satisfy 0 < min <= max <= 1"),
        (dict(crop_scale=(0.0, 1.0)), "crop_scale must satisfy"),
        (dict(crop_scale=(0.5, 1.5)), "crop_scale must satisfy"),
        (dict(crop_ratio=(4 / 3, 3 / 4)), "crop_ratio must satisfy 0 < min <= max"),
        (dict(crop_scale=(0.5,)), "crop_scale must be a sequence of 2 numbers"),
        (dict(crop_scale=("a", 1)), "crop_scale must contain numbers only"),
        (dict(jitter=(0.4, 0.4, 0.4)), "jitter must be a sequence of 4 numbers"),
        (dict(jitter=(0.4, -0.1, 0.4, 0.1)), "jitter strengths must be >= 0 and hue <= 0.5"),
        (dict(jitter=(0.4, 0.4, 0.4, 0.6)), "jitter strengths must be >= 0 and hue <= 0.5"),
        (dict(blur_sigma=(2.0, 0.1)), "blur_sigma must satisfy 0 < min <= max"),
        (dict(blur_sigma=(0.0, 1.0)), "blur_sigma must satisfy"),
        (dict(blur_kernel_frac=0.0), r"blur_kernel_frac must lie in \(0, 1\]"),
        (dict(size=16, blur_p=0.5), "blur kernel would be 1 px .* set blur_p=0"),
        (dict(std=(0.2, 0.0, 0.2)), "std must be positive"),
        (dict(mean=(0.5, 0.5)), "mean must be a sequence of 3 numbers"),
        (dict(name=""), "name must be a non-empty string"),
        (dict(gray_before_jitter=1), "gray_before_jitter must be a bool"),
    ],
)
def test_recipe_validation(kwargs, message):
    with pytest.raises(ValueError, match=message):
        A.ViewRecipe(**kwargs)


def test_small_size_without_blur_is_fine_and_numpy_ints_are_accepted():
    assert A.simclr_cifar(size=8).blur_kernel_size == 1  # blur_p = 0, so no error
    r = A.simclr_cifar(size=np.int64(40))
    assert r.size == 40 and type(r.size) is int


def test_blur_matrix_rows_sum_to_one_and_oversized_kernels_fail():
    g = A.blur_matrices(torch.tensor([0.5, 2.0]), 6, 5, torch.float64)
    torch.testing.assert_close(g.sum(-1), torch.ones(2, 6, dtype=torch.float64))
    # row 0 by hand: taps at positions -2..2 reflect to 2, 1, 0, 1, 2
    k = A.gaussian_kernels(torch.tensor([0.5]), 5, torch.float64)[0]
    torch.testing.assert_close(g[0, 0, :3], torch.stack([k[2], k[1] + k[3], k[0] + k[4]]))
    with pytest.raises(ValueError, match="blur kernel 9 is too large for a 4 px image"):
        A.blur_matrices(torch.tensor([1.0]), 4, 9, torch.float32)


# ---------------------------------------------------------------------------------------------
# Parameter statistics
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(A.RECIPES))
def test_parameter_statistics_match_recipe(name):
    r = A.get_recipe(name)
    H, W = 375, 500
    p = A.BatchedViews(r).sample_params(N_STATS, H, W, gen(0))
    n = N_STATS
    coins = [(p.flip, r.flip_p), (p.jitter, r.jitter_p), (p.gray, r.gray_p), (p.blur, r.blur_p)]
    for mask, prob in coins:
        assert binomial_ok(int(mask.sum()), n, prob)
    for i, (m1, p1) in enumerate(coins):  # the coins are independent: P(both) = p1 p2
        for m2, p2 in coins[i + 1:]:
            assert binomial_ok(int((m1 & m2).sum()), n, p1 * p2)
    b, c, s, h = r.jitter
    for f, st in [(p.brightness, b), (p.contrast, c), (p.saturation, s)]:
        assert f.min() >= max(0, 1 - st) and f.max() <= 1 + st
        assert abs(f.mean().item() - (max(0, 1 - st) + 1 + st) / 2) < 5 * (2 * st) / math.sqrt(12 * n)
    assert p.hue.abs().max() <= h and abs(p.hue.mean().item()) < 5 * (2 * h) / math.sqrt(12 * n)
    lo, hi = r.blur_sigma
    assert p.sigma.min() >= lo and p.sigma.max() <= hi
    assert abs(p.sigma.mean().item() - (lo + hi) / 2) < 5 * (hi - lo) / math.sqrt(12 * n)
    # op order: a permutation of 0..3, each of the 24 orders equally likely
    assert torch.equal(p.order.sort(dim=1).values, torch.arange(4).expand(n, 4))
    codes = (p.order * torch.tensor([64, 16, 4, 1])).sum(1)
    counts = torch.bincount(codes, minlength=256)[torch.unique(codes)]
    assert len(counts) == 24 and all(binomial_ok(int(k), n, 1 / 24) for k in counts)


def test_crop_boxes_stay_in_range():
    r = A.simclr_imagenet()
    H, W = 375, 500
    p = A.BatchedViews(r).sample_params(N_STATS, H, W, gen(1))
    h, w = p.height.double(), p.width.double()
    assert (p.top >= 0).all() and (p.left >= 0).all()
    assert (p.top + p.height <= H).all() and (p.left + p.width <= W).all()
    # rounding w, h to integers moves the area by at most (w + h) / 2 + 1/4 pixels
    slack = (w + h) / 2 + 0.25
    area = h * w
    assert (area >= r.crop_scale[0] * H * W - slack).all() and (area <= r.crop_scale[1] * H * W + slack).all()
    log_ratio = torch.log(w / h)
    rounding = 0.5 / (w - 0.5) + 0.5 / (h - 0.5)
    assert (log_ratio >= math.log(r.crop_ratio[0]) - rounding).all()
    assert (log_ratio <= math.log(r.crop_ratio[1]) + rounding).all()
    # corners are uniform: mean of top / (H - h) is 1/2
    u = (p.top.double() / (H - h).clamp(min=1))[h < H]
    assert abs(u.mean().item() - 0.5) < 5 * math.sqrt(1 / 12 / len(u)) + 0.01


def test_crop_area_is_uniform_without_rejections():
    """Square image, ratio (1, 1): no attempt is rejected, so A_crop/A_img ~ U(scale)."""
    lo, hi = 0.2, 1.0
    top, left, h, w = A.sample_crop_boxes(N_STATS, 1000, 1000, (lo, hi), (1.0, 1.0), gen(2))
    frac = (h * w).double().numpy() / 1e6
    uniform = lo + (hi - lo) * (np.arange(N_STATS) + 0.5) / N_STATS
    assert ks_statistic(frac, uniform) < ks_critical(N_STATS, N_STATS)
    assert (h == w).all()


@pytest.mark.parametrize("shape, scale, ratio", [
    ((375, 500), (0.08, 1.0), (3 / 4, 4 / 3)),  # typical ImageNet photo
    ((32, 32), (0.08, 1.0), (3 / 4, 4 / 3)),    # CIFAR: strong rounding
    ((60, 400), (0.5, 1.0), (3 / 4, 4 / 3)),    # very wide: many rejections and fallbacks
])
def test_crop_distribution_matches_torchvision_sampler(shape, scale, ratio):
    H, W = shape
    torch.manual_seed(3)
    dummy = torch.empty(3, H, W)
    ref = np.array([v1.RandomResizedCrop.get_params(dummy, list(scale), list(ratio)) for _ in range(3000)])
    top, left, h, w = (t.numpy() for t in A.sample_crop_boxes(N_STATS, H, W, scale, ratio, gen(4)))
    crit = ks_critical(N_STATS, len(ref))
    assert ks_statistic(h * w, ref[:, 2] * ref[:, 3]) < crit
    assert ks_statistic(w / h, ref[:, 3] / ref[:, 2]) < crit
    assert ks_statistic(top, ref[:, 0]) < crit and ks_statistic(left, ref[:, 1]) < crit


def test_fallback_is_the_central_crop():
    # scale (1, 1) on a wide image can never fit the target, so every box is torchvision's fallback
    top, left, h, w = A.sample_crop_boxes(5, 50, 200, (1.0, 1.0), (3 / 4, 4 / 3), gen(0))
    expected = v1.RandomResizedCrop.get_params(torch.empty(3, 50, 200), [1.0, 1.0], [3 / 4, 4 / 3])
    for box in zip(top.tolist(), left.tolist(), h.tolist(), w.tolist()):
        # by hand: h = 50, w = round(50 * 4/3) = 67, top = 0, left = (200 - 67) // 2 = 66
        assert box == tuple(expected) == (0, 66, 50, 67)


# ---------------------------------------------------------------------------------------------
# Per-sample randomness, seeds, identity
# ---------------------------------------------------------------------------------------------


def test_every_sample_gets_its_own_view():
    views = A.BatchedViews("simclr_cifar")
    one = (rand_images(1, 32, 32, seed=5) * 255).to(torch.uint8)
    batch = one.expand(8, -1, -1, -1).contiguous()
    p = views.sample_params(8, 32, 32, gen(6))
    boxes = set(zip(p.top.tolist(), p.left.tolist(), p.height.tolist(), p.width.tolist()))
    assert len(boxes) >= 7 and len(set(p.brightness.tolist())) == 8
    out = views.apply(batch, p)
    diffs = (out[:, None] - out[None]).abs().flatten(2).amax(-1)
    assert (diffs + torch.eye(8) * 1e9 > 1e-3).all(), "two copies of one image got the same view"


def test_torchvision_on_a_batch_draws_one_set_of_parameters():
    """The pitfall BatchedViews avoids: a v2 transform on a B x C x H x W tensor crops and
    jitters every sample the same way, so copies of one image get identical views."""
    torch.manual_seed(0)
    batch = rand_images(1, 32, 32, dtype=torch.float32).expand(4, -1, -1, -1)
    out = A.build_torchvision_pipeline("simclr_cifar")(batch)
    assert torch.equal(out[0], out[1]) and torch.equal(out[0], out[3])


def test_same_seed_same_views_and_different_seeds_differ():
    views = A.BatchedViews(A.simclr_imagenet(size=48))
    x = (rand_images(6, 56, 64, seed=1) * 255).to(torch.uint8)
    a, b, c = views(x, gen(7)), views(x, gen(7)), views(x, gen(8))
    assert torch.equal(a, b)
    assert (a - c).abs().flatten(1).amax(1).min() > 1e-3
    torch.manual_seed(9)
    d = views(x)
    torch.manual_seed(9)
    assert torch.equal(d, views(x))


def identity_recipe(size: int) -> A.ViewRecipe:
    return A.ViewRecipe(size=size, crop_scale=(1.0, 1.0), crop_ratio=(1.0, 1.0), flip_p=0.0, jitter_p=0.0,
                        gray_p=0.0, blur_p=0.0, mean=A.CIFAR10_MEAN, std=A.CIFAR10_STD)


def test_no_augmentation_is_identity_up_to_resize_and_normalisation():
    x = rand_images(4, 40, 40, seed=2)
    mean = torch.tensor(A.CIFAR10_MEAN, dtype=torch.float64).view(1, 3, 1, 1)
    std = torch.tensor(A.CIFAR10_STD, dtype=torch.float64).view(1, 3, 1, 1)
    same = A.BatchedViews(identity_recipe(40))(x, gen(0))
    torch.testing.assert_close(same * std + mean, x, atol=1e-12, rtol=0)
    for size in (24, 57):  # down- and upsampling
        out = A.BatchedViews(identity_recipe(size))(x, gen(0))
        expected = (TF.resize(x, [size, size], antialias=True) - mean) / std
        torch.testing.assert_close(out, expected, atol=1e-6, rtol=0)
    pipe = A.build_torchvision_pipeline(identity_recipe(40))
    torch.testing.assert_close(pipe(x[0].float()), ((x[0] - mean[0]) / std[0]).float(), atol=1e-6, rtol=0)


# ---------------------------------------------------------------------------------------------
# Agreement with torchvision's functional ops (fixed parameters, float64 images)
# ---------------------------------------------------------------------------------------------


def per_sample(x: torch.Tensor, fn) -> torch.Tensor:
    return torch.stack([fn(x[i], i) for i in range(len(x))])


@pytest.mark.parametrize("in_hw, size", [((32, 32), 32), ((48, 64), 24), ((20, 30), 45)])
def test_crop_and_flip_agree_with_resized_crop(in_hw, size):
    H, W = in_hw
    b = 12
    x = rand_images(b, H, W, seed=3)
    boxes = A.sample_crop_boxes(b, H, W, (0.08, 1.0), (3 / 4, 4 / 3), gen(10))
    flip = torch.arange(b) % 2 == 1
    p = neutral_params(b, H, W, top=boxes[0], left=boxes[1], height=boxes[2], width=boxes[3], flip=flip)
    out = A.BatchedViews(A.ViewRecipe(size=size, blur_p=0.0, **PLAIN)).apply(x, p)

    def ref(img, i):
        y = TF.resized_crop(img, *(int(t[i]) for t in boxes), [size, size], antialias=True)
        return TF.horizontal_flip(y) if flip[i] else y

    torch.testing.assert_close(out, per_sample(x, ref), atol=1e-5, rtol=0)


COLOUR_CASES = [
    ("brightness", TF.adjust_brightness, (0.0, 2.0), 1e-12),
    ("contrast", TF.adjust_contrast, (0.0, 2.0), 1e-12),
    ("saturation", TF.adjust_saturation, (0.0, 2.0), 1e-12),
    ("hue", TF.adjust_hue, (-0.5, 0.5), 2e-6),  # torchvision computes hue in float32
]


@pytest.mark.parametrize("field, fn, span, tol", COLOUR_CASES)
def test_each_colour_op_agrees_with_torchvision(field, fn, span, tol):
    b, op = 16, ["brightness", "contrast", "saturation", "hue"].index(field)
    x = rand_images(b, 12, 12, seed=4)
    x[0] = 0.5  # gray image: contrast / saturation / hue edge cases
    x[1, :, :6] = x[1, 0:1, :6]  # gray pixels inside a colour image
    x[2, 1] = x[2, 0]  # ties between R and G
    factor = torch.linspace(*span, b, dtype=torch.float64)[torch.randperm(b, generator=gen(0))]
    order = torch.tensor([op, *[k for k in range(4) if k != op]]).repeat(b, 1)
    p = neutral_params(b, 12, 12, jitter=torch.ones(b, dtype=torch.bool), order=order, **{field: factor})
    out = A.BatchedViews(A.ViewRecipe(size=12, blur_p=0.0, **PLAIN)).apply(x, p)
    expected = per_sample(x, lambda img, i: fn(img, float(factor[i])))
    torch.testing.assert_close(out, expected, atol=tol, rtol=0)


def test_hue_rotation_of_known_colours():
    """By hand: a third of a turn maps red -> green -> blue -> red; gray pixels do not move;
    orange (1, 0.5, 0) at -1/12 turn becomes red; a full half turn gives the complement."""
    rgb = torch.tensor([[1.0, 0, 0], [0, 1, 0], [0, 0, 1], [0.5, 0.5, 0.5], [1, 0.5, 0], [0.2, 0.6, 1.0]])
    img = rgb.T.reshape(1, 3, 1, 6)
    third = A.adjust_hue(img, torch.tensor([1 / 3]))[0, :, 0].T
    torch.testing.assert_close(third[:4], torch.tensor([[0.0, 1, 0], [0, 0, 1], [1, 0, 0], [0.5, 0.5, 0.5]]))
    torch.testing.assert_close(A.adjust_hue(img, torch.tensor([-1 / 12]))[0, :, 0, 4], torch.tensor([1.0, 0, 0]))
    # complement of (0.2, 0.6, 1.0) keeps max and min: (1.0, 0.6, 0.2)
    torch.testing.assert_close(A.adjust_hue(img, torch.tensor([0.5]))[0, :, 0, 5], torch.tensor([1.0, 0.6, 0.2]))


def test_grayscale_agrees_with_torchvision():
    x = rand_images(6, 10, 10, seed=5)
    gray = torch.tensor([True, False, True, False, False, True])
    out = A.BatchedViews(A.ViewRecipe(size=10, blur_p=0.0, **PLAIN)).apply(x, neutral_params(6, 10, 10, gray=gray))
    expected = per_sample(x, lambda img, i: TF.rgb_to_grayscale(img, 3) if gray[i] else img)
    torch.testing.assert_close(out, expected, atol=1e-12, rtol=0)


@pytest.mark.parametrize("size, frac", [(32, 0.3), (48, 0.1), (9, 1.0)])
def test_blur_agrees_with_torchvision(size, frac):
    r = A.ViewRecipe(size=size, blur_kernel_frac=frac, blur_p=1.0, **PLAIN)
    b = 8
    x = rand_images(b, size, size, seed=6)
    blur = torch.arange(b) % 4 != 0
    sigma = torch.linspace(0.1, 2.0, b, dtype=torch.float64)
    out = A.BatchedViews(r).apply(x, neutral_params(b, size, size, blur=blur, sigma=sigma))
    k = r.blur_kernel_size

    def ref(img, i):
        return TF.gaussian_blur(img, [k, k], [float(sigma[i])] * 2) if blur[i] else img

    torch.testing.assert_close(out, per_sample(x, ref), atol=1e-12, rtol=0)


def everything_on(name: str, size: int) -> A.ViewRecipe:
    return A.get_recipe(name, size=size, flip_p=0.5, jitter_p=1.0, gray_p=0.5, blur_p=0.5, **PLAIN)


@pytest.mark.parametrize("name", ["simclr_imagenet", "moco_v1"])
def test_combined_pipeline_agrees_with_reference_loop(name):
    """All ops at once, random per-sample parameters and op orders; the reference loop calls
    torchvision's functional ops. moco_v1 also checks grayscale-before-jitter."""
    r = everything_on(name, 24)
    views = A.BatchedViews(r)
    x = rand_images(32, 30, 40, seed=7)
    p = views.sample_params(32, 30, 40, gen(12))
    assert len(set(map(tuple, p.order.tolist()))) > 10 and p.gray.any() and p.blur.any()
    torch.testing.assert_close(views.apply(x, p), views.apply_reference(x, p), atol=2e-5, rtol=0)


def test_uint8_and_float_inputs_give_the_same_views():
    x8 = (rand_images(3, 40, 40, seed=8) * 255).to(torch.uint8)
    views = A.BatchedViews(A.moco_v2(size=24))
    p = views.sample_params(3, 40, 40, gen(13))
    out = views.apply(x8, p)
    assert out.dtype == torch.float32 and out.shape == (3, 3, 24, 24)
    torch.testing.assert_close(out, views.apply(x8.double() / 255, p).float(), atol=1e-5, rtol=0)


# ---------------------------------------------------------------------------------------------
# (a) torchvision pipeline
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(A.RECIPES))
def test_torchvision_pipeline_structure_matches_recipe(name):
    r = A.get_recipe(name, size=40)
    t = A.build_torchvision_pipeline(r).transforms
    assert [type(m).__name__ for m in t] == [
        "ToImage", "ToDtype", "RandomResizedCrop", "RandomHorizontalFlip",
        *(["RandomGrayscale", "RandomApply"] if r.gray_before_jitter else ["RandomApply", "RandomGrayscale"]),
        "RandomApply", "Normalize", "ToPureTensor"]
    crop, flip = t[2], t[3]
    assert tuple(crop.size) == (40, 40) and tuple(crop.scale) == r.crop_scale and tuple(crop.ratio) == r.crop_ratio
    assert crop.antialias is True and flip.p == r.flip_p
    jitter_apply = t[5] if r.gray_before_jitter else t[4]
    gray = t[4] if r.gray_before_jitter else t[5]
    cj = jitter_apply.transforms[0]
    b, c, s, h = r.jitter
    assert jitter_apply.p == r.jitter_p and gray.p == r.gray_p
    assert cj.brightness == pytest.approx((1 - b, 1 + b)) and cj.contrast == pytest.approx((1 - c, 1 + c))
    assert cj.saturation == pytest.approx((1 - s, 1 + s)) and cj.hue == pytest.approx((-h, h))
    blur_apply = t[6]
    assert blur_apply.p == r.blur_p
    assert tuple(blur_apply.transforms[0].kernel_size) == (r.blur_kernel_size,) * 2
    assert tuple(blur_apply.transforms[0].sigma) == r.blur_sigma
    assert tuple(t[7].mean) == r.mean and tuple(t[7].std) == r.std


def test_torchvision_pipeline_output_shape_and_dtype():
    pipe = A.build_torchvision_pipeline(A.simclr_imagenet(size=32))
    x8 = (rand_images(1, 50, 60, seed=9)[0] * 255).to(torch.uint8)
    pil = Image.fromarray(x8.permute(1, 2, 0).numpy())
    for inp in (x8, pil):
        out = pipe(inp)
        assert type(out) is torch.Tensor and out.dtype == torch.float32 and out.shape == (3, 32, 32)
    with pytest.raises(TypeError, match="expected a ViewRecipe or a recipe name"):
        A.build_torchvision_pipeline(42)


def test_both_pipelines_sample_the_same_distribution():
    """KS test on per-view channel means: (a) per-image torchvision vs (b) BatchedViews."""
    r = A.moco_v2(size=32)
    x = rand_images(1, 24, 24, seed=10, dtype=torch.float32)
    x[:, 0] *= 0.5  # a coloured image, so hue and saturation matter
    n = 500
    torch.manual_seed(0)
    pipe = A.build_torchvision_pipeline(r)
    a = torch.stack([pipe(x[0]) for _ in range(n)]).mean(dim=(2, 3)).numpy()
    b = A.BatchedViews(r)(x.expand(n, -1, -1, -1), gen(14)).mean(dim=(2, 3)).numpy()
    for ch in range(3):
        assert ks_statistic(a[:, ch], b[:, ch]) < ks_critical(n, n, alpha=1e-3)
    # and the test has power: a recipe without colour jitter is detected
    c = A.BatchedViews(A.moco_v2(size=32, jitter_p=0.0))(x.expand(n, -1, -1, -1), gen(15)).mean(dim=(2, 3))
    assert ks_statistic(a[:, 0], c[:, 0].numpy()) > ks_critical(n, n, alpha=1e-3)


# ---------------------------------------------------------------------------------------------
# Input validation
# ---------------------------------------------------------------------------------------------


def test_batched_views_input_validation():
    views = A.BatchedViews(A.simclr_cifar())
    x = rand_images(2, 32, 32)
    with pytest.raises(TypeError, match="images must be a torch.Tensor"):
        views(x.numpy())
    with pytest.raises(ValueError, match=r"images must have shape B x 3 x H x W, got \(3, 32, 32\)"):
        views(x[0])
    with pytest.raises(ValueError, match="images must have shape B x 3 x H x W"):
        views(x[:, :1])
    with pytest.raises(TypeError, match="images must be uint8 or float"):
        views(x.long())
    with pytest.raises(ValueError, match=r"float images must lie in \[0, 1\]"):
        views(x * 255)
    with pytest.raises(ValueError, match="params are for 3 images but the batch has 2"):
        views.apply(x, neutral_params(3, 32, 32))
    with pytest.raises(ValueError, match=r"crop boxes of samples \[1\] leave the 32 x 32 image"):
        views.apply(x, neutral_params(2, 32, 32, top=torch.tensor([0, 1])))
    with pytest.raises(TypeError, match="params must be a ViewParams"):
        views.apply(x, {"top": 0})
    with pytest.raises(ValueError, match=r"ViewParams.order must have shape \(2, 4\)"):
        neutral_params(2, 32, 32, order=torch.zeros(2, 3, dtype=torch.long))
    with pytest.raises(ValueError, match="ViewParams.flip must be a tensor with 2 rows"):
        neutral_params(2, 32, 32, flip=torch.zeros(3, dtype=torch.bool))
    with pytest.raises(ValueError, match="batch must be a positive int"):
        views.sample_params(0, 32, 32)
    with pytest.raises(ValueError, match="unknown recipe 'nope'"):
        A.BatchedViews("nope")


# ---------------------------------------------------------------------------------------------
# CUDA
# ---------------------------------------------------------------------------------------------


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu():
    views = A.BatchedViews(A.simclr_imagenet(size=32))
    x = (rand_images(16, 48, 40, seed=11) * 255).to(torch.uint8)
    p = views.sample_params(16, 48, 40, gen(16))
    out_gpu = views.apply(x.cuda(), p.to("cuda"))
    assert out_gpu.device.type == "cuda" and out_gpu.dtype == torch.float32
    torch.testing.assert_close(out_gpu.cpu(), views.apply(x, p), atol=1e-4, rtol=0)
    # one call with a CPU generator gives the same views on either device
    torch.testing.assert_close(views(x.cuda(), gen(17)).cpu(), views(x, gen(17)), atol=1e-4, rtol=0)
    g = torch.Generator(device="cuda").manual_seed(0)
    assert views(x.cuda(), g).device.type == "cuda"
