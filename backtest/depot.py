"""The depot backtest: a fleet scenario through the same engine step, with and without the fleet plan.

Why through the engine: the savings a depot operator is promised must survive everything between the
plan and the meter (the mode machines, dispatch's ramps, the allocator's cuts, the connection interlock,
the plant's physics), so the backtest runs the example depot's own site file (runtime/sites/depot.yaml,
its programs and interlocks unchanged) with its virtual plant in-process, cycle by cycle on the cycle
clock, and the fleet plan task's logic (runtime/tasks/fleet_task.py ``FleetPlanner``) between cycles,
its writes landing at the next cycle start as the task channel's do. Nothing sleeps: a week costs
compute time only.

Three figures per scenario (runtime/data/scenarios/depot*.yaml):
- baseline: the same site without a plan (every EVSE charges on arrival to its departure SoC, never
  discharges; the allocator shares the connection by departure urgency);
- fleet: with the fleet plan task;
- perfect foresight: programs/planner/fleet.py over the whole run with every arrival, departure, SoC on
  arrival and price known in advance, the same connection and building (a bound no controller reaches).

share of perfect foresight = (baseline - fleet) / (baseline - perfect foresight), costs of the EVs'
grid energy at the day-ahead price plus the degradation cost of discharge, as the single-EV backtest
counts them (runtime/data/scenarios/commuter.yaml "accounting").

``python -m backtest.depot SCENARIO [--seed N] [--json OUT]`` prints the report as JSON.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import yaml
from pydantic import Field

from backtest.data import load_prices
from runtime.api import Params
from runtime.sim.depot import DAY_S, Fleet, TimeOfDay, Watts
from runtime.yamlload import load_yaml, validate

ROOT = Path(__file__).resolve().parents[1]
DEPOT = ROOT / "runtime" / "sites" / "depot.yaml"


class DepotScenario(Params):
    """A depot backtest scenario; times of day of the building are seconds after ``start``'s clock time,
    as the virtual plant counts them."""

    chargers: int = Field(ge=1, le=200)
    fleet: Fleet = Field(description="arrivals, departures, SoC on arrival, trip energy, need; seeded; days")
    building_w: list[tuple[TimeOfDay, Watts]] = Field(min_length=1, description="[[s after start, W], ...]")
    import_limit_w: float = Field(gt=0, le=1e8)
    export_limit_w: float = Field(ge=0, le=1e8)
    margin_w: float = Field(3000.0, ge=0, le=1e8, description="the allocator's and the plan's margin")
    prices: str = Field(description="price CSV (backtest/data.py), relative to the scenario file")
    data_start: dt.date = Field(description="the CSV's day that the run's first day replays")
    timezone: str = "America/New_York"
    start: dt.datetime = Field(description="local time of the run's time zero (naive)")
    speed: int = Field(600, ge=1, le=100_000, description="cycles of the site's period each step covers")
    plant_step_s: float = Field(5.0, gt=0, le=600, description="the plant's physics step")
    soc_min: float = Field(0.2, ge=0, le=1)
    soc_max: float = Field(0.9, ge=0, le=1)
    degradation_cost_per_mwh: float = Field(20.0, ge=0, le=10_000)


def load_scenario(path: str | Path) -> DepotScenario:
    doc = load_yaml(Path(path))
    return validate(DepotScenario, doc.data if isinstance(doc.data, dict) else {}, doc, ())


# -- the site ---------------------------------------------------------------------------------------
def building_forecast(sc: DepotScenario) -> list[list[Any]]:
    """The plant's building (seconds after the start) as the fleet task's profile by local time of day."""
    t0 = sc.start.hour * 3600 + sc.start.minute * 60
    pts = sorted(((t0 + s) % DAY_S, w) for s, w in sc.building_w)
    return [[f"{int(s) // 3600:02d}:{int(s) % 3600 // 60:02d}", w] for s, w in pts]


def site_file(sc: DepotScenario, tmp: Path, *, fleet: bool) -> Path:
    """runtime/sites/depot.yaml with the scenario's fleet, connection and building; prices fed by the
    backtest (shared tags, not the CSV task); without ``fleet`` no plan at all (the baseline)."""
    d = yaml.safe_load(DEPOT.read_text())
    d["site"]["start"] = sc.start.isoformat()
    d["site"]["timezone"] = sc.timezone
    d["state_dir"] = str(tmp / "var")
    ev = d["evses"]
    ev["each"] = [{"id": i} for i in range(1, sc.chargers + 1)]
    session_map = str(DEPOT.parent / "depot_ev_map.yaml")
    for dev in ev["template"]["devices"]:
        for u in dev["params"]["units"]:
            if u["map"] == "depot_ev_map.yaml":
                u["map"] = session_map
    limits = {"import_limit_w": sc.import_limit_w, "export_limit_w": sc.export_limit_w}
    for comp in d["programs"]:
        if comp["type"] == "allocator":
            comp["params"].update(limits, margin_w=sc.margin_w)
    for comp in d["safety"]:
        if comp["type"] == "connection_limit":
            comp["params"].update(limits)
    plant = d["plant"]["params"]
    plant["depot"].update(
        chargers=sc.chargers,
        session_map=session_map,
        fleet=sc.fleet.model_dump(mode="json"),
        building_w=[list(x) for x in sc.building_w],
        import_limit_w=sc.import_limit_w,
    )
    plant.pop("report", None)
    d["tags"] = [
        {"name": "prices.day_ahead", "type": "json", "direction": "shared", "stale_after_s": 2 * DAY_S},
        {"name": "prices.updated", "type": "int", "direction": "shared"},
    ]
    tasks = []
    if fleet:
        task = next(t for t in d["tasks"] if t["type"] == "fleet_planner")
        task["params"].update(
            limits,
            margin_w=sc.margin_w,
            building_w=building_forecast(sc),
            soc_min=sc.soc_min,
            soc_max=sc.soc_max,
            degradation_cost_per_mwh=sc.degradation_cost_per_mwh,
        )
        tasks.append(task)
    else:
        for comp in ev["template"]["programs"]:
            if comp["type"] == "modes":
                comp["params"].update(plan_tag=None, reserve_tag=None, fallback_soc=sc.fleet.need_soc)
            elif comp["type"] == "dispatch":
                comp["params"].update(plan_power_tag=None, plan_soc_tag=None, plan_end_tag=None)
    d["tasks"] = tasks
    for comp in ev["template"]["safety"]:  # no back office in a backtest: its limits have no task to publish them
        comp.get("params", {}).pop("limits", None)
    for comp in ev["template"]["programs"]:
        if comp["type"] == "modes":
            comp["params"].update(soc_min=sc.soc_min, soc_max=sc.soc_max)
            comp["params"]["fallback_soc"] = sc.fleet.need_soc
    out = tmp / ("fleet.yaml" if fleet else "baseline.yaml")
    out.write_text(yaml.safe_dump(d, sort_keys=False))
    return out


# -- prices -----------------------------------------------------------------------------------------
@dataclass
class Prices:
    """The CSV's rows on the run's calendar: row i is the hour ``day0 + i``; day D is published at 12:00
    on D-1, as runtime/tasks/prices.py publishes a day-ahead market."""

    day0: dt.datetime  # local midnight of the run's first day
    step_s: int
    price: list[float]
    tz: ZoneInfo

    @classmethod
    def load(cls, sc: DepotScenario, base: Path) -> Prices:
        ps = load_prices(base / sc.prices)
        first = next(i for i, t in enumerate(ps.times) if t.date() >= sc.data_start)
        day0 = dt.datetime.combine(sc.start.date(), dt.time())
        return cls(day0, ps.step_s, [float(x) for x in ps.price[first:]], ZoneInfo(sc.timezone))

    def at(self, local: dt.datetime) -> float:
        return self.price[int((local - self.day0).total_seconds() // self.step_s)]

    def published(self, local: dt.datetime) -> tuple[int, list[dict[str, Any]]]:
        """(revision, the curve) visible at ``local``: today, and tomorrow from 12:00."""
        days = (local - self.day0).days + (2 if local.hour >= 12 else 1)
        step = dt.timedelta(seconds=self.step_s)
        first = max(0, int((local - self.day0).total_seconds() // self.step_s) - 1)
        last = min(len(self.price), int(days * DAY_S // self.step_s))
        out = []
        for i in range(first, last):
            s = (self.day0 + i * step).replace(tzinfo=self.tz)
            out.append({"start": s.isoformat(), "end": (s + step).isoformat(), "price": self.price[i]})
        return days, out


# -- one run through the engine ----------------------------------------------------------------------
@dataclass
class RunResult:
    cost: float
    import_kwh: float
    export_kwh: float
    departures: int
    missed: int
    lowest_soc_above_need: float | None  # the closest departure: SoC at departure less its need
    peak_import_w: float
    longest_over_s: float
    max_over_w: float
    replans: int
    solve_s_max: float
    cycles: int
    run_s: float


def _split(name: str) -> tuple[int | None, str]:
    """(EVSE, the tag's name in that EVSE's plant) of a site tag name; (None, name) for a site tag."""
    from runtime.evses import evse_of

    n = evse_of(name)
    return n, name if n is None else name.split(".", 1)[1]


def run(sc: DepotScenario, site: Path, prices: Prices, *, fleet: bool) -> RunResult:
    from runtime.sim.config import plant_params
    from runtime.sim.server import VirtualPlant
    from runtime.site import build_site
    from runtime.tags import US, Quality, TagUpdate
    from runtime.tasks.fleet_task import FleetTask

    t_start = time.perf_counter()
    built = build_site(site, speed=sc.speed)
    params, base = plant_params(site)
    plant = VirtualPlant(params.model_copy(update={"step_s": sc.plant_step_s}), base)
    plant.stats.import_limit_w = sc.import_limit_w
    # The engine reads the physics here (site_values, evse_values), not the Modbus registers: without its
    # devices the plant no longer encodes every register of 41 devices at every step (a third of the run).
    plant.devices.clear()
    engine = built.engine()
    task = next((t for t in built.tasks if isinstance(t, FleetTask)), None)
    core = task.core if task is not None else None
    period_us = built.info.period_us
    specs = built.tags.specs.values()
    # each input and output once: (site name, EVSE or None, the name in its plant); not per cycle
    inputs = [(s.name, *_split(s.name)) for s in specs if s.direction.value == "input"]
    outputs: list[tuple[str, int, str]] = []
    for s in specs:
        n, plain = _split(s.name)
        if s.direction.value == "output" and n is not None:
            outputs.append((s.name, n, plain))
    fixed = {
        "runtime.overrun_fault": False,
        "runtime.persist_fault": False,
        "runtime.available": True,
        "runtime.task_process_alive": True,
    }
    eta_d = params.ev.discharge_efficiency
    pending: list[TagUpdate] = []
    rev_sent = -1
    now_us = 0
    cost = imp = exp = 0.0
    replans, solve_max = 0, 0.0
    last_sig: Any = None
    last_write_us = -(10**18)
    cycles = round(sc.fleet.days * DAY_S * US / period_us)
    for _ in range(cycles):
        local = sc.start + dt.timedelta(microseconds=now_us)
        site_v = {**plant.site_values(), **fixed}
        per = {n: {**plant.evse_values(n), "inverter.write_mismatch": False} for n in plant.evse}
        ups = []
        for name, n, plain in inputs:
            v = site_v.get(name) if n is None else per[n].get(plain)
            ups.append(TagUpdate(name, None, Quality.BAD) if v is None else TagUpdate(name, v))
        rev, curve = prices.published(local)
        if fleet and (rev != rev_sent or now_us - last_write_us >= 3600 * US):
            pending += [TagUpdate("prices.day_ahead", curve), TagUpdate("prices.updated", rev)]
            rev_sent = rev
        res = engine.step(now_us, ups + pending)
        pending = []
        if core is not None:
            aware = local.replace(tzinfo=prices.tz)
            why = core.step(res.image, aware, now_us)
            if why is not None:
                replans += 1
                if core.planned is not None:
                    solve_max = max(solve_max, core.planned.plan.solve_s)
            now = aware.astimezone(dt.UTC)
            sig = core.signature(now)
            if why is not None or sig != last_sig or now_us - last_write_us >= core.p.heartbeat_s * US:
                pending += [TagUpdate(t, v, q) for t, v, q in core.writes(now, now_us / US)]
                last_sig, last_write_us = sig, now_us
        for name, n, plain in outputs:
            plant.evse[n].command(plain, res.outputs[name])
        before = {n: (e.inv_import_wh, e.inv_export_wh) for n, e in plant.evse.items()}
        price = prices.at(local)
        plant.advance(period_us / US)
        for n, e in plant.evse.items():
            di, de = e.inv_import_wh - before[n][0], e.inv_export_wh - before[n][1]
            imp += di
            exp += de
            cost += (di - de) * price / 1e6 + de * sc.degradation_cost_per_mwh / (eta_d * 1e6)
        now_us += period_us
    st = plant.stats
    return RunResult(
        cost,
        imp / 1000.0,
        exp / 1000.0,
        len(st.departures),
        sum(1 for d in st.departures if not d.met),
        min((d.soc - d.need for d in st.departures), default=None),
        st.peak_import_w,
        st.longest_over_s,
        st.max_over_w,
        replans,
        solve_max,
        cycles,
        time.perf_counter() - t_start,
    )


# -- perfect foresight -------------------------------------------------------------------------------
def perfect_foresight(sc: DepotScenario, site: Path, prices: Prices) -> tuple[float, float, float]:
    """(cost, shortfall kWh, solve s) of the fleet LP over the whole run, every visit known: one EV per
    stay, connected over the quarter-hours inside it, arriving with its SoC, leaving with the need."""
    import numpy as np

    from programs.planner.fleet import FleetEv, FleetInput, solve_fleet
    from runtime.sim.config import plant_params
    from runtime.sim.depot import visits

    params, _ = plant_params(site)
    dm = params.depot
    assert dm is not None
    step = 900.0
    n = int(sc.fleet.days * DAY_S // step)
    usable = params.ev.capacity_wh * params.ev.soh / 1000.0
    imax, dmax = params.inverter.max_charge_w / 1000.0, params.inverter.max_discharge_w / 1000.0
    evs = []
    for stays in visits(dm).values():
        for v in stays:
            a, b = int(np.ceil(v.arrive / step)), min(n, int(v.depart // step))
            if b <= a:
                continue
            conn = np.zeros(n, dtype=bool)
            conn[a:b] = True
            need = np.zeros(n)
            need[b - 1] = sc.fleet.need_soc * usable
            evs.append(
                FleetEv(
                    v.soc * usable,
                    conn,
                    need,
                    sc.soc_min * usable,
                    sc.soc_max * usable,
                    imax,
                    dmax,
                    params.ev.charge_efficiency,
                    params.ev.discharge_efficiency,
                )
            )
    t = np.arange(n) * step
    price = np.array([prices.at(sc.start + dt.timedelta(seconds=float(s))) for s in t])
    building = np.array([dm.building_at(float(s)) for s in t]) / 1000.0
    inp = FleetInput(
        price,
        building,
        (sc.import_limit_w - sc.margin_w) / 1000.0,
        (sc.export_limit_w - sc.margin_w) / 1000.0,
        tuple(evs),
        step / 3600.0,
        sc.degradation_cost_per_mwh,
        time_limit_s=600.0,
    )
    plan = solve_fleet(inp)
    if not plan.ok:
        raise RuntimeError(f"perfect foresight: {plan.message}")
    return plan.cost, float(plan.shortfall_kwh.sum()), plan.solve_s


def backtest(path: str | Path, seed: int | None = None) -> dict[str, Any]:
    """The report of one scenario; ``seed`` draws another fleet from the same distributions (a check that
    a change is not fitted to one week's vans)."""
    path = Path(path)
    sc = load_scenario(path)
    if seed is not None:
        sc = sc.model_copy(update={"fleet": sc.fleet.model_copy(update={"seed": seed})})
    prices = Prices.load(sc, path.parent)
    with tempfile.TemporaryDirectory() as tmp:
        t = Path(tmp)
        fleet_site = site_file(sc, t, fleet=True)
        base = run(sc, site_file(sc, t, fleet=False), prices, fleet=False)
        plan = run(sc, fleet_site, prices, fleet=True)
        pf_cost, pf_short, pf_s = perfect_foresight(sc, fleet_site, prices)
    gap = base.cost - pf_cost
    return {
        "scenario": path.name,
        "seed": sc.fleet.seed,
        "chargers": sc.chargers,
        "days": sc.fleet.days,
        "cost_baseline": round(base.cost, 2),
        "cost_fleet": round(plan.cost, 2),
        "cost_perfect_foresight": round(pf_cost, 2),
        "savings": round(base.cost - plan.cost, 2),
        "share_of_perfect_foresight": round((base.cost - plan.cost) / gap, 3) if gap > 1e-9 else None,
        "departures": plan.departures,
        "missed_departures": plan.missed,
        "missed_departures_baseline": base.missed,
        "lowest_soc_above_need": None if plan.lowest_soc_above_need is None else round(plan.lowest_soc_above_need, 4),
        "perfect_foresight_shortfall_kwh": round(pf_short, 3),
        "peak_import_w": round(plan.peak_import_w),
        "peak_import_w_baseline": round(base.peak_import_w),
        "import_limit_w": sc.import_limit_w,
        "longest_over_s": plan.longest_over_s,
        "max_over_w": round(plan.max_over_w),
        "ev_import_kwh": round(plan.import_kwh, 1),
        "ev_export_kwh": round(plan.export_kwh, 1),
        "replans": plan.replans,
        "solve_s_max": round(plan.solve_s_max, 3),
        "cycles": plan.cycles,
        "run_s": round(plan.run_s, 1),
        "run_s_baseline": round(base.run_s, 1),
        "perfect_foresight_solve_s": round(pf_s, 3),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m backtest.depot", description=__doc__.split("\n")[0])
    ap.add_argument("scenario", type=Path, help="a depot scenario (runtime/data/scenarios/depot*.yaml)")
    ap.add_argument("--json", type=Path, help="also write the report here")
    ap.add_argument("--seed", type=int, help="the fleet's seed instead of the scenario's")
    a = ap.parse_args(argv)
    report = backtest(a.scenario, a.seed)
    text = json.dumps(report, indent=1)
    print(text)
    if a.json:
        a.json.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
