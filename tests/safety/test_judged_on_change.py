"""The interlock judges a read again only when the image holds another tag value for it (``_evidence``), works
out the grid's state again only when the grid's reads or the settings in force changed (``_measure``), and
skips the per-tag comms walk while every comms tag is good and was seen before (``_comms``). Here a twin that
forgets all of that before every cycle, and so judges everything afresh, must give the same outputs, events
and persisted state cycle by cycle, on a plant that sends a read only when it changed (as the backtest's
plant and a report-on-change driver do: an unchanged tag keeps the very tag value of the last cycle), through
forces, bad and stale reads, grid excursions, DER controls (new settings in force) and an online change."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

from runtime.api import Command, Cycle
from runtime.engine import RECONFIGURE, StepResult
from runtime.tags import US, Quality, TagUpdate
from safety.settings import SafetyParams, plain
from safety.supervisor import UNJUDGED, SafetySupervisor
from tests.safety.rig import Rig
from tests.safety.test_der_control import ES_OK, curve, setc


class Afresh(SafetySupervisor):
    """The reference: every memo forgotten before each cycle, so every read and the grid's state are judged anew."""

    def scan(self, cx: Cycle) -> None:
        self._last_tv = [UNJUDGED] * len(self._last_tv)
        self._forced = []
        self._m.r = None
        self._all_seen = False
        super().scan(cx)


class OnChange(Rig):
    """Sends a read only when the test changed it (or made it bad); the rest keep last cycle's tag value."""

    def __init__(self, **kw: Any):
        super().__init__(**kw)
        self.sent: dict[str, Any] = {}
        self.bad: set[str] = set()

    def step(self, commands: tuple[Command, ...] = (), advance_us: int | None = None) -> StepResult:
        ups = [TagUpdate(n, None, Quality.BAD) for n in sorted(self.bad)]
        ups += [TagUpdate(n, v) for n, v in self.values.items() if n not in self.sent or self.sent[n] is not v]
        self.sent.update(self.values)
        self.bad.clear()
        res = super(Rig, self).step(ups, commands)
        if self.follow:
            p = res.outputs["inverter.setpoint"] if res.outputs["inverter.enable"] else 0.0
            if p != self.values["inverter.power"]:
                self.values["inverter.power"] = p
        self.advance(advance_us or self.period_us)
        return res


VOLTS = [0.45, 0.9, 0.95, 1.0, 1.0, 1.0, 1.06, 1.12, 1.25]
SETS: dict[str, list[Any]] = {
    "grid.voltage": [240.0 * x for x in VOLTS],
    "grid.frequency": [57.0, 59.0, 59.95, 60.0, 60.0, 60.3, 61.5, 62.5],
    "grid.loss": [False, False, True],
    "inverter.temperature": [40.0, 40.0, 75.0, 90.0],
    "ev.soc": [0.0, -0.0, 0.05, 0.12, 0.5, 0.5, 0.93, 0.99],
    "ev.soh": [0.95, 0.6],
    "plc.snr": [30.0, 30.0, 12.0, 3.0],
    "inverter.write_mismatch": [False, False, False, True],
    "inverter.max_charge_w": [11000.0, 5000.0, -1.0],
    "meter.power": [0.0, 0.0, 3000.0],
}
DER = [
    setc("EnterService", ES_OK, cid="es"),
    setc("HVMustTrip", curve([(0.16, 120.0), (5.0, 110.0)]), cid="hv"),
    setc("LimitMaxDischarge", {"priority": 0, "pctMaxDischargePower": 25.0}, cid="lm"),
]


def _online(rig: Rig) -> Command:
    params = rig.safety.params.model_dump(mode="json")
    params["voltage"]["ov1"] = {"threshold": 1.10, "clearing_s": 5.0}  # Category III: 13 s tightened
    return Command(RECONFIGURE, {"revision": "r2", "components": {"safety": params}, "by": "test"})


ACTIONS = st.one_of(
    st.tuples(st.just("set"), st.sampled_from(sorted(SETS)), st.integers(0, 99)),
    st.tuples(st.just("bad"), st.sampled_from(sorted(SETS)), st.just(0)),
    st.tuples(st.just("force"), st.sampled_from(["grid.voltage", "ev.soc", "grid.loss"]), st.integers(0, 99)),
    st.tuples(st.just("unforce"), st.just(""), st.just(0)),
    st.tuples(st.just("request"), st.sampled_from(["-8000", "0", "6000"]), st.just(0)),
    st.tuples(st.just("der"), st.just(""), st.integers(0, len(DER) - 1)),
    st.tuples(st.just("online"), st.just(""), st.just(0)),
    st.tuples(st.just("wait"), st.sampled_from(["0.02", "0.5", "3", "20"]), st.just(0)),
)


def _events(res: StepResult) -> list[tuple[str, str, dict[str, Any]]]:
    return [(e.kind, e.message, dict(e.data)) for e in res.events]


def _twins() -> tuple[OnChange, OnChange]:
    rigs = OnChange(), OnChange(supervisor=Afresh)
    for rig in rigs:
        rig.req.setpoint = -6000.0
        rig.settle()
    return rigs


@settings(max_examples=60, deadline=None)
@given(actions=st.lists(ACTIONS, min_size=1, max_size=25))
def test_judging_on_change_equals_judging_every_cycle(actions: list[tuple[str, str, int]]) -> None:
    rigs = _twins()
    for what, name, i in actions:
        commands: tuple[Command, ...] = ()
        seconds = 0.06
        for rig in rigs:
            if what == "set":  # a new object, of equal value when the last set was of this one too
                x = SETS[name][i % len(SETS[name])]
                rig.set(**{name.replace(".", "__"): float(repr(x)) if isinstance(x, float) else x})
            elif what == "bad":
                rig.bad.add(name)
            elif what == "force":
                rig.engine.force(name, SETS[name][i % len(SETS[name])])
            elif what == "unforce":
                for n in list(rig.engine.forces):
                    rig.engine.unforce(n)
            elif what == "request":
                rig.req.setpoint = float(name)
        if what == "der":
            commands = (DER[i],)
        elif what == "online":
            commands = (_online(rigs[0]),)
        elif what == "wait":
            seconds = float(name)
        end = rigs[0].now_us + round(seconds * US)
        first = True
        while rigs[0].now_us < end:
            a, b = (rig.step(commands if first else ()) for rig in rigs)
            first = False
            assert a.outputs == b.outputs
            assert _events(a) == _events(b)
            assert a.persist == b.persist
            assert rigs[0].now_us == rigs[1].now_us


def test_the_plant_sends_only_what_changed() -> None:
    """Not vacuous: the grid's reads keep their very tag values from cycle to cycle, so the memos are used."""
    rig = _twins()[0]
    before = rig.engine.image["grid.voltage"]
    hits = 0
    judge = rig.safety._grid_state

    def counting(*a: Any) -> Any:
        nonlocal hits
        hits += 1
        return judge(*a)

    rig.safety._grid_state = counting  # type: ignore[method-assign]
    rig.run(1.0)
    assert rig.engine.image["grid.voltage"] is before
    assert hits == 0  # the grid's state came from the memo on every cycle of the second
    rig.set(grid__voltage=250.0)
    rig.step()
    assert hits == 1


def _lockstep(rigs: tuple[OnChange, OnChange], seconds: float, commands: tuple[Command, ...] = ()) -> None:
    end = rigs[0].now_us + round(seconds * US)
    while rigs[0].now_us < end:
        a, b = (rig.step(commands, advance_us=US // 2) for rig in rigs)
        commands = ()
        assert (a.outputs, _events(a), a.persist) == (b.outputs, _events(b), b.persist)


def test_settings_that_move_the_enter_service_window_are_judged_on_unchanged_reads() -> None:
    """After a grid trip, 60.3 Hz is outside the default enter-service window (59.5-60.1 Hz), so discharge
    waits; a DER EnterService control (59.9-60.5 Hz, 60 s) makes it inside while the frequency's tag value
    stays the very same object: the new settings in force are part of what the grid's state is kept for."""
    rigs = _twins()
    for rig in rigs:
        rig.set(grid__frequency=60.3, grid__voltage=1.25 * 240.0)  # Category III OV2: 1.20 pu
    _lockstep(rigs, 1.0)
    assert rigs[0].out["safety.trip"] == "ov2"
    for rig in rigs:
        rig.set(grid__voltage=240.0)
    _lockstep(rigs, 400.0)  # the trip clears in the continuous range; enter service waits for its window
    assert rigs[0].out["safety.trip"] == "" and rigs[0].out["inverter.setpoint"] == 0.0
    freq = rigs[0].engine.image["grid.frequency"]
    _lockstep(rigs, 61.0, (setc("EnterService", ES_OK, cid="es"),))
    _lockstep(rigs, 30.0)
    assert rigs[0].engine.image["grid.frequency"] is freq  # not read again: the memo was asked
    assert -6000.0 < rigs[0].out["inverter.setpoint"] < 0.0  # the overlay's 60 s delay is over: ramping up


def test_the_scan_reads_the_settings_in_force_after_an_online_change() -> None:
    """The scan reads its settings as plain attributes (``settings.plain``), rebuilt when params is another
    object: after an online change, the new ones."""
    rig = OnChange()
    rig.settle()
    before = rig.safety._hp
    rig.step((_online(rig),))
    assert rig.engine.reconfigured == [("r2", True, "")]
    rig.step()
    assert rig.safety._hp is not before and rig.safety._hp_of is rig.safety.params
    assert rig.safety._hp.voltage.ov1.clearing_s == 5.0 == rig.safety.params.voltage.ov1.clearing_s


def test_plain_settings_hold_the_models_own_values() -> None:
    """Every field, at every depth, the model's own object (models, lists and dicts as plain copies of them)."""
    params = SafetyParams.model_validate(
        {
            "category": "III",
            "rated_charge_w": 11000.0,
            "rated_discharge_w": 11000.0,
            "limits": {"external": [{"name": "dso", "charge_tag": "dso.charge"}]},
        }
    )

    def same(model: Any, view: Any) -> None:
        if isinstance(model, BaseModel):
            assert set(vars(view)) == set(type(model).model_fields)
            for k, v in vars(model).items():
                same(v, getattr(view, k))
        elif isinstance(model, list | dict):
            assert type(view) is type(model) and len(view) == len(model)
            for k in range(len(model)) if isinstance(model, list) else model:
                same(model[k], view[k])
        else:
            assert view is model

    same(params, plain(params))
    assert plain(params).limits.external[0].charge_tag == "dso.charge"


def test_a_judged_read_that_is_no_tag_of_the_site_reads_as_missing() -> None:
    """A setting may name a tag the site does not have (here the persist-fault flag): it reads as an absent
    tag does (bad: no cause), the other reads as ever, and the scan goes on reading the image by name."""
    comms = {"persist_fault_tag": "spare.persist_fault"}
    rigs = OnChange(comms=comms), OnChange(supervisor=Afresh, comms=comms)
    for rig in rigs:
        rig.req.setpoint = -6000.0
        rig.settle()
    assert "spare.persist_fault" in rigs[0].safety._judged and "spare.persist_fault" not in rigs[0].engine.image
    assert rigs[0].safety._by_key is None  # fell back once, for good
    assert rigs[0].out["safety.trip"] == "" and rigs[0].out["inverter.setpoint"] == -6000.0
    for rig in rigs:
        rig.set(grid__voltage=1.25 * 240.0)
    _lockstep(rigs, 1.0)
    assert rigs[0].out["safety.trip"] == "ov2"
