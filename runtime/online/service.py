"""Online change on the I/O thread: watch the site file, validate each revision in a child, hand the scan
a change it may apply, and keep the snapshot that child processes start from.

Nothing here runs on the scan thread. The file watcher (``watchdog``, its own thread) only pokes the I/O
loop; the loop waits for the editor to finish (debounce), then runs ``python -m runtime.online.validate``
as a child process, compares the JSON it prints with the running revision (``plan.classify``, a dict
comparison) and, for a live change, queues one ``reconfigure`` command for the scan, which applies it at
the next cycle boundary (``Engine.reconfigure``) and records it like any command. The outcome comes back
here: the new revision's text becomes the snapshot (``state_dir/running-site.yaml``) and, when task params
changed, the task process restarts from that snapshot, never from the edited file.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import sys
import threading
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from runtime.api import Command
from runtime.engine import RECONFIGURE
from runtime.iothread import ControlServer
from runtime.online.plan import classify

log = logging.getLogger("v2g_plc.online")

DEBOUNCE_S = 0.3  # an editor's save (temp file, rename, chmod) is a burst of events: validate once after it
VALIDATE_TIMEOUT_S = 60.0  # a child that takes longer is killed: the running revision stays
VALIDATE_NICE = 19  # the validating child yields the CPU to everything else (setpriority(2))
SNAPSHOT = "running-site.yaml"  # in state_dir: the text of the running revision

# Outcomes a reload ends in (``status["reload"]["state"]``); "validating" and "pending" are on the way.
FINAL = ("applied", "unchanged", "invalid", "refused")


def write_snapshot(path: Path, text: str) -> None:
    """Temp file, fsync, rename: a task process starting now reads the old revision or the new one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


class OnlineChange:
    """One site's online change. Every method but ``watch`` and ``close`` runs on the I/O loop."""

    def __init__(
        self,
        site_path: Path,
        running: Mapping[str, Any],
        snapshot: Path,
        loop: asyncio.AbstractEventLoop,
        submit: Callable[[Command], None],
        note: Callable[[str, str, dict[str, Any]], None],
        restart_tasks: Callable[[Sequence[str]], None] | None = None,
    ):
        """``snapshot`` holds ``running["text"]`` already (written before any child starts); ``submit`` hands
        the scan a command (thread-safe); ``note`` writes an event of the I/O thread; ``restart_tasks``
        restarts the task processes that run the named tasks (each starts from ``snapshot``)."""
        self.site_path = site_path
        self.running = dict(running)
        self.snapshot = snapshot
        self.loop = loop
        self.submit = submit
        self.note = note
        self.restart_tasks = restart_tasks
        self.status: dict[str, Any] = {"id": 0, "state": "none", "revision": running["revision"]}
        self._asked = 0  # the latest reload asked for
        self._run: asyncio.Task[None] | None = None
        self._debounce: asyncio.TimerHandle | None = None
        self._outcome: asyncio.Future[tuple[bool, str]] | None = None
        self._pending: tuple[dict[str, Any], tuple[str, ...]] | None = None
        self._proc: asyncio.subprocess.Process | None = None
        self._observer: Any = None
        self._watched: set[str] = set()
        classify(running, running)  # warm: the first comparison costs ten times a later one (on the I/O thread)
        self._by = ""

    @property
    def revision(self) -> str:
        return str(self.running["revision"])

    # -- asking ------------------------------------------------------------------------------------
    def request(self, by: str) -> int:
        """A reload (control socket, file watcher); returns its id. Requests that arrive while one is
        validated are served together by the next run, which reads the file as it is then."""
        self._asked += 1
        self._by = by
        if self._run is None or self._run.done():
            self._run = self.loop.create_task(self._serve())
        return self._asked

    def poke(self) -> None:
        """A file event: validate once the burst is over."""
        if self._debounce is not None:
            self._debounce.cancel()
        self._debounce = self.loop.call_later(DEBOUNCE_S, self.request, "file watcher")

    async def _serve(self) -> None:
        done = 0
        while done < self._asked:
            done = self._asked
            try:
                state, message, data = await self._reload(done)
            except Exception as exc:  # never take the I/O loop down; the running revision stays
                log.exception("reload failed")
                state, message, data = "invalid", f"reload failed: {type(exc).__name__}: {exc}", {}
            self._finish(done, state, message, data)

    def _finish(self, rid: int, state: str, message: str, data: dict[str, Any]) -> None:
        self.status = {"id": rid, "state": state, "revision": self.revision, "message": message, "by": self._by}
        if state == "applied":
            log.info("online change: %s", message)
        elif state == "unchanged":
            log.info("reload: %s", message)
        else:
            log.error("online change not applied: %s", message)
        if state in ("invalid", "refused") and not data.get("logged"):
            self.note(f"reload_{state}", message, {k: v for k, v in data.items() if k != "logged"})

    async def _reload(self, rid: int) -> tuple[str, str, dict[str, Any]]:
        self.status = {"id": rid, "state": "validating", "revision": self.revision, "by": self._by}
        new = await self._validate()
        if not new.get("ok"):
            errors = str(new.get("errors", "not valid"))
            return (
                "invalid",
                f"{self.site_path} is not valid; the running revision {self.revision} stays:\n{errors}",
                {"errors": errors},
            )
        if new["revision"] == self.revision:
            return "unchanged", f"{self.site_path}: revision {self.revision} is already running", {}
        plan = classify(self.running, new)
        data: dict[str, Any] = {"revision": plan.revision, "diff": plan.diff}
        if not plan.live:
            why = "; ".join(plan.restart)
            return (
                "refused",
                f"revision {plan.revision} needs a restart, nothing applied: {why}",
                {
                    **data,
                    "restart": list(plan.restart),
                },
            )
        self.status = {"id": rid, "state": "pending", "revision": self.revision, "by": self._by}
        self._outcome = self.loop.create_future()
        self._pending = (new, plan.tasks)
        self.submit(Command(RECONFIGURE, {"revision": plan.revision, "components": plan.components, "by": self._by}))
        ok, why = await self._outcome  # the scan answers after the cycle that decided (outcome below)
        if not ok:
            return "refused", f"revision {plan.revision} not applied: {why}", {**data, "logged": True}
        self.running = new
        await asyncio.to_thread(write_snapshot, self.snapshot, new["text"])
        if plan.tasks and self.restart_tasks is not None:
            log.info(
                "task params changed (%s): their task processes restart from revision %s", plan.tasks, plan.revision
            )
            self.restart_tasks(plan.tasks)
        self._rewatch()
        return "applied", f"revision {plan.revision} running: " + (", ".join(plan.diff) or "text only"), data

    def outcome(self, results: list[tuple[str, bool, str]]) -> None:
        """From the scan (through ``call_soon_threadsafe``): what ``Engine.reconfigure`` decided."""
        for revision, ok, why in results:
            fut, pending = self._outcome, self._pending
            if fut is not None and not fut.done() and pending is not None and pending[0]["revision"] == revision:
                fut.set_result((ok, why))

    async def _validate(self) -> dict[str, Any]:
        """The child's verdict on the file as it is now (``validate.main``)."""
        proc = self._proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "runtime.online.validate",
            str(self.site_path),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            stdin=asyncio.subprocess.DEVNULL,
        )
        with contextlib.suppress(OSError):  # nothing here is urgent: the scan (and everything else) goes first
            os.setpriority(os.PRIO_PROCESS, proc.pid, VALIDATE_NICE)
        try:
            out, err = await asyncio.wait_for(proc.communicate(), VALIDATE_TIMEOUT_S)
        except TimeoutError:
            proc.kill()
            await proc.wait()
            return {"ok": False, "errors": f"validation took longer than {VALIDATE_TIMEOUT_S:g} s"}
        finally:
            self._proc = None
        try:
            result: dict[str, Any] = json.loads(out)
        except ValueError:
            tail = err.decode(errors="replace").strip().splitlines()[-1:] or ["no output"]
            return {"ok": False, "errors": f"the validator failed (exit {proc.returncode}): {tail[0]}"}
        return result

    # -- watching ----------------------------------------------------------------------------------
    def watch(self) -> None:
        """Watch the site file and the files its components read (from any thread; idempotent)."""
        try:
            from watchdog.events import FileSystemEvent, FileSystemEventHandler
            from watchdog.observers import Observer
        except ImportError as exc:  # pragma: no cover - a dependency of the package
            log.warning("site file not watched (%s): use v2g-plc reload", exc)
            return
        online = self

        class Poke(FileSystemEventHandler):
            def on_any_event(self, event: FileSystemEvent) -> None:
                paths = {os.fsdecode(event.src_path), os.fsdecode(getattr(event, "dest_path", "") or "")}
                if event.event_type in ("created", "modified", "moved", "deleted") and paths & online._watched:
                    online.loop.call_soon_threadsafe(online.poke)

        self._watched = set(self.running["watch"])
        observer = Observer()
        try:
            for folder in sorted({str(Path(p).parent) for p in self._watched}):
                observer.schedule(Poke(), folder, recursive=False)
            observer.start()
        except OSError as exc:  # inotify limits: reload on demand still works
            log.warning("site file not watched (%s): use v2g-plc reload", exc)
            return
        self._observer = observer
        log.info("watching %s for online change (revision %s)", ", ".join(sorted(self._watched)), self.revision)

    def _rewatch(self) -> None:
        """The new revision may read other files: watch those (folders already watched stay)."""
        watched = set(self.running["watch"])
        if self._observer is None or watched == self._watched:
            return
        observer, self._observer = self._observer, None
        threading.Thread(target=lambda: (observer.stop(), observer.join(2)), daemon=True).start()
        self.watch()

    def close(self) -> None:
        """Stop watching and kill a validation still running (bounded)."""
        observer, self._observer = self._observer, None
        if observer is not None:
            observer.stop()
            observer.join(timeout=2)
        proc = self._proc
        if proc is not None and proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()


class OnlineControlServer(ControlServer):
    """The control socket with ``reload``: answered at once with the reload's id; ``status`` then says
    how it ended (``reload``: id, state, revision, message)."""

    COMMANDS = (*ControlServer.COMMANDS, "reload")

    def __init__(self, *args: Any, online: OnlineChange, **kw: Any):
        super().__init__(*args, **kw)
        self.online = online

    def handle(self, line: bytes, peer: str = "peer unknown") -> dict[str, Any]:
        try:
            req = json.loads(line)
        except (ValueError, RecursionError):
            req = None
        if not isinstance(req, dict) or req.get("cmd") != "reload":
            return super().handle(line, peer)
        by = f"{req.get('by', 'control socket')} ({peer})"
        rid = self.online.request(by)
        log.warning("reload asked (%s): request %d", by, rid)
        return {"ok": True, "reload": rid, "revision": self.online.revision}
