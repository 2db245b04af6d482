"""MoCo and InstDisc as methods: logits and losses against losses.py, the order of a step as in MoCo's
Algorithm 1 (keys -> loss -> [optimizer step] -> momentum update -> enqueue, the last two in
``after_step``), no gradient into the key encoder, and exact resume of the queue, the bank and the
momentum schedule through the engine."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from contrastive_lab.batchnorm import SplitBatchNorm
from contrastive_lab.checkpoints import load_checkpoint
from contrastive_lab.encoders import build_encoder
from contrastive_lab.engine import load_split, train, training_images
from contrastive_lab.engine.run import build_for_data
from contrastive_lab.heads import build_head
from contrastive_lab.losses import info_nce, info_nce_reference, nce_memory_bank
from contrastive_lab.methods import METHODS, Batch, InstDisc, MoCo, Progress, build_method
from contrastive_lab.momentum import cosine_momentum, momentum_update_reference_
from contrastive_lab.optim import build_optimizer
from contrastive_lab.presets import get_preset

N, S = 8, 8  # batch and image side for the direct method tests


def _parts(head: str = "linear", seed: int = 0):
    torch.manual_seed(seed)
    encoder = build_encoder("resnet10", width=0.125, cifar_stem=True)
    return encoder, build_head(head, in_dim=encoder.feature_dim, out_dim=16)


def _moco(**kw) -> MoCo:
    encoder, head = _parts(kw.pop("head", "linear"))
    kw.setdefault("queue_size", 20)  # not a multiple of the batch of 8
    return MoCo(encoder, head, **kw)


def _views(seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(N, 3, S, S, generator=g), torch.randn(N, 3, S, S, generator=g)


def _batch(*views, index=None) -> Batch:
    return Batch(list(views), torch.arange(N) if index is None else index)


def _after(method, step: int, total: int = 10) -> None:
    """What the engine does after the optimizer step."""
    method.after_step(Progress(step=step, total_steps=total, steps_per_epoch=1))


# --------------------------------------------------------------------------- MoCo


def test_moco_logits_have_the_positive_at_index_0_and_match_info_nce():
    moco = _moco(temperature=0.2)
    x1, x2 = _views()
    q, k = moco.queries(x1).detach(), moco.keys(x2)
    queue = moco.queue.keys
    logits = moco.logits(q, k)
    assert logits.shape == (N, 1 + 20)
    torch.testing.assert_close(logits[:, 0], (q * k).sum(1) / 0.2)  # l_pos = q . k+ / T
    torch.testing.assert_close(logits[:, 1:], q @ queue.T / 0.2)
    ce = F.cross_entropy(logits, torch.zeros(N, dtype=torch.long))  # label 0 = the positive
    torch.testing.assert_close(ce, info_nce(q, k, queue, temperature=0.2))
    torch.testing.assert_close(ce, info_nce_reference(q, k, queue, temperature=0.2), rtol=1e-5, atol=1e-5)


def test_a_step_is_infonce_against_the_queue_then_the_momentum_update_then_enqueue():
    """forward() == InfoNCE(q, k, queue before the step); after_step() == [EMA update (Eq. 2); enqueue k]."""
    moco = _moco(momentum=0.9)
    with torch.no_grad():  # make the two encoders differ, so the EMA update is visible
        for p in moco.encoder.parameters():
            p.add_(0.01 * torch.randn_like(p))
    by_hand = copy.deepcopy(moco)
    x1, x2 = _views()
    queue_before = moco.queue.ordered()
    torch.manual_seed(5)
    loss, logs = moco(_batch(x1, x2))
    torch.manual_seed(5)  # the same shuffle permutation
    q, k = by_hand.queries(x1), by_hand.keys(x2)
    torch.testing.assert_close(loss, info_nce(q, k, queue_before, temperature=0.07), rtol=1e-5, atol=1e-6)
    assert torch.equal(moco.queue.ordered(), queue_before)  # nothing is enqueued before the step
    _after(moco, step=1)
    momentum_update_reference_(by_hand.key_encoder, by_hand.encoder, 0.9)
    momentum_update_reference_(by_hand.key_head, by_hand.head, 0.9)
    for a, b in zip(moco.key_encoder.parameters(), by_hand.key_encoder.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)
    assert int(moco.step) == 1 and int(moco.queue.ptr) == N
    torch.testing.assert_close(moco.queue.ordered()[-N:], k, rtol=1e-5, atol=1e-6)  # enqueued after
    torch.testing.assert_close(moco.queue.ordered()[:-N], queue_before[N:])  # the oldest N left
    assert set(logs) == {"loss", *MoCo.log_keys}


def test_no_gradient_reaches_the_key_encoder_and_the_optimizer_skips_it():
    moco = _moco()
    x1, x2 = _views()
    loss, _ = moco(_batch(x1, x2))
    loss.backward()
    key_params = [*moco.key_encoder.parameters(), *moco.key_head.parameters()]
    assert all(not p.requires_grad and p.grad is None for p in key_params)
    assert all(p.grad is not None for p in moco.encoder.parameters())
    optimizer = build_optimizer("sgd", moco, lr=0.1, weight_decay=1e-4)
    in_optimizer = {id(p) for group in optimizer.param_groups for p in group["params"]}
    assert not in_optimizer & {id(p) for p in key_params}
    assert {id(p) for p in moco.encoder.parameters()} <= in_optimizer


def test_shuffle_bn_with_plain_bn_does_not_change_the_keys():
    """On one device with plain BN, shuffling only reorders the batch: keys equal the unshuffled ones."""
    moco = _moco(shuffle_bn=True)
    plain = copy.deepcopy(moco)
    plain.shuffle_bn = False
    x = _views()[1]
    torch.testing.assert_close(moco.keys(x), plain.keys(x), rtol=1e-5, atol=1e-6)


def test_symmetric_loss_is_the_sum_of_both_directions_and_enqueues_both_key_sets():
    moco = _moco(symmetric=True, momentum=0.5)
    ref = copy.deepcopy(moco)
    x1, x2 = _views()
    torch.manual_seed(3)
    loss, _ = moco(_batch(x1, x2))
    _after(moco, step=1)
    torch.manual_seed(3)
    loss_12, _, k2 = ref.contrastive_loss(x1, x2)
    loss_21, _, k1 = ref.contrastive_loss(x2, x1)
    torch.testing.assert_close(loss, loss_12 + loss_21)
    torch.testing.assert_close(moco.queue.ordered()[-2 * N :], torch.cat([k1, k2]))


def test_cosine_momentum_schedule_follows_the_step_counter():
    moco = _moco(momentum=0.9, ema_schedule="cosine", total_steps=4)
    x1, x2 = _views()
    seen = []
    for t in range(5):  # ema_m logs the m of the latest update: m_t after t steps
        seen.append(float(moco(_batch(x1, x2))[1]["ema_m"]))
        _after(moco, step=t + 1, total=4)
    assert seen == pytest.approx([cosine_momentum(t, 4, 0.9) for t in range(5)])
    assert seen[-1] == pytest.approx(1.0) and int(moco.step) == 5
    moco.eval()  # evaluation neither updates nor enqueues
    ptr, step = int(moco.queue.ptr), int(moco.step)
    moco(_batch(x1, x2))
    assert (int(moco.queue.ptr), int(moco.step)) == (ptr, step) and not moco._pending


def test_moco_rejects_bad_settings():
    with pytest.raises(ValueError, match=r"momentum_ema must lie in \[0, 1\]"):
        _moco(momentum=1.5)
    with pytest.raises(ValueError, match="ema_schedule must be one of"):
        _moco(ema_schedule="linear")
    with pytest.raises(ValueError, match="needs total_steps >= 1"):
        _moco(ema_schedule="cosine")


# --------------------------------------------------------------------------- InstDisc


def _instdisc(**kw) -> InstDisc:
    encoder, head = _parts()
    return InstDisc(encoder, head, dataset_size=kw.pop("dataset_size", 40), num_negatives=kw.pop("k", 12), **kw)


def test_instdisc_nce_loss_matches_losses_and_updates_the_bank_after_the_loss():
    model = _instdisc(temperature=0.07, bank_momentum=0.5)
    x1, _ = _views()
    index = torch.tensor([3, 7, 0, 39, 12, 5, 21, 30])
    bank_before = model.bank.bank.clone()
    torch.manual_seed(11)
    loss, logs = model(Batch([x1], index))
    assert torch.equal(model.bank.bank, bank_before)  # the bank is written after the step
    _after(model, step=1)
    torch.manual_seed(11)  # the same noise draws
    neg = model.bank.sample_negatives(index, 12)
    f = F.normalize(model.head(model.encoder(x1)), dim=1)
    expected, z = nce_memory_bank(f, bank_before[index], bank_before[neg], 40, 0.07)
    torch.testing.assert_close(loss, expected, rtol=1e-5, atol=1e-6)
    assert float(model.nce.z) == pytest.approx(float(z))  # Z estimated on the first batch, then fixed
    v = 0.5 * bank_before[index] + 0.5 * f.detach()
    torch.testing.assert_close(model.bank.bank[index], F.normalize(v, dim=1), rtol=1e-5, atol=1e-6)
    untouched = torch.ones(40, dtype=torch.bool)
    untouched[index] = False
    assert torch.equal(model.bank.bank[untouched], bank_before[untouched])
    assert torch.allclose(logs["pos_cos"], (f * bank_before[index]).sum(1).mean())


def test_instdisc_infonce_and_proximal_term():
    model = _instdisc(loss="infonce", proximal=0.5, temperature=0.1)
    x1, _ = _views()
    index = torch.arange(N)
    bank_before = model.bank.bank.clone()
    torch.manual_seed(2)
    loss, _ = model(Batch([x1], index))
    torch.manual_seed(2)
    neg = model.bank.sample_shared_negatives(index, 12)
    assert not torch.isin(neg, index).any()
    f = F.normalize(model.head(model.encoder(x1)), dim=1)
    v = bank_before[index]
    expected = info_nce(f, v, bank_before[neg], temperature=0.1) + 0.5 * (f - v).pow(2).sum(1).mean()
    torch.testing.assert_close(loss, expected, rtol=1e-5, atol=1e-6)


def test_instdisc_needs_the_index_and_a_sensible_k():
    with pytest.raises(ValueError, match="needs the dataset indices"):
        _instdisc()(Batch([_views()[0]], None))
    with pytest.raises(ValueError, match="num_negatives=40 must be smaller than the 40 images"):
        _instdisc(k=40)
    with pytest.raises(ValueError, match="bank_loss must be one of"):
        _instdisc(loss="ce")


# --------------------------------------------------------------------------- configs, engine, resume


def tiny(preset: str, **changes):
    base = dict(
        dataset="synthetic", synthetic_size=96, image_size=8, width=0.125, batch_size=32, epochs=1,
        precision="fp32", knn_every=0, knn_k=10, checkpoint_every=1000, figures=False, bn_splits=4,
        view_ops="crop,flip,jitter,gray",  # 8-px views are too small for MoCo v2's blur kernel
    )
    return get_preset(preset).replace(**{**base, **changes})


def _built(cfg):
    """The method as the engine builds it: with the counts of the (subset of the) training split."""
    method, ctx, _ = build_for_data(cfg, training_images(cfg, load_split(cfg, cfg.train_split)), world=1)
    return method


def test_presets_build_their_methods():
    assert {"moco_v1", "moco_v2", "instdisc"} <= set(METHODS)
    for name in ("moco-v1-cifar10-cpu", "moco-v2-cifar10-cpu", "instdisc-cifar10-cpu"):
        method = _built(tiny(name, **({"num_negatives": 16} if "instdisc" in name else {})))
        assert sum(isinstance(m, SplitBatchNorm) for m in method.encoder.modules()) > 0
    for name in ("moco-v1-imagenet-r50", "moco-v2-imagenet-r50", "instdisc-imagenet-r50"):
        cfg = get_preset(name)
        assert cfg.batch_size == 256 and cfg.epochs == 200 and cfg.lr == 0.03
    assert _built(tiny("instdisc-cifar10-cpu", subset=64, num_negatives=8)).bank.size == 64
    moco = _built(tiny("moco-v2-cifar10-cpu", ema_schedule="cosine", epochs=4, max_steps=5))
    assert moco.total_steps == 5 and moco.head.out_dim == 128
    with pytest.raises(ValueError, match="memory bank needs the number of training images"):
        build_method(tiny("instdisc-cifar10-cpu", num_negatives=8))  # no counts given


def _state(run) -> dict[str, torch.Tensor]:
    return load_checkpoint(run / "checkpoints" / "last.pt")["method"]


@pytest.mark.parametrize(
    "preset, changes, buffers",
    [
        ("moco-v2-cifar10-cpu", dict(queue_size=40, ema_schedule="cosine", symmetric=True, view_ops="crop,flip,jitter,gray"),
         ["queue.keys", "queue.ptr", "step"]),
        ("instdisc-cifar10-cpu", dict(num_negatives=20), ["bank.bank", "nce.z"]),
    ],
)
def test_resume_restores_queue_bank_and_schedule_bit_for_bit(tmp_path, preset, changes, buffers):
    cfg = tiny(preset, **changes)
    straight = train(cfg, tmp_path / "straight", verbose=False)
    train(cfg, tmp_path / "resumed", verbose=False, stop_at_step=1)  # mid-epoch
    train(cfg, tmp_path / "resumed", resume=True, verbose=False)
    a, b = _state(tmp_path / "straight"), _state(tmp_path / "resumed")
    assert straight["step"] == 3 and a.keys() == b.keys()
    assert set(buffers) <= set(a)
    for key in a:
        assert torch.equal(a[key], b[key]), f"{key} differs after resume"
    torch.manual_seed(cfg.seed)
    fresh = _built(cfg).state_dict()
    for key in buffers:  # the buffers really moved during training
        assert not torch.equal(a[key], fresh[key]), f"{key} never changed"
