"""Packaging contracts: environment.yml and pyproject.toml name the same packages, the
constraints file pins every one of them exactly, the wheel ships the C sources of the view kernels,
and `make lab` opens the .py chapters as notebooks."""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import tomllib

from contrastive_lab.views import native

ROOT = Path(__file__).resolve().parents[1]
CONDA_TO_PIP = {"pytorch": "torch"}  # conda-forge package name -> PyPI name
NOT_PACKAGES = {"python", "pip"}
JUPYTEXT_VIEWER = "Jupytext Notebook"  # the viewer (widget factory) jupyterlab-jupytext registers


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


def test_the_wheel_ships_the_c_sources_of_the_view_kernels(tmp_path: Path) -> None:
    """Built from a copy of the package (no build/ or egg-info written into the checkout): the .c files
    that views/native.py compiles on first use must be inside the wheel, beside native.py."""
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    shutil.copytree(ROOT / "contrastive_lab", src / "contrastive_lab",
                    ignore=shutil.ignore_patterns("__pycache__", "*.so"))
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
                           "-q", "-w", str(tmp_path / "dist"), str(src)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"pip wheel failed:\n{proc.stderr[-3000:]}"
    (wheel,) = (tmp_path / "dist").glob("contrastive_lab-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert "contrastive_lab/views/native.py" in names
    missing = [c for c in native.SOURCES if f"contrastive_lab/views/csrc/{c}" not in names]
    assert not missing, f"the wheel lacks {missing}: check [tool.setuptools.package-data] in pyproject.toml"


# ----------------------------------------------------------------- make lab


def make_recipe(target: str) -> list[str]:
    """The commands of ``target`` in the Makefile: the tab-indented lines after ``target:``."""
    lines = (ROOT / "Makefile").read_text().splitlines()
    start = next((i for i, line in enumerate(lines) if line.startswith(f"{target}:")), None)
    assert start is not None, f"the Makefile has no {target!r} target"
    recipe = []
    for line in lines[start + 1 :]:
        if not line.startswith("\t"):
            break
        recipe.append(line[1:])
    return recipe


def make_variable(name: str) -> str:
    """The value of ``NAME := value`` in the Makefile."""
    match = re.search(rf"^{name}\s*:?=\s*(.+?)\s*$", (ROOT / "Makefile").read_text(), re.M)
    assert match, f"the Makefile does not set {name}"
    return match.group(1)


def lab_viewer_command() -> list[str]:
    """The `make lab` command that sets the default viewer, split into arguments."""
    recipe = make_recipe("lab")
    setting = [
        i for i, line in enumerate(recipe) if "jupytext-config" in line and "set-default-viewer" in line
    ]
    launch = [i for i, line in enumerate(recipe) if "jupyter lab" in line]
    assert setting and launch, f"`make lab` must set the default viewer, then start JupyterLab: {recipe}"
    assert setting[0] < launch[0], "`make lab` must set the default viewer before it starts JupyterLab"
    return shlex.split(recipe[setting[0]])


def test_make_lab_writes_the_viewer_setting_inside_the_venv(monkeypatch: pytest.MonkeyPatch) -> None:
    args = lab_viewer_command()
    assert args[args.index("--settings-file") + 1] == "$(LAB_SETTINGS)"
    assert args[args.index("set-default-viewer") + 1 :] == ["python"], "only .py files: README.md stays text"
    assert make_variable("LAB_SETTINGS") == "$(VENV)/share/jupyter/lab/settings/overrides.json"
    assert make_variable("VENV") == ".venv"
    commands = pytest.importorskip("jupyterlab.commands")
    monkeypatch.delenv("JUPYTERLAB_DIR", raising=False)
    # JupyterLab reads <app dir>/settings/overrides.json, and its app dir is the environment's.
    assert Path(commands.get_app_dir()) / "settings" == Path(sys.prefix) / "share/jupyter/lab/settings"


def test_make_lab_viewer_setting_opens_python_files_as_jupytext_notebooks(tmp_path: Path) -> None:
    """Runs the Makefile's command against a settings file in tmp_path, fresh and with other overrides."""
    pytest.importorskip("jupytext_config")
    settings = tmp_path / "lab" / "settings" / "overrides.json"
    expected = {"@jupyterlab/docmanager-extension:plugin": {"defaultViewers": {"python": JUPYTEXT_VIEWER}}}
    make_vars = {
        "$(BIN)/jupytext-config": [sys.executable, "-m", "jupytext_config"],
        "$(LAB_SETTINGS)": [str(settings)],
    }
    command = [part for arg in lab_viewer_command() for part in make_vars.get(arg, [arg])]
    subprocess.run(command, check=True, timeout=60)
    assert json.loads(settings.read_text()) == expected
    theme = {"@jupyterlab/apputils-extension:themes": {"theme": "JupyterLab Dark"}}
    settings.write_text(json.dumps(theme))
    subprocess.run(command, check=True, timeout=60)  # keeps the overrides already there
    assert json.loads(settings.read_text()) == {**theme, **expected}


def test_jupytext_notebook_is_the_viewer_name_of_the_installed_jupytext() -> None:
    static = Path(sys.prefix) / "share/jupyter/labextensions/jupyterlab-jupytext/static"
    scripts = sorted(static.glob("*.js"))
    if not scripts:
        pytest.skip(f"jupyterlab-jupytext is not installed in {sys.prefix}")
    quoted = f'"{JUPYTEXT_VIEWER}"'
    assert any(quoted in js.read_text(errors="replace") for js in scripts), (
        f"jupyterlab-jupytext in {static} no longer registers a viewer named {quoted}: "
        "update JUPYTEXT_VIEWER and check `jupytext-config set-default-viewer`"
    )
