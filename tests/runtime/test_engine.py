"""The scan engine cycle by cycle with a simulated clock: phases, staging, staleness, forcing, faults."""

from __future__ import annotations

import pytest

from programs.examples import Clamp, Copy
from runtime.api import Cycle, Program, SiteInfo
from runtime.engine import RUNTIME_TAGS, Engine, tag_table
from runtime.tags import Direction, Quality, TagSpec, TagType, TagUpdate

P = 20_000  # us
SITE = SiteInfo("t", 240.0, 60, P)


class Recorder(Program):
    """Appends what it saw to a shared trace: proves the order of phases and what each phase sees."""

    def __init__(self, name: str, trace: list, target: str | None = None, write: float | None = None):
        super().__init__(name, Program.Params(), SITE)
        self.trace, self.target, self.write = trace, target, write

    def scan(self, cx: Cycle) -> None:
        self.trace.append((self.name, cx.k, cx.inputs.value("a.x"), cx.out.get(self.target) if self.target else None))
        if self.target is not None and self.write is not None:
            cx.out[self.target] = self.write


class Boom(Program):
    def scan(self, cx: Cycle) -> None:
        raise RuntimeError("boom")


def make(programs=(), interlocks=(), stale_after_s: float | None = 0.1, extra=()) -> Engine:
    specs = [
        TagSpec("a.x", stale_after_s=stale_after_s),
        TagSpec("inverter.setpoint", unit="W", direction=Direction.OUTPUT, default=0.0),
        TagSpec("inverter.enable", TagType.BOOL, direction=Direction.OUTPUT, default=False),
        *extra,
    ]
    return Engine(SITE, tag_table(("rt", RUNTIME_TAGS), ("dev", specs)), programs, interlocks)


def test_phases_run_in_configured_order_and_safety_sees_program_requests() -> None:
    trace: list = []
    progs = [Recorder("p1", trace, "inverter.setpoint", 9000.0), Recorder("p2", trace, "inverter.setpoint")]
    locks = [Recorder("s1", trace, "inverter.setpoint", 5000.0), Recorder("s2", trace, "inverter.setpoint")]
    e = make(progs, locks)
    res = e.step(0, [TagUpdate("a.x", 1.0)])
    assert [t[0] for t in trace] == ["p1", "p2", "s1", "s2"]
    assert trace[1][3] == 9000.0  # p2 sees p1's request
    assert trace[3][3] == 5000.0  # s2 sees s1's clamp
    assert res.outputs["inverter.setpoint"] == 5000.0  # safety's result is final


@pytest.mark.parametrize(
    # table: (cycle, staged updates, value the program sees, quality of a.x after the cycle)
    "rows",
    [
        [
            (0, [("a.x", 1.0)], 1.0, "good"),
            (1, [], 1.0, "good"),  # no new read: keeps value, still fresh (age 20 ms < 100 ms)
            (2, [("a.x", 2.0), ("a.x", 3.0)], 3.0, "good"),  # applied all at once: the last read wins
            (8, [], None, "stale"),  # 120 ms after the read at k=2 -> stale, and a stale value reads as None
            (9, [("a.x", 4.0)], 4.0, "good"),  # a fresh read makes it good again
            (10, [("a.x", "garbage")], None, "bad"),  # bad data never becomes a value
            (11, [("a.x", 5.0)], 5.0, "good"),
        ]
    ],
)
def test_staging_and_staleness_table(rows) -> None:
    trace: list = []
    e = make([Recorder("p", trace)])
    for k, ups, seen, quality in rows:
        res = e.step(k * P, [TagUpdate(n, v) for n, v in ups])
        assert trace[-1][2] == seen, f"cycle {k}"
        assert res.image["a.x"].quality.value == quality, f"cycle {k}"


def test_bad_data_keeps_last_value_but_marks_bad() -> None:
    e = make()
    e.step(0, [TagUpdate("a.x", 7.0)])
    res = e.step(P, [TagUpdate("a.x", float("nan"))])
    assert res.image["a.x"].quality is Quality.BAD
    assert res.image.value("a.x") is None


def test_inputs_start_bad_until_read() -> None:
    e = make()
    res = e.step(0)
    assert res.image["a.x"].quality is Quality.BAD


def test_update_timestamp_drives_age() -> None:
    """A read delivered late but stamped when it was taken ages from its stamp, not its arrival."""
    e = make()
    res = e.step(10 * P, [TagUpdate("a.x", 1.0, t_us=10 * P - 150_000)])
    assert res.image["a.x"].quality is Quality.STALE


def test_force_input_is_seen_and_visible_and_released() -> None:
    trace: list = []
    e = make([Recorder("p", trace)])
    e.step(0, [TagUpdate("a.x", 1.0)])
    e.force("a.x", 42.0)
    res = e.step(P, [TagUpdate("a.x", 2.0)])
    assert trace[-1][2] == 42.0
    assert res.image["a.x"].forced and res.image["a.x"].value == 42.0
    assert any(ev.kind == "force" for ev in res.events)
    e.unforce("a.x")
    res = e.step(2 * P, [TagUpdate("a.x", 3.0)])
    assert trace[-1][2] == 3.0 and not res.image["a.x"].forced


@pytest.mark.parametrize("forced", [20000.0, -20000.0, 0.0])
def test_forced_output_never_bypasses_safety(forced: float) -> None:
    clamp = Clamp("clamp", Clamp.Params(tag="inverter.setpoint", limit=11000), SITE)
    e = make([], [clamp])
    e.force("inverter.setpoint", forced)
    res = e.step(0)
    assert res.outputs["inverter.setpoint"] == max(-11000.0, min(11000.0, forced))
    assert res.image["inverter.setpoint"].forced


def test_program_exception_is_logged_and_the_scan_goes_on() -> None:
    copy = Copy("copy", Copy.Params(source="a.x", target="inverter.setpoint", declare_target=False), SITE)
    e = make([Boom("boom", Program.Params(), SITE), copy])
    res = e.step(0, [TagUpdate("a.x", 3.0)])
    assert res.outputs["inverter.setpoint"] == 3.0  # the next program still ran
    assert "boom" in res.image["runtime.fault"].value
    assert [ev.kind for ev in res.events] == ["fault"]
    res = e.step(P, [TagUpdate("a.x", 4.0)])
    assert res.outputs["inverter.setpoint"] == 4.0


@pytest.mark.parametrize("request_w", [7000.0, -7000.0, 0.0])
def test_interlock_exception_puts_every_output_to_its_safe_value(request_w: float) -> None:
    class Permit(Program):
        def scan(self, cx: Cycle) -> None:
            cx.out["inverter.setpoint"] = request_w
            cx.out["inverter.enable"] = True

    e = make([Permit("permit", Program.Params(), SITE)], [Boom("lock", Program.Params(), SITE)])
    res = e.step(0)
    assert res.outputs == {"inverter.setpoint": 0.0, "inverter.enable": False}


def test_changed_outputs_reported_once() -> None:
    copy = Copy("copy", Copy.Params(source="a.x", target="inverter.setpoint", declare_target=False), SITE)
    e = make([copy], stale_after_s=None)
    r0 = e.step(0, [TagUpdate("a.x", 1.0)])
    assert r0.changed_outputs == {"inverter.setpoint": 1.0, "inverter.enable": False}
    r1 = e.step(P, [TagUpdate("a.x", 1.0)])
    assert r1.changed_outputs == {}
    r2 = e.step(2 * P, [TagUpdate("a.x", -1.0)])
    assert r2.changed_outputs == {"inverter.setpoint": -1.0}


def test_writing_an_undeclared_or_input_tag_is_refused() -> None:
    class Rogue(Program):
        def scan(self, cx: Cycle) -> None:
            cx.out["a.x"] = 1.0  # an input: programs cannot write the field's readings

    e = make([Rogue("rogue", Program.Params(), SITE)])
    res = e.step(0)
    assert "not an output" in res.image["runtime.fault"].value


def test_persisted_state_reported_when_it_changes_and_restored() -> None:
    class Latch(Program):
        def __init__(self) -> None:
            super().__init__("latch", Program.Params(), SITE)
            self.latched = False

        def scan(self, cx: Cycle) -> None:
            if (cx.inputs.value("a.x") or 0) > 10:
                self.latched = True

        def persist(self):
            return {"latched": self.latched}

        def restore(self, state) -> None:
            self.latched = bool(state["latched"])

    lock = Latch()
    e = make([], [lock])
    assert e.step(0, [TagUpdate("a.x", 1.0)]).persist == {}
    assert e.step(P, [TagUpdate("a.x", 11.0)]).persist == {"latch": {"latched": True}}
    assert e.step(2 * P, [TagUpdate("a.x", 1.0)]).persist == {}
    again = Latch()
    e2 = make([], [again])
    e2.restore({"latch": {"latched": True}})
    assert again.latched


def test_duplicate_tag_is_refused_naming_both_owners() -> None:
    with pytest.raises(ValueError, match="declared by a and by b"):
        tag_table(("a", [TagSpec("x.y")]), ("b", [TagSpec("x.y")]))


def test_task_writes_land_at_the_next_cycle_start_never_mid_cycle() -> None:
    """Through the real channel (a socket pair): a write sent while a cycle runs is not in that cycle's
    image; the next cycle's drain applies it, all writes of one batch together."""
    import json
    import socket

    from runtime.taskproc import TaskChannel

    scan_end, task_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    ch = TaskChannel(frozenset({"a.x", "a.y"}))
    ch.attach(scan_end)
    seen: list = []

    class Probe(Program):
        def scan(self, cx: Cycle) -> None:
            seen.append(cx.inputs.value("a.x"))
            if cx.k == 1:  # the task writes while this cycle runs
                task_end.send(json.dumps(["w", [["a.x", 2.0, "good"], ["a.y", 5.0, "good"]]]).encode())

    e = make(
        [Probe("probe", Program.Params(), SITE)], stale_after_s=None, extra=[TagSpec("a.y", direction=Direction.SHARED)]
    )
    task_end.send(json.dumps(["w", [["a.x", 1.0, "good"]]]).encode())
    r0 = e.step(0, ch.drain())
    r1 = e.step(P, ch.drain())
    assert seen == [1.0, 1.0] and r1.image["a.x"].value == 1.0  # not mid-cycle, not in its committed image
    r2 = e.step(2 * P, ch.drain())
    assert seen[-1] == 2.0 and r2.image["a.y"].value == 5.0 and r2.input_changes.keys() >= {"a.x", "a.y"}
    assert r0.image["a.y"].quality is Quality.BAD  # shared tags start bad until the task writes them
    task_end.close()
    ch.detach()


def test_outputs_without_a_declared_default_still_have_safe_values() -> None:
    """A map that forgot ``default:`` must not turn the safe outputs into 'write nothing' (None)."""
    specs = [
        TagSpec("inverter.setpoint", unit="W", direction=Direction.OUTPUT),
        TagSpec("inverter.enable", TagType.BOOL, direction=Direction.OUTPUT),
    ]
    e = Engine(SITE, tag_table(("rt", RUNTIME_TAGS), ("dev", specs)), [], [Boom("lock", Program.Params(), SITE)])
    assert e.safe_outputs == {"inverter.setpoint": 0.0, "inverter.enable": False}
    assert e.step(0).outputs == {"inverter.setpoint": 0.0, "inverter.enable": False}


def test_task_channel_takes_only_declared_shared_tags_and_only_data() -> None:
    """A task process talks to networks: it may write the shared tags tasks declared, nothing else, and
    what it sends is parsed as data (a pickle is refused)."""
    import json
    import pickle
    import socket

    from runtime.taskproc import TaskChannel

    scan_end, task_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    ch = TaskChannel(frozenset({"prices.now"}))
    ch.attach(scan_end)
    task_end.send(json.dumps(["w", [["grid.loss", False, "good"], ["prices.now", 42.0, "good"]]]).encode())
    task_end.send(pickle.dumps(("w", [("prices.now", 1.0, "good")])))
    task_end.send(b'["w", [["prices.now", 1.0, "excellent"]]]')
    got = ch.drain()
    assert [(u.name, u.value) for u in got] == [("prices.now", 42.0)]
    task_end.close()
    ch.detach()


@pytest.mark.parametrize(
    "tag_type,value", [(TagType.INT, float("inf")), (TagType.FLOAT, 10**400), (TagType.INT, [1]), (TagType.BOOL, 2)]
)
def test_unconvertible_values_turn_the_tag_bad_and_the_scan_goes_on(tag_type: TagType, value) -> None:
    e = make(extra=[TagSpec("a.n", tag_type, stale_after_s=None)])
    e.step(0, [TagUpdate("a.n", 1)])
    res = e.step(P, [TagUpdate("a.n", value)])
    assert res.image["a.n"].quality is Quality.BAD and res.image["a.n"].value == tag_type_value(tag_type)


def tag_type_value(t: TagType):
    return {TagType.INT: 1, TagType.FLOAT: 1.0, TagType.BOOL: True}[t]
