"""TLS 1.3 with a site PKI (docs/iso15118.md "TLS"): the package's own TLS 1.3 between two namespaces with
a PKI made here (tests/secc/pki.py), a TLS failure as a counted failure and an event, and the site rule:
TLS is off only where the site file says ``tls: false``."""

from __future__ import annotations

import shutil
import textwrap
from pathlib import Path

import pytest

from tests.runtime.helpers import cli, stop_cli, wait_for
from tests.secc import netns, site
from tests.secc.pki import make_pki
from tests.secc.test_failures import start_silent_ev, warnings
from tests.secc.test_sessions import SESSION_S, _run, _tag

V2G_ROOT = "iso15118_2/certs/v2gRootCACert.pem"
OEM_ROOT = "iso15118_2/certs/oemRootCACert.pem"


def test_a_session_completes_over_tls_1_3_with_the_site_pki(tmp_path: Path, pair: netns.Pair) -> None:
    pki = make_pki(tmp_path / "pki")
    proc, sock = _run(tmp_path, pair, request_w=-7000.0, pki=pki)
    ev_log = tmp_path / "ev.log"
    ev = netns.start_ev(pair, netns.ev_config("-20 DC BPT", tmp_path, useTls=True), ev_log, pki=pki)
    try:
        wait_for(lambda: _tag(sock, "secc.session") is True, SESSION_S, "a session")
        wait_for(lambda: ev.poll() is not None, SESSION_S, "the EV to finish its session")
        assert ev.returncode == 0
        wait_for(lambda: _tag(sock, "secc.sessions") == 1 and _tag(sock, "secc.session") is False, 10, "its end")
        assert _tag(sock, "secc.failures") == 0
    finally:
        netns.stop(ev)
        stop_cli(proc)
    assert "TLS handshake with the EV: TLSv1.3" in (tmp_path / "secc.log").read_text(errors="replace")
    assert "Starting TLS client" in ev_log.read_text(errors="replace")
    loops = netns.decoded(ev_log, "DC_ChargeLoopRes")
    assert loops and netns.rational(loops[-1]["BPT_Scheduled_DC_CLResControlMode"]["EVSEMaximumDischargePower"]) == 7000


def test_an_ev_whose_certificate_the_site_does_not_trust_is_a_tls_failure(tmp_path: Path, pair: netns.Pair) -> None:
    """TLS 1.3 authenticates the EV too: an EV whose OEM chain ends in a root the site's PKI does not name
    (it trusts the SECC: the site's V2G root) is turned away in the handshake, by the SECC."""
    pki = make_pki(tmp_path / "pki")
    ev_pki = make_pki(tmp_path / "ev-pki", oem_root_cn="Another OEM Root")
    shutil.copy(pki / V2G_ROOT, ev_pki / V2G_ROOT)
    proc, sock = _run(tmp_path, pair, pki=pki)
    ev = netns.start_ev(pair, netns.ev_config("-20 DC BPT", tmp_path, useTls=True), tmp_path / "ev.log", pki=ev_pki)
    try:
        wait_for(lambda: (_tag(sock, "secc.failures") or 0) >= 1, SESSION_S, "the failed TLS handshake")
        failure = _tag(sock, "secc.failure")
        assert failure.startswith("tls: TLS handshake failed: CERTIFICATE_VERIFY_FAILED"), failure
        assert _tag(sock, "secc.handshake_timeouts") == 0 and _tag(sock, "secc.sessions") == 0  # not the link
        wait_for(lambda: warnings(tmp_path), 5, "the failure's event")
        assert warnings(tmp_path)[0]["data"]["failure"] == "tls"
    finally:
        netns.stop(ev)
        stop_cli(proc)


def test_an_ev_speaking_plain_tcp_to_the_tls_port_is_a_tls_failure(tmp_path: Path, pair: netns.Pair) -> None:
    proc, sock = _run(tmp_path, pair, pki=make_pki(tmp_path / "pki"))
    ev = start_silent_ev(pair, tmp_path / "silent.log", "--tls", "--hold-s", "30")
    try:
        wait_for(lambda: _tag(sock, "secc.failures") == 1, 30, "the failed TLS handshake")
        assert _tag(sock, "secc.failure").startswith("tls: TLS handshake failed")
    finally:
        netns.stop(ev)
        stop_cli(proc)


def _check(tmp: Path, params: str) -> tuple[int, str]:
    """`v2g-plc check` of the test site with ``params`` in place of its ``tls: false``."""
    path = site.write(tmp, netns.Pair("v2g-secc-x", "eth1", "v2g-ev-x", "eth2"))
    lines = textwrap.indent(params, " " * 6) if params else ""
    path.write_text(path.read_text().replace("      tls: false\n", lines))
    res = cli("check", str(path))
    return res.returncode, res.stdout + res.stderr


def test_tls_is_on_unless_the_site_says_tls_false(tmp_path: Path) -> None:
    """No root needed: `v2g-plc check` builds the device as `run` does."""
    code, out = _check(tmp_path, "")  # TLS on by default, and no PKI named
    assert code != 0 and "site.yaml" in out and "pki_path" in out and "tls: false" in out, out
    code, out = _check(tmp_path, f"pki_path: {tmp_path / 'empty'}\n")  # a PKI folder without the SECC's files
    assert code != 0 and "pki_path" in out and "cpoCertChain.pem" in out, out
    make_pki(tmp_path / "pki")
    code, out = _check(tmp_path, f"pki_path: {tmp_path / 'pki'}\n")
    assert code == 0, out
    code, out = _check(tmp_path, "tls: false\n")  # off: the site's word
    assert code == 0, out


@pytest.mark.parametrize("ev_stack", ["alert", "asyncio"])
def test_an_ev_that_does_not_trust_the_chargers_certificate_is_a_tls_failure(
    tmp_path: Path, pair: netns.Pair, ev_stack: str
) -> None:
    """The other direction: the EV's V2G root is not the site's, so the EV turns the SECC's chain away. A
    TLS stack that sends its alert (here a blocking stdlib client) fails the SECC's handshake with it; the
    package's own EV, on asyncio, closes without one, and the SECC says so."""
    pki = make_pki(tmp_path / "pki")
    ev_pki = make_pki(tmp_path / "ev-pki", v2g_root_cn="Another V2G Root")
    shutil.copy(pki / OEM_ROOT, ev_pki / OEM_ROOT)  # the SECC would trust the EV: only the EV says no
    proc, sock = _run(tmp_path, pair, pki=pki)
    if ev_stack == "alert":
        ev = start_silent_ev(pair, tmp_path / "ev.log", "--trust", str(ev_pki / V2G_ROOT))
        why = "tls: TLS handshake failed: TLSV1_ALERT_UNKNOWN_CA"
    else:
        config = netns.ev_config("-20 DC BPT", tmp_path, useTls=True)
        ev = netns.start_ev(pair, config, tmp_path / "ev.log", pki=ev_pki)
        why = "tls: TLS handshake failed: the EV closed the connection in the handshake"
    try:
        wait_for(lambda: (_tag(sock, "secc.failures") or 0) >= 1, SESSION_S, "the failed TLS handshake")
        failure = _tag(sock, "secc.failure")
        assert failure.startswith(why), failure
        assert _tag(sock, "secc.handshake_timeouts") == 0 and _tag(sock, "secc.sessions") == 0  # not the link
        wait_for(lambda: warnings(tmp_path), 5, "the failure's event")
        assert warnings(tmp_path)[0]["data"]["failure"] == "tls"
    finally:
        netns.stop(ev)
        stop_cli(proc)
    if ev_stack == "alert":
        assert "CERTIFICATE_VERIFY_FAILED" in (tmp_path / "ev.log").read_text(errors="replace")
