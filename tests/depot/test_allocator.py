"""Cycle tables of the depot allocator and the connection interlock, through Engine.step.

Each row: the connection's limits, the building load, what each EVSE asks and what the fleet schedule says;
then what each EVSE may do, who was cut and why, and the site's import as the plant's meter reads it.
"""

from __future__ import annotations

import pytest

from runtime.tags import Quality, TagUpdate
from tests.depot.rig import DepotRig

TOL = 1e-6
ETA_C = 0.95  # the allocator's charge_efficiency default: the example depot's vans (runtime/sites/depot.yaml)


def test_requests_that_fit_pass_untouched() -> None:
    rig = DepotRig(import_limit_w=30_000)
    rig.building = 10_000
    rig.req.request = {1: 5_000.0, 2: 6_000.0, 3: -2_000.0}
    res = rig.settle()
    assert rig.setpoints(res) == {1: 5_000.0, 2: 6_000.0, 3: -2_000.0}
    assert all(rig.image(f"evse{i}.alloc.cut") == "" for i in rig.ids)
    assert rig.image("connection.scale_charge") == 1.0


@pytest.mark.parametrize("building", [5_000.0, 10_000.0, 25_000.0])
def test_import_limit_shared_pro_rata_without_departures(building: float) -> None:
    rig = DepotRig(import_limit_w=30_000)
    rig.building = building
    rig.req.request = {1: 11_000.0, 2: 11_000.0, 3: 5_500.0}
    res = rig.settle()
    sp = rig.setpoints(res)
    room = 30_000 - building
    assert sum(sp.values()) == pytest.approx(room)
    assert sp[1] == pytest.approx(sp[2]) and sp[3] == pytest.approx(sp[1] / 2)  # in proportion to the request
    assert rig.site_import() <= 30_000 + TOL
    assert all("import limit 30000 W" in rig.image(f"evse{i}.alloc.cut") for i in rig.ids)


def test_departure_need_is_served_first() -> None:
    rig = DepotRig(import_limit_w=20_000)
    rig.req.request = {1: 11_000.0, 2: 11_000.0, 3: 11_000.0}
    rig.soc = {1: 0.5, 2: 0.5, 3: 0.5}
    rig.departs(2, in_s=3600, target_soc=0.65)  # 9 kWh into the battery in an hour: 9 kW / 0.95 from the grid
    res = rig.settle()
    sp = rig.setpoints(res)
    need = 9_000 / ETA_C
    assert sp[2] >= need - TOL
    assert sum(sp.values()) == pytest.approx(20_000, rel=1e-3)
    # what is left after the need is shared pro rata to the rest of each request (11 kW - need, 11, 11 kW)
    # (the need grows a little each cycle as the time left shrinks: 3 cycles of 0.1 s here)
    rest = 22_000 + 11_000 - need
    assert sp[2] == pytest.approx(need + (11_000 - need) * (20_000 - need) / rest, rel=1e-3)
    assert sp[1] == pytest.approx(11_000 * (20_000 - need) / rest, rel=1e-3)
    assert rig.image("evse2.alloc.granted_w") == pytest.approx(sp[2])


def test_most_urgent_departure_first_when_needs_exceed_the_connection() -> None:
    rig = DepotRig(import_limit_w=15_000)
    rig.req.request = {1: 11_000.0, 2: 11_000.0, 3: 11_000.0}
    rig.departs(1, in_s=3600, target_soc=0.6)  # 6 kW
    rig.departs(3, in_s=1800, target_soc=0.65)  # 9 kWh in 30 min: 18 kW, capped by the request
    res = rig.settle()
    sp = rig.setpoints(res)
    assert sp[3] == pytest.approx(11_000)  # most urgent: all it asks (its need is more)
    assert sp[1] == pytest.approx(4_000)  # next: the rest of the connection, below its need
    assert sp[2] == pytest.approx(0.0)  # no departure: nothing left
    assert rig.site_import() <= 15_000 + TOL


def test_export_limit_cuts_the_most_urgent_discharge_first() -> None:
    rig = DepotRig(export_limit_w=20_000)
    rig.building = 5_000  # the building absorbs 5 kW of the EVs' export
    rig.req.request = {1: -11_000.0, 2: -11_000.0, 3: -11_000.0}
    rig.departs(1, in_s=7200, target_soc=0.8)
    res = rig.settle()
    sp = rig.setpoints(res)
    assert sp == pytest.approx({1: -3_000.0, 2: -11_000.0, 3: -11_000.0})
    assert rig.site_import() >= -20_000 - TOL
    assert "export limit 20000 W" in rig.image("evse1.alloc.cut")
    assert rig.image("evse2.alloc.cut") == ""


def test_discharge_makes_room_for_charging() -> None:
    rig = DepotRig(import_limit_w=10_000)
    rig.req.request = {1: 11_000.0, 2: 11_000.0, 3: -6_000.0}
    res = rig.settle()
    sp = rig.setpoints(res)
    assert sp[3] == -6_000.0
    assert sp[1] + sp[2] == pytest.approx(16_000)
    assert rig.site_import() == pytest.approx(10_000)


@pytest.mark.parametrize("request_w", [11_000.0, -11_000.0, 0.0])
def test_zero_limits_hold_in_both_directions(request_w: float) -> None:
    rig = DepotRig(import_limit_w=0, export_limit_w=0)
    rig.req.request = dict.fromkeys(rig.ids, request_w)
    res = rig.settle()
    assert rig.setpoints(res) == dict.fromkeys(rig.ids, 0.0)
    assert rig.site_import() == 0.0


def test_zero_export_limit_lets_the_building_absorb_discharge() -> None:
    rig = DepotRig(import_limit_w=50_000, export_limit_w=0)
    rig.building = 7_000
    rig.req.request = dict.fromkeys(rig.ids, -11_000.0)
    res = rig.settle()
    assert sum(rig.setpoints(res).values()) == pytest.approx(-7_000)
    assert rig.site_import() == pytest.approx(0.0)


def test_never_turns_a_request_around_when_the_building_alone_overloads() -> None:
    rig = DepotRig(import_limit_w=30_000)
    rig.building = 35_000
    rig.req.request = {1: 11_000.0, 2: 0.0, 3: -4_000.0}
    res = rig.settle()
    assert rig.setpoints(res) == {1: 0.0, 2: 0.0, 3: -4_000.0}


def test_a_charger_failing_mid_cycle_is_taken_out_and_the_rest_share_its_room() -> None:
    rig = DepotRig(import_limit_w=20_000)
    rig.req.request = dict.fromkeys(rig.ids, 11_000.0)
    res = rig.settle()
    assert sum(rig.setpoints(res).values()) == pytest.approx(20_000)
    rig.comms[3] = False  # EVSE 3's charger stops answering between two cycles
    res = rig.step_once()
    sp = rig.setpoints(res)
    assert sp[3] == 0.0
    # This cycle EVSE 3's power is unknown: the meter still sees it, so it counts as building load and the
    # others do not get its room yet (import stays under the limit whatever EVSE 3 really does).
    assert sp[1] + sp[2] + 20_000 / 3 <= 20_000 + TOL
    assert rig.image("evse3.alloc.cut") == "out of service: no measurement (comms lost)"
    events = list(res.events)
    res = rig.step_once()  # its charger reverted to 0 W (the meter shows it): the rest share its room
    sp = rig.setpoints(res)
    assert sp == pytest.approx({1: 10_000.0, 2: 10_000.0, 3: 0.0})
    cuts = [e for e in events if e.kind == "limit" and e.data.get("evse") == 3]
    assert cuts and cuts[0].data["cut"] == "out"
    rig.comms[3] = True
    res = rig.settle()
    assert sum(rig.setpoints(res).values()) == pytest.approx(20_000)
    assert rig.image("evse3.alloc.cut") != "out of service: no measurement (comms lost)"


def test_a_tripped_evse_is_out_and_the_rest_go_on() -> None:
    rig = DepotRig(import_limit_w=20_000)
    rig.req.request = dict.fromkeys(rig.ids, 11_000.0)
    rig.req.trip[2] = "ov2"
    rig.settle()  # the trip code is the interlock's verdict of the previous cycle
    res = rig.step_once()
    sp = rig.setpoints(res)
    assert sp[2] == 0.0 and sp[1] == pytest.approx(10_000) and sp[3] == pytest.approx(10_000)
    assert rig.image("evse2.alloc.cut") == "out of service: tripped (ov2)"


def test_meter_not_good_means_no_charging_beyond_the_largest_building_load() -> None:
    rig = DepotRig(import_limit_w=30_000, building_max_w=24_000)
    rig.meter_ok = False
    rig.req.request = {1: 11_000.0, 2: 11_000.0, 3: -5_000.0}
    res = rig.settle()
    sp = rig.setpoints(res)
    assert sp[1] + sp[2] == pytest.approx(6_000 + 5_000)  # 6 kW of room, plus what EVSE 3 gives back
    assert sp[3] == -5_000.0
    rig2 = DepotRig(import_limit_w=30_000)  # no building_max_w: the whole connection is the building's
    rig2.meter_ok = False
    rig2.req.request = dict.fromkeys(rig2.ids, 11_000.0)
    assert rig2.setpoints(rig2.settle()) == dict.fromkeys(rig2.ids, 0.0)


OCPP_IMP, OCPP_EXP = "ocpp.connection_import_w", "ocpp.connection_export_w"
LOCAL_IMP, LOCAL_EXP = "local.connection_import_w", "local.connection_export_w"
LIMIT_TAGS = (OCPP_IMP, OCPP_EXP, LOCAL_IMP, LOCAL_EXP)
NAN, INF = float("nan"), float("inf")


def _limits_rig(*, bypass: bool = False) -> DepotRig:
    """30 kW import / 20 kW export in the site file; the back office's and the local API's limit tags."""
    rig = DepotRig(
        import_limit_w=30_000,
        export_limit_w=20_000,
        import_limit_tags=[OCPP_IMP, LOCAL_IMP],
        export_limit_tags=[OCPP_EXP, LOCAL_EXP],
        shared=LIMIT_TAGS,
        shared_stale_s=10.0,
    )
    rig.req.bypass = bypass
    return rig


# (direction's request per EVSE W, tag -> (value, quality), the limit in force W, its source in alloc.cut)
G, B = Quality.GOOD, Quality.BAD
LIMIT_ROWS = [
    (11_000.0, {OCPP_IMP: (12_000.0, G)}, 12_000.0, OCPP_IMP),  # the back office lower than the file
    (11_000.0, {OCPP_IMP: (12_000.0, G), LOCAL_IMP: (9_000.0, G)}, 9_000.0, LOCAL_IMP),  # the lowest of both
    (11_000.0, {OCPP_IMP: (90_000.0, G)}, 30_000.0, "site file"),  # higher than the file: never raised
    (11_000.0, {OCPP_IMP: (0.0, G)}, 0.0, OCPP_IMP),  # zero: no charging
    (11_000.0, {OCPP_IMP: (12_000.0, B)}, 12_000.0, OCPP_IMP),  # not good: its last value still binds import
    (11_000.0, {OCPP_IMP: (NAN, G), LOCAL_IMP: (14_000.0, G)}, 14_000.0, LOCAL_IMP),  # NaN is bad
    (11_000.0, {OCPP_IMP: (INF, G)}, 30_000.0, "site file"),
    (11_000.0, {OCPP_IMP: (-5_000.0, G)}, 30_000.0, "site file"),  # negative: not a magnitude
    (11_000.0, {OCPP_EXP: (1_000.0, G)}, 30_000.0, "site file"),  # an export limit leaves import alone
    (-11_000.0, {OCPP_EXP: (8_000.0, G)}, 8_000.0, OCPP_EXP),
    (-11_000.0, {OCPP_EXP: (8_000.0, G), LOCAL_EXP: (5_000.0, G)}, 5_000.0, LOCAL_EXP),
    (-11_000.0, {LOCAL_EXP: (70_000.0, G)}, 20_000.0, "site file"),
    (-11_000.0, {OCPP_EXP: (0.0, G)}, 0.0, OCPP_EXP),
    (-11_000.0, {OCPP_EXP: (3_000.0, B), LOCAL_EXP: (NAN, G)}, 0.0, OCPP_EXP),  # not good: no export at all
    (-11_000.0, {OCPP_EXP: (-1.0, G)}, 20_000.0, "site file"),
    (-11_000.0, {OCPP_IMP: (0.0, G)}, 20_000.0, "site file"),  # an import limit leaves export alone
]


@pytest.mark.parametrize(("request_w", "tags", "limit", "source"), LIMIT_ROWS)
@pytest.mark.parametrize("bypass", [False, True], ids=["allocator", "interlock-alone"])
def test_limits_from_outside_lower_the_connection_never_raise_it(
    request_w: float, tags: dict[str, tuple[float, Quality]], limit: float, source: str, bypass: bool
) -> None:
    """Both directions: the lowest of the site file's rating and every good limit tag holds the meter, with
    the allocator sharing it, and with the connection interlock alone (a program writing after the
    allocator): a limit from the back office binds even if the allocator does not keep it."""
    rig = _limits_rig(bypass=bypass)
    rig.req.request = dict.fromkeys(rig.ids, request_w)
    rig.extra += [TagUpdate(t, v, q) for t, (v, q) in tags.items()]
    rig.settle()
    total = sum(rig.power.values())
    assert abs(total) == pytest.approx(limit, abs=1e-6)  # 3 x 11 kW asked: the limit binds, whichever it is
    assert total * request_w >= 0  # reduced toward 0, never turned around
    if not bypass:
        cut = [i for i in rig.ids if abs(rig.power[i]) < abs(request_w)]  # export: the least urgent keeps its own
        assert cut and all(source in rig.image(f"evse{i}.alloc.cut") for i in cut)
        assert rig.image("connection.reason") == ""  # the allocator kept it: nothing left for the interlock
    else:
        assert f"limit {limit:.0f} W" in rig.image("connection.reason")


@pytest.mark.parametrize(("tag", "request_w", "after"), [(OCPP_IMP, 11_000.0, 12_000.0), (OCPP_EXP, -11_000.0, 0.0)])
def test_a_limit_tag_gone_stale_keeps_binding_as_the_external_limit_rule_says(
    tag: str, request_w: float, after: float
) -> None:
    """The back office's task dies: its last limit ages past its staleness bound. Import stays at the last
    value, export goes to 0 W (nothing discharges on a limit nobody stands behind): never the rating back,
    for the allocator and for the interlock alone."""
    for bypass in (False, True):
        rig = _limits_rig(bypass=bypass)
        rig.req.request = dict.fromkeys(rig.ids, request_w)
        rig.extra.append(TagUpdate(tag, 12_000.0))
        rig.settle()
        assert abs(sum(rig.power.values())) == pytest.approx(12_000)
        rig.settle(95)  # 9.8 s since the write: still good
        assert abs(sum(rig.power.values())) == pytest.approx(12_000)
        rig.settle(5)  # past 10 s: stale
        assert abs(sum(rig.power.values())) == pytest.approx(after)
        if not bypass:
            assert "last value: stale" in rig.image("evse1.alloc.cut")


def test_a_limit_tag_no_task_publishes_leaves_the_rating() -> None:
    rig = _limits_rig(bypass=False)
    rig.req.request = dict.fromkeys(rig.ids, 11_000.0)
    rig.settle(3)
    assert sum(rig.power.values()) == pytest.approx(30_000)


@pytest.mark.parametrize(
    ("requests", "building", "expect"),
    [
        ({1: 11_000.0, 2: 11_000.0, 3: 11_000.0}, 0.0, {1: 10_000.0, 2: 10_000.0, 3: 10_000.0}),
        ({1: 20_000.0, 2: 10_000.0, 3: 0.0}, 6_000.0, {1: 16_000.0, 2: 8_000.0, 3: 0.0}),
        ({1: -11_000.0, 2: -11_000.0, 3: 2_000.0}, 0.0, {1: -11_000.0, 2: -11_000.0, 3: 2_000.0}),
        ({1: -15_000.0, 2: -15_000.0, 3: 0.0}, 0.0, {1: -10_000.0, 2: -10_000.0, 3: 0.0}),
    ],
)
def test_connection_interlock_scales_every_evse_when_a_program_overshoots(
    requests: dict[int, float], building: float, expect: dict[int, float]
) -> None:
    """The allocator bypassed (a program writes after it): the interlock alone holds the connection."""
    rig = DepotRig(import_limit_w=30_000, export_limit_w=20_000)
    rig.building = building
    rig.req.request = requests
    rig.req.bypass = True
    res = rig.settle()
    assert rig.setpoints(res) == pytest.approx(expect)
    assert -20_000 - TOL <= rig.site_import() <= 30_000 + TOL
    scaled = any(expect[i] != requests[i] for i in rig.ids)
    assert (rig.image("connection.reason") != "") is scaled


def test_a_building_step_is_absorbed_at_the_next_cycle_within_the_stated_bound() -> None:
    """docs/depot.md "Overshoot": the meter shows a building step one read later; the cycle that sees it
    brings the import back under the limit, and until then the excess is the step less the margin."""
    rig = DepotRig(import_limit_w=30_000, margin_w=1_000)
    rig.building = 5_000
    rig.req.request = dict.fromkeys(rig.ids, 11_000.0)
    rig.settle()
    assert rig.site_import() == pytest.approx(29_000)
    rig.building = 12_000  # a 7 kW step between two reads
    over = rig.site_import() - 30_000
    assert over == pytest.approx(7_000 - 1_000)  # what the plant's meter sees until the next cycle
    rig.step_once()
    assert rig.site_import() == pytest.approx(29_000)


def test_break_before_make_a_rise_waits_for_the_room_a_cut_frees() -> None:
    """EVSE 3 arrives while 1 and 2 share the connection; their cuts reach the chargers a cycle late (slow
    links). EVSE 3 rises only into the room the meter shows, so the import never passes the limit."""
    rig = DepotRig(import_limit_w=20_000)
    rig.slow = {1, 2}
    rig.req.request = {1: 10_000.0, 2: 10_000.0, 3: 0.0}
    rig.settle(4)
    assert rig.site_import() == pytest.approx(20_000)
    rig.req.request[3] = 11_000.0
    imports = []
    for _ in range(4):
        res = rig.step_once()
        imports.append(rig.site_import())
    assert max(imports) <= 20_000 + TOL
    assert rig.setpoints(res) == pytest.approx({1: 20_000 * 10 / 31, 2: 20_000 * 10 / 31, 3: 20_000 * 11 / 31})


def test_a_grant_of_exactly_the_need_meets_the_departure() -> None:
    """The departure's need is energy into the battery; the connection carries the charging losses too. A
    connection of exactly the need in grid W (6 kWh in an hour at 0.95: 6316 W) goes to the van that leaves,
    none to the other, and the van leaves at its target: the need counted without the efficiency would have
    granted 6 kW and left it 5 % of its charge short."""
    cap_wh = 60_000.0  # tests/depot/rig.py CAPACITY_WH
    need_w = 0.1 * cap_wh / ETA_C
    rig = DepotRig(period_ms=60_000, import_limit_w=need_w)
    rig.req.request = {1: 11_000.0, 2: 11_000.0, 3: 0.0}
    rig.soc = {1: 0.5, 2: 0.5, 3: 0.5}
    rig.departs(1, in_s=3600, target_soc=0.6)
    for _ in range(60):  # an hour of one-minute cycles; the plant: the battery takes eta x grid power
        rig.step_once()
        assert rig.power[1] == pytest.approx(need_w, rel=1e-9) and rig.power[2] == pytest.approx(0.0, abs=1e-6)
        assert rig.site_import() <= need_w * (1 + 1e-12)
        rig.soc[1] += rig.power[1] * ETA_C * 60.0 / 3600.0 / cap_wh
    assert rig.soc[1] == pytest.approx(0.6, abs=1e-9)


@pytest.mark.parametrize("request_w", [-11_000.0, 0.0, 11_000.0])
def test_an_evse_out_of_service_leaves_its_share_to_the_others(request_w: float) -> None:
    rig = DepotRig(import_limit_w=20_000)
    rig.req.request = {1: 11_000.0, 2: request_w, 3: 11_000.0}
    for _ in range(3):  # the runner feeds runtime.evses_out every cycle from the engine's availability
        rig.extra = [TagUpdate("runtime.evses_out", "[2]")]
        res = rig.step_once()
    sp = rig.setpoints(res)
    assert sp[2] == 0.0  # out: neither charges nor discharges, so it frees no room either
    assert sp[1] == pytest.approx(10_000) and sp[3] == pytest.approx(10_000)
    assert rig.image("evse2.alloc.cut") == "out of service: held by command (availability)"
    assert rig.site_import() <= 20_000 + TOL


def test_an_unreadable_evses_out_takes_no_evse_out() -> None:
    rig = DepotRig(import_limit_w=20_000)
    rig.req.request = dict.fromkeys(rig.ids, 5_000.0)
    for _ in range(3):
        rig.extra = [TagUpdate("runtime.evses_out", "not json")]
        res = rig.step_once()
    assert rig.setpoints(res) == {1: 5_000.0, 2: 5_000.0, 3: 5_000.0}
