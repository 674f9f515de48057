"""OCPP 2.1 operation modes as the site's mode requests: pure, no I/O.

The CSMS's operation mode in force (smart.InForce) becomes one ``mode_request`` command to the scan
(docs/design.md "Who may ask for what"; the mode authority decides, safety has the last word):

- CentralSetpoint: mode ``remote`` with the signed set point (already clamped to the CSMS's own limits);
- Idle: mode ``remote`` with 0 W, which is what Idle means (no power either way);
- CentralFrequency, LocalFrequency: mode ``frequency`` with the curve ``[[hz, w], ...]`` and the baseline
  (``v2xBaseline``, else the set point, else 0 W), computed in the scan every cycle; a frequency period's
  ``v2xSignalWattCurve`` (aFRR, 2.1 Q08) goes with it as ``signal_curve`` ``[[signal, w], ...]``, which the scan
  applies to the AFRR signal the station publishes (``ocpp.afrr_signal``); with both, their powers add up
  on the baseline (2.1 schemas: v2xBaseline "on top of which values from v2xFreqWattCurve and
  v2xSignalWattCurve are added");
- ChargingOnly, ExternalLimits, ExternalSetpoint, LocalLoadBalancing, or no 2.1 profile: mode ``local``
  (the CSMS hands authority back; its limits stay in force as ``ocpp.limit_charge``/``ocpp.limit_discharge``,
  ChargingOnly's with 0 W discharge, and ``ocpp.operation_mode`` tells the local EMS whether it may steer).

Every request but ``local`` expires when its period ends (``expiry_s``, at most a day), so a CSMS that goes
away leaves no set point behind; the station re-sends it before half of it has run.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from runtime.tasks.ocpp.smart import FREQUENCY_MODES, InForce

MAX_EXPIRY_S = 86_400.0  # mode_request: expiry_s in (0, 86400]
LOCAL: dict[str, Any] = {"mode": "local"}


def mode_request(inf: InForce, now: dt.datetime) -> dict[str, Any]:
    """The mode request for what is in force at ``now`` (args of the ``mode_request`` command)."""
    expiry = MAX_EXPIRY_S
    if inf.until is not None:
        expiry = min(MAX_EXPIRY_S, max(1.0, (inf.until - now).total_seconds()))
    if inf.mode == "CentralSetpoint" and inf.setpoint_w is not None:
        return {"mode": "remote", "setpoint_w": inf.setpoint_w, "expiry_s": expiry}
    if inf.mode == "Idle":
        return {"mode": "remote", "setpoint_w": 0.0, "expiry_s": expiry}
    if inf.mode in FREQUENCY_MODES and (inf.curve or inf.signal_curve):
        base = inf.baseline_w if inf.baseline_w is not None else inf.setpoint_w or 0.0
        out: dict[str, Any] = {"mode": "frequency", "baseline_w": base, "expiry_s": expiry}
        if inf.curve:
            out["curve"] = [[hz, w] for hz, w in inf.curve]
        if inf.signal_curve:
            out["signal_curve"] = [[int(s), w] for s, w in inf.signal_curve]
        return out
    return dict(LOCAL)


def same(a: dict[str, Any] | None, b: dict[str, Any]) -> bool:
    """The same request, whatever its remaining time."""
    if a is None:
        return False
    return {k: v for k, v in a.items() if k != "expiry_s"} == {k: v for k, v in b.items() if k != "expiry_s"}
