"""The control socket under misuse: who asked is logged, strings are not numbers, a huge request and too
many connections get an error reply, and nothing of it takes the I/O loop down."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from runtime.api import Command
from runtime.iothread import ControlServer, control_request
from runtime.site import build_site
from tests.runtime.helpers import wait_for, write_site


class Served:
    """A ControlServer on its own asyncio loop, checking forces against a real engine of a test site."""

    def __init__(self, tmp: Path) -> None:
        self.engine = build_site(write_site(tmp)).engine()
        self.staged: list[Command] = []
        self.path = tmp / "control.sock"

        def check_force(tag: str, value: Any) -> None:
            if value is not None:
                self.engine.check_force(tag, value)

        self.server = ControlServer(self.path, self.staged.append, lambda: {"k": 1}, check_force, lambda n: {})
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.task = asyncio.run_coroutine_threadsafe(self.server.serve(), self.loop)
        wait_for(self.path.exists, 10, "the socket")

    def close(self) -> None:
        async def cancel_all() -> None:
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        asyncio.run_coroutine_threadsafe(cancel_all(), self.loop).result(5)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.loop.close()


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    s = Served(tmp_path)
    yield s
    s.close()


def test_every_command_is_logged_with_its_peer(served: Served, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, "v2g_plc.io")
    assert control_request(served.path, {"cmd": "reset_trip", "by": "test"})["ok"]
    assert not control_request(served.path, {"cmd": "launch"})["ok"]
    me = f"pid {os.getpid()} uid {os.getuid()} gid {os.getgid()}"
    accepted = [r.getMessage() for r in caplog.records if "accepted" in r.getMessage()]
    rejected = [r.getMessage() for r in caplog.records if "rejected" in r.getMessage()]
    assert accepted and me in accepted[0] and rejected and me in rejected[0]
    assert me in served.staged[0].args["by"]  # the reset says who asked for it


@pytest.mark.parametrize(
    ("tag", "value", "ok"),
    [
        ("inverter.setpoint", "7000", False),
        ("inverter.setpoint", 7000, True),
        ("inverter.enable", "false", False),
        ("runtime.fault", "", False),
        ("runtime.overrun_fault", False, False),
        ("runtime.persist_fault", False, False),
    ],
)
def test_forces_of_the_wrong_type_or_of_diagnostics_are_refused(served: Served, tag: str, value: Any, ok: bool) -> None:
    reply = control_request(served.path, {"cmd": "force", "tag": tag, "value": value})
    assert reply["ok"] is ok, reply
    assert bool(served.staged) is ok
    if not ok:
        assert reply["error"]


def test_an_oversized_request_gets_an_error_reply_and_the_server_goes_on(served: Served) -> None:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(10)
        s.connect(str(served.path))
        with contextlib.suppress(BrokenPipeError):  # the server may answer and close before the last byte
            s.sendall(b'{"cmd": "status", "pad": "' + b"x" * (ControlServer.MAX_REQUEST + 10) + b'"}\n')
        reply = json.loads(s.makefile("rb").readline())
    assert reply["ok"] is False and "longer than" in reply["error"]
    assert control_request(served.path, {"cmd": "status"})["ok"]  # still serving


def test_connections_are_bounded(served: Served) -> None:
    held = []
    try:
        for _ in range(ControlServer.MAX_CLIENTS):
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.settimeout(10)
            s.connect(str(served.path))
            s.sendall(b'{"cmd": "status"}\n')
            assert json.loads(s.makefile("rb").readline())["ok"]  # open and served
            held.append(s)
        reply = control_request(served.path, {"cmd": "status"})
        assert reply["ok"] is False and "too many connections" in reply["error"]
    finally:
        for s in held:
            s.close()
    wait_for(lambda: served.server.clients == 0, 10, "the connections to close")
    assert control_request(served.path, {"cmd": "status"})["ok"]  # a free slot again


@pytest.mark.parametrize(
    ("req", "error"),
    [
        ({"mode": "remote", "setpoint_w": -5000.0, "expiry_s": 600.0}, None),
        ({"mode": "remote", "setpoint_w": 0.0}, None),
        ({"mode": "remote", "setpoint_w": 5000.0}, None),
        ({"mode": "local"}, None),
        ({"mode": "remote"}, "mode remote needs setpoint_w"),
        ({"mode": "remote", "setpoint_w": "5000"}, "setpoint_w must be a finite number"),
        ({"mode": "turbo"}, "mode must be one of"),
        ({"mode": "local", "tag": "inverter.setpoint"}, "unknown argument 'tag'"),
    ],
)
def test_an_operator_mode_request_is_staged_typed_with_who_asked(
    served: Served, req: dict[str, Any], error: str | None
) -> None:
    """``v2g-plc mode``: the operator's override of the mode authority, shaped here, ranked in the scan."""
    reply = control_request(served.path, {"cmd": "mode_request", "by": "op", **req})
    if error is None:
        assert reply == {"ok": True}
        (c,) = served.staged
        assert c.name == "mode_request" and c.args["mode"] == req["mode"] and c.args["by"].startswith("op (pid ")
        assert c.args.get("setpoint_w") == req.get("setpoint_w")
    else:
        assert not reply["ok"] and error in reply["error"] and served.staged == []
