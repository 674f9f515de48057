"""The real-time runner: paces ``Engine.step`` at absolute deadlines and connects it to the world.

Scan thread (the main thread): sleep to the deadline, drain staged reads, task writes and commands, step,
hand outputs to the I/O thread, publish the committed image to the task process, record, kick the
watchdogs if the cycle was healthy. Nothing on this thread blocks on a socket, a file lock or a process.
"""

from __future__ import annotations

import array
import asyncio
import contextlib
import datetime as dt
import functools
import gc
import json
import logging
import logging.handlers
import os
import queue
import signal
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from runtime import statefile
from runtime.api import Command, Event
from runtime.clock import Clock, MonotonicClock, Pacer
from runtime.commands import CONTROL, RESET_EXIT, Gate, Refused, Request
from runtime.engine import EVSES_OUT, PERSIST_FAULT, REVISION, Engine, StepResult
from runtime.eventlog import EventFile, EventLimiter
from runtime.eventstream import EventStream
from runtime.evses import depot_status, prefix_of
from runtime.io.driver import IOContext
from runtime.iothread import IOThread
from runtime.online.service import SNAPSHOT, OnlineChange, OnlineControlServer, write_snapshot
from runtime.online.validate import describe, load_site_text, read_text
from runtime.recording import Writer, frame_line, output_line
from runtime.site import BuiltSite
from runtime.statefile import Persister
from runtime.tags import US, Direction, Image, TagUpdate
from runtime.taskproc import (
    ALIVE,
    Channels,
    TaskChannel,
    TaskSupervisor,
    restart_groups,
    site_channels,
    site_groups,
    stop_all,
)
from runtime.watchdog import Supervisor, WatchdogError
from runtime.yamlload import ConfigError

log = logging.getLogger("v2g_plc")

RESET_GRACE_S = 1.0  # real time between an accepted reset and the exit: the asking task answers its peer


def apply_force(engine: Engine, c: Command) -> bool:
    """Apply a force/unforce command to the engine; False for any other command. A force the engine
    refuses (unknown tag, wrong type, a runtime diagnostic) is logged and applied nowhere."""
    try:
        if c.name == "force":
            engine.force(c.args["tag"], c.args["value"])
        elif c.name == "unforce":
            engine.unforce(c.args["tag"])
        else:
            return False
    except (KeyError, ValueError, TypeError) as exc:
        log.error("force refused: %s", exc)
    return True


@dataclass
class RunOptions:
    for_s: float | None = None
    speed: int = 1
    stats_json: Path | None = None
    dump_tags: Path | None = None
    record: Path | None = None
    record_outputs: Path | None = None
    start_plant: bool = True
    status_line: bool | None = None  # None: when stderr is a terminal
    watch: bool = True  # online change when the site file is saved; False: on `v2g-plc reload` only


def percentiles(samples: array.array, scale: float) -> dict[str, float]:
    if not samples:
        return {"p50": 0.0, "p99": 0.0, "max": 0.0}
    s = sorted(samples)
    pick = lambda q: s[min(len(s) - 1, int(q * (len(s) - 1) + 0.5))]  # noqa: E731
    return {"p50": round(pick(0.50) * scale, 4), "p99": round(pick(0.99) * scale, 4), "max": round(s[-1] * scale, 4)}


def dump_tags(res: StepResult, built: BuiltSite, path: Path) -> None:
    out = {}
    for name, tv in res.image.items():
        spec = built.tags[name]
        item: dict[str, Any] = {
            "value": tv.value,
            "quality": tv.quality.value,
            "unit": spec.unit,
            "age_s": round((res.now_us - tv.t_us) / US, 6),
            "direction": spec.direction.value,
        }
        if tv.forced:
            item["forced"] = True
        out[name] = item
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"k": res.k, "t": res.now_us / US, "tags": out}, indent=1, default=str) + "\n")


def site_start(built: BuiltSite) -> dt.datetime:
    s = built.loaded.config.site
    tz = ZoneInfo(s.timezone)
    if s.start is None:
        return dt.datetime.now(tz)
    return s.start if s.start.tzinfo else s.start.replace(tzinfo=tz)


def process_age_s() -> float | None:
    """Seconds since this process started (Linux /proc; 10 ms resolution): for "first cycle after start"."""
    try:
        with open("/proc/self/stat") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
        start = int(fields[19]) / os.sysconf("SC_CLK_TCK")  # field 22, starttime, in clock ticks after boot
        return round(time.clock_gettime(time.CLOCK_BOOTTIME) - start, 3)
    except (OSError, ValueError, IndexError):
        return None


def memory_mb() -> dict[str, float]:
    out = {}
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith(("VmRSS:", "VmHWM:")):
                    key = "rss_mb" if line.startswith("VmRSS") else "peak_rss_mb"
                    out[key] = round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    return out


class PlantProcess:
    """The virtual plant is a Modbus peer in a process of its own, never a thread of the runtime."""

    def __init__(self, site_path: Path, speed: int):
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "runtime.sim", "--site", str(site_path), "--speed", str(speed)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )

    def wait_ready(self, timeout: float = 60.0) -> None:
        got: list[bytes] = []
        t = threading.Thread(target=lambda: got.append(self.proc.stdout.readline()), daemon=True)  # type: ignore[union-attr]
        t.start()
        t.join(timeout)
        if not got or got[0].strip() != b"READY":
            self.stop()
            raise RuntimeError(f"virtual plant did not start (said {got[0][:200] if got else b'nothing'!r})")
        threading.Thread(target=self.proc.stdout.read, daemon=True).start()  # type: ignore[union-attr]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


class StartError(Exception):
    """The runtime cannot start; ``code`` is the exit status (2: fix the configuration or the state)."""

    def __init__(self, message: str, code: int):
        super().__init__(message)
        self.code = code


class Runner:
    # How latched state reaches the disk; a test swaps in a failing one (root ignores file modes).
    state_writer = staticmethod(statefile.write_atomic)

    def __init__(self, built: BuiltSite, opts: RunOptions, clock: Clock | None = None):
        self.built = built
        self.opts = opts
        cfg = built.loaded.config
        self.cfg = cfg
        self.clock = clock or MonotonicClock(cfg.scan.spin_us * 1000)
        self.engine: Engine = built.engine()
        self.period_ns = cfg.scan.period_us * 1000  # real time per cycle
        self.sim_period_us = built.info.period_us  # cycle-clock time per cycle (x speed)
        self.heartbeat_ns = int(cfg.task_process.heartbeat_s * 1e9)
        self._stop = threading.Event()
        self._commands: queue.SimpleQueue[Command] = queue.SimpleQueue()
        self._reconfigure: queue.SimpleQueue[Command] = queue.SimpleQueue()  # the runtime's own (online change)
        self.last: StepResult | None = None
        self.lateness = array.array("d")
        self.cycle_times = array.array("d")
        self.state_dir = built.loaded.resolve(cfg.state_dir)
        self.state_file = self.state_dir / "state.json"
        self.events = EventFile(self.state_dir / "events.jsonl")
        self.limiter = EventLimiter()
        self.first_cycle_s: float | None = None
        self.pacer = Pacer(0, self.period_ns, cfg.scan.overrun_fault_after)  # replaced when the scan starts
        self.out_names = sorted(s.name for s in built.tags.by_direction(Direction.OUTPUT, Direction.MEMORY))
        self.channel = Channels(site_channels(built))  # one per task process group
        # Set by start(); every one of them is None until then.
        self.io: IOContext | None = None
        self.iot: IOThread | None = None
        self.supervisors: list[TaskSupervisor] = []
        self.streams: list[EventStream] = []
        self.online: OnlineChange | None = None
        self.persister: Persister | None = None
        self.watchdog: Supervisor | None = None
        self.rec: Writer | None = None
        self.rec_out: Writer | None = None
        self.end_ns: int | None = None
        self._prev_cycle_s = 0.0
        self._ready = False
        self._clean = False
        evses = cfg.evses.ids if cfg.evses is not None else ()
        types = {c.label: c.type for c in cfg.tasks}
        self.gate = Gate(types, cfg.commands, cfg.commissioning, built.info.period_us, evses=evses)
        self.gate.validators = [f for f in (getattr(i, "check_command", None) for i in built.interlocks) if f]
        self._control_ids = 0
        self.exit_code = 0
        self._reset_ns: int | None = None

    # -- start and stop ---------------------------------------------------------------------------
    def run(self) -> int:
        with contextlib.ExitStack() as stack:
            try:
                self.start(stack)
            except StartError as exc:
                log.error("%s", exc)
                return exc.code
            while not self._stop.is_set() and self.cycle():
                pass
            self._clean = True
        self._write_exit_files()
        return self.exit_code

    def start(self, stack: contextlib.ExitStack) -> None:
        """Everything the scan needs, in start order; each resource's teardown goes on ``stack`` as it
        starts, so the stop runs them in reverse: STOPPING=1, recordings closed, safe outputs written
        through every driver, task process stopped, plant stopped, and last the watchdog closed
        (disarmed only after a clean stop). A start that fails part-way undoes exactly what started."""
        opts, cfg, built = self.opts, self.cfg, self.built
        stack.callback(self._finish)
        if cfg.plant is not None and opts.start_plant:
            plant = PlantProcess(built.path, opts.speed)
            stack.callback(plant.stop)
            try:
                plant.wait_ready()
            except RuntimeError as exc:
                raise StartError(str(exc), 1) from exc
        states = self.restore_state()
        running = self.running_revision()
        self.engine.revision = running["revision"]
        write_snapshot(self.state_dir / SNAPSHOT, running["text"])  # before any child process starts
        self._install_signals()
        self.io = io = IOContext(self.clock.now_ns(), speed=opts.speed)
        tp, groups, runtime_id = cfg.task_process, site_groups(built), uuid.uuid4().hex
        for group, tasks in groups.items():
            sup = TaskSupervisor(
                built.path,
                self.channel.groups[group],
                speed=opts.speed,
                start=site_start(built),
                heartbeat_s=tp.heartbeat_s,
                startup_grace_s=tp.startup_grace_s,
                backoff_s=tp.restart_backoff_s,
                backoff_max_s=tp.restart_backoff_max_s,
                group=group,
                tasks=[t.name for t in tasks],
                runtime_id=runtime_id,  # a task-process restart is not a reboot: the same for every group
            )
            sup.snapshot = self.state_dir / SNAPSHOT  # never the edited file (docs/online-change.md)
            self.supervisors.append(sup)
        sups = self.supervisors
        stack.callback(stop_all, sups)  # after the safe outputs (below) are written
        owners = {s.name: d for d in built.drivers for s in d.declare() if s.direction is Direction.OUTPUT}
        self.iot = iot = IOThread(built.drivers, owners, io)
        iot.start()
        for sup in sups:  # an event stream for each group that has a task reading events
            if any(t.events for t in groups[sup.group]):
                self.streams.append(self._event_stream(sup.channel, iot.loop))
        stack.callback(self._stop_io)
        self.persister = Persister(
            self.state_file, states, iot.loop, write=self.state_writer, on_change=self._persist_changed
        )
        for sup in sups:
            iot.spawn(sup.run)
        self.online = online = OnlineChange(
            built.path,
            running,
            self.state_dir / SNAPSHOT,
            iot.loop,
            self._reconfigure.put,
            self._note,
            functools.partial(restart_groups, sups) if sups else None,
        )
        stack.callback(online.close)
        if opts.watch:
            online.watch()
        sock_path = built.loaded.control_socket
        server = OnlineControlServer(
            sock_path, self._commands.put, self.status, self._check_force, self.read_tags, online=online
        )
        iot.spawn(server.serve)
        iot.spawn(self._status_loop)
        if opts.record:
            self.rec = Writer(opts.record)
            stack.callback(self.rec.close)
        if opts.record_outputs:
            self.rec_out = Writer(opts.record_outputs)
            stack.callback(self.rec_out.close)
        # Opening the hardware watchdog arms it: only now, when everything else has started, so a start-up
        # failure ends the process (and systemd restarts it) instead of resetting the machine.
        try:
            self.watchdog = Supervisor(cfg.watchdog, log)
        except WatchdogError as exc:
            raise StartError(f"watchdog: {exc}", 2) from exc
        stack.callback(self.watchdog.stopping)
        self._set_priority(cfg.scan.realtime_priority)
        gc.collect()
        gc.freeze()  # what setup allocated never costs a collection pause inside a cycle
        # Cycle 0 is paced from here, after setup: its deadline is not already in the past, so start-up
        # never counts as lateness. The drivers' clock moves to the same origin.
        t0 = io.t0_ns = self.clock.now_ns() + self.period_ns
        self.pacer = Pacer(t0, self.period_ns, cfg.scan.overrun_fault_after)
        self.end_ns = None if opts.for_s is None else t0 + int(opts.for_s * 1e9)
        log.info(
            "scan running: period %.1f ms, speed x%d, %d tags, %d drivers, %d programs, %d interlocks, %d tasks",
            self.period_ns / 1e6,
            opts.speed,
            len(built.tags.specs),
            len(built.drivers),
            len(built.programs),
            len(built.interlocks),
            len(built.tasks),
        )

    @staticmethod
    def _event_stream(channel: TaskChannel, loop: asyncio.AbstractEventLoop) -> EventStream:
        """The scan's events to one task process, resumed where it says (on the I/O loop)."""
        stream = EventStream(lambda: channel.sock, loop)

        def subscribe(sid: str | None, seq: int | None) -> None:
            loop.call_soon_threadsafe(stream.subscribe, sid, seq)

        def detach() -> None:
            loop.call_soon_threadsafe(stream.detach)

        channel.on_subscribe, channel.on_detach = subscribe, detach
        return stream

    def _stop_io(self) -> None:
        assert self.iot is not None
        self.iot.stop(self.engine.safe_outputs)
        p = self.persister
        if p is not None and p.fault:
            log.error("stopping with latched state NOT persisted (%s): the next start may not see it", p.error)
        if self.last is not None:  # the I/O thread has stopped: written from here
            self.events.write(self.limiter.flush(self.last.k, self.last.now_us))
        self.events.close()

    def _finish(self) -> None:
        if self.watchdog is not None:
            self.watchdog.close(clean=self._clean)  # a crashed scan leaves the hardware watchdog armed
        if sys.stderr.isatty() and self.opts.status_line is not False:
            sys.stderr.write("\n")

    # -- the cycle --------------------------------------------------------------------------------
    def cycle(self) -> bool:
        """One scan at its deadline; False when ``--for`` has run out."""
        pacer = self.pacer
        deadline = pacer.deadline()
        if self.end_ns is not None and deadline >= self.end_ns:
            return False
        self.clock.sleep_until(deadline)
        wake = self.clock.now_ns()
        late = wake - deadline
        k = pacer.k
        now_us = k * self.sim_period_us
        commands, recorded, answers = self._drain_commands(now_us)
        res = self.engine.step(now_us, self._inputs(wake, late), commands)
        for cid, ok, reason in answers:  # after the cycle that applied them
            self.channel.ack(cid, ok, reason)
        if self.engine.reconfigured and self.online is not None and self.iot is not None:
            self.iot.loop.call_soon_threadsafe(self.online.outcome, self.engine.reconfigured)
        self._hand_out(res, recorded)
        if res.reset and self._reset_ns is None:
            # The outputs are safe from this cycle on (the engine holds them); the scan runs on for a grace
            # period so that the task that asked can answer its peer (OCPP's CALLRESULT), then stops:
            # safe outputs through every driver, state persisted, exit RESET_EXIT (RestartForceExitStatus=).
            log.warning("reset accepted: outputs safe; exiting with %d to restart in %.1f s", RESET_EXIT, RESET_GRACE_S)
            self._reset_ns = wake + int(RESET_GRACE_S * 1e9)
        if self._reset_ns is not None and wake >= self._reset_ns:
            self.exit_code = RESET_EXIT
            self._stop.set()
        done = self.clock.now_ns()
        self._prev_cycle_s = (done - wake) / 1e9
        self.lateness.append(late / 1e6)
        self.cycle_times.append((done - wake) / 1e6)
        if not pacer.finish(done):  # healthy = alive and on time; field faults are safety's business
            self._healthy(done)
        return True

    def _inputs(self, wake: int, late: int) -> list[TagUpdate]:
        """Staged reads, task writes and the runtime's own diagnostics, for this cycle."""
        assert self.io is not None and self.persister is not None
        alive = self.channel.check_alive(wake, self.heartbeat_ns)
        updates = self.io.drain()
        updates += self.channel.drain()
        updates += (
            TagUpdate("runtime.cycle_time", self._prev_cycle_s),
            TagUpdate("runtime.lateness", late / 1e9),
            TagUpdate("runtime.overruns", self.pacer.overruns),
            TagUpdate("runtime.overrun_fault", self.pacer.overrun_fault),
            TagUpdate(ALIVE, alive),
            *self.channel.alive_updates(),
            TagUpdate(PERSIST_FAULT, self.persister.fault),
            TagUpdate("runtime.available", self.engine.availability.operative),
            TagUpdate(EVSES_OUT, self.engine.availability.evses_out()),
            TagUpdate(REVISION, self.engine.revision),
        )
        return updates

    def _hand_out(self, res: StepResult, recorded: tuple[Command, ...]) -> None:
        """Outputs to the drivers, the image to the tasks, state and events to disk, the recordings."""
        assert self.iot is not None and self.persister is not None
        iot = self.iot
        iot.submit_outputs(res.now_us, res.outputs, res.changed_outputs)
        self.channel.publish(res.now_us, res.image, res.changed)  # to every task process attached
        if res.events:  # every event, unfolded: the log folds storms, tasks count
            for stream in self.streams:
                iot.loop.call_soon_threadsafe(stream.feed, res.events)
        if res.events or self.limiter.active:
            events = self.limiter.feed(res.k, res.now_us, res.events)
            if events:
                iot.loop.call_soon_threadsafe(self.events.write, events)
        if res.persist:
            self.persister.submit(res.persist)
        if self.rec is not None:
            self.rec.write(frame_line(res.k, res.now_us, res.input_changes, recorded))
        if self.rec_out is not None:
            self.rec_out.write(output_line(res, self.out_names))
        self.last = res

    def _healthy(self, done: int) -> None:
        assert self.watchdog is not None
        self.watchdog.healthy_cycle(done)
        if not self._ready:
            self._ready = True
            self.watchdog.ready()
            self.first_cycle_s = process_age_s()
            log.info("first good cycle %.3f s after process start", self.first_cycle_s or -1)

    # -- online change ----------------------------------------------------------------------------
    def running_revision(self) -> dict[str, Any]:
        """The description of the revision this runtime runs (``online.validate.describe``): the text read
        once more and checked to be what was built, so the snapshot children start from is that revision."""
        path = self.built.path
        try:
            text = read_text(path)
            same = load_site_text(path, text).config == self.cfg
        except ConfigError as exc:
            raise StartError(f"{path} changed while the runtime started: {exc}", 2) from exc
        if not same:
            raise StartError(f"{path} changed while the runtime started; start again", 2)
        return describe(self.built, text)

    def _note(self, kind: str, message: str, data: dict[str, Any]) -> None:
        """An event of the I/O thread (a reload refused before it reached the scan), at the last cycle."""
        res = self.last
        k, t = (res.k, res.now_us) if res is not None else (0, 0)
        ev = [Event(k, t, kind, "online", message, data)]
        self.events.write(ev)
        for stream in self.streams:
            stream.feed(ev)

    # -- persisted state --------------------------------------------------------------------------
    def restore_state(self) -> dict[str, Any]:
        """Persisted state back into the components, or a refusal to start (exit 2) that says why."""
        try:
            states = statefile.load(self.state_file)
            statefile.check_claims(states, self.engine.keeping_state, self.state_file, self.built.path)
            try:
                restored = self.engine.restore(states)
            except Exception as exc:
                raise statefile.StateError(
                    f"persisted state {self.state_file} does not fit this site's components "
                    f"({type(exc).__name__}: {exc}); it may hold latched trips. Inspect it, then clear it "
                    f"with: {statefile.CLEAR_COMMAND} --all {self.built.path}"
                ) from exc
        except statefile.StateError as exc:
            raise StartError(str(exc), 2) from exc
        for name in restored:
            log.info("restored persisted state of %s: %s", name, statefile.describe(states[name]))
        if not restored:
            log.info("no persisted state to restore")
        return states

    def _persist_changed(self, fault: bool) -> None:
        """On the I/O thread, when a state write fails or succeeds again: systemd's STATUS= at once."""
        if self.watchdog is not None:
            self.watchdog.status(self.status_text())

    # -- the control socket's view ----------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        res = self.last
        if res is None:
            return {"k": -1}
        img = res.image
        p = self.persister
        return {
            "k": res.k,
            "t": res.now_us / US,
            "mode": img.tag("mode.state").value,
            "trip": img.tag("safety.trip").value,
            "overruns": self.pacer.overruns,
            "forces": dict(self.engine.forces),
            "persist_fault": bool(p and p.fault),
            "persist_error": p.error if p else None,
            "revision": self.engine.revision,
            **({"reload": dict(self.online.status)} if self.online is not None else {}),
            **(self._evses_status(img) if self.cfg.evses is not None else {}),
        }

    def _evses_status(self, img: Image) -> dict[str, Any]:
        """On a depot (no unprefixed mode or trip): each EVSE's trip code, and the status line's summary."""
        assert self.cfg.evses is not None
        ids = self.cfg.evses.ids
        return {
            "evses": {str(n): {"trip": img.value(f"{prefix_of(n)}safety.trip") or ""} for n in ids},
            "summary": depot_status(img, ids),
        }

    def read_tags(self, names: list[str]) -> dict[str, Any]:
        res = self.last
        if res is None:
            return {}
        out: dict[str, Any] = {}
        for n in names:
            if n not in res.image:
                raise KeyError(f"unknown tag {n!r}")
            tv = res.image[n]
            out[n] = {
                "value": tv.value,
                "quality": tv.quality.value,
                "age_s": (res.now_us - tv.t_us) / US,
                "forced": tv.forced,
                "k": res.k,
            }
        return out

    def _check_force(self, tag: str, value: Any) -> None:
        if value is not None and not self.cfg.commissioning:
            raise ValueError("force only while the site file says commissioning: true")
        if value is None:  # a release: any tag of the site
            if tag not in self.built.tags:
                raise KeyError(f"unknown tag {tag!r}")
            return
        self.engine.check_force(tag, value)

    def status_text(self) -> str:
        p = self.persister
        alarm = f"PERSIST FAULT: {p.error}; outputs held safe | " if p is not None and p.fault else ""
        res = self.last
        if res is None:
            return alarm + "starting"
        img = res.image
        lat = percentiles(self.lateness[-50:], 1.0)

        def val(n: str, fmt: str = "{}") -> str:
            tv = img.tag(n)
            return "-" if tv.value is None else (fmt.format(tv.value) + ("" if tv.good else f"({tv.quality.value})"))

        tail = f"late_p99={lat['p99']:.3f}ms overruns={self.pacer.overruns}"
        if self.cfg.evses is not None:
            return alarm + f"k={res.k} {depot_status(img, self.cfg.evses.ids)} {tail}"
        return alarm + (
            f"k={res.k} mode={val('mode.state')} trip={val('safety.trip') or '-'} "
            f"V={val('grid.voltage', '{:.1f}')} f={val('grid.frequency', '{:.2f}')} "
            f"P={val('inverter.power', '{:.0f}')}W sp={val('inverter.setpoint', '{:.0f}')}W "
            f"soc={val('ev.soc', '{:.3f}')} {tail}"
        )

    async def _status_loop(self) -> None:
        import asyncio

        tty = self.opts.status_line if self.opts.status_line is not None else sys.stderr.isatty()
        while True:
            await asyncio.sleep(1.0 if tty else 10.0)
            text = self.status_text()
            if tty:
                sys.stderr.write("\r\x1b[2K" + text)
                sys.stderr.flush()
            else:
                log.info("status %s", text)
            if self.watchdog is not None:
                self.watchdog.status(text)

    def _drain_commands(
        self, now_us: int
    ) -> tuple[tuple[Command, ...], tuple[Command, ...], list[tuple[str, bool, str]]]:
        """Commands for this cycle, each checked by the gate: (for the engine, for the recording, the
        answers to the task process). Forces act on the engine here, before the step, and are recorded
        so that replay forces the same tags. A refused command is logged with who asked."""
        reqs: list[Request] = []
        while True:
            try:
                c = self._commands.get_nowait()
            except queue.Empty:
                break
            self._control_ids += 1
            by = str(c.args.get("by", "control socket"))
            args = {k: v for k, v in c.args.items() if k != "by"}
            reqs.append(Request(f"control-{self._control_ids}", c.name, CONTROL, by, args))
        own: list[Command] = []
        while True:
            try:
                own.append(self._reconfigure.get_nowait())  # the runtime's own: no gate, recorded like any
            except queue.Empty:
                break
        tasks = self.channel.take_requests()
        reqs += tasks
        from_task = {id(r) for r in tasks}
        out, recorded, answers = [], [], []
        for r in reqs:
            try:
                c = self.gate.check(r, now_us)
                if c.name in ("force", "unforce"):  # the HMI's: the engine's own check, so the answer is true
                    try:
                        self._check_force(c.args["tag"], c.args["value"] if c.name == "force" else None)
                    except (KeyError, ValueError, TypeError) as exc:
                        raise Refused(str(exc)) from None
            except Refused as exc:
                log.error("command %s from %s refused (asked by %s): %s", r.kind, r.source, r.by, exc)
                if id(r) in from_task:
                    answers.append((r.id, False, str(exc)))
                continue
            if id(r) in from_task:
                answers.append((r.id, True, ""))
            recorded.append(c)
            if not apply_force(self.engine, c):
                out.append(c)
        return (*out, *own), (*recorded, *own), answers

    def _write_exit_files(self) -> None:
        if self.opts.stats_json:
            stats = {
                "period_ms": self.period_ns / 1e6,
                "speed": self.opts.speed,
                "cycles": len(self.lateness),
                "overruns": self.pacer.overruns,
                "skipped": self.pacer.skipped,
                "lateness_ms": percentiles(self.lateness, 1.0),
                "cycle_time_ms": percentiles(self.cycle_times, 1.0),
                "first_cycle_after_start_s": self.first_cycle_s,
                **memory_mb(),
            }
            self.opts.stats_json.parent.mkdir(parents=True, exist_ok=True)
            self.opts.stats_json.write_text(json.dumps(stats, indent=1) + "\n")
        if self.opts.dump_tags and self.last is not None:
            dump_tags(self.last, self.built, self.opts.dump_tags)

    def _install_signals(self) -> None:
        def handler(signum: int, frame: Any) -> None:
            log.info("signal %d: stopping; outputs go to their safe values", signum)
            self._stop.set()

        if threading.current_thread() is not threading.main_thread():
            return  # embedded (a test): whoever started this thread stops it with stop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, handler)

    def stop(self) -> None:
        self._stop.set()

    @staticmethod
    def _set_priority(prio: int | None) -> None:
        if prio is None:
            return
        try:
            # 0 = this (the scan) thread. CPUSchedulingResetOnFork=yes in the unit sets RESET_ON_FORK, and
            # the kernel refuses an unprivileged call that would clear it: ask with the flag.
            os.sched_setscheduler(0, os.SCHED_FIFO | os.SCHED_RESET_ON_FORK, os.sched_param(prio))
            log.info("scan thread runs SCHED_FIFO priority %d", prio)
        except (PermissionError, OSError) as exc:
            log.warning(
                "scan thread may not use SCHED_FIFO priority %d (%s); running at normal priority "
                "(grant LimitRTPRIO= in the unit)",
                prio,
                exc,
            )


def setup_logging(journal: bool | None = None) -> None:
    """Logging through a queue: the scan thread only enqueues; a listener thread writes."""
    journal = (not sys.stderr.isatty()) if journal is None else journal
    fmt = (
        "%(levelname)s %(name)s: %(message)s"
        if journal and os.environ.get("JOURNAL_STREAM")
        else "%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(fmt))
    q: queue.SimpleQueue[logging.LogRecord] = queue.SimpleQueue()
    root = logging.getLogger()
    root.handlers[:] = [logging.handlers.QueueHandler(q)]
    root.setLevel(logging.INFO)
    listener = logging.handlers.QueueListener(q, handler)
    listener.start()
    import atexit

    atexit.register(listener.stop)
    global _listener
    _listener = listener


_listener: logging.handlers.QueueListener | None = None


def flush_logging() -> None:
    """Write out every queued log record now (before the process re-executes itself: no atexit then)."""
    if _listener is not None and _listener._thread is not None:
        _listener.stop()
