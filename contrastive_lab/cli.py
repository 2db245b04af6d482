"""Command line: ``python -m contrastive_lab {train,eval,embed,index,search,presets,check-data} ...``. A public contract.

    train --preset NAME --out DIR [--resume] [--stop-at-step N] [key=value ...]
    eval  --checkpoint CKPT [--protocol knn|linear|finetune] [--out FILE.json]
    embed --checkpoint CKPT --dataset NAME --split SPLIT --out FILE.npz
    index --embeddings FILE.npz --kind flat|hnsw|ivf-pq --out FILE.faiss   a faiss index of the features
    search --index FILE.faiss --image QUERY.png -k 8   nearest gallery images, printed and drawn
    presets                      list the presets and their one-line descriptions
    check-data --dataset NAME [--split S] [--data-root DIR]   decode every image, list the bad ones

Multi-GPU and multi-node: the same ``train`` under torchrun (``python -m torch.distributed.run
--nproc_per_node=8 -m contrastive_lab train ...``); ``batch_size`` is the global batch. ImageNet-scale
linear evaluation and fine-tuning are ``train`` presets too (``linear-eval-*``, ``finetune-*`` with
``init_checkpoint=RUN/checkpoints/last.pt``): ``eval`` is for in-memory datasets (CIFAR, STL-10).

Exit codes: 0 done; 2 bad input or a failed run (the message says what and what to do); 130 / 143 /
138 a run stopped by SIGINT / SIGTERM / SIGUSR1 after saving its checkpoint (resume with --resume).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from dataclasses import fields
from pathlib import Path

import torch

from .cli_embeddings import COMMANDS as EMBEDDING_COMMANDS
from .cli_embeddings import add_parsers as add_embedding_verbs
from .config import SAFE_ON_RESUME, Config, config_keys, field_comments, options_type
from .data import check_dataset, label_subset
from .engine import encode, exit_code, load_split, resolve_device, train
from .evaluate import knn_on_h_and_z, linear_probe
from .methods import METHODS, ClassifierOptions, load_method
from .presets import PRESETS, apply_overrides, get_preset, preset_summary

PROTOCOLS = ("knn", "linear", "finetune")


def _config_help() -> str:
    """Every key with its default and one-line comment: the shared ones, then each method's options."""
    default = Config()
    lines = ["config keys (override with key=value; defaults shown are Config's, a preset changes some):"]
    comments = field_comments(Config)
    for f in fields(Config):
        if f.name != "options":
            lines.append(f"  {f.name}={getattr(default, f.name)!r}" + (f"  ({comments[f.name]})" if f.name in comments else ""))
    seen: set[type] = set()
    for name in sorted(METHODS):
        kind = options_type(name)
        if kind in seen:
            continue
        seen.add(kind)
        users = ", ".join(sorted(m for m in METHODS if options_type(m) is kind))
        lines.append(f"options of method {users} ({kind.__name__}):")
        own, opt_comments = kind(), {**field_comments(kind), **_inherited_comments(kind)}
        for f in fields(kind):
            note = opt_comments.get(f.name, "")
            lines.append(f"  {f.name}={getattr(own, f.name)!r}" + (f"  ({note})" if note else ""))
    return "\n".join(lines)


def _inherited_comments(kind: type) -> dict[str, str]:
    comments: dict[str, str] = {}
    for base in reversed(kind.__mro__[1:]):
        if base is not object and hasattr(base, "__dataclass_fields__"):
            comments.update(field_comments(base))
    return comments


def build_parser() -> argparse.ArgumentParser:
    fmt = argparse.ArgumentDefaultsHelpFormatter
    parser = argparse.ArgumentParser(prog="python -m contrastive_lab", description=__doc__.split("\n")[0])
    verbs = parser.add_subparsers(dest="verb", required=True, metavar="{train,eval,embed,index,search,presets,check-data}")

    train_p = verbs.add_parser(
        "train",
        help="train a method from a preset",
        formatter_class=lambda prog: argparse.RawDescriptionHelpFormatter(prog, max_help_position=40),
        epilog=_config_help(),
        description="Train a method. Example: train --preset simclr-cifar10-cpu --out runs/demo epochs=1",
    )
    train_p.add_argument("--preset", required=True, choices=sorted(PRESETS), help="named configuration")
    train_p.add_argument("--out", required=True, help="run folder (config.json, metrics.csv, checkpoints/, figures/)")
    train_p.add_argument(
        "--resume", action="store_true",
        help="continue the run in --out from checkpoints/last.pt, as it was configured: a changed key is refused, "
        f"except {', '.join(SAFE_ON_RESUME)}; a finished run is left unchanged",
    )
    train_p.add_argument(
        "--stop-at-step", type=int, default=0, metavar="N",
        help="stop after optimizer step N on purpose (the schedule still spans the whole run; "
        "--resume continues it exactly). 0: run to the end",
    )
    train_p.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides (default: none)")

    ev = verbs.add_parser("eval", help="evaluate a checkpoint's encoder", formatter_class=fmt)
    ev.add_argument("--checkpoint", required=True, help="path to a last.pt written by train")
    ev.add_argument("--protocol", default="knn", choices=PROTOCOLS, help="evaluation protocol")
    ev.add_argument("--fraction", type=float, default=0.1, help="label fraction for finetune (0.01 or 0.1)")
    ev.add_argument("--epochs", type=int, default=0, help="epochs for linear/finetune (0: protocol default)")
    ev.add_argument("--out", default=None, help="JSON file for the result (default: eval_<protocol>.json beside the run)")

    add_embedding_verbs(verbs, fmt)  # embed, index, search (cli_embeddings.py)

    verbs.add_parser("presets", help="list presets", formatter_class=fmt)

    check = verbs.add_parser("check-data", help="decode every image of a dataset split; list unreadable files",
                             formatter_class=fmt)
    check.add_argument("--dataset", required=True, help="dataset name (imagefolder, cifar10, ...)")
    check.add_argument("--split", default="train", help="dataset split (imagefolder: the sub-folder)")
    check.add_argument("--data-root", default=None, help="data root (default: $CONTRASTIVE_LAB_DATA or data/)")
    return parser


def cmd_train(args) -> dict:
    if args.stop_at_step < 0:
        raise ValueError(f"--stop-at-step must be >= 0, got {args.stop_at_step}")
    cfg = apply_overrides(get_preset(args.preset), args.overrides)
    return train(cfg, args.out, resume=args.resume, stop_at_step=args.stop_at_step)


def _in_memory(cfg: Config, checkpoint: str):
    """The train and test splits of a checkpoint's data, which ``eval`` needs in memory."""
    train_ds, test_ds = load_split(cfg, cfg.train_split), load_split(cfg, cfg.test_split)
    if not (hasattr(train_ds, "images") and hasattr(test_ds, "images")):
        raise ValueError(
            f"eval works on in-memory datasets; {cfg.dataset} streams from disk. Run linear evaluation or "
            f"fine-tuning as a training run: train --preset linear-eval-moco-imagenet --out DIR "
            f"init_checkpoint={checkpoint} (see `presets`; torchrun for several GPUs)"
        )
    return train_ds, test_ds


def finetune_run(cfg: Config, checkpoint: str, fraction: float, epochs: int, train_labels) -> float:
    """Fine-tune the checkpoint's encoder on a class-balanced ``fraction`` of the labels through the
    engine (``method=finetune``, the ``finetune-cifar10-cpu`` recipe on the run's data); the test top-1."""
    labelled = len(label_subset(train_labels, fraction, seed=cfg.seed))
    base = get_preset("finetune-cifar10-cpu")
    ft = base.replace(
        dataset=cfg.dataset, data_root=cfg.data_root, train_split=cfg.train_split, test_split=cfg.test_split,
        synthetic_size=cfg.synthetic_size, eval_size=cfg.evaluation_size(), seed=cfg.seed, precision=cfg.precision,
        batch_size=min(base.batch_size, labelled), epochs=epochs or base.epochs,
        max_steps=0 if epochs else base.max_steps, figures=False, knn_every=0,  # --epochs: all of them
        options=ClassifierOptions(init_checkpoint=str(checkpoint), label_fraction=fraction))
    with tempfile.TemporaryDirectory(prefix="finetune-") as tmp:
        return train(ft, Path(tmp) / "run", verbose=False)["top1"]


def cmd_eval(args) -> dict:
    cfg, method = load_method(args.checkpoint)
    encoder, head = method.encoder, getattr(method, "head", None)
    device = resolve_device(cfg, 0)
    train_ds, test_ds = _in_memory(cfg, args.checkpoint)
    result: dict = {"protocol": args.protocol, "checkpoint": str(args.checkpoint), "dataset": cfg.dataset}
    if args.protocol == "finetune":
        top1 = finetune_run(cfg, args.checkpoint, args.fraction, args.epochs, train_ds.labels)
        result.update(fraction=args.fraction, top1=top1)
    else:
        f_train = encode(encoder.to(device), train_ds.images, cfg, device)
        f_test = encode(encoder, test_ds.images, cfg, device)
        if args.protocol == "knn":
            # on h and, with a head, also on z = g(h), the feature Wu et al.'s and MoCo's monitors use
            accs = knn_on_h_and_z(f_train, train_ds.labels, f_test, test_ds.labels, head, cfg.knn_k, cfg.knn_t)
            result.update(k=min(cfg.knn_k, len(f_train)), temperature=cfg.knn_t, top1=accs["h"], feature="h")
            if "z" in accs:
                result["top1_z"] = accs["z"]
        else:
            out = linear_probe(f_train, train_ds.labels, f_test, test_ds.labels, seed=cfg.seed,
                               **({"epochs": args.epochs} if args.epochs else {}))
            result.update(top1=out["top1"], train_top1=out.get("train_top1"))
    data = getattr(test_ds, "name", cfg.dataset)
    print(f"{args.protocol} top-1 on {data} {cfg.test_split}: {result['top1']:.4f}")
    if "top1_z" in result:
        print(f"{args.protocol} top-1 on z = g(h) (the head's output): {result['top1_z']:.4f}")
    path = Path(args.out) if args.out else Path(args.checkpoint).resolve().parent.parent / f"eval_{args.protocol}.json"
    path.write_text(json.dumps(result, indent=2))
    print(f"saved {path}")
    return result


def cmd_presets(args) -> dict:
    for name in sorted(PRESETS):
        print(f"{name:32s} {preset_summary(name)}")
    return {}


def cmd_check_data(args) -> dict:
    report = check_dataset(args.dataset, split=args.split, root=args.data_root)
    print(report.summary())
    if not report.ok:
        raise ValueError(f"{len(report.bad)} unreadable file(s) in {args.dataset} {args.split} (listed above); "
                         "remove or replace them before training")
    return {"count": report.count}


COMMANDS = {"train": cmd_train, "eval": cmd_eval, **EMBEDDING_COMMANDS, "presets": cmd_presets,
            "check-data": cmd_check_data}


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
        result = COMMANDS[args.verb](args)
    except KeyboardInterrupt:  # Ctrl-C before the training loop (start-up, parsing), or a second Ctrl-C
        print("interrupted (Ctrl-C) before a checkpoint could be written; nothing was saved by this call",
              file=sys.stderr)
        return exit_code(None)
    except (ValueError, FileNotFoundError, FileExistsError, RuntimeError) as err:
        if isinstance(err, torch.cuda.OutOfMemoryError):
            raise
        print(f"error: {err}", file=sys.stderr)
        return 2
    if args.verb == "train" and result.get("stop_reason") == "interrupted":
        return exit_code(result.get("signal"))
    return 0


__all__ = ["build_parser", "config_keys", "main"]
