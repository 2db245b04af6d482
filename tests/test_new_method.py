"""A new method is one file: this test file defines a toy method, its options and a preset, registers
them, and trains and resumes it through the engine and the CLI without touching the package.

The toy: a linear encoder on the flattened image, a linear head, and an "alignment plus uniformity"
loss (Wang & Isola 2020, Eq. 4-5) on the two views, with a buffer that counts after_step calls
(what a queue or an EMA target would be), so resume has state to restore.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from contrastive_lab.checkpoints import load_checkpoint
from contrastive_lab.cli import main
from contrastive_lab.config import Config, preset
from contrastive_lab.engine import train
from contrastive_lab.losses import alignment, uniformity
from contrastive_lab.methods import Batch, BuildContext, Progress, register_method


@dataclass
class ToyOptions:
    """The toy's own settings."""

    dim: int = 8  # size of h
    weight: float = 1.0  # uniformity weight

    def validate(self, cfg: Config) -> None:
        if self.dim < 1:
            raise ValueError(f"dim must be >= 1, got {self.dim}")


class Flatten(nn.Module):
    def __init__(self, side: int, dim: int):
        super().__init__()
        self.linear, self.feature_dim = nn.Linear(3 * side * side, dim), dim

    def forward(self, x):
        return self.linear(x.flatten(1))


class Toy(nn.Module):
    log_keys = ("steps_seen",)

    def __init__(self, side: int, opts: ToyOptions):
        super().__init__()
        self.encoder = Flatten(side, opts.dim)
        self.head = nn.Linear(opts.dim, 4)
        self.weight = opts.weight
        self.register_buffer("steps_seen", torch.zeros((), dtype=torch.long))

    def forward(self, batch: Batch):
        z1, z2 = (self.head(self.encoder(v)) for v in batch.views)
        z1, z2 = nn.functional.normalize(z1, dim=1), nn.functional.normalize(z2, dim=1)
        loss = alignment(z1, z2) + self.weight * uniformity(torch.cat([z1, z2]))
        return loss, {"loss": loss.detach(), "steps_seen": self.steps_seen.float()}

    def after_step(self, progress: Progress) -> None:
        self.steps_seen += 1


def build_toy(cfg: Config, ctx: BuildContext) -> Toy:
    return Toy(cfg.image_size, cfg.options)


register_method("toy_test", ToyOptions, build_toy, "a toy method registered by tests/test_new_method.py")


@preset("toy-test-synthetic")
def toy_preset() -> Config:
    """The toy on synthetic data, for tests."""
    return Config(method="toy_test", dataset="synthetic", synthetic_size=64, image_size=12, batch_size=16,
                  epochs=2, optimizer="sgd", lr=0.1, warmup_epochs=0.0, precision="fp32", knn_k=5,
                  figures=False, options=ToyOptions(dim=8))


def test_a_method_registered_from_a_test_file_trains_and_resumes_through_the_engine(tmp_path):
    cfg = toy_preset().replace(weight=0.5)  # the toy's option, by name
    straight = train(cfg, tmp_path / "straight", verbose=False)
    assert straight["step"] == 8 and 0.0 <= straight["knn_final"] <= 1.0 and "knn_final_z" in straight
    train(cfg, tmp_path / "resumed", verbose=False, stop_at_step=3)
    train(cfg, tmp_path / "resumed", resume=True, verbose=False)
    a = load_checkpoint(tmp_path / "straight/checkpoints/last.pt")["method"]
    b = load_checkpoint(tmp_path / "resumed/checkpoints/last.pt")["method"]
    assert int(a["steps_seen"]) == 8 and all(torch.equal(a[k], b[k]) for k in a)


def test_a_registered_method_trains_through_the_cli_with_its_options(tmp_path, capsys):
    out = tmp_path / "cli"
    assert main(["train", "--preset", "toy-test-synthetic", "--out", str(out), "dim=6", "--stop-at-step", "2"]) == 0
    assert main(["train", "--preset", "toy-test-synthetic", "--out", str(out), "dim=6", "--resume"]) == 0
    state = load_checkpoint(out / "checkpoints/last.pt")
    assert state["config"]["options"] == {"dim": 6, "weight": 1.0} and int(state["method"]["steps_seen"]) == 8
    assert main(["train", "--preset", "toy-test-synthetic", "--out", str(tmp_path / "x"), "queue_size=8"]) == 2
    assert "unknown config key 'queue_size'; valid keys:" in capsys.readouterr().err  # not a toy option
    assert main(["presets"]) == 0 and "toy-test-synthetic" in capsys.readouterr().out
