"""The veth pair every SECC test runs on (skipped with the reason where root, Java or .venv-secc lack)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.secc import netns


@pytest.fixture
def pair() -> Iterator[netns.Pair]:
    netns.require_peers()
    with netns.veth_pair() as p:
        yield p
