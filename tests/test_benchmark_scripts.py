"""The benchmark scripts' own logic (not their timings): merging parallel sweep parts."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _load(name: str):
    if str(ROOT / "benchmarks") not in sys.path:  # the scripts import their sibling sweep_parts.py
        sys.path.insert(0, str(ROOT / "benchmarks"))
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def _part(runs: dict, seed_scores: dict, seconds: float, epochs: int = 8) -> dict:
    return {"data": "cifar10-mini", "epochs": epochs, "base_config": {"width": 0.25}, "runs": runs,
            "random_init": {s: {"knn_h": v} for s, v in seed_scores.items()}, "knn_random": dict(seed_scores),
            "commands": [f"part {len(runs)}"], "sweep_seconds": seconds}


def test_ablation_parts_merge_into_one_sweep():
    abl = _load("simclr_ablations")
    a = _part({"head/linear/seed0": {"knn_h": 0.4}}, {"0": 0.31}, 100.0)
    b = _part({"composition/crop/seed0": {"knn_h": 0.35}, "composition/crop/seed1": {"knn_h": 0.36}},
              {"0": 0.31, "1": 0.30}, 250.5)
    doc = abl.merge([a, b])
    assert sorted(doc["runs"]) == ["composition/crop/seed0", "composition/crop/seed1", "head/linear/seed0"]
    assert doc["knn_random"] == {"0": 0.31, "1": 0.30}
    assert doc["sweep_seconds"] == pytest.approx(350.5)
    assert doc["commands"] == ["part 1", "part 2"] and doc["parallel_processes"] == 2
    assert a["runs"] == {"head/linear/seed0": {"knn_h": 0.4}}  # the inputs are not modified


def test_ablation_parts_with_different_settings_are_refused():
    abl = _load("simclr_ablations")
    with pytest.raises(ValueError, match="different 'epochs'"):
        abl.merge([_part({}, {}, 1.0, epochs=8), _part({}, {}, 1.0, epochs=6)])
    with pytest.raises(ValueError, match="nothing to merge"):
        abl.merge([])


def _neg_part(runs: dict, seconds: float, epochs: int = 10) -> dict:
    return {"data": "cifar10-mini", "epochs": epochs, "common": {"width": 0.25}, "smoke": False, "runs": runs,
            "command": f"part {len(runs)}", "sweep_seconds": seconds, "load_average_at_start": [1.0, 1.0, 1.0],
            "load_average_at_end": [2.0, 2.0, 2.0]}


def test_negatives_parts_merge_into_one_sweep():
    neg = _load("negatives_sweep")
    doc = neg.merge([_neg_part({"queue/K=64": {"knn_top1": 0.3}}, 10.0),
                     _neg_part({"end_to_end/B=32": {"knn_top1": 0.35}, "memory_bank/K=64": {"knn_top1": 0.2}}, 5.5)])
    assert sorted(doc["runs"]) == ["end_to_end/B=32", "memory_bank/K=64", "queue/K=64"]
    assert doc["sweep_seconds"] == pytest.approx(15.5) and doc["parallel_processes"] == 2
    assert doc["commands"] == ["part 1", "part 2"] and len(doc["load_averages"]) == 2
    with pytest.raises(ValueError, match="different 'epochs'"):
        neg.merge([_neg_part({}, 1.0, epochs=10), _neg_part({}, 1.0, epochs=3)])


def test_a_run_with_different_results_in_two_parts_is_refused_not_overwritten():
    abl = _load("simclr_ablations")
    a = _part({"head/linear/seed0": {"knn_h": 0.4}}, {}, 1.0)
    b = _part({"head/linear/seed0": {"knn_h": 0.5}}, {}, 1.0)
    with pytest.raises(ValueError, match="'head/linear/seed0' is in two parts with different results"):
        abl.merge([a, b])
    assert abl.merge([a, a])["runs"] == a["runs"]  # the same record twice is harmless


def test_collect_runs_lists_what_differs_from_the_preset(tmp_path):
    import json

    from contrastive_lab.presets import get_preset

    collect_runs = _load("collect_runs")
    preset = json.loads(get_preset("simclr-cifar10-cpu").to_json())
    run = tmp_path / "wide"
    run.mkdir()
    (run / "config.json").write_text(json.dumps({**preset, "width": 0.75, "data_root": "/somewhere"}))
    (run / "results.json").write_text(json.dumps({"step": 830, "train_seconds": 512.34,
                                                  "knn_random": 0.31468, "knn_final": 0.48672}))
    record = collect_runs.collect(run, preset)
    assert record["changes"] == {"width": 0.75}  # data_root is where the data lay, not a change
    assert (record["steps"], record["knn_final"], record["train_seconds"]) == (830, 0.4867, 512.3)
    assert "| wide | width=0.75 | 830 | 0.315 -> 0.487 |" in collect_runs.markdown([record])
    (run / "results.json").unlink()
    with pytest.raises(SystemExit, match="no results.json"):
        collect_runs.collect(run, preset)


def test_collect_runs_lists_changed_method_options_too(tmp_path):
    """config.json nests the method's options under "options": a changed option is a change, named
    as key=value overrides name it; an older flat config.json compares alike."""
    import json

    from contrastive_lab.presets import get_preset

    collect_runs = _load("collect_runs")
    preset = json.loads(get_preset("simclr-cifar10-cpu").to_json())
    assert "temperature" in preset["options"] and "temperature" not in preset  # the layout this test is about
    nested = {**preset, "batch_size": 64, "options": {**preset["options"], "temperature": 0.2}}
    assert collect_runs.changed_keys(nested, preset) == {"batch_size": 64, "temperature": 0.2}
    flat = {**{k: v for k, v in nested.items() if k != "options"}, **nested["options"]}
    assert collect_runs.changed_keys(flat, preset) == {"batch_size": 64, "temperature": 0.2}
    assert collect_runs.changed_keys(preset, preset) == {}
    run = tmp_path / "warm"
    run.mkdir()
    (run / "config.json").write_text(json.dumps(nested))
    (run / "results.json").write_text(json.dumps({"step": 10, "train_seconds": 1.0, "knn_random": 0.1,
                                                  "knn_final": 0.2}))
    record = collect_runs.collect(run, preset)
    assert "| warm | batch_size=64, temperature=0.2 | 10 | 0.100 -> 0.200 |" in collect_runs.markdown([record])


def test_time_to_accuracy_interpolates_between_evaluations_and_says_none_when_never_reached():
    tta = _load("bench_time_to_accuracy")
    curve = [{"train_s": 0.0, "knn_h": 0.30}, {"train_s": 100.0, "knn_h": 0.40}, {"train_s": 200.0, "knn_h": 0.50}]
    assert tta.time_to(curve, "knn_h", 0.45) == pytest.approx(150.0)  # halfway between 0.40 and 0.50
    assert tta.time_to(curve, "knn_h", 0.50) == pytest.approx(200.0)
    assert tta.time_to(curve, "knn_h", 0.30) == 0.0  # reached at the first evaluation
    assert tta.time_to(curve, "knn_h", 0.51) is None


def test_time_to_accuracy_watch_evaluates_at_start_and_end_and_pauses_the_clock():
    tta = _load("bench_time_to_accuracy")
    done, paused = [], []

    def steps():
        for _ in range(3):
            done.append(1)
            yield

    curve = tta.watch(steps(), lambda: {"knn_h": float(len(done))}, budget=1e9, every=1e9, paused=paused.append)
    assert [p["step"] for p in curve] == [0, 3] and [p["knn_h"] for p in curve] == [0.0, 3.0]
    assert paused == []  # no evaluation between steps when every = 1e9
    curve = tta.watch(steps(), lambda: {"knn_h": 0.0}, budget=1e9, every=0.0, paused=paused.append)
    assert [p["step"] for p in curve] == [0, 1, 2, 3, 3] and len(paused) == 3  # after each step, then the end


def test_bench_presets_covers_every_cpu_pretraining_preset_and_only_those():
    bp = _load("bench_presets")
    from contrastive_lab.presets import PRESETS

    names = bp.cpu_presets()
    assert "simclr-cifar10-cpu" in names and "dino-cifar10-cpu" in names and "byol-cifar10-cpu" in names
    assert all(n.endswith("-cpu") for n in names) and not set(bp.CLASSIFIER_PRESETS) & set(names)
    assert len(names) == sum(n.endswith("-cpu") for n in PRESETS) - len(bp.CLASSIFIER_PRESETS)
    row = {"method": "simclr", "precision": "float32", "batch_size": 128, "views_per_image": 2,
           "bound_img_per_s": 250.0, "full_img_per_s": 240.0, "views_ms": 4.0, "full_over_bound": 0.96}
    assert "**0.960**" in bp.table({"simclr-cifar10-cpu": row})


def test_bench_utilisation_folds_every_batchnorm_into_its_convolution_without_changing_the_output():
    import torch

    from contrastive_lab.encoders import build_encoder

    util = _load("bench_utilisation")
    torch.manual_seed(0)
    encoder = build_encoder("resnet10", width=0.25).double()
    for bn in (m for m in encoder.modules() if isinstance(m, torch.nn.BatchNorm2d)):  # non-trivial statistics
        bn.running_mean.uniform_(-0.5, 0.5), bn.running_var.uniform_(0.5, 2.0), bn.weight.data.uniform_(0.5, 1.5)
    encoder.eval()
    x = torch.randn(4, 3, 24, 24, dtype=torch.float64)
    expected = encoder(x)
    folded = util.fold_bn_(encoder)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules())
    torch.testing.assert_close(folded(x), expected, rtol=1e-10, atol=1e-10)
