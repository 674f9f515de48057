"""A test ISO 15118 PKI, made with `cryptography`: a V2G root with two CPO sub-CAs and the SECC's leaf
(what the EV checks), an OEM root with two sub-CAs and the EV's leaf (what the SECC checks under TLS
1.3, which authenticates both sides: ISO 15118-20 [V2G20-2356]), and a mobility operator (MO) root with
two sub-CAs and the EV's contract certificate (Plug and Charge: the SECC checks the contract chain against
the MO roots the site trusts; the contract certificate's subject CN is the eMAID, ISO 15118-2 Annex F).

Laid out as the `iso15118` package reads a PKI folder (its shared/security.py CertPath, KeyPath,
KeyPasswordPath): ``iso15118_2/certs/*.pem`` and ``iso15118_2/private_keys/*.key`` with the leaf keys'
passwords beside them. Curve secp256r1 (prime256v1), as ISO 15118 prescribes for its TLS cipher suites.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

PASSWORD = b"test-pki-password"


def _name(cn: str) -> x509.Name:
    return x509.Name(
        [x509.NameAttribute(NameOID.COMMON_NAME, cn), x509.NameAttribute(NameOID.ORGANIZATION_NAME, "v2g-plc test")]
    )


def _cert(
    cn: str,
    key: ec.EllipticCurvePrivateKey,
    issuer: tuple[x509.Name, ec.EllipticCurvePrivateKey] | None,
    ca: int | None,
    valid: tuple[dt.datetime, dt.datetime] | None = None,
) -> x509.Certificate:
    """``ca``: the path length of a CA, None for a leaf. ``valid``: (not before, not after), else from a day
    ago for 30 days."""
    now = dt.datetime.now(dt.UTC)
    not_before, not_after = valid or (now - dt.timedelta(days=1), now + dt.timedelta(days=30))
    subject = _name(cn)
    issuer_name, issuer_key = issuer if issuer else (subject, key)
    b = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=ca is not None, path_length=ca), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=ca is None,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=ca is None,
                key_cert_sign=ca is not None,
                crl_sign=ca is not None,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    )
    return b.sign(issuer_key, hashes.SHA256())


def _pem(c: x509.Certificate) -> bytes:
    return c.public_bytes(serialization.Encoding.PEM)


def _chain(
    prefix: str, root_cn: str, leaf_cn: str | None = None, leaf_valid: tuple[dt.datetime, dt.datetime] | None = None
) -> tuple[list[x509.Certificate], ec.EllipticCurvePrivateKey]:
    """(leaf, sub-CA 2, sub-CA 1, root) and the leaf's key."""
    keys = [ec.generate_private_key(ec.SECP256R1()) for _ in range(4)]
    root = _cert(root_cn, keys[0], None, 2)
    sub1 = _cert(f"{prefix} Sub-CA 1", keys[1], (root.subject, keys[0]), 1)
    sub2 = _cert(f"{prefix} Sub-CA 2", keys[2], (sub1.subject, keys[1]), 0)
    leaf = _cert(leaf_cn or f"{prefix} leaf", keys[3], (sub2.subject, keys[2]), None, leaf_valid)
    return [leaf, sub2, sub1, root], keys[3]


def _der(c: x509.Certificate) -> bytes:
    return c.public_bytes(serialization.Encoding.DER)


EMAID = "DEV2G1234567890"  # 15 characters: ISO 15118-2 eMAIDType is 14-15 (its Annex H: country, provider, id, check)
MO_ROOTS = "iso15118_2/certs/moRootCACert.pem"  # the site's MO trust store in the test PKI (a PEM bundle)


def make_pki(
    folder: Path,
    v2g_root_cn: str = "V2G Root CA",
    oem_root_cn: str = "OEM Root CA",
    mo_root_cn: str = "MO Root CA",
    emaid: str = EMAID,
    contract_valid: tuple[dt.datetime, dt.datetime] | None = None,
) -> Path:
    """A fresh PKI in ``folder`` (SECC and EV side); returns ``folder``. Two calls give two PKIs that do
    not trust each other. ``contract_valid``: the contract certificate's (not before, not after), e.g. in
    the past for an expired contract."""
    certs, keys = folder / "iso15118_2" / "certs", folder / "iso15118_2" / "private_keys"
    certs.mkdir(parents=True, exist_ok=True)
    keys.mkdir(parents=True, exist_ok=True)
    enc = serialization.BestAvailableEncryption(PASSWORD)
    for side, prefix, root_cn, leaf_name in (
        ("cpo", "CPO", v2g_root_cn, "secc"),
        ("oem", "OEM", oem_root_cn, "oem"),
    ):
        chain, key = _chain(prefix, root_cn)
        root_file = "v2gRootCACert.pem" if side == "cpo" else "oemRootCACert.pem"
        (certs / root_file).write_bytes(_pem(chain[-1]))
        (certs / f"{side}CertChain.pem").write_bytes(b"".join(_pem(c) for c in chain[:-1]))  # leaf first
        (certs / f"{leaf_name}LeafCert.pem").write_bytes(_pem(chain[0]))
        pkcs8 = serialization.PrivateFormat.PKCS8
        (keys / f"{leaf_name}Leaf.key").write_bytes(key.private_bytes(serialization.Encoding.PEM, pkcs8, enc))
        (keys / f"{leaf_name}LeafPassword.txt").write_bytes(PASSWORD + b"\n")
    make_contract(folder, mo_root_cn, emaid, contract_valid)
    return folder


def make_contract(
    folder: Path,
    mo_root_cn: str = "MO Root CA",
    emaid: str = EMAID,
    valid: tuple[dt.datetime, dt.datetime] | None = None,
) -> None:
    """A new MO root and contract chain in the PKI at ``folder``: the EV's contract chain as the package's EV
    reads it (CertPath: DER files, the leaf's key and password beside the others) and the MO root as the
    site's trust store reads it (PEM, ``MO_ROOTS``)."""
    certs, keys = folder / "iso15118_2" / "certs", folder / "iso15118_2" / "private_keys"
    chain, key = _chain("MO", mo_root_cn, leaf_cn=emaid, leaf_valid=valid)
    leaf, sub2, sub1, root = chain
    for name, cert in (("contractLeaf", leaf), ("moSubCA2", sub2), ("moSubCA1", sub1)):
        (certs / f"{name}Cert.der").write_bytes(_der(cert))
    (certs / "moRootCACert.pem").write_bytes(_pem(root))
    pkcs8 = serialization.PrivateFormat.PKCS8
    enc = serialization.BestAvailableEncryption(PASSWORD)
    (keys / "contractLeaf.key").write_bytes(key.private_bytes(serialization.Encoding.PEM, pkcs8, enc))
    (keys / "contractLeafPassword.txt").write_bytes(PASSWORD + b"\n")
