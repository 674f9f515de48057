"""Task ``localapi_modbus``: the site as a SunSpec DER on Modbus TCP (pymodbus server, task process).

A single site is one charger on unit ``site_unit`` (1). On a depot (``evses:`` in the site file) unit
``site_unit`` is the site aggregate (the site meter, the aggregate rating, the connection model 64902) and
EVSE n is unit ``n + evse_unit_offset`` with the one-charger models on its own tags (``evse<n>.``); a
write to its 704 controls becomes a mode request for that EVSE only (``evse: n``). With ``connection:`` the
64902 limits are writable and published for the allocator (connection.py).

A client not on the allowlist is refused at accept (the connection is closed before any request is read)
and logged. Every write is checked (sunspec.py) and answered with the protocol's own exception: 0x01
ILLEGAL FUNCTION for a read-only client or a coil function, 0x02 ILLEGAL DATA ADDRESS for anything but
whole writable 704 (or 64902 limit) points (and ``TripRst`` where ``trip_reset: true``), 0x03 ILLEGAL
DATA VALUE for a value out of range (a limit above the site file's rating), 0x06 SERVER DEVICE BUSY while
OUTBOX_MAX writes still wait for the scan (a client writing in a tight loop gets no unbounded queue). A
limit write is the task's own: applied at once, published, logged. Any other write that passes these
checks is accepted at the protocol level at once and becomes a command to the scan (a mode request, or
a trip reset; requests.py), sent in the order written; the vendor model's ``CmdSt``/``CmdRsn`` then
show the scan's answer, and a refused write's 704 controls go back to what the scan last accepted.
Nothing here reaches an output.
"""

from __future__ import annotations

import asyncio
import contextvars
import datetime as dt
import importlib
import logging
from importlib import metadata
from typing import Any

from pydantic import Field, model_validator

from runtime.api import SiteInfo
from runtime.tags import TagSpec
from runtime.tasks.base import Task, TaskContext, register_task
from runtime.tasks.localapi.access import AllowEntry, Role, role_of
from runtime.tasks.localapi.connection import ConnectionLimit, connection_specs
from runtime.tasks.localapi.linkstate import publish_state
from runtime.tasks.localapi.requests import InterfaceParams, ModeRequest, Requests
from runtime.tasks.localapi.sunspec import (
    BASE,
    DEVICE_BUSY,
    ILLEGAL_FUNCTION,
    ConnectionWrite,
    SunSpecImage,
    TripReset,
    WriteRefused,
)

log = logging.getLogger("v2g_plc.localapi.modbus")
OUTBOX_MAX = 64  # writes waiting for the scan (it answers one per cycle); a client writing faster is busy

# The client of the request being served (set per request task by the connection handler).
_PEER: contextvars.ContextVar[tuple[str, Role]] = contextvars.ContextVar("localapi_modbus_peer")
_REGISTER_FUNCTIONS = frozenset((3, 4, 6, 16, 22, 23))


class ModbusServerParams(InterfaceParams):
    host: str = Field("127.0.0.1", description="bind address (0.0.0.0 for every interface)")
    port: int = Field(502, ge=1, le=65535, description="502 in production needs CAP_NET_BIND_SERVICE")
    allow: list[AllowEntry] = Field(min_length=1, description="clients allowed to connect, with their role")
    site_unit: int = Field(1, ge=1, le=247, description="unit of the site (a depot's aggregate, or the one charger)")
    evse_unit_offset: int = Field(1, ge=0, le=246, description="on a depot EVSE n is unit n + evse_unit_offset")
    max_charge_w: float = Field(gt=0, le=1_000_000, description="charger charge rating: WSet range and 702")
    max_discharge_w: float = Field(ge=0, le=1_000_000, description="charger discharge rating: WSet range and 702")
    reversion_s: float = Field(60.0, ge=1, le=86_400, description="704 WSetRvrtTms until a client writes one")

    @model_validator(mode="after")
    def _units(self) -> ModbusServerParams:
        units = self.evse_units()
        bad = [n for n, u in units.items() if not 1 <= u <= 247]
        if bad:
            raise ValueError(f"EVSE {bad[0]} would be unit {units[bad[0]]}: Modbus units are 1..247 (evse_unit_offset)")
        clash = [n for n, u in units.items() if u == self.site_unit]
        if clash:
            raise ValueError(
                f"site_unit {self.site_unit} is EVSE {clash[0]}'s unit ({clash[0]} + evse_unit_offset "
                f"{self.evse_unit_offset}): give the site a unit no EVSE has"
            )
        return self

    def evse_units(self) -> dict[int, int]:
        """EVSE id -> its Modbus unit (empty on a single site)."""
        return {n: n + self.evse_unit_offset for n in self.evses}


def _import_peers() -> None:
    for name in ("pymodbus.server", "pymodbus.server.requesthandler", "pymodbus.simulator", "sunspec2.device"):
        importlib.import_module(name)


def _version() -> str:
    try:
        return metadata.version("v2g-plc")
    except metadata.PackageNotFoundError:
        return "0"


def site_now_utc(cx: TaskContext) -> dt.datetime:
    """The cycle clock as an aware UTC instant; elapsed time is added in UTC so DST never shifts it (as the
    price feeds do). A naive start is taken as UTC."""
    start = cx.calendar(0)
    start = start.astimezone(dt.UTC) if start.tzinfo is not None else start.replace(tzinfo=dt.UTC)
    return start + dt.timedelta(microseconds=cx.now_us)


@register_task("localapi_modbus")
class ModbusServer(Task):
    """Serves the published image as SunSpec models 1/701/702/704/713 and vendor 64901 to allowlisted clients;
    on a depot the site unit (1/701/702 and the connection model 64902) and one such unit per EVSE."""

    Params = ModbusServerParams
    params: ModbusServerParams

    def __init__(self, name: str, params: ModbusServerParams, site: SiteInfo):
        super().__init__(name, params, site)
        self.images: dict[int, SunSpecImage] = {}
        self.refused = 0  # connections refused at accept
        self.errors = 0  # requests answered with an exception we chose
        self.port: int | None = None  # the port actually listened on
        self._seen_us: dict[int, int] = {}  # unit -> the publication its registers show
        self.requests: Requests | None = None
        self._outbox: asyncio.Queue[tuple[int, ModeRequest | TripReset, dict[str, int | None]]] = asyncio.Queue(
            OUTBOX_MAX
        )
        self.connection = ConnectionLimit(params.connection) if params.connection is not None else None
        self.evse_of: dict[int, int] = {u: n for n, u in params.evse_units().items()}  # unit -> EVSE id

    def declare(self) -> list[TagSpec]:
        return connection_specs() if self.connection is not None else []

    def _build(self) -> None:
        p = self.params
        rating = self.connection.rating if self.connection is not None else None
        common: dict[str, Any] = {
            "serial": self.site.name,
            "version": _version(),
            "nominal_voltage": self.site.nominal_voltage,
            "max_charge_w": p.max_charge_w,
            "max_discharge_w": p.max_discharge_w,
            "reversion_s": p.reversion_s,
            "trip_reset": p.trip_reset,
        }
        depot = tuple(p.evses) if p.evses else None
        self.images[p.site_unit] = SunSpecImage(
            prefix="",
            unit=p.site_unit,
            evses=depot,
            evse_unit_offset=p.evse_unit_offset if depot else None,
            connection=rating,
            **common,
        )
        for n, unit in p.evse_units().items():
            self.images[unit] = SunSpecImage(prefix=f"evse{n}.", unit=unit, **common)
        self._show_connection()

    def _show_connection(self) -> None:
        c = self.connection
        if c is not None:
            self.images[self.params.site_unit].show_connection(c.import_w, c.export_w, c.expiry_s)

    def _connection_tags(self, cx: TaskContext) -> dict[str, float]:
        """The limits to publish now (an expired one back at the rating), shown on the site unit too."""
        assert self.connection is not None
        values = self.connection.values(cx.now_us)
        self._show_connection()
        return values

    def _refresh(self, cx: TaskContext, unit: int) -> None:
        """Encode the latest publication into the unit read, at most once per image (reads drive it, not
        the scan; a depot's other units wait until someone reads them)."""
        if self._seen_us.get(unit) != cx.now_us:
            self._seen_us[unit] = cx.now_us
            self.images[unit].update(cx.image, site_now_utc(cx))

    def _action(self, unit: int, cx: TaskContext) -> Any:
        from pymodbus.constants import ExcCodes

        img = self.images[unit]

        async def action(
            function_code: int,
            start_address: int,
            address: int,
            count: int,
            current_registers: list[int],
            set_values: list[int] | None,
        ) -> Any:
            host, role = _PEER.get(("?", "read_only"))
            try:
                if function_code not in _REGISTER_FUNCTIONS:
                    raise WriteRefused(ILLEGAL_FUNCTION, f"function {function_code}: this device has no coils")
                # pymodbus reads a written block back with the write's function code and no values: only a
                # call with values is the write itself
                if set_values is not None:
                    if role != "read_write":
                        raise WriteRefused(ILLEGAL_FUNCTION, "client is read-only")
                    if self._outbox.full():  # before the write touches the image: nothing of it is kept
                        raise WriteRefused(DEVICE_BUSY, f"{OUTBOX_MAX} writes still wait for the scan's answer")
                    req = img.write(address, list(set_values or []), f"modbus:{host}")
                    if isinstance(req, ConnectionWrite):  # the task's own: applied now, nothing asks the scan
                        assert self.connection is not None
                        self.connection.set(cx.now_us, req.by, req.import_w, req.export_w, req.expiry_s)
                        self._show_connection()
                    else:
                        if isinstance(req, ModeRequest) and unit in self.evse_of:
                            req = req.model_copy(update={"evse": self.evse_of[unit]})
                        img.answer("pending", "")
                        self._outbox.put_nowait((unit, req, img.control_values()))
            except WriteRefused as exc:
                self.errors += 1
                log.warning("unit %d: %s from %s at %d (%d): %s", unit, "request", host, address, count, exc.reason)
                return ExcCodes(exc.code)
            self._refresh(cx, unit)
            regs = img.registers()
            lo = address - start_address
            current_registers[lo : lo + count] = regs[address - BASE : address - BASE + count]
            if set_values is not None:
                set_values[:] = regs[address - BASE : address - BASE + count]
            return None

        return action

    async def _send(self) -> None:
        """Send the accepted writes to the scan in the order written; show each answer in the registers.
        Once no write is waiting, the 704 controls are those the scan last accepted."""
        assert self.requests is not None
        while True:
            unit, req, written = await self._outbox.get()
            img = self.images[unit]
            try:
                if isinstance(req, TripReset):
                    ok, reason = await self.requests.reset_trip(req.by)
                else:
                    ok, reason = await self.requests.mode(req)
                    if ok:
                        img.accepted = written
            except Exception as exc:  # the sender must outlive one bad answer: later writes would wait forever
                log.exception("unit %d: sending a write to the scan failed", unit)
                ok, reason = False, f"not sent: {type(exc).__name__}"
            img.answer("accepted" if ok else "refused", reason)
            if self._outbox.empty():
                img.restore(img.accepted)

    def _reverted(self, evse: int | None) -> None:
        """The reversion handed EVSE ``evse`` (None: the single site) back to local control: its 704 shows
        WSetEna 0 (DISABLED) again."""
        unit = self.params.site_unit if evse is None else self.params.evse_units()[evse]
        img = self.images[unit]
        img.accepted = {**img.accepted, "WSetEna": 0}
        if self._outbox.empty():
            img.restore(img.accepted)

    async def run(self, cx: TaskContext) -> None:
        # The imports (pymodbus's server pulls in aiohttp) and the register images (pysunspec2 models for
        # every unit: a depot has 21) take a loaded machine seconds of CPU: off the loop, whose heartbeat to
        # the scan must go on meanwhile (a silent task process is killed as hung).
        await asyncio.to_thread(_import_peers)
        await asyncio.to_thread(self._build)
        from pymodbus.server import ModbusTcpServer
        from pymodbus.server.requesthandler import ServerRequestHandler
        from pymodbus.simulator import DataType, SimData, SimDevice

        self.requests = Requests(cx, "modbus", self.params, on_reverted=self._reverted)
        sender = asyncio.create_task(self._send())
        jobs = {sender}
        if self.connection is not None:
            jobs.add(asyncio.create_task(publish_state(cx, lambda: self._connection_tags(cx))))
        allow = self.params.allow
        task = self

        class Handler(ServerRequestHandler):
            """Checks the peer at accept and tags each of its requests with its address and role."""

            peer: tuple[str, Role] = ("?", "read_only")

            def connection_made(self, transport: asyncio.BaseTransport) -> None:
                peername = transport.get_extra_info("peername")
                host = str(peername[0]) if peername else "?"
                role = role_of(allow, host)
                if role is None:
                    task.refused += 1
                    log.warning("connection from %s refused: not on the allowlist", host)
                    if self.listener is not None:
                        self.listener.active_connections.pop(self.unique_id, None)
                    transport.close()
                    return
                self.peer = (host, role)
                log.info("client %s connected (%s)", host, role)
                super().connection_made(transport)

            async def handle_request(self) -> None:
                _PEER.set(self.peer)
                await super().handle_request()

        class Server(ModbusTcpServer):
            def callback_new_connection(self) -> Handler:
                return Handler(self, self.trace_packet, self.trace_pdu, self.trace_connect)

        devices = [
            SimDevice(
                unit,
                simdata=[SimData(BASE, count=img.end - BASE, values=0, datatype=DataType.REGISTERS)],
                action=self._action(unit, cx),
            )
            for unit, img in self.images.items()
        ]
        server = Server(devices, address=(self.params.host, self.params.port))
        await server.serve_forever(background=True)
        self.port = self.params.port
        log.info("SunSpec server on %s:%d, units %s", self.params.host, self.params.port, sorted(self.images))
        try:
            await asyncio.Event().wait()
        finally:
            for job in jobs:
                job.cancel()
            await asyncio.wait(jobs, timeout=2)
            await self.requests.close()
            await server.shutdown()
