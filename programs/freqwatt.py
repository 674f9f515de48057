"""Frequency-watt: the set point as a piecewise-linear function of the measured grid frequency.

Why it is computed inside the scan and not in the task that received the curve: a frequency service is
paid for reacting within a cycle or two (OCPP 2.1 CentralFrequency/LocalFrequency, ``v2xFreqWattCurve``);
the task process runs at its own pace and would add its latency to every step. The curve arrives once
(a mode request), the frequency every cycle.

The curve is a list of ``(hz, w)`` points with strictly increasing frequencies (2 to 10, within 45-65
Hz: ``runtime/commands.py`` refuses any other curve before a cycle sees it). Between points the power is
interpolated linearly; outside the first and last point it is held at the end value (clamped), so a dead
band is written as two points of equal power. Power is signed as everywhere on the site:
positive into the EV battery.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Mapping

Curve = tuple[tuple[float, float], ...]
"""Points ``(hz, w)``, frequencies strictly increasing: checked where the request enters the scan
(``runtime/commands.py``, ``mode_request``), so the scan never sees another shape."""


def curve_w(curve: Curve, hz: float) -> float:
    """The curve's power at ``hz``: linear between points, the end values outside them."""
    if hz <= curve[0][0]:
        return curve[0][1]
    if hz >= curve[-1][0]:
        return curve[-1][1]
    i = bisect_right([p[0] for p in curve], hz)  # curve[i-1].hz <= hz < curve[i].hz
    (f0, w0), (f1, w1) = curve[i - 1], curve[i]
    return w0 + (w1 - w0) * (hz - f0) / (f1 - f0)


def droop_curve(droop: Mapping[str, float], rated_w: float, nominal_hz: float) -> Curve:
    """An OCPP 2.1 FreqDroop control (the safety layer's ``safety.der_freq_droop``) as a curve.

    IEEE 1547-2018 6.5.2.8 (Table 24): outside the dead band (``overFreq``/``underFreq``, absolute Hz in
    OCPP) the power changes by the rated power for a frequency change of ``k`` per unit of nominal
    (``overDroop``/``underDroop``), held beyond that. A DER that generates lowers its output as frequency
    rises; an EV battery (+ into it) takes more: + at over-frequency, - at under-frequency, 0 in the band.
    The response time (``responseTime``) is the inverter's own: the scan answers in the cycle it sees."""
    over, under = float(droop["overFreq"]), float(droop["underFreq"])
    return (
        (under - float(droop["underDroop"]) * nominal_hz, -rated_w),
        (under, 0.0),
        (over, 0.0),
        (over + float(droop["overDroop"]) * nominal_hz, rated_w),
    )


def dead_band_hz(hz: float, nominal_hz: float, band_hz: float) -> float:
    """The frequency a curve behind a dead band sees: nominal inside ``nominal +- band``, the deviation
    less the band outside it, so the response starts at the band's edge without a step (IEEE 1547-2018
    6.5.2.7, the dead band of frequency response)."""
    dev = hz - nominal_hz
    if abs(dev) <= band_hz:
        return nominal_hz
    return nominal_hz + dev - band_hz if dev > 0 else nominal_hz + dev + band_hz
