"""docs/faults.md is a promise: every row names the tests that prove it, and those tests must exist.

The rows' behaviour is asserted by the tests they name (they fail when a row stops being true); this test
fails when a row names no test, or a test that was renamed or deleted, so the matrix cannot rot silently.
"""

from __future__ import annotations

import ast
import re
from functools import cache
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MATRIX = ROOT / "docs" / "faults.md"
NODE = re.compile(r"`(tests/[\w/]+\.py)::([\w:\[\]-]+)`")


def rows() -> list[tuple[int, str]]:
    out = []
    for n, line in enumerate(MATRIX.read_text(encoding="utf-8").splitlines(), 1):
        if line.startswith("|") and not set(line) <= set("|-: ") and "expected safe behaviour" not in line:
            out.append((n, line))
    return out


@cache
def defined(path: str) -> frozenset[str]:
    """Names of test functions and Class::method pairs in one test module."""
    tree = ast.parse((ROOT / path).read_text(encoding="utf-8"))
    names: set[str] = set()
    for node in tree.body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            names.add(node.name)
        elif isinstance(node, ast.ClassDef):
            for sub in node.body:
                if isinstance(sub, ast.FunctionDef | ast.AsyncFunctionDef):
                    names.add(f"{node.name}::{sub.name}")
    return frozenset(names)


def test_the_matrix_has_rows() -> None:
    assert len(rows()) >= 30


def test_every_row_names_tests_that_exist() -> None:
    problems = []
    for n, line in rows():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) != 4 or not all(cells):
            problems.append(f"docs/faults.md:{n}: a row has four filled cells: fault | behaviour | recovery | tests")
            continue
        nodes = NODE.findall(cells[3])
        if not nodes:
            problems.append(
                f"docs/faults.md:{n}: names no test node id (a tests/ file, '::', a test name, in backticks)"
            )
        for path, name in nodes:
            name = name.split("[", 1)[0]
            if not (ROOT / path).is_file():
                problems.append(f"docs/faults.md:{n}: {path} does not exist")
            elif name not in defined(path):
                problems.append(f"docs/faults.md:{n}: {path} has no test {name}")
    assert not problems, "\n".join(problems)
