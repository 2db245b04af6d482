"""Command line: ``python -m contrastive_lab {train,eval,embed,presets} ...``. A public contract.

    train --preset NAME --out DIR [--resume] [--stop-at-step N] [key=value ...]
    eval  --checkpoint CKPT [--protocol knn|linear|finetune] [--out FILE.json]
    embed --checkpoint CKPT --dataset NAME --split SPLIT --out FILE.npz
    presets                      list the presets and their one-line descriptions

Multi-GPU and multi-node: the same ``train`` under torchrun (``python -m torch.distributed.run
--nproc_per_node=8 -m contrastive_lab train ...``); ``batch_size`` is the global batch. ImageNet-scale
linear evaluation and fine-tuning are ``train`` presets too (``linear-eval-*``, ``finetune-*`` with
``init_checkpoint=RUN/checkpoints/last.pt``): ``eval`` is for in-memory datasets (CIFAR, STL-10).
"""

from __future__ import annotations

import argparse
import inspect
import json
import re
import sys
from dataclasses import fields
from pathlib import Path

import numpy as np
import torch

from .presets import PRESETS, Config, apply_overrides, get_preset

PROTOCOLS = ("knn", "linear", "finetune")


def config_comments() -> dict[str, str]:
    """Each Config field's trailing ``# comment`` in presets.py (its one-line documentation)."""
    comments = {}
    for line in inspect.getsource(Config).splitlines():
        match = re.match(r"\s+(\w+): [^=]+=[^#]*#\s*(.+)$", line)
        if match:
            comments[match.group(1)] = match.group(2).strip()
    return comments


def _config_help() -> str:
    default, comments = Config(), config_comments()
    lines = ["config keys (override with key=value; defaults shown are Config's, a preset changes some):"]
    for f in fields(Config):
        note = comments.get(f.name, "")
        lines.append(f"  {f.name}={getattr(default, f.name)!r}" + (f"  ({note})" if note else ""))
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    fmt = argparse.ArgumentDefaultsHelpFormatter
    parser = argparse.ArgumentParser(prog="python -m contrastive_lab", description=__doc__.split("\n")[0])
    verbs = parser.add_subparsers(dest="verb", required=True, metavar="{train,eval,embed,presets}")

    train = verbs.add_parser(
        "train",
        help="train a method from a preset",
        formatter_class=lambda prog: argparse.RawDescriptionHelpFormatter(prog, max_help_position=40),
        epilog=_config_help(),
        description="Train a method. Example: train --preset simclr-cifar10-cpu --out runs/demo epochs=1",
    )
    train.add_argument("--preset", required=True, choices=sorted(PRESETS), help="named configuration")
    train.add_argument("--out", required=True, help="run folder (config.json, metrics.csv, checkpoints/, figures/)")
    train.add_argument("--resume", action="store_true", help="continue the run in --out from checkpoints/last.pt")
    train.add_argument(
        "--stop-at-step", type=int, default=0, metavar="N",
        help="stop after optimizer step N as if interrupted (the schedule still spans the whole run; "
        "--resume continues it exactly). 0: run to the end",
    )
    train.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides (default: none)")

    ev = verbs.add_parser("eval", help="evaluate a checkpoint's encoder", formatter_class=fmt)
    ev.add_argument("--checkpoint", required=True, help="path to a last.pt written by train")
    ev.add_argument("--protocol", default="knn", choices=PROTOCOLS, help="evaluation protocol")
    ev.add_argument("--fraction", type=float, default=0.1, help="label fraction for finetune (0.01 or 0.1)")
    ev.add_argument("--epochs", type=int, default=0, help="epochs for linear/finetune (0: protocol default)")
    ev.add_argument("--out", default=None, help="JSON file for the result (default: eval_<protocol>.json beside the run)")

    em = verbs.add_parser("embed", help="write encoder features h of a dataset split to .npz", formatter_class=fmt)
    em.add_argument("--checkpoint", required=True, help="path to a last.pt written by train")
    em.add_argument("--dataset", required=True, help="dataset name (cifar10, cifar100, stl10, synthetic, ...)")
    em.add_argument("--split", default="test", help="dataset split")
    em.add_argument("--out", required=True, help="output .npz with arrays features (N x D float32) and labels")
    em.add_argument("--data-root", default=None, help="data root (default: $CONTRASTIVE_LAB_DATA or data/)")

    verbs.add_parser("presets", help="list presets", formatter_class=fmt)
    return parser


def cmd_train(args) -> dict:
    from .engine import train

    cfg = apply_overrides(get_preset(args.preset), args.overrides)
    if args.stop_at_step < 0:
        raise ValueError(f"--stop-at-step must be >= 0, got {args.stop_at_step}")
    return train(cfg, args.out, resume=args.resume, stop_at_step=args.stop_at_step)


def load_method(checkpoint: str | Path):
    """Rebuild the method from a checkpoint's config and return (config, method in eval mode)."""
    from .engine import config_from_checkpoint, load_checkpoint
    from .methods import build_method

    state = load_checkpoint(checkpoint)
    cfg = config_from_checkpoint(state)
    method = build_method(cfg)
    method.load_state_dict(state["method"])
    return cfg, method.eval()


def load_encoder(checkpoint: str | Path):
    """Rebuild the method from a checkpoint's config and return (config, encoder in eval mode)."""
    cfg, method = load_method(checkpoint)
    return cfg, method.encoder


def cmd_eval(args) -> dict:
    from .engine import encode, eval_transform, knn_h_and_z, load_split, resolve_device
    from .evaluate import finetune, linear_probe

    cfg, method = load_method(args.checkpoint)
    encoder, head = method.encoder, getattr(method, "head", None)
    device = resolve_device(cfg, 0)
    train_ds, test_ds = load_split(cfg, cfg.train_split), load_split(cfg, cfg.test_split)
    if not (hasattr(train_ds, "images") and hasattr(test_ds, "images")):
        raise ValueError(
            f"eval works on in-memory datasets; {cfg.dataset} streams from disk. Run linear evaluation or "
            f"fine-tuning as a training run: train --preset linear-eval-moco-imagenet --out DIR "
            f"init_checkpoint={args.checkpoint} (see `presets`; torchrun for several GPUs)"
        )
    transform = eval_transform(cfg)
    result: dict = {"protocol": args.protocol, "checkpoint": str(args.checkpoint), "dataset": cfg.dataset}
    if args.protocol == "finetune":
        out = finetune(
            encoder, train_ds.images, train_ds.labels, test_ds.images, test_ds.labels,
            fraction=args.fraction, transform=transform, device=device, seed=cfg.seed,
            **({"epochs": args.epochs} if args.epochs else {}),
        )
        result.update(fraction=args.fraction, top1=out["top1"])
    else:
        f_train = encode(encoder.to(device), train_ds.images, cfg, device)
        f_test = encode(encoder, test_ds.images, cfg, device)
        if args.protocol == "knn":
            # on h and, with a head, also on z = g(h), the feature Wu et al.'s and MoCo's monitors use
            accs = knn_h_and_z(f_train, train_ds.labels, f_test, test_ds.labels, head, cfg)
            result.update(k=min(cfg.knn_k, len(f_train)), temperature=cfg.knn_t, top1=accs["h"], feature="h")
            if "z" in accs:
                result["top1_z"] = accs["z"]
        else:
            out = linear_probe(
                f_train, train_ds.labels, f_test, test_ds.labels, seed=cfg.seed,
                **({"epochs": args.epochs} if args.epochs else {}),
            )
            result.update(top1=out["top1"], train_top1=out.get("train_top1"))
    print(f"{args.protocol} top-1 on {cfg.dataset} {cfg.test_split}: {result['top1']:.4f}")
    if "top1_z" in result:
        print(f"{args.protocol} top-1 on z = g(h) (the head's output): {result['top1_z']:.4f}")
    path = Path(args.out) if args.out else Path(args.checkpoint).resolve().parent.parent / f"eval_{args.protocol}.json"
    path.write_text(json.dumps(result, indent=2))
    print(f"saved {path}")
    return result


def cmd_embed(args) -> dict:
    from .engine import encode, load_split, resolve_device

    cfg, encoder = load_encoder(args.checkpoint)
    data_cfg = cfg.replace(dataset=args.dataset, data_root=args.data_root or cfg.data_root)
    ds = load_split(data_cfg, args.split)
    device = resolve_device(cfg, 0)
    feats = encode(encoder.to(device), ds.images, cfg, device)
    out = Path(args.out)
    if out.suffix != ".npz":
        raise ValueError(f"--out must end in .npz, got {out}")
    out.parent.mkdir(parents=True, exist_ok=True)
    np.savez(out, features=feats.float().numpy().astype(np.float32), labels=ds.labels.numpy().astype(np.int64))
    print(f"wrote {out}: features {tuple(feats.shape)} float32, labels ({len(ds.labels)},)")
    return {"out": str(out), "n": len(ds.labels), "dim": int(feats.shape[1])}


def cmd_presets(args) -> dict:
    for name in sorted(PRESETS):
        doc = (PRESETS[name].__doc__ or "").strip().split("\n")[0]
        print(f"{name:28s} {doc}")
    return {}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        {"train": cmd_train, "eval": cmd_eval, "embed": cmd_embed, "presets": cmd_presets}[args.verb](args)
    except (ValueError, FileNotFoundError, FileExistsError, RuntimeError) as err:
        if isinstance(err, torch.cuda.OutOfMemoryError):
            raise
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0
