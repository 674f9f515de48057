"""The repository stands on its own: every document or file it refers to exists, and every document in
docs/ can be reached from the README or the design document."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.docs.refs import ROOT, check, check_file, reachable, source_files


def test_every_reference_names_a_file_that_exists() -> None:
    broken = check(source_files())
    assert not broken, "references to files that do not exist:\n" + "\n".join(map(str, broken))


def test_every_document_in_docs_is_reachable_from_readme_or_design() -> None:
    docs = set((ROOT / "docs").glob("*.md"))
    assert ROOT / "docs" / "design.md" in docs
    reached = reachable([ROOT / "README.md", ROOT / "docs" / "design.md"])
    orphans = sorted(p.name for p in docs - reached)
    assert not orphans, f"documents no link leads to from README.md or docs/design.md: {orphans}"


def test_design_document_is_linked_from_the_readme_path() -> None:
    """A newcomer starting at the README finds the design (directly or through a linked document)."""
    assert (ROOT / "docs" / "design.md").resolve() in reachable([ROOT / "README.md"])


@pytest.mark.parametrize(
    "text,ref",
    [
        ("See [the plan](missing.md).", "missing.md"),
        ("See [design](docs/design.md#no-such-section).", "docs/design.md#no-such-section"),
        ("See [self](#nowhere).", "#nowhere"),
        ("The contract: DESIGN.md, section Tags.", "DESIGN.md"),
        ("Numbers from docs/nothing_here.md.", "docs/nothing_here.md"),
        ("Code: `runtime/not_a_module.py`.", "runtime/not_a_module.py"),
        ("Proved by `tests/test_x.py::test_b`.", "tests/test_x.py::test_b"),
    ],
)
def test_the_checker_finds_each_kind_of_broken_reference(tmp_path: Path, text: str, ref: str) -> None:
    """The checker is only worth its green if it goes red: one broken reference of each kind."""
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "design.md").write_text("# Design\n\n## Tags\n")
    (tmp_path / "runtime").mkdir()
    (tmp_path / "tests").mkdir()
    (tmp_path / "tests" / "test_x.py").write_text("def test_a() -> None:\n    pass\n")
    doc = tmp_path / "page.md"
    doc.write_text(f"# Page\n\n{text}\n")
    broken = check_file(doc, tmp_path)
    assert [b.ref for b in broken] == [ref], broken
    assert broken[0].line == 3


@pytest.mark.parametrize(
    "text",
    [
        "See [design](docs/design.md#tags) and [page](#page).",
        "Section `docs/design.md#tags`, and the web: [x](https://example.org/a.md).",
        "Proved by `tests/test_x.py::test_a`.",
        "Latches persist in `runtime/sites/var/state.json` (made at run time).",
        "A heading in a code block does not count:\n```\nDESIGN.md\n```",
    ],
)
def test_the_checker_accepts_references_that_exist(tmp_path: Path, text: str) -> None:
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "design.md").write_text("# Design\n\n## Tags\n")
    (tmp_path / "tests").mkdir()
    (tmp_path / "tests" / "test_x.py").write_text("def test_a() -> None:\n    pass\n")
    (tmp_path / ".gitignore").write_text(".venv/\nruntime/sites/var/\n*.pyc\n")
    doc = tmp_path / "page.md"
    doc.write_text(f"# Page\n\n{text}\n")
    broken = check_file(doc, tmp_path)
    if "```" in text:
        # Fenced text is still text a reader follows: a DESIGN.md in a code block is still a dangling name.
        assert [b.ref for b in broken] == ["DESIGN.md"]
    else:
        assert broken == []


def test_an_orphan_document_is_found(tmp_path: Path) -> None:
    (tmp_path / "docs").mkdir()
    (tmp_path / "README.md").write_text("[a](docs/a.md)\n")
    (tmp_path / "docs" / "a.md").write_text("[b](b.md)\n")
    (tmp_path / "docs" / "b.md").write_text("# B\n")
    (tmp_path / "docs" / "orphan.md").write_text("# O\n")
    got = reachable([tmp_path / "README.md"], tmp_path)
    assert {p.name for p in got} == {"README.md", "a.md", "b.md"}
