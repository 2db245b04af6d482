"""contrastive_lab.memory: the queue and the memory bank.

Every piece is checked against an independent reference: a ``collections.deque`` for the queue,
the update rule computed by hand (NumPy) for the bank, and real 2-process gloo runs for
everything that talks across ranks. The momentum encoder is tested in ``test_momentum.py``,
shuffling / split / global BN in ``test_batchnorm.py``.
"""

from __future__ import annotations

import copy
from collections import deque

import numpy as np
import pytest
import torch

from contrastive_lab.distributed import init_distributed
from contrastive_lab.memory import KeyQueue, MemoryBank
from tests._rank_results import rank_results_fixture, save_rank_results

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
    save_rank_results(res, out_dir, rank)


ddp_results = rank_results_fixture(_ddp_worker, "memory_ddp")


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
