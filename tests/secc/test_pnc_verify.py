"""The contract chain check (services/secc/pnc.py) on its own, in the runtime's interpreter (no root, no
Java): certificates made here with `cryptography`, ``now`` given, each refusal with the reason and the
ISO 15118-20 / -2 response codes it maps to. And the site file's Plug and Charge rules, at `check`."""

from __future__ import annotations

import datetime as dt
import importlib.util
import sys
import textwrap
from pathlib import Path
from types import ModuleType

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from tests.runtime.helpers import cli
from tests.secc import netns, site
from tests.secc.pki import EMAID, MO_ROOTS, _cert, _chain, make_pki


def _load_pnc() -> ModuleType:
    path = Path(__file__).resolve().parents[2] / "services" / "secc" / "pnc.py"
    spec = importlib.util.spec_from_file_location("pnc", path)
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("pnc", mod)
    spec.loader.exec_module(mod)
    return mod


pnc = _load_pnc()
NOW = dt.datetime.now(dt.UTC)


def _der(c: x509.Certificate) -> bytes:
    return c.public_bytes(serialization.Encoding.DER)


def _mo(**kw: object) -> list[x509.Certificate]:
    chain, _ = _chain("MO", "MO Root CA", leaf_cn=EMAID, **kw)  # type: ignore[arg-type]
    return chain


def _verify(chain: list[x509.Certificate], roots: list[x509.Certificate], now: dt.datetime = NOW) -> object:
    leaf, *subs = chain
    return pnc.verify(_der(leaf), [_der(s) for s in subs], roots, now)


def test_a_chain_to_a_trusted_root_is_accepted_with_its_emaid_whatever_the_sub_ca_order() -> None:
    leaf, sub2, sub1, root = _mo()
    for subs in ([sub2, sub1], [sub1, sub2]):
        v = _verify([leaf, *subs], [root])
        assert v.ok and v.emaid == EMAID and pnc.CODES_20[v.result] == "OK", v
    other_root = _mo()[-1]
    assert _verify([leaf, sub2, sub1], [other_root, root]).ok  # any of several MO roots


def test_a_chain_to_a_root_the_site_does_not_trust_is_untrusted() -> None:
    leaf, sub2, sub1, _root = _mo()
    v = _verify([leaf, sub2, sub1], [_mo()[-1]])
    assert v.result == pnc.UNTRUSTED and "MO Root CA" in v.reason and v.emaid == EMAID
    assert pnc.CODES_20[v.result] == "WARNING_CertificateValidationError"
    assert pnc.CODES_2[v.result] == "FAILED_CertChainError"
    assert _verify([leaf, sub2, sub1], []).result == pnc.UNTRUSTED  # no roots at all: nothing is trusted


def test_an_expired_or_not_yet_valid_contract_is_refused_with_its_own_code() -> None:
    past = (NOW - dt.timedelta(days=60), NOW - dt.timedelta(days=30))
    leaf, sub2, sub1, root = _mo(leaf_valid=past)
    v = _verify([leaf, sub2, sub1], [root])
    assert v.result == pnc.EXPIRED and "expired at" in v.reason and EMAID in v.reason
    assert (pnc.CODES_20[v.result], pnc.CODES_2[v.result]) == (
        "WARNING_CertificateExpired",
        "FAILED_CertificateExpired",
    )
    future = (NOW + dt.timedelta(days=1), NOW + dt.timedelta(days=30))
    leaf, sub2, sub1, root = _mo(leaf_valid=future)
    v = _verify([leaf, sub2, sub1], [root])
    assert v.result == pnc.NOT_YET_VALID and "valid only from" in v.reason
    # ISO 15118-2 has no not-yet-valid code: it is answered as expired ([V2G2-824])
    assert (pnc.CODES_20[v.result], pnc.CODES_2[v.result]) == (
        "WARNING_CertificateNotYetValid",
        "FAILED_CertificateExpired",
    )


def test_validity_is_checked_on_every_certificate_and_at_the_given_time() -> None:
    leaf, sub2, sub1, root = _mo()  # each valid from a day ago for 30 days
    assert _verify([leaf, sub2, sub1], [root], NOW + dt.timedelta(days=31)).result == pnc.EXPIRED
    assert _verify([leaf, sub2, sub1], [root], NOW - dt.timedelta(days=2)).result == pnc.NOT_YET_VALID
    # an expired sub-CA refuses a contract that is itself valid
    k_root, k1, k2, k_leaf = (ec.generate_private_key(ec.SECP256R1()) for _ in range(4))
    root = _cert("MO Root CA", k_root, None, 2)
    old = (NOW - dt.timedelta(days=60), NOW - dt.timedelta(hours=1))
    sub1 = _cert("MO Sub-CA 1", k1, (root.subject, k_root), 1, old)
    sub2 = _cert("MO Sub-CA 2", k2, (sub1.subject, k1), 0)
    leaf = _cert(EMAID, k_leaf, (sub2.subject, k2), None)
    v = _verify([leaf, sub2, sub1], [root])
    assert v.result == pnc.EXPIRED and "MO Sub-CA 1" in v.reason


def test_a_broken_chain_is_a_chain_error() -> None:
    leaf, sub2, sub1, root = _mo()
    stranger = _mo()[1]  # a sub-CA 2 of another MO, with the same name as ours
    v = _verify([leaf, stranger, sub1], [root])
    assert v.result == pnc.CHAIN_ERROR and "does not verify" in v.reason
    v = _verify([leaf, sub2, sub1, _mo()[2]], [root])
    assert v.result == pnc.CHAIN_ERROR and "at most 2" in v.reason  # ISO 15118-2's limit, the default
    v = pnc.verify(_der(leaf), [_der(c) for c in (sub2, sub1, _mo()[2])], [root], NOW, pnc.MAX_SUB_CAS_20)
    assert v.result == pnc.CHAIN_ERROR and "does not belong" in v.reason  # -20 takes 3, but not a stranger
    other = _chain("OEM", "OEM Root CA")[0][2]  # a sub-CA that has nothing to do with the contract
    v = _verify([leaf, sub2, other], [root])
    assert v.result == pnc.CHAIN_ERROR and "does not belong" in v.reason
    v = _verify([sub2, sub1], [root])  # a CA certificate presented as the contract
    assert v.result == pnc.CHAIN_ERROR and "is a CA" in v.reason
    v = pnc.verify(b"not a certificate", [], [root], NOW)
    assert v.result == pnc.CHAIN_ERROR and "does not parse" in v.reason


def test_a_contract_certificate_used_as_a_sub_ca_is_refused() -> None:
    """Someone's valid contract key signs a certificate with another eMAID: every signature holds, but the
    issuer is no CA."""
    k_root, k1, k_leaf, k_fake = (ec.generate_private_key(ec.SECP256R1()) for _ in range(4))
    root = _cert("MO Root CA", k_root, None, 2)
    sub1 = _cert("MO Sub-CA 1", k1, (root.subject, k_root), 1)
    leaf = _cert("DEV2G0000000001", k_leaf, (sub1.subject, k1), None)
    fake = _cert(EMAID, k_fake, (leaf.subject, k_leaf), None)
    v = _verify([fake, leaf, sub1], [root])
    assert v.result == pnc.CHAIN_ERROR and "is no CA" in v.reason


def test_load_roots_reads_a_pem_bundle_and_says_what_is_wrong(tmp_path: Path) -> None:
    roots = [_mo()[-1], _mo()[-1]]
    bundle = tmp_path / "mo.pem"
    bundle.write_bytes(b"".join(r.public_bytes(serialization.Encoding.PEM) for r in roots))
    assert [r.subject for r in pnc.load_roots(bundle)] == [r.subject for r in roots]
    with pytest.raises(ValueError, match="cannot read"):
        pnc.load_roots(tmp_path / "missing.pem")
    (tmp_path / "junk.pem").write_text("junk\n")
    with pytest.raises(ValueError, match="no PEM certificate"):
        pnc.load_roots(tmp_path / "junk.pem")


def _check(tmp: Path, params: str) -> tuple[int, str]:
    """`v2g-plc check` of the test site, TLS on with a test PKI, and ``params`` added to the SECC device."""
    pki = make_pki(tmp / "pki")
    path = site.write(tmp, netns.Pair("v2g-secc-x", "eth1", "v2g-ev-x", "eth2"), pki=pki)
    text = path.read_text()
    extra = textwrap.indent(params.format(pki=pki, roots=pki / MO_ROOTS), " " * 6)
    path.write_text(text.replace(f"      pki_path: {pki}\n", f"      pki_path: {pki}\n{extra}"))
    res = cli("check", str(path))
    return res.returncode, res.stdout + res.stderr


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ("auth_modes: [PNC, EIM]\nmo_roots: {roots}\n", None),
        ("auth_modes: [PNC]\nmo_roots: {roots}\n", None),
        ("auth_modes: [PNC, EIM]\nmo_roots: {roots}\npnc_fallback_eim: true\n", None),
        ("auth_modes: [PNC, EIM]\n", "no mo_roots"),
        ("auth_modes: [PNC]\nmo_roots: {roots}\npnc_fallback_eim: true\n", "needs both PNC and EIM"),
        ("auth_modes: [PNC, EIM]\nmo_roots: {pki}/none.pem\n", "cannot read"),
        (
            "auth_modes: [PNC, EIM]\nmo_roots: {pki}/iso15118_2/private_keys/seccLeafPassword.txt\n",
            "no PEM certificate",
        ),
    ],
)
def test_the_site_file_s_plug_and_charge_rules(tmp_path: Path, params: str, expected: str | None) -> None:
    code, out = _check(tmp_path, params)
    if expected is None:
        assert code == 0, out
    else:
        assert code != 0 and "site.yaml" in out and expected in out, out


def test_plug_and_charge_needs_tls(tmp_path: Path) -> None:
    path = site.write(tmp_path, netns.Pair("v2g-secc-x", "eth1", "v2g-ev-x", "eth2"))  # tls: false
    roots = make_pki(tmp_path / "pki") / MO_ROOTS
    text = path.read_text().replace(
        "      tls: false\n", f"      tls: false\n      auth_modes: [PNC]\n      mo_roots: {roots}\n"
    )
    path.write_text(text)
    res = cli("check", str(path))
    assert res.returncode != 0 and "PNC needs TLS" in res.stdout + res.stderr, res.stdout + res.stderr
