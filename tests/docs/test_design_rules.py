"""The import rules of docs/design.md#layout-and-import-rules, checked on the source.

Programs and interlocks see the runtime only through its interface modules, so that they stay pure
(frozen image in, outputs out) and can run unchanged in the scan, in replay, in the backtest and in a test
rig. A new import of the engine, a driver or the runner from ``programs/`` or ``safety/`` is the first step
to a program that does I/O or reads a clock; this test stops it at review.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.docs.refs import ROOT

# What programs/ and safety/ may import of the runtime: the interface (api, tags) and, for registration,
# the registry. Nothing that runs, schedules or talks to devices.
INTERFACE = frozenset({"runtime.api", "runtime.tags", "runtime.registry"})
LOGIC = ("programs", "safety")


def imports(path: Path) -> Iterator[tuple[int, str]]:
    """Every module a file imports, at any depth of the file (function-local imports included)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.lineno, node.module


def violations(package: str, root: Path = ROOT) -> list[str]:
    out: list[str] = []
    other = next(p for p in LOGIC if p != package)
    for path in sorted((root / package).rglob("*.py")):
        for line, mod in imports(path):
            top = mod.split(".")[0]
            rel = path.relative_to(root)
            if top == "runtime" and mod not in INTERFACE:
                out.append(f"{rel}:{line}: imports {mod}; {package}/ may use only {sorted(INTERFACE)}")
            elif top == other:
                out.append(f"{rel}:{line}: imports {mod}; {package}/ and {other}/ do not import each other")
    return out


@pytest.mark.parametrize("package", LOGIC)
def test_logic_imports_only_the_runtime_interface(package: str) -> None:
    found = violations(package)
    assert not found, "\n".join(found)


def test_the_rule_catches_an_engine_import(tmp_path: Path) -> None:
    (tmp_path / "programs").mkdir()
    (tmp_path / "safety").mkdir()
    (tmp_path / "programs" / "ok.py").write_text("from runtime.api import Program\nimport math\n")
    (tmp_path / "programs" / "bad.py").write_text("def f():\n    from runtime.engine import Engine\n")
    (tmp_path / "safety" / "cross.py").write_text("import programs.modes\n")
    assert violations("programs", tmp_path) == [
        "programs/bad.py:2: imports runtime.engine; programs/ may use only "
        "['runtime.api', 'runtime.registry', 'runtime.tags']"
    ]
    assert violations("safety", tmp_path) == [
        "safety/cross.py:1: imports programs.modes; safety/ and programs/ do not import each other"
    ]
