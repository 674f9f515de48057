"""The bundled simulated site as a real process tree on free ports, for the kill loop and the soak.

The copy keeps everything of the bundled site (programs, safety, tasks, plant scenario, prices) and
changes only where it listens and writes: free loopback ports instead of 15502-15505, and a private
``state_dir``, so that a second checkout or a running demo on the machine never meets it.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from tests.ports import free_site_ports

ROOT = Path(__file__).resolve().parents[2]
BUNDLED = ROOT / "runtime" / "sites"


def copy_bundled_site(dest: Path, *, edit: Callable[[dict[str, Any]], None] | None = None) -> Path:
    """Copy runtime/sites (site file, plant scenario, prices) to ``dest``; give every device and plant
    server a free port and the site a state_dir under ``dest``. ``edit`` may change the parsed site."""
    shutil.copytree(BUNDLED, dest, ignore=shutil.ignore_patterns("var", "__pycache__"), dirs_exist_ok=True)
    path = dest / "sim.yaml"
    site = yaml.safe_load(path.read_text())
    free_site_ports(site)
    site["state_dir"] = str(dest / "state")
    if edit is not None:
        edit(site)
    path.write_text(yaml.safe_dump(site, sort_keys=False))
    return path


def start_site(site: Path, *args: str, log: Path) -> subprocess.Popen[bytes]:
    """``v2g-plc run SITE ARGS`` in a session of its own (its plant and task process included), logging
    to ``log``; stdin is /dev/null so no status line is drawn."""
    with open(log, "ab") as fh:
        return subprocess.Popen(
            [sys.executable, "-m", "runtime.cli", "run", str(site), *args],
            cwd=ROOT,
            stdin=subprocess.DEVNULL,
            stdout=fh,
            stderr=fh,
            start_new_session=True,
        )


def children(pid: int) -> list[int]:
    """Direct children of ``pid`` (Linux /proc)."""
    out: list[int] = []
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/children") as fh:
                out += [int(x) for x in fh.read().split()]
    except OSError:
        pass
    return out


def cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            return fh.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def role(pid: int) -> str:
    """``plant``, ``task`` or ``other`` for a child of the scan process, from its command line."""
    cmd = cmdline(pid)
    if "runtime.sim" in cmd:
        return "plant"
    if "runtime.taskproc" in cmd or "taskproc" in cmd:
        return "task"
    return "other"


def processes(scan_pid: int) -> dict[str, int]:
    """``{"scan": pid, "plant": pid, "task": pid}`` of a running site (missing ones left out)."""
    out = {"scan": scan_pid}
    for c in children(scan_pid):
        out.setdefault(role(c), c)
    return out


def rss_kb(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def kill_tree(proc: subprocess.Popen[bytes], timeout: float = 10.0) -> None:
    """Bounded teardown: SIGTERM to the session, then SIGKILL to whatever is left."""
    for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            pass
        try:
            proc.wait(timeout=wait)
        except subprocess.TimeoutExpired:
            continue
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # orphans of a killed scan process
        except ProcessLookupError:
            pass
        return


def read_events(state_dir: Path) -> list[dict[str, Any]]:
    """The event log; a last line without its newline (a write cut short by a kill) is left out. Nothing in
    the runtime reads this log back; a reader of it must skip such a line, as this one does."""
    path = state_dir / "events.jsonl"
    if not path.exists():
        return []
    text = path.read_text()
    lines = text.split("\n")
    if lines and lines[-1] != "":
        lines = lines[:-1]  # an unterminated tail
    return [json.loads(line) for line in lines if line]
