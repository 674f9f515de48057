"""Opening the WebSocket to the CSMS under one of the OCPP security profiles, and the reconnect backoff.

Security profiles (OCPP 2.0.1 part 2, A00 "Security"): 1 = HTTP Basic auth over ws:// (trusted networks
only, and only when the site file says so), 2 = TLS 1.2+ with the CSMS verified against ``ca_file`` plus
Basic auth, 3 = mutual TLS with the station's client certificate. The URL's scheme is fixed by the
profile, so a TLS failure is never answered with a plaintext attempt.
"""

from __future__ import annotations

import base64
import random
import ssl
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import InvalidStatus

# OpenSSL's X509_V_ERR_CERT_HAS_EXPIRED
_X509_EXPIRED = 10


@dataclass(frozen=True)
class Endpoint:
    url: str  # csms_url + "/" + identity (OCPP-J 2.0.1 part 4, 3.1.1)
    identity: str
    profile: int
    password: str | None = None
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    extra_cas: tuple[Path, ...] = ()  # CSMS roots the CSMS installed (InstallCertificate), beside ca_file


def endpoint_url(csms_url: str, identity: str) -> str:
    from urllib.parse import quote

    return csms_url.rstrip("/") + "/" + quote(identity, safe="")


def tls_context(ep: Endpoint) -> ssl.SSLContext | None:
    """Profiles 2 and 3: TLS 1.2 or newer, the CSMS verified against ``ca_file`` only (no system roots)."""
    if ep.profile == 1:
        return None
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.check_hostname = True
    ctx.verify_mode = ssl.CERT_REQUIRED
    if ep.ca_file is None:
        raise ValueError("security profiles 2 and 3 need ca_file")
    ctx.load_verify_locations(cafile=str(ep.ca_file))
    for extra in ep.extra_cas:
        ctx.load_verify_locations(cafile=str(extra))
    # OCPP 2.0.1 part 2, A00.FR.318: conformance tests accept TLS_RSA_WITH_AES_*_GCM for RSA keys,
    # which Python's default cipher list leaves out.
    ctx.set_ciphers(ssl._DEFAULT_CIPHERS + ":AES128-GCM-SHA256:AES256-GCM-SHA384")
    if ep.profile == 3:
        if ep.cert_file is None or ep.key_file is None:
            raise ValueError("security profile 3 needs cert_file and key_file")
        ctx.load_cert_chain(str(ep.cert_file), str(ep.key_file))
    return ctx


def basic_auth(identity: str, password: str) -> str:
    """RFC 7617 with the identity as user name (OCPP 2.0.1 part 2, A00.FR.203)."""
    return "Basic " + base64.b64encode(f"{identity}:{password}".encode()).decode("ascii")


async def open_link(ep: Endpoint, subprotocols: list[str], timeout_s: float) -> ClientConnection:
    headers: dict[str, str] = {}
    if ep.profile in (1, 2):
        if not ep.password:
            raise ValueError(f"security profile {ep.profile} needs a password (password_file)")
        headers["Authorization"] = basic_auth(ep.identity, ep.password)
    return await connect(
        ep.url,
        subprotocols=subprotocols,  # type: ignore[arg-type]
        additional_headers=headers,
        ssl=tls_context(ep),
        proxy=None,  # a direct link to the CSMS, whatever the environment says
        open_timeout=timeout_s,
        ping_interval=None,  # liveness is the Heartbeat / any CALL's answer (OCPP 2.0.1 part 4, 5.3)
        max_size=2**22,
    )


def describe_failure(exc: BaseException, identity: str) -> tuple[str, str | None]:
    """One log line for a failed connection and the security event it is (or None).

    A refusal at the upgrade means the back office does not accept this station (not whitelisted, wrong
    password); an invalid CSMS certificate is reported later as SecurityEventNotification.
    """
    if isinstance(exc, InvalidStatus):
        code = exc.response.status_code
        if code in (401, 403):
            return (
                f"CSMS refused station {identity!r} at the WebSocket upgrade (HTTP {code}): "
                "not accepted by the back office (identity or password)",
                None,
            )
        return f"CSMS answered the WebSocket upgrade of station {identity!r} with HTTP {code}", None
    if isinstance(exc, ssl.SSLCertVerificationError):
        if exc.verify_code == _X509_EXPIRED:
            return f"CertificateExpired: the CSMS certificate has expired; station {identity!r} not connected", (
                "InvalidCsmsCertificate"
            )
        return (
            f"InvalidCsmsCertificate: {exc.verify_message}; station {identity!r} not connected",
            "InvalidCsmsCertificate",
        )
    if isinstance(exc, ssl.SSLError):
        return f"TLS handshake for station {identity!r} failed: {exc.reason or exc}", "InvalidTLSVersion" if (
            "version" in str(exc).lower()
        ) else None
    return f"cannot reach the CSMS for station {identity!r}: {type(exc).__name__}: {exc}", None


def backoff(
    minimum_s: float, random_range_s: float, repeat_times: int, rng: random.Random | None = None
) -> Iterator[float]:
    """Reconnect waits (OCPP 2.0.1 part 2, B. "Reconnecting"): RetryBackOffWaitMinimum doubled after each
    failure up to RetryBackOffRepeatTimes doublings, plus a random 0..RetryBackOffRandomRange so that a
    fleet does not reconnect all at once."""
    r = rng or random.Random()
    n = 0
    while True:
        yield minimum_s * 2 ** min(n, repeat_times) + r.uniform(0, random_range_s)
        n += 1


def selected_subprotocol(conn: Any) -> str | None:
    sp: str | None = conn.subprotocol
    return sp
