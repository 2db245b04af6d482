"""How long each chapter's committed demo run took, read from its .ipynb (no chapter is run).

The executing kernel stamps every code cell (``metadata.execution``: ``iopub.execute_input`` and
``shell.execute_reply``); a chapter's wall time is its first cell's start to its last cell's reply.
Where the last cell printed ``runtime.chapter_report()`` ("chapter report: ... peak memory N MiB"),
the peak memory comes from there. Prints a Markdown table; ``--readme`` rewrites the table between
the ``<!-- chapter-times -->`` markers of README.md instead. Usage:

    .venv/bin/python scripts/chapter_times.py [--readme]
"""

from __future__ import annotations

import argparse
import json
import re
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BEGIN, END = "<!-- chapter-times -->", "<!-- /chapter-times -->"


def _stamp(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def chapter_time(path: Path) -> dict:
    """Wall minutes, date, demo or smoke, and peak memory (MiB, or None) of one executed notebook."""
    cells = [c for c in json.loads(path.read_text())["cells"] if c["cell_type"] == "code"]
    stamps = [c.get("metadata", {}).get("execution", {}) for c in cells]
    starts = [_stamp(s["iopub.execute_input"]) for s in stamps if "iopub.execute_input" in s]
    ends = [_stamp(s["shell.execute_reply"]) for s in stamps if "shell.execute_reply" in s]
    text = "".join("".join(o.get("text", "")) for c in cells for o in c.get("outputs", []))
    memory = re.search(r"chapter report: .*?peak memory (\d+) MiB", text)
    mode = "smoke" if "smoke mode: True" in text else ("demo" if "smoke mode: False" in text else "?")
    if not starts or not ends:
        return {"chapter": path.stem, "minutes": None, "date": None, "mode": mode, "memory_mib": None}
    return {"chapter": path.stem, "minutes": (max(ends) - min(starts)).total_seconds() / 60,
            "date": min(starts).date().isoformat(), "mode": mode,
            "memory_mib": int(memory.group(1)) if memory else None}


def table(rows: list[dict]) -> str:
    lines = ["| chapter | demo run (min) | peak memory | executed on |", "|---|---|---|---|"]
    for r in rows:
        minutes = f"{r['minutes']:.1f}" if r["minutes"] is not None else "not executed"
        if r["mode"] != "demo":
            minutes += f" ({r['mode']} mode)"
        memory = f"{r['memory_mib'] / 1024:.1f} GiB" if r["memory_mib"] else "not recorded"
        lines.append(f"| {r['chapter']} | {minutes} | {memory} | {r['date'] or ''} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--readme", action="store_true", help="rewrite the table in README.md")
    args = parser.parse_args(argv)
    rows = [chapter_time(p) for p in sorted((ROOT / "chapters").glob("[0-9][0-9]_*.ipynb"))]
    out = table(rows)
    if args.readme:
        readme = ROOT / "README.md"
        text = readme.read_text()
        if BEGIN not in text or END not in text:
            raise SystemExit(f"README.md has no {BEGIN} ... {END} markers; add them where the table goes")
        head, rest = text.split(BEGIN, 1)
        readme.write_text(head + BEGIN + "\n" + out + "\n" + END + rest.split(END, 1)[1])
    print(out)
    return out


if __name__ == "__main__":
    main()
