"""The package's shape: imports flow one way with no circle, modules stay short, the training loop
reads in one sitting, the environment is read in one place, and a new method is one file."""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "contrastive_lab"
# The data flow, lowest first: a module may import from its own layer and the layers before it.
LAYERS = [
    {"runtime", "distributed", "optim"},
    {"config", "checkpoints"},
    {"data"},
    {"views", "augment"},
    {"encoders", "heads", "text"},
    {"losses"},
    {"memory", "momentum", "batchnorm", "collapse"},
    {"cpc"},
    {"methods"},
    {"evaluate"},
    {"plots"},
    {"presets"},
    {"engine"},
    {"cli", "cli_embeddings", "__main__", "exercises"},
]


def _modules() -> dict[str, Path]:
    """Dotted name -> file for every module of the package (packages by their __init__)."""
    out = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = path
    return out


def _imports(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The package modules ``name`` imports (relative imports resolved; ``from pkg import mod`` -> pkg.mod)."""
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("contrastive_lab")}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if not target.startswith("contrastive_lab"):
                continue
            subs = {f"{target}.{a.name}" for a in node.names if f"{target}.{a.name}" in modules}
            found |= subs or {target}
            if len(subs) < len(node.names):
                found.add(target)
    return {m for m in found if m in modules and m != name}


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: _imports(name, path, modules) for name, path in modules.items()}


def _layer(module: str) -> int:
    top = module.split(".")[1] if "." in module else "__init__"
    for i, group in enumerate(LAYERS):
        if top in group:
            return i
    raise AssertionError(f"{module} is in no layer of tests/test_architecture.py: place it in the data flow")


def test_no_import_circle_inside_the_package():
    graph = _graph()
    state: dict[str, int] = {}

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycle = stack[stack.index(nxt):] + [nxt]
                raise AssertionError("import circle: " + " -> ".join(cycle))
            if nxt not in state:
                visit(nxt, stack + [nxt])
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])


def test_imports_follow_the_data_flow():
    bad = [f"{a} imports {b}" for a, targets in _graph().items() if a != "contrastive_lab"
           for b in targets if b != "contrastive_lab" and _layer(b) > _layer(a)]
    assert not bad, "imports against the data flow (tests/test_architecture.py LAYERS):\n" + "\n".join(bad)


def test_no_lazy_imports_of_the_package_inside_functions():
    """Imports of contrastive_lab modules sit at the top of a module, where the graph above sees them."""
    hidden = []
    for name, path in _modules().items():
        tree = ast.parse(path.read_text())
        for fn in ast.walk(tree):
            if isinstance(fn, ast.FunctionDef | ast.AsyncFunctionDef):
                for node in ast.walk(fn):
                    if isinstance(node, ast.ImportFrom) and (node.level or (node.module or "").startswith("contrastive_lab")):
                        hidden.append(f"{name}.{fn.name}")
    assert not hidden, f"package imports inside functions: {hidden}"


@pytest.mark.parametrize("path", sorted(PACKAGE.rglob("*.py")), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_module_is_short_and_says_what_it_holds(path):
    lines = path.read_text().splitlines()
    assert len(lines) <= 500, f"{path.name} has {len(lines)} lines; split it where a reader would look for the part"
    assert ast.get_docstring(ast.parse(path.read_text())), f"{path} needs a module docstring"


def test_the_training_loop_reads_in_one_sitting():
    from contrastive_lab.engine import loop

    source = inspect.getsource(loop.train)
    assert len(source.splitlines()) <= 100, "engine.loop.train grew past 100 lines"
    tree = ast.parse(source)
    nested = [getattr(n, "name", "lambda") for n in ast.walk(tree.body[0])
              if isinstance(n, ast.FunctionDef | ast.Lambda) and n is not tree.body[0]]
    assert not nested, f"train() defines nested functions {nested}"


def test_only_runtime_reads_the_environment():
    readers = []
    for name, path in _modules().items():
        text = path.read_text()
        if ("os.environ" in text or "getenv(" in text) and name not in ("contrastive_lab.runtime",
                                                                          "contrastive_lab.distributed"):
            readers.append(name)
    assert not readers, f"read the environment through contrastive_lab.runtime, not in {readers}"
