"""The SECC service of one EVSE: the `iso15118` package's SECC with a controller that asks the runtime.

Why a separate process with its own interpreter: `iso15118` pins pydantic 1 and an old `cryptography`,
which the runtime (pydantic 2) cannot import. So this file uses only the standard library and `iso15118`
and never imports the runtime; it talks to the runtime over one inherited stream socket in JSON lines
(docs/iso15118.md "The channel"):

  runtime -> service  {"setpoint_w": W signed (+ = into the EV), "enable": bool, "terminate": bool,
                       "max_charge_w": W >= 0, "max_discharge_w": W >= 0, "contactor": "closed" | "open",
                       "isolation": "valid" | "warning" | "fault" | "invalid" | "no_imd", "cp_state":
                       "A1" ... "F"}   (every scan cycle or so; each of the last three may also be
                       "simulated": the site has no such point, or "unknown": its tag is not good)
  service -> runtime  {"status": {...}} the session as the EV tells it, on every change and every
                       HEARTBEAT_S (it doubles as the heartbeat);
                      {"ended": {"state": str, "reason": str, "failure": kind | null, "handshake":
                       bool}} a session ended (cleared data follows); ``failure`` is one of
                       failures.KINDS, null for a normal end; ``handshake``: it ended before power
                       transfer. A failed TLS handshake, never a session, is reported so too.

A set point older than ``--stale-s`` counts as 0 W: the runtime stopped talking, so the EV is told no
power either way. ``terminate`` (a latched safety trip) ends the session through the protocol's own way
(-20: EVSENotification Terminate in the charge loop answer; -2/DIN: EVSE shutdown), after the scan has
already zeroed the power stage in the same cycle it saw the trip.
"""

from __future__ import annotations

import argparse
import asyncio
import asyncio.sslproto
import json
import logging
import math
import os
import socket
import ssl
import sys
import time
from pathlib import Path
from typing import Any

import failures  # services/secc/failures.py: this script's folder is on sys.path
import pnc  # services/secc/pnc.py and pnc_states.py: Plug and Charge
import pnc_states
from iso15118.secc import SECCHandler
from iso15118.secc.controller.ev_data import (
    EVACCLLimits,
    EVACCPDLimits,
    EVDataContext,
    EVDCCLLimits,
    EVDCCPDLimits,
    EVRatedLimits,
    EVSessionLimits,
)
from iso15118.secc.controller.interface import ServiceStatus
from iso15118.secc.controller.simulator import SimEVSEController
from iso15118.secc.secc_settings import Config
from iso15118.shared.exificient_exi_codec import ExificientEXICodec
from iso15118.shared.messages.enums import CpState, IsolationLevel, Namespace
from iso15118.shared.messages.iso15118_20.common_types import EVSENotification, EVSEStatus
from iso15118.shared.security import get_ssl_context
from iso15118.shared.settings import JAR_FILE_PATH

log = logging.getLogger("v2g_plc.secc")

HEARTBEAT_S = 0.5
# The status keys that carry what the EV said (cleared between sessions).
EV_DATA = (
    "soc",
    "departure_time",
    "target_energy_wh",
    "min_energy_wh",
    "max_energy_wh",
    "min_v2x_energy_wh",
    "max_v2x_energy_wh",
    "max_charge_w",
    "max_discharge_w",
)

# The EXI codec's JVM with bounded memory and JIT: with Java's defaults it grows from 110 to 350 MB over
# three sessions and takes ~4.6 CPU-s a session; with these it stays near 135 MB and ~2.7 CPU-s
# (measured on this project's 2-core machine, BENCHMARKS.md "ISO 15118").
BOUNDED_JVM = [
    "-Xms16m",
    "-Xmx64m",
    "-XX:+UseSerialGC",
    "-XX:TieredStopAtLevel=1",
    "-XX:CICompilerCount=1",
    "-XX:ReservedCodeCacheSize=16m",
    "-XX:MaxMetaspaceSize=48m",
    "-Xss512k",
]


class BoundedCodec(ExificientEXICodec):
    """The package's Exificient codec, started with BOUNDED_JVM (the codec class is pluggable)."""

    def __init__(self, javaopts: list[str]) -> None:
        from py4j.java_gateway import JavaGateway

        logging.getLogger("py4j").setLevel(logging.CRITICAL)
        self.gateway = JavaGateway.launch_gateway(
            classpath=JAR_FILE_PATH,
            die_on_exit=True,
            javaopts=["--add-opens", "java.base/java.lang=ALL-UNNAMED", *javaopts],
        )
        self.exi_codec = self.gateway.jvm.com.siemens.ct.exi.main.cmd.EXICodec()


WARMUP = Path(__file__).with_name("warmup.jsonl")

# The charger's own hooks (docs/iso15118.md "Contactor, cable check and CP state").
SIMULATED, UNKNOWN = "simulated", "unknown"  # the site wires no such point; its tag is not good (not ready)
# The contactor closes (or opens) within this of being asked: inside the EV's 2 s wait for PowerDeliveryRes
# (ISO 15118-20; the package's Timeouts.POWER_DELIVERY_REQ), and so inside the 3 s ISO 15118-2 allows
# ([V2G2-860]). In the DC cable check the EV asks again while the answer is Ongoing: the same bound there.
CONTACTOR_WAIT_S = 1.5
# No verdict from the insulation monitor (its tag not good): Ongoing for this long from the cable check's
# start, then a failed cable check; inside the EV's own bound, V2G_EVCC_CableCheck_Timeout 40 s (ISO 15118-2
# and -20, the package's Timeouts).
CABLE_CHECK_WAIT_S = 30.0
ISOLATION = {
    "valid": IsolationLevel.VALID,
    "warning": IsolationLevel.WARNING,  # IEC 61851-23: charging goes on, the operator is told
    "fault": IsolationLevel.FAULT,
    "invalid": IsolationLevel.INVALID,
    "no_imd": IsolationLevel.INVALID,  # no insulation monitor, no DC cable check (IEC 61851-23): a failure
}
ENERGIZE = ("C2", "D2")  # IEC 61851-1: the EVSE energizes only in state C or D; 2: with HLC's 5 % PWM


def warm_up(codec: ExificientEXICodec, rounds: int = 1) -> float:
    """Encode and decode every -20 and SAP message once per round before the SECC listens: the codec's
    first use of a schema grammar loads and interprets it for up to a second, longer than the EV waits
    for a -20 charge loop answer (0.5 s). Returns the seconds it took. The messages are ones a session
    here exchanged (warmup.jsonl)."""
    t0 = time.monotonic()
    lines = [json.loads(line) for line in WARMUP.read_text().splitlines() if line.strip()]
    for _ in range(rounds):
        for m in lines:
            ns = Namespace[m["ns"]].value
            codec.decode(codec.encode(json.dumps(m["message"]), ns), ns)
    return time.monotonic() - t0


class Link:
    """The runtime's side of the socket: the latest command in, status lines out (never blocks the SECC
    on the runtime: a line that does not fit the socket buffer waits in a bounded queue)."""

    def __init__(self, sock: socket.socket, stale_s: float) -> None:
        self.sock = sock
        self.stale_s = stale_s
        self.cmd: dict[str, Any] = {}
        self.cmd_t = -math.inf
        self.writer: asyncio.StreamWriter | None = None
        self.closed = asyncio.Event()

    async def open(self) -> None:
        reader, self.writer = await asyncio.open_connection(sock=self.sock)
        asyncio.get_running_loop().create_task(self._read(reader))

    async def _read(self, reader: asyncio.StreamReader) -> None:
        while True:
            try:
                line = await reader.readline()
            except (ConnectionError, ValueError):  # ValueError: a line over the stream limit
                line = b""
            if not line:
                self.closed.set()  # the runtime is gone: this service ends, its supervisor starts a new one
                return
            try:
                cmd = json.loads(line)
                if not isinstance(cmd, dict):
                    raise ValueError("a command is an object")
            except ValueError as exc:
                log.error("runtime sent a malformed line (%s); ignored", exc)
                continue
            self.cmd, self.cmd_t = cmd, time.monotonic()

    def send(self, obj: dict[str, Any]) -> None:
        w = self.writer
        if w is None or w.is_closing():
            return
        if w.transport.get_write_buffer_size() > 1 << 20:
            return  # the runtime is not reading; it will see this service as silent and restart it
        w.write(json.dumps(obj, separators=(",", ":")).encode() + b"\n")

    def number(self, key: str) -> float:
        """A finite number from the latest fresh command, else 0 (stale or missing: no power)."""
        if time.monotonic() - self.cmd_t > self.stale_s:
            return 0.0
        v = self.cmd.get(key)
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            return 0.0
        return float(v)

    def flag(self, key: str) -> bool:
        return time.monotonic() - self.cmd_t <= self.stale_s and self.cmd.get(key) is True

    def hook(self, key: str) -> str:
        """The charger's ``key`` (contactor, isolation, cp_state) as the runtime's tags say it, from a fresh
        command; UNKNOWN when stale or missing."""
        v = self.cmd.get(key)
        return v if time.monotonic() - self.cmd_t <= self.stale_s and isinstance(v, str) else UNKNOWN

    def setpoint_w(self) -> float:
        """The committed set point, clamped to the safety layer's limits; 0 unless enabled and fresh."""
        if not self.flag("enable") or self.flag("terminate"):
            return 0.0
        sp = self.number("setpoint_w")
        return (
            min(sp, max(self.number("max_charge_w"), 0.0))
            if sp > 0
            else max(sp, -max(self.number("max_discharge_w"), 0.0))
        )


def _num(v: Any) -> float | None:
    if v is None or isinstance(v, bool):
        return None
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


class SessionData(EVDataContext):
    """The package's EV data, plus the SoC of the -20 AC charge loop: its AC loop update (0.31) skips the
    DisplayParameters that its DC loop update reads (ISO 15118-20 AC_ChargeLoopReq carries them too).

    Its limits are fresh objects per session: the package's constructor defaults them to one shared
    instance each (a default argument evaluated once), so a new context would carry the last EV's power
    limits into the next session."""

    def __init__(self) -> None:
        super().__init__(
            rated_limits=EVRatedLimits(ac_limits=EVACCPDLimits(), dc_limits=EVDCCPDLimits()),
            session_limits=EVSessionLimits(ac_limits=EVACCLLimits(), dc_limits=EVDCCLLimits()),
        )

    def update_ac_charge_loop_v20(self, req: Any, *args: Any, **kwargs: Any) -> None:
        super().update_ac_charge_loop_v20(req, *args, **kwargs)
        if getattr(req, "display_parameters", None):
            self._update_display_parameters(req.display_parameters)


class RuntimeEVSEController(SimEVSEController):
    """The package's simulated EVSE for everything the site has no say in (EVSE id, services), with the
    power, the session limits, the session's end and the charger's contactor, cable check and CP state
    taken from the runtime (its tags, through the command; the package's simulated answers only where the
    site wires no point)."""

    def __init__(self, link: Link, authorizer: pnc_states.Authorizer | None = None) -> None:
        super().__init__()
        self.link = link
        self.authorizer = authorizer or pnc_states.Authorizer([], fallback_eim=False)  # no MO roots: EIM only
        self.ev_data_context = SessionData()
        self.state = "Starting"  # until the codec is warm and the SECC listens; then Idle between sessions
        self.protocol = ""
        self.in_session = False
        self.sessions = 0
        self._last_status: dict[str, Any] = {}
        self._departure: tuple[float, float] | None = None  # (seconds from then as the EV said, when)
        self._states: set[str] = set()  # the protocol states this session went through
        self._cable_check: float | None = None  # when this session's DC cable check began, until its verdict
        self._closing: float | None = None  # when the cable check first found the contactor not closed

    # -- what the runtime says ------------------------------------------------------------------
    def _apply_setpoint(self) -> float:
        """The set point into the session limits the library answers from. -20 AC: the EVSE target
        active power is max_charge_power or minus max_discharge_power (ISO 15118-20 AC_ChargeLoopRes,
        EVSETargetActivePower). -20 DC: the EV regulates current, so the window [sp, sp] pins it
        (EVSEMaximum/MinimumCharge/DischargePower)."""
        sp = self.link.setpoint_w()
        charge, discharge = max(sp, 0.0), max(-sp, 0.0)
        ac = self.evse_data_context.session_limits.ac_limits
        ac.max_charge_power, ac.max_discharge_power = charge, discharge
        ac.max_charge_power_l2 = ac.max_charge_power_l3 = None
        ac.max_discharge_power_l2 = ac.max_discharge_power_l3 = None
        ac.max_charge_reactive_power = ac.max_discharge_reactive_power = 0.0
        ac.max_charge_reactive_power_l2 = ac.max_charge_reactive_power_l3 = None
        ac.max_discharge_reactive_power_l2 = ac.max_discharge_reactive_power_l3 = None
        dc = self.evse_data_context.session_limits.dc_limits
        dc.max_charge_power = dc.min_charge_power = charge
        dc.max_discharge_power = dc.min_discharge_power = discharge
        return sp

    async def get_ac_charge_loop_params_v20(self, control_mode: Any, selected_service: Any) -> Any:
        self._apply_setpoint()
        return await super().get_ac_charge_loop_params_v20(control_mode, selected_service)

    async def get_dc_charge_loop_params_v20(self, control_mode: Any, selected_service: Any) -> Any:
        self._apply_setpoint()
        return await super().get_dc_charge_loop_params_v20(control_mode, selected_service)

    async def get_evse_status(self) -> EVSEStatus | None:
        """A latched trip: tell the EV to end the session (ISO 15118-20 8.3.5.3.26, EVSENotification)."""
        if self.link.flag("terminate"):
            return EVSEStatus(notification_max_delay=0, evse_notification=EVSENotification.TERMINATE)
        return None

    def ready_to_charge(self) -> bool:
        return not self.link.flag("terminate")

    # -- the charger's own state: contactor, cable check, CP -----------------------------------------
    def _energized(self) -> bool:
        """Closed by the charger's word, the EV in state C or D, no trip."""
        cp = self.link.hook("cp_state")
        return (
            self.link.hook("contactor") == "closed"
            and (cp == SIMULATED or cp in ENERGIZE)
            and not self.link.flag("terminate")
        )

    @staticmethod
    async def _within(cond: Any) -> bool:
        deadline = time.monotonic() + CONTACTOR_WAIT_S
        while not cond():
            if time.monotonic() >= deadline:
                return False
            await asyncio.sleep(0.05)
        return True

    async def is_contactor_closed(self) -> bool | None:
        """-20 AC / -2 / DIN PowerDelivery Start: closed within CONTACTOR_WAIT_S, else False
        (FAILED_ContactorError). DC cable check (IEC 61851-23 6.4.3.106: closed for the insulation test):
        None (Ongoing, the EV asks again) while not closed, False after CONTACTOR_WAIT_S (FAILED)."""
        if self.link.flag("terminate"):  # a latched trip: no waiting for a contactor that must stay open
            return False
        if self.link.hook("contactor") == SIMULATED:
            return True
        if self._cable_check is None:
            return await self._within(self._energized)
        if self._energized():
            return True
        self._closing = self._closing or time.monotonic()
        return None if time.monotonic() - self._closing < CONTACTOR_WAIT_S else False

    async def start_cable_check(self) -> None:
        self._cable_check, self._closing = time.monotonic(), None

    async def get_cable_check_status(self) -> IsolationLevel | None:
        """The insulation monitor's verdict; None (Ongoing) while it has none, up to CABLE_CHECK_WAIT_S.
        Fault, invalid or no monitor fail the cable check: the package ends the session with FAILED."""
        v = self.link.hook("isolation")
        level = IsolationLevel.VALID if v == SIMULATED else ISOLATION.get(v)
        if level is None:
            begun = self._cable_check if self._cable_check is not None else time.monotonic()
            if time.monotonic() - begun < CABLE_CHECK_WAIT_S:
                return None
            level = IsolationLevel.INVALID
        self._cable_check = None
        return level

    async def get_cp_state(self) -> CpState:
        v = self.link.hook("cp_state")
        if v == SIMULATED:
            return await super().get_cp_state()
        return CpState.__members__.get(v, CpState.UNKNOWN)

    # -- identification (pnc_states.py) ---------------------------------------------------------
    async def is_authorized(self, *args: Any, **kwargs: Any) -> Any:
        """What the state that received the EV's contract chain decided (PnC), else EIM: the site's
        external identification, which authorises every session it sees as before."""
        return self.authorizer.authorize(self.get_selected_protocol())

    # -- what the EV says -----------------------------------------------------------------------
    async def set_present_protocol_state(self, state: Any) -> None:
        name = str(state)
        evcc_id = getattr(getattr(state, "comm_session", None), "evcc_id", None)
        if evcc_id and not self.ev_data_context.evcc_id:  # -20 keeps it on the session, -2/DIN here too
            self.ev_data_context.evcc_id = evcc_id if isinstance(evcc_id, str) else evcc_id.hex().upper()
        if not self.in_session:
            self.in_session = True
            self.sessions += 1
        self.state = name
        self._states.add(name)
        self.report()

    def set_selected_protocol(self, protocol: Any) -> None:
        super().set_selected_protocol(protocol)
        self.protocol = getattr(protocol, "name", str(protocol))

    async def session_ended(self, current_state: str, reason: str) -> None:
        reached = failures.powered(self._states | {str(current_state)})
        failure = pnc.AUTH if str(reason).startswith(pnc.REFUSED) else failures.classify(str(reason), reached)
        ended = {"state": str(current_state), "reason": str(reason), "failure": failure, "handshake": not reached}
        self.link.send({"ended": ended})
        self._states, self._cable_check, self._closing = set(), None, None
        self.authorizer.reset()
        self.reset_ev_data_context()  # the package keeps it across sessions otherwise
        self.in_session, self.state, self.protocol, self._departure = False, "Idle", "", None
        self.report()

    def reset_ev_data_context(self) -> None:
        self.ev_data_context = SessionData()

    def _status(self) -> dict[str, Any]:
        ev = self.ev_data_context
        rated, sess = ev.rated_limits, ev.session_limits
        ac = self.protocol.endswith("_AC") or "AC" in str(getattr(ev, "selected_energy_mode", "") or "")
        r = rated.ac_limits if ac else rated.dc_limits
        s = sess.ac_limits if ac else sess.dc_limits
        dep = _num(ev.departure_time)
        if dep is None:
            self._departure = None
        elif self._departure is None or self._departure[0] != dep:  # ISO 15118-20: seconds from the message
            self._departure = (dep, round(time.time() + dep, 3))
        return {
            "session": self.in_session,
            "sessions": self.sessions,
            "state": self.state,
            "protocol": self.protocol,
            "evcc_id": ev.evcc_id or "",
            "soc": _num(ev.present_soc),
            "departure_time": None if self._departure is None else self._departure[1],
            "target_energy_wh": _num(ev.target_energy_request),
            "min_energy_wh": _num(ev.min_energy_request),
            "max_energy_wh": _num(ev.max_energy_request),
            "min_v2x_energy_wh": _num(ev.min_v2x_energy_request),
            "max_v2x_energy_wh": _num(ev.max_v2x_energy_request),
            "max_charge_w": _num(s.max_charge_power)
            if _num(s.max_charge_power) is not None
            else _num(r.max_charge_power),
            "max_discharge_w": (
                _num(s.max_discharge_power) if _num(s.max_discharge_power) is not None else _num(r.max_discharge_power)
            ),
            "setpoint_w": self.link.setpoint_w(),
            **self.authorizer.status(),
        }

    def status(self) -> dict[str, Any]:
        """What the EV said, only while its session runs (None between sessions, whatever the package's
        context holds then: its limits' defaults are 0 W, not "unknown")."""
        st = self._status()
        if not self.in_session:
            st.update({k: None for k in EV_DATA})
        return st

    def report(self, force: bool = False) -> None:
        st = self.status()
        if force or st != self._last_status:
            self._last_status = st
            self.link.send({"status": st})


def watch_tls(ctx: ssl.SSLContext, link: Link) -> ssl.SSLContext:
    """Report every failed TLS handshake on ``ctx`` to the runtime. asyncio drops a server-side handshake
    error without a word (an SSLError is an OSError, logged only in the loop's debug mode) and the
    package never hears of the connection, so the SSL objects the server makes report it themselves
    (``SSLContext.sslobject_class``).

    Two ways an EV turns the SECC's certificate away: a TLS stack that sends its alert (unknown CA, bad
    certificate) fails the SECC's handshake with it, reported with the alert's name; one that closes the
    connection without an alert (an asyncio client does: it aborts its transport before its alert leaves,
    as the package's own EV does) ends the SECC's handshake by end of file, which asyncio handles without
    the SSL object. That one is reported when a connection whose ClientHello arrived is lost with the
    handshake neither done nor failed: asyncio's server-side TLS protocol is subclassed for that, in this
    process only (it has no public hook; the SSL object is freed only by the cycle collector, too late)."""

    def report(why: str) -> None:
        log.error(why)
        link.send({"ended": {"state": "TLS handshake", "reason": why, "failure": failures.TLS, "handshake": True}})

    class Watched(ssl.SSLObject):
        def do_handshake(self) -> None:
            state = self.__dict__.get("_watch")
            if state is None:  # the first call: asyncio makes it at once, before the EV's ClientHello
                state = self._watch = {"hello": False, "over": False}
            else:
                state["hello"] = True  # asyncio calls again when the EV's bytes arrive
            try:
                super().do_handshake()
                state["over"] = True
                log.info("TLS handshake with the EV: %s, %s", self.version(), (self.cipher() or ("?",))[0])
            except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
                raise
            except ssl.SSLError as exc:
                state["over"] = True
                report(f"TLS handshake failed: {exc.reason or exc}")
                raise

    class WatchedProtocol(asyncio.sslproto.SSLProtocol):
        def connection_lost(self, exc: Exception | None) -> None:
            state = getattr(self._sslobj, "_watch", None)  # set on this context's connections only
            if state is not None and state["hello"] and not state["over"]:
                state["over"] = True
                report("TLS handshake failed: the EV closed the connection in the handshake (no alert)")
            super().connection_lost(exc)

    ctx.sslobject_class = Watched
    asyncio.sslproto.SSLProtocol = WatchedProtocol  # type: ignore[misc]
    return ctx


def tls_context(link: Link) -> ssl.SSLContext:
    """The SECC's TLS 1.3 context from the site's PKI, or SystemExit. The package falls back to plain TCP
    when it cannot make one (tcp_server: "SSL context not created"); TLS off is the site's word only."""
    ctx = get_ssl_context(True)
    if ctx is None:
        raise SystemExit("TLS is on but the SECC's certificate chain or key in the site's PKI does not load")
    return watch_tls(ctx, link)


def authorizer(args: argparse.Namespace) -> pnc_states.Authorizer:
    """The site's MO roots for Plug and Charge, or SystemExit when PNC is offered and they do not load."""
    pnc_states.install()
    if "PNC" not in args.auth_modes.split(","):
        return pnc_states.Authorizer([], fallback_eim=False)
    if not args.mo_roots:
        raise SystemExit("PNC is offered but no --mo-roots names the MO roots contract certificates chain to")
    try:
        roots = pnc.load_roots(Path(args.mo_roots))
    except ValueError as exc:
        raise SystemExit(str(exc)) from None
    log.info("Plug and Charge: %d MO root(s) from %s", len(roots), args.mo_roots)
    return pnc_states.Authorizer(roots, fallback_eim=args.pnc_fallback_eim)


def _config(args: argparse.Namespace) -> Config:
    """The package reads its settings from the environment: set them from our arguments, never from a
    stray .env file in the working directory."""
    os.environ.update(
        {
            "NETWORK_INTERFACE": args.iface,
            "PROTOCOLS": args.protocols,
            "AUTH_MODES": args.auth_modes,
            "SECC_ENFORCE_TLS": "true" if args.tls else "false",
            "ENABLE_TLS_1_3": "true" if args.tls else "false",
            "FREE_CHARGING_SERVICE": "false",
            # No certificate installation: this SECC has no provisioning service's chain nor a back office to
            # ask for a contract (docs/iso15118.md "Plug and Charge"); the package offers it by default.
            "ALLOW_CERT_INSTALL_SERVICE": "false",
            "MESSAGE_LOG_JSON": "true" if args.log_messages else "false",
            "LOG_LEVEL": "INFO" if args.log_messages else "WARNING",
        }
    )
    if args.pki_path:
        os.environ["PKI_PATH"] = args.pki_path
    cfg = Config()
    cfg.load_envs(os.devnull)
    return cfg


async def main(args: argparse.Namespace) -> int:
    link = Link(socket.socket(fileno=args.fd), args.stale_s)
    await link.open()
    ctrl = RuntimeEVSEController(link, authorizer(args))
    await ctrl.set_status(ServiceStatus.STARTING)
    loop = asyncio.get_running_loop()

    async def beat() -> None:
        while True:
            ctrl.report(force=True)  # the heartbeat carries the whole status
            await asyncio.sleep(HEARTBEAT_S)

    hb = loop.create_task(beat())  # heard from the start: the warm-up below takes seconds
    codec = await asyncio.to_thread(BoundedCodec, BOUNDED_JVM if args.bounded_jvm else [])
    log.info("EXI codec warmed up in %.1f s", await asyncio.to_thread(warm_up, codec))
    config = _config(args)
    if args.tls:
        from iso15118.secc.transport import tcp_server

        ctx = tls_context(link)  # checked before the SECC listens: never a silent plain-TCP fallback
        tcp_server.get_ssl_context = lambda server_side: ctx
    handler = SECCHandler(exi_codec=codec, evse_controller=ctrl, config=config)
    secc = loop.create_task(handler.start(args.iface))
    ctrl.state = "Idle"
    closed = loop.create_task(link.closed.wait())
    done, _ = await asyncio.wait({secc, closed}, return_when=asyncio.FIRST_COMPLETED)
    hb.cancel()
    if secc in done:
        log.error("SECC stopped: %s", secc.exception())
        return 1
    return 0


def parse(argv: list[str]) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--fd", type=int, required=True, help="the inherited stream socket to the runtime")
    ap.add_argument("--iface", required=True, help="the interface towards the EV (an IPv6 link-local address)")
    ap.add_argument("--protocols", default="ISO_15118_20_DC,ISO_15118_20_AC,ISO_15118_2,DIN_SPEC_70121")
    ap.add_argument("--auth-modes", default="EIM")
    ap.add_argument("--tls", action="store_true", help="TLS 1.3 (the site has a PKI at --pki-path)")
    ap.add_argument("--pki-path", default="")
    ap.add_argument("--mo-roots", default="", help="PEM file of the MO roots a contract chain must end in (PNC)")
    ap.add_argument("--pnc-fallback-eim", action="store_true", help="-20: a refused contract goes on as EIM")
    ap.add_argument("--stale-s", type=float, default=1.0)
    ap.add_argument("--bounded-jvm", action=argparse.BooleanOptionalAction, default=True)
    ap.add_argument("--log-messages", action="store_true", help="log every decoded message (tests, benchmarks)")
    return ap.parse_args(argv)


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, stream=sys.stderr)
    sys.exit(asyncio.run(main(parse(sys.argv[1:]))))
