"""Read and write planning: the fewest Modbus requests for a set of points.

Why: on loopback a 125-register read costs about 1.3 x a 10-register read (docs/reference.md), and on a
9600-baud RS-485 line each request adds a turnaround of several milliseconds, so the request count is
the cost. Reads are coalesced left to right (greedy is optimal for covering sorted intervals with a
maximum request length and a maximum bridged gap); a gap is never bridged when it contains a register
the device rejects (a read spanning it would fail with exception 0x02 as a whole).
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass, field

from runtime.io.maps import (
    MODBUS_MAX_READ_BITS,
    MODBUS_MAX_READ_REGS,
    MODBUS_MAX_WRITE_BITS,
    MODBUS_MAX_WRITE_REGS,
)


@dataclass(frozen=True)
class Span:
    """One value on the wire: ``count`` registers (or bits) at ``address`` of ``table``."""

    table: str
    address: int
    count: int
    key: str = ""

    @property
    def end(self) -> int:  # exclusive
        return self.address + self.count


@dataclass
class Request:
    table: str
    address: int
    count: int
    spans: list[Span] = field(default_factory=list)

    @property
    def end(self) -> int:
        return self.address + self.count


def read_limit(table: str) -> int:
    return MODBUS_MAX_READ_BITS if table in ("coil", "discrete") else MODBUS_MAX_READ_REGS


def plan_reads(
    spans: Iterable[Span], max_gap: int, rejected: Collection[tuple[str, int]] = (), limit: int | None = None
) -> list[Request]:
    """Coalesce spans into requests of at most ``limit`` registers, bridging gaps of at most ``max_gap``
    unused registers that contain no rejected register. Overlapping spans share a request."""
    by_table: dict[str, list[Span]] = {}
    for s in spans:
        by_table.setdefault(s.table, []).append(s)
    out: list[Request] = []
    for table in sorted(by_table):
        lim = limit or read_limit(table)
        cur: Request | None = None
        for s in sorted(by_table[table], key=lambda s: (s.address, s.count)):
            if s.count > lim:
                raise ValueError(f"{s.key}: {s.count} registers exceed one request ({lim})")
            if cur is not None:
                gap = s.address - cur.end
                new_end = max(cur.end, s.end)
                if (
                    new_end - cur.address <= lim
                    and gap <= max_gap
                    and not any((table, a) in rejected for a in range(cur.end, s.address))
                ):
                    cur.count = new_end - cur.address
                    cur.spans.append(s)
                    continue
                out.append(cur)
            cur = Request(table, s.address, s.count, [s])
        if cur is not None:
            out.append(cur)
    return out


def min_requests(
    spans: Sequence[Span], max_gap: int, rejected: Collection[tuple[str, int]] = (), limit: int | None = None
) -> int:
    """The true minimum by dynamic programming over sorted spans (an independent check of the greedy
    planner, used by tests and the benchmark)."""
    total = 0
    for table in {s.table for s in spans}:
        ss = sorted((s for s in spans if s.table == table), key=lambda s: (s.address, s.count))
        lim = limit or read_limit(table)
        n = len(ss)
        best = [0] + [n + 1] * n  # best[i]: fewest requests covering ss[:i]
        for i in range(1, n + 1):
            for j in range(i):  # the last request covers ss[j:i]
                reach, ok = ss[j].end, True
                for s in ss[j + 1 : i]:
                    if s.address - reach > max_gap or any((table, x) in rejected for x in range(reach, s.address)):
                        ok = False
                        break
                    reach = max(reach, s.end)
                if ok and reach - ss[j].address <= lim:
                    best[i] = min(best[i], best[j] + 1)
        total += best[n]
    return total


@dataclass
class Write:
    table: str
    address: int
    values: list[int]

    @property
    def count(self) -> int:
        return len(self.values)


def plan_writes(items: Iterable[tuple[str, int, Sequence[int]]]) -> list[Write]:
    """Merge writes to exactly contiguous addresses (never bridging: that would overwrite registers
    nobody asked to change) into FC16/FC15 requests of at most 123 registers / 1968 coils."""
    by_table: dict[str, list[tuple[int, Sequence[int]]]] = {}
    for table, addr, vals in items:
        by_table.setdefault(table, []).append((addr, vals))
    out: list[Write] = []
    for table in sorted(by_table):
        lim = MODBUS_MAX_WRITE_BITS if table == "coil" else MODBUS_MAX_WRITE_REGS
        cur: Write | None = None
        for addr, vals in sorted(by_table[table], key=lambda x: x[0]):
            if cur is not None and addr == cur.address + cur.count and cur.count + len(vals) <= lim:
                cur.values.extend(vals)
                continue
            if cur is not None:
                out.append(cur)
            cur = Write(table, addr, list(vals))
        if cur is not None:
            out.append(cur)
    return out
