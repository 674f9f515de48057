"""The example depot's back office live (test-slow): `v2g-plc run runtime/sites/depot.yaml --speed 100` on free
ports, its plant serving the demo CSMS; the CSMS's own log shows one station with the depot's 20 EVSEs, each
with its status and its own transactions."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.depot.test_live import depot_copy
from tests.runtime.helpers import cli

SPEED = 100
RUN_S = 40


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_the_example_depot_is_one_station_of_20_evses_at_its_back_office(tmp_path: Path) -> None:
    site = depot_copy(tmp_path, plan=True)
    text = site.read_text()
    assert "type: ocpp" in text and "15609" not in text  # depot_copy gave the CSMS a free port
    res = cli("run", str(site), "--speed", str(SPEED), "--for", str(RUN_S), timeout=RUN_S + 300)
    assert res.returncode == 0, res.stderr[-3000:]
    log = res.stderr
    assert re.search(r"CSMS: BootNotification from DEPOT-0001 .*Accepted", log), log[-3000:]
    statuses = {int(n) for n in re.findall(r"CSMS: DEPOT-0001 EVSE (\d+) connector 1 is", log)}
    assert statuses == set(range(1, 21))
    # every transaction numbers from 0 without a gap (a resend after a reconnect is an identical copy)
    seqs: dict[str, list[int]] = {}
    for tx, seq in re.findall(r"CSMS: DEPOT-0001 transaction (\w+) \w+ seqNo (\d+)", log):
        seqs.setdefault(tx, []).append(int(seq))
    assert len(seqs) >= 2, log[-3000:]  # vans already plugged in at the start, or arriving
    for got in seqs.values():
        assert sorted(set(got)) == list(range(max(got) + 1))
