"""What the HMI pages show, as JSON: pure functions of the published image (and of what the HMI kept from
earlier images and events). No I/O and no clock: the cycle time comes in as an argument."""

from __future__ import annotations

import collections
import datetime as dt
import json
import math
from collections.abc import Iterable, Mapping
from typing import Any

from runtime.tags import US, Image, Quality

IDLE_W = 0.5  # |W| below this reads as idle: -0.0 and rounding noise are neither charging nor discharging


def direction(w: float | None) -> str:
    """The sign convention spelled out (README: positive into the EV battery)."""
    if w is None or not math.isfinite(w):
        return "unknown"
    if w > IDLE_W:
        return "charging"
    if w < -IDLE_W:
        return "discharging"
    return "idle"


def _jsonable(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return None  # JSON has no NaN/Infinity; such a value is bad anyway (threat model rule 4)
    if isinstance(v, (str, int, float, bool)) or v is None:
        return v
    try:
        json.dumps(v)
        return v
    except (TypeError, ValueError):
        return repr(v)


def tag(image: Image, name: str, now_us: int, forced: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """One tag as the pages show it: value, quality, age on the cycle clock, forced or not. A tag the
    image lacks is ``missing`` (a page for a site without it)."""
    if name not in image:
        return {"name": name, "value": None, "quality": "missing", "age_s": None, "forced": False}
    tv = image[name]
    return {
        "name": name,
        "value": _jsonable(tv.value),
        "quality": tv.quality.value if isinstance(tv.quality, Quality) else str(tv.quality),
        "age_s": round(max(0, now_us - tv.t_us) / US, 3),
        "forced": bool(forced and name in forced),
    }


def _num(image: Image, name: str) -> float | None:
    v = image.value(name) if name in image else None
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) else None


def comms_health(image: Image, now_us: int) -> list[dict[str, Any]]:
    """Per device prefix (``inverter``, ``meter``, ...): how many of its tags are good, and which are not.
    Derived from tag qualities: a device that stopped answering turns its tags stale or bad."""
    groups: dict[str, list[str]] = collections.defaultdict(list)
    for name in image:
        prefix = name.split(".", 1)[0]
        if prefix in ("runtime", "mode", "dispatch", "safety"):
            continue  # the scan's own tags: always good while it runs
        groups[prefix].append(name)
    out = []
    for prefix in sorted(groups):
        names = groups[prefix]
        not_good = sorted(n for n in names if image[n].quality is not Quality.GOOD)
        out.append({"device": prefix, "tags": len(names), "good": len(names) - len(not_good), "not_good": not_good})
    return out


def overview(image: Image, now_us: int, calendar: dt.datetime, forces: Mapping[str, Any]) -> dict[str, Any]:
    """The overview page: what the site does now, and why."""

    def t(name: str) -> dict[str, Any]:
        return tag(image, name, now_us, forces)

    power, setpoint = _num(image, "inverter.power"), _num(image, "inverter.setpoint")
    return {
        "time": calendar.isoformat(),
        "cycle_s": round(now_us / US, 3),
        "mode": t("mode.state"),
        "mode_reason": t("mode.reason"),
        "trip": t("safety.trip"),
        "trip_reason": t("safety.reason"),
        "cessation": t("safety.cessation"),
        "grid_voltage": t("grid.voltage"),
        "grid_frequency": t("grid.frequency"),
        "power": {**t("inverter.power"), "direction": direction(power)},
        "setpoint": {**t("inverter.setpoint"), "direction": direction(setpoint)},
        "enable": t("inverter.enable"),
        "soc": t("ev.soc"),
        "soc_target": t("plan.soc_target"),
        "reserve_soc": t("plan.reserve_soc"),
        "ev_connected": t("ev.connected"),
        "limits": [
            t(n)
            for n in (
                "safety.limit_charge",
                "safety.limit_discharge",
                "dispatch.limit",
                "ocpp.limit_charge",
                "ocpp.limit_discharge",
            )
            if n in image
        ],
        "lateness": t("runtime.lateness"),
        "cycle_time": t("runtime.cycle_time"),
        "overruns": t("runtime.overruns"),
        "task_process_alive": t("runtime.task_process_alive"),
        "revision": t("runtime.revision"),  # the running site file's revision (docs/online-change.md)
        "comms": comms_health(image, now_us),
        "forces": [{"tag": k, "value": _jsonable(v)} for k, v in sorted(forces.items())],
    }


def tags(image: Image, now_us: int, forces: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Every tag of the image, sorted by name, values that are large (price curves, plans) cut short."""
    out = []
    for name in sorted(image):
        row = tag(image, name, now_us, forces)
        if isinstance(row["value"], (list, dict)):
            text = json.dumps(row["value"])
            row["value"] = text if len(text) <= 120 else text[:117] + "..."
        out.append(row)
    return out


class History:
    """What happened so far, for the plan chart: one sample per ``every_us`` of cycle clock, the latest
    ``keep`` of them."""

    def __init__(self, every_us: int, keep: int) -> None:
        self.every_us = every_us
        self.samples: collections.deque[dict[str, Any]] = collections.deque(maxlen=keep)
        self._last_us: int | None = None

    def feed(self, image: Image, now_us: int, calendar: dt.datetime) -> None:
        if self._last_us is not None and now_us - self._last_us < self.every_us:
            return
        self._last_us = now_us
        self.samples.append(
            {
                "t": calendar.isoformat(),
                "power_w": _num(image, "inverter.power"),
                "setpoint_w": _num(image, "inverter.setpoint"),
                "soc": _num(image, "ev.soc"),
            }
        )


def plan(image: Image, history: Iterable[Mapping[str, Any]], calendar: dt.datetime) -> dict[str, Any]:
    """The plan chart: prices, planned power and SoC over the horizon (``plan.json``; the price curve
    alone while there is no plan), and the history beside it."""
    raw = image.value("plan.json") if "plan.json" in image else None
    intervals: list[dict[str, Any]] = []
    status, reason = "no plan", ""
    if isinstance(raw, Mapping) and isinstance(raw.get("intervals"), list):
        status, reason = str(raw.get("status", "")), str(raw.get("reason", ""))
        for iv in raw["intervals"]:
            if isinstance(iv, Mapping):
                intervals.append(
                    {
                        "start": str(iv.get("start", "")),
                        "end": str(iv.get("end", "")),
                        "price": _jsonable(iv.get("price")),
                        "power_w": _jsonable(iv.get("power_w")),
                        "soc_end": _jsonable(iv.get("soc_end")),
                    }
                )
    else:
        prices = image.value("prices.day_ahead") if "prices.day_ahead" in image else None
        for row in prices if isinstance(prices, list) else []:
            if isinstance(row, Mapping):
                intervals.append(
                    {
                        "start": str(row.get("start", "")),
                        "end": str(row.get("end", "")),
                        "price": _jsonable(row.get("price")),
                    }
                )
    return {
        "now": calendar.isoformat(),
        "status": status,
        "reason": reason,
        "soc_start": _jsonable(raw.get("soc_start")) if isinstance(raw, Mapping) else None,
        "reserve_soc": _num(image, "plan.reserve_soc"),
        "intervals": intervals,
        "history": list(history),
    }


EVENT_FIELDS = ("seq", "k", "t", "kind", "source", "message", "data")


def event_row(e: Mapping[str, Any], calendar: dt.datetime | None) -> dict[str, Any]:
    """An event of the scan's stream as the log page shows it (a gap says which numbers were lost)."""
    row = {f: _jsonable(e.get(f)) for f in EVENT_FIELDS if f in e}
    if e.get("kind") == "gap":
        row.setdefault("source", "hmi")
    if calendar is not None:
        row["time"] = calendar.isoformat()
    return row


def filter_events(
    rows: Iterable[Mapping[str, Any]], kind: str = "", source: str = "", text: str = "", limit: int = 500
) -> list[Mapping[str, Any]]:
    """The newest ``limit`` events matching every filter given (kind and source exact, text anywhere in
    the message, case-insensitive), newest first."""
    text = text.lower()
    out = []
    for r in reversed(list(rows)):
        if kind and r.get("kind") != kind:
            continue
        if source and r.get("source") != source:
            continue
        if text and text not in str(r.get("message", "")).lower():
            continue
        out.append(r)
        if len(out) >= limit:
            break
    return out


def forces_in_force(image: Image, asked: Mapping[str, Any]) -> dict[str, Any]:
    """Which tags are forced comes from the image (its ``forced`` flag), so a force set before the HMI
    subscribed shows too; the value shown is the one the operator asked for when a ``force`` event
    told it (a forced output's image value is what safety let through), else the image's."""
    return {n: asked.get(n, image[n].value) for n in image if image[n].forced}


def forces_from_event(forces: dict[str, Any], e: Mapping[str, Any]) -> None:
    """Keep the forces in force up to date from the stream's ``force`` events (the engine says
    ``{tag, value}`` when it forces and ``{tag}`` alone when it releases)."""
    if e.get("kind") != "force":
        return
    data = e.get("data")
    if not isinstance(data, Mapping) or not isinstance(data.get("tag"), str):
        return
    if "value" in data:
        forces[data["tag"]] = data["value"]
    else:
        forces.pop(data["tag"], None)
