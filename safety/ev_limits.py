"""The EV's own power limits as the safety layer's last word: no set point past what the EV itself allows.

Why an interlock when dispatch already clamps to them: dispatch is a program and may be wrong, forced or
bypassed by whoever is in charge (the back office in ``remote``, a grid service in ``frequency``); the EV's
limits over ISO 15118-20 (``EVMaximumChargePower`` / ``EVMaximumDischargePower``, ISO 15118-20 section 8.3.5)
are a fact about the battery, like the SoC window. This interlock reads them straight from the SECC
device's inputs (never from a program's output: it judges what programs did, so it does not stand on
them) and clamps the committed set point to them less ``margin_pct``. It writes nothing else but the
permit on doubt and its reason: the safety layer's directional limits stay the supervisor's (a tag that
no one rewrites each cycle would keep a lowered limit for good), and the EV knows its own limits.

- No session (the SECC says so, good): no EV, no EV limit; the other interlocks decide.
- In a session, a limit the EV does not give (None: DIN SPEC 70121 and ISO 15118-2 have no discharge
  limit) bounds nothing in that direction; a limit that is not good (stale, bad, forced) is 0 W.
- The SECC not heard while a session ran (its session input stale or bad after a good "in session"), or
  the session input forced: doubt. The set point is 0 W both ways and the permit is withdrawn until it
  is heard again; nothing latches (the service restarts by itself, docs/iso15118.md "The channel"). An
  SECC never heard (start-up) or last heard idle has no session to protect: no EV limit.

List it after ``v2g_safety`` (it tightens what the supervisor committed) and before ``secc_link`` (which
tells the EV what was committed). It says why in ``safety.reason`` and with a ``limit`` event.
"""

from __future__ import annotations

from pydantic import Field

from runtime.api import Cycle, Params, Program, SiteInfo, TagName, register_interlock
from runtime.tags import Image

INF = float("inf")


class EvLimitsParams(Params):
    session_tag: TagName = Field("secc.session", description="an EV is in a session (the SECC device's input)")
    max_charge_tag: TagName = Field("secc.ev_max_charge_w", description="the EV's charge limit (W, the SECC's input)")
    max_discharge_tag: TagName = Field(
        "secc.ev_max_discharge_w", description="the EV's discharge limit (W; its magnitude counts, either sign)"
    )
    margin_pct: float = Field(
        2.0,
        ge=0,
        le=20,
        description="the set point stays this far below the EV's limit, so the converter's tracking error "
        "(engineering default: 2 %) does not carry the power past it; 0: clamp at the limit itself",
    )
    setpoint_tag: TagName = "inverter.setpoint"
    enable_tag: TagName = "inverter.enable"
    reason_tag: TagName = Field("safety.reason", description="where it says why it acts (appended)")


def _doubt(img: Image, name: str) -> str:
    """Why ``name`` is no evidence (not good, or forced: forcing never bypasses safety), empty when it is."""
    tv = img.tag(name)
    if not tv.good:
        return f"{name} is {tv.quality.value}"
    return f"{name} is forced" if tv.forced else ""


def ev_bounds(img: Image, p: EvLimitsParams, was_in_session: bool) -> tuple[float, float, str, bool]:
    """(charge W, discharge W, doubt, in session): the EV's bounds on this cycle's set point, ``inf`` where
    it gives none; ``doubt`` says which input is no evidence (then both bounds are 0); ``in session`` is
    what to remember for the next cycle. Pure.

    A session input that is not good counts as doubt only when the last good one said a session was
    running: an SECC never heard, or last heard idle, has no EV in a session to protect (and without the
    service no session can start). A forced session input is always doubt, or a force could hide one."""
    tv = img.tag(p.session_tag)
    if tv.forced or (not tv.good and was_in_session):
        return 0.0, 0.0, _doubt(img, p.session_tag), was_in_session
    if not tv.good or tv.value is not True:
        return INF, INF, "", False
    keep = 1.0 - p.margin_pct / 100.0
    out: list[float] = []
    for tag in (p.max_charge_tag, p.max_discharge_tag):
        why = _doubt(img, tag)
        if why:
            return 0.0, 0.0, why, True
        v = img.value(tag)
        out.append(INF if v is None else abs(float(v)) * keep)
    return out[0], out[1], "", True


@register_interlock("ev_limits")
class EvLimits(Program):
    """Clamps the committed set point to the EV's own limits less a margin; 0 W and no permit on doubt."""

    Params = EvLimitsParams
    params: EvLimitsParams

    def __init__(self, name: str, params: EvLimitsParams, site: SiteInfo):
        super().__init__(name, params, site)
        self.acting = ""  # the kind of what acted last cycle: a limit event says when it changes
        self.in_session = False  # the last good session input said a session runs
        self.said = ""  # what this interlock appended to the reason tag last cycle (taken off again first)

    def requires(self) -> list[str]:
        p = self.params
        return [
            p.session_tag,
            p.max_charge_tag,
            p.max_discharge_tag,
            p.setpoint_tag,
            p.enable_tag,
            p.reason_tag,
        ]

    def scan(self, cx: Cycle) -> None:
        p, out = self.params, cx.out
        lc, ld, doubt, self.in_session = ev_bounds(cx.inputs, p, self.in_session)
        asked = float(out[p.setpoint_tag] or 0.0)
        sp = min(asked, lc) if asked > 0 else max(asked, -ld)
        out[p.setpoint_tag] = sp if sp != 0 else 0.0  # never -0.0
        if doubt:
            out[p.enable_tag] = False
            reason, kind = f"EV limits unknown ({doubt}): 0 W, no permit", "unknown"
        elif sp != asked:
            kind = "charge" if asked > 0 else "discharge"
            reason = f"EV limits: {kind} {abs(sp):.0f} W (the EV's own less {p.margin_pct:g} %)"
        else:
            reason, kind = "", ""
        before = out[p.reason_tag] or ""
        if self.said and before.endswith(self.said):  # not rewritten since: ours from last cycle
            before = before[: -len(self.said)]
        self.said = (f"; {reason}" if before else reason) if reason else ""
        if self.said or out[p.reason_tag] != before:
            out[p.reason_tag] = before + self.said
        if kind != self.acting:
            w = {k: None if v == INF else v for k, v in (("charge_w", lc), ("discharge_w", ld))}  # JSON has no inf
            cx.event("limit", reason or "EV limits no longer acting", ev_limits=kind, **w)
            self.acting = kind
