"""Chapter infrastructure: every chapter is a jupytext py:percent file with a paired .ipynb that
matches it cell for cell and carries the outputs of a demo-mode run."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import jupytext
import pytest

CHAPTERS = Path(__file__).resolve().parents[1] / "chapters"
TEXT_CHAPTERS = sorted(CHAPTERS.glob("[0-9][0-9]_*.py"))
NOTEBOOKS = sorted(CHAPTERS.glob("[0-9][0-9]_*.ipynb"))
SMOKE_SWITCH = {"smoke_mode", "pick"}  # contrastive_lab.runtime's functions that read CONTRASTIVE_LAB_SMOKE


def _cells(path: Path) -> list[tuple[str, str]]:
    notebook = jupytext.read(path)
    return [(cell.cell_type, cell.source.strip()) for cell in notebook.cells]


def test_there_are_chapters_and_each_has_both_twins():
    assert TEXT_CHAPTERS, "no chapters found"
    assert [p.stem for p in TEXT_CHAPTERS] == [p.stem for p in NOTEBOOKS], (
        "every chapters/NN_name.py needs chapters/NN_name.ipynb and vice versa (run `make sync-chapters`)"
    )


@pytest.mark.parametrize("text", TEXT_CHAPTERS, ids=lambda p: p.stem)
def test_notebook_matches_its_text_twin_cell_for_cell(text: Path):
    notebook = text.with_suffix(".ipynb")
    py_cells, nb_cells = _cells(text), _cells(notebook)
    assert len(py_cells) == len(nb_cells), f"{text.name}: {len(py_cells)} cells vs {len(nb_cells)} in .ipynb"
    for i, (a, b) in enumerate(zip(py_cells, nb_cells)):
        assert a == b, f"{text.name} cell {i} differs from the .ipynb; run `make sync-chapters`"


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_is_committed_with_outputs(notebook: Path):
    cells = jupytext.read(notebook).cells
    code = [c for c in cells if c.cell_type == "code" and c.source.strip()]
    assert code, f"{notebook.name} has no code"
    unexecuted = [i for i, c in enumerate(code) if c.get("execution_count") is None]
    assert not unexecuted, f"{notebook.name}: code cells {unexecuted} were never run; run `make execute-chapters`"
    errors = [o for c in code for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors, f"{notebook.name} was committed with an error output"


def _smoke_switch_calls(source: str) -> list[str]:
    """Calls in ``source`` to ``smoke_mode``/``pick`` imported from :mod:`contrastive_lab.runtime`.

    Both import styles count: ``from contrastive_lab.runtime import pick`` then ``pick(...)``, and
    ``from contrastive_lab import runtime`` (or ``import contrastive_lab.runtime as rt``) then
    ``runtime.pick(...)``.
    """
    tree = ast.parse(source)
    functions, modules = set(), set()  # local names bound to the switch functions / to the module
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module == "contrastive_lab.runtime":
            functions |= {a.asname or a.name for a in node.names if a.name in SMOKE_SWITCH}
        elif isinstance(node, ast.ImportFrom) and node.module == "contrastive_lab":
            modules |= {a.asname or a.name for a in node.names if a.name == "runtime"}
        elif isinstance(node, ast.Import):
            modules |= {a.asname for a in node.names if a.name == "contrastive_lab.runtime" and a.asname}
    calls = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        if isinstance(func, ast.Name) and func.id in functions:
            calls.append(func.id)
        elif isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name):
            if func.value.id in modules and func.attr in SMOKE_SWITCH:
                calls.append(f"{func.value.id}.{func.attr}")
    return calls


def _markdown_headings(path: Path) -> list[str]:
    """Every markdown heading (``#`` to ``######``) of a chapter in order, skipping fenced code."""
    headings = []
    for cell in jupytext.read(path).cells:
        if cell.cell_type != "markdown":
            continue
        in_fence = False
        for line in cell.source.splitlines():
            if line.lstrip().startswith(("```", "~~~")):
                in_fence = not in_fence
            elif not in_fence and re.match(r"#{1,6}\s", line):
                headings.append(line.strip())
    return headings


@pytest.mark.parametrize("text", TEXT_CHAPTERS, ids=lambda p: p.stem)
def test_chapter_reads_the_smoke_switch_and_ends_with_exercises(text: Path):
    calls = _smoke_switch_calls(text.read_text())
    assert calls, (
        f"{text.name} never reads the smoke switch: import smoke_mode or pick from contrastive_lab.runtime "
        "and size the chapter's work with them, so that CONTRASTIVE_LAB_SMOKE=1 runs it in seconds"
    )
    headings = _markdown_headings(text)
    assert "## Exercises" in headings, f"{text.name} must end with an '## Exercises' section"
    after = headings[len(headings) - headings[::-1].index("## Exercises") :]
    assert not after, f"{text.name}: '## Exercises' must be the last heading, but {after} follow it"


def _chapter_times():
    import importlib.util

    spec = importlib.util.spec_from_file_location("chapter_times", CHAPTERS.parent / "scripts" / "chapter_times.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_outputs_come_from_a_demo_run_of_at_most_ten_minutes(notebook: Path):
    """The committed outputs are a demo-mode run (the first cell prints "smoke mode: False"; a smoke
    run committed by mistake prints True), and the kernel's own cell timestamps put the whole run
    within the 10-minute limit of a 2-core CPU."""
    text = "".join("".join(o.get("text", "")) for c in jupytext.read(notebook).cells for o in c.get("outputs", []))
    assert "smoke mode: False" in text, f"{notebook.name}: no 'smoke mode: False' in its outputs (print it in cell 1)"
    assert "smoke mode: True" not in text, f"{notebook.name} was committed from a smoke-mode run"
    timing = _chapter_times().chapter_time(notebook)
    assert timing["minutes"] is not None, f"{notebook.name} has no execution timestamps; run `make execute-chapters`"
    assert timing["minutes"] <= 10, f"{notebook.name}: its demo run took {timing['minutes']:.1f} min (limit 10)"


def test_chapter_times_reads_the_kernel_stamps_and_the_report_line(tmp_path: Path):
    """scripts/chapter_times.py on a constructed notebook: first start to last reply, and the memory."""
    import nbformat

    nb = nbformat.v4.new_notebook()
    stamps = [("2026-12-01T10:00:00Z", "2026-12-01T10:01:00Z"), ("2026-12-01T10:01:00Z", "2026-12-01T10:04:30Z")]
    for i, (start, reply) in enumerate(stamps):
        cell = nbformat.v4.new_code_cell("print(1)", execution_count=i + 1)
        cell.metadata["execution"] = {"iopub.execute_input": start, "shell.execute_reply": reply}
        text = "smoke mode: False\n" if i == 0 else "chapter report: 4.5 min wall, peak memory 2048 MiB, demo mode\n"
        cell.outputs = [nbformat.v4.new_output("stream", name="stdout", text=text)]
        nb.cells.append(cell)
    path = tmp_path / "99_x.ipynb"
    nbformat.write(nb, path)
    got = _chapter_times().chapter_time(path)
    assert got == {"chapter": "99_x", "minutes": 4.5, "date": "2026-12-01", "mode": "demo", "memory_mib": 2048}
