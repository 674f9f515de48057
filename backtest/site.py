"""The backtest's site: the real programs and interlock on the cycle rig, against a battery model.

At each re-plan point the strategy gets a :class:`DecisionView` built here from what is *visible* at
the start of that row (published prices, visible forecasts, past prices, the public plug-in calendar)
and nothing else: the view is sliced out of the series, so a strategy has no handle on unpublished
data. Re-plan points, exactly as the scenario implies: the first row, every plug-in (arrival), every
row at which more prices are published (12:00 D-1) and, for strategies that use forecasts, every row at
which more forecasts become visible (00:00 D-1); the planner also re-plans when ``needs_replan`` says
the battery drifted from its plan or the plan ran out. A point met while the EV is away is answered at
its plug-in (backtest/run.py ``simulate``): no schedule reaches an unplugged EV (``Site.request``).

Between re-plans the schedule is followed by the site's own programs: the ``modes`` state machine and
``dispatch`` (programs/), then the ``v2g_safety`` interlock (safety/), on the scan engine's one step
function, ``Engine.step``, in simulated time (docs/design.md "The scan cycle"). The schedule's power for the
row becomes ``plan.power`` (W), with ``plan.soc_target`` and ``plan.interval_end`` as the planner task
publishes them; the engine's inputs are a healthy 240 V / 60 Hz site, the EV's plug and SoC, and the
power the battery took in the previous scan as ``inverter.power`` and ``meter.power``. A plain battery
model (efficiencies, capacity, the charger's ratings, the SoC window) follows the committed setpoint
between scans and is the hard physical limit, like the EV's BMS.

The departure reserve belongs to the plan, not to the programs: before the request goes to the engine,
it is raised to the charge that still reaches the energy from which full power meets every later
departure and the terminal SoC, and a discharge stops where that would stop being true with one
turn-round scan held back. The programs then only ever make the battery do less than asked in a
direction (limits), never more, so the driver's departure charge rests on the reserve alone.

Scanning: the site's scan period is ``PERIOD_S`` = 10 s (long enough that dispatch's 2 kW/s ramp makes
a full-power step in one scan). The programs decide from the previous scan's outputs in three places
(``modes`` reads last scan's ``safety.trip``; ``dispatch`` last scan's safety limits and setpoint; one
mode trigger per scan, so discharge -> charge takes two scans). A scan every hour would turn each of
those one-scan lags into a lost hour, and a scan every 10 s for two years is 6.3 million scans per run.
So the engine scans at the period while anything moves and sleeps when nothing does: each row starts
with a scan at the row's start; after a scan whose mode, setpoint, limits or trip differ from the
previous scan's, the next follows one period later (at most ``MAX_SETTLE`` times); once a scan changes
nothing, the outputs hold until the row ends, or until the SoC reaches a level at which ``modes`` or
``v2g_safety`` act (then the next scan is the first period boundary after it). A turn-round thus costs
the row one 10 s scan in ``idle``, as a real site loses one 20 ms scan, and the row's grid power in the
trace is the mean over its scans. A row in which nothing can change (settled in idle, see ``_quiet``)
is not scanned at all: the battery does exactly what its one scan would have left it to do, so a 2-year
run is about 7,300 scans instead of 21,000, with the same trace byte for byte; a row held at the
charger's full rating is skipped the same way (``_held``). Before the
first row the site runs through IEEE 1547 enter service (delay, then ramp) with the EV plugged in, as
a site energized before the series starts would have.

The trace is then checked independently of all that for violations and priced by the scenario's
accounting.
"""

from __future__ import annotations

import math
from bisect import bisect_left, bisect_right
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from backtest.data import DataError
from backtest.rig import CycleRig
from programs.planner import reserve
from programs.planner.scenario import Calendar, Scenario
from runtime.tags import US, Direction, TagSpec, TagType, TagUpdate

if TYPE_CHECKING:
    from safety.settings import SafetyParams


# -- the departure reserve and the battery model -----------------------------------------------------
def reserve_kwh(cal: Calendar, sc: Scenario, dt_h: float, margin_h: float = 0.0):
    """Energy needed at the end of each row so that full-power charging still meets every later floor,
    counting on each plugged-in row for ``dt_h - margin_h`` hours of charging."""
    b, ch = sc.battery, sc.charger
    gain = ch.efficiency_charge * ch.max_charge_kw * max(0.0, dt_h - margin_h) * cal.connected
    return reserve.reserve_kwh(cal.floor_soc * b.capacity_kwh, gain, cal.drive_kwh, b.soc_max * b.capacity_kwh)


def energy_after(e: float, p: float, drive: float, sc: Scenario, dt_h: float) -> float:
    ch = sc.charger
    return e - drive + (ch.efficiency_charge * p * dt_h if p >= 0 else p * dt_h / ch.efficiency_discharge)


def power_for(e: float, target: float, drive: float, sc: Scenario, dt_h: float) -> float:
    ch = sc.charger
    delta = target - e + drive
    return delta / (ch.efficiency_charge * dt_h) if delta >= 0 else delta * ch.efficiency_discharge / dt_h


# -- the site: the real programs and interlock on the engine -----------------------------------------
PERIOD_S = 10  # the backtest site's scan period (module docstring: why 10 s)
MAX_SETTLE = 8  # short cycles per row at most before the long one
RESERVE_MARGIN_CYCLES = 2  # scan cycles per row the departure reserve does not count on
NOMINAL_V, NOMINAL_HZ = 240.0, 60.0  # docs/design.md "Voltage basis": the bundled 240 V split-phase site
EPS_KWH = 1e-9  # below this an energy deficit is float rounding, not a reason to force charging

# What the site's device maps deliver, at the values of a healthy site: nominal grid, no islanding,
# a cool inverter at 25 degC ambient, a healthy PLC link and EV battery (SoH unknown would count as low).
STEADY_INPUTS: dict[str, tuple[TagType, str, Any]] = {
    "grid.voltage": (TagType.FLOAT, "V", NOMINAL_V),
    "grid.frequency": (TagType.FLOAT, "Hz", NOMINAL_HZ),
    "grid.loss": (TagType.BOOL, "", False),
    "inverter.temperature": (TagType.FLOAT, "degC", 25.0),
    "inverter.write_mismatch": (TagType.BOOL, "", False),
    "ev.soh": (TagType.FLOAT, "", 1.0),
    "plc.snr": (TagType.FLOAT, "dB", 30.0),
}
# The inverter's own ratings (SunSpec 702), written once with the scenario's charger limits; then,
# every scan, the battery model (plug, SoC, the power it took in the previous scan) and the plan.
CYCLE_INPUTS: tuple[TagSpec, ...] = (
    TagSpec("inverter.max_charge_w", TagType.FLOAT, "W"),
    TagSpec("inverter.max_discharge_w", TagType.FLOAT, "W"),
    TagSpec("ev.connected", TagType.BOOL),
    TagSpec("ev.soc", TagType.FLOAT),
    TagSpec("inverter.power", TagType.FLOAT, "W"),
    TagSpec("meter.power", TagType.FLOAT, "W"),
    # as runtime/tasks/planner_task.py declares them
    TagSpec("plan.power", TagType.FLOAT, "W", Direction.SHARED, 0.0, 300.0),
    TagSpec("plan.soc_target", TagType.FLOAT, "", Direction.SHARED, None, 300.0),
    TagSpec("plan.interval_end", TagType.FLOAT, "s", Direction.SHARED, None, 300.0),
)
OUTPUTS: tuple[TagSpec, ...] = (
    TagSpec("inverter.setpoint", TagType.FLOAT, "W", Direction.OUTPUT, 0.0),
    TagSpec("inverter.enable", TagType.BOOL, "", Direction.OUTPUT, False),
)


def _merge(base: dict[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in extra.items():
        out[k] = _merge(out[k], v) if isinstance(v, Mapping) and isinstance(out.get(k), dict) else v
    return out


def safety_params(sc: Scenario, overrides: Mapping[str, Any] | None = None) -> SafetyParams:
    """v2g_safety for the scenario: Category III at 240 V / 60 Hz, the charger's ratings, the scenario's
    SoC window with no taper band (the battery model is the BMS that lands on the limits exactly)."""
    from pydantic import ValidationError

    from safety.settings import SafetyParams

    b, ch = sc.battery, sc.charger
    p: dict[str, Any] = {
        "category": "III",
        "frequency_basis_hz": int(NOMINAL_HZ),
        "rated_charge_w": ch.max_charge_kw * 1000.0,
        "rated_discharge_w": ch.max_discharge_kw * 1000.0,
        "battery": {
            "soc_reserve": b.soc_min,
            "soc_max": b.soc_max,
            "soc_band": 0.0,
            "soc_reserve_guarded": max(0.40, b.soc_min),
        },
    }
    try:
        return SafetyParams.model_validate(_merge(p, overrides or {}))
    except ValidationError as exc:
        why = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'safety'}: {e['msg']}" for e in exc.errors())
        raise DataError(f"safety settings for the scenario: {why}") from None


class Site:
    """The scan engine with ``modes``, ``dispatch`` and ``v2g_safety``, stepped in simulated time against
    a plain battery model that is also the hard physical limit (the EV's BMS)."""

    def __init__(self, sc: Scenario, safety: Mapping[str, Any] | None = None, skip: bool = True):
        from programs.dispatch import Dispatch, DispatchParams
        from programs.modes import ModeParams, Modes
        from runtime.api import SiteInfo
        from safety.supervisor import SafetySupervisor

        b, ch = sc.battery, sc.charger
        self.sc = sc
        site = SiteInfo("backtest", NOMINAL_V, NOMINAL_HZ, PERIOD_S * US)
        self.safety_params = safety_params(sc, safety)
        try:
            # the backtest applies the departure reserve to the request itself (``request``), with the
            # calendar's exact floors, so the programs need no plan.reserve_soc here
            modes = Modes("modes", ModeParams(soc_min=b.soc_min, soc_max=b.soc_max, reserve_tag=None), site)
        except ValueError as exc:  # pydantic's ValidationError is one
            raise DataError(f"modes for the scenario's SoC window: {exc}".replace("\n", " ")) from None
        dispatch = Dispatch(
            "dispatch",
            DispatchParams(
                max_charge_w=ch.max_charge_kw * 1000.0,
                max_discharge_w=ch.max_discharge_kw * 1000.0,
                capacity_wh=b.capacity_kwh * 1000.0,
                efficiency_charge=ch.efficiency_charge,
                efficiency_discharge=ch.efficiency_discharge,
            ),
            site,
        )
        lock = SafetySupervisor("v2g_safety", self.safety_params, site)
        # a forced charge must clear the mode machine's deadband, or it would not start
        self.min_forced_kw = 2.0 * modes.params.deadband_w / 1000.0
        steady = [TagSpec(n, t, u) for n, (t, u, _) in STEADY_INPUTS.items()]
        self.rig = CycleRig(site, [modes, dispatch], [lock], (*steady, *CYCLE_INPUTS, *OUTPUTS))
        self.e = b.soc_initial * b.capacity_kwh
        self.p_kw = 0.0  # what the battery took last cycle (grid side, signed)
        self._steady = [TagUpdate(n, v) for n, (_, _, v) in STEADY_INPUTS.items()]
        self._steady += [
            TagUpdate("inverter.max_charge_w", ch.max_charge_kw * 1000.0),
            TagUpdate("inverter.max_discharge_w", ch.max_discharge_kw * 1000.0),
        ]
        self._last: tuple = ()
        self._settled = False  # the last scan's signature equalled the one before it
        self._last_in: tuple = ()  # (plug, SoC key) the last scan saw
        self.skip = skip  # skip the scans of rows in which nothing can change (``_quiet``)
        self.skipped = 0
        self._deadband_w = modes.params.deadband_w
        bp, mp = self.safety_params.battery, modes.params
        self._key_levels = (bp.soc_reserve, bp.soc_reserve_guarded, bp.soc_max) if bp.soc_band <= 0 else None
        # SoC levels at which v2g_safety or modes change what they allow
        self._levels = sorted(
            {
                bp.soc_reserve,
                bp.soc_max,
                mp.soc_min,
                mp.soc_max,
                mp.soc_min + mp.soc_hysteresis,
                mp.soc_max - mp.soc_hysteresis,
            }
        )
        # Before the first row: the site is energized with the EV plugged in and no plan, through
        # enter service (IEEE 1547 clause 4.10 delay, then the ramp), as it would have been before the
        # series starts.
        es = self.safety_params.enter_service
        warm_us = round((es.delay_s + es.ramp_s) * US) // (PERIOD_S * US) * (PERIOD_S * US) + PERIOD_S * US
        while self.now_us < warm_us:
            self._cycle(self.now_us + PERIOD_S * US, True, 0.0, self.e / b.capacity_kwh, warm_us / US, 0.0, False)
        self.origin_us = warm_us

    @property
    def now_us(self) -> int:
        return self.rig.now_us

    def _cycle(
        self,
        until_us: int,
        connected: bool,
        plan_kw: float,
        soc_target: float,
        end_s: float,
        drive_kw: float,
        settle: bool,
    ) -> float:
        """One scan at ``now_us``; the battery follows its setpoint until the next scan. Returns the
        battery's grid power over that time (kW)."""
        cap = self.sc.battery.capacity_kwh
        w = self.p_kw * 1000.0
        ups = [
            TagUpdate("ev.connected", connected),
            TagUpdate("ev.soc", self.e / cap),
            TagUpdate("inverter.power", w),
            TagUpdate("meter.power", w),
            TagUpdate("plan.power", plan_kw * 1000.0),
            TagUpdate("plan.soc_target", soc_target),
            TagUpdate("plan.interval_end", end_s),
        ]
        if self.rig.cycles == 0:
            ups += self._steady
        res = self.rig.step(ups)
        out = res.outputs
        sp = out["inverter.setpoint"] if out["inverter.enable"] else 0.0
        sig = (
            res.image.value("mode.state"),
            sp,
            out["safety.limit_charge"],
            out["safety.limit_discharge"],
            out["safety.trip"],
        )
        settled = sig == self._last
        self._last, self._settled = sig, settled
        self._last_in = (connected, self._soc_key(self.e / cap))
        # Unsettled (a transition, a new setpoint or limit): the next scan follows one period later, as
        # on the real site; settled: nothing changes until the plan or the plug does, at the row's end.
        nxt = until_us if settled or not settle else min(until_us, self.now_us + PERIOD_S * US)
        if sp and connected:
            nxt = min(nxt, self._next_threshold_us(sp / 1000.0))
        dur_h = (nxt - self.now_us) / (3600 * US)
        self.e, self.p_kw = self.battery(self.e, sp / 1000.0 if connected else 0.0, drive_kw * dur_h, dur_h)
        self.rig.now_us = nxt
        return self.p_kw

    def _next_threshold_us(self, p_kw: float) -> int:
        """The first scan at or after the battery crosses the next SoC level a program acts on at this
        power, so a window narrower than the battery's is overshot by one scan at most, as on a site."""
        ch, cap = self.sc.charger, self.sc.battery.capacity_kwh
        soc = self.e / cap
        levels = self._levels  # sorted
        if p_kw > 0:
            i = bisect_right(levels, soc)  # the first level above the SoC
            if i == len(levels):
                return 1 << 62
            hours = (levels[i] - soc) * cap / (ch.efficiency_charge * min(p_kw, ch.max_charge_kw))
        else:
            i = bisect_left(levels, soc)  # levels[i - 1]: the last one below it
            if i == 0:
                return 1 << 62
            hours = (soc - levels[i - 1]) * cap * ch.efficiency_discharge / min(-p_kw, ch.max_discharge_kw)
        period = PERIOD_S * US
        return self.now_us + max(1, math.ceil(hours * 3600 * US / period)) * period

    def battery(self, e: float, p: float, drive: float, dt_h: float) -> tuple[float, float]:
        """(energy after, grid power taken): the charger's ratings and the SoC window are physical."""
        b, ch = self.sc.battery, self.sc.charger
        p = max(-ch.max_discharge_kw, min(ch.max_charge_kw, p))
        if p > 0:
            p = min(p, max(0.0, power_for(e, b.soc_max * b.capacity_kwh, drive, self.sc, dt_h)))
        elif p < 0:
            p = max(p, min(0.0, power_for(e, b.soc_min * b.capacity_kwh, drive, self.sc, dt_h)))
        return energy_after(e, p, drive, self.sc, dt_h), p + 0.0

    def run_row(
        self,
        start_us: int,
        end_us: int,
        connected: bool,
        plan_kw: float,
        floor_kwh: float,
        discharge_floor_kwh: float,
        drive_kwh: float,
    ) -> float:
        """Scan through one price row; returns its mean grid power (kW)."""
        sc, cap = self.sc, self.sc.battery.capacity_kwh
        row_h = (end_us - start_us) / (3600 * US)
        req0 = self.request(plan_kw, connected, floor_kwh, discharge_floor_kwh, row_h)
        if self.skip and self._quiet(connected, req0):
            # exactly what the one settled scan of this row would leave (``_cycle`` with setpoint 0)
            self.e, self.p_kw = self.battery(self.e, 0.0, drive_kwh / row_h * row_h, row_h)
            self.rig.now_us = end_us
            self.skipped += 1
            return 0.0
        held = self._held(connected, req0, end_us) if self.skip else None
        if held is not None:
            # exactly what the one settled scan of this row would leave (``_cycle`` holding ``held`` kW)
            self.e, self.p_kw = self.battery(self.e, held, drive_kwh / row_h * row_h, row_h)
            self.rig.now_us = end_us
            self.skipped += 1
            kwh = self.p_kw * (end_us - start_us) / (3600 * US)
            return ((kwh if kwh > 0 else 0.0) + (kwh if kwh < 0 else 0.0)) / row_h
        # what the plan expects at the row's end (dispatch corrects only deviations beyond its deadband)
        target = energy_after(self.e, req0, drive_kwh, sc, row_h) / cap
        target = min(sc.battery.soc_max, max(sc.battery.soc_min, target))
        kwh_in = kwh_out = 0.0
        short = 0
        while self.now_us < end_us:
            rest_h = (end_us - self.now_us) / (3600 * US)
            req = self.request(plan_kw, connected, floor_kwh, discharge_floor_kwh, rest_h)
            t0 = self.now_us
            p = self._cycle(end_us, connected, req, target, end_us / US, drive_kwh / row_h, short < MAX_SETTLE)
            short += 1
            if p > 0:
                kwh_in += p * (self.now_us - t0) / (3600 * US)
            elif p < 0:
                kwh_out += p * (self.now_us - t0) / (3600 * US)
        if kwh_in > EPS_KWH and kwh_out < -EPS_KWH:
            raise RuntimeError("a row both charged and discharged: its trace row could not state that")
        return (kwh_in + kwh_out) / row_h

    def _soc_key(self, soc: float) -> tuple:
        """What v2g_safety's SoC limits depend on (safety/battery.py ``soc_fractions``): which side of
        each threshold the SoC is on; with a taper band the SoC itself."""
        if self._key_levels is None:
            return (soc,)
        reserve, guarded, top = self._key_levels
        return (soc > reserve, soc > guarded, soc < top)

    def _quiet(self, connected: bool, req_kw: float) -> bool:
        """Nothing can change in this row's scan: the site sits settled in idle with the permit withdrawn
        and no trip, the plug and the side of every SoC threshold are as in the last scan, and the
        request stays inside the mode machine's deadband (or the EV is away), so no trigger can fire,
        dispatch writes 0 and safety's limits stay. Such a row's scan would repeat the last one, and the
        battery only follows the trip's drain; a test checks the trace byte for byte against stepping."""
        if not self._settled:
            return False
        mode, sp, _, _, trip = self._last
        return (
            mode == "idle"
            and sp == 0.0
            and trip == ""
            and self._last_in == (connected, self._soc_key(self.e / self.sc.battery.capacity_kwh))
            and (not connected or abs(req_kw * 1000.0) <= self._deadband_w)
        )

    def _held(self, connected: bool, req_kw: float, end_us: int) -> float | None:
        """The power (kW) a row's one scan would hold, when that scan cannot change anything: the site
        sits settled at the charger's full rating in the mode's direction with no trip, the plug and the
        side of every SoC threshold are as in the last scan, the request asks for at least that rating
        (dispatch's correction is then clamped away by the rating: the plan's target is the full-power
        energy, so the SoC error is zero), and the battery reaches no SoC level a program acts on before
        the row ends. Else None. The trace equals stepping byte for byte (tests/programs/test_backtest_skip)."""
        if not (self._settled and self._last and connected):
            return None
        mode, sp, _, _, trip = self._last
        ch = self.sc.charger
        if trip != "" or self._last_in != (connected, self._soc_key(self.e / self.sc.battery.capacity_kwh)):
            return None
        full = (mode == "charge" and sp == ch.max_charge_kw * 1000.0 and req_kw >= ch.max_charge_kw) or (
            mode == "discharge" and sp == -ch.max_discharge_kw * 1000.0 and req_kw <= -ch.max_discharge_kw
        )
        if not full:
            return None
        p_kw = sp / 1000.0  # as ``_cycle`` hands it to the battery
        return p_kw if self._next_threshold_us(p_kw) >= end_us else None

    def request(
        self, plan_kw: float, connected: bool, floor_kwh: float, discharge_floor_kwh: float, rest_h: float
    ) -> float:
        """The plan's power with the departure reserve applied (docs/planner.md "Departure reserve"):
        charging is forced while the energy is below ``floor_kwh`` (from which full power still meets
        every later floor), by at least what reaches it by the row's end; discharge stops at
        ``discharge_floor_kwh`` (the same, with a turn-round scan per row held back). Zero while away."""
        if not connected:
            return 0.0
        ch = self.sc.charger
        deficit = floor_kwh - self.e
        if deficit > EPS_KWH:
            return max(plan_kw, deficit / (ch.efficiency_charge * rest_h), self.min_forced_kw)
        return max(plan_kw, min(0.0, (discharge_floor_kwh - self.e) * ch.efficiency_discharge / rest_h))
