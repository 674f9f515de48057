"""The event stream to the task process (lossless, numbered, resumable) and size-chunked messages in both
directions: over real socket pairs and a real task process."""

from __future__ import annotations

import asyncio
import json
import os
import pickle
import signal
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from runtime.api import Command, Event
from runtime.engine import RUNTIME_TAGS, Engine, tag_table
from runtime.eventstream import EventStream
from runtime.runner import apply_force
from runtime.tags import Direction, Image, Quality, TagSpec, TagType, TagValue
from runtime.taskproc import MAX_MSG, TaskChannel
from tests.runtime.helpers import control, read_tag, start_cli, stop_cli, wait_for, write_site
from tests.runtime.test_commands import SITE_INFO


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    for s in (a, b):
        s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 20)
    b.settimeout(2.0)
    yield a, b
    a.close()
    b.close()


def received(sock: socket.socket) -> list[Any]:
    out = []
    sock.setblocking(False)
    while True:
        try:
            data = sock.recv(1 << 20)
        except BlockingIOError:
            return out
        assert len(data) <= MAX_MSG
        out.append(pickle.loads(data))


def stream_on(sock: socket.socket, capacity: int = 10_000) -> tuple[EventStream, asyncio.AbstractEventLoop]:
    loop = asyncio.new_event_loop()
    sock.setblocking(False)
    return EventStream(lambda: sock, loop, capacity), loop


def events(n: int, start: int = 0) -> list[Event]:
    return [Event(k, k * 20_000, "trip", "safety", f"event {k}") for k in range(start, start + n)]


def test_an_event_that_starts_and_ends_inside_one_cycle_reaches_the_task_process(pair) -> None:
    """A force set and released before one cycle: no image ever shows it forced; the stream has both."""
    scan, task = pair
    specs = [TagSpec("inverter.setpoint", TagType.FLOAT, "W", Direction.OUTPUT, 0.0)]
    eng = Engine(SITE_INFO, tag_table(("rt", RUNTIME_TAGS), ("o", specs)))
    eng.step(0)
    apply_force(eng, Command("force", {"tag": "inverter.setpoint", "value": -3000.0}))
    apply_force(eng, Command("unforce", {"tag": "inverter.setpoint"}))
    res = eng.step(20_000)
    assert res.image["inverter.setpoint"].forced is False and res.image["inverter.setpoint"].value == 0.0
    stream, loop = stream_on(scan)
    try:
        stream.subscribe(None, None)
        stream.feed(res.events)
        got = received(task)
    finally:
        loop.close()
    assert [m[0] for m in got] == ["ev"]
    evs = got[0][2]
    assert [(e["seq"], e["kind"], e["message"]) for e in evs] == [
        (0, "force", "inverter.setpoint forced to -3000.0"),
        (1, "force", "inverter.setpoint force released"),
    ]


def test_a_full_buffer_drops_the_oldest_counted_and_the_subscriber_gets_a_gap(pair) -> None:
    scan, task = pair
    stream, loop = stream_on(scan, capacity=5)
    try:
        stream.feed(events(3))
        stream.subscribe(stream.stream, 0)  # the task process had nothing yet
        first = received(task)
        assert [e["seq"] for e in first[0][2]] == [0, 1, 2]
        stream.detach()  # the task process is gone; the scan goes on producing events
        stream.feed(events(9, 3))  # seq 3..11; capacity 5 keeps 7..11
        assert stream.dropped == 4 and stream.oldest == 7
        stream.subscribe(stream.stream, 3)  # the restarted task process names where it was
        got = received(task)
    finally:
        loop.close()
    assert got[0] == ("gap", stream.stream, 3, 7, 4)
    assert [e["seq"] for e in got[1][2]] == [7, 8, 9, 10, 11]


def test_resume_from_a_position_gets_exactly_the_rest_and_another_stream_starts_at_the_oldest(pair) -> None:
    scan, task = pair
    stream, loop = stream_on(scan)
    try:
        stream.feed(events(10))
        stream.subscribe(stream.stream, 6)
        assert [e["seq"] for e in received(task)[0][2]] == [6, 7, 8, 9]
        stream.subscribe("a-previous-runtime", 6)  # the runtime restarted: its numbers mean nothing here
        assert [e["seq"] for e in received(task)[0][2]] == list(range(10))
    finally:
        loop.close()


def test_a_full_socket_keeps_events_until_it_drains(pair) -> None:
    scan, task = pair
    scan.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    stream, loop = stream_on(scan)
    try:
        stream.subscribe(None, None)
        stream.feed([Event(k, 0, "limit", "safety", "x" * 500) for k in range(400)])
        seqs: list[int] = []

        def drain_some() -> bool:
            for m in received(task):
                seqs.extend(e["seq"] for e in m[2])
            loop.run_until_complete(asyncio.sleep(0.02))  # the stream's retry runs on its loop
            return len(seqs) >= 400

        wait_for(drain_some, 10, "every event through a small socket buffer")
    finally:
        loop.close()
    assert seqs == list(range(400))


def test_an_oversized_image_is_split_by_size_and_never_lost(pair) -> None:
    scan, task = pair
    ch = TaskChannel()
    ch.attach(scan)
    big = {f"t.big{i}": TagValue(str(i) * 50_000, Quality.GOOD, 0, i == 3) for i in range(8)}
    ch.publish(0, Image(big), None)
    msgs = received(task)
    assert len(msgs) >= 4 and all(m[0] == "img" for m in msgs)
    assert [m[2] for m in msgs] == [True] + [False] * (len(msgs) - 1)  # "full" only on the first
    got = {k: v for m in msgs for k, v in m[3].items()}
    # the forced flag travels with the value: a task that subscribes late still sees what is forced
    assert got == {k: (tv.value, "good", 0, k == "t.big3") for k, tv in big.items()}


def test_emsgsize_shrinks_the_messages_and_loses_nothing(pair) -> None:
    """A socket whose buffer is smaller than one message: the kernel says EMSGSIZE; the batch stays
    and goes again in smaller messages."""
    scan, task = pair
    scan.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 8192)  # the kernel doubles it: < MAX_MSG
    ch = TaskChannel()
    ch.attach(scan)
    tags = {f"t.v{i}": TagValue(f"{i:03d}" * 300, Quality.GOOD, 0) for i in range(60)}  # distinct: no memo
    got: dict[str, Any] = {}
    for k in range(40):
        ch.publish(k, Image(tags), None if k == 0 else {})
        for m in received(task):
            got.update(m[3])
        if len(got) == len(tags):
            break
    assert ch.limit < MAX_MSG
    assert got == {k: (tv.value, "good", 0, False) for k, tv in tags.items()}


# ------------------------------------------------------------------------------- a real task process

WATCHER = """\
commissioning: true
task_process:
  heartbeat_s: 1.0
  restart_backoff_s: 0.2
  restart_backoff_max_s: 1.0
tasks:
  - type: example_commander
    name: watcher
    params: {watch_events: true, big_write_bytes: 400000}
"""


def seen(sock: Path) -> list[list[Any]]:
    t = read_tag(sock, "commander.events")
    return json.loads(t["value"]) if t and t["quality"] == "good" and t["value"] else []


def test_the_task_process_sees_every_event_and_a_restarted_one_resumes_without_gap_or_repeat(tmp_path: Path) -> None:
    site = write_site(tmp_path, extra=WATCHER)
    proc = start_cli("run", str(site))
    sock = tmp_path / "var" / "control.sock"
    try:
        pid = wait_for(lambda: (t := read_tag(sock, "commander.pid")) and t["value"], what="the watcher")
        # a batch of 400 kB of writes from the task: split by size, all of it arrives
        for i in range(8):
            t = wait_for(lambda i=i: (t := read_tag(sock, f"commander.big{i}")) and t["value"] and t, what="big writes")
            assert t["value"] == str(i) * 50_000
        for value in (-4000.0, 0.0, 4000.0):  # set and released at once: perhaps inside one cycle
            assert control(sock, {"cmd": "force", "tag": "inverter.setpoint", "value": value})["ok"]
            assert control(sock, {"cmd": "unforce", "tag": "inverter.setpoint"})["ok"]
        before = wait_for(lambda: (s := seen(sock)) and len(s) >= 6 and s, what="six force events")
        assert [s[0] for s in before] == list(range(len(before)))  # numbered from 0, no gap
        assert [s[2] for s in before[-6:]] == [
            "inverter.setpoint forced to -4000.0",
            "inverter.setpoint force released",
            "inverter.setpoint forced to 0.0",
            "inverter.setpoint force released",
            "inverter.setpoint forced to 4000.0",
            "inverter.setpoint force released",
        ]
        os.kill(pid, signal.SIGKILL)
        # events while the task process is down are kept for it
        assert control(sock, {"cmd": "force", "tag": "ev.soc", "value": -0.25})["ok"]
        assert control(sock, {"cmd": "unforce", "tag": "ev.soc"})["ok"]
        wait_for(lambda: (t := read_tag(sock, "commander.pid")) and t["quality"] == "good" and t["value"] != pid,
                 30, "a restarted task process")  # fmt: skip
        after = wait_for(lambda: (s := seen(sock)) and len(s) >= 2 and s, what="events after the restart")
        assert after[0][0] == before[-1][0] + 1  # resumed where it was: nothing repeated, nothing skipped
        assert [s[0] for s in after] == list(range(after[0][0], after[0][0] + len(after)))
        assert [s[2] for s in after[:2]] == ["ev.soc forced to -0.25", "ev.soc force released"]
    finally:
        stop_cli(proc)
