"""Tests for contrastive_lab.cpc: the multi-offset InfoNCE against a per-position loop in float64,
causality of both context networks checked with autograd, patch extraction and per-patch
augmentation against loops, the synthetic sequences, learning in a few dozen steps, the
``cpc`` method and preset."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from contrastive_lab.cpc import (
    PatchAugment,
    PatchAugmentParams,
    PatchConvNet,
    PatchGridEncoder,
    RowCausalContext,
    RowCausalConv2d,
    SequenceCPC,
    SignalEncoder,
    extract_patches,
    extract_patches_reference,
    grid_size,
    make_oscillation_sequences,
    train_sequence_cpc,
)
from contrastive_lab.losses import cpc_loss, cpc_loss_reference
from contrastive_lab.methods import Batch, ImageCPC, make_image_cpc

F64 = torch.float64


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """These tensors are tiny: one thread is faster, and far faster on a shared, busy machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def randn(*shape: int, seed: int = 0, dtype: torch.dtype = F64) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def linear_maps(k: int, c: int, d: int, seed: int = 0) -> nn.ModuleList:
    torch.manual_seed(seed)
    return nn.ModuleList(nn.Linear(c, d, bias=False).double() for _ in range(k))


def small_image_cpc(norm: str = "layer", augment: bool = True, seed: int = 0) -> ImageCPC:
    """16-px images, 4-px patches with stride 2: a 7 x 7 grid, tiny widths."""
    torch.manual_seed(seed)
    return make_image_cpc(
        image_size=16, patch_size=4, stride=2, width=0.125, norm=norm, max_offset=3, patch_augment=augment
    )


# ----------------------------------------------------------------- the loss


@pytest.mark.parametrize("shape", [(3, 6), (2, 5, 3)], ids=["1d", "2d-grid"])
@pytest.mark.parametrize("tau", [1.0, 0.3])
def test_cpc_loss_matches_per_position_reference(shape, tau):
    latents, contexts = randn(*shape, 4, seed=1), randn(*shape, 5, seed=2)
    predictors = linear_maps(3, 5, 4)
    loss, _ = cpc_loss(latents, contexts, predictors, temperature=tau)
    assert loss.dtype == F64
    torch.testing.assert_close(loss, cpc_loss_reference(latents, contexts, predictors, temperature=tau))


def test_cpc_accuracy_matches_a_loop_over_candidates():
    latents, contexts = randn(3, 5, 2, 4, seed=3), randn(3, 5, 2, 4, seed=4)
    predictors = linear_maps(2, 4, 4, seed=5)
    _, accuracy = cpc_loss(latents, contexts, predictors)
    predictors.requires_grad_(False)
    for k, w_k in enumerate(predictors, start=1):
        candidates = [(b, s, j) for b in range(3) for s in range(k, 5) for j in range(2)]
        hits = []
        for b in range(3):
            for t in range(5 - k):
                for j in range(2):
                    p = w_k(contexts[b, t, j])
                    best = max(candidates, key=lambda idx: float(latents[idx] @ p))
                    hits.append(best == (b, t + k, j))
        assert float(accuracy[k - 1]) == pytest.approx(sum(hits) / len(hits))


def test_cpc_loss_is_log_n_when_all_scores_tie():
    # z = 0 -> every score is 0 -> each term is log(number of candidates) = log(B * (T - k)).
    latents, contexts = torch.zeros(4, 6, 3, dtype=F64), randn(4, 6, 5)
    loss, _ = cpc_loss(latents, contexts, linear_maps(3, 5, 3))
    expected = sum(math.log(4 * (6 - k)) for k in (1, 2, 3)) / 3
    assert loss.item() == pytest.approx(expected)


def test_cpc_loss_gradcheck():
    latents = randn(2, 4, 3, seed=6).requires_grad_()
    contexts = randn(2, 4, 3, seed=7).requires_grad_()
    predictors = linear_maps(2, 3, 3)
    assert torch.autograd.gradcheck(lambda z, c: cpc_loss(z, c, predictors)[0], (latents, contexts))


def test_cpc_loss_rejects_bad_inputs():
    z, c = randn(2, 4, 3), randn(2, 4, 5)
    with pytest.raises(ValueError, match="cannot predict 4 steps ahead along an axis of length 4"):
        cpc_loss(z, c, linear_maps(4, 5, 3))
    with pytest.raises(ValueError, match="must agree on every axis but the last"):
        cpc_loss(z, randn(2, 3, 5), linear_maps(1, 5, 3))
    with pytest.raises(ValueError, match="predictors is empty"):
        cpc_loss(z, c, [])
    with pytest.raises(ValueError, match=r"must be a \(B, T, ..., dim\) tensor"):
        cpc_loss(randn(4, 3), randn(4, 5), linear_maps(1, 5, 3))
    with pytest.raises(TypeError, match="latents must be a torch.Tensor"):
        cpc_loss([[0.0]], c, linear_maps(1, 5, 3))


# ----------------------------------------------------------------- synthetic sequences and 1-D CPC


def test_oscillation_sequences_are_deterministic_and_carry_their_class_frequency():
    a, b = (
        make_oscillation_sequences(8, length=300, seed=3),
        make_oscillation_sequences(8, length=300, seed=3),
    )
    assert torch.equal(a.signals, b.signals) and torch.equal(a.labels, b.labels)
    assert a.signals.shape == (8, 300) and a.signals.dtype == torch.float32 and len(a) == 8
    assert not torch.equal(a.signals, make_oscillation_sequences(8, length=300, seed=4).signals)
    # Without noise, the spectrum peaks at the lower note (1/T_y) or its fifth (1.5/T_y).
    clean = make_oscillation_sequences(16, length=4096, noise=0.0, phase_noise=0.0, seed=0)
    spectrum = torch.fft.rfft(clean.signals.double() * torch.hann_window(4096, dtype=F64)).abs()
    peak = spectrum.argmax(dim=1).double() / 4096  # cycles per sample
    f = 1 / clean.periods[clean.labels]
    near = torch.minimum((peak - f).abs(), (peak - 1.5 * f).abs())
    assert bool((near < 2 / 4096).all())


def test_oscillation_sequences_reject_bad_arguments():
    with pytest.raises(ValueError, match="num_classes must be an integer >= 2"):
        make_oscillation_sequences(4, num_classes=1)
    with pytest.raises(ValueError, match="noise must be a number >= 0"):
        make_oscillation_sequences(4, noise=-1.0)


def test_signal_encoder_receptive_field_matches_autograd():
    torch.manual_seed(0)
    encoder = SignalEncoder(dim=8, hidden=8).double()
    size, jump = encoder.receptive_field
    assert (size, jump) == (44, 8)  # 1 + 7*1 + 3*4 + 3*8, strides 4*2*1
    x = randn(1, 120).requires_grad_()
    z = encoder(x)
    assert z.shape == (1, encoder.num_steps(120), 8) == (1, 10, 8)
    for t in (0, 3, 9):
        (grad,) = torch.autograd.grad(z[0, t].sum(), x, retain_graph=True)
        support = grad[0].nonzero().flatten()
        assert int(support.min()) == t * jump and int(support.max()) == t * jump + size - 1


def test_sequence_context_is_causal():
    """c_t has exactly zero gradient w.r.t. samples after the receptive field of z_t."""
    torch.manual_seed(0)
    model = SequenceCPC(context_dim=12, max_offset=3, encoder=SignalEncoder(dim=8, hidden=8)).double()
    size, jump = model.encoder.receptive_field
    x = randn(2, 140).requires_grad_()
    c = model.contexts(model.encode(x))
    for t in range(c.shape[1]):
        (grad,) = torch.autograd.grad(c[:, t].sum(), x, retain_graph=True)
        last = t * jump + size - 1  # the last sample z_t sees
        assert torch.count_nonzero(grad[:, last + 1 :]) == 0, f"c_{t} sees samples after {last}"
        assert bool((grad[:, last] != 0).all()), "c_t should depend on the newest sample it may see"
        for k in range(1, model.max_offset + 1):  # and so does every prediction made from c_t
            (grad,) = torch.autograd.grad(model.predictors[k - 1](c[:, t]).sum(), x, retain_graph=True)
            assert torch.count_nonzero(grad[:, last + 1 :]) == 0


def test_sequence_cpc_loss_equals_reference_on_model_outputs():
    torch.manual_seed(1)
    model = SequenceCPC(context_dim=6, max_offset=2, encoder=SignalEncoder(dim=4, hidden=6)).double()
    x = randn(3, 100)
    loss, logs = model(x)
    z = model.encode(x)
    torch.testing.assert_close(loss, cpc_loss_reference(z, model.contexts(z), model.predictors))
    assert set(logs) == {"loss", "acc_k1", "acc_k2"}


def test_sequence_cpc_learns_within_a_smoke_run():
    """Accuracy of picking the true next latent rises far above chance in a few dozen steps."""
    torch.manual_seed(0)
    train = make_oscillation_sequences(256, length=128, seed=0)
    test = make_oscillation_sequences(32, length=128, seed=1)
    model = SequenceCPC(context_dim=32, max_offset=2, encoder=SignalEncoder(dim=16, hidden=32))
    model.eval()
    with torch.no_grad():
        before = float(model(test.signals)[1]["acc_k1"])
    history = train_sequence_cpc(model, train.signals, steps=40, batch_size=16, lr=5e-3)
    model.eval()
    with torch.no_grad():
        after = float(model(test.signals)[1]["acc_k1"])
    chance = 1 / (32 * (model.encoder.num_steps(128) - 1))
    assert history[-1]["loss"] < history[0]["loss"]
    assert after > 0.1 and after > 20 * chance and after > 5 * max(before, chance), (before, after, chance)


def test_train_sequence_cpc_rejects_bad_arguments():
    data = make_oscillation_sequences(4, length=128)
    with pytest.raises(ValueError, match="batch_size=8 exceeds the 4 sequences"):
        train_sequence_cpc(SequenceCPC(max_offset=2), data.signals, steps=1, batch_size=8)
    with pytest.raises(ValueError, match="signals must have shape"):
        SequenceCPC(max_offset=2)(data.signals[:, None])
    with pytest.raises(ValueError, match="dim=8 contradicts the given encoder's dim=16"):
        SequenceCPC(dim=8, encoder=SignalEncoder(dim=16))


# ----------------------------------------------------------------- patches


def test_grid_size_and_its_errors():
    assert grid_size(32, 8, 4) == 7 and grid_size(256, 64, 32) == 7 and grid_size(32, 8, 8) == 4
    with pytest.raises(ValueError, match="do not tile a 32-px image exactly"):
        grid_size(32, 8, 5)
    with pytest.raises(ValueError, match="do not tile"):
        grid_size(8, 16, 4)


def test_extract_patches_matches_loop_and_positions():
    images = torch.arange(2 * 3 * 32 * 32, dtype=torch.float32).reshape(2, 3, 32, 32)
    patches = extract_patches(images, 8, 4)
    assert patches.shape == (2, 7, 7, 3, 8, 8)
    assert torch.equal(patches, extract_patches_reference(images, 8, 4))
    assert torch.equal(patches[1, 2, 5], images[1, :, 8:16, 20:28])  # row 2 starts at y=8, column 5 at x=20
    with pytest.raises(ValueError, match="images must be square"):
        extract_patches(images[..., :16], 8, 4)


def test_patch_augment_matches_loop_reference():
    aug = PatchAugment(flip_p=0.5, color_drop_p=0.5, max_shift=2)
    patches = randn(40, 3, 6, 6, dtype=torch.float32)
    params = aug.sample_params(40, generator=torch.Generator().manual_seed(0))
    assert params.flip.any() and (~params.flip).any() and (params.keep_channel >= 0).any()
    torch.testing.assert_close(aug.apply(patches, params), aug.apply_reference(patches, params))


def test_patch_augment_ops_by_hand_and_modes():
    aug = PatchAugment(max_shift=1)
    x = randn(1, 3, 4, 4, dtype=torch.float32)
    keep_all = torch.tensor([-1])
    shifted = aug.apply(x, PatchAugmentParams(torch.tensor([[1, 0]]), torch.tensor([False]), keep_all))
    assert torch.equal(shifted[0, :, :3], x[0, :, 1:]) and torch.equal(shifted[0, :, 3], torch.zeros(3, 4))
    flipped = aug.apply(
        x, PatchAugmentParams(torch.zeros(1, 2, dtype=torch.long), torch.tensor([True]), keep_all)
    )
    assert torch.equal(flipped, x.flip(-1))
    dropped = aug.apply(
        x, PatchAugmentParams(torch.zeros(1, 2, dtype=torch.long), torch.tensor([False]), torch.tensor([2]))
    )
    assert torch.equal(dropped[0, 2], x[0, 2]) and not dropped[0, :2].any()
    aug.eval()
    assert aug(x) is x  # no augmentation outside training
    with pytest.raises(ValueError, match="color_drop_p is a probability"):
        PatchAugment(color_drop_p=1.5)


# ----------------------------------------------------------------- the row-causal context


def test_row_causal_conv_mask_and_equivalent_top_padded_conv():
    torch.manual_seed(0)
    conv = RowCausalConv2d(2, 3, kernel_size=3).double()
    assert torch.equal(conv.mask, torch.tensor([[1.0, 1, 1], [1, 1, 1], [0, 0, 0]]))
    x = randn(2, 2, 5, 5)
    # Same map, built differently: keep the kernel's top two rows and pad only above.
    top = F.conv2d(F.pad(x, (1, 1, 1, 0)), conv.weight[:, :, :2], conv.bias)
    torch.testing.assert_close(conv(x), top)
    with pytest.raises(ValueError, match="kernel_size must be odd"):
        RowCausalConv2d(2, 3, kernel_size=4)


def _rows_with_gradient(output: torch.Tensor, patches: torch.Tensor) -> list[int]:
    (grad,) = torch.autograd.grad(output.sum(), patches, retain_graph=True)
    return [r for r in range(grad.shape[1]) if torch.count_nonzero(grad[:, r]) > 0]


def test_image_context_is_causal_in_patch_rows():
    """c at row i has exactly zero gradient w.r.t. every patch of rows > i (train mode, LayerNorm,
    per-patch augmentation on). Patches are the inputs: pixels are shared by overlapping rows."""
    model = small_image_cpc(norm="layer", augment=True).double().train()
    patches = model.encoder.patches(randn(3, 3, 16, 16)).clone().requires_grad_()
    _, c = model.context_from_patches(patches)
    for i in range(c.shape[1]):
        rows = _rows_with_gradient(c[:, i], patches)
        assert max(rows) == i, f"c at row {i} depends on patch rows {rows}"
        assert rows == list(range(max(0, i - 4), i + 1))  # 2 blocks of 3x3 masked convs reach 4 rows up


def test_prediction_for_row_i_plus_k_never_sees_row_i_plus_k():
    model = small_image_cpc(augment=False).double().train()
    patches = model.encoder.patches(randn(2, 3, 16, 16)).clone().requires_grad_()
    _, c = model.context_from_patches(patches)
    for k in range(1, model.max_offset + 1):
        prediction = model.predict(c, k)  # W_k c, the guess for the latent k rows below
        for i in range(c.shape[1] - k):
            rows = _rows_with_gradient(prediction[:, i], patches)
            assert i + k not in rows and max(rows) == i


def test_batch_norm_leaks_the_future_in_training_mode_but_not_in_eval():
    """Why CPC v2 uses LayerNorm: BN statistics mix all patches, so row 0 'sees' the last row."""
    model = small_image_cpc(norm="batch", augment=False).double().train()
    patches = model.encoder.patches(randn(3, 3, 16, 16)).clone().requires_grad_()
    _, c = model.context_from_patches(patches)
    assert _rows_with_gradient(c[:, 0], patches) == list(range(7))
    model.eval()
    _, c = model.context_from_patches(patches)
    assert _rows_with_gradient(c[:, 0], patches) == [0]


def test_image_cpc_loss_equals_reference_on_model_outputs():
    model = small_image_cpc(augment=False).double().eval()
    images = randn(2, 3, 16, 16)
    loss, logs = model(Batch([images], torch.arange(2)))
    z, c = model.context_from_patches(model.encoder.patches(images))
    torch.testing.assert_close(loss, cpc_loss_reference(z, c, model.predictors))
    assert set(logs) == {"loss", "acc_k1", "acc_k2", "acc_k3"} and model.log_keys == (
        "acc_k1",
        "acc_k2",
        "acc_k3",
    )


def test_image_cpc_uses_view1_only_and_encoder_pools_the_grid():
    model = small_image_cpc(augment=False).eval()
    v1, v2 = randn(4, 3, 16, 16, dtype=torch.float32), randn(4, 3, 16, 16, seed=1, dtype=torch.float32)
    index = torch.arange(4)
    assert model.num_views == 1  # the engine draws one view per image for CPC
    assert torch.equal(model(Batch([v1, v2], index))[0], model(Batch([v1, -v2], index))[0])
    pooled = model.encoder(v1)
    assert pooled.shape == (4, model.encoder.feature_dim)
    torch.testing.assert_close(pooled, model.encoder.grid(v1).mean(dim=(2, 3)))


def test_patch_grid_encoder_encodes_each_patch_on_its_own():
    torch.manual_seed(0)
    encoder = PatchGridEncoder(PatchConvNet(width=0.125), patch_size=4, stride=2).double().eval()
    images = randn(2, 3, 16, 16)
    z = encoder.grid(images)
    one = encoder.patch_net(extract_patches(images, 4, 2)[1, 3, 5][None])  # patch at row 3, column 5
    torch.testing.assert_close(z[1, :, 3, 5], one[0])
    with pytest.raises(TypeError, match="feature_dim"):
        PatchGridEncoder(nn.Conv2d(3, 4, 3))


def test_make_image_cpc_rejects_bad_settings():
    with pytest.raises(ValueError, match="max_offset=7 must be < the grid size 7"):
        make_image_cpc(max_offset=7)
    with pytest.raises(ValueError, match="norm must be one of"):
        make_image_cpc(norm="group")
    with pytest.raises(ValueError, match="temperature must be a number > 0"):
        make_image_cpc(temperature=0.0)
    with pytest.raises(TypeError, match="patch_augment must be True or False"):
        make_image_cpc(patch_augment="yes")
    with pytest.raises(ValueError, match="offset k must lie in 1..3"):
        small_image_cpc().predict(torch.zeros(1, 7, 7, 4), 4)


def test_context_module_is_row_causal_on_its_own():
    torch.manual_seed(0)
    context = RowCausalContext(4, blocks=3).double()
    z = randn(1, 4, 7, 7).requires_grad_()
    c = context(z)
    (grad,) = torch.autograd.grad(c[0, :, 2, 3].sum(), z)
    assert torch.count_nonzero(grad[0, :, 3:]) == 0 and torch.count_nonzero(grad[0, :, 2]) > 0


# ----------------------------------------------------------------- the method in the engine


def test_cpc_method_and_preset():
    from contrastive_lab.methods import build_method
    from contrastive_lab.presets import get_preset

    cfg = get_preset("cpc-cifar10-cpu")
    assert cfg.method == "cpc" and cfg.encoder == "patch_convnet"
    torch.manual_seed(0)
    method = build_method(cfg)
    assert isinstance(method, ImageCPC) and method.max_offset == cfg.options.cpc_offsets
    x = randn(4, 3, 32, 32, dtype=torch.float32)
    loss, logs = method(Batch([x], torch.arange(4)))
    assert loss.isfinite() and set(method.log_keys) <= set(logs)
    assert method.encoder(x).shape == (4, method.encoder.feature_dim)
    with pytest.raises(ValueError, match="method=cpc encodes patches with encoder=patch_convnet"):
        build_method(cfg.replace(encoder="resnet18"))
    with pytest.raises(ValueError, match="max_offset=7 must be < the grid size 7"):
        build_method(cfg.replace(cpc_offsets=7))


@pytest.mark.slow
def test_engine_trains_cpc_for_two_steps(tmp_path):
    from contrastive_lab.engine import train
    from contrastive_lab.presets import get_preset

    cfg = get_preset("cpc-cifar10-cpu").replace(
        dataset="synthetic",
        synthetic_size=64,
        batch_size=16,
        max_steps=2,
        width=0.25,
        device="cpu",
        precision="fp32",
        figures=False,
        knn_k=5,
        knn_every=0,
    )
    result = train(cfg, tmp_path / "run", verbose=False)
    assert result["step"] == 2 and 0.0 <= result["knn_final"] <= 1.0
    header = (tmp_path / "run" / "metrics.csv").read_text().splitlines()[0]
    assert "acc_k1" in header
