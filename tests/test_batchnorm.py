"""contrastive_lab.batchnorm: split BN, shuffling BN and global BN.

Split BN is checked against per-split ``nn.BatchNorm2d`` copies, the shuffle against its inverse,
and everything that talks across ranks (the shuffle, global BN) in one real 2-process gloo run:
global BN on two ranks must equal one ``nn.BatchNorm2d`` over the full batch, gradients included.
"""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from contrastive_lab.batchnorm import (
    GlobalBatchNorm,
    SplitBatchNorm,
    batch_shuffle,
    batch_unshuffle,
    convert_to_global_batchnorm,
    convert_to_split_batchnorm,
    split_batch_norm_reference,
)
from contrastive_lab.distributed import init_distributed
from tests._rank_results import rank_results_fixture, save_rank_results

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


def _bn_inputs():
    g = torch.Generator().manual_seed(3)
    x = torch.randn(2 * 4, 3, 5, 5, generator=g, dtype=torch.float64) * 2 + 1
    c = torch.randn(2 * 4, 3, 5, 5, generator=g, dtype=torch.float64)
    return x, c


def _ddp_worker(rank: int, world: int, out_dir: str) -> None:
    """Runs on each rank: shuffling BN, then global BN; saves what the tests check to out_dir/rank{r}.pt."""
    init_distributed("gloo", timeout_s=30)
    res: dict[str, object] = {}
    # shuffling BN: a local batch of 4 rows, labelled by their global position
    x = torch.arange(4.0 * rank, 4.0 * rank + 4).view(4, 1).repeat(1, 3)
    torch.manual_seed(rank)  # different RNG states: rank 0's permutation must win
    shuffled, idx = batch_shuffle(x)
    res["x"], res["shuffled"], res["restored"] = x, shuffled, batch_unshuffle(shuffled, idx)
    # global BN: this rank's half of the batch through GlobalBatchNorm, forward and backward
    x_all, c_all = _bn_inputs()
    rows = slice(rank * 4, (rank + 1) * 4)
    bn = GlobalBatchNorm(3).double()
    with torch.no_grad():
        bn.weight.copy_(torch.tensor([1.0, 2.0, -0.5]))
        bn.bias.copy_(torch.tensor([0.1, 0.0, 0.3]))
    xl = x_all[rows].clone().requires_grad_()
    y = bn(xl)
    (y * c_all[rows]).sum().backward()  # sum over ranks of these = the single-process objective
    res["bn"] = {"y": y.detach(), "gx": xl.grad, "gw": bn.weight.grad, "gb": bn.bias.grad,
                 "rm": bn.running_mean, "rv": bn.running_var}  # fmt: skip
    save_rank_results(res, out_dir, rank)


ddp_results = rank_results_fixture(_ddp_worker, "batchnorm_ddp")


@pytest.mark.distributed
def test_batch_shuffle_then_unshuffle_is_the_exact_inverse_on_two_ranks(ddp_results):
    shuffled = torch.cat([r["shuffled"][:, 0] for r in ddp_results])
    assert sorted(shuffled.tolist()) == list(range(8)), "the shuffled slices must partition the global batch"
    assert shuffled.tolist() != list(range(8))
    for res in ddp_results:
        assert torch.equal(res["restored"], res["x"])


@pytest.mark.distributed
def test_global_batchnorm_on_two_ranks_equals_batchnorm_on_the_full_batch(ddp_results):
    x, c = _bn_inputs()
    bn = torch.nn.BatchNorm2d(3).double()
    with torch.no_grad():
        bn.weight.copy_(torch.tensor([1.0, 2.0, -0.5]))
        bn.bias.copy_(torch.tensor([0.1, 0.0, 0.3]))
    x = x.clone().requires_grad_()
    y = bn(x)
    (y * c).sum().backward()
    parts = [res["bn"] for res in ddp_results]
    torch.testing.assert_close(torch.cat([p["y"] for p in parts]), y.detach())
    torch.testing.assert_close(torch.cat([p["gx"] for p in parts]), x.grad)
    torch.testing.assert_close(parts[0]["gw"] + parts[1]["gw"], bn.weight.grad)
    torch.testing.assert_close(parts[0]["gb"] + parts[1]["gb"], bn.bias.grad)
    for p in parts:  # every rank tracks the same global running statistics
        torch.testing.assert_close(p["rm"], bn.running_mean)
        torch.testing.assert_close(p["rv"], bn.running_var)


def test_convert_to_global_batchnorm_keeps_weights_and_single_process_behaviour():
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.ReLU())
    with torch.no_grad():
        net[1].weight.uniform_()
        net[1].running_mean.uniform_()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    x = torch.randn(6, 3, 8, 8)
    ref = net(x)
    converted = convert_to_global_batchnorm(net)
    assert isinstance(converted[1], GlobalBatchNorm)
    for k, v in converted.state_dict().items():
        if k.endswith("num_batches_tracked"):
            continue
        if "running" not in k:
            assert torch.equal(v, before[k]), k
    converted[1].load_state_dict({k[2:]: v for k, v in before.items() if k.startswith("1.")})
    torch.testing.assert_close(converted(x), ref)  # not distributed: plain batch norm
