"""The station's client certificate under security profile 3, renewed by the CSMS (OCPP 2.0.1 part 2, A02/A03).

The station makes its key pair and a CSR (subject CN = its serial) itself; the key never leaves
``state_dir/certs`` (0600, never logged). A CertificateSigned chain is accepted only when its leaf carries
that key, CN = the serial, is valid now (system UTC: docs/design.md "Clocks") and is issued by the CA the
station trusts for its own certificates (``station_ca_file``, directly or through one intermediate in the
chain). It is installed beside the certificate in use as a *trial*; the next connection uses it, and only
when that connection works does it become the certificate in use (the old one is then removed). A trial
that cannot connect is dropped and the old certificate used again.

Files (``state_dir/certs``): ``pending.key`` (the key of a CSR sent), ``trial.pem``/``trial.key``,
``station.pem``/``station.key`` (renewed, in use); without the latter, the operator's ``cert_file``/``key_file``.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import logging
import os
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

log = logging.getLogger("v2g_plc.ocpp")


def _write(path: Path, data: bytes, mode: int) -> None:
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


class Certificates:
    def __init__(self, state_dir: Path, cert_file: Path, key_file: Path, station_ca: Path, serial: str) -> None:
        self.dir = state_dir / "certs"
        self.operator = (cert_file, key_file)
        self.station_ca = station_ca
        self.serial = serial

    def _p(self, name: str) -> Path:
        return self.dir / name

    @property
    def trying(self) -> bool:
        return self._p("trial.pem").exists() and self._p("trial.key").exists()

    def in_use(self) -> tuple[Path, Path]:
        """The pair the next connection presents: a trial first, then a renewed one, then the operator's."""
        for stem in ("trial", "station"):
            if self._p(f"{stem}.pem").exists() and self._p(f"{stem}.key").exists():
                return self._p(f"{stem}.pem"), self._p(f"{stem}.key")
        return self.operator

    def expires(self) -> dt.datetime | None:
        cert, _ = self.in_use()
        try:
            return x509.load_pem_x509_certificate(cert.read_bytes()).not_valid_after_utc
        except (OSError, ValueError):
            return None

    def csr(self) -> str:
        """A new key pair (kept as ``pending.key``) and its CSR in PEM, subject CN = the serial (A02.FR.07)."""
        self.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        key = ec.generate_private_key(ec.SECP256R1())
        pem = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        _write(self._p("pending.key"), pem, 0o600)
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, self.serial)])
        req = x509.CertificateSigningRequestBuilder().subject_name(name).sign(key, hashes.SHA256())
        return req.public_bytes(serialization.Encoding.PEM).decode("ascii")

    def verify(self, chain_pem: str, now: dt.datetime) -> str:
        """Why the chain is not acceptable ("" when it is)."""
        try:
            chain = x509.load_pem_x509_certificates(chain_pem.encode())
            key = serialization.load_pem_private_key(self._p("pending.key").read_bytes(), None)
            ca = x509.load_pem_x509_certificate(self.station_ca.read_bytes())
        except FileNotFoundError:
            return "no certificate signing request is pending"
        except (OSError, ValueError) as exc:
            return f"unreadable certificate: {exc}"
        leaf = chain[0]
        cn = [a.value for a in leaf.subject.get_attributes_for_oid(NameOID.COMMON_NAME)]
        if cn != [self.serial]:
            return f"subject CN {cn} is not the station's serial {self.serial!r}"
        if not leaf.not_valid_before_utc <= now < leaf.not_valid_after_utc:
            return "CertificateExpired: the certificate is not valid now"
        if leaf.public_key().public_numbers() != key.public_key().public_numbers():  # type: ignore[union-attr]
            return "the certificate is not for the key of the pending request"
        issuers = [ca] if len(chain) == 1 else [chain[1]]
        try:
            leaf.verify_directly_issued_by(issuers[0])
            if len(chain) > 1:
                chain[1].verify_directly_issued_by(ca)
        except Exception as exc:  # InvalidSignature, or a key type that cannot have signed it
            return f"not issued by the station CA {self.station_ca}: {type(exc).__name__} {exc}".strip()
        return ""

    def install_trial(self, chain_pem: str) -> None:
        """Beside the pair in use, atomically: the certificate first, then its key (the pair counts once
        both exist)."""
        _write(self._p("trial.pem"), chain_pem.encode(), 0o644)
        os.replace(self._p("pending.key"), self._p("trial.key"))

    def confirm(self) -> None:
        """The trial connected: it is the pair in use now; the old renewed pair goes."""
        if not self.trying:
            return
        os.replace(self._p("trial.key"), self._p("station.key"))
        os.replace(self._p("trial.pem"), self._p("station.pem"))
        log.warning("ocpp: the renewed station certificate works and is in use (expires %s)", self.expires())

    def drop_trial(self) -> None:
        for name in ("trial.pem", "trial.key"):
            self._p(name).unlink(missing_ok=True)
        log.error("ocpp: the renewed station certificate did not connect: the previous one is used again")


def hash_data(cert: x509.Certificate) -> dict[str, str]:
    """CertificateHashDataType (2.0.1 part 2, M): SHA256 of the issuer's name and key, the serial in hex.
    A root is its own issuer, so its own key is the issuer key."""
    name = hashlib.sha256(cert.issuer.public_bytes()).hexdigest()
    key = hashlib.sha256(
        cert.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    ).hexdigest()
    return {"hashAlgorithm": "SHA256", "issuerNameHash": name, "issuerKeyHash": key,
            "serialNumber": format(cert.serial_number, "x")}  # fmt: skip


class Roots:
    """CSMS root certificates the CSMS installed (M05), trusted beside the operator's ``ca_file``; only
    those can be deleted (M04), never the operator's file."""

    def __init__(self, state_dir: Path) -> None:
        self.dir = state_dir / "certs" / "roots"

    def files(self) -> list[Path]:
        return sorted(self.dir.glob("*.pem")) if self.dir.exists() else []

    def install(self, pem: str, now: dt.datetime) -> str:
        """Why the certificate is refused ("" when installed): a CA certificate valid now."""
        try:
            cert = x509.load_pem_x509_certificate(pem.encode())
            ca = cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
        except (ValueError, x509.ExtensionNotFound):
            return "not a CA certificate in PEM"
        if not ca:
            return "not a CA certificate"
        if not cert.not_valid_before_utc <= now < cert.not_valid_after_utc:
            return "CertificateExpired: not valid now"
        self.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        _write(self.dir / f"{hash_data(cert)['serialNumber']}.pem", pem.encode(), 0o644)
        log.warning("ocpp: CSMS root certificate %s installed", cert.subject.rfc4514_string())
        return ""

    def ids(self) -> list[dict[str, str]]:
        out = []
        for f in self.files():
            with contextlib.suppress(ValueError):
                out.append(hash_data(x509.load_pem_x509_certificate(f.read_bytes())))
        return out

    def delete(self, want: dict[str, Any]) -> bool:
        keys = ("issuerNameHash", "issuerKeyHash", "serialNumber")
        for f in self.files():
            got = hash_data(x509.load_pem_x509_certificate(f.read_bytes()))
            if all(str(want.get(k, "")).lower().lstrip("0") == got[k].lstrip("0") for k in keys):
                f.unlink()
                log.warning("ocpp: CSMS root certificate %s deleted", got["serialNumber"])
                return True
        return False
