"""The README's table of trips says how each one resets; it must agree with the code."""

from __future__ import annotations

from pathlib import Path

from safety.supervisor import TRIP_KINDS

ROOT = Path(__file__).resolve().parents[2]


def _section(text: str) -> str:
    start = text.index("<!-- section: safety")
    end = text.index("<!-- section:", start + 10)
    return text[start:end]


def test_readme_reset_table_matches_the_code() -> None:
    rows = [line for line in _section((ROOT / "README.md").read_text()).splitlines() if line.startswith("| `")]
    for code, kind in TRIP_KINDS.items():
        row = next((r for r in rows if f"`{code}`" in r.split("|")[1]), None)
        assert row is not None, f"README safety table lacks {code}"
        how = row.split("|")[3]
        if kind == "operator":
            assert "operator reset" in how, row
        else:
            assert "by itself" in how, row
            assert ("enter service" in how) == (kind == "grid"), row


def test_docs_table_lists_every_trip() -> None:
    text = (ROOT / "docs" / "safety.md").read_text()
    for code in TRIP_KINDS:
        assert f"`{code}`" in text, code
