"""Chapter infrastructure: every chapter is a jupytext py:percent file with a paired .ipynb that
matches it cell for cell and carries the outputs of a demo-mode run."""

from __future__ import annotations

from pathlib import Path

import jupytext
import pytest

CHAPTERS = Path(__file__).resolve().parents[1] / "chapters"
TEXT_CHAPTERS = sorted(CHAPTERS.glob("[0-9][0-9]_*.py"))
NOTEBOOKS = sorted(CHAPTERS.glob("[0-9][0-9]_*.ipynb"))


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


@pytest.mark.parametrize("text", TEXT_CHAPTERS, ids=lambda p: p.stem)
def test_chapter_reads_the_smoke_switch_and_ends_with_exercises(text: Path):
    source = text.read_text()
    assert "contrastive_lab" in source, f"{text.name} must import from contrastive_lab"
    assert "## Exercises" in source, f"{text.name} must end with an '## Exercises' section"
