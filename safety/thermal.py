"""Inverter thermal interlock: derating to zero at the trip temperature, a latched trip above it, and a
first-order prediction that caps power before the derating curve is reached.

Why a prediction: the inverter's temperature lags its losses by the thermal time constant, so a charger at
full power can still be far below the derating start while heading well past it. With a first-order model
dT/dt = (T_inf - T) / tau, the temperature it settles at is T_inf = T + tau * dT/dt; losses (and so
T_inf - ambient) follow |power|, so the power that settles at the derating start is
|P| * (T_start - ambient) / (T_inf - ambient). The cap applies to both directions: heat follows |power|.
"""

from __future__ import annotations


class ThermalGuard:
    __slots__ = (
        "_last_t",
        "_ref",
        "ambient_c",
        "cap_w",
        "cooldown_us",
        "latched",
        "reset_c",
        "start_c",
        "tau_s",
        "trip_c",
        "tripped_at_us",
        "window_us",
    )

    def __init__(
        self,
        start_c: float,
        trip_c: float,
        reset_c: float,
        cooldown_s: float,
        tau_s: float | None,
        ambient_c: float,
        window_s: float,
    ):
        self.start_c, self.trip_c, self.reset_c = start_c, trip_c, reset_c
        self.cooldown_us = round(cooldown_s * 1_000_000)
        self.tau_s, self.ambient_c = tau_s, ambient_c
        self.window_us = round(window_s * 1_000_000)
        self.latched = False
        self.tripped_at_us: int | None = None
        self._ref: tuple[int, float] | None = None
        self._last_t: int | None = None
        self.cap_w: float | None = None  # predictive cap, W (None: none)

    def derate_fraction(self, temp_c: float) -> float:
        """1 below the derating start, linear to 0 at the trip temperature."""
        if temp_c <= self.start_c:
            return 1.0
        if temp_c >= self.trip_c:
            return 0.0
        return (self.trip_c - temp_c) / (self.trip_c - self.start_c)

    def update(self, now_us: int, temp_c: float, t_read_us: int, abs_power_w: float) -> bool:
        """Returns True on the cycle the trip latches."""
        fired = False
        if temp_c >= self.trip_c and not self.latched:
            self.latched, self.tripped_at_us, fired = True, now_us, True
        self._predict(temp_c, t_read_us, abs_power_w)
        return fired

    def may_reset(self, now_us: int, temp_c: float) -> bool:
        return (
            self.latched
            and temp_c < self.reset_c
            and (self.tripped_at_us is None or now_us - self.tripped_at_us >= self.cooldown_us)
        )

    def clear(self) -> None:
        self.latched = False
        self.tripped_at_us = None

    def _predict(self, temp_c: float, t_read_us: int, abs_power_w: float) -> None:
        if self.tau_s is None or t_read_us == self._last_t:
            return
        self._last_t = t_read_us
        if self._ref is None:
            self._ref = (t_read_us, temp_c)
            return
        t0, temp0 = self._ref
        if t_read_us - t0 < self.window_us:
            return
        self._ref = (t_read_us, temp_c)
        slope = (temp_c - temp0) * 1_000_000 / (t_read_us - t0)
        t_inf = temp_c + self.tau_s * slope
        if abs_power_w < 100.0 or t_inf <= self.ambient_c + 1.0:
            # idle or cooling towards ambient: nothing to estimate; release once heading below the start
            if t_inf <= self.start_c:
                self.cap_w = None
            return
        # the power that would settle at the derating start, re-estimated every window: it tightens while
        # the prediction overshoots and relaxes as it falls back, so power settles instead of cycling
        cap = abs_power_w * max(0.0, self.start_c - self.ambient_c) / (t_inf - self.ambient_c)
        if t_inf > self.start_c:
            self.cap_w = cap
        elif self.cap_w is not None:
            self.cap_w = max(self.cap_w, cap)
            if t_inf < self.start_c - 5.0 and temp_c < self.start_c - 5.0:
                self.cap_w = None  # well clear of the curve: no cap
