"""The example depot under ``v2g-plc run --speed``: the runtime, its virtual plant, 20 chargers polled over
Modbus TCP on loopback, while every van charges and the allocator cuts. The proof is the plant's own meter
(its report), not what the runtime believes.

Real time (speed 1): the reads of one cycle are spread over real milliseconds, and a loaded machine makes
that up to a second; at --speed N that is N seconds of the plant between the meter's read and a charger's,
and the building estimate (meter - chargers) is then wrong by whole chargers (at 20x on a loaded 2-core
machine: 50 kW over the limit for 15 simulated seconds). The simulated day runs in-process (test_day.py)."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from tests.depot.test_day import DEPOT, IMPORT_LIMIT_W
from tests.ports import free_ports
from tests.runtime.helpers import cli

SPEED = 1
RUN_S = 60  # real seconds: the vans arrive in the first 10 s, enter service takes 15 s, then 35 s of cutting


def depot_copy(tmp: Path) -> Path:
    """depot.yaml with free ports, its own state directory and the plant's report in ``tmp``."""
    text = DEPOT.read_text()
    for old, new in zip(("15602", "15603", "15604"), free_ports(3), strict=True):
        text = text.replace(old, str(new))
    text = text.replace("state_dir: var/depot", f"state_dir: {tmp / 'var'}")
    text = re.sub(r"(\n    step_s: 0.5\n)", rf"\1    report: {tmp / 'report.json'}\n", text, count=1)
    assert "report:" in text
    # the vans arrive in the first seconds, enter service is short: the allocator is cutting within 20 s
    text = text.replace("arrive_s: 3600, arrive_sd_s: 1800", "arrive_s: 60, arrive_sd_s: 30")
    text = text.replace(
        "enter_service: {gate_charging: true}", "enter_service: {gate_charging: true, delay_s: 20, ramp_s: 60}"
    )
    assert "arrive_s: 60," in text and "delay_s: 20" in text
    shutil.copy(DEPOT.parent / "depot_ev_map.yaml", tmp / "depot_ev_map.yaml")
    site = tmp / "depot.yaml"
    site.write_text(text)
    return site


@pytest.mark.slow
def test_the_depot_runs_live_within_its_connection(tmp_path: Path) -> None:
    site = depot_copy(tmp_path)
    res = cli("run", str(site), "--speed", str(SPEED), "--for", str(RUN_S), timeout=RUN_S + 120)
    assert res.returncode == 0, res.stderr[-3000:]
    report = json.loads((tmp_path / "report.json").read_text())
    print(report)  # the run's figures (pytest -s)
    assert report["t"] > 0.5 * RUN_S * SPEED  # the plant ran (its clock is real time x speed)
    # 20 vans asking 11 kW each beside a 45 kW building: the allocator cut them to what the service leaves.
    assert report["peak_import_w"] > 0.9 * IMPORT_LIMIT_W
    assert report["peak_import_w"] <= IMPORT_LIMIT_W + 1.0
    assert report["max_over_w"] == 0.0
