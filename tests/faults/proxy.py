"""A Modbus TCP fault-injection proxy: sits between a driver and a real server and misbehaves on command.

Why a proxy and not a faulty server: the faults a field device or gateway shows (a late answer, a lost
frame, a garbled or cut frame, a stale transaction id, a wrong function code, a hung or dropped
connection, an exception reply) happen on the wire, and the driver must meet them there, through the
real pymodbus client, while the plant behind stays an ordinary Modbus peer.

Use::

    proxy = FaultProxy(upstream_port)            # listens on a free loopback port
    await proxy.start()
    proxy.inject(Rule("exception", code=0x06, function={3}, times=2))   # the next two FC3 reads: busy
    proxy.inject(Rule("hang"))                   # from now on: swallow every request
    proxy.clear()                                # heal
    await proxy.drop_connections()               # close every client connection now
    await proxy.stop()                           # bounded

A request is matched against the rules in order; the first rule that matches it (unit, function code,
address range) and still has ``times`` left acts on it. Each client connection gets its own upstream
connection, so transaction ids pass through unchanged unless a rule rewrites them.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from dataclasses import dataclass, field
from typing import Literal

from tests.ports import free_port

Action = Literal[
    "delay",  # answer after delay_s
    "drop",  # forward the request, throw the answer away (that one request times out)
    "garble",  # answer with the PDU's bytes (function code included) scrambled, MBAP header intact
    "garbage",  # answer with random bytes instead of a frame (no valid MBAP header)
    "truncate",  # answer with the frame's last ``cut`` bytes missing (the MBAP length still says more)
    "reorder",  # hold this answer back and send it after the next one
    "wrong_tid",  # answer with the transaction id + tid_delta (0 = answer with transaction id 0)
    "wrong_fc",  # answer with another function code (3 <-> 4, else + 1), body unchanged
    "hang",  # never answer this request, nor any later one on the connection, until cleared
    "close",  # close the client's connection instead of answering
    "exception",  # answer with Modbus exception ``code`` without asking the server
]

# Function codes whose request starts with a start address (Modbus Application Protocol V1.1b3, 6.1-6.12).
ADDRESSED = {1, 2, 3, 4, 5, 6, 15, 16}
WRITES = {5, 6, 15, 16}


@dataclass
class Rule:
    action: Action
    unit: int | None = None  # None: any unit
    function: set[int] | None = None  # None: any function code
    addresses: range | None = None  # matches a request whose registers overlap this range
    times: int | None = None  # None: until cleared
    delay_s: float = 0.0
    code: int = 0x04  # exception code
    tid_delta: int = 1
    cut: int = 2
    hits: int = 0

    def matches(self, unit: int, fc: int, start: int, count: int) -> bool:
        if self.times is not None and self.hits >= self.times:
            return False
        if self.unit is not None and unit != self.unit:
            return False
        if self.function is not None and fc not in self.function:
            return False
        if self.addresses is not None:
            if fc not in ADDRESSED:
                return False
            return start < self.addresses.stop and self.addresses.start < start + max(count, 1)
        return True


@dataclass
class Seen:
    """A request as the proxy saw it (tests assert on what reached the wire)."""

    unit: int
    function: int
    address: int
    count: int
    action: str | None


def _request_span(pdu: bytes) -> tuple[int, int, int]:
    """(function code, start address, register/bit count) of a request PDU."""
    fc = pdu[0]
    if fc not in ADDRESSED or len(pdu) < 5:
        return fc, -1, 0
    start = int.from_bytes(pdu[1:3], "big")
    count = 1 if fc in (5, 6) else int.from_bytes(pdu[3:5], "big")
    return fc, start, count


async def _read_frame(reader: asyncio.StreamReader) -> bytes:
    """One Modbus TCP ADU: the 6-byte MBAP prefix, then ``length`` bytes (unit id and PDU)."""
    head = await reader.readexactly(6)
    length = int.from_bytes(head[4:6], "big")
    return head + await reader.readexactly(length)


@dataclass
class FaultProxy:
    upstream_port: int
    upstream_host: str = "127.0.0.1"
    host: str = "127.0.0.1"
    port: int = field(default_factory=free_port)
    seed: int = 1
    rules: list[Rule] = field(default_factory=list)
    seen: list[Seen] = field(default_factory=list)
    connections: int = 0  # client connections accepted so far

    def __post_init__(self) -> None:
        self._rng = random.Random(self.seed)
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()
        self._healed = asyncio.Event()

    # -- commands ---------------------------------------------------------------------------------
    def inject(self, *rules: Rule) -> None:
        self.rules.extend(rules)
        self._healed.clear()

    def clear(self) -> None:
        """Heal: forget every rule; hung connections answer again (from their next request on)."""
        self.rules.clear()
        self._healed.set()

    def count(self, action: str | None = None, function: int | None = None) -> int:
        return sum(1 for s in self.seen if (action is None or s.action == action) and (function in (None, s.function)))

    async def drop_connections(self) -> None:
        for w in list(self._writers):
            w.close()
        for w in list(self._writers):
            with contextlib.suppress(Exception):
                await asyncio.wait_for(w.wait_closed(), 1.0)

    # -- life -------------------------------------------------------------------------------------
    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, self.host, self.port)

    async def stop(self) -> None:
        """Close the listener and every connection; bounded (a hung handler is cancelled)."""
        if self._server is not None:
            self._server.close()
        await self.drop_connections()
        for t in list(self._tasks):
            t.cancel()
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=2.0)
        if self._server is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._server.wait_closed(), 2.0)
            self._server = None

    # -- the wire ---------------------------------------------------------------------------------
    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)  # type: ignore[arg-type]
        self._writers.add(writer)
        self.connections += 1
        up_w: asyncio.StreamWriter | None = None
        held: bytes | None = None  # a reply held back by "reorder"
        hung = False
        try:
            up_r, up_w = await asyncio.open_connection(self.upstream_host, self.upstream_port)
            while True:
                req = await _read_frame(reader)
                unit = req[6]
                fc, start, count = _request_span(req[7:])
                rule = next((r for r in self.rules if r.matches(unit, fc, start, count)), None)
                if rule is not None:
                    rule.hits += 1
                self.seen.append(Seen(unit, fc, start, count, rule.action if rule else None))
                if hung and not self._healed.is_set():
                    continue
                hung = False
                action = rule.action if rule else None
                if action == "hang":
                    hung = True
                    continue
                if action == "close":
                    break
                if action == "exception":
                    body = bytes([unit, fc | 0x80, rule.code])  # type: ignore[union-attr]
                    writer.write(req[:4] + len(body).to_bytes(2, "big") + body)
                    await writer.drain()
                    continue
                up_w.write(req)
                await up_w.drain()
                reply = await _read_frame(up_r)
                assert rule is not None or action is None
                if action == "drop":
                    continue
                if action == "delay":
                    await asyncio.sleep(rule.delay_s)  # type: ignore[union-attr]
                reply = self._mangle(reply, rule) if rule is not None else reply
                if action == "reorder":
                    if held is not None:  # the one held before goes out now, late
                        writer.write(held)
                    held = reply
                    continue
                writer.write(reply)
                if held is not None:
                    writer.write(held)
                    held = None
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, OSError):
            pass
        except asyncio.CancelledError:
            # stop() cancels a handler held in a delay or hang; ending it normally keeps Python 3.11's
            # start_server callback from logging the cancellation as an error
            pass
        finally:
            self._writers.discard(writer)
            writer.close()
            if up_w is not None:
                up_w.close()
            self._tasks.discard(task)  # type: ignore[arg-type]

    def _mangle(self, reply: bytes, rule: Rule) -> bytes:
        a = rule.action
        if a == "garble":
            pdu = bytes(b ^ self._rng.randrange(1, 256) for b in reply[7:])
            return reply[:7] + pdu
        if a == "garbage":
            return bytes(self._rng.randrange(256) for _ in range(len(reply)))
        if a == "truncate":
            return reply[: -rule.cut]
        if a == "wrong_tid":
            tid = int.from_bytes(reply[0:2], "big")
            new = 0 if rule.tid_delta == 0 else (tid + rule.tid_delta) % 65536
            return new.to_bytes(2, "big") + reply[2:]
        if a == "wrong_fc":
            fc = reply[7]
            new_fc = {3: 4, 4: 3}.get(fc, (fc + 1) % 0x80)
            return reply[:7] + bytes([new_fc]) + reply[8:]
        return reply
