"""No force gets around the safety layer (issue 14 item 1): every tag the supervisor reads to decide is
judged, and forcing any of them trips, for both power signs and zero.

The set of judged tags is derived from the settings (``SafetySupervisor.reads``); here it is checked
against what the supervisor actually reads through the image and the output image during real cycles,
on a site with every optional input switched on, so that a new input cannot be forgotten.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest

from runtime.api import Cycle, Outputs, Program, SiteInfo
from runtime.tags import Direction, Image, TagSpec, TagType, TagValue
from safety.supervisor import SafetySupervisor
from tests.safety.rig import PERSIST, Memory, Rig


class _Image(Image):
    """The frozen image, recording every name read through it."""

    __slots__ = ("seen",)

    def __init__(self, img: Image, seen: set[str]):
        super().__init__(img)
        self.seen = seen

    def __getitem__(self, name: str) -> TagValue:
        self.seen.add(name)
        return super().__getitem__(name)

    def tag(self, name: str) -> TagValue:
        self.seen.add(name)
        return super().tag(name)

    def value(self, name: str, default: Any = None) -> Any:
        self.seen.add(name)
        return super().value(name, default)

    def good(self, *names: str) -> bool:
        self.seen.update(names)
        return super().good(*names)


class _Outputs(Outputs):
    """The output image, recording every name read (writes are the interlock's job, not reads)."""

    __slots__ = ("seen",)

    def __init__(self, out: Outputs, seen: set[str]):
        super().__init__(out._specs, out._values, out._writable)
        self.dirty = out.dirty
        self.seen = seen

    def __getitem__(self, name: str) -> Any:
        self.seen.add(name)
        return super().__getitem__(name)

    def get(self, name: str, default: Any = None) -> Any:
        self.seen.add(name)
        return super().get(name, default)


class Recording(SafetySupervisor):
    seen: set[str]

    def scan(self, cx: Cycle) -> None:
        if not hasattr(self, "seen"):
            self.seen = set()
        cx.inputs = _Image(cx.inputs, self.seen)
        cx.out = _Outputs(cx.out, self.seen)
        super().scan(cx)


EXTRA: dict[str, tuple[TagType, Direction, Any]] = {
    "grid.voltage_l1": (TagType.FLOAT, Direction.INPUT, 230.0),
    "grid.voltage_l2": (TagType.FLOAT, Direction.INPUT, 230.0),
    "grid.voltage_l3": (TagType.FLOAT, Direction.INPUT, 230.0),
    "ev.battery_temperature": (TagType.FLOAT, Direction.INPUT, 30.0),
    "backoffice.round_trip": (TagType.FLOAT, Direction.INPUT, 0.1),
    "backoffice.limit_charge": (TagType.FLOAT, Direction.SHARED, 9000.0),
    "backoffice.limit_discharge": (TagType.FLOAT, Direction.SHARED, 9000.0),
    "inverter.ov2_pu": (TagType.FLOAT, Direction.INPUT, 1.2),
    "inverter.ov2_s": (TagType.FLOAT, Direction.INPUT, 0.16),
    "inverter.reversion_s": (TagType.FLOAT, Direction.INPUT, 10.0),
}
MEMORY = {"mode.state": "remote", PERSIST: False}


_SETTLED: dict[tuple[float, bool], Rig] = {}


def full_rig(request_w: float = 0.0, *, trust_forced_inputs: bool = False) -> Rig:
    """A settled copy of the three-phase rig with every optional input switched on (settled once per
    request and setting: enter service takes 600 s of simulated time)."""
    key = (request_w, trust_forced_inputs)
    if key not in _SETTLED:
        _SETTLED[key] = _full_rig(request_w, trust_forced_inputs=trust_forced_inputs)
    rig = _SETTLED[key]
    return copy.deepcopy(rig, memo={id(rig.last): rig.last})  # the last result is read-only


def _full_rig(request_w: float = 0.0, **kw: Any) -> Rig:
    mem = Memory(SiteInfo("rig", 400.0, 60, 20_000, 3), dict(MEMORY))
    rig = Rig(
        nominal_v=400.0,
        phases=3,
        phase_nominal_voltage=230.0,
        extra_inputs=[TagSpec(n, t, "", d, None, stale_after_s=5.0) for n, (t, d, _) in EXTRA.items()],
        programs=[mem],
        battery={"temperature_tag": "ev.battery_temperature"},
        comms={
            "rtt_tag": "backoffice.round_trip",
            "external_tags": ["backoffice.limit_charge", "backoffice.limit_discharge"],
            "external_modes": ["remote"],
        },
        limits={
            "external": [
                {
                    "name": "backoffice",
                    "charge_tag": "backoffice.limit_charge",
                    "discharge_tag": "backoffice.limit_discharge",
                }
            ]
        },
        verify={
            "ratings": ["inverter.max_charge_w", "inverter.max_discharge_w"],
            "trips": {"ov2": {"threshold_tag": "inverter.ov2_pu", "time_tag": "inverter.ov2_s"}},
            "reversion_tag": "inverter.reversion_s",
        },
        **kw,
    )
    rig.memory = mem  # type: ignore[attr-defined]
    rig.set(grid__voltage=400.0, **{n.replace(".", "__"): v for n, (_, _, v) in EXTRA.items()})
    rig.req.setpoint = request_w
    rig.settle()
    return rig


def test_the_judged_set_is_what_the_supervisor_reads() -> None:
    """Reads recorded through the images over cycles that take every branch equal the declared set."""
    rig = _full_rig(-5000.0, supervisor=Recording)
    assert rig.out["safety.trip"] == "" and rig.out["inverter.setpoint"] == -5000.0
    rig.set(backoffice__round_trip=1.0)  # unhealthy back office: the mode decides
    rig.step()
    assert rig.out["inverter.setpoint"] == 0.0
    seen: set[str] = rig.safety.seen  # type: ignore[attr-defined]
    own = {s.name for s in rig.safety.declare()}
    assert seen - own == set(rig.safety.reads)
    assert set(rig.safety.requires()) <= rig.safety.reads


def test_every_single_phase_default_read_is_judged() -> None:
    rig = Rig(supervisor=Recording)
    rig.req.setpoint = 5000.0
    rig.settle()
    seen: set[str] = rig.safety.seen  # type: ignore[attr-defined]
    assert seen - {s.name for s in rig.safety.declare()} <= rig.safety.reads
    assert not {"grid.voltage_l1", "mode.state"} & rig.safety.reads  # unread on this site: not judged


JUDGED = sorted(full_rig().safety._judged)


@pytest.mark.parametrize("request_w", [-5000.0, 0.0, 5000.0])
@pytest.mark.parametrize("tag", [t for t in JUDGED if not t.startswith("runtime.")])
def test_forcing_any_judged_tag_trips(tag: str, request_w: float) -> None:
    """Forced to the very value it has: a force is not evidence, whatever value it holds."""
    rig = full_rig(request_w)
    assert rig.out["safety.trip"] == "" and rig.out["inverter.setpoint"] == request_w
    value = rig.engine.image[tag].value
    rig.engine.force(tag, value)
    first = rig.step()
    # An input is seen forced in the cycle it is forced; a memory tag in the image of the next cycle.
    results = [first, rig.step(), rig.step()]
    for res in results[0 if rig.tags[tag].is_input else 1 :]:
        assert res.outputs["safety.trip"] == "comms_lost", res.outputs["safety.reason"]
        assert f"{tag} good (forced)" in res.outputs["safety.reason"]
        assert res.outputs["inverter.setpoint"] == 0.0 and res.outputs["inverter.enable"] is False
    rig.engine.unforce(tag)
    rig.run(0.1)
    assert rig.out["safety.trip"] == ""  # recovers by itself once released


@pytest.mark.parametrize("request_w", [-5000.0, 0.0, 5000.0])
@pytest.mark.parametrize("tag", [t for t in JUDGED if t.startswith("runtime.")])
def test_trusting_forces_never_covers_the_runtime_diagnostics(tag: str, request_w: float) -> None:
    """The engine refuses any force of a runtime diagnostic, trusted forces or not (the interlock's own
    guard below it, for the judged runtime tags, stays in place: they are in its judged set)."""
    rig = full_rig(request_w, trust_forced_inputs=True)
    rig.engine.force("grid.voltage", 400.0)  # trusted for commissioning: no trip
    assert rig.step().outputs["safety.trip"] == ""
    with pytest.raises(ValueError):
        rig.engine.force(tag, rig.engine.image[tag].value)
    res = rig.step()
    assert not res.image[tag].forced
    assert res.outputs["inverter.setpoint"] == request_w and res.outputs["safety.trip"] == ""
    assert tag in rig.safety._judged


class _Raiser(Program):
    def __init__(self, site: SiteInfo):
        super().__init__("raiser", Program.Params(), site)

    def scan(self, cx: Cycle) -> None:
        raise RuntimeError("raises every cycle")


@pytest.mark.parametrize("request_w", [-5000.0, 0.0, 5000.0])
def test_a_forced_runtime_fault_does_not_clear_a_program_fault(request_w: float) -> None:
    """Issue 14 item 1 as reported: runtime.fault forced to "" while a program raises every cycle. The
    engine refuses such a force (the scan core). If one got through, the supervisor trips on it from the
    first image that shows the force: a memory tag carries its forced flag from the cycle after the force
    (the one cycle between is why the engine must refuse forces of diagnostics)."""
    rig = Rig(programs=[_Raiser(SiteInfo("rig", 240.0, 60, 20_000, 1))])
    rig.req.setpoint = request_w
    rig.settle()
    assert rig.out["safety.trip"] == "program_fault"
    assert rig.out["inverter.setpoint"] == 0.0 and rig.out["inverter.enable"] is False
    try:
        rig.engine.force("runtime.fault", "")
    except (KeyError, ValueError, PermissionError):
        return  # refused by the engine: nothing can get around safety
    results = rig.run(0.2)
    for res in results[1:]:
        assert res.outputs["safety.trip"] == "comms_lost" and "runtime.fault" in res.outputs["safety.reason"]
        assert res.outputs["inverter.setpoint"] == 0.0 and res.outputs["inverter.enable"] is False
