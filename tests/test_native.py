"""The compiled view kernels (contrastive_lab.views.native: crop + resize + flip, colour jitter +
grayscale) against torchvision and against the PyTorch versions in views.ops (the readable
definitions), plus their build, cache and fallback."""

from __future__ import annotations

import stat

import pytest
import torch
from torchvision.transforms.v2 import functional as TF

from contrastive_lab import runtime
from contrastive_lab import views as A
from contrastive_lab.views import native

OPS = ["brightness", "contrast", "saturation", "hue"]
PLAIN = dict(mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))
needs_cc = pytest.mark.skipif(runtime.c_compiler() is None, reason="no C compiler on this machine")


@pytest.fixture(autouse=True)
def fresh_library(tmp_path_factory, monkeypatch):
    """Each test builds into (or reuses) a private cache and sees a fresh module state."""
    monkeypatch.setenv(runtime.CACHE_ENV, str(tmp_path_factory.getbasetemp() / "native-cache"))
    monkeypatch.delenv(runtime.NATIVE_ENV, raising=False)
    native._library.cache_clear()
    yield
    native._library.cache_clear()


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def edge_case_images(b: int, size: int, seed: int) -> torch.Tensor:
    x = torch.rand(b, 3, size, size, generator=gen(seed))
    x[0] = 0.5  # gray image: contrast / saturation / hue edge cases
    x[1, :, : size // 2] = x[1, 0:1, : size // 2]  # gray pixels inside a colour image
    x[2, 1] = x[2, 0]  # ties R = G
    x[3, 2] = x[3, 1]  # ties G = B
    x[4] = (x[4] > 0.5).float()  # saturated corners of the cube (0 and 1)
    return x


def run_native(x: torch.Tensor, p: A.ViewParams, gray_first: bool = False) -> torch.Tensor:
    factors = torch.stack((p.brightness, p.contrast, p.saturation, p.hue), dim=1)
    return native.colour_jitter_gray_(x.clone(), p.jitter, p.order, factors, p.gray, gray_first)


def run_pytorch(x: torch.Tensor, p: A.ViewParams, gray_first: bool = False) -> torch.Tensor:
    if gray_first:
        return A.color_jitter(A.grayscale_(x.clone(), p.gray), p)
    return A.grayscale_(A.color_jitter(x.clone(), p), p.gray)


def random_params(b: int, size: int, seed: int, **recipe) -> A.ViewParams:
    r = A.get_recipe("simclr_imagenet", size=size, jitter_p=0.8, gray_p=0.3, blur_p=0.0, **recipe)
    return A.BatchedViews(r).sample_params(b, size, size, gen(seed))


# ---------------------------------------------------------------------------------------------
# The kernel's maths
# ---------------------------------------------------------------------------------------------


@needs_cc
@pytest.mark.parametrize("op", OPS)
def test_each_op_agrees_with_torchvision(op):
    """One op first in the order (the others at their neutral factor), factors over the whole range,
    on float32 images with gray pixels, channel ties and saturated pixels."""
    b, size = 24, 11
    x = edge_case_images(b, size, seed=1)
    span = (-0.5, 0.5) if op == "hue" else (0.0, 2.0)
    factor = torch.linspace(*span, b, dtype=torch.float64)[torch.randperm(b, generator=gen(0))]
    k = OPS.index(op)
    order = torch.tensor([k, *[j for j in range(4) if j != k]]).repeat(b, 1)
    fields = dict(jitter=torch.ones(b, dtype=torch.bool), order=order)
    neutral = dict(brightness=torch.ones(b, dtype=torch.float64), contrast=torch.ones(b, dtype=torch.float64),
                   saturation=torch.ones(b, dtype=torch.float64), hue=torch.zeros(b, dtype=torch.float64))
    neutral[op] = factor
    p = random_params(b, size, 0)
    p = A.ViewParams(**{**{f: getattr(p, f) for f in p.__dataclass_fields__}, **fields, **neutral,
                        "gray": torch.zeros(b, dtype=torch.bool)})
    fn = getattr(TF, f"adjust_{op}")
    expected = torch.stack([fn(x[i], float(factor[i])) for i in range(b)])
    torch.testing.assert_close(run_native(x, p), expected, atol=3e-6, rtol=0)


@needs_cc
@pytest.mark.parametrize("gray_first", [False, True])
def test_random_orders_agree_with_the_pytorch_version(gray_first):
    """Every op on, random per-sample factors and op orders, grayscale before or after the jitter."""
    b, size = 96, 13
    x = edge_case_images(b, size, seed=2)
    p = random_params(b, size, seed=3)
    assert len(set(map(tuple, p.order.tolist()))) > 15 and p.gray.any() and (~p.jitter).any()
    torch.testing.assert_close(run_native(x, p, gray_first), run_pytorch(x, p, gray_first), atol=5e-6, rtol=0)


@needs_cc
def test_samples_without_jitter_or_gray_are_untouched_and_runs_repeat():
    b, size = 16, 9
    x = edge_case_images(b, size, seed=4)
    p = random_params(b, size, seed=5)
    skip = ~p.jitter & ~p.gray
    p.hue[0] = 0.0
    no_gray = torch.zeros(b, dtype=torch.bool)
    assert skip.any()
    out = run_native(x, p)
    assert torch.equal(out[skip], x[skip])  # bit-identical: nothing was applied
    assert torch.equal(out, run_native(x, p))  # deterministic
    # hue 0 with the other factors neutral leaves the image exactly as it was
    q = A.ViewParams(**{**{f: getattr(p, f) for f in p.__dataclass_fields__},
                        "brightness": torch.ones(b, dtype=torch.float64), "contrast": torch.ones(b, dtype=torch.float64),
                        "saturation": torch.ones(b, dtype=torch.float64), "hue": torch.zeros(b, dtype=torch.float64),
                        "jitter": torch.ones(b, dtype=torch.bool), "gray": no_gray})
    assert torch.equal(run_native(x, q), x)


@needs_cc
@pytest.mark.parametrize("name", ["simclr_cifar", "moco_v1", "moco_v2", "simclr_imagenet"])
def test_batched_views_with_and_without_the_kernel_agree(name):
    """End to end on uint8 images: crop, jitter, grayscale, blur, normalise."""
    x8 = (torch.rand(40, 3, 32, 32, generator=gen(6)) * 255).to(torch.uint8)
    r = A.get_recipe(name, size=24)
    fast, slow = A.BatchedViews(r, native=True), A.BatchedViews(r, native=False)
    assert A.BatchedViews(r)._use_native(torch.zeros(1, 3, 2, 2))  # auto mode picks the kernel here
    torch.testing.assert_close(fast(x8, gen(7)), slow(x8, gen(7)), atol=2e-5, rtol=0)
    p = fast.sample_params(40, 32, 32, gen(8))
    torch.testing.assert_close(fast.apply(x8, p), fast.apply_reference(x8, p), atol=3e-5, rtol=0)


CROP_CASES = [  # (input H, W, output size): up-sampling, down-sampling (antialiased), non-square
    (32, 32, 24), (32, 32, 32), (32, 32, 48), (96, 80, 24), (224, 200, 32), (17, 41, 9),
]


@needs_cc
@pytest.mark.parametrize("h, w, size", CROP_CASES)
@pytest.mark.parametrize("dtype", [torch.uint8, torch.float32])
def test_crop_agrees_with_torchvision_and_the_pytorch_version(h, w, size, dtype):
    """Random boxes from the recipe's sampler plus hand-picked ones (whole image, one pixel, a thin
    strip at the far corner), flipped or not."""
    b = 40
    p = A.BatchedViews(A.simclr_cifar(size=size)).sample_params(b, h, w, gen(h + w))
    p.top[:4] = torch.tensor([0, h - 1, 0, h - 3])
    p.left[:4] = torch.tensor([0, w - 1, w - 2, 0])
    p.height[:4] = torch.tensor([h, 1, h, 3])
    p.width[:4] = torch.tensor([w, 1, 2, w])
    p.flip[:4] = torch.tensor([False, True, True, False])
    x = torch.rand(b, 3, h, w, generator=gen(1))
    x = (x * 255).round().to(torch.uint8) if dtype == torch.uint8 else x
    xf = A.to_float_images(x)
    out = native.crop_resize_flip(x, p.top, p.left, p.height, p.width, p.flip, size)
    assert out.dtype == torch.float32 and out.shape == (b, 3, size, size)
    torch.testing.assert_close(out, A.crop_resize_flip(xf, p, size), atol=2e-6, rtol=0)
    for i in range(b):
        ref = TF.resized_crop(xf[i], int(p.top[i]), int(p.left[i]), int(p.height[i]), int(p.width[i]),
                              [size, size], antialias=True)
        ref = TF.horizontal_flip(ref) if p.flip[i] else ref
        torch.testing.assert_close(out[i], ref, atol=2e-5, rtol=0)


@needs_cc
def test_crop_rejects_bad_input():
    x = torch.zeros(2, 3, 8, 8, dtype=torch.uint8)
    one = torch.zeros(2, dtype=torch.int64)
    with pytest.raises(ValueError, match="contiguous uint8 or float32"):
        native.crop_resize_flip(x.double(), one, one, one + 8, one + 8, one.bool(), 4)
    with pytest.raises(ValueError, match="one entry per image"):
        native.crop_resize_flip(x, one[:1], one, one + 8, one + 8, one.bool(), 4)
    with pytest.raises(ValueError, match="size must be a positive int"):
        native.crop_resize_flip(x, one, one, one + 8, one + 8, one.bool(), 0)
    bad = torch.tensor([0, 1])  # sample 1: rows 1-8 of an 8-row image
    with pytest.raises(ValueError, match=r"crop box of sample 1 \(top 1, left 0, height 8, width 8\) leaves"):
        native.crop_resize_flip(x, bad, one, one + 8, one + 8, one.bool(), 4)
    with pytest.raises(ValueError, match="crop box of sample 0"):
        native.crop_resize_flip(x, one, one, one, one + 8, one.bool(), 4)  # height 0


# ---------------------------------------------------------------------------------------------
# Choosing, building and failing
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("value, expected", [("", "auto"), ("auto", "auto"), ("1", "on"), ("on", "on"),
                                             ("0", "off"), ("false", "off")])
def test_mode_switch(monkeypatch, value, expected):
    monkeypatch.setenv(runtime.NATIVE_ENV, value)
    assert runtime.native_mode() == expected


def test_mode_switch_rejects_unknown_values(monkeypatch):
    monkeypatch.setenv(runtime.NATIVE_ENV, "fast")
    with pytest.raises(ValueError, match="CONTRASTIVE_LAB_NATIVE='fast' is not understood"):
        runtime.native_mode()


def test_off_means_pytorch_and_native_true_then_fails_clearly(monkeypatch):
    monkeypatch.setenv(runtime.NATIVE_ENV, "0")
    x8 = torch.zeros(2, 3, 8, 8, dtype=torch.uint8)
    assert not native.available()
    assert not A.BatchedViews("simclr_cifar")._use_native(torch.zeros(1, 3, 2, 2))
    with pytest.raises(native.NativeBuildError, match="not available"):
        A.BatchedViews(A.simclr_cifar(size=8), native=True)(x8)


def fake_compiler(tmp_path, stderr: str) -> str:
    path = tmp_path / "fake-cc"
    path.write_text(f"#!/bin/sh\necho '{stderr}' >&2\nexit 1\n")
    path.chmod(path.stat().st_mode | stat.S_IEXEC)
    return str(path)


@pytest.mark.parametrize("cc, message", [("/nonexistent/cc", "could not run the C compiler"),
                                         ("FAKE", "failed to compile colour.c, crop.c")])
def test_without_a_compiler_auto_mode_warns_and_falls_back(tmp_path, monkeypatch, cc, message):
    monkeypatch.setenv("CC", fake_compiler(tmp_path, "error: no such thing") if cc == "FAKE" else cc)
    monkeypatch.setenv(runtime.CACHE_ENV, str(tmp_path / "cache"))
    x8 = (torch.rand(6, 3, 16, 16, generator=gen(9)) * 255).to(torch.uint8)
    with pytest.warns(UserWarning, match=f"PyTorch view pipeline.*{message}"):
        out = A.BatchedViews(A.simclr_cifar(size=12))(x8, gen(10))
    assert torch.equal(out, A.BatchedViews(A.simclr_cifar(size=12), native=False)(x8, gen(10)))
    assert not list((tmp_path / "cache").glob("*.so"))  # no half-written library is left behind


def test_without_a_compiler_required_mode_raises(tmp_path, monkeypatch):
    monkeypatch.setenv("CC", fake_compiler(tmp_path, "error: unknown flag"))
    monkeypatch.setenv(runtime.NATIVE_ENV, "1")
    with pytest.raises(native.NativeBuildError, match="(?s)CONTRASTIVE_LAB_NATIVE=1.*unknown flag"):
        A.BatchedViews(A.simclr_cifar(size=8))(torch.zeros(2, 3, 8, 8, dtype=torch.uint8))


@needs_cc
def test_the_library_is_built_once_and_then_reused(tmp_path, monkeypatch):
    monkeypatch.setenv(runtime.CACHE_ENV, str(tmp_path))
    first = native.build()
    assert first.parent == tmp_path and first.suffix == ".so"
    assert [p.name for p in tmp_path.iterdir()] == [first.name]  # no temporary files left

    def no_compiling(*args):
        raise AssertionError("the cached library should have been reused")

    monkeypatch.setattr(native, "_compile", no_compiling)
    assert native.build() == first


@needs_cc
def test_unsupported_inputs_take_pytorch_or_fail_clearly():
    x = torch.rand(4, 3, 10, 10, dtype=torch.float64)
    r = A.simclr_cifar(size=8)
    p = A.BatchedViews(r).sample_params(4, 10, 10, gen(11))
    assert not native.supports(x) and not native.supports(x.float().transpose(2, 3))
    torch.testing.assert_close(A.BatchedViews(r).apply(x, p), A.BatchedViews(r, native=False).apply(x, p))
    with pytest.raises(ValueError, match=r"native=True\) needs uint8 or float32 images on the CPU"):
        A.BatchedViews(r, native=True).apply(x, p)
    with pytest.raises(ValueError, match="native must be None"):
        A.BatchedViews(r, native="yes")
    ones, order = torch.ones(4, dtype=torch.bool), torch.arange(4).repeat(4, 1)
    with pytest.raises(ValueError, match="contiguous float32"):
        native.colour_jitter_gray_(x, ones, order, torch.ones(4, 4), ones, False)
    with pytest.raises(ValueError, match="order and factors shape"):
        native.colour_jitter_gray_(x.float(), ones, order[:3], torch.ones(4, 4), ones, False)
    with pytest.raises(ValueError, match="op ids 0-3"):
        native.colour_jitter_gray_(x.float(), ones, order + 1, torch.ones(4, 4), ones, False)
