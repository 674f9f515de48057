"""Mode requests from the local API (Modbus, MQTT, AMQP): one typed request, one place they go.

The site's mode authority (docs/design.md "Who may ask for what") takes one ``mode.request`` input:
source, mode, signed set point, expiry. Every interface of the local API validates what a client sent
into a :class:`ModeRequest` and hands it to :func:`submit_mode_request`. The typed command channel to
the scan exists (``TaskContext.command("mode_request", ...)``, checked again by the scan with the same
rules, runtime/commands.py), but what a mode request does there is the mode authority's to decide, which
is not built: so today the function only records the request (and logs it); nothing reaches the scan and
no output moves. Once the mode authority is in, this function is the one place that sends it.
"""

from __future__ import annotations

import json
import logging
from collections import deque
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

log = logging.getLogger("v2g_plc.localapi")

MAX_COMMAND_BYTES = 4096
MAX_POWER_W = 1_000_000.0  # a sanity bound on any set point a client may send (1 MW); the site's rating is tighter
MAX_EXPIRY_S = 86_400.0


class ModeRequest(BaseModel):
    """What a local client asks the mode machine for. Power in the project's convention: positive into
    the EV battery (charging), negative out of it (discharging)."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)  # NaN/inf: "a finite number"

    source: str = Field(min_length=1, max_length=200, description="interface and client, e.g. modbus:192.0.2.50")
    mode: Literal["remote", "local"] = Field(description="remote: follow setpoint_w; local: hand back to the plan")
    setpoint_w: float | None = Field(None, ge=-MAX_POWER_W, le=MAX_POWER_W, description="signed W (remote only)")
    expiry_s: float | None = Field(
        None, gt=0, le=MAX_EXPIRY_S, description="reversion: no refresh within this -> local"
    )
    limit_pct: float | None = Field(None, ge=0, le=100, description="cap on |power| as % of the rating")

    @model_validator(mode="after")
    def _remote_needs_setpoint(self) -> ModeRequest:
        if self.mode == "remote" and self.setpoint_w is None:
            raise ValueError("mode remote needs setpoint_w")
        return self


def parse_mode_request(payload: bytes, source: str) -> ModeRequest:
    """A mode request from a bus message (JSON object without ``source``); ValueError says what is wrong."""
    if len(payload) > MAX_COMMAND_BYTES:
        raise ValueError(f"payload must be a JSON object of at most {MAX_COMMAND_BYTES} bytes")
    try:
        body = json.loads(payload)  # NaN/Infinity parse, and the model refuses them
    except RecursionError as exc:  # a retained message nested too deep would otherwise kill the task each time
        raise ValueError("payload is nested too deep") from exc
    if not isinstance(body, dict):
        raise ValueError("payload must be a JSON object")
    if "source" in body:
        raise ValueError("source is set by the server")
    try:
        return ModeRequest(source=source, **body)
    except ValidationError as exc:
        raise ValueError(
            "; ".join(f"{'.'.join(map(str, e['loc'])) or 'payload'}: {e['msg']}" for e in exc.errors())
        ) from None


RECORDED: deque[ModeRequest] = deque(maxlen=1000)
"""The requests submitted since the task process started (newest last, bounded), until the channel exists."""


def submit_mode_request(req: ModeRequest) -> None:
    """Submit a validated request to the mode authority. For now: recorded and logged, not applied."""
    RECORDED.append(req)
    log.info(
        "mode request from %s recorded (not applied: the scan's mode authority is not built yet): %s",
        req.source,
        req.model_dump(exclude_none=True),
    )
