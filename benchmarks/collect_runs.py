"""Collect finished training runs into one JSON file and a Markdown table.

Each run folder written by ``python -m contrastive_lab train --out DIR ...`` holds ``config.json``
and ``results.json``; this script lists, for every folder, the config keys that differ from the
preset, the optimizer steps, the training time and the kNN top-1 before and after training.
A config.json nests the method's options under ``"options"`` (``Config.to_dict``); both levels
are compared, and an option is listed by its own name (``temperature=0.2``), as ``key=value``
overrides name it. Flat config.json files written before the options moved are read too.

    python benchmarks/collect_runs.py runs/screen/* --preset simclr-cifar10-cpu \\
        --out benchmarks/results/demo_screen.json

Used for the screening toward the demo's 0.55 kNN target (BENCHMARKS.md); the JSON's ``note``
says how the runs were started, ``changes`` what each changed.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict
from pathlib import Path

from contrastive_lab.presets import Config, get_preset

IGNORED = {"data_root"}  # where the data lay, not what was trained


def flat_config(config: dict) -> dict:
    """A config.json as one level: the shared keys, then the method's ``options`` by their own names
    (an option named like a shared key is listed as ``options.<key>``). A flat (older) file is
    returned as it is."""
    flat = {k: v for k, v in config.items() if k != "options"}
    for k, v in (config.get("options") or {}).items():
        flat[f"options.{k}" if k in flat else k] = v
    return flat


def config_defaults(method: str) -> dict:
    """Config's defaults for ``method`` (its options class's defaults included), flattened; Config's
    own defaults for a method this installation does not know."""
    try:
        return flat_config(asdict(Config(method=method)))
    except ValueError:
        return flat_config(asdict(Config()))


def changed_keys(config: dict, preset: dict) -> dict:
    """The config entries, shared keys and method options alike, that differ from the preset's
    (``data_root`` aside). A key the preset's record lacks (a field added since, or an option of
    another method) counts as changed only if it is not at its default."""
    config, preset = flat_config(config), flat_config(preset)
    defaults = config_defaults(config.get("method", Config.method))
    return {k: v for k, v in sorted(config.items()) if k not in IGNORED and preset.get(k, defaults.get(k)) != v}


def collect(folder: Path, preset: dict) -> dict:
    """One run folder as a flat record; refuses a folder without a finished ``results.json``.
    ``preset`` is the config the changes are listed against (the preset's, or a base run's)."""
    results_file, config_file = folder / "results.json", folder / "config.json"
    if not results_file.is_file() or not config_file.is_file():
        raise SystemExit(f"{folder}: no results.json/config.json; is the run finished?")
    results, config = json.loads(results_file.read_text()), json.loads(config_file.read_text())
    changes = changed_keys(config, preset)
    return {
        "run": folder.name,
        "changes": changes,
        "steps": results["step"],
        "train_seconds": round(results["train_seconds"], 1),
        "knn_random": round(results["knn_random"], 4),
        "knn_final": round(results["knn_final"], 4),
    }


def markdown(records: list[dict]) -> str:
    lines = ["| run | changes from the preset | steps | kNN random -> trained |", "|---|---|---:|---:|"]
    for r in records:
        changes = ", ".join(f"{k}={v}" for k, v in r["changes"].items())
        lines.append(f"| {r['run']} | {changes} | {r['steps']} | {r['knn_random']:.3f} -> {r['knn_final']:.3f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("folders", nargs="+", type=Path, help="finished run folders")
    parser.add_argument("--preset", default="simclr-cifar10-cpu", help="the preset the runs started from")
    parser.add_argument("--base", type=Path, help="list changes against this config.json (a base run's) "
                        "instead of the preset's current config")
    parser.add_argument("--out", type=Path, help="JSON file to write (default: print only)")
    parser.add_argument("--note", default="", help="free text stored with the records (machine, date, how run)")
    args = parser.parse_args()
    base = json.loads(args.base.read_text() if args.base else get_preset(args.preset).to_json())
    records = [collect(f, base) for f in args.folders]
    print(markdown(records))
    if args.out:
        doc = {"preset": args.preset, "base_config": base if args.base else None, "note": args.note, "runs": records}
        args.out.write_text(json.dumps(doc, indent=2) + "\n")
