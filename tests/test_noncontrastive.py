"""The methods without negatives (chapter 11): BYOL, SimSiam, DINO, Barlow Twins.

Each loss against its loop twin in float64, gradients included; no gradient into a target or teacher;
the EMA updates, DINO's centre and the momentum and teacher-temperature schedules against their
formulas at the first, middle and last step; the collapse metrics on batches whose values are known;
SimSiam's fixed predictor lr through the engine; 2 gloo ranks equal to 1 process in float64 for every
method; resume equal to an uninterrupted run (torch.equal); every CPU preset one epoch on cifar10-mini
through the CLI, and every ImageNet preset a few steps under torchrun on a tiny ImageFolder.
"""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path

import pytest
import torch

from contrastive_lab import cli
from contrastive_lab import distributed as dist_utils
from contrastive_lab.checkpoints import load_checkpoint
from contrastive_lab.collapse import (
    RANKME_EPS,
    effective_rank,
    effective_rank_reference,
    normalized_std,
    normalized_std_reference,
)
from contrastive_lab.engine import open_run, read_metrics, run_steps, train
from contrastive_lab.evaluate import feature_collapse
from contrastive_lab.losses import (
    barlow_twins_loss,
    barlow_twins_loss_reference,
    byol_loss,
    byol_loss_reference,
    dino_loss,
    dino_loss_reference,
    negative_cosine,
    simsiam_loss,
    simsiam_loss_reference,
)
from contrastive_lab.methods import Batch, Progress, build_method
from contrastive_lab.methods.dino import teacher_temperature
from contrastive_lab.momentum import ema_momentum
from contrastive_lab.optim import build_lr_schedule, build_optimizer, param_groups
from contrastive_lab.presets import apply_overrides, get_preset
from tests._dist import run_ranks
from tests.test_scaling import assert_states_match_in_fp64, rank_states, run_plan, tiny, write_imagefolder

METHODS = ("byol", "simsiam", "dino", "barlow")
# the smallest heads of each method, for runs of a second or two
SMALL = {
    "byol": dict(hidden_dim=32, proj_dim=16, predictor_hidden_dim=32),
    "simsiam": dict(hidden_dim=32, proj_dim=16, predictor_hidden_dim=8),
    "dino": dict(hidden_dim=32, bottleneck_dim=16, out_dim=64, local_crops=2, local_size=8, freeze_last_layer_epochs=0,
                 warmup_teacher_epochs=2),
    "barlow": dict(hidden_dim=32, proj_dim=16),
}


def tiny_config(method: str, **changes):
    """The method's CPU preset shrunk to synthetic data and a very thin ResNet-10."""
    base = dict(dataset="synthetic", synthetic_size=64, image_size=16, eval_size=0, width=0.125, batch_size=16,
                epochs=2, warmup_epochs=0.0, precision="fp32", knn_every=0, knn_k=10, checkpoint_every=1000,
                figures=False, time_budget_s=0.0, **SMALL[method])
    base.update(changes)
    return get_preset(f"{method}-cifar10-cpu").replace(**base)


def _grads(fn, *xs):
    xs = [x.detach().clone().requires_grad_(True) for x in xs]
    out = fn(*xs)
    out.backward()
    return out.detach(), [x.grad for x in xs]


def _assert_same_with_grads(fast, reference, *xs):
    a, ga = _grads(fast, *xs)
    b, gb = _grads(reference, *xs)
    torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    for x, y in zip(ga, gb):
        if x is None or y is None:
            assert x is None and y is None
        else:
            torch.testing.assert_close(x, y, rtol=1e-10, atol=1e-12)


# ----------------------------------------------------------------------------------------- losses


def test_byol_loss_equals_its_reference_and_is_2_minus_2_cos():
    g = torch.Generator().manual_seed(0)
    p, z = torch.randn(6, 5, generator=g, dtype=torch.float64), torch.randn(6, 5, generator=g, dtype=torch.float64)
    _assert_same_with_grads(byol_loss, byol_loss_reference, p, z)
    cos = torch.nn.functional.cosine_similarity(p, z)
    torch.testing.assert_close(byol_loss(p, z), (2 - 2 * cos).mean())
    assert byol_loss(p, 3 * p).item() == pytest.approx(0.0, abs=1e-12)  # same direction, any length


@pytest.mark.parametrize("stop_gradient", [True, False])
def test_simsiam_loss_equals_its_reference_and_stops_the_gradient(stop_gradient):
    g = torch.Generator().manual_seed(1)
    xs = [torch.randn(5, 4, generator=g, dtype=torch.float64) for _ in range(4)]
    _assert_same_with_grads(lambda *a: simsiam_loss(*a, stop_gradient=stop_gradient),
                            lambda *a: simsiam_loss_reference(*a, stop_gradient=stop_gradient), *xs)
    _, (gp1, gp2, gz1, gz2) = _grads(lambda *a: simsiam_loss(*a, stop_gradient=stop_gradient), *xs)
    assert gp1.abs().sum() > 0 and gp2.abs().sum() > 0
    assert (gz1 is None and gz2 is None) == stop_gradient  # the target side gets no gradient at all
    p = xs[0].clone().requires_grad_(True)
    assert negative_cosine(p, p, stop_gradient=True).item() == pytest.approx(-1.0)


def test_dino_loss_equals_its_reference_and_teacher_gets_no_gradient():
    g = torch.Generator().manual_seed(2)
    student = torch.randn(4, 3, 7, generator=g, dtype=torch.float64)  # 2 global + 2 local views
    teacher = torch.randn(2, 3, 7, generator=g, dtype=torch.float64)
    center = torch.randn(7, generator=g, dtype=torch.float64)
    fast = lambda s, t: dino_loss(s, t, center, 0.1, 0.04)  # noqa: E731
    slow = lambda s, t: dino_loss_reference(s, t, center, 0.1, 0.04)  # noqa: E731
    _assert_same_with_grads(fast, slow, student, teacher)
    _, (g_s, g_t) = _grads(fast, student, teacher)
    assert g_s.abs().sum() > 0 and g_t is None
    # 2 x 4 pairs minus the 2 where a view meets itself: 6 terms; a single pair reproduces one cross-entropy
    one = dino_loss(student[:2], teacher[:1], center, 0.1, 0.04)
    p_t = torch.softmax((teacher[0] - center) / 0.04, dim=-1)
    torch.testing.assert_close(one, -(p_t * torch.log_softmax(student[1] / 0.1, -1)).sum(-1).mean())
    with pytest.raises(ValueError, match="center must have K = 7"):
        dino_loss(student, teacher, center[:3])


def test_barlow_twins_loss_equals_its_reference_and_the_identity_is_its_minimum():
    g = torch.Generator().manual_seed(3)
    z1, z2 = torch.randn(8, 4, generator=g, dtype=torch.float64), torch.randn(8, 4, generator=g, dtype=torch.float64)
    for lambd in (5.1e-3, 0.0, 0.5):
        _assert_same_with_grads(lambda a, b: barlow_twins_loss(a, b, lambd, gather=False),  # noqa: B023
                                lambda a, b: barlow_twins_loss_reference(a, b, lambd), z1, z2)  # noqa: B023
    # two identical whitened views (mean 0, covariance I): C = I, the minimum 0 (up to BN's eps)
    x = torch.randn(64, 4, generator=g, dtype=torch.float64)
    x = x - x.mean(0)
    white = x @ torch.linalg.inv(torch.linalg.cholesky(x.T @ x / 64)).T
    assert barlow_twins_loss(white, white, eps=1e-12, gather=False).item() == pytest.approx(0.0, abs=1e-9)
    assert barlow_twins_loss(white, white, lambd=0.0, gather=False).item() == pytest.approx(0.0, abs=1e-6)


# ----------------------------------------------------------------------------------------- collapse


def test_collapse_metrics_on_a_collapsed_and_an_isotropic_batch():
    g = torch.Generator().manual_seed(4)
    n, d = 4096, 64
    collapsed = torch.randn(1, d, generator=g, dtype=torch.float64).expand(n, d) * torch.rand(n, 1, generator=g,
                                                                                             dtype=torch.float64)
    assert normalized_std(collapsed).item() == pytest.approx(0.0, abs=1e-12)  # every row on one ray
    # one non-zero singular value: p = (1 + eps, eps, ..., eps), so RankMe's eps (Eq. 1) alone lifts the
    # rank above 1 by exp(-(1 + eps) log(1 + eps) - (d - 1) eps log eps) - 1 = 1.0e-4 at d = 64
    eps = RANKME_EPS
    expected = math.exp(-(1 + eps) * math.log1p(eps) - (d - 1) * eps * math.log(eps))
    assert effective_rank(collapsed).item() == pytest.approx(expected, rel=1e-9)
    iso = torch.randn(n, d, generator=g, dtype=torch.float64)
    # std: each coordinate of a uniform unit vector has variance 1/d; the mean over d dims of the sample
    # std has relative sd 1/sqrt(2 d N) (Var s_j^2 ~ 2/(d^2 N)): 0.0011 here, so 6 sd = 0.7 %
    assert normalized_std(iso).item() == pytest.approx(d**-0.5, rel=6 / math.sqrt(2 * d * n))
    # rank: singular values sqrt(N)(1 +- sqrt(d/N)) (Marchenko-Pastur), relative spread^2 ~ d/(4N), so
    # the entropy is log d - d/(8N) to second order: d exp(-d/(8N)) = 63.88 here; third order < 0.1 %
    expected = d * math.exp(-d / (8 * n))
    assert effective_rank(iso).item() == pytest.approx(expected, rel=1e-3)
    # rows spread isotropically in a k-dimensional subspace: rank ~ k
    k = 5
    sub = torch.randn(n, k, generator=g, dtype=torch.float64) @ torch.linalg.qr(
        torch.randn(d, k, generator=g, dtype=torch.float64))[0].T
    assert effective_rank(sub).item() == pytest.approx(k * math.exp(-k / (8 * n)), rel=1e-3)
    for z in (iso[:50], sub[:50]):
        assert normalized_std(z).item() == pytest.approx(normalized_std_reference(z), rel=1e-12)
        assert effective_rank(z).item() == pytest.approx(effective_rank_reference(z), rel=1e-12)
    with pytest.raises(ValueError, match="at least 2 rows"):
        normalized_std(iso[:1])


def test_feature_collapse_of_an_encoder_on_images():
    cfg = tiny_config("simsiam")
    method = build_method(cfg)
    images = torch.randint(0, 256, (40, 3, 16, 16), dtype=torch.uint8)
    report = feature_collapse(method.encoder, images, method.head, autocast=False)
    assert set(report) == {"h", "z"} and report["z"]["dim"] == 16
    assert 0 < report["h"]["std"] <= 1 and 1 <= report["h"]["rank"] <= report["h"]["dim"]
    assert report["z"]["std_isotropic"] == pytest.approx(16**-0.5)


# ----------------------------------------------------------------------------------------- schedules, EMA


def test_momentum_and_teacher_temperature_schedules_at_first_middle_last_step():
    k = 100  # BYOL Sec. 3.2: tau_k = 1 - (1 - tau_base)(cos(pi k/K) + 1)/2
    assert ema_momentum(0, k, 0.996, "cosine") == pytest.approx(0.996)
    assert ema_momentum(50, k, 0.996, "cosine") == pytest.approx(0.998)
    assert ema_momentum(k, k, 0.996, "cosine") == pytest.approx(1.0)
    assert ema_momentum(k - 1, k, 0.996, "cosine") == pytest.approx(1 - 0.002 * (math.cos(math.pi * 0.99) + 1))
    assert ema_momentum(7, k, 0.9, "constant") == 0.9
    # DINO: np.linspace(0.04, 0.07, 30) over the first 30 epochs, then 0.07
    assert teacher_temperature(0, 30, 0.04, 0.07) == pytest.approx(0.04)
    assert teacher_temperature(29, 30, 0.04, 0.07) == pytest.approx(0.07)
    assert teacher_temperature(14, 29, 0.04, 0.07) == pytest.approx(0.055)  # the middle of 29 epochs
    assert teacher_temperature(80, 30, 0.04, 0.07) == 0.07 == teacher_temperature(0, 0, 0.04, 0.07)
    with pytest.raises(ValueError, match="ema_schedule"):
        ema_momentum(0, k, 0.9, "linear")


def _perturb(module: torch.nn.Module, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=g))


@pytest.mark.parametrize("method", ["byol", "dino"])
def test_ema_update_equals_the_formula_with_the_scheduled_momentum(method):
    cfg = tiny_config(method, max_steps=10)
    torch.manual_seed(0)
    model = build_method(cfg).double()  # float64: the update and the formula agree to rounding (1e-16)
    _perturb(model.encoder, 1)  # online != target
    pairs = [("encoder", "target_encoder"), ("head", "target_head")] if method == "byol" else [
        ("encoder", "teacher_encoder"), ("head", "teacher_head"), ("prototypes", "teacher_prototypes")]
    for step, total in ((1, 10), (5, 10), (10, 10)):  # first, middle and last update
        before = {t: copy.deepcopy(getattr(model, t).state_dict()) for _, t in pairs}
        model.after_step(Progress(step=step, total_steps=total, steps_per_epoch=4))
        m = ema_momentum(step - 1, total, cfg.options.momentum_ema, "cosine")
        for online, target in pairs:
            source = dict(getattr(model, online).named_parameters())
            for name, p in getattr(model, target).named_parameters():
                torch.testing.assert_close(p, m * before[target][name] + (1 - m) * source[name], rtol=0, atol=1e-14)
        assert int(model.step) == step
    assert m == ema_momentum(9, 10, cfg.options.momentum_ema, "cosine")


def test_dino_centre_is_an_ema_of_the_teacher_batch_means_and_temperature_follows_epochs():
    cfg = tiny_config("dino")
    torch.manual_seed(0)
    model = build_method(cfg).train()
    model.center.fill_(0.5)
    g = torch.Generator().manual_seed(5)
    batch = Batch([torch.randn(4, 3, 16, 16, generator=g) for _ in range(2)] + [torch.randn(4, 3, 8, 8, generator=g)
                                                                              for _ in range(2)], torch.arange(4))
    teacher = model.teacher(batch.views[:2])
    model(batch)
    model.after_step(Progress(1, 8, 4))
    torch.testing.assert_close(model.center, 0.9 * 0.5 + 0.1 * teacher.flatten(0, 1).mean(0))
    temps = []
    for step in (0, 4, 8):  # epochs 0, 1, 2 with 4 steps per epoch and a 2-epoch warmup
        model.step.fill_(step)
        temps.append(model.current_teacher_temperature())
    assert temps == pytest.approx([0.04, 0.07, 0.07])


def test_no_gradient_reaches_the_target_or_the_teacher_and_stop_gradient_holds_in_simsiam():
    g = torch.Generator().manual_seed(6)
    for method in METHODS:
        torch.manual_seed(0)
        model = build_method(tiny_config(method)).train()
        views = [torch.randn(8, 3, 16, 16, generator=g) for _ in range(2)]
        views += [torch.randn(8, 3, 8, 8, generator=g) for _ in range(len(getattr(model, "view_recipes", [])) - 2)]
        loss, logs = model(Batch(views, torch.arange(8)))
        loss.backward()
        frozen = [n for n, p in model.named_parameters() if n.startswith(("target_", "teacher_"))]
        assert bool(frozen) == (method in ("byol", "dino")), method
        assert all(dict(model.named_parameters())[n].grad is None for n in frozen), method
        assert all(p.grad is not None for n, p in model.named_parameters() if p.requires_grad), method
        assert {"z_std", "z_rank"} <= set(logs) and set(model.log_keys) <= set(logs), method
    # SimSiam's gradient equals the loss with the targets detached by hand
    torch.manual_seed(0)
    model = build_method(tiny_config("simsiam")).train()
    twin = copy.deepcopy(model)
    views = [torch.randn(8, 3, 16, 16, generator=g) for _ in range(2)]
    model(Batch(views, torch.arange(8)))[0].backward()
    (z1, p1), (z2, p2) = twin.branch(views[0]), twin.branch(views[1])
    manual = -0.5 * (torch.nn.functional.cosine_similarity(p1, z2.detach()).mean()
                     + torch.nn.functional.cosine_similarity(p2, z1.detach()).mean())
    manual.backward()
    for (name, a), b in zip(model.named_parameters(), twin.parameters()):
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-4, atol=1e-6, msg=name)


# ----------------------------------------------------------------------------------------- fixed predictor lr


def test_fixed_lr_groups_keep_their_base_lr_while_the_rest_follows_the_schedule():
    model = torch.nn.ModuleDict({"encoder": torch.nn.Linear(3, 3), "predictor": torch.nn.Linear(3, 3)})
    groups = param_groups(model, 1e-4, fixed_lr=("predictor.",))
    assert [(g["fixed_lr"], g["lars_exclude"], len(g["params"])) for g in groups] == [
        (False, False, 1), (False, True, 1), (True, False, 1), (True, True, 1)]
    opt = build_optimizer("sgd", model, lr=0.1, weight_decay=1e-4, fixed_lr=("predictor.",))
    sched = build_lr_schedule(opt, "cosine", total_steps=10, warmup_steps=2)
    lrs = []
    for _ in range(10):
        lrs.append([g["lr"] for g in opt.param_groups])
        opt.step()
        sched.step()
    assert [lr[2] for lr in lrs] == [lr[3] for lr in lrs] == [0.1] * 10
    assert lrs[0][0] == pytest.approx(0.05) and lrs[5][0] < 0.1 and lrs[9][1] < 0.01
    sched.resize(20)  # fit_to_budget resizes only the scheduled groups
    with pytest.raises(ValueError, match=r"fixed_lr names \['predictr.'\]"):
        param_groups(model, 1e-4, fixed_lr=("predictr.",))


def test_simsiam_trains_its_predictor_at_the_fixed_lr_through_the_engine():
    run = open_run(tiny_config("simsiam", epochs=1, base_lr=0.5), None, verbose=False)
    first = [(g["fixed_lr"], g["lr"]) for g in run.optimizer.param_groups]
    run_steps(run, 3)
    last = [(g["fixed_lr"], g["lr"]) for g in run.optimizer.param_groups]
    assert run.method.fixed_lr_params == ("predictor.",)
    predictor = {id(p) for p in run.method.predictor.parameters()}
    assert {id(p) for g in run.optimizer.param_groups if g["fixed_lr"] for p in g["params"]} == predictor
    assert [lr for fixed, lr in last if fixed] == [lr for fixed, lr in first if fixed] == [pytest.approx(0.5 * 16 / 256)] * 2
    assert all(b < a for (fa, a), (_, b) in zip(first, last) if not fa)  # the cosine decays the rest


# ----------------------------------------------------------------------------------------- resume, DDP


@pytest.mark.parametrize("method", METHODS)
def test_resume_equals_an_uninterrupted_run_bit_for_bit(method, tmp_path):
    cfg = tiny_config(method)  # 4 steps per epoch, 8 in all; DINO's temperature changes with the epoch
    train(cfg, tmp_path / "straight", verbose=False)
    train(cfg, tmp_path / "resumed", verbose=False, stop_at_step=3)
    train(cfg, tmp_path / "resumed", resume=True, verbose=False)
    a = load_checkpoint(tmp_path / "straight/checkpoints/last.pt")
    b = load_checkpoint(tmp_path / "resumed/checkpoints/last.pt")
    assert a["step"] == b["step"] == 8
    assert a["method"].keys() == b["method"].keys()
    for key in a["method"]:
        assert torch.equal(a["method"][key], b["method"][key]), f"{method}: {key} differs after resume"
    if method == "dino":
        assert not torch.equal(a["method"]["center"], torch.zeros_like(a["method"]["center"]))


def _ddp_config(method: str):
    return tiny_config(method, precision="fp64", max_steps=2, epochs=1, batch_size=16, optimizer="sgd", lr=0.2,
                       weight_decay=1e-4, grad_clip=0.0)


def _ddp_worker(rank, world, out):
    cleanup = dist_utils.cleanup_distributed
    dist_utils.cleanup_distributed = lambda: None  # keep the process group for the next method's run
    for method in METHODS:
        train(_ddp_config(method), Path(out) / method, verbose=False)
    cleanup()


@pytest.mark.distributed
def test_every_method_on_two_gloo_ranks_equals_one_process_in_float64(tmp_path):
    """Global BN per view, DINO's centre and Barlow Twins' cross-correlation over ranks: 2 steps on 2
    ranks == 2 steps of 1 process on the full batch (tests/test_scaling.py's float64 bound)."""
    run_ranks(_ddp_worker, world_size=2, args=(str(tmp_path / "ddp"),), timeout=180)
    for method in METHODS:
        cfg = _ddp_config(method)
        train(cfg, tmp_path / "single" / method, verbose=False)
        single = load_checkpoint(tmp_path / "single" / method / "checkpoints/last.pt")["method"]
        ddp = load_checkpoint(tmp_path / "ddp" / method / "checkpoints/last.pt")["method"]
        torch.manual_seed(cfg.seed)
        before = build_method(cfg).state_dict()
        moved = [k for k in single if single[k].is_floating_point() and not torch.equal(single[k], before[k].double())]
        assert len(moved) > 10, f"{method}: the steps did not change the weights"
        assert_states_match_in_fp64(single, ddp)


# ----------------------------------------------------------------------------------------- presets


def test_presets_carry_the_papers_settings():
    b, s, d, w = (get_preset(f"{m}-imagenet-r50") for m in METHODS)
    assert (b.batch_size, b.optimizer, b.base_lr, b.weight_decay, b.epochs, b.options.momentum_ema) == (
        4096, "lars", 0.2, 1.5e-6, 1000, 0.996)
    assert (b.options.hidden_dim, b.options.proj_dim, b.options.predictor_hidden_dim) == (4096, 256, 4096)
    assert (s.batch_size, s.optimizer, s.base_lr, s.weight_decay, s.epochs, s.recipe) == (512, "sgd", 0.05, 1e-4, 100, "moco_v2")
    assert s.options.fix_predictor_lr and (s.options.proj_dim, s.options.predictor_hidden_dim) == (2048, 512)
    o = d.options
    assert (o.warmup_teacher_temperature, o.teacher_temperature, o.warmup_teacher_epochs, o.student_temperature) == (
        0.04, 0.07, 30, 0.1)
    assert (o.out_dim, o.local_crops, o.local_size, o.momentum_ema, o.center_momentum, d.weight_decay) == (
        65536, 8, 96, 0.996, 0.9, 1e-4)
    assert (w.batch_size, w.base_lr, w.weight_decay, w.options.proj_dim, w.options.lambd) == (2048, 0.2, 1.5e-6, 8192, 5.1e-3)
    for m in METHODS:
        cpu = get_preset(f"{m}-cifar10-cpu")
        assert (cpu.encoder, cpu.width, cpu.batch_size, cpu.image_size, cpu.time_budget_s) == ("resnet10", 0.5, 128, 24, 510.0)


def test_every_cpu_preset_trains_one_epoch_on_cifar10_mini_through_the_cli(cifar10_mini_root, tmp_path):
    """Each preset as it is (model, views, batch 128, optimizer), for one epoch of cifar10-mini (5085
    images: 39 steps, 20-45 s a preset on an idle 2-core machine), and the kNN monitor on 2000 of the
    training images."""
    for method in METHODS:
        out = tmp_path / method
        args = ["train", "--preset", f"{method}-cifar10-cpu", "--out", str(out), f"data_root={cifar10_mini_root}",
                "epochs=1", "knn_every=0", "knn_max_train=2000", "figures=false"]
        assert cli.main(args) == 0, method
        result = json.loads((out / "results.json").read_text())
        assert result["step"] == 5085 // 128 and result["stop_reason"] == "finished", method
        assert 0.1 < result["knn_final"] <= 1.0, method
        rows = [r for r in read_metrics(out / "metrics.csv") if "loss" in r]
        assert rows and all(math.isfinite(r["loss"]) and r["z_rank"] >= 1 for r in rows), method


def test_every_imagenet_preset_runs_on_two_ranks_of_torchrun(tmp_path):
    """byol/simsiam/dino/barlow-imagenet-r50 shrunk, 2 steps each on a tiny ImageFolder, one launch."""
    root = write_imagefolder(tmp_path / "imagenet")
    shrink = {"byol": dict(hidden_dim=32, proj_dim=16, predictor_hidden_dim=32),
              "simsiam": dict(hidden_dim=32, proj_dim=16, predictor_hidden_dim=8),
              "dino": dict(hidden_dim=32, bottleneck_dim=16, out_dim=64, local_crops=2, local_size=24),
              "barlow": dict(hidden_dim=32, proj_dim=16)}
    jobs = [{"args": ["train", "--preset", f"{m}-imagenet-r50", "--out", str(tmp_path / m),
                      *tiny(root, max_steps=2, **shrink[m])], "dump": str(tmp_path / m / "state")} for m in METHODS]
    run_plan(tmp_path, jobs)
    for m in METHODS:
        assert load_checkpoint(tmp_path / m / "checkpoints/last.pt")["step"] == 2, m
        r0, r1 = rank_states(tmp_path / m / "state")
        for key in r0:  # DDP keeps the weights equal; global BN, the centre and the targets keep the buffers equal
            assert torch.equal(r0[key], r1[key]), f"{m}: {key} differs between ranks"
    cfg = json.loads((tmp_path / "dino" / "config.json").read_text())
    assert cfg["options"]["local_crops"] == 2 and cfg["recipe"] == "byol"


def test_bad_options_get_clear_errors():
    with pytest.raises(ValueError, match="fix_predictor_lr=true needs a predictor"):
        get_preset("simsiam-cifar10-cpu").replace(predictor=False)
    with pytest.raises(ValueError, match="lambd must be >= 0"):
        get_preset("barlow-cifar10-cpu").replace(lambd=-1.0)
    with pytest.raises(ValueError, match="crop scales"):
        get_preset("dino-cifar10-cpu").replace(local_scale_max=2.0)
    with pytest.raises(ValueError, match="BYOL needs a projector"):
        get_preset("byol-cifar10-cpu").replace(head="identity")
    assert apply_overrides(get_preset("byol-cifar10-cpu"), ["predictor=false"]).options.predictor is False
