"""Power in meter values: the runtime's sign (positive into the EV) becomes OCPP's two non-negative
measurands, and a stopped charger reads 0.0 on the wire, never -0.0 (seen in the demo's CSMS log)."""

from __future__ import annotations

import json

import pytest

from runtime.tasks.ocpp.transactions import Sample, meter_value


@pytest.mark.parametrize(
    ("power_w", "imp", "exp"), [(7000.0, 7000.0, 0.0), (0.0, 0.0, 0.0), (-0.0, 0.0, 0.0), (-7000.0, 0.0, 7000.0)]
)
def test_power_splits_into_import_and_export_never_negative(power_w: float, imp: float, exp: float) -> None:
    mv = meter_value(Sample(True, power_w=power_w), "2027-01-04T17:30:00.000Z", "Sample.Periodic")
    values = {v["measurand"]: v["value"] for v in mv["sampledValue"]}
    assert values["Power.Active.Import"] == imp and values["Power.Active.Export"] == exp
    assert "-0.0" not in json.dumps(mv)
