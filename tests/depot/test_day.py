"""A simulated day of the example depot (runtime/sites/depot.yaml: 20 chargers, 100 kW service, a
building load, a fleet arriving in the evening and leaving in the morning), through Engine.step and the
virtual plant's physics: every departure met, and the plant's meter never above the connection limit
except for the stated bound after a building-load step."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from tests.depot.coupled import Coupled

DEPOT = Path(__file__).resolve().parents[2] / "runtime" / "sites" / "depot.yaml"
SPEED = 300  # each 100 ms cycle covers 30 s of the plant: a day in 2,880 cycles
IMPORT_LIMIT_W = 100_000.0
MARGIN_W = 3_000.0  # the allocator's margin in depot.yaml


def _largest_building_step(c: Coupled) -> float:
    dm = c.plant.params.depot
    assert dm is not None
    ws = [w for _, w in dm.building_w]
    return max(b - a for a, b in zip([ws[-1], *ws[:-1]], ws, strict=True))


@pytest.mark.slow
@pytest.mark.timeout(1800)  # 35 s of CPU; a loaded 2-core machine has taken 6x that in wall time
def test_a_day_at_the_depot_meets_every_departure_within_the_connection(tmp_path: Path) -> None:
    # the scan and the plant only: no task runs here, so no back office publishes the EVSEs' limits, which
    # their safety would rightly read as "no limit ever seen: 0 W"; the site without them, as a depot whose
    # file names no back office
    text = DEPOT.read_text()
    site = tmp_path / "depot.yaml"
    site.write_text(
        re.sub(r"\n +# the back office's charging profiles.*?\n +external: \[.*?\]\n", "\n", text, flags=re.S)
    )
    assert "ocpp.limit_charge" not in site.read_text()
    for name in ("depot_ev_map.yaml", "sim-csms.secret"):
        shutil.copy(DEPOT.parent / name, tmp_path / name)
    shutil.copytree(DEPOT.parent / "prices", tmp_path / "prices")
    c = Coupled(site, SPEED, plant_step_s=2.0)  # exact first-order steps; 2 s keeps the day's CPU down
    dm = c.plant.params.depot
    assert dm is not None and dm.chargers == 20
    c.plant.stats.import_limit_w = IMPORT_LIMIT_W
    c.run(86_400.0)
    st = c.plant.stats
    print(st.as_json())  # the day's figures, for BENCHMARKS.md (pytest -s)
    assert len(st.departures) == 20  # every van left once, the first morning
    missed = [d for d in st.departures if not d.met]
    assert not missed, missed
    # The allocator cut: the vans asked for far more than the service has (20 x 11 kW).
    assert st.peak_import_w > IMPORT_LIMIT_W - MARGIN_W - 5_000
    # A building step is seen at the next cycle: the excursion lasts at most one cycle (plus the chargers'
    # response) and is at most the step less the margin (docs/depot.md "Overshoot").
    period_s = c.period_us / 1e6
    step = _largest_building_step(c)
    assert st.max_over_w <= max(0.0, step - MARGIN_W) + 1.0
    assert st.longest_over_s <= period_s + 2.0
