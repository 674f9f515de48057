"""IEEE 1547-2018 numbers: default trip settings, their allowed ranges, ride-through and cessation bands.

Every number here is copied from the standard's tables as restated in docs/reference.md#ieee-1547-2018 (sources:
EPRI OpenDER parameter files and ride-through criteria ``rt_crit.py``, Sandia svp IEEE 1547.1 scripts,
UL 1741 SB test models). Kept in one module so a reviewer can check them against the standard in one
place; nothing here has state or depends on the runtime.
"""

from __future__ import annotations

import math
from typing import Literal

Category = Literal["I", "II", "III"]
INF = math.inf

# (threshold, clearing time s) defaults and ((threshold lo, hi), (time lo, hi)) ranges.
# IEEE 1547-2018 voltage trip settings per category, per unit (clause 6.4.1; docs/reference.md#voltage-trip-settings).
VOLTAGE_DEFAULTS: dict[str, dict[str, tuple[float, float]]] = {
    "I": {"ov2": (1.20, 0.16), "ov1": (1.10, 2.0), "uv1": (0.70, 2.0), "uv2": (0.45, 0.16)},
    "II": {"ov2": (1.20, 0.16), "ov1": (1.10, 2.0), "uv1": (0.70, 10.0), "uv2": (0.45, 0.16)},
    "III": {"ov2": (1.20, 0.16), "ov1": (1.10, 13.0), "uv1": (0.88, 21.0), "uv2": (0.50, 2.0)},
}
VOLTAGE_RANGES: dict[str, dict[str, tuple[tuple[float, float], tuple[float, float]]]] = {
    # OV2 is fixed at 1.20 pu / 0.16 s in every category (docs/reference.md#voltage-trip-settings).
    "I": {
        "ov2": ((1.20, 1.20), (0.16, 0.16)),
        "ov1": ((1.10, 1.20), (1.0, 13.0)),
        "uv1": ((0.0, 0.88), (2.0, 21.0)),
        "uv2": ((0.0, 0.50), (0.16, 2.0)),
    },
    "II": {
        "ov2": ((1.20, 1.20), (0.16, 0.16)),
        "ov1": ((1.10, 1.20), (1.0, 13.0)),
        "uv1": ((0.0, 0.88), (2.0, 21.0)),
        "uv2": ((0.0, 0.50), (0.16, 2.0)),
    },
    "III": {
        "ov2": ((1.20, 1.20), (0.16, 0.16)),
        "ov1": ((1.10, 1.20), (1.0, 13.0)),
        "uv1": ((0.0, 0.88), (21.0, 50.0)),
        "uv2": ((0.0, 0.50), (2.0, 21.0)),
    },
}

# IEEE 1547-2018 frequency trip settings, all categories, 60 Hz systems (docs/reference.md#frequency-trip-settings).
FREQUENCY_DEFAULTS: dict[str, tuple[float, float]] = {
    "of2": (62.0, 0.16),
    "of1": (61.2, 300.0),
    "uf1": (58.5, 300.0),
    "uf2": (56.5, 0.16),
}
FREQUENCY_RANGES: dict[str, tuple[tuple[float, float], tuple[float, float]]] = {
    "of2": ((61.8, 66.0), (0.16, 1000.0)),
    "of1": ((61.0, 66.0), (180.0, 1000.0)),
    "uf1": ((50.0, 59.0), (180.0, 1000.0)),
    "uf2": ((50.0, 57.0), (0.16, 1000.0)),
}
OVER = ("ov2", "ov1", "of2", "of1")  # trips on a value at or above the threshold

# IEEE 1547-2018 continuous operation region (docs/reference.md#continuous-operation).
V_CONTINUOUS = (0.88, 1.10)
F_CONTINUOUS_60 = (58.8, 61.2)
# IEEE 1547-2018 frequency ride-through: 299 s down to 57.0 Hz, up to 61.8 Hz (docs/reference.md#frequency).
F_RIDE_THROUGH_60 = (57.0, 61.8)
F_RIDE_THROUGH_S = 299.0
# IEEE 1547-2018 ROCOF ride-through, Hz/s, Categories I / II / III (docs/reference.md#rocof).
ROCOF_RIDE_THROUGH = {"I": 0.5, "II": 2.0, "III": 3.0}

# IEEE 1547-2018 clause 4.10 enter service: window, delay, ramp as (default, range) (docs/reference.md#enter-service).
ES_V_LOW = (0.917, (0.88, 0.95))
ES_V_HIGH = (1.05, (1.05, 1.06))
ES_F_LOW_60 = (59.5, (59.0, 59.9))
ES_F_HIGH_60 = (60.1, (60.1, 61.0))
ES_DELAY_S = (300.0, (0.0, 600.0))
ES_RAMP_S = (300.0, (1.0, 1000.0))

# IEEE 1547-2018 clause 8.1 islanding: cease to energize and trip within 2 s (docs/reference.md#islanding).
ISLANDING_CLEAR_S = 2.0


def cessation(category: Category, v_pu: float) -> bool:
    """True where the voltage ride-through table says "cease to energize" or "momentary cessation".

    Category III requires momentary cessation above 1.10 pu and below 0.50 pu; Categories I and II cease
    to energize above 1.20 pu, and below 0.50 pu (Cat I) or 0.30 pu (Cat II). Source: docs/reference.md
    voltage ride-through table (EPRI OpenDER rt_crit.py, UL 1741 SB test models).
    """
    if category == "III":
        return v_pu > 1.10 or v_pu < 0.50
    if v_pu > 1.20:
        return True
    return v_pu < (0.50 if category == "I" else 0.30)


def voltage_ride_through_permissive(category: Category, v_pu: float) -> bool:
    """True in the "permissive operation" bands, where the DER may cease to energize but must not trip
    before the ride-through time (docs/reference.md#voltage-ride-through): Cat I/II 1.10-1.20 pu,
    Cat I 0.50-0.70 pu, Cat II 0.30-0.65 pu."""
    if V_CONTINUOUS[0] <= v_pu <= V_CONTINUOUS[1] or category == "III":
        return False
    if 1.10 < v_pu <= 1.20:
        return True
    if category == "I":
        return 0.50 <= v_pu < 0.70
    return 0.30 <= v_pu < 0.65


def voltage_ride_through_s(category: Category, v_pu: float) -> float:
    """Seconds of ride-through the DER owes at a steady ``v_pu`` (inf inside the continuous region).

    IEEE 1547-2018 voltage ride-through per category (docs/reference.md#voltage-ride-through; EPRI OpenDER rt_crit.py).
    Permissive operation and momentary cessation count: in both the DER must not trip.
    """
    if V_CONTINUOUS[0] <= v_pu <= V_CONTINUOUS[1]:
        return INF
    if v_pu > 1.20:
        return 0.0
    if v_pu > 1.10:
        if category == "III":
            return 12.0  # momentary cessation, 12 s
        if v_pu > 1.175:
            return 0.2
        return 0.5 if v_pu > 1.15 else 1.0
    # under-voltage
    if category == "I":
        if v_pu >= 0.70:
            return 0.7 + 4.0 * (v_pu - 0.70)  # mandatory operation
        return 0.16 if v_pu >= 0.50 else 0.0
    if category == "II":
        if v_pu >= 0.65:
            return 3.0 + 8.7 * (v_pu - 0.65)
        if v_pu >= 0.45:
            return 0.32
        return 0.16 if v_pu >= 0.30 else 0.0
    if v_pu >= 0.70:
        return 20.0
    return 10.0 if v_pu >= 0.50 else 1.0  # below 0.50: momentary cessation 1 s


def frequency_ride_through_s(f_hz: float, continuous: tuple[float, float], ride_through: tuple[float, float]) -> float:
    """Seconds owed at a steady frequency: 299 s between the continuous and the ride-through limits,
    none beyond (IEEE 1547-2018 frequency ride-through, docs/reference.md)."""
    if continuous[0] <= f_hz <= continuous[1]:
        return INF
    if ride_through[0] <= f_hz <= ride_through[1]:
        return F_RIDE_THROUGH_S
    return 0.0
