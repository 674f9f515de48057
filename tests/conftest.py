"""Suite-wide hooks: peers required by marked tests, and the tiers (tests/slow is the slow tier)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.peers import require_program

SLOW_DIR = Path(__file__).parent / "slow"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Everything under tests/slow belongs to `make test-slow`, marked or not."""
    for item in items:
        if SLOW_DIR in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.slow)


def pytest_runtest_setup(item: pytest.Item) -> None:
    for mark in item.iter_markers("peer"):
        require_program(*mark.args)
