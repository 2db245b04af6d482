"""Packaging contracts: environment.yml and pyproject.toml name the same packages, and the
constraints file pins every one of them exactly."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import tomllib

ROOT = Path(__file__).resolve().parents[1]
CONDA_TO_PIP = {"pytorch": "torch"}  # conda-forge package name -> PyPI name
NOT_PACKAGES = {"python", "pip"}


def _name(requirement: str) -> str:
    """'torch>=2.2' -> 'torch' (PEP 508 name, lower-cased, '_' and '.' folded to '-')."""
    match = re.match(r"\s*([A-Za-z0-9_.\-]+)", requirement)
    assert match, f"cannot parse requirement {requirement!r}"
    return re.sub(r"[-_.]+", "-", match.group(1)).lower()


def pyproject_packages() -> tuple[set[str], set[str]]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    runtime = {_name(r) for r in project["dependencies"]}
    dev = {_name(r) for r in project["optional-dependencies"]["dev"]}
    return runtime, dev


def conda_packages() -> set[str]:
    """The conda dependency names in environment.yml (a tiny reader: no YAML library needed)."""
    names = set()
    for line in (ROOT / "environment.yml").read_text().splitlines():
        item = re.match(r"^  - ([A-Za-z0-9_.\-]+)", line)  # top-level list items only
        if item:
            names.add(CONDA_TO_PIP.get(item.group(1), _name(item.group(1))))
    return names - NOT_PACKAGES - {"conda-forge"}


def test_environment_yml_names_the_same_packages_as_pyproject():
    runtime, dev = pyproject_packages()
    conda = conda_packages()
    assert conda == runtime | dev, (
        f"only in environment.yml: {sorted(conda - runtime - dev)}; "
        f"only in pyproject.toml: {sorted((runtime | dev) - conda)}"
    )


def test_environment_yml_installs_the_package_itself():
    text = (ROOT / "environment.yml").read_text()
    assert "conda-forge" in text
    assert re.search(r"^\s+- -e \.\s*$", text, re.M), "environment.yml must `pip install -e .`"


def test_required_runtime_dependencies_are_declared_as_ranges():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    runtime = {_name(r): r for r in project["dependencies"]}
    for name in ["torch", "torchvision", "einops", "matplotlib", "numpy", "pillow", "tqdm"]:
        assert name in runtime, f"{name} missing from [project].dependencies"
        assert "==" not in runtime[name], f"{runtime[name]}: pin exact versions in constraints.txt, not here"
    assert project["requires-python"] == ">=3.10"


@pytest.mark.parametrize("name", ["torch", "torchvision", "pytest", "nbmake", "jupytext", "jupyterlab", "ruff"])
def test_constraints_pin_exact_versions(name):
    pins = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        if line and not line.startswith("#"):
            assert "==" in line, f"constraints.txt line {line!r} is not an exact pin"
            pins[_name(line)] = line.split("==")[1]
    assert name in pins
    if name == "torch":
        assert pins[name] == "2.14.1"
    if name == "torchvision":
        assert pins[name] == "0.29.1"


def test_every_declared_dependency_is_pinned():
    runtime, dev = pyproject_packages()
    pinned = {
        _name(line)
        for line in (ROOT / "constraints.txt").read_text().splitlines()
        if line and not line.startswith("#")
    }
    assert (runtime | dev) <= pinned, f"not pinned: {sorted((runtime | dev) - pinned)}"
