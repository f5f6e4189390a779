"""The tooling bar as tests: ruff, mypy --strict, and the core's dependency rules."""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CORE = ROOT / "proxy" / "core"
PURE_STDLIB = {
    "__future__",
    "abc",
    "base64",
    "collections",
    "dataclasses",
    "enum",
    "fnmatch",
    "functools",
    "hashlib",
    "itertools",
    "json",
    "math",
    "re",
    "secrets",
    "string",
    "struct",
    "typing",
}
# Computation only, like the stdlib above: validation, and the fast JSON parser and encoder.
PURE_LIBRARIES = PURE_STDLIB | {"pydantic", "orjson"}


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            names.add("." * node.level + (node.module or ""))
    return names


@pytest.mark.parametrize("path", sorted(CORE.rglob("*.py")), ids=lambda p: str(p.relative_to(CORE)))
def test_core_is_pure(path: Path) -> None:
    """The core (and its subpackages) imports the models, itself, pydantic, orjson and pure
    stdlib: no I/O, clock or env."""
    package = path.parent.relative_to(ROOT).parts  # ("proxy", "core", ...)
    for name in _imports(path):
        if name.startswith("."):
            level = len(name) - len(name.lstrip("."))
            target = [*package[: len(package) - level + 1], *name.lstrip(".").split(".")]
            assert target[:2] in (["proxy", "core"], ["proxy", "models"]), f"{path.name}: {name}"
        else:
            assert name.split(".")[0] in PURE_LIBRARIES, f"{path.name}: {name}"


@pytest.mark.parametrize("path", sorted((ROOT / "proxy").rglob("*.py")), ids=lambda p: p.name)
def test_proxy_never_imports_the_cli(path: Path) -> None:
    for name in _imports(path):
        assert name.split(".")[0] not in {"typer", "rich"}, f"{path}: {name}"
        assert "cli" not in name.split("."), f"{path}: {name}"


def test_every_package_is_installed() -> None:
    """`pip install .` (the README's command, not editable) copies only the packages that
    pyproject.toml lists: a package missing there is missing from the install."""
    setuptools = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    found = {
        "claude_bridge." + ".".join(init.parent.relative_to(ROOT).parts)
        for top in setuptools["package-dir"].values()
        for init in (ROOT / top).rglob("__init__.py")
    }
    assert found == set(setuptools["packages"])


def test_ruff() -> None:
    ruff = shutil.which("ruff", path=str(Path(sys.executable).parent)) or shutil.which("ruff")
    if ruff is None:
        pytest.skip("ruff is not installed")
    result = subprocess.run(
        [ruff, "check", "--output-format", "concise", "proxy", "cli", "tests", "bench"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_mypy_strict() -> None:
    pytest.importorskip("mypy")
    env = {**os.environ, "PYTHON": sys.executable, "MYPY_CACHE": str(ROOT / ".cache" / "mypy")}
    result = subprocess.run(
        ["bash", str(ROOT / ".ci" / "typecheck")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
        env=env,
    )
    assert result.returncode == 0, result.stdout + result.stderr
