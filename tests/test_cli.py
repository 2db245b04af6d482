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
        assert f"{f.name}={getattr(Config(), f.name)!r}" in text, f.name
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


def test_train_resume_continues_the_same_run(run, capsys):
    assert main(["train", "--preset", "simclr-cifar10-cpu", "--out", str(run), "--resume", *TINY[:-3], "epochs=2",
                 "precision=fp32", "knn_k=10", "figures=false"]) == 0
    assert "resumed from" in capsys.readouterr().out


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
    from contrastive_lab.cli import load_encoder
    from contrastive_lab.data import make_synthetic
    from contrastive_lab.engine import eval_transform

    cfg, encoder = load_encoder(run / "checkpoints/last.pt")
    ds = make_synthetic(n=96, image_size=cfg.evaluation_size(), seed=cfg.seed, split="test")  # the data's own size
    with torch.no_grad():
        h = encoder(eval_transform(cfg)(ds.images[:4]))
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
