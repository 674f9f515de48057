"""The shipped I/O maps: valid, documented, and the SunSpec map agrees with pysunspec2's official models."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from runtime.io.maps import IOMap, load_map, shipped_maps, tag_specs
from runtime.tags import Direction
from runtime.yamlload import ConfigError

MAPS = shipped_maps()
SUNSPEC_TYPES = {
    "int16": {"int16"},
    "uint16": {"uint16", "acc16"},
    "int32": {"int32"},
    "uint32": {"uint32", "acc32"},
    "uint64": {"uint64", "acc64"},
    "string": {"string"},
    "enum": {"enum16", "enum32"},
    "bitfield": {"bitfield16", "bitfield32"},
}


def sunspec_points(model_id: int) -> dict[str, tuple[int, dict]]:
    import sunspec2

    path = Path(sunspec2.__file__).parent / "models" / "json" / f"model_{model_id}.json"
    group = json.loads(path.read_text())["group"]
    out, off = {}, 0
    for p in group["points"]:
        out[p["name"]] = (off, p)
        off += p["size"]
    return out


def test_maps_are_shipped() -> None:
    names = {p.stem for p in MAPS}
    assert {
        "sunspec_der_inverter",
        "vendor_bidi_charger",
        "site_meter_tcp",
        "site_meter_rtu",
        "plc_modem",
        "temperature_sensors",
    } <= names


@pytest.mark.parametrize("path", MAPS, ids=lambda p: p.stem)
def test_map_loads_and_tags_are_valid(path: Path) -> None:
    m = load_map(path)
    specs = tag_specs(m)
    assert specs and len({s.name for s in specs}) == len(specs)
    for s in specs:
        if s.direction is Direction.INPUT:
            assert s.stale_after_s is not None and s.stale_after_s > 0


@pytest.mark.parametrize("name", ["sunspec_der_inverter", "vendor_bidi_charger"])
def test_inverter_maps_state_reversion_and_core_tags(name: str) -> None:
    m = load_map(Path("io_maps") / f"{name}.yaml")
    assert m.reversion is not None and m.reversion.restarted_by and m.reversion.note
    assert m.refresh_s < m.reversion.timeout_s / 2
    specs = {s.name: s for s in tag_specs(m)}
    assert specs["inverter.setpoint"].direction is Direction.OUTPUT and specs["inverter.setpoint"].default == 0.0
    assert specs["inverter.enable"].direction is Direction.OUTPUT and specs["inverter.enable"].default is False
    for t in (
        "grid.voltage",
        "grid.frequency",
        "inverter.power",
        "inverter.temperature",
        "ev.soc",
        "inverter.setpoint_readback",
        "inverter.write_mismatch",
    ):
        assert specs[t].direction is Direction.INPUT
    for p in m.points:
        if p.key in m.reversion.restarted_by:
            assert not p.nonvolatile  # the refresh write must be allowed to repeat


def test_vendor_setpoint_is_register_40001() -> None:
    """Manuals' 'register 40001' (1-based mbpoll reference) is protocol address 40000; int16 W, -7000 =
    7 kW discharge, no negation (the charger is charge-positive)."""
    from runtime.io.maps import decode, encode

    m = load_map(Path("io_maps/vendor_bidi_charger.yaml"))
    p = m.point("setpoint")
    assert (p.address, p.type, p.factor) == (40000, "int16", 1.0)
    assert encode(m, p, -7000, {}) == [(-7000) & 0xFFFF]
    assert decode(m, p, [(-7000) & 0xFFFF], {}) == -7000.0


def test_sunspec_map_matches_pysunspec2() -> None:
    m = load_map(Path("io_maps/sunspec_der_inverter.yaml"))
    assert m.discovery is not None and set(m.discovery.models) == {1, 701, 702, 704, 713}
    assert m.discovery.bases == [40000, 0, 50000]
    checked = 0
    for p in m.points:
        assert p.model is not None
        pts = sunspec_points(p.model)
        by_off = {off: (name, d) for name, (off, d) in pts.items()}
        assert p.model_offset in by_off, f"{p.key}: no SunSpec point at offset {p.model_offset} of model {p.model}"
        name, d = by_off[p.model_offset]
        if p.id is not None and not p.id.startswith("Cap_"):
            assert p.id == name, f"{p.key} is {name} in model {p.model}"
        if d["type"] == "sunssf":
            assert p.type == "int16"
        else:
            assert d["type"] in SUNSPEC_TYPES[p.type], f"{p.key}: {d['type']} vs {p.type}"
            assert p.count == d["size"], p.key
        if "sf" in d:  # the map's SF point is the one the model names
            sf_point = m.point(p.sf) if p.sf else None
            assert sf_point is not None and by_off[sf_point.model_offset][0] == d["sf"], p.key
        if d.get("access", "R") == "R":
            assert p.access == "r", f"{p.key} is read-only in model {p.model}"
        checked += 1
    assert checked == len(m.points)
    # 701 W and 704 WSet are generation-positive: negated to the project's charge-positive convention
    assert m.point("inverter.power").factor == -1 and m.point("WSet").factor == -1
    # 713 SoC/SoH are percent: fractions at the tag
    assert m.point("ev.soc").scale == 0.01 and m.point("ev.soh").scale == 0.01


def test_bad_map_names_file_line_key(tmp_path: Path) -> None:
    f = tmp_path / "bad.yaml"
    f.write_text("name: bad\npoints:\n  - {tag: a.b, address: 0, type: int17}\n")
    with pytest.raises(ConfigError, match=r"bad.yaml:3: points\[0\].type"):
        load_map(f)
    f.write_text("name: bad\npoints:\n  - {tag: a.b, address: 0}\n  - {tag: a.c, address: 1, sf: nope}\n")
    with pytest.raises(ConfigError, match=r"bad.yaml:\d+: .*scale factor 'nope'"):
        load_map(f)
    f.write_text("name: bad\npoints:\n  - {tag: inverter.setpoint, direction: output, address: 0}\n")
    with pytest.raises(ConfigError, match="access: rw"):
        load_map(f)
    with pytest.raises(ConfigError, match="cannot read"):
        load_map(tmp_path / "missing.yaml")


def test_one_map_two_devices() -> None:
    """A device entry renames/prefixes tags so one map can serve two chargers."""
    from runtime.io.maps import Naming

    m = load_map(Path("io_maps/vendor_bidi_charger.yaml"))
    a = {s.name for s in tag_specs(m)}
    b = {s.name for s in tag_specs(m, Naming(prefix="charger2."))}
    c = {s.name for s in tag_specs(m, Naming(rename={"inverter.setpoint": "charger2.setpoint"}))}
    assert not a & b and "charger2.inverter.setpoint" in b
    assert "charger2.setpoint" in c and "inverter.setpoint" not in c


def test_map_model_is_strict() -> None:
    with pytest.raises(ValueError):
        IOMap.model_validate({"name": "x", "points": [{"tag": "a.b", "address": 0, "bogus": 1}]})
