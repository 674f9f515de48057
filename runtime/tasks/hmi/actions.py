"""Operator actions from the HMI's forms, turned into the scan's typed commands (runtime/commands.py).

The scan checks every command again (allowlist, types, ranges, commissioning); this module only gives the
operator a clear error before asking, and fits a forced value to the tag's type as the image shows it."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from runtime.commands import MAX_EXPIRY_S, MAX_SETPOINT_W
from runtime.tags import Image

ACTIONS = ("reset_trip", "mode", "force", "unforce")


class ActionError(ValueError):
    """A form the HMI will not send; ``str()`` is shown to the operator."""


def _finite(body: Mapping[str, Any], key: str, lo: float, hi: float) -> float:
    v = body.get(key)
    if isinstance(v, str):
        try:
            v = float(v)
        except ValueError:
            raise ActionError(f"{key} must be a number") from None
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        raise ActionError(f"{key} must be a finite number")
    if not lo <= v <= hi:
        raise ActionError(f"{key} {v:g} outside [{lo:g}, {hi:g}]")
    return float(v)


def _forced_value(image: Image, tag: str, raw: Any) -> Any:
    """The value as the tag's type wants it, judged by the value the image holds now."""
    if tag not in image:
        raise ActionError(f"unknown tag {tag!r}")
    now = image[tag].value
    if isinstance(now, bool):
        if isinstance(raw, bool):
            return raw
        if isinstance(raw, str) and raw.strip().lower() in ("true", "false", "1", "0", "on", "off"):
            return raw.strip().lower() in ("true", "1", "on")
        raise ActionError(f"{tag} takes true or false")
    if isinstance(now, (int, float)):
        v = _finite({"value": raw}, "value", -1e12, 1e12)
        return int(v) if isinstance(now, int) and v.is_integer() else v
    if isinstance(now, str):
        return str(raw)
    raise ActionError(f"{tag} holds a {type(now).__name__}: not forceable from the HMI")


def command_for(body: Any, image: Image, default_expiry_s: float) -> tuple[str, dict[str, Any], str]:
    """(kind, args, what the confirmation said) for one action form; ActionError otherwise."""
    if not isinstance(body, Mapping):
        raise ActionError("an action is a JSON object")
    action = body.get("action")
    if action == "reset_trip":
        return "reset_trip", {}, "reset the latched trip"
    if action == "mode":
        mode = body.get("mode")
        if mode == "local":
            return "mode_request", {"mode": "local"}, "hand authority back to the local plan"
        if mode != "remote":
            raise ActionError("mode must be remote or local")
        w = _finite(body, "setpoint_w", -MAX_SETPOINT_W, MAX_SETPOINT_W)
        expiry = _finite(body, "expiry_s", 1.0, MAX_EXPIRY_S) if body.get("expiry_s") not in (None, "") else None
        expiry = default_expiry_s if expiry is None else expiry
        what = "charge" if w > 0 else "discharge" if w < 0 else "hold 0 W"
        return (
            "mode_request",
            {"mode": "remote", "setpoint_w": w, "expiry_s": expiry},
            f"remote mode: {what} {abs(w):g} W for {expiry:g} s",
        )
    if action in ("force", "unforce"):
        tag = body.get("tag")
        if not isinstance(tag, str) or not tag:
            raise ActionError("tag must be a tag name")
        if action == "unforce":
            return "unforce", {"tag": tag}, f"release the force on {tag}"
        value = _forced_value(image, tag, body.get("value"))
        return "force", {"tag": tag, "value": value}, f"force {tag} to {value!r}"
    raise ActionError(f"action must be one of {', '.join(ACTIONS)}")
