"""OCPP 2.1 LocalLoadBalancing on a one-charger site: the depot allocator with one EVSE keeps the site
meter within the period's limits (published by the station as ``ocpp.connection_import_w`` /
``ocpp.connection_export_w``), the EV as the flexible load; the local plan asks, the allocator cuts.

Cycle tables on the shared rig (authority, modes, dispatch, allocator), the plant closed by hand: the
charger follows the committed set point and the meter reads building + charger, one cycle later."""

from __future__ import annotations

from typing import Any

import pytest

from programs.allocator import Allocator, AllocatorParams
from programs.authority import Authority, AuthorityParams
from programs.dispatch import Dispatch, DispatchParams
from programs.modes import ModeParams, Modes
from runtime.tags import Direction, TagSpec, TagType
from runtime.tasks.ocpp.smart import NO_LIMIT_W
from tests.programs.conftest import SITE, Rig
from tests.programs.test_authority import BASE, GRID, OCPP

S = Direction.SHARED
EXTRA = (
    GRID,
    *OCPP,
    TagSpec("ocpp.connection_import_w", TagType.FLOAT, "W", S, None, 10.0),
    TagSpec("ocpp.connection_export_w", TagType.FLOAT, "W", S, None, 10.0),
    TagSpec("meter.power", TagType.FLOAT, "W"),
    TagSpec("inverter.power", TagType.FLOAT, "W"),
    TagSpec("ev.capacity_wh", TagType.FLOAT, "Wh"),
)


class Site:
    def __init__(self) -> None:
        progs = [
            Authority("authority", AuthorityParams(), SITE),
            Modes("modes", ModeParams(), SITE),
            Dispatch("dispatch", DispatchParams(ramp_w_per_s=1e7, plan_soc_tag=None), SITE),
            Allocator(
                "allocator",
                AllocatorParams(
                    import_limit_w=60_000.0,  # the site's own service: the CSMS's period lowers it
                    export_limit_w=60_000.0,
                    import_limit_tags=["ocpp.connection_import_w"],
                    export_limit_tags=["ocpp.connection_export_w"],
                ),
                SITE,
            ),
        ]
        self.rig = Rig(progs, extra=EXTRA)
        self.charger = 0.0

    def run(self, cycles: int, building: float, **values: Any) -> float:
        """``cycles`` scans with the charger following the last committed set point; the last set point."""
        for _ in range(cycles):
            row = {**BASE, "ocpp.operation_mode": "LocalLoadBalancing", "ev.capacity_wh": 60_000.0, **values}
            self.rig.step({**row, "inverter.power": self.charger, "meter.power": building + self.charger})
            self.charger = float(self.rig.value("inverter.setpoint"))
        return self.charger


# (plan W, building W, import limit W, export limit W, settled set point W, cut)
CASES = [
    (11_000.0, 5_000.0, 8_000.0, NO_LIMIT_W, 3_000.0, "import"),  # charging cut to the room left
    (11_000.0, 9_000.0, 8_000.0, NO_LIMIT_W, 0.0, "import"),  # the building alone is over: zero, not reversed
    (-11_000.0, 1_000.0, NO_LIMIT_W, 4_000.0, -5_000.0, "export"),  # discharging cut to the export limit
    (-11_000.0, -4_000.0, NO_LIMIT_W, 4_000.0, 0.0, "export"),  # a generating building used it all: zero
    (11_000.0, 1_000.0, 0.0, NO_LIMIT_W, 0.0, "import"),  # a zero import limit
    (6_000.0, 1_000.0, 8_000.0, 0.0, 6_000.0, ""),  # inside the limits: untouched
    (-6_000.0, 1_000.0, 0.0, 8_000.0, -6_000.0, ""),
]


@pytest.mark.parametrize(("plan", "building", "imp", "exp", "expected", "cut"), CASES)
def test_the_periods_limits_bound_the_site_meter_both_ways(
    plan: float, building: float, imp: float, exp: float, expected: float, cut: str
) -> None:
    s = Site()
    lim = {"plan.power": plan, "ocpp.connection_import_w": imp, "ocpp.connection_export_w": exp}
    got = s.run(20, building, **lim)
    assert got == pytest.approx(expected, abs=1e-6)
    meter = building + got
    assert -exp - 1e-6 <= meter <= max(imp, building) + 1e-6  # within the period's limits where the EV can
    assert (cut in s.rig.value("alloc.cut")) if cut else s.rig.value("alloc.cut") == ""
    assert got * plan >= 0  # only ever reduced toward zero


def test_the_limit_leaves_with_the_mode() -> None:
    s = Site()
    assert s.run(20, 5_000.0, **{"plan.power": 11_000.0, "ocpp.connection_import_w": 8_000.0}) == pytest.approx(3000.0)
    lim = {"plan.power": 11_000.0, "ocpp.connection_import_w": NO_LIMIT_W, "ocpp.connection_export_w": NO_LIMIT_W}
    assert s.run(20, 5_000.0, **lim) == pytest.approx(11_000.0)  # the site's own 60 kW: the plan's full request
