"""The layout of the project (issue 13): which files ship to the Hub, which way the imports go, how big a module gets,
and that every tool's entry points (console script, `python -m`, package data) are where pyproject.toml says.

Dependency direction, one way: remote-code core  <-  hub_cards  <-  tool subpackages / dataset_scripts / train.
Imports are read with `ast`, including those inside functions, so a lazy import cannot hide a wrong direction.
"""

import ast
import importlib
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
PACKAGE = REPO_ROOT / "modeling_mobileclip"
# The flat remote-code modules `save_pretrained` copies into a Hub repo (and `__init__.py`, which registers them).
SHIPPED_MODULES = ("configuration_mobileclip", "modeling_mobileclip", "processing_mobileclip",
                   "tokenization_mobileclip", "image_processing_mobileclip")
CORE_FILES = [PACKAGE / f"{name}.py" for name in SHIPPED_MODULES] + [PACKAGE / "__init__.py"]
PROJECT_ROOTS = ("modeling_mobileclip", "hub_cards", "dataset_scripts", "train_accelerate")
TOOL_SUBPACKAGES = ("conversion", "evaluation", "export")  # training: train_accelerate.py is its entry point


def python_files(tree: str) -> list[Path]:
    return sorted(p for p in (REPO_ROOT / tree).rglob("*.py") if "__pycache__" not in p.parts)


def module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO_ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(path: Path) -> list[tuple[int, str]]:
    """(line, absolute module name) of every import in `path`; `from . import x` yields `package.x`."""
    package = module_name(path) if path.name == "__init__.py" else module_name(path).rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([node.module] if node.module else []))
            found += ([(node.lineno, base)] if node.module else
                      [(node.lineno, f"{base}.{alias.name}") for alias in node.names])
    return found


def project_part(name: str) -> str | None:
    """Which part of this project `name` belongs to: "core", "tool:<name>" (a module or subpackage of
    modeling_mobileclip that is not remote code), "hub_cards", "dataset_scripts", "train_accelerate"; None for
    third-party and standard-library modules."""
    parts = name.split(".")
    if parts[0] not in PROJECT_ROOTS:
        return None
    if parts[0] != "modeling_mobileclip":
        return parts[0]
    if len(parts) == 1 or parts[1] in SHIPPED_MODULES:
        return "core"
    if (PACKAGE / parts[1]).is_dir() or (PACKAGE / f"{parts[1]}.py").is_file():
        return f"tool:{parts[1]}"
    return "core"  # a name the package's __init__ exports, e.g. `from .. import MobileCLIPModel`


def violations(files: list[Path], allowed) -> list[str]:
    return [f"{path.relative_to(REPO_ROOT)}:{line} imports {name}"
            for path in files for line, name in imported_modules(path)
            if (part := project_part(name)) is not None and not allowed(path, part)]


def test_the_import_reader_resolves_relative_imports():
    cli = PACKAGE / "conversion" / "cli.py"
    names = {name for _, name in imported_modules(cli)}
    assert {"modeling_mobileclip.configuration_mobileclip", "modeling_mobileclip.conversion.convert",
            "hub_cards.push"} <= names
    assert project_part("modeling_mobileclip.conversion.convert") == "tool:conversion"
    assert project_part("modeling_mobileclip.MobileCLIPModel") == "core" and project_part("torch") is None


def test_remote_code_core_imports_only_itself():
    """The shipped modules and `__init__` import nothing from hub_cards, dataset_scripts, train_accelerate or the
    tools; the shipped ones reach each other only as `from .<module> import`, the one form the Hub resolves."""
    assert violations(CORE_FILES, lambda path, part: part == "core") == []
    for path in CORE_FILES[:-1]:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.level:
                assert node.level == 1 and node.module in SHIPPED_MODULES, (
                    f"{path.name}:{node.lineno}: remote code imports siblings only as `from .<module> import`")


def test_hub_cards_import_only_the_remote_code_core():
    files = python_files("hub_cards")
    assert violations(files, lambda path, part: part in ("core", "hub_cards")) == []


def test_neither_core_nor_hub_cards_imports_dataset_scripts_or_train_accelerate():
    files = CORE_FILES + python_files("hub_cards")
    assert violations(files, lambda path, part: part not in ("dataset_scripts", "train_accelerate")) == []


def test_the_package_root_holds_only_the_remote_code_modules():
    """A reader sees at once what ships to the Hub: every other module of the package lives in a subpackage."""
    root_modules = sorted(p.stem for p in PACKAGE.glob("*.py") if p.name != "__init__.py")
    assert root_modules == sorted(SHIPPED_MODULES)


def line_count(path: Path) -> int:
    return len(path.read_text(encoding="utf-8").splitlines())


@pytest.mark.parametrize("tree", ["modeling_mobileclip", "hub_cards", "dataset_scripts"])
def test_every_module_fits_in_650_lines(tree):
    too_long = {str(p.relative_to(REPO_ROOT)): n for p in python_files(tree) if (n := line_count(p)) > 650}
    assert too_long == {}


def test_train_accelerate_fits_in_350_lines():
    assert line_count(REPO_ROOT / "train_accelerate.py") <= 350


PYPROJECT = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text(encoding="utf-8"))


@pytest.mark.parametrize("script", sorted(PYPROJECT["project"]["scripts"]))
def test_console_scripts_name_a_function(script):
    module, _, function = PYPROJECT["project"]["scripts"][script].partition(":")
    assert callable(getattr(importlib.import_module(module), function))


@pytest.mark.parametrize("subpackage", TOOL_SUBPACKAGES)
def test_python_dash_m_runs_each_tool(subpackage):
    done = subprocess.run([sys.executable, "-m", f"modeling_mobileclip.{subpackage}", "--help"], cwd=REPO_ROOT,
                          env={**os.environ, "HF_HUB_OFFLINE": "1"}, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.startswith(f"usage: python -m modeling_mobileclip.{subpackage} ")


def test_package_data_ships_every_file_that_is_not_a_module():
    """Files a wheel carries only through `[tool.setuptools.package-data]` (templates, class names, the `evaluate`
    metric scripts loaded by path, card templates) are all matched by its globs."""
    shipped = set()
    for package, patterns in PYPROJECT["tool"]["setuptools"]["package-data"].items():
        folder = REPO_ROOT / package.replace(".", "/")
        shipped |= {path for pattern in patterns for path in folder.glob(pattern)}
    for tree in ("modeling_mobileclip", "hub_cards"):
        data = [p for p in (REPO_ROOT / tree).rglob("*") if p.is_file() and "__pycache__" not in p.parts
                and not (p.suffix == ".py" and (p.parent / "__init__.py").is_file())]
        assert [str(p.relative_to(REPO_ROOT)) for p in data if p not in shipped] == []
