"""Exercises that check themselves (every chapter's ``## Exercises`` section).

``check("04.2", my_nt_xent)`` runs your function on seeded inputs against the library and prints what
passed, or which input failed, what was expected and received, the mistake when it recognises it, and
a hint; ``check_value("04.6", x)`` checks a number against a band the library computes. The
instructors' solutions and model answers live in ``solutions/`` (not in the package; ``make
handout`` copies the book without them). One module per chapter registers its exercises.
"""

import importlib
import pkgutil

from .core import (
    EXERCISES,
    Case,
    CheckResult,
    Diagnosis,
    Exercise,
    ValueExercise,
    check,
    check_value,
    solution,
)

__all__ = ["EXERCISES", "Case", "CheckResult", "Diagnosis", "Exercise", "ValueExercise", "check", "check_value",
    "solution"]

# Each chapter's module (``chNN.py``) registers its exercises when imported; importing them all here
# means ``check("07.2", ...)`` works whatever the reader imported first.
for _module in sorted(m.name for m in pkgutil.iter_modules(__path__) if m.name.startswith("ch")):
    importlib.import_module(f"{__name__}.{_module}")
