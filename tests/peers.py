"""Real peers (brokers, firewall tools, browsers) that some tests need: skip locally, fail in CI.

A developer without mosquitto still gets a green `make test`, told which command installs what was
skipped. CI (``.ci/run``) sets ``V2G_REQUIRE_PEERS=1``: there a missing peer is a failure, so a test that
proves something against a real peer can never pass there by being skipped.
"""

from __future__ import annotations

import os
import shutil

import pytest

REQUIRE_ENV = "V2G_REQUIRE_PEERS"


def required() -> bool:
    """True where a missing peer must fail the test (CI), not skip it."""
    return os.environ.get(REQUIRE_ENV, "") not in ("", "0")


def require(peer: str, found: bool, install: str) -> None:
    """Skip (locally) or fail (``V2G_REQUIRE_PEERS=1``) unless ``found``; ``install`` is the command that
    provides ``peer``, shown either way."""
    if found:
        return
    why = f"{peer} is not available here (install: {install})"
    if required():
        pytest.fail(f"{why}; {REQUIRE_ENV}=1 makes a missing peer a failure", pytrace=False)
    pytest.skip(why)


def require_program(program: str, install: str) -> str:
    """The path of ``program`` on PATH (or an absolute path that exists), else skip or fail as above."""
    path = program if os.path.isabs(program) and os.access(program, os.X_OK) else shutil.which(program)
    require(program, path is not None, install)
    assert path is not None
    return path


# Install commands of the peers the suite uses, in one place (Debian/Ubuntu package names).
MOSQUITTO = "apt-get install mosquitto"
NFTABLES = "apt-get install nftables"
SYSTEMD = "apt-get install systemd"


def needs(program: str, install: str) -> pytest.MarkDecorator:
    """Decorator form of :func:`require_program` for a whole test: ``@needs("nft", NFTABLES)``
    (tests/conftest.py checks the mark before the test runs)."""
    return pytest.mark.peer(program, install)
