"""The read planner: fewest requests (checked against an independent DP), limits, rejected registers."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from runtime.io.maps import PollClass, load_map, shipped_maps
from runtime.io.readplan import Span, min_requests, plan_reads, plan_writes
from runtime.sim.devices import SimModbusDevice

spans_st = st.lists(
    st.tuples(st.integers(0, 600), st.sampled_from([1, 1, 2, 4, 8, 16])).map(lambda t: Span("holding", *t)),
    min_size=1,
    max_size=25,
)


@settings(max_examples=300, deadline=None)
@given(spans=spans_st, max_gap=st.integers(0, 40), rejected=st.sets(st.integers(0, 620), max_size=10))
def test_greedy_is_minimal_and_valid(spans: list[Span], max_gap: int, rejected: set[int]) -> None:
    rej = {("holding", a) for a in rejected}
    plan = plan_reads(spans, max_gap, rej)
    assert len(plan) == min_requests(spans, max_gap, rej)
    covered = {s for r in plan for s in r.spans}
    assert covered == set(spans)
    for r in plan:
        assert r.count <= 125
        for s in r.spans:
            assert r.address <= s.address and s.end <= r.end
        # never across a rejected register that no value needs
        needed = {a for s in r.spans for a in range(s.address, s.end)}
        assert not any(("holding", a) in rej for a in range(r.address, r.end) if a not in needed)


def test_limits() -> None:
    spans = [Span("holding", a, 1) for a in range(0, 300)]
    plan = plan_reads(spans, 0)
    assert [r.count for r in plan] == [125, 125, 50]
    assert len(plan_reads([Span("input", 0, 1), Span("holding", 0, 1)], 10)) == 2  # tables never mix
    with pytest.raises(ValueError):
        plan_reads([Span("holding", 0, 126, "big")], 0)


def test_writes_merge_only_contiguous() -> None:
    ws = plan_writes([("holding", 10, [1, 2]), ("holding", 12, [3]), ("holding", 14, [4]), ("coil", 0, [1])])
    assert [(w.table, w.address, w.values) for w in ws] == [
        ("coil", 0, [1]),
        ("holding", 10, [1, 2, 3]),
        ("holding", 14, [4]),
    ]
    big = plan_writes([("holding", a, [a]) for a in range(200)])
    assert [w.count for w in big] == [123, 77]


def map_spans(path: Path, classes: set[PollClass]) -> tuple[list[Span], int, set[tuple[str, int]]]:
    """Spans the driver reads for these poll classes (SunSpec addresses from the simulated layout)."""
    from runtime.io.maps import Naming
    from runtime.io.modbus_common import ModbusDriver, UnitConfig, UnitState

    m = load_map(path)
    dev = SimModbusDevice("x", m)
    u = UnitState(UnitConfig(map=str(path)), m, Naming())
    u.disc.addr = {k: (m.point(k).table, a) for k, a in dev.addr.items()}
    pts = ModbusDriver._points_for(u, classes)
    rej = {(t, a) for first, last in m.holes for t in ("holding", "input") for a in range(first, last + 1)}
    return [Span(*u.disc.addr[p.key], p.count, p.key) for p in pts], m.max_gap, rej


@pytest.mark.parametrize("path", shipped_maps(), ids=lambda p: p.stem)
@pytest.mark.parametrize("classes", [{PollClass.FAST}, set(PollClass)], ids=["fast", "all"])
def test_shipped_maps_plan_is_minimal(path: Path, classes: set[PollClass]) -> None:
    spans, gap, rej = map_spans(path, classes)
    if not spans:
        return
    plan = plan_reads(spans, gap, rej)
    assert len(plan) == min_requests(spans, gap, rej)
    # and no better with unlimited gap bridging except across rejected registers
    assert len(plan) >= min_requests(spans, 124, rej)
