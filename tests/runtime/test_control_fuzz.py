"""Fuzzing the control socket's request handling (issue 14): whatever bytes arrive, the answer is a JSON
reply ``{"ok": false, "error": ...}`` or a command that passed the same checks a well-formed one does;
never an exception out of the handler, never a force of a tag the engine refuses.

Found by this test and fixed: a request of JSON nested some thousand levels deep raised RecursionError out
of the handler (the request-size bound of 64 KiB allows 32,000 levels); a force with a null value was
answered ok (the checker took it for a release) and then refused at the cycle."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from runtime.api import Command
from runtime.iothread import ControlServer
from runtime.site import build_site
from tests.runtime.helpers import write_site

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=20,
)
commands = st.sampled_from([*ControlServer.COMMANDS, "shutdown", "", "FORCE"])
tags = st.sampled_from(["inverter.setpoint", "inverter.enable", "runtime.fault", "grid.voltage", "no.such", ""])
requests = st.fixed_dictionaries(
    {"cmd": commands},
    optional={"tag": tags | json_values, "value": json_values, "tags": json_values, "by": json_values},
)


class Handler:
    def __init__(self, tmp: Path) -> None:
        self.engine = build_site(write_site(tmp)).engine()
        self.staged: list[Command] = []

        tags = build_site(write_site(tmp)).tags

        def check_force(tag: str, value: Any) -> None:  # as the runner checks (Runner._check_force)
            if value is None:
                if tag not in tags:
                    raise KeyError(tag)
                return
            self.engine.check_force(tag, value)

        self.server = ControlServer(tmp / "c.sock", self.staged.append, lambda: {"k": 1}, check_force, lambda n: {})

    def reply(self, line: bytes) -> dict[str, Any]:
        before = len(self.staged)
        out = self.server.handle(line, "fuzz")
        json.dumps(out)  # the reply is sent as JSON: it must be JSON
        assert isinstance(out.get("ok"), bool)
        if not out["ok"]:
            assert isinstance(out.get("error"), str) and len(self.staged) == before
        for c in self.staged[before:]:
            if c.name == "force":  # what was staged is what the engine accepts
                self.engine.check_force(c.args["tag"], c.args["value"])
        return out


def test_random_bytes_get_an_error_reply(tmp_path: Path) -> None:
    h = Handler(tmp_path)

    @settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(st.binary(max_size=200))
    def check(line: bytes) -> None:
        h.reply(line)

    check()


def test_structured_requests_pass_the_same_checks_or_are_refused(tmp_path: Path) -> None:
    h = Handler(tmp_path)

    @settings(max_examples=400, deadline=None)
    @given(requests)
    def check(req: dict[str, Any]) -> None:
        out = h.reply(json.dumps(req).encode())
        if req["cmd"] == "force" and str(req.get("tag", "")).startswith("runtime."):
            assert out["ok"] is False  # a runtime diagnostic is never forced

    check()


def test_deep_nesting_is_an_error_reply_not_an_exception(tmp_path: Path) -> None:
    h = Handler(tmp_path)
    for depth in (10, 1000, 30_000):
        out = h.reply(b"[" * depth + b"]" * depth)
        assert out["ok"] is False
