"""The exercises' checks can fail: every check passes the instructors' solution and fails at least one
plausible wrong answer per exercise, naming the problem where the checker knows it; every coding
exercise tries edge cases; the solutions never appear in the handout."""

from __future__ import annotations

import importlib
import math
from pathlib import Path

import pytest

from contrastive_lab.exercises import EXERCISES, Exercise, check, check_value, solution

ROOT = Path(__file__).resolve().parents[1]


def _mistakes(exercise_id: str) -> list:
    chapter = exercise_id.split(".")[0]
    module = importlib.import_module(f"tests.exercises.mistakes_{chapter}")
    return module.MISTAKES.get(exercise_id, [])


def _run(exercise_id, answer):
    ex = EXERCISES[exercise_id]
    return check(exercise_id, answer, verbose=False) if isinstance(ex, Exercise) else \
        check_value(exercise_id, answer, verbose=False)


@pytest.mark.parametrize("exercise_id", sorted(EXERCISES))
def test_the_solution_passes(exercise_id):
    answer = solution(exercise_id)
    assert answer is not None, f"solutions/ has no solution_{exercise_id.replace('.', '_')}"
    result = _run(exercise_id, answer if isinstance(EXERCISES[exercise_id], Exercise) else answer())
    assert result.passed, "\n".join(result.lines)


@pytest.mark.parametrize("exercise_id", sorted(EXERCISES))
def test_plausible_wrong_answers_fail_and_name_the_problem(exercise_id):
    mistakes = _mistakes(exercise_id)
    assert mistakes, f"tests/exercises/mistakes_{exercise_id[:2]}.py lists no wrong answer for {exercise_id}"
    for wrong, problem in mistakes:
        result = _run(exercise_id, wrong)
        text = "\n".join(result.lines)
        assert not result.passed, f"{exercise_id} accepted a wrong answer {getattr(wrong, '__name__', wrong)}"
        assert "hint:" in text  # a hint, and never the solution's code
        if problem:
            assert problem in text, f"{exercise_id}: expected the diagnosis {problem!r} in\n{text}"


@pytest.mark.parametrize("exercise_id", sorted(k for k, v in EXERCISES.items() if isinstance(v, Exercise)))
def test_coding_exercises_try_several_cases_including_edge_cases(exercise_id):
    cases = EXERCISES[exercise_id].cases()
    assert len(cases) >= 3, f"{exercise_id} checks only {len(cases)} inputs"


def test_an_untouched_stub_shows_what_a_correct_answer_reports_without_passing(capsys):
    def stub(*args, **kwargs):
        raise NotImplementedError

    result = check("04.2", stub)
    out = capsys.readouterr().out
    assert not result.passed and "not written yet" in out and "what a correct answer reports" in out
    assert "ok case" in out and "def " not in out  # the solution's report, not its code
    value = check_value("04.6", None)
    assert not value.passed and "within the band" in capsys.readouterr().out


def test_a_failure_names_the_input_and_the_shapes(capsys):
    import torch

    result = check("04.2", lambda z1, z2, t: torch.zeros(2))
    out = capsys.readouterr().out
    assert not result.passed and "case 'batch of 2" in out and "expected shape ()" in out and "received shape (2,)" in out
    result = check("04.2", lambda z1, z2, t: 1 / 0)
    assert "raised ZeroDivisionError" in capsys.readouterr().out


def test_the_band_is_not_printed_on_success_or_failure(capsys):
    check_value("04.6", math.log(2 * 4096 - 1))
    check_value("04.6", 1.0)
    out = capsys.readouterr().out
    assert "9.01" not in out and "9.0" not in out.replace("9.01", "")


def test_the_handout_holds_no_solution_code(tmp_path):
    """``make handout``'s copy: no solutions/ folder, no solution function body anywhere in its code or
    notebooks, and its check cells say the solutions are not included."""
    import ast
    import json
    import subprocess
    import sys

    out = tmp_path / "handout"
    done = subprocess.run([sys.executable, str(ROOT / "scripts" / "make_handout.py"), str(out)], capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert (out / "chapters").is_dir() and (out / "contrastive_lab" / "exercises").is_dir()
    assert not (out / "solutions").exists() and not (out / "tests" / "exercises").exists()

    def bodies(tree) -> set[str]:
        return {ast.dump(ast.Module(body=fn.body, type_ignores=[])) for fn in ast.walk(tree)
                if isinstance(fn, ast.FunctionDef) and len(fn.body) > 1}

    secret = set().union(*(bodies(ast.parse(p.read_text())) for p in (ROOT / "solutions").glob("*.py")))
    assert secret, "no solution functions found to look for"
    sources = [p.read_text() for p in out.rglob("*.py")]
    for nb in out.rglob("*.ipynb"):
        sources += ["".join(c["source"]) for c in json.loads(nb.read_text())["cells"] if c["cell_type"] == "code"]
    for source in sources:
        try:
            tree = ast.parse(source)
        except SyntaxError:  # notebook cells with magics: compare their text instead
            continue
        assert not bodies(tree) & secret, "solution code found in the handout"
    probe = ("from contrastive_lab.exercises import check\n"
             "def stub(*a):\n    raise NotImplementedError\n"
             "check('04.2', stub)\n")
    ran = subprocess.run([sys.executable, "-c", probe], cwd=out, capture_output=True, text=True, timeout=120,
                         env={"PYTHONPATH": str(out), "PATH": "/usr/bin:/bin"})
    assert "solutions are not part of this handout" in ran.stdout, ran.stdout + ran.stderr


def test_in_smoke_mode_a_check_cell_fails_when_the_solution_fails_its_check(monkeypatch):
    """nbmake runs the chapters' check cells (untouched stubs) in smoke mode: there, a solution that no
    longer passes its own check must fail the cell, not print a note nobody reads."""
    from contrastive_lab import runtime
    from contrastive_lab.exercises import core

    def stub(*args):
        raise NotImplementedError

    monkeypatch.setenv(runtime.SMOKE_ENV, "1")
    assert not check("04.2", stub, verbose=False).passed  # the solution passes: only the stub "fails"
    monkeypatch.setattr(core, "solution", lambda exercise_id: (lambda z1, z2, t: 2 * solution("04.2")(z1, z2, t)))
    with pytest.raises(AssertionError, match="the solution fails its own check"):
        check("04.2", stub, verbose=False)
    monkeypatch.setenv(runtime.SMOKE_ENV, "0")
    assert "please report this" in "\n".join(check("04.2", stub, verbose=False).lines)


def _chapter_texts() -> list[Path]:
    return sorted((ROOT / "chapters").glob("[0-9][0-9]_*.py"))


@pytest.mark.parametrize("text", _chapter_texts(), ids=lambda p: p.stem)
def test_every_chapter_has_three_exercises_two_of_them_checked_in_its_own_cells(text: Path):
    """Issue 22's acceptance: at least 3 numbered exercises after '## Exercises', at least 2 of them with a
    check cell; every exercise the chapter checks is registered, and every registered exercise of the
    chapter has its check cell there (so nbmake runs it in smoke mode)."""
    import re

    source = text.read_text()
    exercises = source[source.rindex("# ## Exercises"):]
    numbered = re.findall(r"^# (\d+)\. ", exercises, flags=re.M)
    assert len(numbered) >= 3, f"{text.name}: {len(numbered)} numbered exercises, want at least 3"
    chapter = text.name[:2]
    called = set(re.findall(rf"""^check(?:_value)?\(["']({chapter}\.\d+)["']""", exercises, flags=re.M))
    registered = {k for k in EXERCISES if k.startswith(chapter + ".")}
    assert len(called) >= 2, f"{text.name}: {len(called)} checked exercises ({sorted(called)}), want at least 2"
    assert called == registered, f"{text.name}: check cells for {sorted(called)}, registered {sorted(registered)}"
    assert {c.split(".")[1] for c in called} <= set(numbered), f"{text.name}: a check for an exercise not listed"


def test_a_check_cell_shows_its_lines_once_and_not_the_results_repr(capsys):
    """The check is a cell's last expression: IPython's display hook must add nothing after the lines
    check printed (no ``CheckResult(exercise=...)`` repr), and show the lines of a quiet check."""
    from IPython.core.formatters import DisplayFormatter

    formatter = DisplayFormatter()
    loud = check("04.2", solution("04.2"))
    printed = capsys.readouterr().out
    assert "04.2" in printed and formatter.format(loud) == ({}, {})
    assert capsys.readouterr().out == ""
    quiet = check("04.2", solution("04.2"), verbose=False)
    assert capsys.readouterr().out == "" and formatter.format(quiet) == ({}, {})
    assert capsys.readouterr().out == printed
