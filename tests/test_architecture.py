"""The intended architecture, checked over the whole package's import graph (parsed with `ast`,
as mitmproxy checks its structure by script; ../shared/STYLE.md):

* the core (`proxy/core`) does no I/O: it imports only the pure standard library, pydantic and
  orjson, the wire models (`proxy/models`) and itself;
* transport (`proxy/upstream.py`, `proxy/transport.py`) imports no translation module: it sends
  bytes where a dialect says, and maps errors with what it is given;
* errors are a leaf anyone may import: `core/errors.py` needs nothing of the package but the
  untrusted-JSON parser, which needs nothing;
* the library never imports the CLI (nor typer or rich);
* a dialect is one module: each registered dialect lives in its own module under
  `core/dialects`, and the settings accept exactly the registered names.

Imports under `if TYPE_CHECKING:` are left out: they never run.
"""

from __future__ import annotations

import ast
from functools import cache
from pathlib import Path

import pytest
from test_quality import PURE_LIBRARIES

from claude_bridge.proxy.config import Settings, UpstreamSettings
from claude_bridge.proxy.core import dialects

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "claude_bridge"
SOURCES = {"proxy": ROOT / "proxy", "cli": ROOT / "cli"}
CORE = f"{PACKAGE}.proxy.core"
MODELS = f"{PACKAGE}.proxy.models"
TRANSPORT = (f"{PACKAGE}.proxy.upstream", f"{PACKAGE}.proxy.transport")
TRANSLATION = (
    f"{CORE}.dialects",
    f"{CORE}.responses",
    f"{CORE}.request",
    f"{CORE}.response",
    f"{CORE}.stream",
    f"{CORE}.source",
    f"{CORE}.passthrough",
    f"{CORE}.nulls",
    f"{CORE}.strict",
    f"{CORE}.context",
    f"{PACKAGE}.proxy.plan",
    f"{PACKAGE}.proxy.pipeline",
)
ERRORS = f"{CORE}.errors"
ERRORS_NEEDS = {f"{CORE}.untrusted"}


def _module_name(path: Path) -> str:
    for top, folder in SOURCES.items():
        if path.is_relative_to(folder):
            parts = [PACKAGE, top, *path.relative_to(folder).with_suffix("").parts]
            return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
    raise AssertionError(path)


@cache
def _modules() -> dict[str, Path]:
    return {
        _module_name(path): path
        for folder in SOURCES.values()
        for path in sorted(folder.rglob("*.py"))
        if "__pycache__" not in path.parts
    }


def _runtime_nodes(tree: ast.AST) -> list[ast.AST]:
    """Every node, except what sits under `if TYPE_CHECKING:`."""
    found: list[ast.AST] = []
    pending: list[ast.AST] = [tree]
    while pending:
        node = pending.pop()
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            pending.extend(node.orelse)
            continue
        found.append(node)
        pending.extend(ast.iter_child_nodes(node))
    return found


@cache
def imports(module: str) -> frozenset[str]:
    """The absolute names `module` imports: `from . import x` gives the submodule `pkg.x` when
    there is one, else `pkg`."""
    path = _modules()[module]
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    names: set[str] = set()
    for node in _runtime_nodes(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1])
                base = f"{base}.{node.module}" if node.module else base
            else:
                base = node.module or ""
            for alias in node.names:
                child = f"{base}.{alias.name}"
                names.add(child if child in _modules() else base)
    return frozenset(names)


def _inside(name: str, *prefixes: str) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def _closure(module: str) -> set[str]:
    """`module` and every package module it imports, directly or not."""
    seen = {module}
    pending = [module]
    while pending:
        for name in imports(pending.pop()):
            if name in _modules() and name not in seen:
                seen.add(name)
                pending.append(name)
    return seen


def _in(prefix: str) -> list[str]:
    return [m for m in _modules() if _inside(m, prefix)]


def test_the_graph_is_found() -> None:
    """The walk sees the package: a broken walk must not pass every rule below."""
    assert f"{CORE}.stream" in _modules() and f"{PACKAGE}.cli.main" in _modules()
    assert f"{CORE}.stream" in imports(f"{CORE}.dialects.chat")
    assert _closure(f"{PACKAGE}.proxy.app") > {f"{PACKAGE}.proxy.pipeline", ERRORS}


@pytest.mark.parametrize("module", _in(CORE))
def test_the_core_does_no_io(module: str) -> None:
    for name in imports(module):
        if name.startswith(PACKAGE + "."):
            assert _inside(name, CORE, MODELS), f"{module} imports {name}"
        else:
            assert name.split(".")[0] in PURE_LIBRARIES, f"{module} imports {name}"


@pytest.mark.parametrize("module", TRANSPORT)
def test_transport_knows_no_translation(module: str) -> None:
    found = [name for name in imports(module) if _inside(name, *TRANSLATION)]
    assert found == [], f"{module} imports {found}"


def test_errors_are_a_leaf() -> None:
    assert _closure(ERRORS) == {ERRORS, *ERRORS_NEEDS}
    for needed in ERRORS_NEEDS:
        assert _closure(needed) == {needed}


@pytest.mark.parametrize("module", _in(f"{PACKAGE}.proxy"))
def test_the_library_never_imports_the_cli(module: str) -> None:
    for name in imports(module):
        assert not _inside(name, f"{PACKAGE}.cli", "typer", "rich"), f"{module} imports {name}"


def test_a_dialect_is_one_module_plus_its_registration() -> None:
    modules = {type(d).__module__ for d in dialects.DIALECTS.values()}
    assert len(modules) == len(dialects.DIALECTS), "two dialects share a module"
    assert all(m.startswith(f"{CORE}.dialects.") for m in modules)
    for name in dialects.MODES:  # the settings take every registered name, and `auto`
        assert UpstreamSettings(base_url="http://x", mode=name).mode == name
    assert Settings().mode == dialects.AUTO
