"""What Modbus TCP and RTU share: per-unit polling, writes, read-back, discovery, fault handling.

Structure: one driver instance = one link (a TCP connection or a serial line) with one or more units
(device ids), each with its own map and its own polling task on the link's client. A site's devices are
separate driver instances with separate clients, so one dead device never delays another; units that
share one RS-485 line necessarily share its timeouts. A unit's state is three parts with one job each:
``DiscoveryState`` (where points live), ``ReadState`` (scale factors, rejected registers, plans, poll
times), ``WriteState`` (queued, held, sent, expected, refused set points); a round is write -> read ->
read-back (``_round``). Faults and their recovery: docs/io.md "Faults".

Writes are driven only by the scan (``on_outputs``): on change, and again every ``refresh_s`` for volatile
setpoints. There is no driver-side timer, so when the scan stops the refresh stops and the device's
reversion (communication-loss) timer expires as its vendor intends.

Supervision of the link counts in real time, also on a simulated site run at --speed N (docs/depot.md
"Poll periods under --speed"): poll periods, the refresh, and the reversion timeout the driver writes to
the device (N x the map's seconds, because the simulated device counts the plant's time), as the engine
judges staleness in real time.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, NoReturn

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


class NoAnswer(Exception):
    """No valid answer to one request (none in time, garbled, wrong function code, wrong length): the
    request's tags turn bad; the link stays unless invalid answers keep coming."""


# Retry schedule of a write the device refused and of an incomplete SunSpec discovery, in seconds of the
# cycle clock: 1, 2, 4, 8, 16, then every 30 s. A refused set point used to be re-sent every cycle (50 a
# second); a device that heals is still back within half a minute.
RETRY_FIRST_S = 1.0
RETRY_MAX_S = 30.0
SUMMARY_EVERY = 10  # a refusal that persists is summarised in the log every this many attempts


def retry_after_s(attempts: int) -> float:
    """Seconds to wait after the ``attempts``-th failure (1-based) before trying again."""
    return min(RETRY_FIRST_S * 2.0 ** max(attempts - 1, 0), RETRY_MAX_S)


def cancel_swallowed() -> None:
    """Re-raise a cancellation that pymodbus swallowed. Python 3.11's ``asyncio.wait_for`` (pymodbus awaits
    every connect and every answer with it) returns the result instead of raising when the cancel arrives
    as the result does; the task's pending cancel count stays, and a cancelled driver would poll on (its
    teardown hung for 300 s once). Called after every pymodbus await."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


def exception_text(code: int) -> str:
    return f"0x{code:02X} {EXCEPTION_MEANING.get(code, 'Unknown exception')}"


FUNCTION_CODE = {"coil": 1, "discrete": 2, "holding": 3, "input": 4}  # reads (V1.1b3, 6.1-6.4)
WRITE_FUNCTION_CODE = {"coil": 15, "holding": 16}  # writes (6.11, 6.12)


# ---- per-unit state: discovery, reading, writing ------------------------------------------------------


@dataclass
class DiscoveryState:
    """Where each point lives. A SunSpec device is found by walking its model chain; until one walk found
    every model the map needs it is walked again on the retry schedule (a booting or busy device answers
    discovery wrongly for a while, then heals), while the points already found are read."""

    addr: dict[str, tuple[str, int]] = field(default_factory=dict)
    complete: bool = False
    attempts: int = 0
    at_us: int = 0  # cycle time of the last attempt

    def due(self, now_us: int) -> bool:
        return not self.complete and now_us - self.at_us >= retry_after_s(self.attempts) * US


@dataclass
class ReadState:
    """What reading keeps: scale factors, registers the device rejects, request plans, poll times."""

    rejected: set[tuple[str, int]] = field(default_factory=set)  # never bridged by a read again
    sf: dict[str, int | None] = field(default_factory=dict)  # absent: not read yet; None: unreadable
    plans: dict[frozenset[PollClass], list[Request]] = field(default_factory=dict)
    last_poll: dict[PollClass, float] = field(default_factory=dict)  # s of the link's real clock
    readback_due: set[PollClass] = field(default_factory=set)  # poll classes holding just-written set points


@dataclass
class Expect:
    value: Any
    done_mono: float  # when the write was acknowledged (or refused)
    failed: bool = False


@dataclass
class Refusal:
    """A value the device refused with an exception reply: re-sent on the retry schedule, not every cycle."""

    value: Any
    attempts: int
    at_us: int  # cycle time the refused write was queued

    def due(self, now_us: int) -> bool:
        return now_us - self.at_us >= retry_after_s(self.attempts) * US


@dataclass
class WriteState:
    """What writing keeps: set points queued by the scan, what was sent when, the acknowledgements the
    read-back is compared with, and refusals."""

    pending: dict[str, Any] = field(default_factory=dict)
    held: dict[str, Any] = field(default_factory=dict)  # waiting for their address or scale factor
    last_sent: dict[str, tuple[Any, int]] = field(default_factory=dict)  # key -> (value, cycle now_us)
    expect: dict[str, Expect] = field(default_factory=dict)
    mismatch: dict[str, bool] = field(default_factory=dict)
    refused: dict[str, Refusal] = field(default_factory=dict)


@dataclass
class UnitState:
    """One unit (device id) on the link: its map and naming (fixed), and its discovery, read and write state."""

    cfg: UnitConfig
    map: IOMap
    naming: Naming
    disc: DiscoveryState = field(default_factory=DiscoveryState)
    rd: ReadState = field(default_factory=ReadState)
    wr: WriteState = field(default_factory=WriteState)
    logged: dict[str, str] = field(default_factory=dict)  # condition key -> message logged (see _note)
    wake: asyncio.Event | None = None
    by_key: dict[str, Point] = field(init=False)
    sf_keys: frozenset[str] = field(init=False)
    names: dict[str, list[str]] = field(init=False)  # tags a point's read delivers

    def __post_init__(self) -> None:
        self.by_key = {p.key: p for p in self.map.points}
        self.sf_keys = frozenset(p.sf for p in self.map.points if p.sf is not None)
        self.names = {}
        n = self.naming
        for p in self.map.points:
            if p.readback:
                self.names[p.key] = [n(readback_name(p))]
            elif p.direction == "output":
                self.names[p.key] = []
            else:
                self.names[p.key] = ([n(p.tag)] if p.tag else []) + [n(b) for b in p.bits or {}]
        for a, b in self.map.holes:
            self.rd.rejected.update((table, x) for table in ("holding", "input") for x in range(a, b + 1))

    def reconnected(self) -> None:
        """A new connection: the device may have reverted or restarted meanwhile. Discover again, re-read
        the scale factors before any write, and write only what the scan commands from now on (a value
        queued before the link came back must not restart the reversion timer of a device whose scan may
        be gone). Registers learned to be rejected stay learned."""
        self.disc = DiscoveryState()
        self.rd = ReadState(rejected=self.rd.rejected)
        self.wr = WriteState()


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
        self._lost: asyncio.Future[None] | None = None  # resolved by pymodbus when the connection drops
        self._link_logged: dict[str, str] = {}
        self._invalid_streak = 0  # invalid answers in a row on this link
        self._dropped: str | None = None  # why the framing screen dropped an answer since the last request
        self.requests = 0  # request counter (benchmarks)
        self.faults: Counter[str] = Counter()  # faults seen on the wire, by kind (diagnostics, tests)

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
            self._lost = asyncio.get_running_loop().create_future()
            self.client = self.make_client()
            ok = await self._connect()
            if self._closed:
                break
            if not ok:
                self._all_bad(f"cannot connect to {self.describe()}")
                self.client.close()
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, self.params.backoff_max_s)
                continue
            self.connected = True
            self._invalid_streak = 0
            self._note(None, "link", f"connected to {self.describe()}", logging.INFO)
            tasks = [asyncio.create_task(self._unit_loop(u, io)) for u in self.units]
            try:
                # A unit task ends only by failing (LinkDown); a dropped connection ends the link at once,
                # even while a request is in flight or the units wait for the next cycle.
                done, _ = await asyncio.wait([*tasks, self._lost], return_when=asyncio.FIRST_COMPLETED)
                for t in done:
                    exc = None if t is self._lost or t.cancelled() else t.exception()
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

    async def _connect(self) -> bool:
        try:
            ok = bool(await self.client.connect())
        except Exception as exc:  # pymodbus raises on some serial errors instead of returning False
            log.debug("%s: connect raised %r", self.name, exc)
            ok = False
        try:
            cancel_swallowed()
        except asyncio.CancelledError:
            self.client.close()
            raise
        return ok

    def _on_connection(self, up: bool) -> None:
        """pymodbus's connect/disconnect callback (``trace_connect``). pymodbus itself lets a request in
        flight wait out its timeout and retries on a closed connection; this ends the link at once."""
        if not up and self._lost is not None and not self._lost.done():
            self._lost.set_result(None)

    def on_outputs(self, now_us: int, outputs: Mapping[str, Any], changed: Mapping[str, Any]) -> None:
        for (tag, i), p in self._outputs.items():
            if tag not in outputs or outputs[tag] is None:
                continue
            wr = self.units[i].wr
            value = outputs[tag]
            refused = wr.refused.get(p.key)
            if refused is not None and refused.value == value:
                due = refused.due(now_us)  # the device refused this very value: the retry schedule decides
            else:
                last = wr.last_sent.get(p.key)
                due = (
                    last is None
                    or tag in changed
                    or last[0] != value
                    or (not p.nonvolatile and now_us - last[1] >= self.units[i].map.refresh_s * US * self.site.speed)
                )
            if due:
                wr.pending[p.key] = value
                wr.last_sent[p.key] = (value, now_us)
        # Every cycle wakes the units: writes go out at once and the fast poll runs right after the scan
        # committed, in the idle part of the period, never racing the next deadline for the GIL.
        for u in self.units:
            if u.wake is not None:
                u.wake.set()

    async def close(self, safe_outputs: Mapping[str, Any]) -> None:
        self._closed = True
        for (tag, i), p in self._outputs.items():
            if tag in safe_outputs and safe_outputs[tag] is not None:
                self.units[i].wr.pending[p.key] = safe_outputs[tag]
        if self.client is not None and self.connected:
            try:
                async with asyncio.timeout(self.params.close_timeout_s):
                    await asyncio.gather(*(self._write(u) for u in self.units))
            except (TimeoutError, LinkDown, Exception) as exc:
                log.warning("%s: safe outputs not confirmed at close: %r", self.name, exc)
            held = sorted(k for u in self.units for k in u.wr.held)
            if held:
                log.warning(
                    "%s: safe outputs %s not written at close (scale factor or address unknown)", self.name, held
                )
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
                await self._discover(u, io)
                await self._read(u, io, set(PollClass))
            return True
        except LinkDown:
            return False
        finally:
            self.client.close()

    # -- one unit: its loop and its round -------------------------------------------------------
    async def _unit_loop(self, u: UnitState, io: IOContext) -> None:
        u.reconnected()
        await self._discover(u, io)
        await self._read(u, io, set(PollClass))  # every point once: the scale factors before any write
        u.wr.pending.update(self._init_writes(u))
        period = self.site.period_us / self.site.speed / US  # the scan's real period
        assert u.wake is not None
        while True:
            u.wake.clear()
            if u.disc.due(io.now_us()):
                await self._discover(u, io)
            await self._round(u, io)
            try:
                # Paced by the scan's cycles (on_outputs); a timer of two periods only when no scan runs
                # (reads are harmless without a scan; writes never happen without one). asyncio.timeout,
                # not wait_for: Python 3.11's wait_for swallows a cancellation that arrives as the event is
                # set, and the cancelled driver would poll on (a test hung in teardown for 300 s).
                async with asyncio.timeout(2 * period):
                    await u.wake.wait()
            except TimeoutError:
                pass

    def _init_writes(self, u: UnitState) -> dict[str, Any]:
        """The map's writes at connect. The reversion timeout is written as the map says times the speed:
        a simulated device counts it in the plant's time, and at --speed N the refresh that holds it off
        comes every ``refresh_s`` of real time (on a real site the speed is 1)."""
        out: dict[str, Any] = {w.point: w.value for w in u.map.init}
        rv = u.map.reversion
        tp = rv.timeout_point if rv is not None else None
        if tp is not None and tp in out and self.site.speed != 1:
            out[tp] = out[tp] * self.site.speed
        return out

    async def _round(self, u: UnitState, io: IOContext) -> None:
        """One round, always in this order: write -> read -> read-back.

        1. write: the set points the scan committed since the last round go out first;
        2. read: the poll classes that are due;
        3. read-back: in that same read, the poll classes of the set points just written, so that the
           safety layer sees the device acknowledge a set point (a trip's zero above all) within the
           clearing time, not a poll period later. Values and comparisons are delivered as one batch.
        """
        await self._write(u)
        due = self._due(u, io) | u.rd.readback_due
        u.rd.readback_due = set()
        await self._read(u, io, due)

    @staticmethod
    def _due(u: UnitState, io: IOContext) -> set[PollClass]:
        """The fast class every round (every scan); the others when their period has passed in real time.

        Poll periods count on the same clock as the staleness that judges the reads: real time, also on a
        simulated site run at --speed N (docs/depot.md "Poll periods under --speed"). A site at N x is then the
        real site time-lapsed: the same requests per second on the wire and the same margin between a
        class's period and its staleness bound, while each read covers N x more of the plant's time, as
        each scan does. On the cycle clock every class fell due every scan at N = 100, the I/O fell behind
        and the fast points went stale (comms_lost)."""
        now = io.link_us() / US
        due = {PollClass.FAST}
        periods = u.cfg.poll or u.map.poll
        for cls, per in ((PollClass.NORMAL, periods.normal_s), (PollClass.SLOW, periods.slow_s)):
            if now - u.rd.last_poll.get(cls, -1e18) >= per:
                due.add(cls)
        return due

    # -- reading ----------------------------------------------------------------------------------
    @staticmethod
    def _points_for(u: UnitState, classes: set[PollClass]) -> list[Point]:
        """Points read when these poll classes are due; a scale factor is read with its fastest user."""
        users: dict[str, PollClass] = {}
        order = list(PollClass)
        for p in u.map.points:
            if (p.tag or p.bits) and (p.direction == "input" or p.readback) and p.sf is not None:
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
            if cls is not None and cls in classes and p.key in u.disc.addr:
                out.append(p)
        return out

    def _plan(self, u: UnitState, classes: set[PollClass]) -> list[Request]:
        key = frozenset(classes)
        plan = u.rd.plans.get(key)
        if plan is None:
            gap = u.cfg.max_gap if u.cfg.max_gap is not None else u.map.max_gap
            spans = [Span(*u.disc.addr[p.key], p.count, p.key) for p in self._points_for(u, classes)]
            plan = u.rd.plans[key] = plan_reads(spans, gap, u.rd.rejected)
        return plan

    async def _read(self, u: UnitState, io: IOContext, classes: set[PollClass]) -> None:
        """Read the points of these poll classes and deliver them (and the read-back checks) as one batch."""
        started = time.monotonic()
        now_s = io.link_us() / US
        for cls in classes:
            u.rd.last_poll[cls] = now_s
        raw: dict[str, list[int]] = {}
        failed: dict[str, str] = {}
        for req in list(self._plan(u, classes)):
            if u.wr.pending:  # a set point the scan committed meanwhile (a trip's zero) goes ahead of reads
                await self._write(u)
            await self._read_request(u, req, raw, failed)
        io.deliver(self._decode(u, raw, failed, io.now_us(), started))
        self._release_held(u)

    async def _read_request(
        self, u: UnitState, req: Request, raw: dict[str, list[int]], failed: dict[str, str]
    ) -> None:
        """One planned request: its spans' registers into ``raw``, or their keys into ``failed`` (the one
        failure path of a read: no valid answer and exception replies alike)."""
        where = f"r{req.table}{req.address}"
        what = f"{req.table} {req.address}+{req.count}"
        res: list[int] | int | str  # registers, an exception code, or why there is no valid answer
        try:
            res = await self._fetch(u, req.table, req.address, req.count)
        except NoAnswer as exc:
            res = f"no valid answer to read {what}: {exc}"
        if isinstance(res, int):
            msg = f"read {what}: exception {exception_text(res)}"
            if res == 0x02 and len(req.spans) > 1 and self._learn_rejected(u, req):
                # A bridged gap holds a register the device rejects: never bridge it again, and read this
                # request's points again, split.
                self._note(u, where, msg + "; not bridging that gap again", logging.INFO)
                for sub in plan_reads(req.spans, 0, u.rd.rejected):
                    await self._read_request(u, sub, raw, failed)
                return
            res = msg
        if isinstance(res, str):
            self._note(u, where, res)
            failed.update({s.key: res for s in req.spans})
            return
        self._note(u, where, None)
        for s in req.spans:
            raw[s.key] = res[s.address - req.address : s.end - req.address]

    async def _fetch(self, u: UnitState, table: str, address: int, count: int) -> list[int] | int:
        """Registers/bits, or the device's exception code. NoAnswer: no valid answer; LinkDown: link gone."""
        from pymodbus.exceptions import ConnectionException, ModbusIOException

        c = self.client
        fn = {
            "holding": c.read_holding_registers,
            "input": c.read_input_registers,
            "coil": c.read_coils,
            "discrete": c.read_discrete_inputs,
        }[table]
        self.requests += 1
        self._dropped = None
        try:
            rr = await fn(address, count=count, device_id=u.cfg.unit)
        except ConnectionException as exc:
            raise LinkDown(str(exc)) from exc
        except ModbusIOException as exc:
            cancel_swallowed()
            if not c.connected:
                raise LinkDown("no answer; connection closed") from None
            self._invalid("no_answer", f"{self._dropped} answer dropped" if self._dropped else str(exc))
        cancel_swallowed()
        code = self._check_answer(rr, FUNCTION_CODE[table], count)
        if code is not None:
            return code
        if table in ("coil", "discrete"):
            return [int(b) for b in rr.bits[:count]]
        return list(rr.registers)

    def _check_answer(self, rr: Any, fc: int, count: int | None) -> int | None:
        """The exception code of an exception reply, None for a valid answer; NoAnswer for an answer that
        is not one to this request (pymodbus accepts any function code and a short register list)."""
        got = int(rr.function_code)
        if got & 0x7F != fc:
            self._invalid("wrong_function", f"answer with function code {got} to a function {fc} request")
        if rr.isError():
            self._invalid_streak = 0
            self.faults["exception"] += 1
            return int(getattr(rr, "exception_code", 0x04))
        if count is not None:
            bits = fc in (1, 2)
            n = len(rr.bits) if bits else len(rr.registers)
            if (n < count) if bits else (n != count):  # bits come padded to whole bytes
                self._invalid("wrong_length", f"answer holds {n} values, {count} asked")
        self._invalid_streak = 0
        return None

    def _invalid(self, kind: str, why: str) -> NoReturn:
        """Count an invalid answer; reconnect after as many in a row as pymodbus allows timeouts (a stream
        that keeps carrying nonsense is better restarted)."""
        self.faults[kind] += 1
        self._invalid_streak += 1
        if self._invalid_streak >= self.params.retries + 3:
            raise LinkDown(f"{self._invalid_streak} invalid answers in a row (last: {why})")
        raise NoAnswer(why)

    def _learn_rejected(self, u: UnitState, req: Request) -> bool:
        spans = sorted(req.spans, key=lambda s: s.address)
        gaps: set[tuple[str, int]] = set()
        reach = spans[0].end
        for s in spans[1:]:
            gaps.update((req.table, a) for a in range(reach, s.address))
            reach = max(reach, s.end)
        new = gaps - u.rd.rejected
        if not new:
            return False
        u.rd.rejected |= new
        u.rd.plans.clear()
        return True

    def _decode(
        self, u: UnitState, raw: dict[str, list[int]], failed: dict[str, str], now_us: int, started: float
    ) -> list[TagUpdate]:
        """Registers to tag updates. Whatever cannot be decoded is bad, never a number; an undecodable or
        unread read-back is a communications fault (read-back and mismatch tags bad), never a mismatch."""
        m = u.map
        sf = u.rd.sf
        wr = u.wr
        out: list[TagUpdate] = []
        for key in u.sf_keys:  # scale factors first: values need them
            if key in raw:
                try:
                    sf[key] = int(decode(m, u.by_key[key], raw[key], {}))
                except DecodeError:
                    sf[key] = None
            elif key in failed:
                sf[key] = None
        readback_seen = False
        readback_bad = False
        for key in (*raw, *failed):
            p = u.by_key[key]
            names = u.names[key]
            if not names:
                continue
            if key in failed:
                out.extend(TagUpdate(n, None, Quality.BAD, now_us) for n in names)
                readback_bad = readback_bad or p.readback
                continue
            try:
                value = decode(m, p, raw[key], sf)
            except DecodeError as exc:
                self._note(u, f"d{key}", str(exc))
                out.extend(TagUpdate(n, None, Quality.BAD, now_us) for n in names)
                readback_bad = readback_bad or p.readback
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
        if m.mismatch_tag and (readback_seen or readback_bad):
            if readback_bad:
                out.append(TagUpdate(u.naming(m.mismatch_tag), None, Quality.BAD, now_us))
            else:
                out.append(TagUpdate(u.naming(m.mismatch_tag), any(wr.mismatch.values()), Quality.GOOD, now_us))
        return out

    def _check_readback(self, u: UnitState, p: Point, value: Any, started: float) -> None:
        wr = u.wr
        exp = wr.expect.get(p.key)
        if exp is None or started < exp.done_mono:
            return  # nothing written yet, or this read may predate the write
        if exp.failed:
            wr.mismatch[p.key] = True
            return
        if isinstance(value, (int, float)) and not isinstance(value, bool) and isinstance(exp.value, (int, float)):
            tol = max(p.tolerance, quantum(u.map, p, u.rd.sf) / 2 + 1e-9)
            bad = abs(float(value) - float(exp.value)) > tol
        else:
            bad = value != exp.value
        if bad != wr.mismatch.get(p.key, False):
            self._note(u, f"m{p.key}", f"{p.tag}: wrote {exp.value!r}, device holds {value!r}" if bad else None)
        wr.mismatch[p.key] = bad

    # -- writing ----------------------------------------------------------------------------------
    def _hold_reason(self, u: UnitState, p: Point) -> str | None:
        """Why a write of this point cannot be encoded yet, or None. A set point is never written with a
        guessed scale factor: it waits (the device keeps what it holds, its reversion timer still runs)."""
        if p.key not in u.disc.addr:
            return "address not discovered"
        if p.sf is not None and u.rd.sf.get(p.sf) is None:
            return f"scale factor {p.sf} unknown"
        return None

    def _release_held(self, u: UnitState) -> None:
        """After a read: queue held writes whose scale factor is now known. A scale factor that was read
        and is unusable (not implemented, unreadable) is a fault worth one warning; one not read yet (the
        normal start) is not."""
        wr = u.wr
        for key in list(wr.held):
            p = u.by_key[key]
            why = self._hold_reason(u, p)
            if why is None:
                wr.pending[key] = wr.held.pop(key)
                self._note(u, f"h{key}", None)
            elif p.sf is not None and p.sf in u.rd.sf and p.key in u.disc.addr:
                self._note(u, f"h{key}", f"holding write of {key}: {why} (read, but not usable)")

    async def _write(self, u: UnitState) -> None:
        """Write the pending set points (contiguous ones in one request); note what the read-back expects."""
        wr = u.wr
        if not wr.pending:
            return
        from pymodbus.exceptions import ConnectionException, ModbusIOException

        pending, wr.pending = wr.pending, {}
        m = u.map
        items: list[tuple[str, int, list[int]]] = []
        owners: dict[tuple[str, int], str] = {}
        for key, value in pending.items():
            p = u.by_key[key]
            if self._hold_reason(u, p) is not None:
                wr.held[key] = value
                continue
            wr.held.pop(key, None)
            try:
                regs = encode(m, p, value, u.rd.sf)
            except (ValueError, DecodeError) as exc:
                self._note(u, f"w{key}", f"cannot write {p.key}={value!r}: {exc}")
                wr.expect[key] = Expect(value, time.monotonic(), failed=True)
                if p.readback:
                    wr.mismatch[key] = True
                wr.last_sent.pop(key, None)
                continue
            table, addr = u.disc.addr[key]
            items.append((table, addr, regs))
            owners[(table, addr)] = key
        # A written set point is read back in the same round, whatever its poll class (see _round).
        u.rd.readback_due |= {u.by_key[k].poll for k in owners.values() if u.by_key[k].readback}
        c = self.client
        for w in plan_writes(items):
            keys = [k for (t, a), k in owners.items() if t == w.table and w.address <= a < w.address + w.count]
            what = f"write {w.table} {w.address}+{w.count}"
            self.requests += 1
            self._dropped = None
            try:
                if w.table == "coil":
                    rr = await c.write_coils(w.address, [bool(v) for v in w.values], device_id=u.cfg.unit)
                else:
                    rr = await c.write_registers(w.address, w.values, device_id=u.cfg.unit)
                cancel_swallowed()
                code = self._check_answer(rr, WRITE_FUNCTION_CODE[w.table], None)
            except ConnectionException as exc:
                for k in keys:
                    wr.pending.setdefault(k, pending[k])
                raise LinkDown(str(exc)) from exc
            except (ModbusIOException, NoAnswer) as exc:
                cancel_swallowed()
                self._note(u, f"w{w.address}", f"{what}: no valid answer ({exc})")
                for k in keys:
                    wr.last_sent.pop(k, None)  # sent again by the next cycle's on_outputs
                if not c.connected:
                    raise LinkDown("connection closed") from None
                if isinstance(exc, ModbusIOException):
                    self.faults["no_answer"] += 1
                continue
            done = time.monotonic()
            if code is not None:
                self._refused(u, w.address, what, code, {k: pending[k] for k in keys}, done)
                continue
            self._note(u, f"w{w.address}", None)
            for k in keys:
                wr.expect[k] = Expect(pending[k], done)
                ref = wr.refused.pop(k, None)
                if ref is not None and ref.attempts > 1:
                    log.info("%s unit %d: %s accepted after %d refusals", self.name, u.cfg.unit, k, ref.attempts)

    def _refused(self, u: UnitState, address: int, what: str, code: int, values: dict[str, Any], done: float) -> None:
        """The device answered a write with an exception: the set point is not held (mismatch), and the same
        value is sent again on the retry schedule only; logged once, then summarised every SUMMARY_EVERY."""
        wr = u.wr
        attempts = 1
        for k, value in values.items():
            wr.expect[k] = Expect(value, done, failed=True)
            if u.by_key[k].readback:
                wr.mismatch[k] = True
            prev = wr.refused.get(k)
            attempts = prev.attempts + 1 if prev is not None and prev.value == value else 1
            wr.refused[k] = Refusal(value, attempts, wr.last_sent.get(k, (value, 0))[1])
        self.faults["refused_write"] += 1
        msg = f"{what}: exception {exception_text(code)}; sent again after 1, 2, 4 ... {RETRY_MAX_S:.0f} s"
        self._note(u, f"w{address}", msg)  # cleared (and "recovered" logged) when a write is accepted
        if attempts % SUMMARY_EVERY == 0:
            log.warning("%s unit %d: %s still refused after %d attempts", self.name, u.cfg.unit, what, attempts)

    # -- discovery --------------------------------------------------------------------------------
    async def _discover(self, u: UnitState, io: IOContext) -> None:
        """Resolve addresses; for SunSpec maps, find ``SunS`` and walk the model chain. Any failure (no
        answer, an exception reply such as 0x06 busy while booting, a garbled chain, a model missing)
        leaves discovery incomplete and retried (see DiscoveryState); the models found meanwhile are read."""
        m = u.map
        d = u.disc
        d.addr = {p.key: (p.table, p.address) for p in m.points if p.address is not None}
        if m.discovery is None:
            d.complete = True
            return
        d.attempts += 1
        d.at_us = io.now_us()
        bases, why = await self._walk_sunspec(u, m.discovery.bases)
        missing = [mid for mid in m.discovery.models if mid not in bases]
        d.complete = not missing
        if d.complete:
            d.attempts = 0
            self._note(u, "discovery", None)
        else:
            why = why or f"SunSpec models {missing} not found (have {sorted(bases)})"
            self._note(u, "discovery", f"SunSpec discovery incomplete: {why}; tried again after 1, 2, 4 ... 30 s")
        for p in m.points:
            if p.model is not None and p.model in bases:
                d.addr[p.key] = (p.table, bases[p.model] + (p.model_offset or 0))
        u.rd.plans.clear()  # addresses may have changed: plan again, and read everything in the next round
        u.rd.last_poll.clear()
        if missing:
            now = io.now_us()
            io.deliver(
                [TagUpdate(n, None, Quality.BAD, now) for p in m.points if p.model in missing for n in u.names[p.key]]
            )

    async def _walk_sunspec(self, u: UnitState, bases: list[int]) -> tuple[dict[int, int], str]:
        """Model id -> address of its ID register, and why the walk stopped short ('' if it did not)."""
        why = ""
        for base in bases:
            try:
                res = await self._fetch(u, "holding", base, 2)
            except NoAnswer as exc:
                why = f"no valid answer at {base}: {exc}"
                continue
            if res != list(SUNS):
                continue
            found: dict[int, int] = {}
            addr = base + 2
            for _ in range(256):  # a chain longer than this is a broken device
                if addr + 2 > 0x10000:
                    return found, f"model chain runs past register 65535 at {addr}"
                try:
                    hdr = await self._fetch(u, "holding", addr, 2)
                except NoAnswer as exc:
                    return found, f"no valid answer in the model chain at {addr}: {exc}"
                if isinstance(hdr, int):
                    return found, f"exception {exception_text(hdr)} in the model chain at {addr}"
                if hdr[0] == SUNSPEC_END:
                    return found, ""
                found.setdefault(hdr[0], addr)
                addr += hdr[1] + 2
            return found, "model chain longer than 256 models"
        return {}, f"no SunSpec marker at {bases}" + (f" ({why})" if why else "")

    # -- diagnostics --------------------------------------------------------------------------
    def _all_bad(self, why: str) -> None:
        self._note(None, "link", why)
        if self._io is None:
            return
        now = self._io.now_us()
        self._io.deliver([TagUpdate(s.name, None, Quality.BAD, now) for s in self._specs if s.is_input])

    def _count_dropped(self, kind: str) -> None:
        """Called by a framing screen (TCP) for an answer it dropped before pymodbus decoded it."""
        self.faults[kind] += 1
        self._dropped = kind

    def _note(self, u: UnitState | None, key: str, msg: str | None, level: int = logging.WARNING) -> None:
        """Log a condition once when it appears and once when it clears (never every cycle)."""
        store = u.logged if u is not None else self._link_logged
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
