"""Enter service (IEEE 1547-2018 clause 4.10) and the recovery ramp after non-grid trips.

Owned by the safety layer alone, so no program can shortcut it. At start-up and after every grid trip
discharge (export) waits until voltage and frequency have stayed inside the enter-service window for the
whole delay, then rises along a ramp; charging waits only for the continuous operating region unless the
site gates it too. Thermal, communication and overrun trips recover along the ramp without the delay.
"""

from __future__ import annotations


class EnterService:
    __slots__ = ("delay_us", "gate_charging", "ok_since_us", "pending", "ramp_charge", "ramp_start_us", "ramp_us")

    def __init__(self, delay_s: float, ramp_s: float, gate_charging: bool):
        self.delay_us = round(delay_s * 1_000_000)
        self.ramp_us = round(ramp_s * 1_000_000)
        self.gate_charging = gate_charging
        self.pending = True  # start-up counts as a return to service
        self.ok_since_us: int | None = None
        self.ramp_start_us: int | None = None
        self.ramp_charge = False

    def retune(self, delay_s: float, ramp_s: float) -> None:
        """New delay and ramp (a DER control); a count or ramp under way goes on against them."""
        self.delay_us = round(delay_s * 1_000_000)
        self.ramp_us = round(ramp_s * 1_000_000)

    def grid_trip(self) -> None:
        """Every grid trip re-arms the full enter-service sequence."""
        self.pending = True
        self.ok_since_us = None
        self.ramp_start_us = None

    def recover(self, now_us: int) -> None:
        """A non-grid trip cleared: ramp both directions from zero, no grid delay."""
        self.ramp_start_us = now_us
        self.ramp_charge = True

    def update(self, now_us: int, in_window: bool) -> None:
        if not self.pending:
            return
        if not in_window:
            self.ok_since_us = None
            return
        if self.ok_since_us is None:
            self.ok_since_us = now_us
        if now_us - self.ok_since_us >= self.delay_us:
            self.pending = False
            self.ramp_start_us = now_us
            self.ramp_charge = self.gate_charging

    def remaining_s(self, now_us: int) -> float:
        if self.ok_since_us is None:
            return self.delay_us / 1_000_000
        return max(0, self.delay_us - (now_us - self.ok_since_us)) / 1_000_000

    def fractions(self, now_us: int, charge_allowed_while_pending: bool) -> tuple[float, float]:
        """(charge, discharge) fractions of rating this layer allows now, each in [0, 1]."""
        if self.pending:
            return (0.0 if self.gate_charging or not charge_allowed_while_pending else 1.0), 0.0
        if self.ramp_start_us is None:
            return 1.0, 1.0
        elapsed = now_us - self.ramp_start_us
        if elapsed >= self.ramp_us:
            self.ramp_start_us = None
            return 1.0, 1.0
        frac = max(0.0, elapsed / self.ramp_us)
        return (frac if self.ramp_charge else 1.0), frac
