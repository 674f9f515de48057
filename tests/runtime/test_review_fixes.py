"""Fixes from the round's review, each pinned: trips and resets are never folded into summaries; a state
that cannot be written for a reason other than the disk still holds the site; a trip's restored reason
does not grow with every restart."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Any

from runtime import statefile
from runtime.api import Event
from runtime.eventlog import EventLimiter
from tests.runtime.helpers import wait_for
from tests.safety.rig import Rig


def test_trips_and_resets_are_never_folded() -> None:
    lim = EventLimiter()
    trip = Event(0, 0.0, "trip", "safety", "ov2: over-voltage", {"code": "ov2"})
    reset = Event(0, 0.0, "reset", "safety", "ov2 cleared", {"code": "ov2"})
    out: list[Event] = []
    for k, batch in enumerate([[trip], [reset], [trip], [reset], [trip]]):
        out += lim.feed(k, k * 20_000, batch)
    assert [e.kind for e in out] == ["trip", "reset", "trip", "reset", "trip"]


def test_a_state_that_cannot_be_serialised_holds_the_site_like_a_full_disk(tmp_path: Path) -> None:
    loop = asyncio.new_event_loop()
    th = threading.Thread(target=loop.run_forever, daemon=True)
    th.start()
    flips: list[bool] = []
    writes: list[Any] = []

    def write(path: Path, states: dict[str, Any]) -> None:
        if any(isinstance(v, dict) and v.get("bad") for v in states.values()):
            raise TypeError("Object of type set is not JSON serializable")
        writes.append(states)

    p = statefile.Persister(
        tmp_path / "state.json", {}, loop, write=write, on_change=flips.append, backoff_s=(0.01, 0.04)
    )
    try:
        p.submit({"a": {"bad": True}})
        wait_for(lambda: p.fault, 10, "the fault")
        assert flips == [True] and "serializable" in (p.error or "")
        p.submit({"a": {"latched": [["x", "y"]]}})
        wait_for(lambda: not p.fault, 10, "a good write")
        assert flips == [True, False] and writes[-1] == {"a": {"latched": [["x", "y"]]}}
    finally:
        loop.call_soon_threadsafe(p.close)
        loop.call_soon_threadsafe(loop.stop)
        th.join(5)


def test_a_restored_reason_does_not_grow_with_restarts() -> None:
    rig = Rig()
    state = {"latched": [["power_divergence", "measured -3000 W against a command of +3000 W"]]}
    for _ in range(3):
        rig.safety.restore(state)
        state = dict(rig.safety.persist() or {})
    (reason,) = [r for c, r in state["latched"] if c == "power_divergence"]
    assert reason.count("latched before restart") == 1
