"""A simulated Modbus device: a register image built from a shipped I/O map, filled from the plant.

The device is map-driven, so every shipped map can be served and tested without device-specific code:
input points are encoded from the plant's values through the same codec the driver decodes with, and
writes to output points are decoded back into plant commands. A SunSpec map gets a complete SunSpec
image (``SunS``, every model of its discovery list with its full official length from pysunspec2, end
marker) so that an independent SunSpec client can scan it.

Vendor behaviour simulated here (documented because drivers must cope with it):
- the reversion timer restarts on a write of any ``reversion.restarted_by`` point; on expiry every
  output point reverts to its map default (setpoint 0 W, enable off) and reads back as such;
- an out-of-rating setpoint is clamped by the device, which then holds the clamped value (read-back
  reveals it);
- writes to read-only or unknown registers answer exception 0x02.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from runtime.io.maps import DecodeError, IOMap, Point, bits_of, decode, encode, readback_name

log = logging.getLogger("v2g_plc.sim")

SUNSPEC_BASE = 40000
# Scale factors the simulated SunSpec device reports (by the map's SF point ids).
SUNSPEC_SF = {
    "W_SF": 0,
    "V_SF": -1,
    "Hz_SF": -3,
    "TotWh_SF": 0,
    "Tmp_SF": -1,
    "Cap_W_SF": 0,
    "WSet_SF": 0,
    "WH_SF": 1,
    "Pct_SF": -1,
}


@dataclass
class Fault:
    """Injected misbehaviour (tests): exception code for reads/writes, delay, silence, truncation."""

    exception: int | None = None
    addresses: set[int] | None = None  # None: every address
    on_write_only: bool = False
    delay_s: float = 0.0
    silent: bool = False
    truncate: bool = False


@dataclass
class SimModbusDevice:
    name: str
    map: IOMap
    unit: int = 1
    sunspec_base: int = SUNSPEC_BASE
    image: dict[int, int] = field(default_factory=dict)  # address -> register (shared table)
    addr: dict[str, int] = field(default_factory=dict)
    sf: dict[str, int] = field(default_factory=dict)
    blocks: list[tuple[int, int]] = field(default_factory=list)  # (start, count) of valid registers
    writable: set[int] = field(default_factory=set)
    outputs: dict[str, Any] = field(default_factory=dict)  # tag -> value the device holds
    config: dict[str, Any] = field(default_factory=dict)  # non-tag writable points by id
    last_refresh_t: float | None = None
    reverted: bool = False
    fault: Fault | None = None
    writes: list[tuple[float, int, list[int]]] = field(default_factory=list)  # (t, address, values)
    clamp: Mapping[str, tuple[float, float]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        m = self.map
        if m.discovery is not None:
            self._build_sunspec()
        else:
            # A contiguous register range from the first to the last point, less the map's holes:
            # the device rejects exactly what its map says it rejects.
            for p in m.points:
                assert p.address is not None
                self.addr[p.key] = p.address
            lo = min(p.address for p in m.points if p.address is not None)
            hi = max(p.address + p.count for p in m.points if p.address is not None)
            holes = {a for first, last in m.holes for a in range(first, last + 1)}
            self.image = {a: 0 for a in range(lo, hi) if a not in holes}
        for p in m.points:
            if p.access == "rw" and p.key in self.addr:
                self.writable.update(range(self.addr[p.key], self.addr[p.key] + p.count))
        self.blocks = _blocks(sorted(self.image))
        for p in m.points:
            if p.sf is None:
                continue
            sf = SUNSPEC_SF.get(p.sf, 0)
            self.sf[p.sf] = sf
            self._put(m.point(p.sf), sf)
        for p in m.points:
            if p.direction == "output":
                self.outputs[p.tag] = p.default  # type: ignore[index]
                self._put(p, p.default)

    def _build_sunspec(self) -> None:
        import sunspec2.device as ssd

        assert self.map.discovery is not None
        base = self.sunspec_base
        regs: list[int] = [0x5375, 0x6E53]
        bases: dict[int, int] = {}
        for mid in self.map.discovery.models:
            data = ssd.Model(model_id=mid).get_mb()
            bases[mid] = base + len(regs)
            regs.extend(int.from_bytes(data[i : i + 2], "big") for i in range(0, len(data), 2))
        regs.extend([0xFFFF, 0])
        self.image = {base + i: r for i, r in enumerate(regs)}
        for p in self.map.points:
            if p.model is not None:
                self.addr[p.key] = bases[p.model] + (p.model_offset or 0)

    # -- plant -> registers ------------------------------------------------------------------------
    def _put(self, p: Point, value: Any) -> None:
        if p.key not in self.addr:
            return
        try:
            regs = encode(self.map, p, value, self.sf) if value is not None else self._ni(p)
        except (ValueError, DecodeError):
            regs = self._ni(p)
        a = self.addr[p.key]
        for i, r in enumerate(regs):
            self.image[a + i] = r

    def _ni(self, p: Point) -> list[int]:
        ni = self.map.not_implemented(p)
        if p.type == "string":
            return [0] * p.count
        if not ni:
            return [0] * p.count
        v = ni[0] & ((1 << (16 * p.count)) - 1)
        return [(v >> (16 * (p.count - 1 - i))) & 0xFFFF for i in range(p.count)]

    def publish(self, values: Mapping[str, Any], t: float) -> None:
        """Encode the plant's values into the input registers (outputs keep what was written)."""
        for p in self.map.points:
            if p.direction == "output" or p.access == "rw":
                continue
            if p.bits:
                field_ = 0
                for name, bit in p.bits.items():
                    if values.get(name):
                        field_ |= 1 << bit
                self._put(p, field_)
            elif p.tag == "inverter.reversion_remaining":
                self._put(p, max(0, round(self.reversion_remaining(t))))
            elif p.tag is not None and p.tag in values:
                self._put(p, values[p.tag])

    # -- reversion timer ---------------------------------------------------------------------------
    def reversion_timeout(self) -> float | None:
        rv = self.map.reversion
        if rv is None:
            return None
        if rv.timeout_point and self.config.get(rv.timeout_point):
            return float(self.config[rv.timeout_point])
        return rv.timeout_s

    def reversion_remaining(self, t: float) -> float:
        to = self.reversion_timeout()
        if to is None or self.last_refresh_t is None or self.reverted:
            return 0.0
        return max(0.0, self.last_refresh_t + to - t)

    def check_reversion(self, t: float) -> bool:
        """Revert outputs to their defaults when the timer expired; True when it just did."""
        to = self.reversion_timeout()
        if to is None or self.last_refresh_t is None or self.reverted:
            return False
        if t - self.last_refresh_t < to:
            return False
        self.reverted = True
        for p in self.map.points:
            if p.direction == "output":
                self.outputs[p.tag] = p.default  # type: ignore[index]
                self._put(p, p.default)
        log.info("%s: communication-loss timer expired after %.1f s: outputs reverted", self.name, to)
        return True

    # -- registers -> plant ------------------------------------------------------------------------
    def read(self, address: int, count: int) -> list[int]:
        return [self.image.get(a, 0) for a in range(address, address + count)]

    def write(self, address: int, values: list[int], t: float) -> int | None:
        """Apply a client write; returns a Modbus exception code or None."""
        if any(a not in self.writable for a in range(address, address + len(values))):
            return 0x02
        self.writes.append((t, address, list(values)))
        old = {a: self.image.get(a, 0) for a in range(address, address + len(values))}
        for i, v in enumerate(values):
            self.image[address + i] = v
        touched = [
            p
            for p in self.map.points
            if p.key in self.addr
            and p.access == "rw"
            and self.addr[p.key] < address + len(values)
            and address < self.addr[p.key] + p.count
        ]
        restart = False
        for p in touched:
            regs = self.read(self.addr[p.key], p.count)
            try:
                value = decode(self.map, p, regs, self.sf)
            except DecodeError:
                for a, v in old.items():
                    self.image[a] = v
                return 0x03
            if p.tag is not None and p.tag in self.clamp:
                lo, hi = self.clamp[p.tag]
                if isinstance(value, (int, float)) and not lo <= value <= hi:
                    value = max(lo, min(hi, value))
                    self._put(p, value)  # the device holds what it accepted, not what was asked
            if p.direction == "output":
                self.outputs[p.tag] = value  # type: ignore[index]
            else:
                self.config[p.key] = value
            if self.map.reversion and p.key in self.map.reversion.restarted_by:
                restart = True
        if restart:
            self.last_refresh_t = t
            self.reverted = False
        return None


def _blocks(addrs: list[int]) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for a in addrs:
        if out and out[-1][0] + out[-1][1] == a:
            out[-1] = (out[-1][0], out[-1][1] + 1)
        else:
            out.append((a, 1))
    return out


def readback_tags(m: IOMap) -> dict[str, str]:
    return {p.tag: readback_name(p) for p in m.points if p.readback and p.tag}


__all__ = ["Fault", "SimModbusDevice", "bits_of"]
