"""Connection, security profiles, boot and heartbeat against the local CSMS (the `ocpp` package's
central-system role) over real WebSockets on free loopback ports."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

import pytest

from runtime.tasks.ocpp.local_csms import LocalCsms
from tests.ocpp.certs import make_pki
from tests.ocpp.harness import Harness, params, until
from tests.ports import free_port

PW = "0123456789abcdef-operator"


async def _csms(**kw: Any) -> LocalCsms:
    return await LocalCsms("127.0.0.1", free_port(), **kw).start()


def test_boot_accepted_then_status_and_heartbeat(tmp_path: Path) -> None:
    async def main() -> None:
        csms = await _csms(interval_s=1, passwords={"CP-1": PW})
        h = await Harness(params(csms.url.replace("localhost", "127.0.0.1"), tmp_path / "state")).start()
        try:
            await h.publish()
            await until(lambda: len(csms.actions("Heartbeat")) >= 2)
            boot = csms.actions("BootNotification")
            assert len(boot) == 1 and boot[0].payload["reason"] == "PowerUp"
            assert boot[0].payload["chargingStation"]["serialNumber"] == "CP-1"
            order = [r.action for r in csms.received]
            assert order[0] == "BootNotification" and order[1] == "StatusNotification"
            assert csms.actions("StatusNotification")[0].payload["connectorStatus"] == "Available"
            await h.publish()
            assert h.writes["ocpp.connected"] is True and h.writes["ocpp.accepted"] is True
            assert 0 < h.writes["ocpp.rtt"] < 5 and h.quality["ocpp.rtt"].value == "good"
        finally:
            await h.stop()
            await csms.close()

    asyncio.run(main())


@pytest.mark.parametrize("status", ["Pending", "Rejected"])
def test_boot_not_accepted_retries_after_interval_and_sends_nothing_else(
    tmp_path: Path, status: str, caplog: pytest.LogCaptureFixture
) -> None:
    async def main() -> None:
        csms = await _csms(interval_s=1, boot_statuses=[status, status], passwords={"CP-1": PW})
        h = await Harness(params(csms.url, tmp_path / "state")).start()
        try:
            await h.publish(ev__connected=True, inverter__power=7000.0)  # a transaction message is waiting
            await until(lambda: len(csms.actions("BootNotification")) == 3, timeout_s=15)
            await until(lambda: len(csms.actions("TransactionEvent")) == 1)
            actions = [r.action for r in csms.received]
            assert actions[:3] == ["BootNotification"] * 3, actions
        finally:
            await h.stop()
            await csms.close()

    with caplog.at_level(logging.WARNING, "v2g_plc.ocpp"):
        asyncio.run(main())
    assert any(f"BootNotification of station 'CP-1' {status}" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize(("passwords", "code"), [({"OTHER": PW}, 403), ({"CP-1": "another-password-123"}, 401)])
def test_refused_at_upgrade_is_logged_with_identity_and_retried(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, passwords: dict[str, str], code: int
) -> None:
    async def main() -> None:
        csms = await _csms(passwords=passwords)
        h = await Harness(params(csms.url, tmp_path / "state")).start()
        try:
            await until(lambda: len(csms.refusals) >= 2, timeout_s=15)  # retried with backoff
            assert csms.refusals[0] == ("CP-1", code)
            assert csms.received == []
        finally:
            await h.stop()
            await csms.close()

    with caplog.at_level(logging.WARNING, "v2g_plc.ocpp"):
        asyncio.run(main())
    lines = [r.getMessage() for r in caplog.records if f"HTTP {code}" in r.getMessage()]
    assert lines and "'CP-1'" in lines[0] and "not accepted by the back office" in lines[0]


@pytest.mark.parametrize("profile", [2, 3])
def test_tls_profiles_connect(tmp_path: Path, profile: int) -> None:
    pki = make_pki(tmp_path / "pki")

    async def main() -> None:
        csms = await _csms(
            ssl_context=pki.server_context(client_ca=profile == 3), passwords={"CP-1": PW} if profile == 2 else None
        )
        p = params(
            csms.url, tmp_path / "state", security_profile=profile, ca_file=str(pki.ca),
            cert_file=str(pki.dir / "station.pem"), key_file=str(pki.dir / "station.key"),
        )  # fmt: skip
        h = await Harness(p).start()
        try:
            await h.publish()
            await until(lambda: len(csms.actions("StatusNotification")) == 1)
        finally:
            await h.stop()
            await csms.close()

    asyncio.run(main())


@pytest.mark.parametrize(
    ("server", "expect"), [("expired", "CertificateExpired"), ("foreign", "InvalidCsmsCertificate")]
)
def test_bad_csms_certificate_refused_never_plaintext(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, server: str, expect: str
) -> None:
    pki = make_pki(tmp_path / "pki")

    async def main() -> None:
        csms = await _csms(ssl_context=pki.server_context(server), passwords={"CP-1": PW})
        plain = await _csms(passwords={"CP-1": PW})  # a plaintext CSMS on the same host: must stay unused
        p = params(csms.url, tmp_path / "state", security_profile=2, ca_file=str(pki.ca))
        h = await Harness(p).start()
        try:
            await until(lambda: sum(expect in r.getMessage() for r in caplog.records) >= 2, timeout_s=15)
            assert csms.received == [] and plain.connects == 0
            assert h.writes.get("ocpp.connected") in (None, False)
        finally:
            await h.stop()
            await csms.close()
            await plain.close()

    with caplog.at_level(logging.WARNING, "v2g_plc.ocpp"):
        asyncio.run(main())
    line = next(r.getMessage() for r in caplog.records if expect in r.getMessage())
    assert "'CP-1'" in line
    if server == "foreign":
        assert "unable to get local issuer certificate" in line


def test_profile_3_without_client_certificate_is_refused(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    pki = make_pki(tmp_path / "pki")

    async def main() -> None:
        csms = await _csms(ssl_context=pki.server_context(client_ca=True))
        # profile 2 offers no client certificate: a profile-3 CSMS refuses the handshake
        p = params(csms.url, tmp_path / "state", security_profile=2, ca_file=str(pki.ca))
        h = await Harness(p).start()
        try:
            await until(lambda: sum("'CP-1'" in r.getMessage() for r in caplog.records) >= 2, timeout_s=15)
            assert csms.connects == 0 and csms.received == [] and h.station.peer is None
        finally:
            await h.stop()
            await csms.close()

    with caplog.at_level(logging.WARNING, "v2g_plc.ocpp"):
        asyncio.run(main())


def test_accepted_does_not_flicker_at_speed_and_ends_offline_threshold_after_the_loss(tmp_path: Path) -> None:
    """Hours of cycle clock between two heartbeats (a site at --speed) keep ``ocpp.accepted``: the live link
    is the contact. Once the link is lost, OfflineThreshold runs on the cycle clock, then no discharge."""

    async def main() -> None:
        csms = await _csms(passwords={"CP-1": PW})
        p = params(csms.url, tmp_path / "s", variables={"OfflineThreshold": 60, "RetryBackOffWaitMinimum": 30})
        h = await Harness(p).start()
        try:
            await h.publish()
            await until(lambda: h.writes.get("ocpp.accepted") is True)
            for _ in range(5):
                await h.publish(dt_s=3600.0)  # an hour of cycle clock per image, no traffic in between
                assert h.writes["ocpp.accepted"] is True and h.writes["ocpp.limit_discharge"] == 11000.0
            await csms.close()
            await csms.drop_connections()
            await until(lambda: h.writes.get("ocpp.connected") is False)
            await h.publish(dt_s=30.0)
            assert h.writes["ocpp.accepted"] is True  # offline 30 s of 60
            await h.publish(dt_s=31.0)
            assert h.writes["ocpp.accepted"] is False and h.writes["ocpp.limit_discharge"] == 0.0
            assert h.writes["ocpp.limit_charge"] == 11000.0  # departure charging goes on
        finally:
            await h.stop()

    asyncio.run(main())
