"""A missing peer skips with its install command locally and fails under V2G_REQUIRE_PEERS=1 (CI)."""

from __future__ import annotations

import pytest

from tests.localapi.conftest import INSTALL, need_peer


def test_missing_peer_skips_with_install_command(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("V2G_REQUIRE_PEERS", raising=False)
    with pytest.raises(pytest.skip.Exception, match=INSTALL):
        need_peer("no-such-broker-v2g")


def test_missing_peer_fails_when_peers_are_required(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("V2G_REQUIRE_PEERS", "1")
    with pytest.raises(pytest.fail.Exception, match=INSTALL):
        need_peer("no-such-broker-v2g")
