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


def test_a_flood_is_drained_a_bounded_amount_per_cycle_and_nothing_is_lost() -> None:
    """The scan thread reads at most DRAIN_BUDGET bytes of the task process's messages per cycle; the rest
    wait in the socket for the next cycles (review finding: ``while True: recv`` could eat a whole cycle)."""
    from runtime.taskproc import DRAIN_BUDGET

    scan_end, task_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    with scan_end, task_end:
        task_end.setblocking(False)
        task_end.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 * DRAIN_BUDGET)
        if task_end.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF) < 2 * DRAIN_BUDGET:  # net.core.wmem_max
            pytest.skip("this kernel's socket buffers hold less than one drain budget: nothing to bound")
        ch = TaskChannel(frozenset({"plan.power"}))
        ch.attach(scan_end)
        pad = "x" * 30_000
        cap = DRAIN_BUDGET // 30_000 + 1  # messages one drain may take at most
        want = 3 * cap
        sent, got, drains = 0, [], []
        while len(got) < want:
            while sent < want:  # as much as the socket takes: more than one drain's budget if it can
                try:
                    task_end.send(json.dumps(["w", [["plan.power", float(sent), "good"]], pad]).encode())
                except BlockingIOError:
                    break
                sent += 1
            waiting = sent - len(got)
            ups = ch.drain()
            drains.append((waiting, len(ups)))
            assert ups and len(ups) <= cap, drains
            got += [u.value for u in ups]
        assert got == [float(i) for i in range(want)]  # in order, none lost
        assert any(n == cap or n < w for w, n in drains), f"the budget never bounded a drain: {drains}"
