"""The I/O driver interface: polling runs on the I/O thread's asyncio loop, never on the scan thread.

A driver delivers finished reads as ``TagUpdate``s through ``IOContext.deliver`` (thread-safe; the scan
applies them all at once at the next cycle start) and receives, once per cycle, the committed outputs it
owns. Writes are driven by the scan only: a driver must not refresh setpoints on a timer of its own, so
that a stuck scan lets the device's reversion (communication-loss) timer expire.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from typing import Any

from runtime.api import Plugin
from runtime.registry import DRIVERS
from runtime.tags import TagUpdate


class IOContext:
    """What a driver may touch: a staging area for finished reads and the cycle clock."""

    def __init__(self, t0_ns: int | None = None, speed: int = 1):
        self._lock = threading.Lock()
        self._staged: list[TagUpdate] = []
        self.t0_ns = time.monotonic_ns() if t0_ns is None else t0_ns
        self.speed = speed  # a simulated site run faster than real time: its clock runs x speed

    def now_us(self) -> int:
        """Microseconds since the run started, on the same clock as the cycles' ``now_us``."""
        return self.link_us() * self.speed

    def link_us(self) -> int:
        """Real microseconds since the run started: the clock of the wire. On a simulated site run at
        ``speed`` x the plant moves faster, but a request still takes its real time and a value's staleness
        is judged in real time (``Engine(age_scale=speed)``), so what paces the reads counts here."""
        return (time.monotonic_ns() - self.t0_ns) // 1000

    def deliver(self, updates: list[TagUpdate]) -> None:
        with self._lock:
            self._staged.extend(updates)

    def drain(self) -> list[TagUpdate]:
        """Called by the scan thread at cycle start; never blocks for longer than a list swap."""
        with self._lock:
            staged, self._staged = self._staged, []
        return staged


class Driver(Plugin):
    """Base class of devices. ``declare()`` lists the inputs the device delivers and the outputs it accepts."""

    async def run(self, io: IOContext) -> None:
        """Poll until cancelled. Must survive device failures: mark tags bad, back off, reconnect."""

    def on_outputs(self, now_us: int, outputs: Mapping[str, Any], changed: Mapping[str, Any]) -> None:
        """Called on the I/O loop once per committed cycle with this device's output tags."""

    async def close(self, safe_outputs: Mapping[str, Any]) -> None:
        """Write the safe outputs (setpoint 0, permit withdrawn), wait for them, and disconnect."""


register_driver = DRIVERS.register
