"""Persisted state (latched trips) in ``state_dir/state.json``: its shape, its atomic write, its retries.

A latched operator trip must survive a crash, a rename and a full disk, or the runtime must refuse to
start and say so: forgetting a trip silently is the one outcome that is never acceptable. Hence:

- the file has a schema version and a validated shape; anything else (unreadable, not JSON, the wrong
  shape) refuses the start with exit 2 and a message, never a traceback (systemd would restart-loop);
- an entry that no configured program or interlock claims (an interlock renamed since it latched)
  refuses the start too, naming the trip and how to clear it (``reset_offline``);
- every write is atomic (temp file, fsync, rename, fsync of the directory), so ``kill -9`` at any moment
  leaves the old file or the new one, never half of one;
- a write that fails is retried with backoff, and until it succeeds ``Persister.fault`` is true: the
  runner feeds it to ``runtime.persist_fault`` and the engine holds every output at its safe value.

``python -m runtime.statefile reset-trip SITE [--all]`` clears latched state while the runtime is stopped.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import socket
import sys
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, ValidationError

log = logging.getLogger("v2g_plc.state")

SCHEMA_VERSION: Literal[1] = 1
CLEAR_COMMAND = "v2g-plc reset-trip --offline"  # the offline reset (also: python -m runtime.statefile)
BACKOFF_S = (0.1, 5.0)  # first retry of a failed write, and the longest pause between retries


class StateError(Exception):
    """The persisted state cannot be trusted: the runtime does not start (exit 2)."""


class StateFile(BaseModel):
    """``state.json``: each component's state under its name (programs and interlocks that latch)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    version: Literal[1] = SCHEMA_VERSION
    components: dict[str, dict[str, Any]] = {}


def load(path: Path) -> dict[str, dict[str, Any]]:
    """The components' states in ``path`` ({} without a file); StateError when it cannot be trusted."""
    hint = "it may hold latched trips. Inspect it, then delete it to accept losing them."
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise StateError(f"persisted state {path} is unreadable ({exc}); {hint}") from exc
    if isinstance(raw, dict) and "version" not in raw and all(isinstance(v, dict) for v in raw.values()):
        raw = {"version": SCHEMA_VERSION, "components": raw}  # before the schema version: {name: state}
    try:
        return dict(StateFile.model_validate(raw).components)
    except ValidationError as exc:
        where = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'top level'}: {e['msg']}" for e in exc.errors()[:5])
        raise StateError(
            f"persisted state {path} does not have the shape of a v2g-plc state file "
            f"(version {SCHEMA_VERSION}): {where}; {hint}"
        ) from None


def describe(state: Mapping[str, Any]) -> str:
    """A component's persisted state in words: its latched trips where it has them."""
    latched = state.get("latched")
    if isinstance(latched, list) and latched:
        return "latched " + ", ".join(
            f"{e[0]} ({e[1]})" if isinstance(e, list) and len(e) == 2 else repr(e) for e in latched
        )
    return json.dumps(state, default=str)[:200]


def check_claims(states: Mapping[str, Mapping[str, Any]], claimants: Iterable[str], path: Path, site: Path) -> None:
    """Refuse state that no configured component claims: a trip latched under a name the site no longer
    has (the interlock was renamed) would otherwise be dropped while the site starts energised."""
    names = set(claimants)
    orphans = {n: s for n, s in states.items() if n not in names}
    if not orphans:
        return
    lines = [f"  {n!r}: {describe(s)}" for n, s in sorted(orphans.items())]
    raise StateError(
        f"persisted state {path} holds state for components this site does not have (renamed or removed?):\n"
        + "\n".join(lines)
        + f"\nThe site's components that keep state: {', '.join(map(repr, sorted(names))) or 'none'}. "
        f"Check that the cause is gone, then clear it with: {CLEAR_COMMAND} {site}"
    )


def write_atomic(
    path: Path,
    components: Mapping[str, Mapping[str, Any]],
    *,
    fsync: Callable[[int], None] = os.fsync,
) -> None:
    """Temp file, fsync, rename over the old file, fsync the directory: old or new, never half."""
    path.parent.mkdir(parents=True, exist_ok=True)
    data = StateFile(components={k: dict(v) for k, v in components.items()}).model_dump_json(indent=1)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write(data + "\n")
        fh.flush()
        fsync(fh.fileno())
    os.replace(tmp, path)
    dfd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fsync(dfd)  # the rename itself is durable only once the directory is
    finally:
        os.close(dfd)


class Persister:
    """Keeps ``state.json`` equal to the components' latest state, on the I/O thread's loop.

    ``fault`` (read by the scan thread each cycle) is true from a failed write until a write succeeds;
    ``error`` says why. ``on_change`` is called with the new ``fault`` whenever it flips.
    """

    def __init__(
        self,
        path: Path,
        states: Mapping[str, Mapping[str, Any]],
        loop: asyncio.AbstractEventLoop,
        *,
        write: Callable[[Path, Mapping[str, Mapping[str, Any]]], None] = write_atomic,
        on_change: Callable[[bool], None] = lambda fault: None,
        backoff_s: tuple[float, float] = BACKOFF_S,
    ):
        self.path = path
        self.states: dict[str, Mapping[str, Any]] = dict(states)
        self.loop = loop
        self._write = write
        self._on_change = on_change
        self._backoff0, self._backoff_max = backoff_s
        self._backoff = self._backoff0
        self._retry: asyncio.TimerHandle | None = None
        self.fault = False
        self.error: str | None = None
        self.failures = 0
        self.writes = 0

    def submit(self, changes: Mapping[str, Mapping[str, Any] | None]) -> None:
        """From the scan thread: merge these components' new state (None: nothing to keep) and write."""
        self.loop.call_soon_threadsafe(self._merge, dict(changes))

    def _merge(self, changes: dict[str, Mapping[str, Any] | None]) -> None:
        for name, st in changes.items():
            if st is None:
                self.states.pop(name, None)
            else:
                self.states[name] = st
        if self._retry is None:  # a retry already pending writes the merged state when it comes
            self._try()

    def _try(self) -> None:
        self._retry = None
        try:
            self._write(self.path, self.states)
        except Exception as exc:  # not only OSError: a state that cannot be serialised must hold the site too
            self.failures += 1
            error = f"{getattr(exc, 'strerror', None) or exc} ({self.path})"
            if not self.fault or error != self.error:
                log.error(
                    "cannot persist latched state: %s; outputs held at their safe values; retrying every %.1f-%.1f s",
                    error,
                    self._backoff0,
                    self._backoff_max,
                )
            self.error = error
            self._retry = self.loop.call_later(self._backoff, self._try)
            self._backoff = min(self._backoff * 2, self._backoff_max)
            if not self.fault:
                self.fault = True
                self._on_change(True)
            return
        self.writes += 1
        self._backoff = self._backoff0
        if self.fault:
            log.warning("latched state persisted again after %d failed writes (%s)", self.failures, self.path)
            self.fault, self.error = False, None
            self._on_change(False)

    def close(self) -> None:
        if self._retry is not None:
            self._retry.cancel()


def runtime_answers(sock_path: Path) -> bool:
    """Is a runtime listening on this control socket right now?"""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(1.0)
        try:
            s.connect(str(sock_path))
        except OSError:
            return False
    return True


def reset_offline(site: Path, everything: bool = False, out: Callable[[str], None] = print) -> int:
    """Clear persisted state while the runtime is stopped: the entries no configured component claims
    (what refuses a start), or with ``everything`` every entry. Exit code: 0 done, 1 a runtime is
    running (use the online ``v2g-plc reset-trip``), 2 the site or the state file is broken."""
    from runtime.engine import keeps_state
    from runtime.site import build_site
    from runtime.yamlload import ConfigError

    try:
        built = build_site(site)
    except ConfigError as exc:
        out(f"configuration error:\n{exc}")
        return 2
    cfg = built.loaded.config
    state_dir = built.loaded.resolve(cfg.state_dir)
    sock = built.loaded.resolve(cfg.control_socket) if cfg.control_socket else state_dir / "control.sock"
    if runtime_answers(sock):
        out(f"error: a runtime is running on {sock}; stop it first, or reset online with `v2g-plc reset-trip`")
        return 1
    path = state_dir / "state.json"
    try:
        states = load(path)
    except StateError as exc:
        out(f"error: {exc}")
        return 2
    claimants = {p.name for p in (*built.programs, *built.interlocks) if keeps_state(p)}
    drop = sorted(n for n in states if everything or n not in claimants)
    if not drop:
        out(f"{path}: nothing to clear")
        return 0
    for n in drop:
        out(f"cleared {n!r}: {describe(states.pop(n))}")
    try:
        write_atomic(path, states)
    except OSError as exc:
        out(f"error: cannot write {path}: {exc}")
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m runtime.statefile", description="persisted state of a site")
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("reset-trip", help="clear latched state while the runtime is stopped")
    p.add_argument("site", type=Path)
    p.add_argument("--all", action="store_true", help="every entry, not only those no component claims")
    a = ap.parse_args(argv)
    return reset_offline(a.site, a.all)


if __name__ == "__main__":
    sys.exit(main())
