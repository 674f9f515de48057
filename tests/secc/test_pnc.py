"""Plug and Charge between two namespaces (docs/iso15118.md "Plug and Charge"): the package's EV presents its
contract certificate over TLS 1.3, the runtime's SECC checks the chain against the site's MO roots, and
the eMAID reaches the runtime's tags; an expired or untrusted contract is refused with the protocol's
response code, or goes on as EIM where the site file allows it."""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

from tests.runtime.helpers import stop_cli, wait_for
from tests.secc import netns, site
from tests.secc.pki import EMAID, MO_ROOTS, make_contract, make_pki
from tests.secc.test_failures import warnings
from tests.secc.test_sessions import SESSION_S, _tag, start_runtime


def _run_pnc(tmp: Path, pair: netns.Pair, pki: Path, *, fallback: bool = False, **kw: Any) -> tuple[Any, Path]:
    """The test site with TLS, ``auth_modes: [PNC, EIM]`` and the PKI's MO root as the site's trust store."""
    path = site.write(tmp, pair, pki=pki, **kw)
    pnc = f"      auth_modes: [PNC, EIM]\n      mo_roots: {pki / MO_ROOTS}\n"
    pnc += "      pnc_fallback_eim: true\n" if fallback else ""
    text = path.read_text()
    path.write_text(text.replace(f"      pki_path: {pki}\n", f"      pki_path: {pki}\n{pnc}"))
    assert pnc in path.read_text()
    proc = start_runtime(path)
    sock = tmp / "control.sock"
    try:
        wait_for(lambda: proc.poll() is not None or _tag(sock, "secc.state") == "Idle", 180, "the SECC to listen")
        assert proc.poll() is None
    except AssertionError:
        err = stop_cli(proc)
        raise AssertionError(f"SECC never came up:\n{err[-3000:]}") from None
    return proc, sock


def _ev(pair: netns.Pair, tmp: Path, ev_pki: Path, config: str = "-20 DC BPT") -> subprocess.Popen[bytes]:
    return netns.start_ev(pair, netns.ev_config(config, tmp, useTls=True), tmp / "ev.log", pki=ev_pki)


def _auth_codes(tmp: Path, res: str = "AuthorizationRes") -> list[str]:
    return [r["ResponseCode"] for r in netns.decoded(tmp / "ev.log", res)]


def test_a_contract_the_site_trusts_is_plug_and_charge_and_its_emaid_reaches_the_tags(
    tmp_path: Path, pair: netns.Pair
) -> None:
    pki = make_pki(tmp_path / "pki")
    proc, sock = _run_pnc(tmp_path, pair, pki, request_w=-7000.0)
    ev = _ev(pair, tmp_path, pki)
    seen: dict[str, Any] = {}
    try:

        def identified() -> bool:
            seen.update(auth=_tag(sock, "secc.auth"), contract_id=_tag(sock, "secc.contract_id"))
            return seen["auth"] is not None

        wait_for(identified, SESSION_S, "the session's identification")
        assert seen == {"auth": "PnC", "contract_id": EMAID}
        assert _tag(sock, "secc.contract_refused") is None
        wait_for(lambda: ev.poll() is not None, SESSION_S, "the EV to finish its session")
        assert ev.returncode == 0
        wait_for(lambda: _tag(sock, "secc.session") is False, 10, "the session's end")
        assert _tag(sock, "secc.failures") == 0
        assert _tag(sock, "secc.auth") is None and _tag(sock, "secc.contract_id") is None  # cleared at the end
    finally:
        netns.stop(ev)
        stop_cli(proc)
    setup = netns.decoded(tmp_path / "ev.log", "AuthorizationSetupRes")
    assert setup and "PnC" in setup[0]["AuthorizationServices"], setup
    assert _auth_codes(tmp_path) == ["OK"]
    loops = netns.decoded(tmp_path / "ev.log", "DC_ChargeLoopRes")
    assert loops and netns.rational(loops[-1]["BPT_Scheduled_DC_CLResControlMode"]["EVSEMaximumDischargePower"]) == 7000


def _past(days: int) -> dt.datetime:
    return dt.datetime.now(dt.UTC) - dt.timedelta(days=days)


def test_an_expired_contract_is_refused_with_its_code_and_the_session_ends(tmp_path: Path, pair: netns.Pair) -> None:
    pki = make_pki(tmp_path / "pki", contract_valid=(_past(60), _past(30)))
    proc, sock = _run_pnc(tmp_path, pair, pki)
    ev = _ev(pair, tmp_path, pki)
    try:
        wait_for(lambda: _tag(sock, "secc.failures") == 1, SESSION_S, "the refusal")
        failure = _tag(sock, "secc.failure")
        assert failure.startswith("auth: contract certificate refused:") and "expired at" in failure, failure
        assert _tag(sock, "secc.handshake_timeouts") == 0  # the EV's contract, never the link
        wait_for(lambda: warnings(tmp_path), 5, "the failure's event")
        event = warnings(tmp_path)[0]
        assert event["data"]["failure"] == "auth" and EMAID in event["message"], event
        assert _tag(sock, "secc.session") is False and _tag(sock, "secc.auth") is None
        # the SECC closed the connection after its answer (the package's EV then gives up, without exiting)
        log = tmp_path / "ev.log"
        wait_for(lambda: "Reason: TCP peer closed connection" in log.read_text(errors="replace"), 30, "the close")
    finally:
        netns.stop(ev)
        stop_cli(proc)
    assert _auth_codes(tmp_path) == ["WARNING_CertificateExpired"]
    assert not netns.decoded(tmp_path / "ev.log", "ServiceDiscoveryRes")  # nothing after the refusal
    assert not netns.decoded(tmp_path / "ev.log", "DC_ChargeLoopRes")


def test_an_untrusted_contract_goes_on_as_eim_where_the_site_allows_it(tmp_path: Path, pair: netns.Pair) -> None:
    """The EV's contract chain ends in an MO root the site does not trust (the rest of its PKI is the
    site's: the TLS handshake succeeds both ways)."""
    pki = make_pki(tmp_path / "pki")
    ev_pki = tmp_path / "ev-pki"
    shutil.copytree(pki, ev_pki)
    make_contract(ev_pki, mo_root_cn="Another MO Root")
    proc, sock = _run_pnc(tmp_path, pair, pki, fallback=True, request_w=-7000.0)
    ev = _ev(pair, tmp_path, ev_pki)
    try:
        wait_for(lambda: _tag(sock, "secc.auth") is not None, SESSION_S, "the session's identification")
        assert _tag(sock, "secc.auth") == "EIM" and _tag(sock, "secc.contract_id") is None
        refused = _tag(sock, "secc.contract_refused")
        assert refused.startswith("WARNING_CertificateValidationError:") and "Another MO Root" in refused, refused
        wait_for(lambda: ev.poll() is not None, SESSION_S, "the EV to finish its session")
        assert ev.returncode == 0
        wait_for(lambda: _tag(sock, "secc.session") is False, 10, "the session's end")
        assert _tag(sock, "secc.failures") == 0
    finally:
        netns.stop(ev)
        stop_cli(proc)
    assert _auth_codes(tmp_path) == ["WARNING_CertificateValidationError"]
    assert netns.decoded(tmp_path / "ev.log", "DC_ChargeLoopRes")  # it went on to power transfer


def _ev_2(pair: netns.Pair, tmp: Path, ev_pki: Path) -> subprocess.Popen[bytes]:
    """The package's ISO 15118-2 Plug and Charge EV (DC), over TLS."""
    (src,) = netns.EXAMPLES.glob(
        "python3*/site-packages/iso15118/shared/examples/evcc/iso15118_2/evcc_config_pnc_dc.json"
    )
    cfg = tmp / "ev-pnc-dc.json"
    cfg.write_text(json.dumps({**json.loads(src.read_text()), "useTls": True}))
    return netns.start_ev(pair, cfg, tmp / "ev.log", pki=ev_pki)


def _codes_2(tmp: Path, res: str) -> list[str]:
    """The ResponseCode of every ISO 15118-2 ``res`` the EV decoded (-2 logs V2G_Message, Body, message)."""
    out = []
    for line in (tmp / "ev.log").read_text(errors="replace").splitlines():
        if "Decoded message" in line and f'"Body":{{"{res}"' in line:
            out.append(json.loads(line[line.index("{") :])["V2G_Message"]["Body"][res]["ResponseCode"])
    return out


def test_iso_15118_2_plug_and_charge_with_a_trusted_contract(tmp_path: Path, pair: netns.Pair) -> None:
    pki = make_pki(tmp_path / "pki")
    proc, sock = _run_pnc(tmp_path, pair, pki, request_w=7000.0)
    ev = _ev_2(pair, tmp_path, pki)
    try:
        wait_for(lambda: _tag(sock, "secc.auth") is not None, SESSION_S, "the session's identification")
        assert _tag(sock, "secc.auth") == "PnC" and _tag(sock, "secc.contract_id") == EMAID
        assert _tag(sock, "secc.protocol") == "ISO_15118_2"
        wait_for(lambda: ev.poll() is not None, SESSION_S, "the EV to finish its session")
        assert ev.returncode == 0
        wait_for(lambda: _tag(sock, "secc.session") is False, 10, "the session's end")
        assert _tag(sock, "secc.failures") == 0
    finally:
        netns.stop(ev)
        stop_cli(proc)
    assert _codes_2(tmp_path, "PaymentDetailsRes") == ["OK"] and _codes_2(tmp_path, "AuthorizationRes") == ["OK"]
    assert _codes_2(tmp_path, "CurrentDemandRes")  # on to power transfer


def test_iso_15118_2_refuses_an_untrusted_contract_with_cert_chain_error(tmp_path: Path, pair: netns.Pair) -> None:
    """In -2 there is no EIM fallback once the EV chose PnC: even with ``pnc_fallback_eim`` the session ends."""
    pki = make_pki(tmp_path / "pki")
    ev_pki = tmp_path / "ev-pki"
    shutil.copytree(pki, ev_pki)
    make_contract(ev_pki, mo_root_cn="Another MO Root")
    proc, sock = _run_pnc(tmp_path, pair, pki, fallback=True)
    ev = _ev_2(pair, tmp_path, ev_pki)
    try:
        wait_for(lambda: _tag(sock, "secc.failures") == 1, SESSION_S, "the refusal")
        failure = _tag(sock, "secc.failure")
        assert failure.startswith("auth: contract certificate refused:") and "Another MO Root" in failure, failure
        wait_for(lambda: warnings(tmp_path), 5, "the failure's event")
        assert warnings(tmp_path)[0]["data"]["failure"] == "auth"
    finally:
        netns.stop(ev)
        stop_cli(proc)
    assert _codes_2(tmp_path, "PaymentDetailsRes") == ["FAILED_CertChainError"]
    assert not _codes_2(tmp_path, "AuthorizationRes")


# The package's EV with a patient timer (patient_ev.py), signing a GenChallenge of its own instead of the
# SECC's: what a signed AuthorizationReq replayed from another session carries.
REPLAY_EV = """
import runpy, sys
import iso15118.evcc.states.iso15118_20_states as v20

class Replayed(v20.AuthorizationSetup):
    async def process_message(self, message, message_exi=None):
        if getattr(message, "pnc_as_res", None) is not None:
            message.pnc_as_res.gen_challenge = bytes(16)
        await super().process_message(message, message_exi)

v20.AuthorizationSetup = Replayed
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def test_a_contract_request_signing_another_challenge_is_refused(tmp_path: Path, pair: netns.Pair) -> None:
    """The package alone would only note WARNING_ChallengeInvalid and then authorise: a replay."""
    pki = make_pki(tmp_path / "pki")
    proc, sock = _run_pnc(tmp_path, pair, pki)
    cfg = netns.ev_config("-20 DC BPT", tmp_path, useTls=True)
    env = {**os.environ, "NETWORK_INTERFACE": pair.ev_if, "MESSAGE_LOG_JSON": "true", "LOG_LEVEL": "INFO"}
    env |= {"PKI_PATH": f"{pki}/", "ENABLE_TLS_1_3": "true"}
    cmd = ["ip", "netns", "exec", pair.ev_ns, str(netns.DEFAULT_PYTHON), "-c", REPLAY_EV]
    with open(tmp_path / "ev.log", "ab") as out:
        ev = subprocess.Popen(
            [*cmd, str(netns.PATIENT_EV), "10", str(cfg)],
            env=env,
            cwd=tmp_path,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_for(lambda: _tag(sock, "secc.failures") == 1, SESSION_S, "the refusal")
        failure = _tag(sock, "secc.failure")
        assert failure.startswith("auth: contract certificate refused:") and "GenChallenge" in failure, failure
        assert _tag(sock, "secc.contract_id") is None
    finally:
        netns.stop(ev)
        stop_cli(proc)
    assert _auth_codes(tmp_path) == ["WARNING_ChallengeInvalid"]
    assert not netns.decoded(tmp_path / "ev.log", "ServiceDiscoveryRes")
