"""The persistent queue on its own: thinning when full, schema version, attempts; and the station's use of
it: MessageAttempts against a CSMS that refuses, a runtime restart inside a transaction."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import uuid
from pathlib import Path

import pytest
from ocpp.v201 import call_result

from runtime.tasks.ocpp.local_csms import LocalCsms
from runtime.tasks.ocpp.queue import MessageQueue
from tests.ocpp.harness import Harness, params, plugged, until
from tests.ports import free_port

PW = "0123456789abcdef-operator"


def _periodic(seq: int) -> dict:
    sv = [{"value": float(i), "measurand": "Energy.Active.Import.Register"} for i in range(20)]
    return {"eventType": "Updated", "timestamp": "2027-01-04T17:30:00.000Z", "triggerReason": "MeterValuePeriodic",
            "seqNo": seq, "transactionInfo": {"transactionId": "t"},
            "meterValue": [{"timestamp": "2027-01-04T17:30:00.000Z", "sampledValue": sv}]}  # fmt: skip


def test_full_queue_thins_samples_never_numbered_messages(tmp_path: Path) -> None:
    q = MessageQueue(tmp_path / "q.sqlite", max_bytes=20_000)
    started = {"eventType": "Started", "timestamp": "2027-01-04T17:30:00.000Z", "triggerReason": "CablePluggedIn",
               "seqNo": 0, "transactionInfo": {"transactionId": "t"}}  # fmt: skip
    q.put("u0", "TransactionEvent", started, periodic=False, state=("tx", 0))
    for i in range(1, 60):
        q.put(f"u{i}", "TransactionEvent", _periodic(i), periodic=True, state=("tx", i))
    rows = [json.loads(t)[3] for (t,) in q.db.execute("SELECT text FROM messages ORDER BY pos")]
    assert [r["seqNo"] for r in rows] == list(range(60))  # every numbered message kept, in order
    assert q.size_bytes() <= 20_000
    assert sum("meterValue" not in r for r in rows[1:]) > 0 and "meterValue" in rows[-1]  # oldest thinned first
    assert q.state("tx") == 59


def test_queue_survives_reopen_and_refuses_an_unknown_schema(tmp_path: Path) -> None:
    q = MessageQueue(tmp_path / "q.sqlite")
    text = q.put(str(uuid.uuid4()), "TransactionEvent", _periodic(0), periodic=True, state=("tx", {"seq": 1}))
    q.close()
    q = MessageQueue(tmp_path / "q.sqlite")
    head = q.head()
    assert head is not None and head.text == text and q.state("tx") == {"seq": 1}
    q.close()
    db = sqlite3.connect(tmp_path / "q.sqlite")
    with db:
        db.execute("UPDATE meta SET value = '99' WHERE key = 'schema'")
    db.close()
    with pytest.raises(ValueError, match="queue schema 99"):
        MessageQueue(tmp_path / "q.sqlite")


def test_refused_message_is_kept_and_retried_no_seqno_gap(tmp_path: Path) -> None:
    """A CALLERROR is an attempt (E13: MessageAttempts, MessageAttemptInterval x attempt apart); after the
    last attempt the message stays at the head and goes again at the longest interval, and the message
    behind it waits: the CSMS sees every seqNo, in order, each once accepted."""

    async def main() -> None:
        csms = await LocalCsms("127.0.0.1", free_port(), passwords={"CP-1": PW}).start()
        h = await Harness(
            params(csms.url, tmp_path / "s", variables={"MessageAttempts": 2, "MessageAttemptInterval": 1})
        ).start()
        try:
            await h.publish()
            await until(lambda: "CP-1" in csms.stations and bool(csms.actions("StatusNotification")))
            link = csms.stations["CP-1"]
            handler = link.route_map["TransactionEvent"]["_on_action"]
            refusals = 0

            def refuse_three_times(**kw: object) -> object:
                nonlocal refusals
                if refusals < 3:
                    refusals += 1
                    raise RuntimeError("the CSMS's database is down")  # answered as CALLERROR InternalError
                return handler(**kw)

            link.route_map["TransactionEvent"]["_on_action"] = refuse_three_times
            await h.publish(**plugged())
            await until(lambda: refusals >= 1)
            await h.publish(**plugged(inverter__power=0.0, inverter__setpoint=0.0))  # seqNo 1, queued behind
            await until(lambda: len(h.station.queue) == 0, timeout_s=20)
        finally:
            await h.stop()
            await csms.close()
        sent = [r for r in csms.actions("TransactionEvent")]
        assert [r.payload["seqNo"] for r in sent] == [0, 0, 0, 0, 1]  # 3 refused, the 4th accepted, then 1
        assert len({r.raw for r in sent[:4]}) == 1  # the same text every time: same message id, same seqNo

    asyncio.run(main())


def test_invalid_answer_to_a_stored_message_counts_as_an_attempt(tmp_path: Path) -> None:
    """A CALLRESULT that fails the response schema is not a dead link (no reconnect loop): it counts as an
    attempt, and after MessageAttempts of them the message counts as received (the answer carried its id)."""

    async def main() -> None:
        csms = await LocalCsms("127.0.0.1", free_port(), passwords={"CP-1": PW}).start()
        h = await Harness(
            params(csms.url, tmp_path / "s", variables={"MessageAttempts": 2, "MessageAttemptInterval": 1})
        ).start()
        try:
            await h.publish()
            await until(lambda: "CP-1" in csms.stations and bool(csms.actions("StatusNotification")))
            route = csms.stations["CP-1"].route_map["TransactionEvent"]
            bad = call_result.TransactionEvent(id_token_info={"status": "NoSuchStatus"})
            route["_on_action"] = lambda **_: bad
            route["_skip_schema_validation"] = True  # this CSMS answers what the schema forbids
            await h.publish(**plugged())
            await until(lambda: len(h.station.queue) == 0, timeout_s=20)
        finally:
            await h.stop()
            await csms.close()
        sent = csms.actions("TransactionEvent")
        assert len(sent) == 2 and len({r.raw for r in sent}) == 1  # MessageAttempts, then taken as received
        assert csms.connects == 1  # never taken for a dead link

    asyncio.run(main())


def test_runtime_restart_inside_a_transaction_ends_it_with_the_last_values(tmp_path: Path) -> None:
    async def main() -> None:
        csms = await LocalCsms("127.0.0.1", free_port(), passwords={"CP-1": PW}).start()
        h = await Harness(params(csms.url, tmp_path / "s")).start()
        await h.publish()
        await h.publish(**plugged(meter__energy_import=4321.0))
        await until(lambda: len(csms.actions("TransactionEvent")) == 1 and len(h.station.queue) == 0)
        await h.stop()  # the process dies; the runtime starts again: a new runtime id
        h2 = await Harness(params(csms.url, tmp_path / "s"), runtime_id="runtime-2").start()
        try:
            await h2.publish(**plugged(meter__energy_import=5000.0))
            await until(lambda: len(csms.actions("TransactionEvent")) == 3)
        finally:
            await h2.stop()
            await csms.close()
        first, ended, again = (r.payload for r in csms.actions("TransactionEvent"))
        assert ended["eventType"] == "Ended" and ended["seqNo"] == 1
        assert ended["transactionInfo"]["transactionId"] == first["transactionInfo"]["transactionId"]
        assert ended["transactionInfo"]["stoppedReason"] == "Reboot" and ended["triggerReason"] == "AbnormalCondition"
        values = {sv["measurand"]: sv["value"] for sv in ended["meterValue"][0]["sampledValue"]}
        assert values["Energy.Active.Import.Register"] == 4321.0  # the last known, not the new reading
        assert again["eventType"] == "Started" and again["seqNo"] == 0  # the EV is still there: a new one
        boots = [r.payload["reason"] for r in csms.actions("BootNotification")]
        assert boots == ["PowerUp", "ApplicationReset"]  # the same machine boot: the application restarted

    asyncio.run(main())


def test_task_process_restart_is_no_reboot(tmp_path: Path) -> None:
    """The same runtime id: no BootNotification and the transaction goes on, with its numbering."""

    async def main() -> None:
        csms = await LocalCsms("127.0.0.1", free_port(), passwords={"CP-1": PW}).start()
        h = await Harness(params(csms.url, tmp_path / "s")).start()
        await h.publish()
        await h.publish(**plugged())
        await until(lambda: len(csms.actions("TransactionEvent")) == 1 and len(h.station.queue) == 0)
        await h.stop()
        h2 = await Harness(params(csms.url, tmp_path / "s")).start()  # same runtime: the task process restarted
        h2.now_us = 10 * 60 * 1_000_000  # cycle-clock minutes later, as at --speed: irrelevant to the decision
        try:
            await h2.publish(**plugged(inverter__power=0.0, inverter__setpoint=0.0))
            await until(lambda: len(csms.actions("TransactionEvent")) == 2 and len(h2.station.queue) == 0)
            await until(lambda: csms.connects == 2)
        finally:
            await h2.stop()
            await csms.close()
        first, second = (r.payload for r in csms.actions("TransactionEvent"))
        assert second["eventType"] == "Updated" and second["seqNo"] == 1
        assert second["transactionInfo"]["transactionId"] == first["transactionInfo"]["transactionId"]
        assert [r.payload["reason"] for r in csms.actions("BootNotification")] == ["PowerUp"]

    asyncio.run(main())
