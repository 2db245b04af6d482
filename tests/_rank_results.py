"""Two-rank test runs that save one dict of results per rank, loaded back by a module fixture.

A worker computes what the tests check on each rank and ends with :func:`save_rank_results`;
``ddp_results = rank_results_fixture(worker, "name")`` in a test module gives the tests the
list of those dicts (rank order), starting the processes once per module.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from contrastive_lab.distributed import cleanup_distributed
from tests._dist import run_ranks


def save_rank_results(res: dict, out_dir: str, rank: int) -> None:
    """Save this rank's results to ``out_dir/rank{rank}.pt`` and leave the process group."""
    torch.save(res, Path(out_dir) / f"rank{rank}.pt")
    cleanup_distributed()


def rank_results_fixture(worker: Callable[..., None], name: str, world: int = 2, timeout: float = 90.0):
    """A module-scoped fixture running ``worker(rank, world, out_dir)`` on ``world`` gloo ranks."""

    @pytest.fixture(scope="module")
    def results(tmp_path_factory: pytest.TempPathFactory) -> list[dict]:
        out = tmp_path_factory.mktemp(name)
        run_ranks(worker, world_size=world, args=(str(out),), timeout=timeout)
        return [torch.load(out / f"rank{r}.pt") for r in range(world)]

    return results
