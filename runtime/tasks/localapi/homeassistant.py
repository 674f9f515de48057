"""Home Assistant MQTT discovery: the site as one device with sensors and a power-request control.

Home Assistant reads ``<discovery prefix>/<component>/<node>/<object>/config`` (retained JSON) and builds
entities from it (Home Assistant docs, "MQTT Discovery"). Every entity is available only while the site
is online *and* its tag is good, so a bad measurement shows as unavailable, never as a stale number.
The controls publish mode requests on ``set/mode`` (sent to the scan as ``mode_request`` commands); the
trip reset button exists only where the interface opted in to remote trip reset.
"""

from __future__ import annotations

import json
from typing import Any

# tag -> (component, device_class, unit, name, scale); scale turns the tag's unit into the shown one
SENSORS: dict[str, tuple[str, str | None, str | None, str, float]] = {
    "inverter.power": ("sensor", "power", "W", "Power (+ charging)", 1.0),
    "inverter.setpoint": ("sensor", "power", "W", "Set point", 1.0),
    "plan.power": ("sensor", "power", "W", "Planned power", 1.0),
    "safety.limit_charge": ("sensor", "power", "W", "Charge limit", 1.0),
    "safety.limit_discharge": ("sensor", "power", "W", "Discharge limit", 1.0),
    "grid.voltage": ("sensor", "voltage", "V", "Grid voltage", 1.0),
    "grid.frequency": ("sensor", "frequency", "Hz", "Grid frequency", 1.0),
    "ev.soc": ("sensor", "battery", "%", "EV state of charge", 100.0),
    "mode.state": ("sensor", None, None, "Mode", 1.0),
    "mode.reason": ("sensor", None, None, "Mode reason", 1.0),
    "safety.trip": ("sensor", None, None, "Trip", 1.0),
    "safety.reason": ("sensor", None, None, "Safety reason", 1.0),
    "ev.connected": ("binary_sensor", "plug", None, "EV connected", 1.0),
    "inverter.enable": ("binary_sensor", "power", None, "Permit", 1.0),
    "safety.cessation": ("binary_sensor", "problem", None, "Momentary cessation", 1.0),
    "meter.power": ("sensor", "power", "W", "Site import", 1.0),
    "meter.voltage": ("sensor", "voltage", "V", "Site voltage", 1.0),
    "meter.frequency": ("sensor", "frequency", "Hz", "Site frequency", 1.0),
    "connection.building_w": ("sensor", "power", "W", "Building load", 1.0),
    "local.connection_import_w": ("sensor", "power", "W", "Import limit (local API)", 1.0),
    "local.connection_export_w": ("sensor", "power", "W", "Export limit (local API)", 1.0),
    "fleet.status": ("sensor", None, None, "Fleet plan", 1.0),
}


def discovery(
    base: str,
    node: str,
    tags: list[str],
    prefix: str,
    site_name: str,
    max_w: float | None,
    trip_reset: bool = False,
    controls: bool = True,
    availability: str | None = None,
) -> list[tuple[str, dict[str, Any]]]:
    """(topic, config) of every entity for the public ``tags`` plus the controls (a depot's site has
    none: its set points are per EVSE). ``availability``: the site's topic when ``base`` is an EVSE's."""
    device = {"identifiers": [f"v2g_plc_{node}"], "name": f"V2G site {site_name}", "manufacturer": "v2g-plc"}
    online = {"topic": availability or f"{base}/availability"}
    out: list[tuple[str, dict[str, Any]]] = []
    for tag in tags:
        if tag not in SENSORS:
            continue
        component, device_class, unit, name, scale = SENSORS[tag]
        obj = tag.replace(".", "_")
        good = {
            "topic": f"{base}/state/{tag}",
            "value_template": "{{ 'online' if value_json.quality == 'good' else 'offline' }}",
        }
        cfg: dict[str, Any] = {
            "name": name,
            "unique_id": f"v2g_plc_{node}_{obj}",
            "state_topic": f"{base}/state/{tag}",
            "availability": [online, good],
            "availability_mode": "all",
            "device": device,
        }
        if component == "binary_sensor":
            cfg["value_template"] = "{{ 'ON' if value_json.value else 'OFF' }}"
        else:
            cfg["value_template"] = (
                "{{ value_json.value }}" if scale == 1.0 else f"{{{{ (value_json.value * {scale:g}) | round(1) }}}}"
            )
        if device_class:
            cfg["device_class"] = device_class
        if unit:
            cfg["unit_of_measurement"] = unit
            cfg["state_class"] = "measurement"
        out.append((f"{prefix}/{component}/{node}/{obj}/config", cfg))
    if max_w and controls:
        out.append(
            (
                f"{prefix}/number/{node}/power_request/config",
                {
                    "name": "Power request (+ charging, remote mode)",
                    "unique_id": f"v2g_plc_{node}_power_request",
                    "command_topic": f"{base}/set/mode",
                    "command_template": '{"mode": "remote", "setpoint_w": {{ value }}}',
                    "min": -max_w,
                    "max": max_w,
                    "step": 100,
                    "unit_of_measurement": "W",
                    "mode": "box",
                    "availability": [online],
                    "device": device,
                },
            )
        )
    if not controls:
        return out
    out.append(
        (
            f"{prefix}/button/{node}/local_control/config",
            {
                "name": "Back to local control",
                "unique_id": f"v2g_plc_{node}_local_control",
                "command_topic": f"{base}/set/mode",
                "payload_press": json.dumps({"mode": "local"}),
                "availability": [online],
                "device": device,
            },
        )
    )
    if trip_reset:
        out.append(
            (
                f"{prefix}/button/{node}/trip_reset/config",
                {
                    "name": "Reset trip",
                    "unique_id": f"v2g_plc_{node}_trip_reset",
                    "command_topic": f"{base}/set/trip_reset",
                    "payload_press": "{}",
                    "availability": [online],
                    "device": device,
                },
            )
        )
    return out
