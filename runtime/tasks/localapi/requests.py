"""Mode requests and trip resets from the local API (Modbus, MQTT, AMQP): one typed request, one way in.

The site's mode authority (docs/design.md "Who may ask for what") takes one ``mode.request`` input:
source, mode, signed set point, expiry. Every interface of the local API validates what a client sent
into a :class:`ModeRequest` and hands it to its task's :class:`Requests`, which sends it to the scan as the
typed ``mode_request`` command (runtime/commands.py) and returns the scan's answer for the client. The
scan checks it again (allowlist, ranges, rate) and its authority decides whether the local EMS may lead
now; the safety layer keeps the last word over whatever follows. Nothing here touches an output.

Reversion (SunSpec 704 ``WSetRvrtTms``, and ``expiry_s`` on the buses): a remote or frequency request
that is not refreshed within its expiry is followed by a ``local`` request from this task, which hands
authority back. The scan expires the request by itself too; the explicit hand-back makes the end visible in the
event log with who asked, and holds when an older scan keeps a request longer. The timer runs on the
cycle clock (an offline duration, docs/design.md "Clocks"), so it stretches with ``--speed``.

Remote trip reset is opt-in per interface (``trip_reset: true`` in the task's params), rate-limited on
the monotonic clock and logged with who asked (docs/threat-model.md); the scan's own reset rules decide
whether the trip may clear (only operator-reset trips need one: grid trips clear through enter service).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import time
from collections.abc import Callable, Sequence
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from runtime.api import Params
from runtime.tags import US
from runtime.tasks.base import TaskContext
from runtime.tasks.localapi.connection import ConnectionParams

log = logging.getLogger("v2g_plc.localapi")

MAX_COMMAND_BYTES = 4096
MAX_POWER_W = 1_000_000.0  # a sanity bound on any set point a client may send (1 MW); the site's rating is tighter
MAX_EXPIRY_S = 86_400.0
NETWORK_EXPIRY_S = 900.0  # a network request without expiry_s lasts this long in the scan (docs/design.md)


MIN_CURVE_HZ, MAX_CURVE_HZ = 45.0, 65.0  # the frequency curve's range (both 50 and 60 Hz grids)
CurvePoint = tuple[float, float]


class ModeRequest(BaseModel):
    """What a local client asks the mode machine for. Power in the project's convention: positive into
    the EV battery (charging), negative out of it (discharging)."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)  # NaN/inf: "a finite number"

    source: str = Field(min_length=1, max_length=200, description="interface and client, e.g. modbus:192.0.2.50")
    mode: Literal["remote", "frequency", "local"] = Field(
        description="remote: follow setpoint_w; frequency: follow curve; local: hand back to the plan"
    )
    setpoint_w: float | None = Field(None, ge=-MAX_POWER_W, le=MAX_POWER_W, description="signed W (remote only)")
    curve: list[CurvePoint] | None = Field(
        None, min_length=2, max_length=10, description="frequency only: [hz, w] points, hz strictly increasing"
    )
    baseline_w: float | None = Field(
        None, ge=-MAX_POWER_W, le=MAX_POWER_W, description="frequency only: signed W added to the curve's value"
    )
    expiry_s: float | None = Field(
        None, gt=0, le=MAX_EXPIRY_S, description="reversion: no refresh within this -> local"
    )
    limit_pct: float | None = Field(None, ge=0, le=100, description="cap on |power| as % of the rating")
    evse: int | None = Field(None, ge=1, le=999, description="the EVSE asked, on a depot (set by the interface)")

    @model_validator(mode="after")
    def _arguments_fit_the_mode(self) -> ModeRequest:
        if self.mode == "remote" and self.setpoint_w is None:
            raise ValueError("mode remote needs setpoint_w")
        if self.mode == "frequency":
            if self.curve is None:
                raise ValueError("mode frequency needs curve")
            hz = [p[0] for p in self.curve]
            if any(not MIN_CURVE_HZ <= f <= MAX_CURVE_HZ for f in hz):
                raise ValueError(f"curve: hz must be within {MIN_CURVE_HZ:g}..{MAX_CURVE_HZ:g}")
            if any(b <= a for a, b in itertools.pairwise(hz)):
                raise ValueError("curve: hz must be strictly increasing")
            if any(abs(p[1]) > MAX_POWER_W for p in self.curve):
                raise ValueError(f"curve: w must be within +-{MAX_POWER_W:.0f} W")
        elif self.curve is not None or self.baseline_w is not None:
            raise ValueError("curve and baseline_w belong to mode frequency")
        return self

    def args(self) -> dict[str, Any]:
        """The ``mode_request`` command's arguments (runtime/commands.py): everything but the source; on a
        depot ``evse`` names the EVSE (the scan hands the command to that EVSE only)."""
        out = self.model_dump(exclude={"source"}, exclude_none=True)
        if self.curve is not None:
            out["curve"] = [list(p) for p in self.curve]  # JSON's shape: a list of [hz, w]
        return out


def _json_object(payload: bytes) -> dict[str, Any]:
    if len(payload) > MAX_COMMAND_BYTES:
        raise ValueError(f"payload must be a JSON object of at most {MAX_COMMAND_BYTES} bytes")
    try:
        body = json.loads(payload)  # NaN/Infinity parse, and the model refuses them
    except RecursionError as exc:  # a retained message nested too deep would otherwise kill the task each time
        raise ValueError("payload is nested too deep") from exc
    if not isinstance(body, dict):
        raise ValueError("payload must be a JSON object")
    return body


def parse_mode_request(payload: bytes, source: str, evse: int | None = None) -> ModeRequest:
    """A mode request from a bus message (JSON object without ``source`` and ``evse``: the topic names the
    EVSE on a depot); ValueError says what is wrong."""
    body = _json_object(payload)
    for key in ("source", "evse"):
        if key in body:
            raise ValueError(f"{key} is set by the server" + (" (from the topic)" if key == "evse" else ""))
    try:
        return ModeRequest(source=source, evse=evse, **body)
    except ValidationError as exc:
        raise ValueError(
            "; ".join(f"{'.'.join(map(str, e['loc'])) or 'payload'}: {e['msg']}" for e in exc.errors())
        ) from None


def evse_arg(named: str | None, evses: Sequence[int], where: str) -> int | None:
    """The EVSE a command names (``named``: the n of ``evse/<n>/`` in a topic or ``evse.<n>.`` in a routing
    key, None when it names none) on a site with ``evses`` (empty: a single site, which names none);
    ValueError says what is wrong. The scan checks it again (runtime/commands.py)."""
    if not evses:
        if named is not None:
            raise ValueError("this site has one charger: its commands name no EVSE")
        return None
    if named is None:
        raise ValueError(f"a depot's per-EVSE commands name their EVSE: {where}")
    if not named.isdigit() or int(named) not in evses:
        raise ValueError(f"no EVSE {named!r} on this site (EVSEs {', '.join(map(str, evses))})")
    return int(named)


def parse_trip_reset(payload: bytes) -> None:
    """A trip reset from a bus message: an empty payload or an empty JSON object; ValueError otherwise."""
    if payload.strip() and _json_object(payload):
        raise ValueError("a trip reset takes no arguments (send {} or nothing)")


class InterfaceParams(Params):
    """What every local API interface's params share: the opt-in remote trip reset, the site's EVSEs, and
    whether this interface carries the connection limits."""

    trip_reset: bool = Field(False, description="allow remote trip reset on this interface (logged, rate-limited)")
    trip_reset_min_s: float = Field(60.0, ge=1, le=86_400, description="at most one trip reset per this many s")
    evses: list[Annotated[int, Field(ge=1, le=999)]] = Field(
        default_factory=list, max_length=200, description="EVSE ids served; filled from evses: ([] = single site)"
    )
    connection: ConnectionParams | None = Field(
        None, description="carry the connection's import/export limits (local.connection_*_w; one interface a site)"
    )


class Requests:
    """The way from one local API task to the scan: mode requests, their reversion, trip resets."""

    def __init__(
        self,
        cx: TaskContext,
        interface: str,
        params: InterfaceParams,
        on_reverted: Callable[[int | None], None] | None = None,
    ) -> None:
        self.cx = cx
        self.on_reverted = on_reverted  # told which EVSE a reversion handed back (Modbus shows its WSetEna 0)
        self.interface = interface  # modbus, mqtt, amqp: named in the log
        self.trip_reset = params.trip_reset
        self.trip_reset_min_s = params.trip_reset_min_s
        self._last_reset: float | None = None  # monotonic time of the last reset passed on
        self._reversion: dict[int | None, asyncio.Task[None]] = {}  # per EVSE (None: a single site)
        self.sent = 0  # mode requests the scan accepted
        self.refused = 0  # mode requests and resets the scan (or this task) refused

    async def mode(self, req: ModeRequest) -> tuple[bool, str]:
        """Send ``req`` to the scan; (accepted, reason) is its answer for the client."""
        ok, reason = await self.cx.command("mode_request", req.args(), by=req.source)
        if ok:
            self.sent += 1
            log.info("%s: mode request from %s accepted: %s", self.interface, req.source, req.args())
            self._cancel_reversion(req.evse)
            if req.mode != "local":  # remote or frequency: the EMS leads until it stops refreshing
                expiry_s = req.expiry_s if req.expiry_s is not None else NETWORK_EXPIRY_S
                deadline_us = self.cx.now_us + round(expiry_s * US)  # from the answer, not from the task's start
                self._reversion[req.evse] = asyncio.create_task(
                    self._revert(req.source, req.evse, expiry_s, deadline_us)
                )
        else:
            self.refused += 1
            log.warning("%s: mode request from %s refused by the scan: %s", self.interface, req.source, reason)
        return ok, reason

    async def _revert(self, source: str, evse: int | None, expiry_s: float, deadline_us: int) -> None:
        """No refresh by ``deadline_us`` of cycle clock: hand this EVSE back to local control."""
        await self.cx.sleep_until(deadline_us)
        self._reversion.pop(evse, None)  # this timer is done: the local request below must not cancel itself
        log.warning(
            "%s: no refresh from %s within %g s: handing back to local control", self.interface, source, expiry_s
        )
        ok, _ = await self.mode(ModeRequest(source=f"{source} (reversion)", mode="local", evse=evse))
        if ok and self.on_reverted is not None:
            self.on_reverted(evse)

    def _cancel_reversion(self, evse: int | None) -> None:
        job = self._reversion.pop(evse, None)
        if job is not None and job is not asyncio.current_task():
            job.cancel()

    async def reset_trip(self, by: str) -> tuple[bool, str]:
        """A remote trip reset: only where this interface opted in, at most once per ``trip_reset_min_s``."""
        if not self.trip_reset:
            self.refused += 1
            log.warning("%s: trip reset from %s refused: not enabled on this interface", self.interface, by)
            return False, f"trip reset is not enabled on {self.interface} (params trip_reset)"
        now = time.monotonic()
        if self._last_reset is not None and now - self._last_reset < self.trip_reset_min_s:
            self.refused += 1
            log.warning("%s: trip reset from %s refused: rate limit", self.interface, by)
            return False, f"rate limit: one trip reset per {self.trip_reset_min_s:g} s"
        self._last_reset = now
        ok, reason = await self.cx.command("reset_trip", {}, by=by)
        log.warning("%s: trip reset asked by %s: %s", self.interface, by, "accepted" if ok else f"refused: {reason}")
        if not ok:
            self.refused += 1
        return ok, reason

    async def close(self) -> None:
        """Stop the reversion timers (bounded)."""
        jobs, self._reversion = list(self._reversion.values()), {}
        for job in jobs:
            job.cancel()
        if jobs:
            await asyncio.wait(jobs, timeout=2)
