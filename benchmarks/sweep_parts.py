"""Merging the result files of one sweep run as several parallel processes (one group each).

On a 2-core CPU two single-threaded processes get more done than one with two threads, so the
sweeps of chapters 06 and 07 run their groups in two processes, each writing its own ``--out``,
and are then merged with ``--merge part1.json part2.json``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def merge_parts(parts: list[dict[str, Any]], must_match: tuple[str, ...],
                unite: tuple[str, ...] = ()) -> dict[str, Any]:
    """One results document from ``parts`` of the same sweep.

    The parts must agree on every key in ``must_match`` (data, epochs, the common config). Their
    ``runs`` and the dicts named in ``unite`` are united; a run present in two parts with different
    results is an error (it would otherwise be overwritten silently). ``commands`` lists every
    part's command(s), ``sweep_seconds`` adds the parts' run times, ``parallel_processes`` counts
    the parts. Other keys come from the first part.
    """
    if not parts:
        raise ValueError("nothing to merge: pass the result files of the parts")
    first = parts[0]
    for other in parts[1:]:
        for key in must_match:
            if other.get(key) != first.get(key):
                raise ValueError(f"cannot merge sweeps with different {key!r}: {first.get(key)} vs {other.get(key)}")
    doc: dict[str, Any] = {**first, "runs": {}, "commands": [], **{key: {} for key in unite}}
    for part in parts:
        for name, run in part["runs"].items():
            if name in doc["runs"] and doc["runs"][name] != run:
                raise ValueError(f"run {name!r} is in two parts with different results; re-run one part "
                                 "without it or merge the parts you trust")
            doc["runs"][name] = run
        for key in unite:
            doc[key].update(part.get(key, {}))
        doc["commands"] += part.get("commands", [part.get("command", "")])
    doc["sweep_seconds"] = round(sum(p.get("sweep_seconds", 0.0) for p in parts), 1)
    doc["parallel_processes"] = len(parts)
    return doc


def merge_files(paths: list[Path], out: Path, merge) -> int:
    """Read the part files, ``merge`` them (a script's own merge), write ``out``; the CLI's --merge."""
    merged = merge([json.loads(Path(p).read_text()) for p in paths])
    out.write_text(json.dumps(merged, indent=1, sort_keys=True))
    print(f"merged {len(merged['runs'])} runs from {len(paths)} files into {out}")
    return 0
