"""Event storms: repeats are counted, not written; the event file has a bounded size."""

from __future__ import annotations

import json
from pathlib import Path

from programs.examples import Clamp
from runtime.api import Cycle, Event, Program, SiteInfo
from runtime.engine import RUNTIME_TAGS, Engine, tag_table
from runtime.eventlog import EventFile, EventLimiter
from runtime.tags import US, Direction, TagSpec
from tests.runtime.helpers import BASE_SITE, read_jsonl, start_cli, write_site

P = 20_000
SITE = SiteInfo("t", 240.0, 60, P)


class Flaky(Program):
    """Raises while ``failing`` says so: a program with a bug that fires every cycle."""

    failing = True

    def scan(self, cx: Cycle) -> None:
        if self.failing:
            raise RuntimeError("boom")
        cx.out["inverter.setpoint"] = 1000.0


def storm(seconds: float, limiter: EventLimiter, engine: Engine, k0: int = 0) -> list[Event]:
    out: list[Event] = []
    for k in range(k0, k0 + round(seconds * US / P)):
        res = engine.step(k * P)
        out += limiter.feed(res.k, res.now_us, res.events)
    return out


def make() -> tuple[Engine, Flaky]:
    spec = TagSpec("inverter.setpoint", unit="W", direction=Direction.OUTPUT, default=0.0)
    flaky = Flaky("flaky", Program.Params(), SITE)
    clamp = Clamp("clamp", Clamp.Params(tag="inverter.setpoint", limit=11000), SITE)
    return Engine(SITE, tag_table(("rt", RUNTIME_TAGS), ("dev", [spec])), [flaky], [clamp]), flaky


def test_a_program_raising_every_cycle_gives_one_event_and_counted_summaries() -> None:
    engine, flaky = make()
    limiter = EventLimiter(quiet_s=1.0, summary_s=10.0)
    out = storm(25.0, limiter, engine)  # 1250 cycles, 1250 faults
    assert [e.kind for e in out] == ["fault", "fault", "fault"]  # the first, then one summary per 10 s
    assert out[0].k == 0 and "repeated" not in out[0].message
    assert [e.data["repeats"] for e in out[1:]] == [500, 500]
    flaky.failing = False
    out = storm(2.0, limiter, engine, k0=1250)
    assert len(out) == 1 and out[0].data["repeats"] == 249 and "stopped" in out[0].message
    assert 1 + 500 + 500 + 249 == 1250  # every fault is accounted for
    assert not limiter.active
    flaky.failing = True  # it comes back: written again at once
    out = storm(0.1, limiter, engine, k0=2000)
    assert len(out) == 1 and out[0].k == 2000 and "repeated" not in out[0].message


def test_different_events_are_never_folded_together() -> None:
    limiter = EventLimiter()
    evs = [Event(0, 0, "trip", "safety", "trip ov2"), Event(0, 0, "trip", "safety", "trip islanding")]
    assert limiter.feed(0, 0, evs) == evs
    assert limiter.feed(1, P, [Event(1, P, "reset", "safety", "trip ov2 cleared")])[0].kind == "reset"


def test_the_same_cycles_give_the_same_log() -> None:
    logs = []
    for _ in range(2):
        engine, _ = make()
        logs.append([json.dumps(e.as_json()) for e in storm(12.0, EventLimiter(), engine)])
    assert logs[0] == logs[1]


def test_the_event_file_rotates_at_its_bound_and_keeps_its_generations(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    f = EventFile(path, max_bytes=2000, keep=3)
    for k in range(200):
        f.write([Event(k, k * P, "fault", "flaky", f"boom {k}")])
    f.close()
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == ["events.jsonl", "events.jsonl.1", "events.jsonl.2", "events.jsonl.3"]
    assert all(p.stat().st_size <= 2000 for p in tmp_path.iterdir())
    last = [json.loads(line) for line in path.read_text().splitlines()]
    assert last[-1]["message"] == "boom 199"  # the newest is in the live file, whole lines only
    older = [json.loads(line)["k"] for line in (tmp_path / "events.jsonl.1").read_text().splitlines()]
    assert older[-1] + 1 == last[0]["k"]  # nothing lost between generations


BROKEN = (
    "  - {type: example_copy, name: broken, params: {source: ev.soc, target: grid.voltage, declare_target: false}}\n"
)


def test_an_event_storm_in_a_running_runtime_stays_a_few_lines(tmp_path: Path) -> None:
    """A program that writes an input raises every cycle of a real run: one line, and one summary with
    the count when the run stops."""
    site = write_site(tmp_path, BASE_SITE.format(period_ms=20).replace("programs:\n", "programs:\n" + BROKEN))
    proc = start_cli("run", str(site), "--for", "3")
    try:
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    faults = [e for e in read_jsonl(tmp_path / "var" / "events.jsonl") if e["kind"] == "fault"]
    assert len(faults) == 2, faults
    assert "not an output" in faults[0]["message"]
    assert faults[1]["data"]["repeats"] >= 100  # about 150 cycles of 20 ms raised
