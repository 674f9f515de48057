"""What a bus message may ask for (requests.py): the three modes of the shared mode_request, each with
its own arguments, and the messages it refuses with a reason the client can act on."""

from __future__ import annotations

import asyncio

import pytest

from runtime.tags import US, Image
from runtime.tasks.localapi.requests import InterfaceParams, Requests, parse_mode_request, parse_trip_reset
from tests.localapi.scan import GateScan
from tests.waiting import until


def test_a_frequency_request_keeps_its_curve_and_signs() -> None:
    req = parse_mode_request(
        b'{"mode": "frequency", "curve": [[59.5, 5000], [60.0, 0], [60.5, -5000]], "baseline_w": -1000}', "mqtt:x"
    )
    assert req.args() == {
        "mode": "frequency",
        "curve": [[59.5, 5000.0], [60.0, 0.0], [60.5, -5000.0]],  # both signs and zero pass through
        "baseline_w": -1000.0,
    }


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b'{"mode": "frequency"}', "mode frequency needs curve"),
        (b'{"mode": "frequency", "curve": [[60, 0]]}', "at least 2"),
        (b'{"mode": "frequency", "curve": [[60, 0], [59, 0]]}', "strictly increasing"),
        (b'{"mode": "frequency", "curve": [[60, 0], [60, 1]]}', "strictly increasing"),
        (b'{"mode": "frequency", "curve": [[40, 0], [60, 0]]}', "45..65"),
        (b'{"mode": "frequency", "curve": [[59, 2e6], [60, 0]]}', "+-1000000 W"),
        (b'{"mode": "frequency", "curve": [[59, NaN], [60, 0]]}', "finite"),
        (b'{"mode": "frequency", "curve": [[59, 1, 2], [60, 0]]}', "curve"),
        (b'{"mode": "remote", "setpoint_w": 1, "curve": [[59, 1], [60, 0]]}', "belong to mode frequency"),
        (b'{"mode": "local", "baseline_w": 5}', "belong to mode frequency"),
        (b'{"mode": "droop"}', "mode"),
        (b'{"mode": "remote", "setpoint_w": 1, "expiry_s": 0}', "expiry_s"),
    ],
)
def test_bad_requests_say_why(payload: bytes, reason: str) -> None:
    with pytest.raises(ValueError) as exc:
        parse_mode_request(payload, "mqtt:x")
    assert reason in str(exc.value)


def test_trip_reset_takes_no_arguments() -> None:
    parse_trip_reset(b"")
    parse_trip_reset(b"{}")
    with pytest.raises(ValueError, match="no arguments"):
        parse_trip_reset(b'{"code": "ov2"}')
    with pytest.raises(ValueError, match="JSON object"):
        parse_trip_reset(b"[]")


def test_a_request_reverts_on_the_cycle_clock_and_a_refused_one_changes_nothing() -> None:
    """Accepted remote request with expiry 10 s: 10 s of cycle clock later the task hands back with a
    local request of its own. A request the gate refuses (here: its rate limit) neither arms nor cancels
    the timer."""
    scan = GateScan({"mqtt": "localapi_mqtt"}, {"localapi_mqtt": ["mode_request"]}, max_per_minute=1)
    cx = scan.context("mqtt")

    async def main() -> None:
        requests = Requests(cx, "mqtt", InterfaceParams())
        try:
            await cx._publish(Image({}), 1 * US)
            payload = b'{"mode": "remote", "setpoint_w": -4000, "expiry_s": 10}'
            ok, reason = await requests.mode(parse_mode_request(payload, "mqtt:ems"))
            assert ok, reason
            ok, reason = await requests.mode(parse_mode_request(b'{"mode": "remote", "setpoint_w": 0}', "mqtt:ems"))
            assert not ok and "rate limit" in reason
            scan.now_us = 61 * US  # the gate's window has passed: the hand back will be let through
            await cx._publish(Image({}), 10 * US)  # 9 s: inside
            await cx._publish(Image({}), 10 * US + 1)
            assert len(scan.modes()) == 1
            await cx._publish(Image({}), 11 * US)  # 10 s after the accepted request
            await until(lambda: len(scan.modes()) == 2, "the reversion")
            assert scan.modes()[-1]["mode"] == "local" and scan.modes()[-1]["by"] == "mqtt:ems (reversion)"
        finally:
            await requests.close()

    asyncio.run(main())
