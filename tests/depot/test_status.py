"""The runner's status line on a depot: the site's totals and one character per EVSE, on one line."""

from __future__ import annotations

import re
from pathlib import Path

from runtime.evses import depot_status
from runtime.site import build_site
from tests.depot.drive import Drive
from tests.depot.sites import depot_site

IDS = [1, 2, 3]


def _line(d: Drive) -> str:
    assert d.last is not None
    return depot_status(d.last.image, IDS)


def test_the_status_line_shows_each_evse_and_the_site_totals(tmp_path: Path) -> None:
    d = Drive(build_site(depot_site(tmp_path, import_w=60_000, period_ms=100)), IDS)
    d.building = 5_000.0
    d.run(4.0)  # every EVSE charging its 11 kW, uncut
    line = _line(d)
    assert "\n" not in line
    assert line.startswith("evses=CCC trip=- ")
    assert "grid=38000W" in line  # the meter: the building and three chargers
    assert "V=240.0 f=60.00" in line
    assert "sp=+33.0kW P=+33.0kW" in line

    d.bad.add("evse2.inverter.power")  # EVSE 2's charger stops answering: blind this cycle, tripped next
    d.step()
    assert _line(d).startswith("evses=C!C trip=comms_lost(2) ")
    assert re.search(r"P=\+22\.0kW\?", _line(d))  # a sum that misses a charger says so


def test_cut_evses_show_in_lower_case_and_a_site_trip_names_all(tmp_path: Path) -> None:
    d = Drive(build_site(depot_site(tmp_path, import_w=20_000, period_ms=100)), IDS)
    d.run(4.0)
    assert _line(d).startswith("evses=ccc trip=- ")  # 20 kW shared by three: every one cut
    d.site["meter.frequency"] = 62.5  # beyond OF2 at the PCC: every EVSE trips
    d.run(1.0)
    assert _line(d).startswith("evses=!!! trip=of2(all) ")
    assert "sp=+0.0kW" in _line(d)
