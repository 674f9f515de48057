"""What Modbus TCP and RTU share: per-unit polling, writes, read-back, discovery, fault handling.

Structure: one driver instance = one link (a TCP connection or a serial line) with one or more units
(device ids), each with its own map and its own polling task on the link's client. A site's devices are
separate driver instances with separate clients, so one dead device never delays another; units that
share one RS-485 line necessarily share its timeouts.

Writes are driven only by the scan (``on_outputs``): on change, and again every ``refresh_s`` of the
*cycle* clock for volatile setpoints. There is no driver-side timer, so when the scan stops the refresh
stops and the device's reversion (communication-loss) timer expires as its vendor intends.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from pydantic import Field

from runtime.api import Params, SiteInfo
from runtime.io.driver import Driver, IOContext
from runtime.io.maps import (
    DecodeError,
    IOMap,
    Naming,
    Point,
    PollClass,
    PollPeriods,
    bits_of,
    decode,
    encode,
    load_map,
    quantum,
    readback_name,
    resolve_map_path,
    shipped_maps,
    tag_specs,
)
from runtime.io.readplan import Request, Span, plan_reads, plan_writes
from runtime.tags import US, Quality, TagSpec, TagUpdate

log = logging.getLogger("v2g_plc.io.modbus")

# Modbus Application Protocol Specification V1.1b3, section 7 "MODBUS Exception Responses".
EXCEPTION_MEANING: dict[int, str] = {
    0x01: "Illegal Function",
    0x02: "Illegal Data Address",
    0x03: "Illegal Data Value",
    0x04: "Server Device Failure",
    0x05: "Acknowledge",
    0x06: "Server Device Busy",
    0x08: "Memory Parity Error",
    0x0A: "Gateway Path Unavailable",
    0x0B: "Gateway Target Device Failed to Respond",
}

SUNS = (0x5375, 0x6E53)  # "SunS" (SunSpec Modbus, device identification marker)
SUNSPEC_END = 0xFFFF


def exception_text(code: int) -> str:
    return f"0x{code:02X} {EXCEPTION_MEANING.get(code, 'Unknown exception')}"


class UnitConfig(Params):
    unit: int = Field(1, ge=0, le=247, description="Modbus device id (unit id / slave address)")
    map: str = Field(description="I/O map: a path relative to the site file, or a shipped map's name")
    prefix: str = Field("", description="prepended to every tag name (one map, several devices)")
    rename: dict[str, str] = Field(default_factory=dict, description="map tag -> site tag, before prefix")
    max_gap: int | None = Field(None, ge=0, le=124, description="override the map's max_gap")
    poll: PollPeriods | None = None


class ModbusParams(Params):
    units: list[UnitConfig] = Field(min_length=1)
    timeout_s: float = Field(0.5, gt=0, le=30, description="response timeout per request")
    retries: int = Field(1, ge=0, le=10, description="retries of a request before its tags turn bad")
    backoff_s: float = Field(0.2, gt=0, le=60, description="first reconnect delay; doubles per failure")
    backoff_max_s: float = Field(10.0, gt=0, le=600, description="cap of the reconnect delay")
    close_timeout_s: float = Field(2.0, gt=0, le=30, description="time allowed for safe writes at close")


class LinkDown(Exception):
    """The connection is gone: the link task reconnects."""


@dataclass
class Expect:
    value: Any
    done_mono: float  # when the write was acknowledged
    failed: bool = False


@dataclass
class UnitState:
    """Everything one unit (device id on the link) keeps between polls."""

    cfg: UnitConfig
    map: IOMap
    naming: Naming
    addr: dict[str, tuple[str, int]] = field(default_factory=dict)
    sf: dict[str, int | None] = field(default_factory=dict)
    rejected: set[tuple[str, int]] = field(default_factory=set)
    plans: dict[frozenset[PollClass], list[Request]] = field(default_factory=dict)
    last_poll: dict[PollClass, float] = field(default_factory=dict)
    pending: dict[str, Any] = field(default_factory=dict)
    last_sent: dict[str, tuple[Any, int]] = field(default_factory=dict)  # key -> (value, cycle now_us)
    expect: dict[str, Expect] = field(default_factory=dict)
    mismatch: dict[str, bool] = field(default_factory=dict)
    logged: dict[str, str] = field(default_factory=dict)
    wake: asyncio.Event | None = None
    by_key: dict[str, Point] = field(default_factory=dict)
    sf_keys: frozenset[str] = frozenset()
    names: dict[str, list[str]] = field(default_factory=dict)  # tags a point's read delivers
    readback_due: set[PollClass] = field(default_factory=set)  # poll classes holding just-written set points

    def __post_init__(self) -> None:
        self.by_key = {p.key: p for p in self.map.points}
        self.sf_keys = frozenset(p.sf for p in self.map.points if p.sf is not None)
        n = self.naming
        for p in self.map.points:
            if p.readback:
                self.names[p.key] = [n(readback_name(p))]
            elif p.direction == "output":
                self.names[p.key] = []
            else:
                self.names[p.key] = ([n(p.tag)] if p.tag else []) + [n(b) for b in p.bits or {}]


class ModbusDriver(Driver):
    """Base of the TCP and RTU drivers; subclasses build the pymodbus client."""

    params: ModbusParams

    def __init__(self, name: str, params: ModbusParams, site: SiteInfo):
        super().__init__(name, params, site)
        self.units: list[UnitState] = []
        for u in params.units:
            path = resolve_map_path(u.map, self.base_dir)
            if not path.exists():  # the site's line is the place to fix this (errors inside a map name its own)
                raise ValueError(
                    f"I/O map {u.map!r} not found (no {self.base_dir / u.map} and no shipped map of that "
                    f"name; shipped: {', '.join(p.stem for p in shipped_maps())})"
                )
            m = load_map(path)
            self.units.append(UnitState(u, m, Naming(u.prefix, dict(u.rename) or None)))
        self._specs = [s for u in self.units for s in tag_specs(u.map, u.naming)]
        names = [s.name for s in self._specs]
        dup = {n for n in names if names.count(n) > 1}
        if dup:
            raise ValueError(f"device {name}: tags {sorted(dup)} produced by more than one unit (use prefix/rename)")
        self._outputs = {
            (u.naming(p.tag), i): p
            for i, u in enumerate(self.units)
            for p in u.map.points
            if p.direction == "output" and p.tag
        }
        # pymodbus logs every failed connect and every timeout; this driver logs each condition once when
        # it appears and once when it clears. Quiet pymodbus unless someone configured its logger.
        pm_log = logging.getLogger("pymodbus")
        if pm_log.level == logging.NOTSET:
            pm_log.setLevel(logging.CRITICAL)
        self.client: Any = None
        self.connected = False
        self._io: IOContext | None = None
        self._closed = False
        self.requests = 0  # request counter (benchmarks)

    # -- interface ----------------------------------------------------------------------------
    def declare(self) -> list[TagSpec]:
        return list(self._specs)

    def make_client(self) -> Any:
        raise NotImplementedError

    def describe(self) -> str:
        return self.name

    async def run(self, io: IOContext) -> None:
        self._io = io
        backoff = self.params.backoff_s
        for u in self.units:
            u.wake = asyncio.Event()
        while not self._closed:
            self.client = self.make_client()
            try:
                ok = await self.client.connect()
            except Exception as exc:  # pymodbus raises on some serial errors instead of returning False
                log.debug("%s: connect raised %r", self.name, exc)
                ok = False
            if not ok:
                self._all_bad(f"cannot connect to {self.describe()}")
                self.client.close()
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, self.params.backoff_max_s)
                continue
            self.connected = True
            self._note(None, "link", f"connected to {self.describe()}", logging.INFO)
            tasks = [asyncio.create_task(self._unit_loop(u, io)) for u in self.units]
            try:
                done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
                for t in done:
                    exc = t.exception()
                    if exc is not None and not isinstance(exc, LinkDown):
                        log.error("%s: unit task failed: %r", self.name, exc)
                backoff = self.params.backoff_s
            finally:
                for t in tasks:
                    t.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
                self.connected = False
            if self._closed:
                break
            self._all_bad(f"lost connection to {self.describe()}")
            self.client.close()
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, self.params.backoff_max_s)

    def on_outputs(self, now_us: int, outputs: Mapping[str, Any], changed: Mapping[str, Any]) -> None:
        for (tag, i), p in self._outputs.items():
            if tag not in outputs or outputs[tag] is None:
                continue
            u = self.units[i]
            value = outputs[tag]
            last = u.last_sent.get(p.key)
            due = (
                last is None
                or tag in changed
                or last[0] != value
                or (not p.nonvolatile and now_us - last[1] >= u.map.refresh_s * US)
            )
            if due:
                u.pending[p.key] = value
                u.last_sent[p.key] = (value, now_us)
        # Every cycle wakes the units: writes go out at once and the fast poll runs right after the scan
        # committed, in the idle part of the period, never racing the next deadline for the GIL.
        for u in self.units:
            if u.wake is not None:
                u.wake.set()

    async def close(self, safe_outputs: Mapping[str, Any]) -> None:
        self._closed = True
        for (tag, i), p in self._outputs.items():
            if tag in safe_outputs and safe_outputs[tag] is not None:
                self.units[i].pending[p.key] = safe_outputs[tag]
        if self.client is not None and self.connected:
            try:
                await asyncio.wait_for(
                    asyncio.gather(*(self._do_writes(u) for u in self.units)), self.params.close_timeout_s
                )
            except (TimeoutError, LinkDown, Exception) as exc:
                log.warning("%s: safe outputs not confirmed at close: %r", self.name, exc)
        elif self._outputs:
            log.warning(
                "%s: not connected at close: safe outputs not written (the device's own reversion timer takes over)",
                self.name,
            )
        if self.client is not None:
            self.client.close()

    async def read_once(self, io: IOContext) -> bool:
        """Connect, discover, read every point once, disconnect (the probe command). False: no link."""
        self._io = io
        self.client = self.make_client()
        try:
            if not await self.client.connect():
                return False
            for u in self.units:
                await self._discover(u)
                await self._poll(u, io, set(PollClass))
            return True
        except LinkDown:
            return False
        finally:
            self.client.close()

    # -- per unit -----------------------------------------------------------------------------
    async def _unit_loop(self, u: UnitState, io: IOContext) -> None:
        u.last_sent.clear()  # the device may have reverted while we were away: rewrite everything ...
        u.pending.clear()  # ... but only what the scan commands from now on: a value queued before the link
        # came back must not restart the reversion timer of a device whose scan may be gone
        u.expect.clear()
        u.mismatch.clear()
        u.plans.clear()
        u.last_poll.clear()
        await self._discover(u)
        await self._poll(u, io, set(PollClass))  # scale factors before any write
        for w in u.map.init:
            u.pending[w.point] = w.value
        period = self.site.period_us / US
        assert u.wake is not None
        while True:
            u.wake.clear()
            await self._do_writes(u)
            now = io.now_us() / US  # the cycle clock (x speed on a fast simulated site), as staleness is
            due = {PollClass.FAST} | u.readback_due
            u.readback_due = set()
            periods = u.cfg.poll or u.map.poll
            for cls, per in ((PollClass.NORMAL, periods.normal_s), (PollClass.SLOW, periods.slow_s)):
                if now - u.last_poll.get(cls, -1e18) >= per:
                    due.add(cls)
            await self._poll(u, io, due)
            try:
                # Paced by the scan's cycles (on_outputs); a timer of two periods only when no scan runs
                # (reads are harmless without a scan; writes never happen without one).
                await asyncio.wait_for(u.wake.wait(), 2 * period)
            except TimeoutError:
                pass

    @staticmethod
    def _points_for(u: UnitState, classes: set[PollClass]) -> list[Point]:
        """Points read when these poll classes are due; a scale factor is read with its fastest user."""
        users: dict[str, PollClass] = {}
        order = list(PollClass)
        for p in u.map.points:
            if (p.tag or p.bits) and (p.direction == "input" or p.readback):
                if p.sf is not None:
                    prev = users.get(p.sf)
                    if prev is None or order.index(p.poll) < order.index(prev):
                        users[p.sf] = p.poll
        out = []
        for p in u.map.points:
            cls = (
                users.get(p.key)
                if p.key in users
                else (p.poll if (p.tag or p.bits) and (p.direction == "input" or p.readback) else None)
            )
            if cls is not None and cls in classes and p.key in u.addr:
                out.append(p)
        return out

    def _plan(self, u: UnitState, classes: set[PollClass]) -> list[Request]:
        key = frozenset(classes)
        plan = u.plans.get(key)
        if plan is None:
            gap = u.cfg.max_gap if u.cfg.max_gap is not None else u.map.max_gap
            spans = [Span(*u.addr[p.key], p.count, p.key) for p in self._points_for(u, classes)]
            plan = u.plans[key] = plan_reads(spans, gap, u.rejected)
        return plan

    async def _read(self, u: UnitState, table: str, address: int, count: int) -> list[int] | int:
        """Registers/bits, or the exception code. Timeouts and lost links raise."""
        from pymodbus.exceptions import ConnectionException, ModbusIOException

        c = self.client
        fn = {
            "holding": c.read_holding_registers,
            "input": c.read_input_registers,
            "coil": c.read_coils,
            "discrete": c.read_discrete_inputs,
        }[table]
        self.requests += 1
        try:
            rr = await fn(address, count=count, device_id=u.cfg.unit)
        except ConnectionException as exc:
            raise LinkDown(str(exc)) from exc
        except ModbusIOException:
            if not self.client.connected:
                raise LinkDown("no response; connection closed") from None
            raise
        if rr.isError():
            return int(getattr(rr, "exception_code", 0x04))
        if table in ("coil", "discrete"):
            return [int(b) for b in rr.bits[:count]]
        return list(rr.registers)

    async def _poll(self, u: UnitState, io: IOContext, classes: set[PollClass]) -> None:
        from pymodbus.exceptions import ModbusIOException

        started = time.monotonic()
        now_s = io.now_us() / US
        for cls in classes:
            u.last_poll[cls] = now_s
        raw: dict[str, list[int]] = {}
        failed: dict[str, str] = {}
        for req in list(self._plan(u, classes)):
            if u.pending:  # a set point the scan committed meanwhile (a trip's zero) goes ahead of reads
                await self._do_writes(u)
            t_send = time.monotonic()
            try:
                res = await self._read(u, req.table, req.address, req.count)
            except ModbusIOException as exc:
                msg = f"no valid response from {req.table} {req.address}+{req.count}: {exc}"
                self._note(u, f"r{req.table}{req.address}", msg)
                failed.update({s.key: msg for s in req.spans})
                continue
            if isinstance(res, int):
                msg = f"read {req.table} {req.address}+{req.count}: exception {exception_text(res)}"
                if res == 0x02 and len(req.spans) > 1 and self._learn_rejected(u, req):
                    # A bridged gap holds a register the device rejects: never bridge it again, and
                    # read this request's points again split.
                    self._note(u, f"r{req.table}{req.address}", msg + "; not bridging that gap again", logging.INFO)
                    for sub in plan_reads(req.spans, 0, u.rejected):
                        try:
                            r2: list[int] | int = await self._read(u, sub.table, sub.address, sub.count)
                        except ModbusIOException:
                            r2 = 0x0B  # no answer: the same as a gateway's "target failed to respond"
                        self._collect(u, sub, r2, raw, failed, t_send)
                    continue
                self._note(u, f"r{req.table}{req.address}", msg)
                failed.update({s.key: msg for s in req.spans})
                continue
            self._note(u, f"r{req.table}{req.address}", None)
            self._collect(u, req, res, raw, failed, t_send)
        io.deliver(self._decode(u, raw, failed, io.now_us(), started))

    def _collect(
        self,
        u: UnitState,
        req: Request,
        res: list[int] | int,
        raw: dict[str, list[int]],
        failed: dict[str, str],
        t_send: float,
    ) -> None:
        if isinstance(res, int):
            msg = f"read {req.table} {req.address}+{req.count}: exception {exception_text(res)}"
            self._note(u, f"r{req.table}{req.address}", msg)
            failed.update({s.key: msg for s in req.spans})
            return
        for s in req.spans:
            raw[s.key] = res[s.address - req.address : s.end - req.address]

    def _learn_rejected(self, u: UnitState, req: Request) -> bool:
        spans = sorted(req.spans, key=lambda s: s.address)
        gaps: set[tuple[str, int]] = set()
        reach = spans[0].end
        for s in spans[1:]:
            gaps.update((req.table, a) for a in range(reach, s.address))
            reach = max(reach, s.end)
        new = gaps - u.rejected
        if not new:
            return False
        u.rejected |= new
        u.plans.clear()
        return True

    def _decode(
        self, u: UnitState, raw: dict[str, list[int]], failed: dict[str, str], now_us: int, started: float
    ) -> list[TagUpdate]:
        m = u.map
        out: list[TagUpdate] = []
        for key in u.sf_keys:  # scale factors first: values need them
            if key in raw:
                try:
                    u.sf[key] = int(decode(m, u.by_key[key], raw[key], {}))
                except DecodeError:
                    u.sf[key] = None
            elif key in failed:
                u.sf[key] = None
        readback_seen = False
        failed_readback = False
        for key in (*raw, *failed):
            p = u.by_key[key]
            names = u.names[key]
            if not names:
                continue
            if key in failed:
                out.extend(TagUpdate(n, None, Quality.BAD, now_us) for n in names)
                failed_readback = failed_readback or p.readback
                continue
            try:
                value = decode(m, p, raw[key], u.sf)
            except DecodeError as exc:
                self._note(u, f"d{key}", str(exc))
                out.extend(TagUpdate(n, None, Quality.BAD, now_us) for n in names)
                if p.readback:
                    readback_seen = True
                    u.mismatch[key] = True
                continue
            self._note(u, f"d{key}", None)
            if p.readback:
                readback_seen = True
                out.append(TagUpdate(u.naming(readback_name(p)), value, Quality.GOOD, now_us))
                self._check_readback(u, p, value, started)
            elif p.tag is not None:
                out.append(TagUpdate(u.naming(p.tag), value, Quality.GOOD, now_us))
            if p.bits:
                out.extend(TagUpdate(u.naming(b), v, Quality.GOOD, now_us) for b, v in bits_of(p, value).items())
        if m.mismatch_tag and (readback_seen or failed_readback):
            if failed_readback:
                out.append(TagUpdate(u.naming(m.mismatch_tag), None, Quality.BAD, now_us))
            else:
                out.append(TagUpdate(u.naming(m.mismatch_tag), any(u.mismatch.values()), Quality.GOOD, now_us))
        return out

    def _check_readback(self, u: UnitState, p: Point, value: Any, started: float) -> None:
        exp = u.expect.get(p.key)
        if exp is None or started < exp.done_mono:
            return  # nothing written yet, or this read may predate the write
        if exp.failed:
            u.mismatch[p.key] = True
            return
        if isinstance(value, (int, float)) and not isinstance(value, bool) and isinstance(exp.value, (int, float)):
            tol = max(p.tolerance, quantum(u.map, p, u.sf) / 2 + 1e-9)
            bad = abs(float(value) - float(exp.value)) > tol
        else:
            bad = value != exp.value
        if bad != u.mismatch.get(p.key, False):
            self._note(u, f"m{p.key}", f"{p.tag}: wrote {exp.value!r}, device holds {value!r}" if bad else None)
        u.mismatch[p.key] = bad

    async def _do_writes(self, u: UnitState) -> None:
        if not u.pending:
            return
        from pymodbus.exceptions import ConnectionException, ModbusIOException

        pending, u.pending = u.pending, {}
        m = u.map
        # A written set point is read back in the same round, whatever its poll class: the safety layer
        # wants the device's acknowledgement of a zero set point within the clearing time, not a second later.
        u.readback_due |= {u.by_key[k].poll for k in pending if k in u.by_key and u.by_key[k].readback}
        items: list[tuple[str, int, list[int]]] = []
        owners: dict[tuple[str, int], str] = {}
        for key, value in pending.items():
            p = u.by_key[key]
            if key not in u.addr:
                continue
            try:
                regs = encode(m, p, value, u.sf)
            except (ValueError, DecodeError) as exc:
                self._note(u, f"w{key}", f"cannot write {p.key}={value!r}: {exc}")
                u.expect[key] = Expect(value, time.monotonic(), failed=True)
                if p.readback:
                    u.mismatch[key] = True
                u.last_sent.pop(key, None)
                continue
            table, addr = u.addr[key]
            items.append((table, addr, regs))
            owners[(table, addr)] = key
        c = self.client
        for w in plan_writes(items):
            keys = [k for (t, a), k in owners.items() if t == w.table and w.address <= a < w.address + w.count]
            self.requests += 1
            try:
                if w.table == "coil":
                    rr = await c.write_coils(w.address, [bool(v) for v in w.values], device_id=u.cfg.unit)
                else:
                    rr = await c.write_registers(w.address, w.values, device_id=u.cfg.unit)
            except ConnectionException as exc:
                for k in keys:
                    u.pending.setdefault(k, pending[k])
                raise LinkDown(str(exc)) from exc
            except ModbusIOException as exc:
                self._note(u, f"w{w.address}", f"write {w.table} {w.address}+{w.count}: no valid response ({exc})")
                for k in keys:
                    u.last_sent.pop(k, None)  # retried by the next cycle's on_outputs
                if not c.connected:
                    raise LinkDown("connection closed") from None
                continue
            done = time.monotonic()
            if rr.isError():
                code = int(getattr(rr, "exception_code", 0x04))
                self._note(
                    u, f"w{w.address}", f"write {w.table} {w.address}+{w.count}: exception {exception_text(code)}"
                )
                for k in keys:
                    u.expect[k] = Expect(pending[k], done, failed=True)
                    if u.by_key[k].readback:
                        u.mismatch[k] = True
                    u.last_sent.pop(k, None)
                continue
            self._note(u, f"w{w.address}", None)
            for k in keys:
                u.expect[k] = Expect(pending[k], done)

    async def _discover(self, u: UnitState) -> None:
        """Resolve addresses; for SunSpec maps, find ``SunS`` and walk the model chain."""
        m = u.map
        u.addr = {p.key: (p.table, p.address) for p in m.points if p.address is not None}
        for a, b in m.holes:
            for table in ("holding", "input"):
                u.rejected.update((table, x) for x in range(a, b + 1))
        if m.discovery is None:
            return
        from pymodbus.exceptions import ModbusIOException

        bases: dict[int, int] = {}
        for base in m.discovery.bases:
            try:
                res = await self._read(u, "holding", base, 2)
            except ModbusIOException:
                continue
            if res != list(SUNS):
                continue
            addr = base + 2
            for _ in range(256):  # a chain longer than this is a broken device
                hdr = await self._read(u, "holding", addr, 2)
                if isinstance(hdr, int) or hdr[0] == SUNSPEC_END:
                    break
                bases.setdefault(hdr[0], addr)
                addr += hdr[1] + 2
            break
        missing = [mid for mid in m.discovery.models if mid not in bases]
        if not bases:
            self._note(u, "discovery", f"no SunSpec marker at {m.discovery.bases}")
        elif missing:
            self._note(u, "discovery", f"SunSpec models {missing} not found (have {sorted(bases)})")
        else:
            self._note(u, "discovery", None)
        for p in m.points:
            if p.model is not None and p.model in bases:
                u.addr[p.key] = (p.table, bases[p.model] + (p.model_offset or 0))
        if missing and self._io is not None:
            now = self._io.now_us()
            self._io.deliver(
                [TagUpdate(n, None, Quality.BAD, now) for p in m.points if p.model in missing for n in u.names[p.key]]
            )

    # -- diagnostics --------------------------------------------------------------------------
    def _all_bad(self, why: str) -> None:
        self._note(None, "link", why)
        if self._io is None:
            return
        now = self._io.now_us()
        self._io.deliver([TagUpdate(s.name, None, Quality.BAD, now) for s in self._specs if s.is_input])

    def _note(self, u: UnitState | None, key: str, msg: str | None, level: int = logging.WARNING) -> None:
        """Log a condition once when it appears and once when it clears (never every cycle)."""
        store = u.logged if u is not None else self.__dict__.setdefault("_link_logged", {})
        prev = store.get(key)
        who = f"{self.name}" + (f" unit {u.cfg.unit}" if u is not None else "")
        if msg is None:
            if prev is not None:
                del store[key]
                log.info("%s: recovered (%s)", who, prev)
            return
        if prev != msg:
            store[key] = msg
            log.log(level, "%s: %s", who, msg)
