"""Fuzzing the station's handling of CALLs from the CSMS (issue 14, "OCPP message handling"): whatever
action and payload arrive, the station answers exactly once, with a CALLRESULT the schema accepts or a
CALLERROR with an OCPP-J code, and a payload that breaks the schema never reaches a handler. An
``InternalError`` would mean a handler crashed on input the schema let through: none may."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from runtime.tasks.ocpp import handlers
from runtime.tasks.ocpp.protocol import V201, make_peer
from runtime.tasks.ocpp.station import Station
from tests.ocpp.harness import params

# OCPP-J 4.3, Table 8 (2.0.1 part 4)
CODES = {
    "FormatViolation",
    "GenericError",
    "InternalError",
    "MessageTypeNotSupported",
    "NotImplemented",
    "NotSupported",
    "OccurrenceConstraintViolation",
    "PropertyConstraintViolation",
    "ProtocolError",
    "RpcFrameworkError",
    "SecurityError",
    "TypeConstraintViolation",
}

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**40), 2**40) | st.floats(allow_nan=False) | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=10), inner, max_size=3),
    max_leaves=15,
)
# Names the schemas use, so that random payloads reach past the first required-field check now and then.
keys = st.sampled_from(
    [
        "getVariableData",
        "setVariableData",
        "component",
        "variable",
        "name",
        "attributeValue",
        "evseId",
        "chargingProfile",
        "chargingProfileCriteria",
        "chargingProfileId",
        "duration",
        "transactionId",
        "requestId",
        "reportBase",
        "id",
        "stackLevel",
        "chargingProfilePurpose",
        "chargingProfileKind",
        "chargingSchedule",
    ]
)
payloads = st.dictionaries(keys | st.text(max_size=8), json_values, max_size=5)


class Wire:
    """The station's side of a WebSocket, as far as answering goes: what it sends is kept."""

    def __init__(self) -> None:
        self.sent: list[str] = []

    async def send(self, text: str) -> None:
        self.sent.append(text)

    async def recv(self) -> str:
        await asyncio.sleep(3600)
        return ""


def test_any_call_gets_one_schema_valid_answer(tmp_path: Path) -> None:
    station = Station(params("ws://127.0.0.1:9/ocpp", tmp_path / "state"), tmp_path / "state", 240.0, 1, [V201])
    table = handlers.table(station)
    actions = [*sorted(table), "Reset", "FlyToTheMoon", ""]
    wire = Wire()
    peer = make_peer(V201, "CP-1", wire, table, timeout_s=1)
    loop = asyncio.new_event_loop()

    @settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(st.sampled_from(actions), payloads, st.text(min_size=1, max_size=36))
    def check(action: str, payload: dict[str, Any], uid: str) -> None:
        before = len(wire.sent)
        loop.run_until_complete(peer.route_message(json.dumps([2, uid, action, payload])))
        loop.run_until_complete(peer.answered())  # answered beside the receive loop
        assert len(wire.sent) == before + 1, "exactly one answer"
        answer = json.loads(wire.sent[-1])
        assert answer[1] == uid
        if answer[0] == 4:
            assert answer[2] in CODES and answer[2] != "InternalError", answer
        else:
            assert answer[0] == 3 and isinstance(answer[2], dict)

    try:
        check()
    finally:
        loop.close()


def test_garbage_frames_are_dropped_without_an_answer_or_an_exception(tmp_path: Path) -> None:
    station = Station(params("ws://127.0.0.1:9/ocpp", tmp_path / "state"), tmp_path / "state", 240.0, 1, [V201])
    wire = Wire()
    peer = make_peer(V201, "CP-1", wire, handlers.table(station), timeout_s=1)
    loop = asyncio.new_event_loop()

    @settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(st.text(max_size=80) | json_values.map(json.dumps))
    def check(text: str) -> None:
        loop.run_until_complete(peer.route_message(text))
        loop.run_until_complete(peer.answered())
        for sent in wire.sent:
            json.loads(sent)  # whatever it answered is JSON

    try:
        check()
    finally:
        loop.close()
