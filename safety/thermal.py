"""Inverter thermal interlock: derating to zero at the trip temperature, a latched trip above it, and a
first-order prediction that caps power before the derating curve is reached.

Why a prediction: the inverter's temperature lags its losses by the thermal time constant, so a charger at
full power can still be far below the derating start while heading well past it. With a first-order model
dT/dt = (T_inf - T) / tau, the temperature it settles at is T_inf = T + tau * dT/dt; losses (and so
T_inf - ambient) follow |power|, so the power that settles at the derating start is
|P| * (T_start - ambient) / (T_inf - ambient). The cap applies to both directions: heat follows |power|.
"""

from __future__ import annotations

# The predictive cap changes state only when its cause does (no chatter between "capped" and "no limit"):
ENGAGE_MARGIN_C = 2.0  # engages when the predicted temperature reaches derate_start - 2 degC; releases
RELEASE_MARGIN_C = 5.0  # only when the temperature predicted at full power and the measured one are
# derate_start - 5 degC or less, one thermal time constant (tau_s) after the cap last tightened, and once
# it has relaxed to full power (so release is no step up).
IDLE_W = 100.0  # below this average power, losses say nothing about the heat sink


class ThermalGuard:
    __slots__ = (
        "_energy",
        "_last_now",
        "_last_t",
        "_ref",
        "_win_start",
        "ambient_c",
        "cap_w",
        "cooldown_us",
        "full_w",
        "latched",
        "reset_c",
        "start_c",
        "tau_s",
        "tightened_us",
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
        full_w: float,
    ):
        self.start_c, self.trip_c, self.reset_c = start_c, trip_c, reset_c
        self.cooldown_us = round(cooldown_s * 1_000_000)
        self.tau_s, self.ambient_c = tau_s, ambient_c
        self.window_us = round(window_s * 1_000_000)
        self.full_w = full_w  # the rating: the cap never exceeds it, and relaxes up to it before release
        self.latched = False
        self.tripped_at_us: int | None = None
        self._ref: tuple[int, float] | None = None
        self._last_t: int | None = None
        self._last_now: int | None = None
        self._win_start: int | None = None
        self._energy = 0.0  # W * us of |power| since the window started
        self.cap_w: float | None = None  # predictive cap, W (None: none)
        self.tightened_us: int | None = None

    def derate_fraction(self, temp_c: float) -> float:
        """1 below the derating start, linear to 0 at the trip temperature."""
        if temp_c <= self.start_c:
            return 1.0
        if temp_c >= self.trip_c:
            return 0.0
        return (self.trip_c - temp_c) / (self.trip_c - self.start_c)

    def update(self, now_us: int, temp_c: float, t_read_us: int, abs_power_w: float) -> bool:
        """Returns True on the cycle the trip latches. ``abs_power_w``: |power| now (measured, else set)."""
        fired = False
        if temp_c >= self.trip_c and not self.latched:
            self.latched, self.tripped_at_us, fired = True, now_us, True
        if self._last_now is not None:
            self._energy += abs_power_w * (now_us - self._last_now)
        self._last_now = now_us
        if self._win_start is None:
            self._win_start = now_us
        if self.tau_s is not None and t_read_us != self._last_t:  # a new read of the temperature
            self._predict(now_us, temp_c, t_read_us, abs_power_w)
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

    def _predict(self, now_us: int, temp_c: float, t_read_us: int, abs_power_w: float) -> None:
        assert self.tau_s is not None
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
        # The slope over the window reflects the losses over the window: pair it with the average power
        # over the same window, not the power now, or a ramp reads as an overshoot that vanishes next window.
        span = now_us - (self._win_start or now_us)
        p_avg = self._energy / span if span > 0 else abs_power_w
        self._energy, self._win_start = 0.0, now_us
        window_s = (t_read_us - t0) / 1_000_000
        start, amb = self.start_c, self.ambient_c
        if self.cap_w is None:
            if p_avg >= IDLE_W and t_inf >= start - ENGAGE_MARGIN_C:
                self.cap_w, self.tightened_us = min(self.full_w, self._settle(p_avg, t_inf)), now_us
            return
        if p_avg >= IDLE_W:
            settle = self._settle(p_avg, t_inf)
            if settle < self.cap_w:
                self.cap_w, self.tightened_us = settle, now_us  # tighten at once
            else:  # relax at most from zero to full power in tau (the estimate is noisy)
                self.cap_w = min(self.full_w, settle, self.cap_w + self.full_w * window_s / self.tau_s)
            # losses follow |power|: the temperature this heat sink would settle at under full power
            t_full = amb + max(0.0, t_inf - amb) * self.full_w / p_avg
        else:
            t_full = t_inf  # idle: cooling towards ambient
        released = (
            now_us - (self.tightened_us or now_us) >= round(self.tau_s * 1_000_000)
            and t_full <= start - RELEASE_MARGIN_C
            and temp_c <= start - RELEASE_MARGIN_C
            and (self.cap_w >= self.full_w or p_avg < IDLE_W)
        )
        if released:
            self.cap_w = self.tightened_us = None

    def _settle(self, p_avg: float, t_inf: float) -> float:
        """The power that settles at the derating start; unbounded (the rating) when heading for ambient."""
        rise = t_inf - self.ambient_c
        if rise <= 1.0:
            return self.full_w
        return p_avg * max(0.0, self.start_c - self.ambient_c) / rise
