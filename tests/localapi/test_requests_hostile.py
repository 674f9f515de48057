"""A command from a bus that is nested too deep is a bad command (ValueError, answered on the error
topic), never an exception that ends the task: a retained one would otherwise kill it at every subscribe
(review finding)."""

from __future__ import annotations

import pytest

from runtime.tasks.localapi.requests import parse_mode_request


@pytest.mark.parametrize("payload", [b"[" * 3000, b'{"a": ' + b"[" * 3000 + b"]" * 3000 + b"}"])
def test_deep_nesting_is_a_value_error(payload: bytes) -> None:
    with pytest.raises(ValueError):
        parse_mode_request(payload, "mqtt:test")
