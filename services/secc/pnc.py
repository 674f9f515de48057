"""Plug and Charge: does the EV's contract certificate chain end in a mobility operator (MO) root this site
trusts, and is every certificate in it valid now? (docs/iso15118.md "Plug and Charge")

Why our own check: the `iso15118` package (0.31) does not check the contract chain in ISO 15118-20 at all
(its AuthorizationReq handling verifies only the message's signature with the contract leaf), and in
ISO 15118-2 it checks against one MO root file and hands an unverifiable chain on as if a back office would
decide. Here the site names its MO roots and the SECC decides, with the same rules for both protocols.

Only the standard library and `cryptography` (>= 42), so the bridge imports it in the SECC's virtualenv
and the tests in the runtime's; the check is a pure function of the chain, the roots and ``now``.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.x509.oid import NameOID

# Results of the check.
OK = "ok"
EXPIRED = "expired"
NOT_YET_VALID = "not_yet_valid"
UNTRUSTED = "untrusted"  # a well-formed chain whose top no MO root the site trusts has issued
CHAIN_ERROR = "chain_error"  # not a chain: a bad signature, a sub-CA out of place, a leaf that is a CA
CHALLENGE_INVALID = "challenge_invalid"  # the request signs another session's GenChallenge (a replay)

# The failure kind of a session that ended because its contract was refused (the bridge's ``ended``
# message; the other kinds are in failures.py), and the stop reason's text that marks it.
AUTH = "auth"
REFUSED = "contract certificate refused"

# Sub-CAs a contract chain may carry: ISO 15118-2 [V2G2-656] at most 2; ISO 15118-20's SubCertificatesType
# allows 3 (its schema), so the -20 state passes that.
MAX_SUB_CAS_2 = 2
MAX_SUB_CAS_20 = 3

# The response code that tells the EV why (ISO 15118-20 Table 224, AuthorizationRes: contract problems are
# WARNING codes; ISO 15118-2 Table 112, PaymentDetailsRes: FAILED codes, a not-yet-valid certificate
# answered as expired [V2G2-824]).
CODES_20 = {
    OK: "OK",
    EXPIRED: "WARNING_CertificateExpired",
    NOT_YET_VALID: "WARNING_CertificateNotYetValid",
    UNTRUSTED: "WARNING_CertificateValidationError",
    CHAIN_ERROR: "WARNING_CertificateValidationError",
    CHALLENGE_INVALID: "WARNING_ChallengeInvalid",
}
CODES_2 = {
    OK: "OK",
    EXPIRED: "FAILED_CertificateExpired",
    NOT_YET_VALID: "FAILED_CertificateExpired",
    UNTRUSTED: "FAILED_CertChainError",
    CHAIN_ERROR: "FAILED_CertChainError",
    CHALLENGE_INVALID: "FAILED_ChallengeInvalid",
}


@dataclass(frozen=True)
class Verdict:
    result: str  # one of OK, EXPIRED, NOT_YET_VALID, UNTRUSTED, CHAIN_ERROR
    reason: str  # for the event and the log: which certificate, and why
    emaid: str  # the contract certificate's subject CN (the eMAID, ISO 15118-2 Annex H), "" if none

    @property
    def ok(self) -> bool:
        return self.result == OK


def load_roots(path: Path) -> list[x509.Certificate]:
    """The MO roots in a PEM file (one or more certificates), or ValueError saying what is wrong."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ValueError(f"{path}: cannot read the MO roots ({exc.strerror})") from None
    try:
        roots = x509.load_pem_x509_certificates(data)
    except ValueError:
        raise ValueError(f"{path}: no PEM certificate in it (the MO roots are a PEM bundle)") from None
    return roots


def _cn(cert: x509.Certificate) -> str:
    attrs = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    value = attrs[0].value if attrs else ""
    return value if isinstance(value, str) else bytes(value).decode(errors="replace")


def _is_ca(cert: x509.Certificate) -> tuple[bool, int | None]:
    try:
        bc = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        return False, None
    return bc.ca, bc.path_length


def _signed_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    try:
        cert.verify_directly_issued_by(issuer)  # the issuer's name and the signature with its key
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def _can_sign_certs(cert: x509.Certificate) -> bool:
    try:
        return cert.extensions.get_extension_for_class(x509.KeyUsage).value.key_cert_sign
    except x509.ExtensionNotFound:
        return False


def verify(
    leaf_der: bytes,
    sub_ca_ders: Sequence[bytes],
    roots: Sequence[x509.Certificate],
    now: dt.datetime,
    max_sub_cas: int = MAX_SUB_CAS_2,
) -> Verdict:
    """The contract chain (leaf, sub-CAs in any order, DER as the EV sends them) against ``roots`` at
    ``now`` (aware). Trust is checked before the dates: the dates of a chain nobody vouches for mean
    nothing."""
    try:
        leaf = x509.load_der_x509_certificate(leaf_der)
        subs = [x509.load_der_x509_certificate(d) for d in sub_ca_ders]
    except ValueError as exc:
        return Verdict(CHAIN_ERROR, f"a certificate in the contract chain does not parse: {exc}", "")
    emaid = _cn(leaf)
    if len(subs) > max_sub_cas:
        return Verdict(CHAIN_ERROR, f"{len(subs)} sub-CAs in the contract chain, at most {max_sub_cas}", emaid)
    if _is_ca(leaf)[0]:
        return Verdict(CHAIN_ERROR, f"the contract certificate {emaid!r} is a CA certificate", emaid)
    path, rest = [leaf], list(subs)
    while rest:
        child = path[-1]
        parent = next((s for s in rest if s.subject == child.issuer), None)
        if parent is None:
            break
        ca, path_len = _is_ca(parent)
        if not (ca and _can_sign_certs(parent)):
            return Verdict(CHAIN_ERROR, f"{_cn(parent)!r} in the contract chain is no CA", emaid)
        if path_len is not None and len(path) - 1 > path_len:  # CAs below it (the leaf not counted)
            return Verdict(CHAIN_ERROR, f"{_cn(parent)!r} allows {path_len} sub-CAs below it", emaid)
        if not _signed_by(child, parent):
            return Verdict(CHAIN_ERROR, f"the signature of {_cn(child)!r} does not verify with {_cn(parent)!r}", emaid)
        path.append(parent)
        rest.remove(parent)
    if rest:
        names = ", ".join(repr(_cn(s)) for s in rest)
        return Verdict(CHAIN_ERROR, f"sub-CA {names} does not belong to the contract chain", emaid)
    top = path[-1]
    root = next((r for r in roots if _signed_by(top, r)), None)
    if root is None:
        issuer = top.issuer.rfc4514_string()
        return Verdict(UNTRUSTED, f"the contract chain ends in {issuer}, which no MO root of the site issued", emaid)
    for cert in [*path, root]:
        if now < cert.not_valid_before_utc:
            when = cert.not_valid_before_utc.isoformat()
            return Verdict(NOT_YET_VALID, f"{_cn(cert)!r} in the contract chain is valid only from {when}", emaid)
        if now > cert.not_valid_after_utc:
            when = cert.not_valid_after_utc.isoformat()
            return Verdict(EXPIRED, f"{_cn(cert)!r} in the contract chain expired at {when}", emaid)
    return Verdict(OK, f"contract {emaid!r} chains to MO root {_cn(root)!r}", emaid)
