"""Property tests over random input sequences: whatever the inputs, requests and forces,
- a trip: setpoint exactly 0 and permit withdrawn, from the cycle that sees it;
- a cessation: setpoint exactly 0;
- a limit is never exceeded in its direction, and the setpoint never exceeds the rating;
- a zero limit gives zero power in that direction, never a sign flip;
- forcing (Engine.force) never gets around any of these."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from runtime.tags import Direction, Quality, TagSpec, TagUpdate
from safety import tables as T
from tests.safety.rig import Rig

EXT = [
    TagSpec("backoffice.limit_charge", unit="W", direction=Direction.SHARED),
    TagSpec("backoffice.limit_discharge", unit="W", direction=Direction.SHARED),
]

power = st.one_of(st.just(0.0), st.just(-0.0), st.floats(-30000, 30000, allow_nan=False))
frame = st.fixed_dictionaries(
    {
        "v_pu": st.one_of(
            st.just(1.0),
            st.sampled_from([0.2, 0.45, 0.49, 0.51, 0.7, 0.87, 0.95, 1.09, 1.11, 1.19, 1.21, 1.3]),
            st.floats(0.0, 1.4),
        ),
        "f": st.one_of(st.just(60.0), st.floats(55.0, 65.0)),
        "loss": st.booleans(),
        "temp": st.one_of(st.just(40.0), st.floats(20.0, 95.0)),
        "soc": st.floats(0.0, 1.0),
        "soh": st.floats(0.5, 1.0),
        "snr": st.floats(0.0, 40.0),
        "lim_c": st.one_of(st.just(0.0), st.floats(0.0, 20000.0)),
        "lim_d": st.one_of(st.just(0.0), st.floats(0.0, 20000.0)),
        "rating_c": st.floats(0.0, 15000.0),
        "request": power,
        "enable": st.booleans(),
        "bad": st.sampled_from(
            [None, None, None, "grid.voltage", "inverter.power", "ev.soc", "plc.snr", "backoffice.limit_charge"]
        ),
        "quality": st.sampled_from([Quality.BAD, Quality.STALE]),
        "force_sp": st.one_of(st.none(), power),
        "force_en": st.one_of(st.none(), st.booleans()),
        "force_trip": st.booleans(),
        "force_v": st.one_of(st.none(), st.none(), st.just(240.0)),  # hide the real voltage behind a force
        "steps": st.sampled_from([1, 1, 1, 5, 50, 5000]),  # advance: a cycle, or jump ahead in time
        "overrun": st.booleans(),
        "reset": st.booleans(),
    }
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(["I", "II", "III"]), st.lists(frame, min_size=1, max_size=40))
def test_invariants(cat: str, frames: list[dict]) -> None:
    rig = Rig(
        category=cat,
        extra_inputs=EXT,
        follow=True,
        enter_service={"delay_s": 2.0, "ramp_s": 2.0},
        limits={
            "external": [
                {
                    "name": "backoffice",
                    "charge_tag": "backoffice.limit_charge",
                    "discharge_tag": "backoffice.limit_discharge",
                }
            ]
        },
    )
    from runtime.api import Command

    for fr in frames:
        rig.set(
            grid__voltage=fr["v_pu"] * 240.0,
            grid__frequency=fr["f"],
            grid__loss=fr["loss"],
            inverter__temperature=fr["temp"],
            ev__soc=fr["soc"],
            ev__soh=fr["soh"],
            plc__snr=fr["snr"],
            backoffice__limit_charge=fr["lim_c"],
            backoffice__limit_discharge=fr["lim_d"],
            inverter__max_charge_w=fr["rating_c"],
            runtime__overrun_fault=fr["overrun"],
        )
        rig.req.setpoint, rig.req.enable = fr["request"], fr["enable"]
        eng = rig.engine
        for name, val in (("inverter.setpoint", fr["force_sp"]), ("inverter.enable", fr["force_en"])):
            if val is None:
                eng.unforce(name)
            else:
                eng.force(name, val)
        if fr["force_v"] is None:
            eng.unforce("grid.voltage")
        else:
            eng.force("grid.voltage", fr["force_v"])
        if fr["force_trip"]:
            eng.force("safety.trip", "")
            eng.force("safety.limit_discharge", 99999.0)
        else:
            eng.unforce("safety.trip")
            eng.unforce("safety.limit_discharge")
        ups = [TagUpdate(n, v) for n, v in rig.values.items()]
        if fr["bad"]:
            ups.append(TagUpdate(fr["bad"], 1.0, fr["quality"]))
        res = eng.step(rig.now_us, ups, (Command("reset_trip"),) if fr["reset"] else ())
        rig.now_us += rig.period_us * fr["steps"]
        rig.values["inverter.power"] = res.outputs["inverter.setpoint"] if res.outputs["inverter.enable"] else 0.0
        o = res.outputs
        sp, lc, ld = o["inverter.setpoint"], o["safety.limit_charge"], o["safety.limit_discharge"]
        requested = fr["request"] if fr["force_sp"] is None else fr["force_sp"]
        if o["safety.trip"]:
            assert sp == 0.0 and o["inverter.enable"] is False
        if o["safety.cessation"]:
            assert sp == 0.0
        assert lc >= 0 and ld >= 0
        assert -ld <= sp <= lc
        assert sp <= min(11000.0, fr["rating_c"]) and sp >= -11000.0
        assert sp <= fr["lim_c"] or fr["bad"] == "backoffice.limit_charge"
        assert -sp <= fr["lim_d"]
        # never a sign flip, never -0.0
        assert sp == 0.0 or (sp > 0) == (requested > 0)
        assert str(sp) != "-0.0"
        # a forced protective input is no evidence: never output on a hidden voltage
        if fr["force_v"] is not None:
            assert sp == 0.0 and o["inverter.enable"] is False
        # from the cycle that sees it
        v = fr["v_pu"]
        if fr["bad"] in ("grid.voltage", "inverter.power") or fr["loss"] or fr["temp"] >= 85.0 or fr["overrun"]:
            assert sp == 0.0 and o["inverter.enable"] is False
            assert o["safety.trip"] or o["safety.reason"].startswith("not ready")  # never-read inputs: not ready
        elif fr["bad"] is None and fr["force_v"] is None and T.cessation(cat, v):  # type: ignore[arg-type]
            assert sp == 0.0
