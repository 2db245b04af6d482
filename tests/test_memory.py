"""contrastive_lab.memory: the queue, the memory bank, the momentum update, shuffling BN and split BN.

Every piece is checked against an independent reference: a ``collections.deque`` for the queue,
the update rule computed by hand (NumPy) for the bank, per-split ``nn.BatchNorm2d`` copies for
split BN, and real 2-process gloo runs for everything that talks across ranks.
"""

from __future__ import annotations

import copy
from collections import deque
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from contrastive_lab.distributed import cleanup_distributed, init_distributed
from contrastive_lab.memory import (
    KeyQueue,
    MemoryBank,
    SplitBatchNorm,
    batch_shuffle,
    batch_unshuffle,
    convert_to_split_batchnorm,
    cosine_momentum,
    momentum_copy,
    momentum_update_,
    momentum_update_reference_,
    split_batch_norm_reference,
)
from tests._dist import run_ranks

# --------------------------------------------------------------------------- queue


def _deque_of(queue: KeyQueue) -> deque:
    """Reference FIFO holding the queue's initial keys, oldest first (slot 0 is the first out)."""
    return deque([row.clone() for row in queue.keys], maxlen=queue.size)


@pytest.mark.parametrize("size", [10, 7])
def test_queue_is_fifo_with_wraparound_and_k_not_a_multiple_of_the_batch(size):
    g = torch.Generator().manual_seed(0)
    queue = KeyQueue(size, dim=3, generator=g)
    ref, pushed = _deque_of(queue), 0
    for batch in [3, 4, 3, 7, 1, 12, 5, 10, 2]:  # wraps around, and one batch (12) exceeds K
        keys = torch.randn(batch, 3, generator=g)
        queue.enqueue(keys)
        ref.extend(keys)
        pushed += batch
        assert int(queue.ptr) == pushed % size
        assert torch.equal(queue.ordered(), torch.stack(list(ref))), f"after pushing {pushed} keys"
    assert torch.equal(queue.ordered()[-2:], keys)  # the newest keys sit at the end


def test_queue_initial_keys_are_unit_vectors_and_bad_input_is_rejected():
    queue = KeyQueue(8, dim=4)
    torch.testing.assert_close(queue.keys.norm(dim=1), torch.ones(8))
    assert int(queue.ptr) == 0 and {"keys", "ptr"} <= set(queue.state_dict())
    with pytest.raises(ValueError, match=r"keys must have shape \(B, 4\), got \(3, 5\)"):
        queue.enqueue(torch.zeros(3, 5))
    with pytest.raises(TypeError, match="floating-point"):
        queue.enqueue(torch.zeros(3, 4, dtype=torch.long))
    with pytest.raises(ValueError, match="size must be >= 1"):
        KeyQueue(0, dim=4)


def test_queue_stores_float32_keys_from_bf16():
    queue = KeyQueue(4, dim=2)
    queue.enqueue(torch.ones(2, 2, dtype=torch.bfloat16))
    assert queue.keys.dtype == torch.float32 and torch.equal(queue.ordered()[-2:], torch.ones(2, 2))


# --------------------------------------------------------------------------- memory bank


def test_bank_starts_on_the_unit_sphere_from_the_official_uniform_init():
    bank = MemoryBank(50, dim=12, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(bank.bank.norm(dim=1), torch.ones(50))
    raw = torch.rand(50, 12, generator=torch.Generator().manual_seed(0)) * 2 / np.sqrt(12 / 3) - 1 / np.sqrt(4)
    torch.testing.assert_close(bank.bank, raw / raw.norm(dim=1, keepdim=True))


def test_bank_update_matches_the_rule_computed_by_hand():
    bank = MemoryBank(6, dim=3, momentum=0.5)
    v = np.random.default_rng(0).normal(size=(6, 3))
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    bank.bank.copy_(torch.from_numpy(v).float())
    index = torch.tensor([4, 1])
    f = np.array([[3.0, 0.0, 4.0], [0.0, -2.0, 0.0]])  # unnormalised network outputs
    bank.update(index, torch.from_numpy(f).float())
    expected = v.copy()
    for i, row in zip([4, 1], f):
        new = 0.5 * v[i] + 0.5 * row / np.linalg.norm(row)
        expected[i] = new / np.linalg.norm(new)
    np.testing.assert_allclose(bank.bank.numpy(), expected, rtol=1e-6, atol=1e-7)


def test_bank_update_agrees_with_its_loop_reference_for_other_momenta():
    for m in (0.0, 0.3, 0.9):
        a = MemoryBank(20, dim=5, momentum=m, generator=torch.Generator().manual_seed(1))
        b = copy.deepcopy(a)
        index, f = torch.tensor([3, 17, 0, 9]), torch.randn(4, 5)
        a.update(index, f)
        b.update_reference(index, f)
        torch.testing.assert_close(a.bank, b.bank)
        if m == 0.0:  # the paper's plain replacement v_i <- f_i
            torch.testing.assert_close(a.bank[index], f / f.norm(dim=1, keepdim=True))


def test_sampled_negatives_never_include_the_positive_and_are_uniform_over_the_others():
    n, draws = 7, 7000
    bank = MemoryBank(n, dim=2)
    index = torch.arange(n)
    neg = bank.sample_negatives(index, draws, generator=torch.Generator().manual_seed(0))
    assert neg.shape == (n, draws)
    assert not (neg == index[:, None]).any(), "a negative equals its positive"
    for i in range(n):
        counts = torch.bincount(neg[i], minlength=n).float()
        others = torch.cat([counts[:i], counts[i + 1 :]])
        assert counts[i] == 0
        # each of the 6 others has probability 1/6: 1166.7 expected, std ~31
        assert ((others - draws / (n - 1)).abs() < 150).all(), others


def test_shared_negatives_avoid_the_whole_batch():
    bank = MemoryBank(30, dim=2)
    batch = torch.tensor([0, 5, 6, 29])
    neg = bank.sample_shared_negatives(batch, 5000, generator=torch.Generator().manual_seed(0))
    assert neg.shape == (5000,) and not torch.isin(neg, batch).any()
    assert set(neg.tolist()) == set(range(30)) - set(batch.tolist())


def test_bank_rejects_bad_indices_and_duplicates_with_clear_messages():
    bank = MemoryBank(10, dim=3)
    with pytest.raises(ValueError, match=r"values in \[0, 10\] but the memory bank has 10 entries"):
        bank(torch.tensor([0, 10]))
    with pytest.raises(ValueError, match="duplicates"):
        bank.update(torch.tensor([2, 2]), torch.randn(2, 3))
    with pytest.raises(ValueError, match=r"features must have shape \(B, 3\)"):
        bank.update(torch.tensor([2]), torch.randn(1, 4))
    with pytest.raises(ValueError, match=r"bank momentum must lie in \[0, 1\]"):
        MemoryBank(10, dim=3, momentum=1.5)
    with pytest.raises(ValueError, match="every one of the 10 bank entries is excluded"):
        bank.sample_shared_negatives(torch.arange(10), 3)


# --------------------------------------------------------------------------- momentum encoder


def _net() -> nn.Module:
    return nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3), nn.Linear(3, 2))


def test_momentum_update_is_exactly_m_theta_k_plus_one_minus_m_theta_q():
    """Dyadic numbers and m = 0.75: every product and sum is exact in float32, so equality is exact."""
    q, k = _net(), _net()
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in (*q.parameters(), *k.parameters()):
            p.copy_(torch.randint(-64, 64, p.shape, generator=g).float() / 8)
    expected = {n: 0.75 * pk + 0.25 * dict(q.named_parameters())[n] for n, pk in k.named_parameters()}
    momentum_update_(k, q, 0.75)
    for name, p in k.named_parameters():
        assert torch.equal(p, expected[name]), name


def test_momentum_update_agrees_with_the_loop_and_leaves_buffers_alone():
    torch.manual_seed(0)
    q, k = _net(), _net()
    k[1].running_mean.fill_(3.0)
    k_ref = copy.deepcopy(k)
    momentum_update_(k, q, 0.999)
    momentum_update_reference_(k_ref, q, 0.999)
    for (name, a), b in zip(k.named_parameters(), k_ref.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7, msg=name)
    assert torch.equal(k[1].running_mean, torch.full((3,), 3.0)), "BN buffers must not be averaged"
    momentum_update_(k, q, 0.0)  # m = 0 copies the query encoder
    assert all(torch.equal(a, b) for a, b in zip(k.parameters(), q.parameters()))
    with pytest.raises(ValueError, match=r"must lie in \[0, 1\]"):
        momentum_update_(k, q, -0.1)
    with pytest.raises(ValueError, match="same parameter names and shapes"):
        momentum_update_(k, nn.Linear(4, 3), 0.9)


def test_momentum_copy_gets_no_gradient():
    q = _net()
    k = momentum_copy(q)
    assert all(not p.requires_grad for p in k.parameters())
    assert all(p.requires_grad for p in q.parameters())
    x = torch.randn(5, 4)
    (q(x).sum() + k(x).sum()).backward()
    assert all(p.grad is None for p in k.parameters())
    assert all(p.grad is not None for p in q.parameters())


def test_cosine_momentum_schedule_by_hand():
    assert cosine_momentum(0, 100, 0.99) == pytest.approx(0.99)
    assert cosine_momentum(50, 100, 0.99) == pytest.approx(0.995)  # cos(pi/2) = 0
    assert cosine_momentum(25, 75, 0.99) == pytest.approx(1 - 0.01 * 0.75)  # cos(pi/3) = 1/2
    assert cosine_momentum(100, 100, 0.99) == cosine_momentum(500, 100, 0.99) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="total_steps must be >= 1"):
        cosine_momentum(0, 0, 0.99)


# --------------------------------------------------------------------------- split BN


def _split_bn(splits: int, momentum: float | None = 0.1) -> SplitBatchNorm:
    """A SplitBatchNorm with non-trivial affine parameters and running statistics."""
    torch.manual_seed(0)
    split = SplitBatchNorm(3, splits, momentum=momentum)
    with torch.no_grad():
        split.weight.uniform_(0.5, 1.5)
        split.bias.uniform_(-0.5, 0.5)
        split.running_mean.uniform_(-1, 1)
        split.running_var.uniform_(0.5, 2)
    return split


@pytest.mark.parametrize("momentum", [0.1, None])
def test_split_bn_equals_one_batchnorm_per_split(momentum):
    split = _split_bn(4, momentum)
    x = torch.randn(16, 3, 5, 5) * 2 + 1
    copies = []
    for chunk in x.chunk(4):  # independent reference: a fresh nn.BatchNorm2d per split
        bn = nn.BatchNorm2d(3, momentum=momentum)
        bn.load_state_dict(split.state_dict())
        copies.append((bn, bn(chunk)))
    x_req = x.clone().requires_grad_()
    out = split(x_req)
    torch.testing.assert_close(out, torch.cat([o for _, o in copies]), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(split.running_mean, torch.stack([b.running_mean for b, _ in copies]).mean(0))
    torch.testing.assert_close(split.running_var, torch.stack([b.running_var for b, _ in copies]).mean(0))
    assert int(split.num_batches_tracked) == 1
    # gradients flow to the shared weight and bias as the sum over the splits
    out.pow(2).sum().backward()
    w_ref = torch.stack([torch.autograd.grad(o.pow(2).sum(), b.weight, retain_graph=True)[0] for b, o in copies])
    torch.testing.assert_close(split.weight.grad, w_ref.sum(0), rtol=1e-4, atol=1e-5)


def test_split_bn_fast_form_agrees_with_its_reference_and_channels_last():
    fast = _split_bn(2)
    slow = copy.deepcopy(fast)
    x = torch.randn(8, 3, 4, 4).contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(fast(x), split_batch_norm_reference(x, slow), rtol=1e-5, atol=1e-5)
    for name in ("running_mean", "running_var", "num_batches_tracked"):
        torch.testing.assert_close(getattr(fast, name), getattr(slow, name))


def test_split_bn_eval_mode_is_plain_bn_and_bad_batches_fail():
    split = _split_bn(4)
    plain = nn.BatchNorm2d(3)
    plain.load_state_dict(split.state_dict())
    x = torch.randn(6, 3, 2, 2)
    split.eval(), plain.eval()
    torch.testing.assert_close(split(x), plain(x))  # 6 is not divisible by 4, fine in eval mode
    split.train()
    with pytest.raises(ValueError, match="batch of 6 cannot be cut into num_splits=4"):
        split(x)


def test_convert_to_split_batchnorm_keeps_names_and_values():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.BatchNorm1d(4 * 4))
    with torch.no_grad():
        model[1].running_mean.fill_(0.5)
    before = copy.deepcopy(model.state_dict())
    convert_to_split_batchnorm(model, 2)
    assert isinstance(model[1], SplitBatchNorm) and model[1].num_splits == 2
    assert type(model[4]) is nn.BatchNorm1d  # only 2-D BN layers are split
    after = model.state_dict()
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)


def test_single_process_shuffle_then_unshuffle_is_the_identity():
    x = torch.arange(10.0).view(5, 2)
    shuffled, idx = batch_shuffle(x, generator=torch.Generator().manual_seed(3))
    assert sorted(shuffled[:, 0].tolist()) == x[:, 0].tolist() and not torch.equal(shuffled, x)
    assert torch.equal(batch_unshuffle(shuffled, idx), x)
    with pytest.raises(ValueError, match=r"idx_unshuffle has shape \(4,\), expected \(5,\)"):
        batch_unshuffle(shuffled, idx[:4])


# --------------------------------------------------------------------------- 2 gloo ranks

B_LOCAL, K_QUEUE, DIM = 3, 7, 2


def _rank_keys(rank: int) -> torch.Tensor:
    return torch.arange(B_LOCAL * DIM, dtype=torch.float32).view(B_LOCAL, DIM) + 100 * rank


def _ddp_worker(rank: int, world: int, out_dir: str) -> None:
    init_distributed("gloo", timeout_s=30)
    res: dict[str, object] = {}
    # queue: same initial keys everywhere, each rank enqueues its own keys twice
    queue = KeyQueue(K_QUEUE, DIM, generator=torch.Generator().manual_seed(0))
    res["queue_init"] = queue.keys.clone()
    queue.enqueue(_rank_keys(rank))
    queue.enqueue(_rank_keys(rank) + 0.5)
    res["queue"], res["ptr"] = queue.ordered(), int(queue.ptr)
    # bank: each rank writes its own rows; gathering makes both banks identical
    bank = MemoryBank(8, DIM, momentum=0.5, generator=torch.Generator().manual_seed(0))
    bank.update(torch.tensor([rank, 4 + rank]), torch.tensor([[1.0, 0.0], [0.0, 1.0]]) * (rank + 1))
    res["bank"] = bank.bank.clone()
    # shuffling BN: a local batch of 4 rows, labelled by their global position
    x = torch.arange(4.0 * rank, 4.0 * rank + 4).view(4, 1).repeat(1, 3)
    torch.manual_seed(rank)  # different RNG states: rank 0's permutation must win
    shuffled, idx = batch_shuffle(x)
    res["x"], res["shuffled"], res["restored"] = x, shuffled, batch_unshuffle(shuffled, idx)
    torch.save(res, Path(out_dir) / f"rank{rank}.pt")
    cleanup_distributed()


@pytest.fixture(scope="module")
def ddp_results(tmp_path_factory: pytest.TempPathFactory) -> list[dict]:
    out = tmp_path_factory.mktemp("memory_ddp")
    run_ranks(_ddp_worker, world_size=2, args=(str(out),), timeout=90.0)
    return [torch.load(out / f"rank{r}.pt") for r in range(2)]


@pytest.mark.distributed
def test_queue_enqueues_keys_gathered_from_both_ranks(ddp_results):
    ref = deque(list(ddp_results[0]["queue_init"]), maxlen=K_QUEUE)
    ref.extend(torch.cat([_rank_keys(0), _rank_keys(1)]))
    ref.extend(torch.cat([_rank_keys(0), _rank_keys(1)]) + 0.5)
    for res in ddp_results:
        assert torch.equal(res["queue"], torch.stack(list(ref)))  # 12 keys through a K=7 queue
        assert res["ptr"] == 12 % K_QUEUE


@pytest.mark.distributed
def test_bank_update_is_gathered_so_both_ranks_hold_the_same_bank(ddp_results):
    a, b = ddp_results[0]["bank"], ddp_results[1]["bank"]
    assert torch.equal(a, b)
    single = MemoryBank(8, DIM, momentum=0.5, generator=torch.Generator().manual_seed(0))
    feats = torch.tensor([[1.0, 0.0], [0.0, 1.0], [2.0, 0.0], [0.0, 2.0]])
    single.update(torch.tensor([0, 4, 1, 5]), feats)  # the global batch in one process
    torch.testing.assert_close(a, single.bank)


@pytest.mark.distributed
def test_batch_shuffle_then_unshuffle_is_the_exact_inverse_on_two_ranks(ddp_results):
    shuffled = torch.cat([r["shuffled"][:, 0] for r in ddp_results])
    assert sorted(shuffled.tolist()) == list(range(8)), "the shuffled slices must partition the global batch"
    assert shuffled.tolist() != list(range(8))
    for res in ddp_results:
        assert torch.equal(res["restored"], res["x"])
