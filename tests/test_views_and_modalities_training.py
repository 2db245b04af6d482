"""Chapter 12's methods (CMC, AMDIM, SupCon, CLIP) through the engine: one epoch of every CPU preset
on cifar10-mini through the CLI, exact resume, the methods' own mechanics, and 2-rank DDP equal to
one process on the full batch in float64 for the methods with batch-wide losses."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from contrastive_lab import distributed
from contrastive_lab.checkpoints import load_checkpoint
from contrastive_lab.cli import main
from contrastive_lab.engine import train
from contrastive_lab.losses import nt_xent
from contrastive_lab.methods import Batch, BuildContext, build_method
from contrastive_lab.methods.amdim import resnet_maps
from contrastive_lab.presets import apply_overrides, get_preset

PRESETS = ("cmc-cifar10-cpu", "amdim-cifar10-cpu", "supcon-cifar10-cpu", "clip-cifar10-cpu")
# FP64_RELATIVE_BOUND of tests/test_scaling.py: float64 rounding moves a weight by ~1e-14 of the step,
# a wrong gather or mean moves it by the order of the step itself
FP64_RELATIVE_BOUND = 1e-9


def tiny(root: Path, **extra) -> list[str]:
    """key=value overrides that make a CPU preset take seconds (a thin ResNet-10 on 16-px views)."""
    values = dict(data_root=root, encoder="resnet10", width=0.125, image_size=16, eval_size=16, batch_size=32,
                  subset=128, epochs=1, knn_k=10, knn_every=0, figures="false", checkpoint_every=1000,
                  precision="fp32", channels_last="false")
    values.update(extra)
    return [f"{k}={v}" for k, v in values.items()]


def per_method(name: str) -> dict:
    """The options a tiny run must shrink: CMC's bank negatives (fewer than the 128 images)."""
    return {"num_negatives": 32} if name.startswith("cmc") else {}


def weights(run: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint(run / "checkpoints" / "last.pt")["method"]


@pytest.mark.parametrize("name", PRESETS)
def test_every_new_cpu_preset_trains_one_epoch_on_cifar10_mini_through_the_cli(name, cifar10_mini_root, tmp_path,
                                                                               capsys):
    out = tmp_path / name
    assert main(["train", "--preset", name, "--out", str(out), *tiny(cifar10_mini_root, subset=256, batch_size=64,
                                                                      **per_method(name))]) == 0
    printed = capsys.readouterr().out
    assert "cifar10-mini" in printed and "kNN top-1 (trained" in printed
    state = load_checkpoint(out / "checkpoints" / "last.pt")
    assert state["step"] == 4 and state["finished"]  # one epoch: 256 images / batch 64


@pytest.mark.parametrize("name", PRESETS)
def test_resume_is_exact(name, cifar10_mini_root, tmp_path):
    cfg = apply_overrides(get_preset(name), tiny(cifar10_mini_root, subset=96, epochs=2, **per_method(name)))
    straight = train(cfg, tmp_path / "a", verbose=False)
    train(cfg, tmp_path / "b", verbose=False, stop_at_step=2)
    train(cfg, tmp_path / "b", resume=True, verbose=False)
    a, b = weights(tmp_path / "a"), weights(tmp_path / "b")
    assert straight["step"] == 6 and a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), f"{name}: {key} differs after resume"


# ------------------------------------------------------------------------------------------ the methods' mechanics


def build(name: str, **changes):
    cfg = get_preset(name).replace(width=0.125, **changes)
    torch.manual_seed(0)
    return build_method(cfg, BuildContext(num_images=64, num_classes=10, steps_per_epoch=2, total_steps=4))


def test_cmc_encodes_each_channel_view_with_its_own_network_and_writes_its_banks_after_the_step():
    cmc = build("cmc-cifar10-cpu", num_negatives=16, cmc_views="L,ab,grad", graph="full")
    assert [e.conv1.in_channels for e in cmc.encoder.encoders] == [1, 2, 1]
    x, index = torch.randn(8, 3, 16, 16), torch.arange(8)
    h = cmc.encoder(x)
    assert h.shape == (8, cmc.encoder.feature_dim) and cmc.encoder.feature_dim == 3 * 64
    torch.testing.assert_close(h, torch.cat(cmc.encoder.encode_views(x), dim=1))
    before = [bank.bank.clone() for bank in cmc.banks]
    loss, logs = cmc(Batch([x], index))
    assert torch.isfinite(loss) and all(torch.equal(b0, b.bank) for b0, b in zip(before, cmc.banks))
    cmc.after_step(None)
    for b0, bank in zip(before, cmc.banks):
        assert not torch.equal(b0[:8], bank.bank[:8]) and torch.equal(b0[8:], bank.bank[8:])  # only the batch's rows


def test_amdim_reads_the_stage_maps_of_the_encoder_forward():
    amdim = build("amdim-cifar10-cpu", multiscale=True).eval()
    x = torch.randn(4, 3, 16, 16)
    l3, l4, h = resnet_maps(amdim.encoder, x)
    assert l3.shape[-1] == 4 and l4.shape[-1] == 2
    torch.testing.assert_close(h, amdim.encoder(x))
    loss, logs = amdim.train()(Batch([x, x.flip(3)], torch.arange(4)))
    assert set(logs) == {"loss", "nce_l3", "nce_l4"}
    torch.testing.assert_close(loss.detach(), logs["nce_l3"] + logs["nce_l4"])


def test_supcon_without_labels_shared_is_simclr_and_with_them_pulls_a_class_together():
    x1, x2, index = torch.randn(8, 3, 16, 16), torch.randn(8, 3, 16, 16), torch.arange(8)
    labels = torch.tensor([0, 0, 0, 0, 1, 1, 1, 1])
    none = build("supcon-cifar10-cpu", label_share=0.0).eval()
    loss, _ = none(Batch([x1, x2], index, labels))
    z1, z2 = none.head(none.encoder(torch.cat([x1, x2]))).chunk(2)
    torch.testing.assert_close(loss, nt_xent(z1, z2, none.temperature), rtol=1e-5, atol=1e-6)
    half = build("supcon-cifar10-cpu", label_share=0.5)
    assert int(half.labelled.sum()) == 32  # half of the 64 images keep their label
    seen = half.training_labels(labels, index)
    kept = half.labelled[index]
    assert torch.equal(seen[kept], labels[kept]) and len(set(seen[~kept].tolist())) == int((~kept).sum())
    with pytest.raises(ValueError, match="needs the labels"):
        half(Batch([x1, x2], index))


def test_clip_picks_one_caption_per_image_from_its_index_and_the_step():
    clip = build("clip-cifar10-cpu")
    tokens = torch.zeros(6, 5, 16, dtype=torch.long)
    tokens[..., 0], tokens[..., 2] = 2, 3
    tokens[..., 1] = torch.arange(30).view(6, 5) % 40 + 4
    index = torch.tensor([3, 9, 1, 0, 7, 2])
    first = clip.captions_of(tokens, index)
    assert torch.equal(first, clip.captions_of(tokens, index)) and first.shape == (6, 16)
    clip.after_step(type("P", (), {"step": 1})())
    assert not torch.equal(first, clip.captions_of(tokens, index))  # the next step reads other captions
    loss, logs = clip(Batch([torch.randn(6, 3, 16, 16)], index, None, {"tokens": tokens}))
    assert torch.isfinite(loss) and float(logs["logit_scale"]) == pytest.approx(1 / 0.07, rel=1e-5)
    with pytest.raises(ValueError, match="dataset=cifar10_captions"):
        clip(Batch([torch.randn(6, 3, 16, 16)], index))


# ------------------------------------------------------------------------------------------ DDP


DDP_RUNS = {  # name -> the options that make a batch-wide loss (CMC: batch negatives)
    "supcon-cifar10-cpu": {}, "clip-cifar10-cpu": {}, "amdim-cifar10-cpu": {}, "cmc-cifar10-cpu": {"negatives": "batch"},
}


def ddp_config(name: str, root: Path):
    extra = dict(subset=32, batch_size=16, max_steps=1, precision="fp64", optimizer="sgd", lr=0.5, momentum=0.0,
                 weight_decay=0.0, warmup_epochs=0.0, **DDP_RUNS[name])
    return apply_overrides(get_preset(name), tiny(root, **extra))


def _ddp_worker(rank, world_size, configs, out):
    distributed.cleanup_distributed, cleanup = (lambda: None), distributed.cleanup_distributed  # one group for all
    for name, cfg in configs.items():
        train(cfg, Path(out) / name, verbose=False)
    cleanup()


@pytest.mark.distributed
def test_two_ranks_equal_one_process_on_the_full_batch_in_float64(cifar10_mini_root, tmp_path):
    from tests._dist import run_ranks

    configs = {name: ddp_config(name, cifar10_mini_root) for name in DDP_RUNS}
    for name, cfg in configs.items():
        train(cfg, tmp_path / "single" / name, verbose=False)
    run_ranks(_ddp_worker, world_size=2, args=(configs, str(tmp_path / "ddp")), timeout=300)
    for name, cfg in configs.items():
        a, b = weights(tmp_path / "single" / name), weights(tmp_path / "ddp" / name)
        torch.manual_seed(cfg.seed)
        before = build_method(cfg, BuildContext(32, 10, 2, 1)).state_dict()
        moved = [k for k in a if a[k].is_floating_point() and not torch.equal(a[k], before[k].double())]
        assert len(moved) > 10, f"{name}: the step did not change the weights"
        for key in a:
            if a[key].is_floating_point():
                assert a[key].dtype == b[key].dtype == torch.float64, key
                step = (a[key] - before[key].double()).abs().max().item()
                diff = (b[key] - a[key]).abs().max().item()
                assert diff <= FP64_RELATIVE_BOUND * step + 1e-12, f"{name}: {key} differs by {diff:.2e} (step {step:.2e})"
            else:
                assert torch.equal(a[key], b[key]), f"{name}: {key} differs"
