"""ROCOF at 1x and at --speed N: estimated from the frequency's read times as a Modbus driver stamps them.

A driver stamps a read when it is delivered, after its round and after whatever kept the I/O thread from
running (the scan holds the interpreter; on a loaded machine the OS). That latency is real time: at
--speed N it is worth N x more of the plant's time, while the plant's frequency moves in plant time. So
the estimate's baseline (``islanding.rocof_window_s``) counts like the tags' age limits, N x on the cycle
clock, and the confirm time counts evidence (successive estimates by their read times), never scans that
passed without a new read. These cycle tables feed the real engine and safety supervisor reads delivered
as the driver delivers them: sampled by the plant 2 ms after a cycle committed, stamped at delivery a
latency later, applied at the first cycle after delivery.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import pytest

from backtest.rig import CycleRig
from runtime.api import Event
from runtime.tags import US, TagUpdate
from tests.safety.rig import Rig

SCAN_MS = 20
SAMPLE_AFTER_US = 2_000  # real: the fast poll runs right after the scan committed
QUIET = (1_000,)  # real latency of every read on a quiet machine
# A loaded machine: every tenth read waits 30 ms (real) for the interpreter, the next 16 ms, then the I/O
# thread has caught up. Latencies of this size were seen live (lateness p99 of 50-250 ms at load 6-30).
STALLS = (30_000, 16_000, 2_000, 2_000, 2_000, 2_000, 2_000, 2_000, 2_000, 2_000)
# Every frequency trip at the edge of its IEEE 1547-2018 range, so that ROCOF alone can trip.
WIDE_F = {
    "frequency": {
        "of2": {"threshold": 66.0, "clearing_s": 1000.0},
        "of1": {"threshold": 66.0, "clearing_s": 1000.0},
        "uf1": {"threshold": 50.0, "clearing_s": 1000.0},
        "uf2": {"threshold": 50.0, "clearing_s": 1000.0},
    }
}


def _rig(speed: int, **params: Any) -> Rig:
    rig = Rig(period_ms=SCAN_MS, speed=speed, **params)
    rig.req.setpoint = -5000.0
    rig.settle()
    assert rig.out["safety.trip"] == "" and rig.out["inverter.setpoint"] == -5000.0
    return rig


class Reads:
    """A tag (the frequency) as the driver reads it: each cycle's read sampled, delayed and stamped."""

    def __init__(
        self, rig: Rig, f_at: Callable[[float], float | None], latency_us: Sequence[int], tag: str = "grid.frequency"
    ):
        self.rig = rig
        self.tag = tag
        self.speed = rig.site.speed
        self.f_at = f_at  # plant seconds since the start -> Hz (None: no read this cycle, a missed poll)
        self.latency = latency_us
        self.t0 = rig.now_us
        self.pending: list[tuple[int, TagUpdate]] = []  # (delivered at, real us since the start, update)
        self.n = 0
        self.seen: list[float] = []  # the ROCOF estimate after each cycle

    def step(self) -> Any:
        rig = self.rig
        real = (rig.now_us - self.t0) // self.speed
        due = [u for at, u in self.pending if at <= real]
        self.pending = [(at, u) for at, u in self.pending if at > real]
        ups = [TagUpdate(n, v) for n, v in rig.values.items() if n != self.tag]
        res = CycleRig.step(rig, [*ups, *due])
        p = res.outputs["inverter.setpoint"] if res.outputs["inverter.enable"] else 0.0
        rig.values["inverter.power"] = p
        sampled = real + SAMPLE_AFTER_US
        f = self.f_at(sampled * self.speed / US)
        if f is not None:
            delivered = sampled + self.latency[self.n % len(self.latency)]
            self.n += 1
            stamp = self.t0 + delivered * self.speed
            self.pending.append((delivered, TagUpdate(self.tag, f, t_us=stamp)))
        self.seen.append(rig.safety.rocof.value)
        rig.advance()
        return res

    def run(self, seconds: float) -> list[Any]:
        end = self.rig.now_us + round(seconds * US)
        out = []
        while self.rig.now_us < end:
            out.append(self.step())
        return out


def _rocof_trips(rig: Rig) -> list[Event]:
    return [e for e in rig.event_log if e.kind == "trip" and "rocof" in e.message]


def _triangle(rate: float, leg_s: float) -> Callable[[float], float]:
    """Around 60 Hz: at ``rate`` for a leg, back for a leg, and so on (a grid swinging)."""

    def f(t: float) -> float:
        x = t % (2 * leg_s)
        return 60.0 + rate * ((x if x < leg_s else 2 * leg_s - x) - leg_s / 2)

    return f


@pytest.mark.parametrize("speed", [1, 20])
@pytest.mark.parametrize("rate", [2.5, -2.5])
@pytest.mark.parametrize("latency", [QUIET, STALLS], ids=["quiet", "stalls"])
def test_a_swing_inside_the_ride_through_does_not_trip(speed: int, rate: float, latency: Sequence[int]) -> None:
    """Category III owes ride-through up to 3 Hz/s (IEEE 1547-2018): a grid swinging at 2.5 Hz/s, read with
    the wire's latency, trips nothing at 1x or at x20 and the site keeps discharging."""
    rig = _rig(speed, **WIDE_F)
    reads = Reads(rig, _triangle(rate, 4.0), latency)
    res = reads.run(24.0 if speed == 1 else 48.0)
    assert _rocof_trips(rig) == []
    assert rig.out["safety.trip"] == "" and res[-1].outputs["inverter.setpoint"] == -5000.0
    assert max(abs(v) for v in reads.seen) > 2.0  # it did measure the swing


@pytest.mark.parametrize("speed", [1, 20])
@pytest.mark.parametrize("rate", [4.0, -4.0])
@pytest.mark.parametrize("latency", [QUIET, STALLS], ids=["quiet", "stalls"])
def test_a_rocof_beyond_the_ride_through_trips_after_its_confirm_time(
    speed: int, rate: float, latency: Sequence[int]
) -> None:
    """4 Hz/s, beyond Category III's 3 Hz/s: the trip comes at the first estimate that finds it above the
    limit for the confirm time (two estimates a window apart), at any speed; the output is zero in that
    cycle. The window counts like the tags' ages (N x at --speed N), so the trip comes within two windows,
    the confirm time and two cycles of plant time from the start of the ramp."""
    rig = _rig(speed, **WIDE_F)
    isl = rig.params.islanding
    window_s = isl.rocof_window_s * speed
    reads = Reads(rig, lambda t: 60.0 + rate * t, latency)
    cycle_s = rig.period_us / US
    tripped_at = None
    for res in reads.run(2 * window_s + isl.confirm_s + 4 * cycle_s):
        if res.outputs["safety.trip"] == "rocof":
            tripped_at = (res.now_us - reads.t0) / US
            assert res.outputs["inverter.setpoint"] == 0.0 and res.outputs["inverter.enable"] is False
            break
    assert tripped_at is not None, rig.safety.rocof.value
    assert window_s + isl.confirm_s <= tripped_at + 1e-9  # two estimates: not on the first one alone
    assert tripped_at <= 2 * window_s + isl.confirm_s + 3 * cycle_s
    assert rig.safety.rocof.value * rate > 0 and abs(rig.safety.rocof.value) > 3.0


@pytest.mark.parametrize("speed", [1, 20])
def test_one_estimate_held_over_missed_reads_is_no_persistent_rocof(speed: int) -> None:
    """The grid comes back: the frequency read during the loss was 0 Hz (no voltage, no frequency), the
    first read after is 60 Hz, one estimate far above any limit. The next reads are missed for longer than
    the confirm time (a slow round): that estimate, held, is no ROCOF that persisted, and when the reads
    come back at a steady 60 Hz there is nothing to trip on. The islanding trip clears into enter service."""
    rig = _rig(speed)
    cycle_s = rig.period_us / US
    loss_s, gap_s = 1.0 * speed, max(2 * cycle_s, 0.15)
    restore = loss_s + 0.5 * cycle_s

    def f_at(t: float) -> float | None:
        if t < loss_s:
            return 0.0
        if restore <= t < restore + gap_s:
            return None  # missed
        return 60.0

    rig.set(grid__loss=True, grid__voltage=0.0)
    reads = Reads(rig, f_at, QUIET)
    reads.run(loss_s)
    assert rig.out["safety.trip"] != "" and rig.out["inverter.setpoint"] == 0.0
    rig.set(grid__loss=False, grid__voltage=240.0)
    reads.run(gap_s + 10 * cycle_s)
    assert _rocof_trips(rig) == []
    assert rig.out["safety.trip"] == ""  # enter service from here (delay, then the ramp)


@pytest.mark.parametrize("speed", [1, 20])
def test_the_thermal_slope_read_with_the_wires_jitter_predicts_no_overheating_that_is_not_coming(speed: int) -> None:
    """The thermal prediction's slope (``thermal.slope_window_s``, 10 s) stays on the cycle clock: it must
    be short beside the heat sink's time constant, which is the plant's. A heat sink settling at 62 degC
    (tau 120 s), below the derating start (70) and the prediction's margin (68), read with stalls: the
    prediction never caps the power at 1x or x20 (10 s of the plant are 0.5 s of real time there, long
    beside the stalls). Stretched like ROCOF's window (200 s at x20, longer than tau) the slope of a
    settling heat sink lags and over-predicts: this test capped the power at x20 then. At x300 no window
    fits both (the stalls are 9 s of the plant, tau 120 s): the prediction may cap early there, on the
    safe side; derating and the trip are unchanged (docs/architecture.md "Clocks")."""
    rig = _rig(speed, thermal={"tau_s": 120.0})
    t0 = 40.0

    def temp(t: float) -> float:
        return t0 + (62.0 - t0) * (1 - math.exp(-t / 120.0))

    reads = Reads(rig, temp, STALLS, tag="inverter.temperature")
    caps = []
    for _ in range(round(600 * US / rig.period_us)):  # 600 s of the plant: five time constants
        reads.step()
        caps.append(rig.safety.thermal.cap_w)
    assert caps == [None] * len(caps)
    assert rig.out["safety.trip"] == "" and rig.out["inverter.setpoint"] == -5000.0


@pytest.mark.parametrize(
    ("window_s", "confirm_s", "ok"),
    [
        (0.1, 0.1, True),
        (0.5, 0.5, True),
        (0.6, 0.8, False),
        (1.0, 0.1, False),
        (1.0, 0.0, True),
        (0.45, 1.0, False),
        (0.4, 1.0, True),
    ],
)
def test_a_rocof_window_and_confirm_that_cannot_detect_within_2_s_are_refused(
    window_s: float, confirm_s: float, ok: bool
) -> None:
    """Two windows to see the change, then the confirm time in whole windows: within the 2 s an island
    must cease within, or the site file is refused."""
    from safety.settings import Islanding

    if ok:
        Islanding(rocof_window_s=window_s, confirm_s=confirm_s)
    else:
        with pytest.raises(ValueError, match="beyond the 2 s"):
            Islanding(rocof_window_s=window_s, confirm_s=confirm_s)
