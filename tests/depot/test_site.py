"""The depot site model: EVSEs from one template under their prefix, per-EVSE interlocks on their own
charger only, and the point-of-common-coupling protection ceasing every EVSE."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import pytest

from runtime.config import load_site
from runtime.site import build_site
from runtime.yamlload import ConfigError
from tests.depot.drive import Drive
from tests.depot.sites import depot_site

IDS = [1, 2, 3]


def test_each_evse_has_its_tags_under_its_prefix_and_site_tags_stay_plain(tmp_path: Path) -> None:
    built = build_site(depot_site(tmp_path))
    names = set(built.tags.specs)
    for i in IDS:
        for plain in ("grid.voltage", "inverter.setpoint", "ev.soc", "mode.state", "safety.trip", "plc.snr"):
            assert f"evse{i}.{plain}" in names
    assert {"meter.power", "meter.voltage", "connection.reason"} <= names
    assert not {"grid.voltage", "inverter.setpoint", "safety.trip", "mode.state"} & names
    assert [p.name for p in built.interlocks] == ["evse1.safety", "evse2.safety", "evse3.safety", "connection"]
    assert [p.name for p in built.programs][-1] == "allocator"  # after every EVSE's own programs
    safety2 = next(p for p in built.interlocks if p.name == "evse2.safety")
    needs = set(safety2.requires())
    assert {"evse2.inverter.power", "meter.voltage", "meter.frequency"} <= needs  # PCC: the site meter
    assert not any(n.startswith(("evse1.", "evse3.")) for n in needs)


def test_template_params_take_the_evse_id_and_per_evse_overrides(tmp_path: Path) -> None:
    path = depot_site(tmp_path)
    text = path.read_text().replace(
        "each: [{id: 1}, {id: 2}, {id: 3}]",
        "each: [{id: 1}, {id: 2, params: {charger: {timeout_s: 0.9}}}, {id: 7}]",
    )
    path.write_text(text)
    built = build_site(path)
    chargers: dict[str, Any] = {d.name: d.params for d in built.drivers if d.name.endswith(".charger")}
    assert chargers["evse7.charger"].units[0].unit == 7
    assert chargers["evse7.charger"].units[0].prefix == "evse7."
    assert chargers["evse2.charger"].timeout_s == 0.9 and chargers["evse1.charger"].timeout_s == 0.5
    assert "evse7.inverter.setpoint" in built.tags and "evse3.inverter.setpoint" not in built.tags


@pytest.mark.parametrize(
    ("old", "new", "key", "message"),
    [
        ("each: [{id: 1}, {id: 2}, {id: 3}]", "each: [{id: 1}, {id: 1}]", "evses", "given twice"),
        ("each: [{id: 1}, {id: 2}, {id: 3}]", "each: [{id: 1, params: {chrger: {}}}]", "evses", "chrger"),
        ("each: [{id: 1}, {id: 2}, {id: 3}]", "each: [{id: 0}]", "evses.each[0].id", "greater than or equal"),
        ("type: modes", "type: mdoes", "evses.template.programs[0].type", "unknown programs type 'mdoes'"),
        ("fallback_soc: 0.9", "fallback_soc: 1.9", "evses.template.programs[0].params.fallback_soc", "less than"),
    ],
)
def test_evse_errors_name_file_line_and_key_once(tmp_path: Path, old: str, new: str, key: str, message: str) -> None:
    path = depot_site(tmp_path)
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new))
    with pytest.raises(ConfigError) as exc:
        build_site(path)
    issues = exc.value.issues
    hits = [i for i in issues if i.key == key and message in i.message]
    assert len(hits) == 1, issues  # a template error is reported once, not once per EVSE
    assert hits[0].line is not None and hits[0].file == str(path)


def test_a_site_without_evses_is_unchanged(tmp_path: Path) -> None:
    from runtime.site import bundled_site

    built = build_site(bundled_site())
    assert load_site(bundled_site()).config.evses is None
    assert "inverter.setpoint" in built.tags and not any(n.startswith("evse") for n in built.tags.specs)


def _charging(tmp_path: Path, **kw: Any) -> Drive:
    built = build_site(depot_site(tmp_path, **kw))
    d = Drive(built, IDS)
    d.run(4.0)  # enter service (1 s delay, 2 s ramp here) and the fallback charge: every EVSE charging
    return d


def test_per_evse_interlock_acts_on_its_own_charger_only(tmp_path: Path) -> None:
    d = _charging(tmp_path, import_w=60_000, period_ms=100)
    assert d.setpoints() == {1: 11_000.0, 2: 11_000.0, 3: 11_000.0}
    d.bad.add("evse2.inverter.power")  # EVSE 2's charger stops answering
    d.run(1.0)
    assert d.value("evse2.safety.trip") == "comms_lost"
    assert d.setpoints()[2] == 0.0 and d.value("evse2.inverter.enable") is False
    assert d.value("evse1.safety.trip") == "" and d.value("evse3.safety.trip") == ""
    assert d.setpoints()[1] == 11_000.0 and d.setpoints()[3] == 11_000.0
    assert d.value("evse2.alloc.cut").startswith("out of service")


def test_failed_charger_room_goes_to_the_rest(tmp_path: Path) -> None:
    d = _charging(tmp_path, import_w=20_000, period_ms=100)
    assert sum(d.setpoints().values()) == pytest.approx(20_000)
    d.evse[3]["inverter.write_mismatch"] = True  # EVSE 3's charger does not take its set point: it trips
    d.run(2.0)
    assert d.value("evse3.safety.trip") == "write_mismatch"
    sp = d.setpoints()
    assert sp[3] == 0.0
    assert sp[1] == pytest.approx(10_000) and sp[2] == pytest.approx(10_000)
    assert d.building + sum(d.power.values()) <= 20_000 + 1e-6


def test_pcc_overvoltage_ceases_every_evse_within_the_clearing_time(tmp_path: Path) -> None:
    d = _charging(tmp_path, import_w=60_000, period_ms=20)
    assert all(v > 0 for v in d.setpoints().values())
    d.site["meter.voltage"] = 240.0 * 1.25  # beyond OV2 (1.20 pu, cleared in 0.16 s: IEEE 1547-2018 Table 11)
    start = d.now_us
    zero_at = None
    while d.now_us - start <= 160_000:
        res = d.step()
        if zero_at is None and all(v == 0.0 for v in d.setpoints(res).values()):
            zero_at = res.now_us
    assert zero_at is not None and zero_at - start <= 160_000
    assert all(d.value(f"evse{i}.safety.trip") == "ov2" for i in IDS)
    assert all(d.value(f"evse{i}.inverter.enable") is False for i in IDS)


def test_after_a_pcc_trip_enter_service_ramps_the_site_total(tmp_path: Path) -> None:
    d = _charging(tmp_path, import_w=60_000, period_ms=100)
    d.site["meter.frequency"] = 62.5  # beyond OF2 (62.0 Hz, 0.16 s)
    d.run(1.0)
    assert sum(d.setpoints().values()) == 0.0
    d.site["meter.frequency"] = 60.0
    totals = [sum(d.setpoints(r).values()) for r in d.run(10.0)]
    assert totals[-1] == pytest.approx(33_000)
    rising = [t for t in totals if 0 < t < 33_000]
    assert rising, "the site total comes back along a ramp, not in one step"
    assert all(b >= a - 1e-6 for a, b in itertools.pairwise(totals))
