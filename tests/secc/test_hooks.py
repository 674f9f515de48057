"""The SECC's contactor, cable check and CP state hooks on the runtime's tags (docs/iso15118.md "Contactor,
cable check and CP state"), without root: what ``secc_link`` hands the SECC from the charger's points, in
the real engine; and what the bridge's hooks answer from it, in the SECC's own interpreter. The sessions
between namespaces that these decide are in test_hook_sessions.py."""

from __future__ import annotations

import json
import subprocess
from typing import Any

import pytest

from runtime.secc.driver import failure_tags, link_outputs
from runtime.secc.link import SeccLink, SeccLinkParams
from runtime.tags import Direction, TagSpec, TagType
from tests.peers import require
from tests.programs.conftest import SITE, Rig
from tests.secc import netns

HOOK_IN = (
    TagSpec("charger.contactor_closed", TagType.BOOL),
    TagSpec("charger.isolation", TagType.STR),
    TagSpec("charger.cp_state", TagType.STR),
)
WIRED = {
    "contactor_tag": "charger.contactor_closed",
    "isolation_tag": "charger.isolation",
    "cp_state_tag": "charger.cp_state",
}


def rig(inputs: tuple[TagSpec, ...] = (), **params: Any) -> Rig:
    """secc_link alone, after an interlock that committed the safety outputs it copies (here: as set);
    ``inputs``: more of the SECC's own tags than its failures."""
    out = link_outputs("secc")
    specs = [TagSpec(out[k], TagType.STR, "", Direction.OUTPUT, "unknown") for k in WIRED_KEYS]
    specs += [TagSpec(t, TagType.FLOAT, "", Direction.OUTPUT, 0.0) for k, t in out.items() if k.endswith("_w")]
    specs += [TagSpec(out[k], TagType.BOOL, "", Direction.OUTPUT, False) for k in ("enable", "terminate")]
    specs += [
        TagSpec("safety.trip", TagType.STR, "", Direction.OUTPUT, ""),
        TagSpec("safety.limit_charge", TagType.FLOAT, "W", Direction.OUTPUT, 0.0),
        TagSpec("safety.limit_discharge", TagType.FLOAT, "W", Direction.OUTPUT, 0.0),
    ]
    f = failure_tags("secc")
    failures = (TagSpec(f["count"], TagType.INT), TagSpec(f["last"], TagType.STR), TagSpec(f["handshake"], TagType.INT))
    lock = SeccLink("secc_link", SeccLinkParams(**params), SITE)
    return Rig([], [lock], inputs=(*HOOK_IN, *failures, *inputs), extra=specs)


WIRED_KEYS = ("contactor", "isolation", "cp_state")
CHARGER = {"charger.contactor_closed": True, "charger.isolation": "valid", "charger.cp_state": "C2"}


def hooks(r: Rig) -> tuple[Any, ...]:
    return tuple(r.value(f"secc.{k}") for k in WIRED_KEYS)


def test_the_chargers_points_reach_the_secc_as_they_read() -> None:
    r = rig(**WIRED)
    r.step({**CHARGER})
    assert hooks(r) == ("closed", "valid", "C2")
    r.step({"charger.contactor_closed": False, "charger.isolation": "fault", "charger.cp_state": "B2"})
    assert hooks(r) == ("open", "fault", "B2")


@pytest.mark.parametrize("how", ["bad", "stale"])
def test_a_point_that_is_not_good_is_unknown_to_the_secc(how: str) -> None:
    r = rig(**WIRED)
    r.step({**CHARGER})
    r.step({}, **{how: list(CHARGER)})
    assert hooks(r) == ("unknown", "unknown", "unknown")


def test_a_value_outside_the_points_vocabulary_is_unknown() -> None:
    r = rig(**WIRED)
    r.step({**CHARGER, "charger.isolation": "fine", "charger.cp_state": "c2"})
    assert hooks(r) == ("closed", "unknown", "unknown")


def test_a_site_without_such_points_leaves_the_secc_its_simulated_answers() -> None:
    r = rig()
    r.step({**CHARGER})
    assert hooks(r) == ("simulated", "simulated", "simulated")


# -- the bridge's hooks, in the SECC's interpreter ------------------------------------------------------
PROBE = """
import asyncio, json, socket, time
import bridge
from bridge import Link, RuntimeEVSEController

bridge.CONTACTOR_WAIT_S = 0.3
bridge.CABLE_CHECK_WAIT_S = 0.4
ours, _theirs = socket.socketpair()
link = Link(ours, stale_s=1.0)
ctrl = RuntimeEVSEController(link)
out = {}

def say(**cmd):
    link.cmd, link.cmd_t = cmd, time.monotonic()

async def timed(coro):
    t0 = time.monotonic()
    r = await coro
    return [r if isinstance(r, (bool, type(None))) else str(r.value), round(time.monotonic() - t0, 1)]

async def main():
    say(contactor="simulated", isolation="simulated", cp_state="simulated")
    out["simulated"] = [await ctrl.is_contactor_closed(), (await ctrl.get_cable_check_status()).value,
                        (await ctrl.get_cp_state()).value]
    say(contactor="closed", cp_state="C2")
    out["closed_c2"] = await timed(ctrl.is_contactor_closed())
    say(contactor="closed", cp_state="B2")  # IEC 61851-1: no energy in state B
    out["closed_b2"] = await timed(ctrl.is_contactor_closed())
    say(contactor="open", cp_state="C2")
    out["open"] = await timed(ctrl.is_contactor_closed())
    say(contactor="unknown", cp_state="C2")
    out["unknown"] = await timed(ctrl.is_contactor_closed())
    say(contactor="closed", cp_state="C2")
    link.cmd_t -= 5  # the runtime fell silent: its word is stale
    out["stale"] = await timed(ctrl.is_contactor_closed())
    say(contactor="closed", cp_state="C2", terminate=True)
    out["tripped"] = await timed(ctrl.is_contactor_closed())
    # DC cable check: Ongoing (None) while open, then a failure; closed: True at once
    say(contactor="open", cp_state="C2")
    await ctrl.start_cable_check()
    first = await ctrl.is_contactor_closed()
    await asyncio.sleep(0.35)
    out["cable_check_open"] = [first, await ctrl.is_contactor_closed()]
    await ctrl.start_cable_check()
    say(contactor="closed", cp_state="C2")
    out["cable_check_closed"] = await ctrl.is_contactor_closed()
    for level in ("valid", "warning", "fault", "invalid", "no_imd"):
        await ctrl.start_cable_check()
        say(isolation=level)
        out[level] = (await ctrl.get_cable_check_status()).value
    await ctrl.start_cable_check()
    say(isolation="unknown")
    first = await ctrl.get_cable_check_status()
    await asyncio.sleep(0.45)
    out["isolation_unknown"] = [first, (await ctrl.get_cable_check_status()).value]
    say(cp_state="B2")
    out["cp_b2"] = (await ctrl.get_cp_state()).value
    say(cp_state="unknown")
    out["cp_unknown"] = (await ctrl.get_cp_state()).value

asyncio.run(main())
print(json.dumps(out))
"""


def test_the_bridges_hooks_answer_from_the_runtimes_word_and_fail_safe() -> None:
    require("the SECC virtualenv", netns.DEFAULT_PYTHON.exists(), netns.SECC_VENV)
    res = subprocess.run(
        [str(netns.DEFAULT_PYTHON), "-c", PROBE],
        cwd=netns.BRIDGE.parent,  # the bridge imports its neighbour failures.py as a script does
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    out = json.loads(res.stdout.splitlines()[-1])
    assert out["simulated"] == [True, "Valid", "C2"]  # the package's own answers, where nothing is wired
    assert out["closed_c2"] == [True, 0.0]
    # not energizable: False once the contactor's time (0.3 s here) is up, never True
    for case in ("closed_b2", "open", "unknown", "stale", "tripped"):
        assert out[case][0] is False, case
        assert out[case][1] == 0.0 if case == "tripped" else out[case][1] >= 0.3, case  # a trip answers at once
    assert out["cable_check_open"] == [None, False] and out["cable_check_closed"] is True
    assert [out[k] for k in ("valid", "warning", "fault", "invalid", "no_imd")] == [
        "Valid",
        "Warning",
        "Fault",
        "Invalid",
        "Invalid",  # no insulation monitor: no DC cable check
    ]
    assert out["isolation_unknown"] == [None, "Invalid"]
    assert out["cp_b2"] == "B2" and out["cp_unknown"] == "UNKNOWN"


def test_a_refusal_of_the_chargers_own_is_an_evse_failure() -> None:
    import sys

    sys.path.insert(0, str(netns.BRIDGE.parent))
    try:
        import failures  # services/secc/failures.py: standard library only
    finally:
        sys.path.pop(0)
    for reason in (
        "Isolation Failure: IsolationLevel.FAULT",
        "Contactor didnt close for Cable Check",
        "Contactor didn't close",
        "[V2G2-860] Contactor didn't close within the allotted 3 seconds.",
    ):
        assert failures.classify(reason, False) == failures.EVSE, reason
    assert json.dumps(failures.KINDS)  # the kinds stay plain strings for the channel


def test_a_contract_refused_with_eim_allowed_is_told_once_as_a_warning() -> None:
    """Plug and Charge refused, the session going on as EIM (pnc_fallback_eim): one warning with the reason
    per refusal, none while the SECC reports nothing refused, none for a refusal that ended the session."""
    r = rig((TagSpec("secc.auth", TagType.STR), TagSpec("secc.contract_refused", TagType.STR)))

    def warnings(values: dict[str, Any]) -> list[str]:
        res = r.step(values)
        return [e.message for e in res.events if e.kind == "warning"]

    assert warnings({"secc.auth": "PNC", "secc.contract_refused": ""}) == []
    assert warnings({"secc.auth": "EIM", "secc.contract_refused": "untrusted MO root"}) == [
        "ISO 15118 contract refused, the session goes on as EIM: untrusted MO root"
    ]
    assert warnings({"secc.auth": "EIM", "secc.contract_refused": "untrusted MO root"}) == []  # told once
    assert warnings({"secc.auth": "", "secc.contract_refused": ""}) == []  # session over: cleared
    assert warnings({"secc.auth": "", "secc.contract_refused": "expired"}) == []  # ended: a failure, told there
