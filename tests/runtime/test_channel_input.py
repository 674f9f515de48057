"""What the task process sends is data from a network-facing process: a malformed or hostile message is
dropped whole and the scan goes on (review finding: JSON nested too deep raised RecursionError on the scan
thread and ended the scan process)."""

from __future__ import annotations

import json
import socket

import pytest

from runtime.tags import Quality
from runtime.taskproc import TaskChannel


@pytest.mark.parametrize(
    "message",
    [
        b"[" * 100_000,
        json.dumps(["w", [["plan.power", 1.0, "good"]]]).encode()[:-3],
        b'["w", [["plan.power", ' + b"[" * 3000 + b"]" * 3000 + b', "good"]]]',
        b'["w", [["plan.power", 1.0, "excellent"]]]',
        b'{"w": 1}',
        b"\xff\xfe",
    ],
)
def test_a_malformed_message_is_dropped_and_the_next_one_applies(message: bytes) -> None:
    scan_end, task_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    with scan_end, task_end:
        ch = TaskChannel(frozenset({"plan.power"}))
        ch.attach(scan_end)
        task_end.send(message)
        task_end.send(json.dumps(["w", [["plan.power", -3000.0, "good"]]]).encode())
        updates = ch.drain()
        assert [(u.name, u.value, u.quality) for u in updates] == [("plan.power", -3000.0, Quality.GOOD)]
