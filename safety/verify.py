"""Settings verification at start-up: the inverter's own ratings (SunSpec 702), trip settings (707-710)
and reversion timeout (704), where its map provides them, must read good and be no weaker than the site's.

Why: this layer is supervisory; the inverter's certified protection stays primary. If that protection is
set looser than the site's settings (a later trip, a wider threshold, no comm-loss reversion), enabling
it would make the supervisory layer the only protection, so the permit is withheld and the reason shown.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from runtime.api import SiteInfo
from runtime.tags import Image
from safety.settings import Resolved, SafetyParams

EPS = 1e-6


def _to_native(x: float, unit: str, quantity: str, site: SiteInfo) -> float:
    """Device value to the site's unit: per unit for voltage, Hz for frequency."""
    if quantity == "v":
        return {"pu": x, "percent": x / 100.0, "V": x / site.nominal_voltage}.get(unit, x)
    return x


def verify_settings(
    p: SafetyParams, r: Resolved, img: Image, site: SiteInfo, val: Callable[[Image, str | None], Any]
) -> str:
    """Empty string when verified, else why not (one sentence)."""
    v = p.verify
    missing = [n for n in v.ratings if val(img, n) is None]
    if missing:
        return "inverter ratings not read yet: " + ", ".join(missing)
    for code, dev in v.trips.items():
        thr, t = val(img, dev.threshold_tag), val(img, dev.time_tag)
        if thr is None or t is None:
            return f"inverter {code} trip setting not read yet"
        site_trip = r.trips[code]
        if site_trip.quantity == "f" and dev.unit not in ("Hz",):
            return f"verify.trips.{code}: a frequency trip setting is in Hz"
        x = _to_native(float(thr), dev.unit, site_trip.quantity, site)
        looser = x > site_trip.threshold + EPS if site_trip.over else x < site_trip.threshold - EPS
        if looser or float(t) > site_trip.clearing_s + EPS:
            return (
                f"inverter {code} trip setting ({x:g}, {float(t):g} s) is weaker than the site's "
                f"({site_trip.threshold:g}, {site_trip.clearing_s:g} s): not enabled"
            )
    if v.reversion_tag:
        rt = val(img, v.reversion_tag)
        if rt is None:
            return "inverter reversion timeout not read yet"
        if not 0 < float(rt) <= v.reversion_max_s:
            return (
                f"inverter reversion timeout {float(rt):g} s is off or longer than {v.reversion_max_s:g} s: not enabled"
            )
    return ""
