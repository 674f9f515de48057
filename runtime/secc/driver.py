"""The SECC service of one EVSE as a device: supervised like the task process, read like a field device.

Why a device and not a task: what the EV says (SoC, departure time, energy requests, its power limits) is
field data, and what the EV is told (the set point) is an output the scan commits. A device gets both for
free: its reads land at a cycle start with quality and age, and it receives the committed outputs it
owns once per cycle, on the I/O thread, never on the scan thread.

The service (services/secc/bridge.py) runs the `iso15118` package in its own virtual environment
(`make secc-venv`), because that package pins pydantic 1. It is started here with one end of a stream
socket pair and talks JSON lines (the format is in the bridge's docstring). When it exits or stays silent
for ``heartbeat_s``, every input of this device turns ``stale`` at once and it is restarted with backoff;
a set point the service has not heard for ``stale_s`` counts as 0 W there.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import os
import socket
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from cryptography import x509
from pydantic import Field, model_validator

from runtime.api import ParamError, Params, SiteInfo
from runtime.io.driver import Driver, IOContext, register_driver
from runtime.tags import Direction, Quality, TagSpec, TagType, TagUpdate

log = logging.getLogger("v2g_plc.secc")

PREFIX = r"^[a-z][a-z0-9_]*(\.[a-z0-9_]+)*$"
ROOT = Path(__file__).resolve().parents[2]  # the repository: services/ and .venv-secc/ live there
BRIDGE = ROOT / "services" / "secc" / "bridge.py"
DEFAULT_PYTHON = ROOT / ".venv-secc" / "bin" / "python"
# What the SECC's TLS 1.3 server reads from the site's PKI folder: its chain (SECC leaf first, then the CPO
# sub-CAs), its key and the key's password, and the OEM root it checks the EV's certificate against.
PKI_FILES = (
    "certs/cpoCertChain.pem",
    "private_keys/seccLeaf.key",
    "private_keys/seccLeafPassword.txt",
    "certs/oemRootCACert.pem",
)
SEND_EVERY_S = 0.2  # the command is re-sent at least this often, well inside the service's stale_s

Protocol = Literal["ISO_15118_20_DC", "ISO_15118_20_AC", "ISO_15118_2", "DIN_SPEC_70121"]

# What the service reports -> (tag suffix, type, unit, description). Cleared (None) at session end.
INPUTS: dict[str, tuple[str, TagType, str, str]] = {
    "session": ("session", TagType.BOOL, "", "an EV is in a high-level communication session"),
    "state": ("state", TagType.STR, "", "the SECC's protocol state (e.g. DCChargeLoop), Idle between sessions"),
    "protocol": ("protocol", TagType.STR, "", "the protocol agreed (ISO_15118_20_DC, ..., DIN_SPEC_70121)"),
    "evcc_id": ("evcc_id", TagType.STR, "", "the EV communication controller's id (MAC or EVCCID)"),
    "soc": ("soc", TagType.FLOAT, "%", "the EV's present state of charge, 0-100"),
    "departure_time": ("departure_time", TagType.FLOAT, "s", "when the EV leaves, UTC epoch seconds"),
    "target_energy_wh": ("target_energy_wh", TagType.FLOAT, "Wh", "energy to reach the EV's target SoC"),
    "min_energy_wh": ("min_energy_wh", TagType.FLOAT, "Wh", "energy to reach the EV's minimum SoC"),
    "max_energy_wh": ("max_energy_wh", TagType.FLOAT, "Wh", "energy to reach a full battery"),
    "min_v2x_energy_wh": ("min_v2x_energy_wh", TagType.FLOAT, "Wh", "-20 BPT: energy below which V2X stops"),
    "max_v2x_energy_wh": ("max_v2x_energy_wh", TagType.FLOAT, "Wh", "-20 BPT: energy above which V2X stops"),
    "max_charge_w": ("ev_max_charge_w", TagType.FLOAT, "W", "the EV's charge power limit"),
    "max_discharge_w": ("ev_max_discharge_w", TagType.FLOAT, "W", "the EV's discharge power limit"),
    "setpoint_w": ("ev_setpoint_w", TagType.FLOAT, "W", "the set point the EV is told now, + = into the EV"),
    "sessions": ("sessions", TagType.INT, "", "sessions since this service started"),
    # Plug and Charge (docs/iso15118.md "Plug and Charge")
    "auth": ("auth", TagType.STR, "", "how the session was identified: PnC or EIM"),
    "contract_id": ("contract_id", TagType.STR, "", "the eMAID of the contract certificate PnC accepted"),
    "contract_refused": ("contract_refused", TagType.STR, "", "why the EV's contract certificate was refused"),
}


def failure_tags(prefix: str) -> dict[str, str]:
    """The session failure tags this device keeps and the ``secc_link`` interlock turns into events."""
    return {"count": f"{prefix}.failures", "last": f"{prefix}.failure", "handshake": f"{prefix}.handshake_timeouts"}


# The charger's own state the SECC's hooks answer from (contactor, cable check, CP state), as the runtime's
# tags say it. The ``secc_link`` interlock writes them as text, each one of its values or "simulated" (the
# site wires no such point: the package's simulated answer) or "unknown" (the tag is not good: not ready).
HOOKS: dict[str, tuple[str, ...]] = {
    "contactor": ("closed", "open"),
    # ISO 15118-2 / DIN SPEC 70121 isolationLevelType, as the charger's insulation monitor reports it
    "isolation": ("valid", "warning", "fault", "invalid", "no_imd"),
    # IEC 61851-1 states A-F; 1 = no PWM, 2 = 5 % duty (high-level communication, ISO 15118-3)
    "cp_state": ("A1", "A2", "B1", "B2", "C1", "C2", "D1", "D2", "E", "F"),
}
SIMULATED, UNKNOWN = "simulated", "unknown"


def link_outputs(prefix: str) -> dict[str, str]:
    """The outputs the ``secc_link`` interlock writes and this device sends on: command key -> tag."""
    keys = ("setpoint_w", "enable", "terminate", "max_charge_w", "max_discharge_w", *HOOKS)
    return {k: f"{prefix}.{k}" for k in keys}


class SeccParams(Params):
    iface: str = Field(min_length=1, max_length=15, description="the network interface towards the EV (PLC modem)")
    prefix: str = Field("secc", pattern=PREFIX, description="tag prefix (EVSE n: evse<n>.secc)")
    protocols: list[Protocol] = Field(
        default=["ISO_15118_20_DC", "ISO_15118_20_AC", "ISO_15118_2", "DIN_SPEC_70121"],
        min_length=1,
        description="offered to the EV in this order of priority (SupportedAppProtocol)",
    )
    auth_modes: list[Literal["EIM", "PNC"]] = Field(default=["EIM"], min_length=1, description="identification")
    tls: bool = Field(True, description="TLS 1.3 (needs pki_path); off only when the site says so")
    pki_path: str | None = Field(None, description="the site's ISO 15118 PKI folder (relative: to the site file)")
    netns: str | None = Field(
        None,
        pattern=r"^[A-Za-z0-9_.-]{1,64}$",
        description="run the service in this network namespace (benches, tests)",
    )
    python: str | None = Field(None, description="the SECC virtualenv's python (default: .venv-secc/bin/python)")
    log_file: str | None = Field(None, description="the service's own log (relative: to the site file)")
    log_messages: bool = Field(False, description="log every decoded message (tests, benchmarks)")
    bounded_jvm: bool = Field(True, description="the EXI codec's JVM with small heap, serial GC, reduced JIT")
    nice: int = Field(
        5,
        ge=-20,
        le=19,
        description="added to the runtime's niceness for the service: its answers are due within 0.5 s, the "
        "scan's within one period, and the runtime's own threads hold the interpreter lock the scan needs",
    )
    heartbeat_s: float = Field(3.0, ge=0.5, le=60, description="silent this long: hung, killed and restarted")
    startup_grace_s: float = Field(30.0, ge=1, le=300, description="time to the first word after a start")
    stale_s: float = Field(1.0, ge=0.1, le=10, description="the service's set point older than this is 0 W")
    backoff_s: float = Field(1.0, ge=0.1, le=60, description="first restart delay, doubled up to backoff_max_s")
    backoff_max_s: float = Field(30.0, ge=0.1, le=600, description="longest restart delay")
    # Plug and Charge (docs/iso15118.md "Plug and Charge")
    mo_roots: str | None = Field(
        None,
        description="PEM file of the MO roots a contract certificate must chain to (relative: to the site file; "
        "needed with PNC)",
    )
    pnc_fallback_eim: bool = Field(
        False, description="ISO 15118-20: a refused contract certificate lets the session go on as EIM"
    )

    @model_validator(mode="after")
    def _check_pnc(self) -> SeccParams:
        if "PNC" in self.auth_modes:
            if not self.tls:
                raise ValueError("PNC needs TLS (ISO 15118-2 and -20 allow Plug and Charge over TLS only)")
            if not self.mo_roots:
                raise ValueError("PNC is offered but no mo_roots names the MO roots contract certificates chain to")
        if self.pnc_fallback_eim and not {"PNC", "EIM"} <= set(self.auth_modes):
            raise ValueError("pnc_fallback_eim needs both PNC and EIM in auth_modes")
        return self

    @model_validator(mode="after")
    def _check(self) -> SeccParams:
        if self.tls and not self.pki_path:
            raise ValueError("tls is on but no pki_path names the site's PKI: give one, or say tls: false")
        return self


@register_driver("secc")
class SeccDriver(Driver):
    """Starts the SECC service, turns its reports into tags, sends it the committed set point."""

    Params = SeccParams
    params: SeccParams

    def __init__(self, name: str, params: SeccParams, site: SiteInfo):
        super().__init__(name, params, site)
        p = params
        self.inputs = {k: (f"{p.prefix}.{suffix}", t, unit, d) for k, (suffix, t, unit, d) in INPUTS.items()}
        self.alive_tag = f"{p.prefix}.alive"
        self.end_tag = f"{p.prefix}.end_reason"
        self.failure_tags = failure_tags(p.prefix)
        self.failures = 0  # session failures since the runtime started (the service may restart)
        self.handshake_timeouts = 0  # sessions that timed out before power transfer, in a row
        self.last_failure = ""
        self.outputs = link_outputs(p.prefix)
        self._cmd: dict[str, Any] = {"setpoint_w": 0.0, "enable": False, "terminate": False}
        self._cmd |= {k: UNKNOWN for k in HOOKS}
        self._sent: tuple[dict[str, Any], float] = ({}, -math.inf)
        self._writer: asyncio.StreamWriter | None = None
        self._io: IOContext | None = None
        self.proc: asyncio.subprocess.Process | None = None
        self.restarts = 0
        self.check_pki()
        self.check_mo_roots()

    def check_pki(self) -> None:
        """The files the package's TLS 1.3 server loads from the site's PKI folder (its shared/security.py
        CertPath, KeyPath, KeyPasswordPath), checked when the site is built: a missing one would make the
        package fall back to plain TCP (the bridge refuses that too, but at run time)."""
        p = self.params
        if not p.tls:
            return
        base = self._path(p.pki_path or "") / "iso15118_2"
        missing = [f for f in PKI_FILES if not (base / f).is_file()]
        if missing:
            raise ParamError(("pki_path",), f"the PKI at {base.parent} lacks {', '.join(missing)} (under iso15118_2/)")

    def check_mo_roots(self) -> None:
        """The MO roots load when the site is built, not at the first EV (the service checks again)."""
        p = self.params
        if "PNC" not in p.auth_modes or not p.mo_roots:
            return
        path = self._path(p.mo_roots)
        try:
            x509.load_pem_x509_certificates(path.read_bytes())
        except OSError as exc:
            raise ParamError(("mo_roots",), f"cannot read {path}: {exc.strerror}") from None
        except ValueError:
            raise ParamError(
                ("mo_roots",), f"{path} holds no PEM certificate (the MO roots are a PEM bundle)"
            ) from None

    def declare(self) -> list[TagSpec]:
        # Inputs age to stale after a missed heartbeat or two: the service reports at least every 0.5 s.
        age = self.params.heartbeat_s
        specs = [TagSpec(n, t, u, Direction.INPUT, None, age, d) for n, t, u, d in self.inputs.values()]
        specs.append(
            TagSpec(self.alive_tag, TagType.BOOL, "", Direction.INPUT, None, None, "the SECC service is heard")
        )
        specs.append(TagSpec(self.end_tag, TagType.STR, "", Direction.INPUT, None, None, "why the last session ended"))
        f = self.failure_tags
        specs += [
            TagSpec(f["count"], TagType.INT, "", Direction.INPUT, None, None, "session failures since the start"),
            TagSpec(f["last"], TagType.STR, "", Direction.INPUT, None, None, "the last failure: kind: reason"),
            TagSpec(
                f["handshake"],
                TagType.INT,
                "",
                Direction.INPUT,
                None,
                None,
                "handshake timeouts in a row (a weak link's mark)",
            ),
        ]
        o = self.outputs
        specs += [
            TagSpec(
                o["setpoint_w"], TagType.FLOAT, "W", Direction.OUTPUT, 0.0, None, "set point to the EV, + = charge"
            ),
            TagSpec(o["enable"], TagType.BOOL, "", Direction.OUTPUT, False, None, "power transfer permitted"),
            TagSpec(o["terminate"], TagType.BOOL, "", Direction.OUTPUT, False, None, "a latched trip: end the session"),
            TagSpec(o["max_charge_w"], TagType.FLOAT, "W", Direction.OUTPUT, 0.0, None, "safety's charge limit"),
            TagSpec(o["max_discharge_w"], TagType.FLOAT, "W", Direction.OUTPUT, 0.0, None, "safety's discharge limit"),
        ]
        specs += [
            TagSpec(o[k], TagType.STR, "", Direction.OUTPUT, UNKNOWN, None, f"the charger's {k}: {', '.join(v)}")
            for k, v in HOOKS.items()
        ]
        return specs

    def _path(self, p: str) -> Path:
        return Path(p) if os.path.isabs(p) else self.base_dir / p

    def command(self) -> list[str]:
        p = self.params
        cmd = ["ip", "netns", "exec", p.netns] if p.netns else []
        cmd += [str(self._path(p.python)) if p.python else str(DEFAULT_PYTHON), str(BRIDGE)]
        cmd += ["--iface", p.iface, "--protocols", ",".join(p.protocols), "--auth-modes", ",".join(p.auth_modes)]
        cmd += ["--stale-s", str(p.stale_s), "--bounded-jvm" if p.bounded_jvm else "--no-bounded-jvm"]
        if p.tls:
            cmd += ["--tls", "--pki-path", str(self._path(p.pki_path or ""))]
        if "PNC" in p.auth_modes and p.mo_roots:
            cmd += ["--mo-roots", str(self._path(p.mo_roots))] + (["--pnc-fallback-eim"] if p.pnc_fallback_eim else [])
        if p.log_messages:
            cmd.append("--log-messages")
        return cmd

    # -- the service --------------------------------------------------------------------------------
    def _deliver_stale(self) -> None:
        if self._io is not None:
            now = self._io.now_us()
            ups = [TagUpdate(n, None, Quality.STALE, now) for n, *_ in self.inputs.values()]
            self._io.deliver([*ups, TagUpdate(self.alive_tag, False, Quality.GOOD, now)])

    def _on_line(self, line: bytes) -> None:
        try:
            msg = json.loads(line)
        except ValueError:
            log.error("%s: the SECC service sent a malformed line; dropped", self.name)
            return
        assert self._io is not None
        now = self._io.now_us()
        if not isinstance(msg, dict):
            return
        if isinstance(msg.get("status"), dict):
            st = msg["status"]
            ups = [TagUpdate(self.alive_tag, True, Quality.GOOD, now)]
            for key, (name, *_) in self.inputs.items():
                # bad data turns the tag bad (the scan coerces; a wrong type is BAD there), never a guess
                ups.append(TagUpdate(name, st.get(key), Quality.GOOD, now))
            self._io.deliver(ups)
        elif isinstance(msg.get("ended"), dict):
            e = msg["ended"]
            reason = f"{e.get('reason', '')} (in {e.get('state', '?')})"
            log.info("%s: session ended: %s", self.name, reason)
            ups = [TagUpdate(self.end_tag, reason[:500], Quality.GOOD, now)]
            kind = e.get("failure")
            if kind is not None:
                self.failures += 1
                self.last_failure = f"{kind}: {reason}"[:500]
                log.warning("%s: ISO 15118 session failed: %s", self.name, self.last_failure)
            # A handshake timeout counts on; a session that got through (to power, or to a normal end) ends
            # the run. A TLS or protocol failure before power says nothing about the link: the run stays.
            if kind == "handshake_timeout":
                self.handshake_timeouts += 1
            elif kind is None or e.get("handshake") is not True:
                self.handshake_timeouts = 0
            self._io.deliver([*ups, *self._failure_updates(now)])

    def _failure_updates(self, now: int) -> list[TagUpdate]:
        f = self.failure_tags
        return [
            TagUpdate(f["count"], self.failures, Quality.GOOD, now),
            TagUpdate(f["last"], self.last_failure, Quality.GOOD, now),
            TagUpdate(f["handshake"], self.handshake_timeouts, Quality.GOOD, now),
        ]

    async def _spawn(self) -> tuple[asyncio.StreamReader, int]:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        cmd = self.command()
        i = cmd.index(str(BRIDGE)) + 1
        cmd[i:i] = ["--fd", str(theirs.fileno())]
        out = open(self._path(self.params.log_file), "ab") if self.params.log_file else None  # noqa: SIM115
        try:
            self.proc = await asyncio.create_subprocess_exec(
                *cmd,
                pass_fds=(theirs.fileno(),),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=out if out is not None else asyncio.subprocess.DEVNULL,
                stderr=out if out is not None else None,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
                preexec_fn=self._renice,
            )
        finally:
            theirs.close()
            if out is not None:
                out.close()
        reader, self._writer = await asyncio.open_connection(sock=ours, limit=1 << 20)
        self._sent = ({}, -math.inf)
        log.info("%s: SECC service started (pid %d) on %s", self.name, self.proc.pid, self.params.iface)
        return reader, self.proc.pid

    def _renice(self) -> None:
        """In the child before exec, so the service and its JVM inherit it; without the privilege for a
        negative value the service runs at the default priority."""
        with contextlib.suppress(OSError):
            os.nice(self.params.nice)

    async def _watch(self, reader: asyncio.StreamReader) -> str:
        """Until the service exits or falls silent; returns why."""
        p, proc = self.params, self.proc
        assert proc is not None
        heard = False
        last = time.monotonic()
        while True:
            limit = p.heartbeat_s if heard else p.startup_grace_s
            try:
                line = await asyncio.wait_for(reader.readline(), timeout=max(0.05, last + limit - time.monotonic()))
            except TimeoutError:
                return f"silent for {limit:g} s (hung)"
            except (ConnectionError, ValueError) as exc:
                return f"channel broken ({exc})"
            if not line:
                await proc.wait()
                return f"exited with code {proc.returncode}"
            heard, last = True, time.monotonic()
            self._on_line(line)

    async def _end(self) -> None:
        proc, self.proc = self.proc, None
        w, self._writer = self._writer, None
        if w is not None:
            w.close()
        if proc is not None and proc.returncode is None:
            proc.terminate()
            try:
                await asyncio.wait_for(proc.wait(), 3)
            except TimeoutError:
                proc.kill()
                await proc.wait()

    async def run(self, io: IOContext) -> None:
        self._io = io
        backoff = self.params.backoff_s
        self._deliver_stale()  # nothing is known until the service speaks
        io.deliver(self._failure_updates(io.now_us()))  # counted here, so known from the start
        while True:
            started = time.monotonic()
            try:
                reader, _ = await self._spawn()
                why = await self._watch(reader)
            except OSError as exc:
                why = f"could not start ({exc})"
            finally:
                await self._end()
            self._deliver_stale()
            if time.monotonic() - started > 60:
                backoff = self.params.backoff_s  # it ran well for a while: the backoff starts over
            log.error("%s: SECC service %s; restarting in %.1f s", self.name, why, backoff)
            self.restarts += 1
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, self.params.backoff_max_s)

    # -- the committed outputs ------------------------------------------------------------------------
    def on_outputs(self, now_us: int, outputs: Mapping[str, Any], changed: Mapping[str, Any]) -> None:
        for key, tag in self.outputs.items():
            if tag in outputs:
                self._cmd[key] = outputs[tag]
        self._send()

    def _send(self) -> None:
        w = self._writer
        if w is None or w.is_closing():
            return
        last, t = self._sent
        now = time.monotonic()
        if self._cmd == last and now - t < SEND_EVERY_S:
            return
        if w.transport.get_write_buffer_size() > 1 << 16:
            return  # the service is not reading: its set point ages to 0 W there, and the watch restarts it
        w.write(json.dumps(self._cmd, separators=(",", ":")).encode() + b"\n")
        self._sent = (dict(self._cmd), now)

    async def close(self, safe_outputs: Mapping[str, Any]) -> None:
        """The safe command first (0 W, no permit), then the service is stopped (its session ends)."""
        for key, tag in self.outputs.items():
            if tag in safe_outputs:
                self._cmd[key] = safe_outputs[tag]
        self._sent = ({}, -math.inf)
        self._send()
        w = self._writer
        if w is not None:
            with contextlib.suppress(ConnectionError, asyncio.TimeoutError):
                await asyncio.wait_for(w.drain(), 1)
        await self._end()
