"""The task process and its channel to the scan (docs/design.md#processes-and-the-task-channel).

Tasks (prices, planner, OCPP, MQTT, metrics) run in a child process on its own asyncio loop, because a
busy Python thread inside the scan process ruins the scan's timing (measured: p99 lateness past 4 ms).
The two processes talk over a ``SOCK_SEQPACKET`` socket pair: message boundaries are kept, and the scan
side is non-blocking both ways, so the scan never waits for the task process. If the task process dies or
hangs, the scan keeps running, its shared tags age to ``stale`` and the supervisor restarts it.

Tasks are grouped into several such processes (``process:`` on a task; by default ``backoffice`` for OCPP,
``local`` for the local APIs and the HMI, ``planning`` for the rest), each with its own channel, supervisor
and alive tag ``runtime.tasks.<group>.alive``, so that one hung integration never takes another down.

Messages, over an inherited socket (never a network), each at most ``MAX_MSG`` bytes (a batch is split by
size, never dropped for its size):
  task -> scan: JSON because the task process talks to networks: the scan takes data from it, never code.
                ["w", [[tag, value, quality], ...]] shared-tag writes (only shared tags a task declared);
                ["hb"] heartbeat;
                ["c", {"id", "kind", "source", "by", "args"}] a typed command (runtime/commands.py),
                checked again by the scan and answered with an "ack";
                ["sub", stream | null, next_seq | null] where the event stream resumes (runtime/eventstream.py).
  scan -> task: pickled ("img", now_us, full, {tag: (value, quality, t_us, forced)}): the committed image;
                ("ack", id, accepted, reason): the answer to a command, after the cycle that applied it;
                ("ev", stream, [event, ...]) numbered events; ("gap", stream, from_seq, to_seq, dropped).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import datetime as dt
import errno
import itertools
import json
import logging
import os
import pickle
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from runtime.commands import Request
from runtime.tags import Direction, Image, Quality, TagSpec, TagType, TagUpdate, TagValue

if TYPE_CHECKING:
    from runtime.config import LoadedSite
    from runtime.site import BuiltSite
    from runtime.tasks.base import Task

log = logging.getLogger("v2g_plc.tasks")

HEARTBEAT_S = 0.5
CHUNK = 400  # tags per message at most; then split further by size
MAX_MSG = 64 * 1024  # bytes per message: far below the socket buffer (1 MiB), so a send never needs more
DRAIN_BUDGET = 1024 * 1024  # bytes the scan thread reads from the task process in one cycle: a flood waits
COMMAND_TIMEOUT_S = 5.0  # a task's command unanswered this long counts as refused ("no answer")
ALIVE = "runtime.task_process_alive"  # true only while every task process is alive: its meaning of one process


def alive_tag(group: str) -> str:
    return f"runtime.tasks.{group}.alive"


def group_alive_specs(groups: Sequence[str]) -> tuple[TagSpec, ...]:
    """One alive tag per task process group: which integration is down, beside the site-wide ALIVE."""
    return tuple(
        TagSpec(
            alive_tag(g),
            TagType.BOOL,
            "",
            Direction.INPUT,
            False,
            description=f"the task process {g!r} answered within its heartbeat limit",
        )
        for g in groups
    )


T = TypeVar("T")


def sized(
    items: Sequence[T], encode: Callable[[Sequence[T]], bytes], limit: int = MAX_MSG
) -> Iterator[tuple[Sequence[T], bytes]]:
    """``items`` in parts whose encoding is at most ``limit`` bytes, in order: CHUNK at a time, halved
    until each fits. One item that cannot fit alone raises ValueError (senders refuse it before queuing)."""
    for i in range(0, len(items), CHUNK):
        stack = [items[i : i + CHUNK]]
        while stack:
            part = stack.pop()
            data = encode(part)
            if len(data) <= limit:
                yield part, data
            elif len(part) == 1:
                raise ValueError(f"one item is {len(data)} bytes, more than a message may carry ({limit})")
            else:
                half = len(part) // 2
                stack += [part[half:], part[:half]]  # the first half is sent first


def encode_writes(part: Sequence[Any]) -> bytes:
    return json.dumps(["w", list(part)], default=str).encode()


class TaskChannel:
    """Scan-side end: drained at cycle start, fed after commit; never blocks."""

    def __init__(self, allowed: frozenset[str] = frozenset()) -> None:
        self.allowed = allowed  # the shared tags the site's tasks declared: nothing else may be written
        self.sock: socket.socket | None = None
        self.last_heard_ns = 0
        self.attached_ns = 0
        self.heard = False  # the current task process has said something since it was attached
        self._pending: dict[str, tuple[Any, str, int, bool]] = {}
        self._acks: list[tuple[str, bool, str]] = []
        self.limit = MAX_MSG  # halved when the kernel says a message is too long (EMSGSIZE)
        self.requests: list[Request] = []  # typed commands received, for the runner to check and apply
        self.on_subscribe: Callable[[str | None, int | None], None] = lambda stream, seq: None
        self.on_detach: Callable[[], None] = lambda: None
        self._full = True
        self._lost = False  # the task process died or fell silent: its tags turn stale at the next drain
        self._alive = False

    def attach(self, sock: socket.socket) -> None:
        sock.setblocking(False)
        self._pending = {}
        self._full = True  # a new task process gets the whole image first
        self.heard = False
        self.attached_ns = time.monotonic_ns()
        self.sock = sock

    def detach(self) -> None:
        self.on_detach()
        self.heard = False
        self._lost = True
        sock, self.sock = self.sock, None
        if sock is not None:
            sock.close()

    def check_alive(self, now_ns: int, heartbeat_ns: int) -> bool:
        """Has the task process been heard within its heartbeat limit? When it stops being so, every
        shared tag turns ``stale`` at the next drain: safety must not wait for the tags' own age
        limits (minutes for a plan) to learn that nobody maintains them any more."""
        alive = self.heard and now_ns - self.last_heard_ns < heartbeat_ns
        if self._alive and not alive:
            self._lost = True
        self._alive = alive
        return alive

    def drain(self) -> list[TagUpdate]:
        out: list[TagUpdate] = []
        if self._lost:  # first, so that a new task process's first writes in the same drain win
            self._lost = False
            out = [TagUpdate(name, None, Quality.STALE) for name in sorted(self.allowed)]
        sock = self.sock
        if sock is None:
            return out
        budget = DRAIN_BUDGET  # a flood from the task process never costs the scan more than this per cycle
        while budget > 0:
            try:
                data = sock.recv(1 << 20)
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                break
            if not data:  # end of file: the task process is gone
                if not self._lost and self.heard:
                    out += [TagUpdate(name, None, Quality.STALE) for name in sorted(self.allowed)]
                self.heard = False
                break
            budget -= len(data)
            self.last_heard_ns = time.monotonic_ns()
            self.heard = True
            # JSON, not pickle: the task process talks to networks; what it sends is data, never code.
            try:
                msg = json.loads(data)
                if msg[0] == "c":
                    self.requests.append(_request(msg[1]))
                    continue
                if msg[0] == "sub":
                    stream, seq = msg[1], msg[2]
                    if not (stream is None or isinstance(stream, str)) or not (
                        seq is None or (isinstance(seq, int) and not isinstance(seq, bool))
                    ):
                        raise ValueError("sub names a stream (string) and a sequence number (integer)")
                    self.on_subscribe(stream, seq)
                    continue
                if msg[0] != "w":
                    continue
                writes = [(str(n), v, Quality(q)) for n, v, q in msg[1]]
            # dropped whole, never half applied; RecursionError: JSON nested too deep, which must not end the scan
            except (ValueError, TypeError, IndexError, KeyError, AttributeError, RecursionError):
                log.error("task process sent a malformed message; dropped")
                continue
            for name, value, quality in writes:
                if name in self.allowed:
                    out.append(TagUpdate(name, value, quality))
                else:
                    log.error("task write to %s rejected: not a shared tag a task declared", name)
        return out

    def take_requests(self) -> list[Request]:
        out, self.requests = self.requests, []
        return out

    def ack(self, cid: str, accepted: bool, reason: str = "") -> None:
        """Answer a command; sent with the next publication (kept until the socket takes it)."""
        if self.sock is not None:
            self._acks.append((cid, accepted, reason))

    def publish(self, now_us: int, image: Image, changed: Mapping[str, TagValue] | None) -> None:
        """Send the answers and the committed image (only what changed unless the peer is new), in
        messages of at most MAX_MSG bytes. If the socket is full, what was not sent is kept and merged
        into the next attempt: nothing is lost, nothing blocks."""
        sock = self.sock
        if sock is None:
            return
        while self._acks:
            try:
                sock.send(pickle.dumps(("ack", *self._acks[0]), pickle.HIGHEST_PROTOCOL))
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                return
            self._acks.pop(0)
        src = image if self._full or changed is None else changed
        for name, tv in src.items():
            self._pending[name] = (tv.value, tv.quality.value, tv.t_us, tv.forced)
        items = list(self._pending.items())
        sent = 0
        try:
            # At least one message per cycle, empty or not: it carries the cycle clock to the tasks.
            for part, _ in sized(items, lambda p: _image(now_us, False, p), self.limit) if items else [([], b"")]:
                try:
                    sock.send(_image(now_us, self._full and sent == 0, part))
                except (BlockingIOError, InterruptedError):
                    break
                sent += len(part)
                self._full = False
        except OSError as exc:  # the peer is gone (the supervisor notices) or the message was too long
            if exc.errno == errno.EMSGSIZE and self.limit > 1024:
                self.limit //= 2  # smaller messages from the next publication on; what was not sent is kept
            log.debug("image publication stopped: %s", exc)
        except ValueError as exc:  # one tag's value alone is larger than a message: say so, keep the rest
            log.error("image publication: %s", exc)
        self._pending = dict(items[sent:])


def _image(now_us: int, full: bool, part: Sequence[tuple[str, Any]]) -> bytes:
    return pickle.dumps(("img", now_us, full, dict(part)), pickle.HIGHEST_PROTOCOL)


def _request(obj: Any) -> Request:
    """A command message's fields, typed; ValueError/KeyError/TypeError for anything else."""
    if not isinstance(obj, dict):
        raise TypeError("a command is an object")
    fields = {k: obj[k] for k in ("id", "kind", "source", "by")}
    if not all(isinstance(v, str) and len(v) <= 200 for v in fields.values()):
        raise ValueError("command id, kind, source and by are strings of at most 200 characters")
    args = obj.get("args", {})
    if not isinstance(args, dict):
        raise TypeError("command args are an object")
    return Request(fields["id"], fields["kind"], fields["source"], fields["by"], args)


class Channels:
    """The channels of every task process group, seen by the runner as one: writes and commands from all,
    the image to all, each answer to the channel its command came from. A command's id is prefixed with
    its group on the way in (``group/id``), so two task processes can never answer each other's."""

    def __init__(self, channels: Mapping[str, TaskChannel]) -> None:
        self.groups = dict(channels)
        self.alive: dict[str, bool] = dict.fromkeys(self.groups, False)

    def check_alive(self, now_ns: int, heartbeat_ns: int) -> bool:
        """Every group's liveness (kept for ``alive_updates``); true only when all are alive. A site without
        tasks has no task process: false, as it always was."""
        for g, ch in self.groups.items():
            self.alive[g] = ch.check_alive(now_ns, heartbeat_ns)
        return bool(self.alive) and all(self.alive.values())

    def alive_updates(self) -> list[TagUpdate]:
        return [TagUpdate(alive_tag(g), a) for g, a in self.alive.items()]

    def drain(self) -> list[TagUpdate]:
        return [u for ch in self.groups.values() for u in ch.drain()]

    def take_requests(self) -> list[Request]:
        return [dataclasses.replace(r, id=f"{g}/{r.id}") for g, ch in self.groups.items() for r in ch.take_requests()]

    def ack(self, cid: str, accepted: bool, reason: str = "") -> None:
        group, _, own = cid.partition("/")
        ch = self.groups.get(group)
        if ch is not None:
            ch.ack(own, accepted, reason)

    def publish(self, now_us: int, image: Image, changed: Mapping[str, TagValue] | None) -> None:
        for ch in self.groups.values():
            ch.publish(now_us, image, changed)


class TaskSupervisor:
    """Starts the task process, restarts it with backoff when it dies or stops talking.

    Runs on the I/O thread's loop; spawning a process never happens on the scan thread.
    """

    def __init__(
        self,
        site_path: Path,
        channel: TaskChannel,
        *,
        speed: int,
        start: dt.datetime,
        heartbeat_s: float,
        startup_grace_s: float = 60.0,
        backoff_s: float,
        backoff_max_s: float,
        group: str = "tasks",
        tasks: Sequence[str] = (),
        runtime_id: str | None = None,
    ):
        self.site_path = site_path
        self.channel = channel
        self.group = group  # the task process group this supervisor starts (named in its logs)
        self.tasks = tuple(tasks)  # the labels of its tasks; none: every task of the site
        self.speed = speed
        self.start = start
        self.heartbeat_ns = int(heartbeat_s * 1e9)
        self.startup_grace_ns = int(startup_grace_s * 1e9)  # imports and site build before the first word
        self.backoff_s = backoff_s
        self.backoff_max_s = backoff_max_s
        self.proc: subprocess.Popen[bytes] | None = None
        self.restarts = 0
        self._stopping = False
        self.snapshot: Path | None = None  # the running revision's text: started from it, never the edited file
        self._restart_now = False
        # One per runtime start: every task process of every group gets it (a restart is not a reboot).
        self.runtime_id = runtime_id or uuid.uuid4().hex

    def _spawn(self) -> None:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        for s in (ours, theirs):
            s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 20)
        cmd = [
            sys.executable,
            "-m",
            "runtime.taskproc",
            "--site",
            str(self.site_path),
            "--fd",
            str(theirs.fileno()),
            "--speed",
            str(self.speed),
            "--start",
            self.start.isoformat(),
            "--parent",
            str(os.getpid()),
            *(("--snapshot", str(self.snapshot)) if self.snapshot is not None else ()),
            "--runtime-id",
            self.runtime_id,
            "--group",
            self.group,
            *(a for t in self.tasks for a in ("--task", t)),
        ]
        # systemd's notification variables belong to the scan process alone (NotifyAccess=main).
        env = {k: v for k, v in os.environ.items() if k not in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID")}
        self.proc = subprocess.Popen(cmd, pass_fds=(theirs.fileno(),), stdin=subprocess.DEVNULL, env=env)
        theirs.close()
        self.channel.attach(ours)
        log.info("task process started (pid %d): %s", self.proc.pid, self.group)

    async def run(self) -> None:
        backoff = self.backoff_s
        while not self._stopping:
            self._spawn()
            started = time.monotonic()
            while not self._stopping:
                await asyncio.sleep(0.1)
                assert self.proc is not None
                if self.proc.poll() is not None:
                    log.error(
                        "task process %s exited with code %s; restarting in %.1f s",
                        self.group,
                        self.proc.returncode,
                        backoff,
                    )
                    break
                ch = self.channel
                silent = (
                    time.monotonic_ns() - ch.last_heard_ns > self.heartbeat_ns
                    if ch.heard
                    else time.monotonic_ns() - ch.attached_ns > self.startup_grace_ns
                )
                if silent:
                    log.error("task process %s silent (hung); killing it", self.group)
                    self.proc.kill()
                    await asyncio.to_thread(self.proc.wait)
                    break
            self.channel.detach()
            if self._stopping:
                break
            if time.monotonic() - started > 60:
                backoff = self.backoff_s  # it ran well for a while: start the backoff over
            self.restarts += 1
            if self._restart_now:  # asked for (online change): no backoff, nothing failed
                self._restart_now = False
                continue
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, self.backoff_max_s)

    def restart(self) -> None:
        """Online change of task params: stop the task process; ``run`` starts it again at once, from
        ``snapshot`` (on the I/O loop; the channel's loss turns the shared tags stale meanwhile)."""
        proc = self.proc
        if proc is not None and proc.poll() is None:
            self._restart_now = True
            proc.terminate()

    def stop(self) -> None:
        stop_all([self])


def stop_all(supervisors: Sequence[TaskSupervisor], timeout_s: float = 3.0) -> None:
    """Stop every task process at once: all are asked (SIGTERM) first, then each gets what is left of one
    ``timeout_s`` before it is killed, so the teardown is bounded by ``timeout_s`` however many groups."""
    for sup in supervisors:
        sup._stopping = True
        if sup.proc is not None and sup.proc.poll() is None:
            sup.proc.terminate()
    deadline = time.monotonic() + timeout_s
    for sup in supervisors:
        proc = sup.proc
        if proc is not None and proc.poll() is None:
            try:
                proc.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        sup.channel.detach()


def restart_groups(supervisors: Sequence[TaskSupervisor], tasks: Sequence[str] | None = None) -> None:
    """Online change of task params: restart the groups that run one of ``tasks`` (every group when not
    named), so that a new planner setting never drops the back-office connection."""
    for sup in supervisors:
        if tasks is None or not sup.tasks or set(tasks) & set(sup.tasks):
            sup.restart()


def site_groups(built: BuiltSite) -> dict[str, list[Task]]:
    """The site's built tasks by task process group (``process:``, or the default of their type)."""
    from runtime.config import task_groups

    by_label = {t.name: t for t in built.tasks}
    return {g: [by_label[n] for n in names] for g, names in task_groups(built.loaded.config.tasks).items()}


def site_channels(built: BuiltSite) -> dict[str, TaskChannel]:
    """A channel per group that accepts writes only to the shared tags its own tasks declared."""
    return {
        g: TaskChannel(frozenset(s.name for t in tasks for s in t.declare() if s.direction is Direction.SHARED))
        for g, tasks in site_groups(built).items()
    }


# ------------------------------------------------------------------------------------------------
# the child: python -m runtime.taskproc --site SITE --fd N


class EventPosition:
    """Where this site's task process is in the scan's event stream, kept in ``state_dir`` so that a
    restarted task process resumes there (a write per batch, no fsync: a crash repeats a batch, which
    the stream allows; it never skips one)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.stream: str | None = None
        self.next: int | None = None
        with contextlib.suppress(OSError, ValueError, TypeError, KeyError):
            d = json.loads(path.read_text())
            if isinstance(d["stream"], str) and isinstance(d["next"], int):
                self.stream, self.next = d["stream"], d["next"]

    def save(self) -> None:
        try:
            tmp = self.path.with_name(self.path.name + ".tmp")
            tmp.write_text(json.dumps({"stream": self.stream, "next": self.next}))
            os.replace(tmp, self.path)
        except OSError as exc:
            log.error("event position not saved (%s): a restart may repeat events", exc)


async def _run_task(task: Any, cx: Any, backoff0: float, backoff_max: float) -> None:
    """A task that raises is logged and restarted with backoff; the others keep running."""
    backoff = backoff0
    while True:
        t0 = time.monotonic()
        try:
            await task.run(cx)
            log.info("task %s finished", task.name)
            return
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("task %s failed; restarting in %.1f s", task.name, backoff)
        if time.monotonic() - t0 > 60:
            backoff = backoff0
        await asyncio.sleep(backoff)
        backoff = min(backoff * 2, backoff_max)


def snapshot_site(site_path: Path, snapshot: Path | None) -> Any:
    """The site to build: the running revision's text (``snapshot``) read as if it were ``site_path``, so
    relative paths and errors point at the site's folder; without a snapshot, the file itself."""
    if snapshot is None:
        return site_path
    from runtime.online.validate import load_site_text, read_text

    return load_site_text(site_path, read_text(snapshot))


def group_tasks(
    site_path: Path, snapshot: Path | None, speed: int, only: Sequence[str] = ()
) -> tuple[LoadedSite, list[Task]]:
    """The tasks ``only`` names (every task when empty), built from the running revision and nothing else
    of the site: the scan validated and built the whole of it before starting this process, and a lookup
    of a type imports only its module (runtime/registry.py), so a group's process imports the modules of
    its own tasks, not the other groups' (the OCPP stack, the planner's solver, the HMI's web server)
    nor the site's drivers, programs and interlocks."""
    from runtime.config import LoadedSite, SiteConfig, component_params, with_evses
    from runtime.online.validate import read_text
    from runtime.registry import TASKS
    from runtime.site import site_info
    from runtime.yamlload import ConfigError, parse_yaml, validate

    text = read_text(site_path if snapshot is None else snapshot)
    doc = parse_yaml(text, str(site_path))
    if not isinstance(doc.data, dict):
        raise ConfigError([doc.issue((), "a site file is a mapping with site:, scan:, devices:, ...")])
    loaded = LoadedSite(site_path, doc, validate(SiteConfig, doc.data, doc))
    info = site_info(loaded, speed)
    tasks = []
    for i, comp in enumerate(loaded.config.tasks):
        if not only or comp.label in only:
            params = component_params(doc, "tasks", i, with_evses(loaded.config, comp, TASKS), TASKS)  # as the scan
            tasks.append(TASKS[comp.type](comp.label, params, info))
    return loaded, tasks


async def child_main(
    site_path: Path,
    fd: int,
    speed: int,
    start: dt.datetime,
    parent: int,
    snapshot: Path | None = None,
    runtime_id: str = "",
    group: str = "tasks",
    only: Sequence[str] = (),
) -> None:
    from runtime.tasks.base import TaskContext

    # The tasks the scan started this group with, by label, even if a later revision moved one: the scan
    # accepts its shared tags from this group's channel only.
    loaded, tasks = group_tasks(site_path, snapshot, speed, only)
    cfg = loaded.config.task_process
    sock = socket.socket(fileno=fd)
    sock.setblocking(False)
    loop = asyncio.get_running_loop()
    outbox: list[tuple[str, Any, str]] = []  # shared-tag writes not yet taken by the socket
    commands: list[bytes] = []  # command messages not yet taken by the socket, in order
    waiting: dict[str, asyncio.Future[tuple[bool, str]]] = {}
    ids = itertools.count(1)
    flush_scheduled = False
    limit = MAX_MSG

    def flush() -> None:
        """Send commands, then writes, in messages of at most MAX_MSG bytes. A message leaves its queue
        only once the socket took it: a full socket (or a message the kernel calls too long) keeps it."""
        nonlocal flush_scheduled
        flush_scheduled = False
        nonlocal limit
        try:
            while commands:
                sock.send(commands[0])
                commands.pop(0)
            while outbox:
                try:
                    part, data = next(sized(outbox, encode_writes, limit))
                except ValueError as exc:  # only after the kernel lowered the limit below one write
                    log.error("shared-tag write to %s dropped: %s", outbox.pop(0)[0], exc)
                    continue
                sock.send(data)
                del outbox[: len(part)]
        except BlockingIOError:
            loop.call_later(0.005, _schedule)
        except OSError as exc:
            if exc.errno == errno.EMSGSIZE and limit > 1024:
                limit //= 2  # the kernel takes less than we thought: the same writes in smaller messages
                loop.call_soon(_schedule)
                return
            log.error("task channel send failed (%s); %d writes kept for the next attempt", exc, len(outbox))
            loop.call_later(0.1, _schedule)

    def _schedule() -> None:
        nonlocal flush_scheduled
        if not flush_scheduled:
            flush_scheduled = True
            loop.call_soon(flush)

    def send(tag: str, value: Any, quality: Quality = Quality.GOOD) -> None:
        item = (tag, value, Quality(quality).value)
        next(sized([item], encode_writes))  # ValueError here, to the task, for a write that can never fit
        outbox.append(item)
        _schedule()

    async def command(source: str, kind: str, args: Mapping[str, Any], by: str) -> tuple[bool, str]:
        cid = f"{os.getpid()}-{next(ids)}"
        data = json.dumps(["c", {"id": cid, "kind": kind, "source": source, "by": by, "args": dict(args)}]).encode()
        if len(data) > MAX_MSG:
            return False, f"command larger than {MAX_MSG} bytes"
        fut: asyncio.Future[tuple[bool, str]] = loop.create_future()
        waiting[cid] = fut
        commands.append(data)
        _schedule()
        try:
            return await asyncio.wait_for(fut, COMMAND_TIMEOUT_S)
        except TimeoutError:
            return False, f"no answer from the scan within {COMMAND_TIMEOUT_S:g} s"
        finally:
            waiting.pop(cid, None)

    contexts = [
        TaskContext(t.name, send, start, logging.getLogger(f"v2g_plc.task.{t.name}"), command, t.events, runtime_id)
        for t in tasks
    ]
    position = EventPosition(loaded.state_dir / f"task-events.{group}.json")
    commands.append(json.dumps(["sub", position.stream, position.next]).encode())
    _schedule()

    def on_events(stream: str, events: list[dict[str, Any]]) -> None:
        for e in events:
            if stream == position.stream and position.next is not None and e["seq"] < position.next:
                continue  # at least once: a batch sent again after a resume is delivered once here
            for cx in contexts:
                cx._event(e)
            position.stream, position.next = stream, e["seq"] + 1
        position.save()

    values: dict[str, TagValue] = {}
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    publishing: set[asyncio.Task[Any]] = set()

    def on_readable() -> None:
        latest = None
        while True:
            try:
                data = sock.recv(1 << 20)
            except BlockingIOError:
                break
            if not data:
                stop.set()
                return
            msg = pickle.loads(data)  # from the scan process, our parent: trusted
            if msg[0] == "ack":
                fut = waiting.get(msg[1])
                if fut is not None and not fut.done():
                    fut.set_result((bool(msg[2]), str(msg[3])))
                continue
            if msg[0] == "ev":
                on_events(msg[1], msg[2])
                continue
            if msg[0] == "gap":
                _, stream, lo, hi, dropped = msg
                gap = {"kind": "gap", "from": lo, "to": hi, "dropped": dropped, "message": f"events {lo}-{hi - 1} lost"}
                for cx in contexts:
                    cx._event(gap)
                position.stream, position.next = stream, hi
                position.save()
                continue
            _kind, now_us, full, chunk = msg
            if full:
                values.clear()
            for name, (v, q, t, f) in chunk.items():
                values[name] = TagValue(v, Quality(q), t, f)
            latest = now_us
        if latest is not None:
            image = Image(values)
            for cx in contexts:
                t = loop.create_task(cx._publish(image, latest))
                publishing.add(t)  # a reference, or the loop may collect the task before it ran
                t.add_done_callback(publishing.discard)

    loop.add_reader(sock.fileno(), on_readable)

    async def heartbeat() -> None:
        while True:
            try:
                sock.send(b'["hb"]')
            except BlockingIOError:
                pass
            if os.getppid() != parent:  # the runtime is gone: so are we
                stop.set()
            await asyncio.sleep(HEARTBEAT_S)

    jobs = [loop.create_task(heartbeat())]
    jobs += [
        loop.create_task(_run_task(t, cx, cfg.restart_backoff_s, cfg.restart_backoff_max_s))
        for t, cx in zip(tasks, contexts, strict=True)
    ]
    await stop.wait()
    for j in jobs:
        j.cancel()
    for j in jobs:
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await j


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="v2g-plc-tasks")
    ap.add_argument("--site", required=True, type=Path)
    ap.add_argument("--fd", required=True, type=int)
    ap.add_argument("--speed", type=int, default=1)
    ap.add_argument("--start", required=True)
    ap.add_argument("--parent", type=int, default=os.getppid())
    ap.add_argument("--snapshot", type=Path, help="the running revision's text (online change)")
    ap.add_argument("--runtime-id", default="", help="one per runtime start (TaskContext.runtime_id)")
    ap.add_argument("--group", default="tasks", help="the task process group (logs, event position file)")
    ap.add_argument("--task", action="append", default=[], help="a task of this group (repeated); none: all")
    a = ap.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO,
        stream=sys.stderr,
        format=f"%(asctime)s tasks[{a.group}] %(levelname)s %(name)s: %(message)s",
    )
    start = dt.datetime.fromisoformat(a.start)
    asyncio.run(child_main(a.site, a.fd, a.speed, start, a.parent, a.snapshot, a.runtime_id, a.group, a.task))
    return 0


if __name__ == "__main__":
    sys.exit(main())
