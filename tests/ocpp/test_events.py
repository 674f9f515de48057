"""Events the CSMS must see: safety trips (NotifyEvent, Faulted), an invalid CSMS certificate reported once
the link is back, clock-aligned meter values, and no Heartbeat while other traffic proves the link."""

from __future__ import annotations

import asyncio
from pathlib import Path

from runtime.tasks.ocpp.local_csms import LocalCsms
from tests.ocpp.certs import make_pki
from tests.ocpp.harness import Harness, params, plugged, until
from tests.ports import free_port

PW = "0123456789abcdef-operator"


def test_trip_gives_notify_event_and_faulted_then_clears(tmp_path: Path) -> None:
    async def main() -> None:
        csms = await LocalCsms("127.0.0.1", free_port(), passwords={"CP-1": PW}).start()
        h = await Harness(params(csms.url, tmp_path / "s")).start()
        try:
            await h.publish()
            await until(lambda: bool(csms.actions("StatusNotification")))
            await h.publish(safety__trip="ov2")
            await h.publish(safety__trip="")
            await until(lambda: len(csms.actions("NotifyEvent")) == 2 and len(csms.actions("StatusNotification")) == 3)
        finally:
            await h.stop()
            await csms.close()
        raised, cleared = (r.payload["eventData"] for r in csms.actions("NotifyEvent"))
        assert raised[0]["actualValue"] == "ov2" and raised[0]["cleared"] is False
        assert cleared[0]["actualValue"] == "ov2" and cleared[0]["cleared"] is True
        assert [r.payload["connectorStatus"] for r in csms.actions("StatusNotification")] == [
            "Available",
            "Faulted",
            "Available",
        ]

    asyncio.run(main())


def test_invalid_csms_certificate_reported_once_the_link_is_back(tmp_path: Path) -> None:
    pki = make_pki(tmp_path / "pki")

    async def main() -> None:
        port = free_port()
        bad = await LocalCsms(
            "127.0.0.1", port, ssl_context=pki.server_context("foreign"), passwords={"CP-1": PW}
        ).start()
        p = params(bad.url, tmp_path / "s", security_profile=2, ca_file=str(pki.ca))
        h = await Harness(p).start()
        try:
            await until(lambda: bool(h.station.security_events), timeout_s=10)
            await bad.close()
            good = await LocalCsms("127.0.0.1", port, ssl_context=pki.server_context(), passwords={"CP-1": PW}).start()
            kinds = lambda: [r.payload["type"] for r in good.actions("SecurityEventNotification")]  # noqa: E731
            await until(lambda: "InvalidCsmsCertificate" in kinds(), timeout_s=15)
            assert kinds()[0] == "StartupOfTheDevice"
            await good.close()
        finally:
            await h.stop()

    asyncio.run(main())


def test_clock_aligned_values_in_and_outside_a_transaction(tmp_path: Path) -> None:
    async def main() -> None:
        csms = await LocalCsms("127.0.0.1", free_port(), passwords={"CP-1": PW}).start()
        h = await Harness(
            params(csms.url, tmp_path / "s", variables={"AlignedInterval": 60, "TxUpdatedInterval": 3600})
        ).start()
        try:
            await h.publish()
            await until(lambda: bool(csms.actions("StatusNotification")))
            await h.publish(dt_s=60)  # 17:31:01: a minute boundary passed, no transaction
            await until(lambda: bool(csms.actions("MeterValues")))
            await h.publish(**plugged())
            await h.publish(dt_s=60)
            await until(lambda: len(csms.actions("TransactionEvent")) == 2)
        finally:
            await h.stop()
            await csms.close()
        mv = csms.actions("MeterValues")[0].payload["meterValue"][0]
        assert mv["timestamp"] == "2027-01-04T17:31:00.000Z" and mv["sampledValue"][0]["context"] == "Sample.Clock"
        clock = csms.actions("TransactionEvent")[1].payload
        assert (
            clock["triggerReason"] == "MeterValueClock"
            and clock["meterValue"][0]["timestamp"] == "2027-01-04T17:32:00.000Z"
        )

    asyncio.run(main())


def test_no_heartbeat_while_other_traffic_proves_the_link(tmp_path: Path) -> None:
    async def main() -> None:
        csms = await LocalCsms("127.0.0.1", free_port(), passwords={"CP-1": PW}, interval_s=2).start()
        h = await Harness(params(csms.url, tmp_path / "s", variables={"TxUpdatedInterval": 1})).start()
        try:
            await h.publish(**plugged())
            await until(lambda: len(csms.actions("TransactionEvent")) >= 1)
            n0 = len(csms.actions("TransactionEvent"))
            while len(csms.actions("TransactionEvent")) < n0 + 30:  # a message every ~0.1 s for ~3 s
                await h.publish()
                await asyncio.sleep(0.1)  # the pace of the traffic, not a synchronisation
            assert csms.actions("Heartbeat") == []
            await until(lambda: bool(csms.actions("Heartbeat")), timeout_s=10)  # quiet: the heartbeat comes
        finally:
            await h.stop()
            await csms.close()

    asyncio.run(main())
