"""What a bus message may ask for (requests.py): the three modes of the shared mode_request, each with
its own arguments, and the messages it refuses with a reason the client can act on."""

from __future__ import annotations

import pytest

from runtime.tasks.localapi.requests import parse_mode_request, parse_trip_reset


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
