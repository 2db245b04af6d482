"""What a run writes as it goes: ``metrics.csv`` (one row every 10 steps, and one per kNN
evaluation), TensorBoard scalars when asked, and progress bars on a terminal. Chapter 05 plots
``metrics.csv``; :func:`read_metrics` reads it back.
"""

from __future__ import annotations

import csv
import io
import os
import sys
from pathlib import Path
from typing import Any

METRIC_FIELDS = ["step", "epoch", "time_s", "lr", "loss", "images_per_s", "gpu_mem_gb", "knn_top1", "knn_top1_z"]


class MetricsLog:
    """Appends rows to ``metrics.csv``. On resume, rows after the resumed step are dropped (they are
    logged again as the run replays those steps), so a run interrupted any number of times ends with
    each row once. The file is rewritten to a temporary file and renamed, as checkpoints are: a kill
    during the rewrite leaves the old file; a row cut short by a kill during an append is dropped.
    ``redo_evaluations``: the run resumes at the end of its training, because it was killed during its
    final evaluation, which it will run again: the evaluation rows at ``resume_step`` go too."""

    def __init__(self, path: Path, resume_step: int | None, extra: list[str] | None = None,
                 redo_evaluations: bool = False):
        self.path = Path(path)
        self.fields = METRIC_FIELDS + [k for k in (extra or []) if k not in METRIC_FIELDS]
        rows = self._rows_up_to(resume_step) if resume_step is not None and self.path.exists() else []
        if redo_evaluations:  # the final evaluation at resume_step runs again: drop its earlier rows
            rows = [r for r in rows if int(float(r["step"])) < resume_step or r.get("loss")]
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=self.fields, extrasaction="ignore", lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        tmp = self.path.with_name(f".{self.path.name}.tmp-{os.getpid()}")
        tmp.write_text(buffer.getvalue())
        os.replace(tmp, self.path)
        self.tb = None

    def _rows_up_to(self, step: int) -> list[dict[str, str]]:
        """Complete rows with step <= ``step``; a torn last line (SIGKILL mid-append) is left out."""
        text = self.path.read_text()
        lines = text.splitlines(keepends=True)
        if lines and not lines[-1].endswith("\n"):
            lines = lines[:-1]
        rows = []
        for row in csv.DictReader(lines):
            try:
                if None not in row and int(float(row["step"])) <= step:
                    rows.append(row)
            except (TypeError, ValueError):
                continue
        return rows

    def write(self, row: dict[str, Any]) -> None:
        with open(self.path, "a", newline="") as f:
            csv.DictWriter(f, fieldnames=self.fields, extrasaction="ignore", lineterminator="\n").writerow(row)
        if self.tb is not None:
            for key, value in row.items():
                if key != "step" and isinstance(value, (int, float)):
                    self.tb.add_scalar(key, value, row["step"])


def read_metrics(path: str | Path) -> list[dict[str, float]]:
    """metrics.csv as a list of dicts of floats (empty cells left out)."""
    with open(path, newline="") as f:
        return [{k: float(v) for k, v in row.items() if v not in ("", None)} for row in csv.DictReader(f)]


def progress(iterable, total: int, desc: str, enabled: bool):
    """tqdm bars on a terminal; no bar (one summary line per epoch instead) when piped or in CI."""
    if not enabled or not sys.stderr.isatty():
        return iterable
    from tqdm.auto import tqdm

    return tqdm(iterable, total=total, desc=desc, leave=False, dynamic_ncols=True)
