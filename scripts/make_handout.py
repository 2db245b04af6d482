"""Write a class handout: a copy of the book and its library without the instructors' solutions.

    python scripts/make_handout.py OUT        (``make handout`` writes it to handout/)

Copies every file git tracks (and untracked files it does not ignore) except ``solutions/`` (the
solutions and model answers), ``tests/exercises/`` and ``tests/test_exercises.py`` (the checks' tests,
which call the solutions). The chapters' check cells then say "solutions are not part of this
handout" where they would otherwise show what a correct answer reports. An existing OUT is replaced.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LEFT_OUT = ("solutions/", "tests/exercises/", "tests/test_exercises.py")


def handout_files(root: Path = ROOT) -> list[str]:
    """The repository's files that go into a handout (paths relative to ``root``)."""
    listed = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=root,
                            capture_output=True, text=True, check=True).stdout.splitlines()
    return sorted(p for p in listed if not p.startswith(LEFT_OUT) and (root / p).is_file())


def write_handout(out: Path, root: Path = ROOT) -> list[str]:
    """Copy the handout files to ``out`` (replacing it); return what was copied."""
    out = Path(out).resolve()
    if out == root.resolve() or root.resolve().is_relative_to(out):
        raise ValueError(f"refusing to write the handout over the repository itself: {out}")
    if out.exists():
        shutil.rmtree(out)
    files = handout_files(root)
    for rel in files:
        target = out / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(root / rel, target)
    return files


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("out", help="folder to write the handout to (replaced if it exists)")
    args = parser.parse_args(argv)
    files = write_handout(Path(args.out))
    print(f"wrote {len(files)} files to {args.out} (left out: {', '.join(LEFT_OUT)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
