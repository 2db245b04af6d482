"""contrastive_lab.distributed, with real gloo processes (2 ranks) where it matters.

The key claim checked here (proved in ``all_gather_with_grad``'s docstring): with a
gradient-aware all-gather, each rank's local NT-Xent (a mean over its own anchors) gives,
after DDP's averaging over ranks, exactly the gradient of the single-process loss over
the global batch. Per rank, the *input* gradient is WORLD times the single-process one.
"""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest
import torch
import torch.distributed as dist

import contrastive_lab.losses as losses
from contrastive_lab.distributed import (
    all_gather_no_grad,
    all_gather_with_grad,
    cleanup_distributed,
    get_rank,
    get_world_size,
    init_distributed,
    is_distributed,
)
from tests._dist import run_ranks

# the module of nt_xent (``contrastive_lab.losses.nt_xent`` itself is the function)
NT_XENT_MODULE = importlib.import_module("contrastive_lab.losses.ntxent")

WORLD, N_LOCAL, D_IN, D, TAU = 2, 3, 5, 4, 0.3
ENV_VARS = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


def _global_batch() -> dict[str, torch.Tensor]:
    """A fixed global batch: inputs x1, x2 (WORLD*N_LOCAL, D_IN) and a linear encoder W."""
    g = torch.Generator().manual_seed(0)
    shape = (WORLD * N_LOCAL, D_IN)
    return {
        "x1": torch.randn(shape, generator=g, dtype=torch.float64),
        "x2": torch.randn(shape, generator=g, dtype=torch.float64),
        "w": torch.randn(D_IN, D, generator=g, dtype=torch.float64),
    }


def _plain_gather_keeping_local_grad(x: torch.Tensor) -> torch.Tensor:
    """The common bug: torch.distributed.all_gather (no autograd) + local slice re-inserted."""
    parts = [torch.empty_like(x) for _ in range(get_world_size())]
    dist.all_gather(parts, x.detach().contiguous())
    parts[get_rank()] = x
    return torch.cat(parts)


def _local_step(batch: dict[str, torch.Tensor], rank: int) -> dict[str, torch.Tensor]:
    """This rank's half of the batch through the shared encoder; loss and gradients."""
    rows = slice(rank * N_LOCAL, (rank + 1) * N_LOCAL)
    w = batch["w"].clone().requires_grad_()
    z1 = (batch["x1"][rows] @ w).detach().requires_grad_()
    z2 = (batch["x2"][rows] @ w).detach().requires_grad_()
    loss = losses.nt_xent(z1, z2, TAU, gather=True)
    loss.backward()
    # Gradient w.r.t. the encoder: chain rule through z = x @ w on this rank.
    w_grad = batch["x1"][rows].T @ z1.grad + batch["x2"][rows].T @ z2.grad
    return {"loss": loss.detach(), "g1": z1.grad, "g2": z2.grad, "w_grad": w_grad}


def _worker(rank: int, world: int, out_dir: str) -> None:
    """Runs on each rank; saves everything the tests check to out_dir/rank{r}.pt."""
    res: dict[str, object] = {"init": init_distributed("gloo", timeout_s=20)}
    res["info"] = (get_rank(), get_world_size(), is_distributed())
    batch = _global_batch()
    res["good"] = _local_step(batch, rank)
    original = NT_XENT_MODULE.all_gather_with_grad
    NT_XENT_MODULE.all_gather_with_grad = _plain_gather_keeping_local_grad
    try:
        res["bad"] = _local_step(batch, rank)
    finally:
        NT_XENT_MODULE.all_gather_with_grad = original
    # all_gather_no_grad: rank r contributes rows [10r, 10r+1]; result must be in rank order.
    local = torch.tensor([[10.0 * rank], [10.0 * rank + 1]], requires_grad=True)
    res["no_grad"] = all_gather_no_grad(local)
    # all_gather_with_grad: L_r = sum(c_r * y) with c_r = (r+1) * [1, 2, 3, 4].
    x = torch.ones(2, dtype=torch.float64, requires_grad=True)
    y = all_gather_with_grad(x)
    ((rank + 1) * torch.arange(1.0, 2 * world + 1, dtype=torch.float64) * y).sum().backward()
    res["gathered"], res["x_grad"] = y.detach(), x.grad
    try:  # different shapes on the two ranks must fail with a clear message on both
        all_gather_with_grad(torch.zeros(rank + 1, 3))
    except ValueError as err:
        res["shape_error"] = str(err)
    torch.save(res, Path(out_dir) / f"rank{rank}.pt")
    cleanup_distributed()


@pytest.fixture(scope="module")
def rank_results(tmp_path_factory: pytest.TempPathFactory) -> list[dict]:
    out = tmp_path_factory.mktemp("dist")
    run_ranks(_worker, world_size=WORLD, args=(str(out),), timeout=60.0)
    return [torch.load(out / f"rank{r}.pt") for r in range(WORLD)]


@pytest.fixture(scope="module")
def single_process() -> dict[str, torch.Tensor]:
    """The same computation on one process over the whole global batch."""
    batch = _global_batch()
    w = batch["w"].clone().requires_grad_()
    z1 = (batch["x1"] @ w).detach().requires_grad_()
    z2 = (batch["x2"] @ w).detach().requires_grad_()
    loss = losses.nt_xent(z1, z2, TAU)
    loss.backward()
    w_grad = batch["x1"].T @ z1.grad + batch["x2"].T @ z2.grad
    return {"loss": loss.detach(), "g1": z1.grad, "g2": z2.grad, "w_grad": w_grad}


def _rows(rank: int) -> slice:
    return slice(rank * N_LOCAL, (rank + 1) * N_LOCAL)


@pytest.mark.distributed
def test_init_distributed_reads_torchrun_env(rank_results: list[dict]) -> None:
    for rank, res in enumerate(rank_results):
        assert res["init"] == (rank, rank, WORLD)
        assert res["info"] == (rank, WORLD, True)


@pytest.mark.distributed
def test_mean_of_rank_losses_is_single_process_loss(rank_results: list[dict], single_process: dict) -> None:
    mean_loss = torch.stack([res["good"]["loss"] for res in rank_results]).mean()
    torch.testing.assert_close(mean_loss, single_process["loss"])


@pytest.mark.distributed
def test_input_gradient_is_world_times_single_process_gradient(
    rank_results: list[dict], single_process: dict
) -> None:
    # Derivation (all_gather_with_grad docstring): rank r's input gradient is
    # d(sum_s L_s)/dz_r = WORLD * dL/dz_r with L = mean_s L_s the global loss.
    # Fit the factor by least squares, then check it is WORLD and that the scaled grads match.
    for rank, res in enumerate(rank_results):
        for key in ("g1", "g2"):
            g_rank, g_full = res["good"][key], single_process[key][_rows(rank)]
            factor = (g_rank * g_full).sum() / (g_full * g_full).sum()
            assert factor.item() == pytest.approx(WORLD, rel=1e-10)
            torch.testing.assert_close(g_rank / WORLD, g_full)


@pytest.mark.distributed
def test_ddp_averaged_encoder_gradient_is_single_process_gradient(
    rank_results: list[dict], single_process: dict
) -> None:
    ddp_grad = torch.stack([res["good"]["w_grad"] for res in rank_results]).mean(0)  # DDP all-reduce mean
    torch.testing.assert_close(ddp_grad, single_process["w_grad"])


@pytest.mark.distributed
def test_plain_all_gather_gives_the_same_loss_but_a_wrong_gradient(
    rank_results: list[dict], single_process: dict
) -> None:
    mean_loss = torch.stack([res["bad"]["loss"] for res in rank_results]).mean()
    torch.testing.assert_close(mean_loss, single_process["loss"])  # forward is identical...
    ddp_grad = torch.stack([res["bad"]["w_grad"] for res in rank_results]).mean(0)
    assert not torch.allclose(ddp_grad, single_process["w_grad"], rtol=1e-3, atol=1e-6)  # ...backward not


@pytest.mark.distributed
def test_all_gather_no_grad_concatenates_in_rank_order(rank_results: list[dict]) -> None:
    expected = torch.tensor([[0.0], [1.0], [10.0], [11.0]])
    for res in rank_results:
        torch.testing.assert_close(res["no_grad"], expected)
        assert not res["no_grad"].requires_grad


@pytest.mark.distributed
def test_all_gather_with_grad_sums_gradients_from_all_ranks(rank_results: list[dict]) -> None:
    # y = [x_0; x_1], L_r = sum((r+1) * [1,2,3,4] * y). dL_0/dy + dL_1/dy = 3 * [1,2,3,4];
    # rank r keeps its slice: rank 0 -> [3, 6], rank 1 -> [9, 12].
    expected = {0: [3.0, 6.0], 1: [9.0, 12.0]}
    for rank, res in enumerate(rank_results):
        torch.testing.assert_close(res["gathered"], torch.ones(4, dtype=torch.float64))
        torch.testing.assert_close(res["x_grad"], torch.tensor(expected[rank], dtype=torch.float64))


@pytest.mark.distributed
def test_all_gather_rejects_different_shapes_on_ranks(rank_results: list[dict]) -> None:
    for res in rank_results:
        assert "same tensor shape on every rank" in res["shape_error"]
        assert "[(1, 3), (2, 3)]" in res["shape_error"]


# ------------------------------------------------------------------ single process (no spawn)


@pytest.fixture
def no_torchrun_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for var in ENV_VARS:
        monkeypatch.delenv(var, raising=False)
    return monkeypatch


def test_not_distributed_defaults(no_torchrun_env: pytest.MonkeyPatch) -> None:
    assert init_distributed() == (0, 0, 1)
    assert (is_distributed(), get_rank(), get_world_size()) == (False, 0, 1)
    cleanup_distributed()  # no-op, must not raise


def test_gathers_are_identity_when_not_distributed() -> None:
    x = torch.randn(3, 2, requires_grad=True)
    assert all_gather_with_grad(x) is x
    y = all_gather_no_grad(x)
    torch.testing.assert_close(y, x.detach())
    assert not y.requires_grad


def test_half_configured_env_is_an_error(no_torchrun_env: pytest.MonkeyPatch) -> None:
    no_torchrun_env.setenv("RANK", "0")
    no_torchrun_env.setenv("WORLD_SIZE", "2")
    with pytest.raises(ValueError, match=r"half-configured.*\['LOCAL_RANK', 'MASTER_ADDR', 'MASTER_PORT'\]"):
        init_distributed()


def test_non_integer_env_is_an_error(no_torchrun_env: pytest.MonkeyPatch) -> None:
    for var, value in zip(ENV_VARS, ("zero", "0", "2", "127.0.0.1", "29500")):
        no_torchrun_env.setenv(var, value)
    with pytest.raises(ValueError, match="RANK='zero' must be an integer"):
        init_distributed()


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-CUDA error")
def test_nccl_without_cuda_is_an_error(no_torchrun_env: pytest.MonkeyPatch) -> None:
    for var, value in zip(ENV_VARS, ("0", "0", "1", "127.0.0.1", "29500")):
        no_torchrun_env.setenv(var, value)
    with pytest.raises(ValueError, match="'nccl' needs CUDA"):
        init_distributed("nccl")
