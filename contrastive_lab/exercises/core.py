"""Exercises that check themselves: :func:`check` runs a reader's function on a few seeded inputs
(edge cases included) against the library's implementation and says what passed and, on a failure,
which input, the expected vs received shapes or values, what went wrong when it recognises the
mistake, and a hint; never the solution. :func:`check_value` checks a number against a tolerance band
the library computes. Every chapter's ``## Exercises`` section uses them; the instructors' solutions
live outside the package, in ``solutions/NN_*.py`` (``make handout`` leaves them out).

An exercise is an :class:`Exercise`: its cases, the reference (a library function), a hint, and
:class:`Diagnosis` entries, each a plausible wrong computation with the name of its problem: when the
reader's output matches a diagnosis and not the reference, the checker names the problem ("the
diagonal is not excluded"). While the reader's stub still raises ``NotImplementedError``, the check
shows what a correct answer reports by running the instructors' solution (when ``solutions/`` is
there), without printing it.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from .. import runtime

SOLUTIONS = Path(__file__).resolve().parents[2] / "solutions"  # the repository's solutions/ folder


@dataclass(frozen=True)
class Case:
    """One input of a check: a name the reader recognises ("batch of 2", "bf16 input") and the arguments."""

    name: str
    args: tuple
    kwargs: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Diagnosis:
    """A plausible mistake: ``wrong`` computes what such an answer returns; ``problem`` names it."""

    problem: str
    wrong: Callable[..., Any]


@dataclass(frozen=True)
class Exercise:
    """A checked coding exercise (see the module docstring). ``rtol``/``atol`` apply in float64."""

    id: str
    title: str
    cases: Callable[[], Sequence[Case]]
    reference: Callable[..., Any]
    hint: str
    diagnoses: tuple[Diagnosis, ...] = ()
    rtol: float = 1e-4
    atol: float = 1e-5


@dataclass(frozen=True)
class ValueExercise:
    """A checked numerical exercise: ``band()`` computes the interval a correct answer lies in."""

    id: str
    title: str
    band: Callable[[], tuple[float, float]]
    hint: str


EXERCISES: dict[str, Exercise | ValueExercise] = {}


def register(exercise: Exercise | ValueExercise) -> Exercise | ValueExercise:
    """Add an exercise to :data:`EXERCISES` (each chapter's module under ``exercises/`` does this)."""
    if exercise.id in EXERCISES and EXERCISES[exercise.id] != exercise:
        raise ValueError(f"exercise {exercise.id} is registered twice")
    EXERCISES[exercise.id] = exercise
    return exercise


@dataclass
class CheckResult:
    """What a check found: ``passed`` and the lines it printed. As a notebook cell's last value it
    shows nothing more when the check printed already (``verbose=True``), else its lines."""

    exercise: str
    passed: bool
    lines: list[str]
    printed: bool = field(default=False, repr=False, compare=False)

    def __bool__(self) -> bool:
        return self.passed

    def _ipython_display_(self) -> None:
        """IPython's display hook: the lines once, never the dataclass's repr after them."""
        if not self.printed:
            print("\n".join(self.lines))


def _get(exercise_id: str) -> Exercise | ValueExercise:
    if exercise_id not in EXERCISES:
        raise KeyError(f"no exercise {exercise_id!r}; known: {', '.join(sorted(EXERCISES))}")
    return EXERCISES[exercise_id]


def solution(exercise_id: str) -> Any | None:
    """The instructors' solution of an exercise, from ``solutions/NN_*.py`` (``solution_NN_M``), or None
    when the solutions are not there (a class handout)."""
    chapter = exercise_id.split(".")[0]
    files = sorted(SOLUTIONS.glob(f"{chapter}_*.py"))
    if not files:
        return None
    spec = importlib.util.spec_from_file_location(f"solutions_{chapter}", files[0])
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return getattr(module, "solution_" + exercise_id.replace(".", "_"), None)


def _shape(x: Any) -> str:
    return f"shape {tuple(x.shape)}, dtype {str(x.dtype).replace('torch.', '')}" if isinstance(x, torch.Tensor) \
        else type(x).__name__


def _close(a: Any, b: Any, rtol: float, atol: float) -> bool:
    """Equal shapes and values within tolerance (compared in float64); numbers and tensors alike."""
    if isinstance(a, tuple | list) and isinstance(b, tuple | list):
        return len(a) == len(b) and all(_close(x, y, rtol, atol) for x, y in zip(a, b))
    try:
        ta = torch.as_tensor(a).detach().double().cpu()
        tb = torch.as_tensor(b).detach().double().cpu()
    except (TypeError, ValueError, RuntimeError):
        return False
    return ta.shape == tb.shape and bool(torch.allclose(ta, tb, rtol=rtol, atol=atol, equal_nan=False))


def _summary(x: Any) -> str:
    """A short description of a value for a failure message (shape and a few numbers)."""
    if isinstance(x, torch.Tensor):
        flat = x.detach().double().flatten()[:4].tolist()
        return f"{_shape(x)}, first values {[round(v, 5) for v in flat]}"
    if isinstance(x, float):
        return f"{x:.6g}"
    return repr(x)[:80]


def _run_cases(ex: Exercise, fn: Callable[..., Any]) -> tuple[bool, list[str]]:
    lines, ok = [], True
    for case in ex.cases():
        expected = ex.reference(*case.args, **case.kwargs)
        try:
            got = fn(*case.args, **case.kwargs)
        except NotImplementedError:
            raise
        except Exception as err:  # the reader's code failed on this input: say where, not how to fix it
            lines.append(f"  x case '{case.name}': your function raised {type(err).__name__}: {err}")
            ok = False
            continue
        if _close(got, expected, ex.rtol, ex.atol):
            lines.append(f"  ok case '{case.name}'")
            continue
        ok = False
        lines.append(f"  x case '{case.name}': expected {_summary(expected)}; received {_summary(got)}")
        for d in ex.diagnoses:
            if _close(got, d.wrong(*case.args, **case.kwargs), ex.rtol, ex.atol):
                lines.append(f"    the result matches a known mistake: {d.problem}")
                break
    return ok, lines


def check(exercise_id: str, fn: Callable[..., Any], verbose: bool = True) -> CheckResult:
    """Check a reader's function for exercise ``exercise_id`` (see the module docstring); prints the
    result and returns a :class:`CheckResult`."""
    ex = _get(exercise_id)
    if not isinstance(ex, Exercise):
        raise TypeError(f"exercise {exercise_id} asks for a number: use check_value({exercise_id!r}, value)")
    try:
        ok, lines = _run_cases(ex, fn)
        head = f"{ex.id} {ex.title}: " + ("all cases pass" if ok else "not yet")
        if not ok:
            lines.append(f"  hint: {ex.hint}")
    except NotImplementedError:
        ok, head = False, f"{ex.id} {ex.title}: not written yet (your function still raises NotImplementedError)"
        reference = solution(exercise_id)
        if reference is None:
            lines = ["  write it, then run this cell again (solutions are not part of this handout)"]
        else:
            good, demo = _run_cases(ex, reference)
            lines = ["  what a correct answer reports on the same inputs:", *demo]
            if not good:
                lines.append("  (the instructors' solution fails: please report this)")
                if runtime.smoke_mode():  # CI runs every check cell on the solutions: a broken one fails it
                    raise AssertionError("\n".join([f"{ex.id}: the solution fails its own check", *demo])) from None
    if verbose:
        print("\n".join([head, *lines]))
    return CheckResult(ex.id, ok, [head, *lines], printed=verbose)


def check_value(exercise_id: str, value: float | None, verbose: bool = True) -> CheckResult:
    """Check a numerical answer against the band the library computes (the band is not printed)."""
    ex = _get(exercise_id)
    if not isinstance(ex, ValueExercise):
        raise TypeError(f"exercise {exercise_id} asks for a function: use check({exercise_id!r}, fn)")
    if value is None:
        reference = solution(exercise_id)
        if reference is None:
            lines = [f"{ex.id} {ex.title}: no answer yet (replace None with your number)"]
            ok = False
        else:
            inner = check_value(exercise_id, float(reference()), verbose=False)
            if not inner.passed and runtime.smoke_mode():
                raise AssertionError(f"{ex.id}: the solution's value is outside the band its check computes")
            lines = [f"{ex.id} {ex.title}: no answer yet; a correct answer reports:", *["  " + x for x in inner.lines]]
            ok = False
    else:
        low, high = ex.band()
        ok = low <= float(value) <= high
        lines = [f"{ex.id} {ex.title}: " + ("within the band the library computes" if ok else
                                            f"{float(value):.6g} is outside the band the library computes"),
                 *([] if ok else [f"  hint: {ex.hint}"])]
    if verbose:
        print("\n".join(lines))
    return CheckResult(ex.id, ok, lines, printed=verbose)
