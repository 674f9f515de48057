"""Power divergence: what the inverter does against what it was told.

Expected power is the previous cycle's committed setpoint (zero without the permit) passed through the
inverter's ramp limit. A measured power of the wrong sign, or beyond what was commanded, for longer than
the set time is a fault (the device is not obeying: operator reset); a shortfall, as when a full battery
tapers, is only a warning.
"""

from __future__ import annotations

from typing import Literal

from safety.settings import Divergence

Verdict = Literal["ok", "fault", "shortfall"]


class DivergenceMonitor:
    __slots__ = ("_kind", "_since", "expected", "p", "time_us", "warned")

    def __init__(self, p: Divergence, time_us: int):
        """``time_us``: how long a divergence must last, on the cycle clock (``p.time_s`` stretched like the
        tags' age limits on a simulated site run faster than real time)."""
        self.p = p
        self.time_us = time_us
        self.expected = 0.0
        self._since: int | None = None
        self._kind: Verdict = "ok"
        self.warned = False

    def reset(self) -> None:
        self._since = None
        self._kind = "ok"
        self.warned = False

    def agrees(self, measured: float | None) -> bool:
        """The device provably does what it was told now: a good measurement within tolerance of the
        expected power (the evidence an operator reset needs)."""
        if measured is None:
            return False
        return abs(measured - self.expected) <= self.p.abs_w + self.p.rel * abs(self.expected)

    def update(self, now_us: int, dt_s: float, commanded: float, measured: float | None) -> Verdict:
        p = self.p
        if p.ramp_w_per_s is None:
            self.expected = commanded
        else:
            step = p.ramp_w_per_s * dt_s
            self.expected += max(-step, min(step, commanded - self.expected))
        if measured is None:
            self._since = None
            return "ok"
        exp = self.expected
        tol = p.abs_w + p.rel * abs(exp)
        kind: Verdict = "ok"
        if abs(measured - exp) > tol:
            wrong_sign = abs(measured) > p.abs_w and (measured > 0) != (exp > 0) and abs(exp) > 0
            beyond = abs(measured) > abs(exp) + tol
            kind = "fault" if (wrong_sign or beyond) else "shortfall"
        if kind == "ok":
            self._since, self._kind, self.warned = None, "ok", False
            return "ok"
        if kind != self._kind or self._since is None:
            self._since, self._kind = now_us, kind
        if now_us - self._since >= self.time_us:
            return kind
        return "ok"
