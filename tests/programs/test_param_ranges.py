"""Every numeric setting of the programs', planner's and price tasks' parameter models is finite and in a
stated range (issue: NaN or infinity where it switches something off): the model states both bounds,
and NaN, +inf and -inf are refused."""

from __future__ import annotations

import math
import types
import typing
from typing import Any

import annotated_types as at
import pytest
from pydantic import BaseModel, ValidationError

from programs.dispatch import DispatchParams
from programs.modes import ModeParams
from programs.planner.model import Battery, Charger, PlanRequest, PlugWindow
from programs.planner.routine import Routine
from programs.planner.scenario import Availability, Market, ScenarioBattery, ScenarioCharger
from runtime.tasks.planner_task import PlannerTaskParams
from runtime.tasks.prices import CsvParams, HttpParams, MqttParams

MODELS: tuple[type[BaseModel], ...] = (
    ModeParams,
    DispatchParams,
    PlannerTaskParams,
    CsvParams,
    HttpParams,
    MqttParams,
    Battery,
    Charger,
    PlugWindow,
    PlanRequest,
    Routine,
    ScenarioBattery,
    ScenarioCharger,
    Availability,
    Market,
)
# A valid instance per model, to change one field at a time.
VALID: dict[type[BaseModel], dict[str, Any]] = {
    CsvParams: {"path": "p.csv", "timezone": "UTC"},
    HttpParams: {"url": "http://127.0.0.1/p", "timezone": "UTC"},
    MqttParams: {"topic": "prices", "timezone": "UTC"},
    Battery: {"capacity_kwh": 60, "soc_min": 0.2, "soc_max": 0.9},
    Charger: {"max_charge_kw": 11, "max_discharge_kw": 11, "efficiency_charge": 0.9, "efficiency_discharge": 0.9},
    PlugWindow: {"start": "2026-01-01T00:00", "end": "2026-01-01T07:00"},
    ScenarioBattery: {"capacity_kwh": 60, "soc_min": 0.2, "soc_max": 0.9, "soc_initial": 0.5},
    ScenarioCharger: {
        "max_charge_kw": 11,
        "max_discharge_kw": 11,
        "efficiency_charge": 0.9,
        "efficiency_discharge": 0.9,
    },
    Availability: {
        "depart": "07:00",
        "arrive": "18:00",
        "departure_soc_min": 0.8,
        "trip_energy_kwh": 12,
        "terminal_soc_min": 0.5,
    },
    Market: {"publication_time": "12:00", "forecast_visible_days_ahead": 1, "price_unit": "EUR/MWh"},
}
VALID[PlanRequest] = {
    "start": "2026-01-01T00:00",
    "prices": [1.0],
    "n_published": 1,
    "soc": 0.5,
    "battery": VALID[Battery],
    "charger": VALID[Charger],
    "windows": [],
}
# Not settings: a terminal value the planner passes through is finite but unbounded; n_published is
# bounded by the number of prices (a validator).
UNBOUNDED = {(PlanRequest, "terminal_value_per_mwh"), (PlanRequest, "n_published")}


def numeric_fields(model: type[BaseModel]) -> list[tuple[str, Any]]:
    out = []
    for name, f in model.model_fields.items():
        args = typing.get_args(f.annotation) if isinstance(f.annotation, types.UnionType) else (f.annotation,)
        if any(a in (float, int) for a in args) and (model, name) not in UNBOUNDED:
            out.append((name, f))
    return out


CASES = [(m, name) for m in MODELS for name, _ in numeric_fields(m)]


@pytest.mark.parametrize(("model", "name"), CASES, ids=[f"{m.__name__}.{n}" for m, n in CASES])
def test_numeric_setting_is_finite_and_bounded(model: type[BaseModel], name: str) -> None:
    f = model.model_fields[name]
    lower = [m for m in f.metadata if isinstance(m, at.Ge | at.Gt)]
    upper = [m for m in f.metadata if isinstance(m, at.Le | at.Lt)]
    assert lower and upper, f"{model.__name__}.{name} states no range"
    base = VALID.get(model, {})
    model.model_validate(base)  # the base is valid
    for bad in (math.nan, math.inf, -math.inf):
        with pytest.raises(ValidationError):
            model.model_validate({**base, name: bad})
