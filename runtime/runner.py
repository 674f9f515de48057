"""The real-time runner: paces ``Engine.step`` at absolute deadlines and connects it to the world.

Scan thread (the main thread): sleep to the deadline, drain staged reads, task writes and commands, step,
hand outputs to the I/O thread, publish the committed image to the task process, record, kick the
watchdogs if the cycle was healthy. Nothing on this thread blocks on a socket, a file lock or a process.
"""

from __future__ import annotations

import array
import datetime as dt
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
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from runtime.api import Command
from runtime.clock import Clock, MonotonicClock, Pacer
from runtime.engine import Engine, StepResult
from runtime.io.driver import Driver, IOContext
from runtime.iothread import ControlServer, IOThread
from runtime.recording import Writer, frame_line, output_line
from runtime.site import BuiltSite
from runtime.tags import US, Direction, TagUpdate
from runtime.taskproc import TaskChannel, TaskSupervisor
from runtime.watchdog import Supervisor, WatchdogError

log = logging.getLogger("v2g_plc")


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


class StateError(Exception):
    """The persisted state cannot be trusted: the runtime does not start."""


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


class Runner:
    def __init__(self, built: BuiltSite, opts: RunOptions, clock: Clock | None = None):
        self.built = built
        self.opts = opts
        cfg = built.loaded.config
        self.cfg = cfg
        self.clock = clock or MonotonicClock(cfg.scan.spin_us * 1000)
        self.engine: Engine = built.engine()
        self.period_ns = cfg.scan.period_us * 1000  # real time per cycle
        self.sim_period_us = built.info.period_us  # cycle-clock time per cycle (x speed)
        self._stop = threading.Event()
        self._commands: queue.SimpleQueue[Command] = queue.SimpleQueue()
        self.last: StepResult | None = None
        self.lateness = array.array("d")
        self.cycle_times = array.array("d")
        self.state_dir = built.loaded.resolve(cfg.state_dir)
        self.state_file = self.state_dir / "state.json"
        self.events_file = self.state_dir / "events.jsonl"
        self.first_cycle_s: float | None = None
        self.pacer = Pacer(0, self.period_ns, cfg.scan.overrun_fault_after)  # replaced when the scan starts

    # -- setup ----------------------------------------------------------------------------------
    def _restore(self) -> None:
        try:
            states = json.loads(self.state_file.read_text())
            if not isinstance(states, dict):
                raise ValueError("not a JSON object")
        except FileNotFoundError:
            return
        except (OSError, ValueError) as exc:
            # It may hold a latched operator trip: starting without it would forget the trip. Refuse, say why.
            raise StateError(
                f"persisted state {self.state_file} is unreadable ({exc}); it may hold latched "
                "trips. Inspect it, then delete it to accept losing them."
            ) from exc
        self.engine.restore(states)
        log.info("restored persisted state of %s", ", ".join(sorted(states)) or "nothing")

    def _persist(self, changes: dict[str, Any]) -> None:
        """On the I/O thread: merge and write atomically (tmp + fsync + rename)."""
        try:
            states = json.loads(self.state_file.read_text()) if self.state_file.exists() else {}
        except (OSError, ValueError):
            states = {}
        states.update(changes)
        states = {k: v for k, v in states.items() if v is not None}  # nothing to keep: no entry
        self.state_dir.mkdir(parents=True, exist_ok=True)
        tmp = self.state_file.with_suffix(".tmp")
        with open(tmp, "w") as fh:
            json.dump(states, fh, default=str)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, self.state_file)

    def _log_events(self, events: list) -> None:
        """On the I/O thread: the event log with cycle numbers, as journal lines and a JSONL file."""
        self.state_dir.mkdir(parents=True, exist_ok=True)
        with open(self.events_file, "a") as fh:
            for e in events:
                j = e.as_json()
                fh.write(json.dumps(j, default=str) + "\n")
                log.warning("event k=%d kind=%s source=%s: %s", e.k, e.kind, e.source, e.message)

    def status(self) -> dict[str, Any]:
        res = self.last
        if res is None:
            return {"k": -1}
        img = res.image
        return {
            "k": res.k,
            "t": res.now_us / US,
            "mode": img.tag("mode.state").value,
            "trip": img.tag("safety.trip").value,
            "overruns": self.pacer.overruns,
            "forces": dict(self.engine.forces),
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
        if value is None:  # a release: any tag of the site
            if tag not in self.built.tags:
                raise KeyError(f"unknown tag {tag!r}")
            return
        self.engine.check_force(tag, value)

    def status_text(self) -> str:
        res = self.last
        if res is None:
            return "starting"
        img = res.image
        lat = percentiles(self.lateness[-50:], 1.0)

        def val(n: str, fmt: str = "{}") -> str:
            tv = img.tag(n)
            return "-" if tv.value is None else (fmt.format(tv.value) + ("" if tv.good else f"({tv.quality.value})"))

        return (
            f"k={res.k} mode={val('mode.state')} trip={val('safety.trip') or '-'} "
            f"V={val('grid.voltage', '{:.1f}')} f={val('grid.frequency', '{:.2f}')} "
            f"P={val('inverter.power', '{:.0f}')}W sp={val('inverter.setpoint', '{:.0f}')}W "
            f"soc={val('ev.soc', '{:.3f}')} late_p99={lat['p99']:.3f}ms overruns={self.pacer.overruns}"
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
            wd = getattr(self, "watchdog", None)
            if wd is not None:
                wd.status(text)

    # -- main -------------------------------------------------------------------------------------
    def run(self) -> int:
        opts, cfg, built = self.opts, self.cfg, self.built
        plant = None
        if cfg.plant is not None and opts.start_plant:
            plant = PlantProcess(built.path, opts.speed)
            try:
                plant.wait_ready()
            except RuntimeError as exc:
                log.error("%s", exc)
                return 1
        try:
            self._restore()
        except StateError as exc:
            log.error("%s", exc)
            if plant is not None:
                plant.stop()
            return 2
        self._install_signals()

        t0 = self.clock.now_ns()
        io = IOContext(t0, speed=opts.speed)
        owners: dict[str, Driver] = {}
        for d in built.drivers:
            for s in d.tag_specs():
                if s.direction is Direction.OUTPUT:
                    owners[s.name] = d
        iot = IOThread(built.drivers, owners, io)
        iot.start()
        channel = TaskChannel(
            frozenset(s.name for t in built.tasks for s in t.declare() if s.direction is Direction.SHARED)
        )
        supervisor = None
        if built.tasks:
            tp = cfg.task_process
            supervisor = TaskSupervisor(
                built.path,
                channel,
                speed=opts.speed,
                start=site_start(built),
                heartbeat_s=tp.heartbeat_s,
                backoff_s=tp.restart_backoff_s,
                backoff_max_s=tp.restart_backoff_max_s,
            )
            iot.spawn(supervisor.run)
        sock_path = built.loaded.resolve(cfg.control_socket) if cfg.control_socket else self.state_dir / "control.sock"
        control = ControlServer(sock_path, self._commands.put, self.status, self._check_force, self.read_tags)
        iot.spawn(control.serve)
        iot.spawn(self._status_loop)

        rec = Writer(opts.record) if opts.record else None
        rec_out = Writer(opts.record_outputs) if opts.record_outputs else None
        out_names = sorted(s.name for s in built.tags.by_direction(Direction.OUTPUT, Direction.MEMORY))
        heartbeat_ns = int(cfg.task_process.heartbeat_s * 1e9)

        # Opening the hardware watchdog arms it: only now, when everything else has started, so a start-up
        # failure ends the process (and systemd restarts it) instead of resetting the machine.
        try:
            self.watchdog = Supervisor(cfg.watchdog, log)
        except WatchdogError as exc:
            log.error("watchdog: %s", exc)
            iot.stop(self.engine.safe_outputs)
            if supervisor is not None:
                supervisor.stop()
            if plant is not None:
                plant.stop()
            return 2
        self._set_priority(cfg.scan.realtime_priority)
        gc.collect()
        gc.freeze()  # what setup allocated never costs a collection pause inside a cycle
        # Cycle 0 is paced from here, after setup: its deadline is not already in the past, so start-up
        # never counts as lateness. The drivers' clock moves to the same origin.
        t0 = io.t0_ns = self.clock.now_ns() + self.period_ns
        self.pacer = pacer = Pacer(t0, self.period_ns, cfg.scan.overrun_fault_after)
        end_ns = None if opts.for_s is None else t0 + int(opts.for_s * 1e9)
        prev_cycle_s = 0.0
        ready_sent = False
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
        clean = False
        try:
            while not self._stop.is_set():
                deadline = pacer.deadline()
                if end_ns is not None and deadline >= end_ns:
                    break
                self.clock.sleep_until(deadline)
                wake = self.clock.now_ns()
                late = wake - deadline
                k = pacer.k
                now_us = k * self.sim_period_us
                updates = io.drain()
                updates += channel.drain()
                alive = channel.heard and wake - channel.last_heard_ns < heartbeat_ns
                updates += (
                    TagUpdate("runtime.cycle_time", prev_cycle_s),
                    TagUpdate("runtime.lateness", late / 1e9),
                    TagUpdate("runtime.overruns", pacer.overruns),
                    TagUpdate("runtime.overrun_fault", pacer.overrun_fault),
                    TagUpdate("runtime.task_process_alive", alive),
                )
                commands, recorded = self._drain_commands()
                res = self.engine.step(now_us, updates, commands)
                iot.submit_outputs(now_us, res.outputs, res.changed_outputs)
                if supervisor is not None:
                    channel.publish(now_us, res.image, res.changed)
                if res.events:
                    iot.loop.call_soon_threadsafe(self._log_events, res.events)
                if res.persist:
                    iot.loop.call_soon_threadsafe(self._persist, res.persist)
                if rec is not None:
                    rec.write(frame_line(k, now_us, res.input_changes, recorded))
                if rec_out is not None:
                    rec_out.write(output_line(res, out_names))
                self.last = res
                done = self.clock.now_ns()
                prev_cycle_s = (done - wake) / 1e9
                self.lateness.append(late / 1e6)
                self.cycle_times.append((done - wake) / 1e6)
                overran = pacer.finish(done)
                if not overran:  # healthy = alive and on time; field faults are safety's business
                    self.watchdog.healthy_cycle(done)
                    if not ready_sent:
                        self.watchdog.ready()
                        ready_sent = True
                        self.first_cycle_s = process_age_s()
                        log.info("first good cycle %.3f s after process start", self.first_cycle_s or -1)
            clean = True
        finally:
            self.watchdog.stopping()
            safe = self.engine.safe_outputs
            iot.stop(safe)
            if supervisor is not None:
                supervisor.stop()
            if plant is not None:
                plant.stop()
            for w in (rec, rec_out):
                if w is not None:
                    w.close()
            self.watchdog.close(clean=clean)  # a crashed scan leaves the hardware watchdog armed
            if sys.stderr.isatty() and (self.opts.status_line is not False):
                sys.stderr.write("\n")
            self._write_exit_files()
        return 0

    def _drain_commands(self) -> tuple[tuple[Command, ...], tuple[Command, ...]]:
        """Operator commands for this cycle: (for the programs, for the recording). Forces act on the
        engine here, before the step, and are recorded so that replay forces the same tags."""
        out, recorded = [], []
        while True:
            try:
                c = self._commands.get_nowait()
            except queue.Empty:
                break
            recorded.append(c)
            if not apply_force(self.engine, c):
                out.append(c)
        return tuple(out), tuple(recorded)

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
