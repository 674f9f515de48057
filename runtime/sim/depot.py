"""The depot side of the virtual plant: N chargers with their EVs, a building load, one site meter.

Each EVSE is a ``Plant`` of its own (its charger's power stage, its EV, its PLC link), served as Modbus
unit n of the charger gateway; the site ``Plant`` holds the grid, the building load and the meter at the
point of common coupling, which reads the building plus every charger. The fleet's days come from a
seeded generator: each vehicle arrives in the evening with a random SoC, leaves the next morning, and
drives a random trip; the charger reports the time left until departure and the SoC the vehicle needs,
as an ISO 15118-20 EV reports DepartureTime and its target. Everything is simulated time: no clock here.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Annotated, Literal

from pydantic import Field, model_validator

from runtime.api import Params

DAY_S = 86_400.0
Soc = Annotated[float, Field(ge=0, le=1)]
Wh = Annotated[float, Field(ge=0, le=1e7)]
TimeOfDay = Annotated[float, Field(ge=0, lt=DAY_S)]
Watts = Annotated[float, Field(ge=-1e7, le=1e7)]


class Fleet(Params):
    """Arrivals and departures, relative to the plant's time zero (the site's ``start``)."""

    seed: int = Field(1, ge=0, le=2**32 - 1)
    days: int = Field(7, ge=1, le=366)
    arrive_s: float = Field(3_600.0, ge=0, le=DAY_S, description="mean arrival, s after time zero each day")
    arrive_sd_s: float = Field(1_800.0, ge=0, le=DAY_S / 4)
    depart_s: float = Field(48_600.0, ge=0, le=2 * DAY_S, description="mean departure, s after time zero each day")
    depart_sd_s: float = Field(1_200.0, ge=0, le=DAY_S / 4)
    soc_on_arrival: tuple[Soc, Soc] = Field((0.2, 0.5), description="uniform range of the SoC on arrival")
    trip_wh: tuple[Wh, Wh] = Field((10_000.0, 25_000.0), description="uniform range of a day's trip energy")
    need_soc: float = Field(0.8, gt=0, le=1, description="SoC every vehicle needs at departure (reported)")

    @model_validator(mode="after")
    def _ranges(self) -> Fleet:
        for name in ("soc_on_arrival", "trip_wh"):
            lo, hi = getattr(self, name)
            if lo > hi:
                raise ValueError(f"{name}: [low, high] with low <= high")
        if self.depart_s <= self.arrive_s:
            raise ValueError("depart_s must be after arrive_s (the next morning: arrive_s + the night)")
        return self


class DepotModel(Params):
    """``plant.params.depot``: the chargers as units of one Modbus gateway per map."""

    chargers: int = Field(ge=1, le=200, description="EVSEs 1..chargers; EVSE n is unit n of each gateway")
    charger_map: str = Field("sunspec_der_inverter", description="each charger's power stage and EV")
    charger_port: int = Field(ge=1, le=65535)
    session_map: str = Field(description="each charger's EV session: plugged in, departure time left, target SoC")
    session_port: int = Field(ge=1, le=65535)
    sunspec_base: Literal[0, 40000, 50000] = 40000
    building_w: list[tuple[TimeOfDay, Watts]] = Field(
        default_factory=lambda: [(0.0, 20_000.0)],
        min_length=1,
        description="building load profile: [s of the day after time zero, W import-positive], held between points",
    )
    fleet: Fleet = Field(default_factory=Fleet)
    import_limit_w: float | None = Field(
        None, ge=0, le=1e8, description="the service's import rating, to report excursions above it (W)"
    )

    @model_validator(mode="after")
    def _profile(self) -> DepotModel:
        ts = [t for t, _ in self.building_w]
        if ts != sorted(set(ts)):
            raise ValueError("building_w: times strictly increasing")
        if self.charger_port == self.session_port:
            raise ValueError("charger_port and session_port differ: both serve unit n for EVSE n")
        return self

    def building_at(self, t: float) -> float:
        tod = t % DAY_S
        w = self.building_w[-1][1]  # before the first point of the day: the last of the day before
        for at, v in self.building_w:
            if at <= tod:
                w = v
        return w


@dataclass(order=True)
class Visit:
    arrive: float
    depart: float
    evse: int = field(compare=False)
    soc: float = field(compare=False)
    trip_wh: float = field(compare=False)


def visits(m: DepotModel) -> dict[int, list[Visit]]:
    """Every vehicle's stays, per EVSE, in time order; seeded, so a run is reproducible."""
    f = m.fleet
    rng = random.Random(f.seed)
    out: dict[int, list[Visit]] = {}
    for n in range(1, m.chargers + 1):
        stays: list[Visit] = []
        for d in range(f.days):
            a = max(0.0, d * DAY_S + f.arrive_s + rng.gauss(0.0, f.arrive_sd_s))
            b = max(a + 600.0, d * DAY_S + f.depart_s + rng.gauss(0.0, f.depart_sd_s))
            if stays and a < stays[-1].depart + 600.0:
                a = stays[-1].depart + 600.0
                b = max(b, a + 600.0)
            stays.append(Visit(a, b, n, rng.uniform(*f.soc_on_arrival), rng.uniform(*f.trip_wh)))
        out[n] = stays
    return out


@dataclass
class Departure:
    evse: int
    t: float
    soc: float
    need: float

    @property
    def met(self) -> bool:
        return self.soc >= self.need - 0.005  # half a percent: the resolution ISO 15118-2 reports SoC at


@dataclass
class DepotStats:
    """What the depot's proof reads: the meter's extremes and every departure's SoC."""

    import_limit_w: float | None = None
    peak_import_w: float = 0.0
    peak_export_w: float = 0.0
    t: float = 0.0
    departures: list[Departure] = field(default_factory=list)
    over_since: float | None = None  # start of the excursion above the import limit in progress
    longest_over_s: float = 0.0
    max_over_w: float = 0.0

    def sample(self, t: float, import_w: float) -> None:
        """The meter at one physics step: peaks, and how long and how far import stays above the limit."""
        self.t = t
        self.peak_import_w = max(self.peak_import_w, import_w)
        self.peak_export_w = max(self.peak_export_w, -import_w)
        lim = self.import_limit_w
        if lim is None:
            return
        if import_w > lim + 1e-6:
            if self.over_since is None:
                self.over_since = t
            self.longest_over_s = max(self.longest_over_s, t - self.over_since)
            self.max_over_w = max(self.max_over_w, import_w - lim)
        else:
            self.over_since = None

    def as_json(self) -> dict[str, object]:
        return {
            "t": self.t,
            "peak_import_w": self.peak_import_w,
            "peak_export_w": self.peak_export_w,
            "import_limit_w": self.import_limit_w,
            "longest_over_s": self.longest_over_s,
            "max_over_w": self.max_over_w,
            "departures": len(self.departures),
            "missed": [d.__dict__ for d in self.departures if not d.met],
            "min_departure_soc": min((d.soc for d in self.departures), default=None),
        }
