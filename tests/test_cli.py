"""The command line is a public contract: every verb is exercised here."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import fields

import numpy as np
import pytest
import torch

from contrastive_lab.cli import build_parser, main
from contrastive_lab.config import options_type
from contrastive_lab.methods import METHODS
from contrastive_lab.presets import Config

TINY = [
    "dataset=synthetic", "synthetic_size=96", "image_size=16", "encoder=resnet10", "width=0.125",
    "batch_size=32", "epochs=1", "precision=fp32", "knn_k=10", "figures=false",
]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("cli") / "run"
    assert main(["train", "--preset", "simclr-cifar10-cpu", "--out", str(out), *TINY]) == 0
    return out


def help_text(verb: str, capsys) -> str:
    with pytest.raises(SystemExit) as exit_info:
        build_parser().parse_args([verb, "--help"])
    assert exit_info.value.code == 0
    return capsys.readouterr().out


def test_train_help_lists_every_config_key_with_its_default(capsys):
    text = help_text("train", capsys)
    for f in fields(Config):
        if f.name != "options":  # the method's own keys, listed per method below
            assert f"{f.name}={getattr(Config(), f.name)!r}" in text, f.name
    for method in METHODS:
        kind = options_type(method)
        assert f"({kind.__name__}):" in text, method
        for f in fields(kind):
            assert f"{f.name}={getattr(kind(), f.name)!r}" in text, (method, f.name)
    for option in ["--preset", "--out", "--resume", "simclr-cifar10-cpu"]:
        assert option in text
    # each key's one-line documentation (its comment in presets.Config) follows its default
    assert "eval_size=0  (side of the images the kNN/linear evaluation encodes" in text
    assert "temperature=0.5  (SimCLR Table 5" in text


@pytest.mark.parametrize("verb, options", [
    ("eval", ["--checkpoint", "--protocol", "(default: knn)", "--fraction", "(default: 0.1)"]),
    ("embed", ["--checkpoint", "--dataset", "--split", "(default: test)", "--out"]),
])
def test_eval_and_embed_help_show_options_with_defaults(verb, options, capsys):
    text = " ".join(help_text(verb, capsys).split())
    for option in options:
        assert option in text


def test_train_writes_the_run_folder(run):
    assert json.loads((run / "config.json").read_text())["dataset"] == "synthetic"
    assert (run / "checkpoints/last.pt").is_file() and (run / "metrics.csv").is_file()
    results = json.loads((run / "results.json").read_text())
    assert 0.0 <= results["knn_random"] <= 1.0 and 0.0 <= results["knn_final"] <= 1.0


def test_train_resume_of_a_finished_run_changes_nothing_and_a_changed_run_is_refused(run, capsys):
    before = {p: p.read_bytes() for p in [run / "metrics.csv", run / "results.json", run / "checkpoints/last.pt"]}
    for _ in range(2):  # resuming a finished run twice: no second final kNN row, no rewritten files
        assert main(["train", "--preset", "simclr-cifar10-cpu", "--out", str(run), "--resume", *TINY]) == 0
        assert "is finished" in capsys.readouterr().out
    assert all(path.read_bytes() == data for path, data in before.items())
    # a key that defines the run may not change on resume; the message names both values
    assert main(["train", "--preset", "simclr-cifar10-cpu", "--out", str(run), "--resume", *TINY[:-4],
                 "epochs=2", "temperature=0.2", "precision=fp32", "knn_k=10", "figures=false"]) == 2
    err = capsys.readouterr().err
    assert "epochs: 1 in the run, 2 asked" in err and "temperature: 0.1 in the run, 0.2 asked" in err
    assert "keys that may change on resume: num_workers, knn_every" in err


@pytest.mark.parametrize("protocol", ["knn", "linear", "finetune"])
def test_eval_protocols_print_and_save(run, protocol, tmp_path, capsys):
    out = tmp_path / f"{protocol}.json"
    extra = ["--epochs", "1"] if protocol != "knn" else []
    assert main(["eval", "--checkpoint", str(run / "checkpoints/last.pt"), "--protocol", protocol,
                 "--out", str(out), *extra]) == 0
    assert f"{protocol} top-1" in capsys.readouterr().out
    result = json.loads(out.read_text())
    assert result["protocol"] == protocol and 0.0 <= result["top1"] <= 1.0
    if protocol == "knn":  # also on the linear head's z, as the run's own monitor reported it
        final = json.loads((run / "results.json").read_text())
        assert result["top1"] == pytest.approx(final["knn_final"])
        assert result["top1_z"] == pytest.approx(final["knn_final_z"])


def test_embed_writes_float32_features_and_labels(run, tmp_path):
    out = tmp_path / "feats.npz"
    assert main(["embed", "--checkpoint", str(run / "checkpoints/last.pt"), "--dataset", "synthetic",
                 "--split", "test", "--out", str(out)]) == 0
    data = np.load(out)
    assert data["features"].dtype == np.float32 and data["labels"].dtype == np.int64
    assert data["features"].shape[0] == data["labels"].shape[0] == 96
    # the features are the encoder's h: recompute one row independently
    from contrastive_lab.data import make_synthetic
    from contrastive_lab.engine import config_eval_transform
    from contrastive_lab.methods import load_method

    cfg, method = load_method(run / "checkpoints/last.pt")
    ds = make_synthetic(n=96, image_size=cfg.evaluation_size(), seed=cfg.seed, split="test")  # the data's own size
    with torch.no_grad():
        h = method.encoder(config_eval_transform(cfg)(ds.images[:4]))
    np.testing.assert_allclose(data["features"][:4], h.numpy(), rtol=1e-2, atol=1e-2)


def test_bad_override_and_bad_checkpoint_give_clear_errors(tmp_path, capsys):
    assert main(["train", "--preset", "simclr-cifar10-cpu", "--out", str(tmp_path / "x"), "epoch=1"]) == 2
    assert "unknown config key 'epoch'; valid keys:" in capsys.readouterr().err
    assert main(["train", "--preset", "simclr-cifar10-cpu", "--out", str(tmp_path / "x"), "epochs"]) == 2
    assert "must look like key=value" in capsys.readouterr().err
    assert main(["eval", "--checkpoint", str(tmp_path / "missing.pt")]) == 2
    assert "no checkpoint at" in capsys.readouterr().err


def test_module_entry_point_runs():
    out = subprocess.run([sys.executable, "-m", "contrastive_lab", "presets"], capture_output=True, text=True)
    assert out.returncode == 0 and "simclr-cifar10-cpu" in out.stdout
