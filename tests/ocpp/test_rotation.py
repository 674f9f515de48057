"""Security profile 3 certificate rotation (A02/A03) against the local CSMS over mutual TLS: the station
asks by itself before expiry with a CSR of a key it made, verifies CertificateSigned (CN, key, issuer,
validity), reconnects with the new pair and keeps the old one until the new connection works."""

from __future__ import annotations

import asyncio
import datetime as dt
import stat
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization

from runtime.tasks.ocpp.local_csms import LocalCsms
from tests.ocpp.certs import make_pki
from tests.ocpp.harness import Harness, params, until
from tests.ports import free_port


def sign(csr_pem: str, ca_dir: Path, ca: str = "ca", cn: str | None = None, days: int = 90) -> str:
    """What a CSMS's CA does with the CSR (``cn`` replaces the subject: a wrong certificate)."""
    csr = x509.load_pem_x509_csr(csr_pem.encode())
    ca_cert = x509.load_pem_x509_certificate((ca_dir / f"{ca}.pem").read_bytes())
    ca_key = serialization.load_pem_private_key((ca_dir / f"{ca}.key").read_bytes(), None)
    subject = csr.subject if cn is None else x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, cn)])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder().subject_name(subject).issuer_name(ca_cert.subject).public_key(csr.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=days)).sign(ca_key, hashes.SHA256())  # type: ignore[arg-type]
    )  # fmt: skip
    return cert.public_bytes(serialization.Encoding.PEM).decode()


def serial_of(peer: dict | None) -> int:
    assert peer is not None
    return int(peer["serialNumber"], 16)


def test_rotation_before_expiry_reconnects_with_the_new_certificate(tmp_path: Path) -> None:
    pki = make_pki(tmp_path / "pki")  # the station's certificate is valid 10 days: renewal is due at 30

    async def main() -> None:
        csms = await LocalCsms("127.0.0.1", free_port(), ssl_context=pki.server_context(client_ca=True)).start()
        p = params(csms.url, tmp_path / "s", security_profile=3, ca_file=str(pki.ca),
                   cert_file=str(pki.dir / "station.pem"), key_file=str(pki.dir / "station.key"))  # fmt: skip
        h = await Harness(p).start()
        try:
            await h.publish()
            await until(lambda: len(csms.csrs) == 1)  # asked by itself, after the boot
            (_, csr), link = csms.csrs[0], csms.stations["CP-1"]
            assert x509.load_pem_x509_csr(csr.encode()).subject.rfc4514_string() == "CN=CP-1"
            wrong = await link.request("CertificateSigned", {"certificateChain": sign(csr, pki.dir, cn="CP-2")})
            assert wrong["status"] == "Rejected" and "CN" in wrong["statusInfo"]["additionalInfo"]
            foreign = await link.request("CertificateSigned", {"certificateChain": sign(csr, pki.dir, "other-ca")})
            assert foreign["status"] == "Rejected" and "not issued" in foreign["statusInfo"]["additionalInfo"]
            chain = sign(csr, pki.dir)
            assert (await link.request("CertificateSigned", {"certificateChain": chain}))["status"] == "Accepted"
            await until(lambda: csms.connects == 2 and "CP-1" in csms.stations, timeout_s=15)
            await until(lambda: not h.station.certs.trying)
            new = x509.load_pem_x509_certificate(chain.encode())
            assert serial_of(csms.peer_certs[-1]) == new.serial_number  # the new pair on the new link
            cert, key = h.station.certs.in_use()
            assert cert == tmp_path / "s" / "certs" / "station.pem" and stat.S_IMODE(key.stat().st_mode) == 0o600
            await until(lambda: len(csms.actions("SecurityEventNotification")) >= 3)
        finally:
            await h.stop()
            await csms.close()
        # A notification in flight when the station reconnects with its new certificate is sent again, as
        # an identical copy (same message id and text) the CSMS recognises: count distinct messages.
        sent = csms.actions("SecurityEventNotification")
        by_id = {r.unique_id: r for r in sent}
        assert all(r.raw == by_id[r.unique_id].raw for r in sent)
        events = [r.payload["type"] for r in by_id.values()]
        assert events.count("InvalidChargingStationCertificate") == 2  # the two wrong ones, reported
        assert len(csms.csrs) == 1  # the new certificate is valid 90 days: no renewal due any more

    asyncio.run(main())


def test_a_trial_certificate_that_cannot_connect_falls_back_to_the_old_one(tmp_path: Path) -> None:
    pki = make_pki(tmp_path / "pki")

    async def main() -> None:
        csms = await LocalCsms("127.0.0.1", free_port(), ssl_context=pki.server_context(client_ca=True)).start()
        p = params(csms.url, tmp_path / "s", security_profile=3, ca_file=str(pki.ca),
                   station_ca_file=str(pki.other_ca), renew_before_days=30,
                   cert_file=str(pki.dir / "station.pem"), key_file=str(pki.dir / "station.key"))  # fmt: skip
        h = await Harness(p).start()
        try:
            await h.publish()
            await until(lambda: len(csms.csrs) == 1)
            (_, csr), link = csms.csrs[0], csms.stations["CP-1"]
            # the station trusts other-ca for its own certificates, the CSMS does not: the trial is refused
            chain = sign(csr, pki.dir, "other-ca")
            assert (await link.request("CertificateSigned", {"certificateChain": chain}))["status"] == "Accepted"
            await until(lambda: csms.connects == 2 and "CP-1" in csms.stations, timeout_s=20)
        finally:
            await h.stop()
            await csms.close()
        assert not h.station.certs.trying
        assert (
            serial_of(csms.peer_certs[-1])
            == x509.load_pem_x509_certificate((pki.dir / "station.pem").read_bytes()).serial_number
        )  # the operator's certificate again

    asyncio.run(main())


def test_install_list_and_delete_a_csms_root(tmp_path: Path) -> None:
    """M03/M04/M05: a CSMS root installed by the CSMS is trusted from the next connection on (a CSMS
    moving to a certificate of another CA); only a CA certificate is accepted; only an installed one goes."""
    pki = make_pki(tmp_path / "pki")
    pw = "0123456789abcdef-operator"

    async def main() -> None:
        port = free_port()
        csms = await LocalCsms("127.0.0.1", port, ssl_context=pki.server_context(), passwords={"CP-1": pw}).start()
        p = params(csms.url, tmp_path / "s", security_profile=2, ca_file=str(pki.ca))
        h = await Harness(p).start()
        try:
            await h.publish()
            await until(lambda: "CP-1" in csms.stations)
            link = csms.stations["CP-1"]
            leaf = (pki.dir / "server.pem").read_text()
            res = await link.request(
                "InstallCertificate", {"certificateType": "CSMSRootCertificate", "certificate": leaf}
            )
            assert res["status"] == "Rejected"  # not a CA
            root = (pki.dir / "other-ca.pem").read_text()
            res = await link.request(
                "InstallCertificate", {"certificateType": "CSMSRootCertificate", "certificate": root}
            )
            assert res["status"] == "Accepted"
            ids = await link.request("GetInstalledCertificateIds", {"certificateType": ["CSMSRootCertificate"]})
            (entry,) = ids["certificateHashDataChain"]
            want = x509.load_pem_x509_certificate(root.encode()).serial_number
            assert int(entry["certificateHashData"]["serialNumber"], 16) == want
            await csms.close()
            await csms.drop_connections()
            # the same back office, now with a certificate of the other CA
            csms = LocalCsms("127.0.0.1", port, ssl_context=pki.server_context("foreign"), passwords={"CP-1": pw})
            await csms.start()
            await until(lambda: "CP-1" in csms.stations, timeout_s=20)
            link = csms.stations["CP-1"]
            bogus = {**entry["certificateHashData"], "serialNumber": "abc"}
            assert (await link.request("DeleteCertificate", {"certificateHashData": bogus}))["status"] == "NotFound"
            gone = await link.request("DeleteCertificate", {"certificateHashData": entry["certificateHashData"]})
            assert gone["status"] == "Accepted"
            assert (await link.request("GetInstalledCertificateIds", {}))["status"] == "NotFound"
        finally:
            await h.stop()
            await csms.close()

    asyncio.run(main())
