"""The I/O thread: one asyncio loop for the drivers, the task supervisor and the control socket.

It is idle on sockets most of the time, which is why it may share the scan's process (measured cost about
0.03 ms of p99 lateness, docs/reference.md#timing). Everything the scan hands it goes through ``call_soon_threadsafe``;
everything it hands the scan goes through a lock-protected staging list that the scan swaps out at cycle
start.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import functools
import json
import logging
import os
import socket
import struct
import threading
from collections.abc import Callable, Coroutine, Mapping
from pathlib import Path
from typing import Any

from runtime.api import Command
from runtime.commands import check_args
from runtime.io.driver import Driver, IOContext

log = logging.getLogger("v2g_plc.io")


class IOThread:
    def __init__(self, drivers: list[Driver], output_owner: Mapping[str, Driver], io: IOContext):
        self.drivers = drivers
        self.output_owner = output_owner
        self.io = io
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._main, name="v2g-io", daemon=True)
        self._jobs: list[asyncio.Task[Any]] = []
        self._started = threading.Event()

    def _main(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.call_soon(self._started.set)
        self.loop.run_forever()

    def start(self) -> None:
        self._thread.start()
        self._started.wait()
        for d in self.drivers:
            self.spawn(self._guard(d.name, functools.partial(d.run, self.io)))

    def spawn(self, factory: Callable[[], Coroutine[Any, Any, Any]] | Coroutine[Any, Any, Any]) -> None:
        coro = factory() if callable(factory) else factory

        def go() -> None:
            self._jobs.append(self.loop.create_task(coro))

        self.loop.call_soon_threadsafe(go)

    async def _guard(self, name: str, factory: Callable[[], Coroutine[Any, Any, Any]]) -> None:
        """A driver whose run() raises is restarted after a pause; it never takes the loop down."""
        while True:
            try:
                await factory()
                return
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("driver %s failed; restarting in 1 s", name)
                await asyncio.sleep(1.0)

    def submit_outputs(self, now_us: int, outputs: Mapping[str, Any], changed: Mapping[str, Any]) -> None:
        """From the scan thread: costs one self-pipe write."""
        self.loop.call_soon_threadsafe(self._dispatch, now_us, outputs, changed)

    def _dispatch(self, now_us: int, outputs: Mapping[str, Any], changed: Mapping[str, Any]) -> None:
        # Every driver hears every cycle, outputs or not: the scan's cycles pace the polling too.
        per: dict[Driver, tuple[dict[str, Any], dict[str, Any]]] = {d: ({}, {}) for d in self.drivers}
        for name, value in outputs.items():
            d = self.output_owner.get(name)
            if d is not None:
                per[d][0][name] = value
                if name in changed:
                    per[d][1][name] = value
        for d, (outs, ch) in per.items():
            try:
                d.on_outputs(now_us, outs, ch)
            except Exception:
                log.exception("driver %s rejected outputs", d.name)

    def call(self, coro: Coroutine[Any, Any, Any], timeout: float) -> Any:
        """Run a coroutine on the I/O loop from another thread and wait for it (shutdown only)."""
        fut = asyncio.run_coroutine_threadsafe(coro, self.loop)
        try:
            return fut.result(timeout)
        except (concurrent.futures.TimeoutError, TimeoutError):
            fut.cancel()
            raise

    def stop(self, safe_outputs: Mapping[str, Any], timeout: float = 3.0) -> None:
        """Write the safe outputs through every driver, wait for them, then stop the loop."""

        async def shutdown() -> None:
            async def close(d: Driver) -> None:
                mine = {k: v for k, v in safe_outputs.items() if self.output_owner.get(k) is d}
                try:
                    await d.close(mine)
                except Exception:
                    log.exception("driver %s failed to write its safe outputs", d.name)

            await asyncio.gather(*(close(d) for d in self.drivers))
            for j in self._jobs:
                j.cancel()
            for j in self._jobs:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await j

        try:
            self.call(shutdown(), timeout)
        except Exception:
            log.error("drivers did not confirm their safe outputs within %.1f s", timeout)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=2)


class ControlServer:
    """Local control socket (JSON lines over a Unix stream socket) for ``v2g-plc reset-trip`` and forces.

    Commands are staged and delivered to the next cycle, like every other input; a malformed or unknown
    command is answered with an error and logged, never applied. Every command is logged with its peer
    (SO_PEERCRED: pid, uid, gid, as the kernel saw them at connect). Bounds, so that a local client that
    misbehaves can neither exhaust memory nor keep the operator out: a request line of at most
    ``MAX_REQUEST`` bytes (a longer one is answered with an error and the connection closed), at most
    ``MAX_CLIENTS`` connections at once (one more is told so and closed), and a connection idle for
    ``IDLE_S`` is closed.
    """

    COMMANDS: tuple[str, ...] = ("reset_trip", "force", "unforce", "mode_request", "status", "read")
    MAX_REQUEST = 64 * 1024
    MAX_CLIENTS = 8
    IDLE_S = 60.0

    def __init__(
        self,
        path: Path,
        stage: Callable[[Command], None],
        status: Callable[[], dict[str, Any]],
        check_force: Callable[[str, Any], None],
        read: Callable[[list[str]], dict[str, Any]],
    ):
        self.path = path
        self._stage = stage
        self._status = status
        self._check_force = check_force  # raises ValueError/KeyError for an unknown tag or a wrong type
        self._read = read
        self.clients = 0

    async def serve(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        server = await asyncio.start_unix_server(self._client, path=str(self.path), limit=self.MAX_REQUEST)
        os.chmod(self.path, 0o660)
        async with server:
            await server.serve_forever()

    @staticmethod
    def peer(writer: asyncio.StreamWriter) -> str:
        sock = writer.get_extra_info("socket")
        try:
            pid, uid, gid = struct.unpack("3i", sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12))
        except (OSError, AttributeError, struct.error):
            return "peer unknown"
        return f"pid {pid} uid {uid} gid {gid}"

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = self.peer(writer)
        if self.clients >= self.MAX_CLIENTS:
            log.error("control connection refused (%s): %d connections already open", peer, self.clients)
            # Take the request first (one second at most), so that the client reads the refusal rather
            # than a broken pipe on its send.
            with contextlib.suppress(asyncio.LimitOverrunError, ValueError, TimeoutError, ConnectionError):
                await asyncio.wait_for(reader.readline(), 1.0)
            await self._reply(writer, {"ok": False, "error": f"too many connections (at most {self.MAX_CLIENTS})"})
            writer.close()
            return
        self.clients += 1
        try:
            while True:
                try:
                    line = await asyncio.wait_for(reader.readline(), self.IDLE_S)
                except (asyncio.LimitOverrunError, ValueError):
                    log.error("control request refused (%s): longer than %d bytes", peer, self.MAX_REQUEST)
                    await self._reply(writer, {"ok": False, "error": f"request longer than {self.MAX_REQUEST} bytes"})
                    break
                except TimeoutError:
                    break
                if not line:
                    break
                await self._reply(writer, self.handle(line, peer))
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            self.clients -= 1
            writer.close()

    @staticmethod
    async def _reply(writer: asyncio.StreamWriter, reply: dict[str, Any]) -> None:
        with contextlib.suppress(ConnectionError):
            writer.write((json.dumps(reply) + "\n").encode())
            await writer.drain()

    def handle(self, line: bytes, peer: str = "peer unknown") -> dict[str, Any]:
        try:
            req = json.loads(line)
            if not isinstance(req, dict) or req.get("cmd") not in self.COMMANDS:
                raise ValueError(f"unknown command; expected one of {', '.join(self.COMMANDS)}")
            cmd = req["cmd"]
            if cmd == "status":
                return {"ok": True, **self._status()}
            if cmd == "read":
                names = req.get("tags")
                if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
                    raise ValueError("read needs tags: a list of tag names")
                return {"ok": True, "tags": self._read(names)}
            if cmd == "reset_trip":
                self._stage(Command("reset_trip", {"by": f"{req.get('by', 'control socket')} ({peer})"}))
            elif cmd == "force":
                if req["value"] is None:  # None means "release" to the checker: say so, never reply ok
                    raise ValueError("force needs a value (to release a force: unforce)")
                self._check_force(str(req["tag"]), req["value"])
                self._stage(Command("force", {"tag": str(req["tag"]), "value": req["value"]}))
            elif cmd == "mode_request":  # an operator override: the highest rank of the mode authority
                args = check_args("mode_request", {k: v for k, v in req.items() if k not in ("cmd", "by")})
                self._stage(Command("mode_request", {**args, "by": f"{req.get('by', 'control socket')} ({peer})"}))
            elif cmd == "unforce":
                self._check_force(str(req["tag"]), None)
                self._stage(Command("unforce", {"tag": str(req["tag"])}))
            log.warning("control command accepted (%s): %s", peer, line.decode(errors="replace").strip()[:500])
            return {"ok": True}
        except (
            ValueError,
            KeyError,
            TypeError,
            RecursionError,
        ) as exc:  # Refused is a ValueError; RecursionError: JSON nested too deep
            log.error("control command rejected (%s): %r: %s", peer, line[:200], exc)
            return {"ok": False, "error": str(exc)}


def control_request(path: Path, request: dict[str, Any], timeout: float = 10.0) -> dict[str, Any]:
    """One request to a running runtime's control socket (the client side of ControlServer)."""
    import socket

    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        s.connect(str(path))
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):  # refused: its reply is still there
            s.sendall((json.dumps(request) + "\n").encode())
        buf = b""
        while not buf.endswith(b"\n"):
            chunk = s.recv(65536)
            if not chunk:
                break
            buf += chunk
    return json.loads(buf or b'{"ok": false, "error": "no answer"}')
