"""The grid connection's import and export limits, set from the local API (docs/local-api.md "Connection").

A site's EMS may lower the connection the depot's EVSEs share (the building needs its room, a tariff's
peak window): a Modbus write of 64902 ``ImpLim``/``ExpLim``, or ``set/connection`` on MQTT / AMQP. The
limits are published as the shared tags ``local.connection_import_w`` / ``local.connection_export_w`` (W,
magnitudes), which the allocator takes as external limits: the lowest good one wins, and none can raise
the site file's rating.

Lifetime (docs/design.md "Limits from outside"): a limit holds ``expiry_s`` of the cycle clock after the
last accepted write (``LimRvrtTms`` on Modbus, ``expiry_s`` on the buses) and then expires back to the
site file's rating, as a SunSpec control reverts after its reversion time; "no limit from the local API"
is published as the rating, never as infinity. An EMS that keeps a limit therefore refreshes it, and one
that is gone leaves the site at its rating, never above. A lost task process leaves the tags to go stale
(``STALE_S``) and the allocator back to the site file's rating. Expiry counts on the cycle clock (an
offline duration, docs/design.md "Clocks"), like the mode requests' reversion, so it stretches with
``--speed``.

Only one task of a site owns the tags: the local API interface whose params carry ``connection:``
(two would be two owners of one tag, which the site build refuses).
"""

from __future__ import annotations

import logging
import math

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from runtime.api import Params
from runtime.tags import US, Direction, TagSpec, TagType
from runtime.tasks.localapi.linkstate import STALE_S

log = logging.getLogger("v2g_plc.localapi.connection")

IMPORT_TAG = "local.connection_import_w"
EXPORT_TAG = "local.connection_export_w"
MAX_W = 1e8  # the allocator's bound on any limit (programs/allocator.py MAX_W)
MAX_EXPIRY_S = 86_400.0


class ConnectionParams(Params):
    """``connection:`` in a local API task's params: the site file's rating and the limits' lifetime."""

    import_limit_w: float = Field(ge=0, le=MAX_W, description="the service rating, import (the allocator's, W)")
    export_limit_w: float = Field(ge=0, le=MAX_W, description="export allowed by the interconnection agreement (W)")
    expiry_s: float = Field(
        300.0, ge=1, le=MAX_EXPIRY_S, description="a limit not written again within this many s goes back to the rating"
    )


def connection_specs() -> list[TagSpec]:
    S = Direction.SHARED
    return [
        TagSpec(IMPORT_TAG, TagType.FLOAT, "W", S, None, STALE_S, "import limit from the local API; the rating: none"),
        TagSpec(EXPORT_TAG, TagType.FLOAT, "W", S, None, STALE_S, "export limit from the local API; the rating: none"),
    ]


class ConnectionRequest(BaseModel):
    """A bus message on ``set/connection``: either limit or both, W magnitudes, and optionally its expiry."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    import_w: float | None = Field(None, ge=0, le=MAX_W)
    export_w: float | None = Field(None, ge=0, le=MAX_W)
    expiry_s: float | None = Field(None, ge=1, le=MAX_EXPIRY_S)

    @model_validator(mode="after")
    def _something(self) -> ConnectionRequest:
        if self.import_w is None and self.export_w is None:
            raise ValueError("give import_w, export_w or both")
        return self


def parse_connection_request(payload: bytes) -> ConnectionRequest:
    """A connection request from a bus message; ValueError says what is wrong."""
    from runtime.tasks.localapi.requests import _json_object

    try:
        return ConnectionRequest(**_json_object(payload))
    except ValidationError as exc:
        raise ValueError(
            "; ".join(f"{'.'.join(map(str, e['loc'])) or 'payload'}: {e['msg']}" for e in exc.errors())
        ) from None
    except TypeError as exc:  # a key that is not a string cannot be a field
        raise ValueError(str(exc)) from None


class ConnectionLimit:
    """The limits in force from the local API, their range (0..the rating) and their expiry."""

    def __init__(self, params: ConnectionParams) -> None:
        self.rating = (params.import_limit_w, params.export_limit_w)
        self.default_expiry_s = params.expiry_s
        self.expiry_s = params.expiry_s  # of the limits in force (the last write's)
        self.import_w, self.export_w = self.rating
        self.deadline_us: int | None = None  # cycle clock: when the limits go back to the rating

    def check(self, import_w: float | None, export_w: float | None, expiry_s: float | None) -> None:
        """ValueError unless each given value is finite and in range (the rating bounds the limits)."""
        for what, v, hi in (("import_w", import_w, self.rating[0]), ("export_w", export_w, self.rating[1])):
            if v is not None and not (math.isfinite(v) and 0 <= v <= hi):
                raise ValueError(f"{what} {v:g} outside 0..{hi:g} W (the site file's rating)")
        if expiry_s is not None and not (math.isfinite(expiry_s) and 1 <= expiry_s <= MAX_EXPIRY_S):
            raise ValueError(f"expiry_s {expiry_s:g} outside 1..{MAX_EXPIRY_S:g} s")

    def set(
        self,
        now_us: int,
        by: str,
        import_w: float | None = None,
        export_w: float | None = None,
        expiry_s: float | None = None,
    ) -> None:
        """Apply a checked write: the given limits change, both hold ``expiry_s`` from now (a refresh)."""
        self.check(import_w, export_w, expiry_s)
        if import_w is not None:
            self.import_w = float(import_w)
        if export_w is not None:
            self.export_w = float(export_w)
        if expiry_s is not None:
            self.expiry_s = float(expiry_s)
        self.deadline_us = now_us + round(self.expiry_s * US)
        log.info(
            "connection limits from %s: import %.0f W, export %.0f W for %g s",
            by,
            self.import_w,
            self.export_w,
            self.expiry_s,
        )

    def apply(self, payload: bytes, now_us: int, by: str) -> None:
        """A bus message on ``set/connection``, checked and applied; ValueError says what is wrong."""
        req = parse_connection_request(payload)
        self.set(now_us, by, req.import_w, req.export_w, req.expiry_s)

    def values(self, now_us: int) -> dict[str, float]:
        """The tags to publish now; a limit past its expiry goes back to the rating here (logged once)."""
        if self.deadline_us is not None and now_us >= self.deadline_us:
            self.deadline_us = None
            if (self.import_w, self.export_w) != self.rating:
                log.warning(
                    "connection limits not refreshed within %g s: back to the rating (%.0f / %.0f W)",
                    self.expiry_s,
                    *self.rating,
                )
            self.import_w, self.export_w = self.rating
            self.expiry_s = self.default_expiry_s
        return {IMPORT_TAG: self.import_w, EXPORT_TAG: self.export_w}
