"""benchmarks/one_budget.py: the per-method summary over seeds (its logic, not its timings), and that
an unknown method is refused before anything trains."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _bench():
    spec = importlib.util.spec_from_file_location("one_budget", ROOT / "benchmarks" / "one_budget.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_summary_averages_each_method_over_its_seeds_in_the_table_order():
    bench = _bench()
    rows = [{"method": "byol", "seed": 0, "steps": 10, "knn_top1": 0.30, "linear_top1": 0.40},
            {"method": "simclr", "seed": 0, "steps": 20, "knn_top1": 0.35, "linear_top1": 0.42},
            {"method": "simclr", "seed": 1, "steps": 22, "knn_top1": 0.39, "linear_top1": 0.38}]
    table = bench.summary(rows)
    assert [r["method"] for r in table] == ["simclr", "byol"]  # METHODS order, methods without runs left out
    simclr = table[0]
    assert simclr["seeds"] == 2 and simclr["steps"] == 21
    assert simclr["knn_mean"] == pytest.approx(0.37) and simclr["knn_range"] == [0.35, 0.39]
    assert simclr["linear_mean"] == pytest.approx(0.40) and simclr["linear_range"] == [0.38, 0.42]


def test_an_unknown_method_is_refused_with_the_valid_names(tmp_path, capsys):
    with pytest.raises(SystemExit):
        _bench().main(["--methods", "simclr,swav", "--out", str(tmp_path / "x.json")])
    err = capsys.readouterr().err
    assert "swav" in err and "moco-v2" in err and not (tmp_path / "x.json").exists()
