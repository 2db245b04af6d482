"""Shared pytest fixtures (kept small and general: only what several test files need)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def cifar10_mini_root() -> Path:
    """Data root holding the real CIFAR-10 subset "cifar10-mini" (``cifar-10-batches-py/`` inside).

    Looked up in ``$CONTRASTIVE_LAB_DATA`` (CI sets it), then ``<repo>/../shared/data/cifar10-mini``.
    The data is read-only and never copied into the repository; tests skip when it is absent.
    """
    candidates = [REPO.parent / "shared" / "data" / "cifar10-mini"]
    env = os.environ.get("CONTRASTIVE_LAB_DATA", "").strip()
    if env:
        candidates.insert(0, Path(env).expanduser())
    for root in candidates:
        if (root / "cifar-10-batches-py" / "batches.meta").is_file():
            return root
    pytest.skip(
        "cifar10-mini not found: no cifar-10-batches-py/ in "
        + " or ".join(map(str, candidates))
        + "; set CONTRASTIVE_LAB_DATA to the folder that contains it"
    )
