"""Transactions from the published image, delivered through the persistent queue to a real CSMS."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from runtime.tags import Quality
from runtime.tasks.ocpp.local_csms import LocalCsms, Received
from tests.ocpp.harness import Harness, params, plugged, until
from tests.ports import free_port

PW = "0123456789abcdef-operator"


def _values(r: Received) -> dict[str, float]:
    return {sv["measurand"]: sv["value"] for mv in r.payload.get("meterValue", []) for sv in mv["sampledValue"]}


def test_session_plug_charge_discharge_unplug(tmp_path: Path) -> None:
    async def main() -> None:
        csms = await LocalCsms("127.0.0.1", free_port(), passwords={"CP-1": PW}).start()
        h = await Harness(params(csms.url, tmp_path / "s", variables={"TxUpdatedInterval": 15})).start()
        try:
            await h.publish()
            await until(lambda: len(csms.actions("StatusNotification")) == 1)
            await h.publish(**plugged(inverter__power=0.0))
            await h.publish(inverter__power=7000.0)  # charging starts
            for _ in range(20):  # 20 s: one periodic sample at 15 s
                await h.publish(meter__energy_import=h.values["meter.energy_import"] + 2.0)
            await h.publish(inverter__power=-5000.0, inverter__setpoint=-5000.0)  # V2G: still "Charging"
            for _ in range(16):
                await h.publish(meter__energy_export=h.values["meter.energy_export"] + 1.5)
            await h.publish(inverter__power=0.0, inverter__setpoint=0.0)  # the site pauses
            await h.publish(ev__connected=False)
            await until(lambda: any(r.payload["eventType"] == "Ended" for r in csms.actions("TransactionEvent")))
            await until(
                lambda: [r.payload["connectorStatus"] for r in csms.actions("StatusNotification")][-1] == "Available"
            )
        finally:
            await h.stop()
            await csms.close()
        tx = csms.actions("TransactionEvent")
        assert [r.payload["seqNo"] for r in tx] == list(range(len(tx)))
        assert len({r.payload["transactionInfo"]["transactionId"] for r in tx}) == 1
        kinds = [
            (r.payload["eventType"], r.payload["triggerReason"], r.payload["transactionInfo"].get("chargingState"))
            for r in tx
        ]
        assert kinds[0] == ("Started", "CablePluggedIn", "EVConnected")
        assert ("Updated", "ChargingStateChanged", "Charging") in kinds
        assert ("Updated", "MeterValuePeriodic", None) in kinds
        assert ("Updated", "ChargingStateChanged", "SuspendedEVSE") in kinds
        assert kinds[-1] == ("Ended", "EVDeparted", "Idle")
        assert tx[-1].payload["transactionInfo"]["stoppedReason"] == "EVDisconnected"
        assert not any(r.payload.get("offline") for r in tx)
        # signs: charging is import, V2G is export; registers separately, never netted
        charging = _values(next(r for r in tx if r.payload["transactionInfo"].get("chargingState") == "Charging"))
        assert charging["Power.Active.Import"] == 7000.0 and charging["Power.Active.Export"] == 0.0
        periodic = [_values(r) for r in tx if r.payload["triggerReason"] == "MeterValuePeriodic"]
        discharging = [v for v in periodic if v["Power.Active.Export"] > 0]
        assert (
            discharging
            and discharging[0]["Power.Active.Export"] == 5000.0
            and discharging[0]["Power.Active.Import"] == 0.0
        )
        end = _values(tx[-1])
        assert end["Energy.Active.Import.Register"] == 1000.0 + 20 * 2.0
        assert end["Energy.Active.Export.Register"] == 500.0 + 16 * 1.5
        assert end["SoC"] == 50.0 and end["Voltage"] == 240.0
        units = {
            sv["measurand"]: sv["unitOfMeasure"]["unit"]
            for mv in tx[-1].payload["meterValue"]
            for sv in mv["sampledValue"]
        }
        assert units["Energy.Active.Export.Register"] == "Wh" and units["SoC"] == "Percent"
        assert [r.payload["connectorStatus"] for r in csms.actions("StatusNotification")] == [
            "Available",
            "Occupied",
            "Available",
        ]

    asyncio.run(main())


def test_offline_queue_delivered_in_order_with_offline_flag_and_identical_resend(tmp_path: Path) -> None:
    async def main() -> None:
        port = free_port()
        csms = await LocalCsms("127.0.0.1", port, passwords={"CP-1": PW}).start()
        h = await Harness(
            params(csms.url, tmp_path / "s", variables={"TxUpdatedInterval": 10, "OfflineThreshold": 250})
        ).start()
        try:
            await h.publish()
            await until(lambda: len(csms.actions("StatusNotification")) == 1)
            await h.publish(**plugged())
            await until(lambda: len(csms.actions("TransactionEvent")) == 1 and len(h.station.queue) == 0)
            await csms.close()  # the back office goes away for "minutes" of cycle clock
            await csms.drop_connections()
            await until(lambda: h.station.peer is None)
            for i in range(300):
                await h.publish(meter__energy_import=h.values["meter.energy_import"] + 1.0)
                if i == 100:  # discharge goes on within OfflineThreshold of the last contact ...
                    assert h.writes["ocpp.limit_discharge"] == 11000.0 and h.writes["ocpp.connected"] is False
                    assert h.quality["ocpp.rtt"] == Quality.BAD  # no link: no round trip to trust
            await h.publish(ev__connected=False)
            queued = len(h.station.queue)
            rows = [json.loads(t)[3] for (t,) in h.station.queue.db.execute("SELECT text FROM messages ORDER BY pos")]
            assert queued == 31, [(r["seqNo"], r["triggerReason"], r.get("offline")) for r in rows][
                :4
            ]  # 30 periodic + Ended
            await h.publish()
            assert h.writes["ocpp.queue"] == queued
            assert h.writes["ocpp.limit_discharge"] == 0.0  # ... and stops after it (discharge_requires_csms)
            assert h.writes["ocpp.limit_charge"] == 11000.0  # charging for departure goes on
            csms2 = await LocalCsms("127.0.0.1", port, passwords={"CP-1": PW}).start()
            await until(lambda: len(h.station.queue) == 0, timeout_s=20)
            await until(lambda: bool(csms2.actions("StatusNotification")))
        finally:
            await h.stop()
        tx = csms.actions("TransactionEvent") + csms2.actions("TransactionEvent")
        assert [r.payload["seqNo"] for r in tx] == list(range(32))
        assert not tx[0].payload.get("offline")
        assert not csms2.actions("BootNotification")  # a reconnect is not a reboot
        assert all(r.payload.get("offline") is True for r in tx[1:])
        assert tx[-1].payload["eventType"] == "Ended"
        await csms2.close()

    asyncio.run(main())


def test_unanswered_message_is_resent_byte_identical(tmp_path: Path) -> None:
    """A CALL that got no answer goes out again as the same text: same message id, same seqNo."""

    async def main() -> None:
        port = free_port()
        csms = await LocalCsms("127.0.0.1", port, passwords={"CP-1": PW}).start()
        h = await Harness(params(csms.url, tmp_path / "s", call_timeout_s=0.5)).start()
        try:
            await h.publish()
            await until(lambda: len(csms.actions("StatusNotification")) == 1)
            gate = asyncio.Event()
            link = csms.stations["CP-1"]
            original = link.route_message

            async def swallow_first(raw: str) -> None:  # the CSMS receives but does not answer, once
                if '"TransactionEvent"' in raw and not gate.is_set():
                    gate.set()
                    csms.record(
                        type(csms.received[0])("CP-1", json.loads(raw)[1], "TransactionEvent", json.loads(raw)[3], raw)
                    )
                    return
                await original(raw)

            link.route_message = swallow_first  # type: ignore[method-assign]
            await h.publish(**plugged())
            await until(lambda: len(csms.actions("TransactionEvent")) == 2 and len(h.station.queue) == 0, timeout_s=20)
        finally:
            await h.stop()
            await csms.close()
        first, again = csms.actions("TransactionEvent")
        assert first.raw == again.raw

    asyncio.run(main())


def test_sample_floor_keeps_a_fast_site_from_flooding_the_csms(tmp_path: Path) -> None:
    async def main() -> None:
        csms = await LocalCsms("127.0.0.1", free_port(), passwords={"CP-1": PW}).start()
        h = await Harness(
            params(csms.url, tmp_path / "s", sample_floor_s=30.0, variables={"TxUpdatedInterval": 1})
        ).start()
        try:
            await h.publish()
            await until(lambda: bool(csms.actions("StatusNotification")))
            await h.publish(**plugged())
            for _ in range(50):  # 50 s of cycle clock in far less than 30 s of real time
                await h.publish()
            await h.publish(ev__connected=False)
            await until(lambda: any(r.payload["eventType"] == "Ended" for r in csms.actions("TransactionEvent")))
        finally:
            await h.stop()
            await csms.close()
        periodic = [r for r in csms.actions("TransactionEvent") if r.payload["triggerReason"] == "MeterValuePeriodic"]
        assert len(periodic) == 1  # one sample, then the floor; Started and Ended are never held back
        assert [r.payload["seqNo"] for r in csms.actions("TransactionEvent")] == [0, 1, 2]

    asyncio.run(main())


def test_a_remote_stop_waits_for_the_unplug_across_a_restart() -> None:
    """After a remote stop no new transaction starts while the EV stays plugged in, and that survives a
    restart: it is in the state persisted with the Ended message, not only in memory."""
    from runtime.tasks.ocpp.transactions import Sample, Transactions, TxState

    plugged_in = Sample(connected=True, power_w=7000.0, setpoint_w=7000.0)
    tx = Transactions(1, 1, 10.0, TxState())
    assert tx.step(plugged_in, 0, "t0", 60, False) is not None and tx.active  # Started
    tx.end("t1", False, "RemoteStop", "Remote")
    tx.wait_for_unplug = True  # what Station.stop_transaction does before it stores the Ended message
    saved = json.loads(json.dumps(tx.st.as_json()))

    again = Transactions(1, 1, 10.0, TxState.from_json(saved))  # the task process started again
    for k in range(3):
        assert again.step(plugged_in, k, "t2", 60, False) is None and not again.active
    assert again.step(Sample(connected=False), 4, "t3", 60, False) is None and not again.wait_for_unplug
    assert again.step(plugged_in, 5, "t4", 60, False) is not None and again.active  # a new EV, a new one
    assert TxState.from_json({"tx_id": None, "seq": 0}).wait_for_unplug is False  # a state from before
