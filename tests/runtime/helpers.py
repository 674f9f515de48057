"""Shared helpers for the runtime tests: site files in tmp dirs, the CLI as a real process, polling."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]

BASE_SITE = """\
site:
  name: test-site
  nominal_voltage: 240.0
  nominal_frequency: 60
scan:
  period_ms: {period_ms}
  overrun_fault_after: 5
devices:
  - name: dev
    type: memory
    params:
      journal: journal.jsonl
      poll_s: 0.05
      tags:
        - {{name: grid.voltage, unit: V, value: 240.0, stale_after_s: 1.0}}
        - {{name: ev.soc, value: 0.5, stale_after_s: 1.0}}
        - {{name: inverter.setpoint, unit: W, direction: output, value: 0.0}}
        - {{name: inverter.enable, type: bool, direction: output, value: false}}
programs:
  - type: example_copy
    name: follow
    params: {{source: ev.soc, target: inverter.setpoint, gain: 10000, declare_target: false}}
  - type: example_copy
    name: permit
    params: {{source: grid.voltage, target: demo.permit_w, gain: 1.0}}
safety:
  - type: example_clamp
    name: clamp
    params: {{tag: inverter.setpoint, limit: 11000}}
"""


def write_site(tmp: Path, text: str | None = None, *, period_ms: int = 20, extra: str = "") -> Path:
    body = BASE_SITE.format(period_ms=period_ms) if text is None else textwrap.dedent(text)
    path = tmp / "site.yaml"
    path.write_text(body + textwrap.dedent(extra))
    return path


def cli(*args: str, **kw: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "runtime.cli", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=kw.pop("timeout", 120),
        **kw,
    )


def start_cli(*args: str, **kw: Any) -> subprocess.Popen[str]:
    env = dict(os.environ, **kw.pop("env", {}))
    return subprocess.Popen(
        [sys.executable, "-m", "runtime.cli", *args],
        cwd=ROOT,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        **kw,
    )


def stop_cli(proc: subprocess.Popen[str]) -> str:
    """SIGTERM a runtime started by ``start_cli`` (a clean stop: safe outputs, state written), kill it if
    it does not end within 20 s, and return what it wrote to stderr."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        _, err = proc.communicate(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        _, err = proc.communicate()
    return err


def wait_for(cond: Callable[[], Any], timeout: float = 30.0, what: str = "condition") -> Any:
    """Poll a condition (never a fixed sleep as synchronisation) until it holds or the deadline passes."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = cond()
        if got:
            return got
        time.sleep(0.02)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:
            break  # a line being written right now
    return out


def control(sock: Path, request: dict[str, Any]) -> dict[str, Any]:
    """One request on a running runtime's control socket."""
    from runtime.iothread import control_request

    return control_request(sock, request)


def read_tag(sock: Path, name: str) -> dict[str, Any] | None:
    """A tag's value/quality from a running runtime, or None while it is not answering yet."""
    try:
        reply = control(sock, {"cmd": "read", "tags": [name]})
    except OSError:
        return None
    return reply.get("tags", {}).get(name)


def bundled_site_copy(tmp: Path, **overrides: Any) -> Path:
    """The bundled site on free ports (its devices and its virtual plant alike), with its files referred to
    where they are and its state in ``tmp``: the bundled site keeps 15502-15505 for `make run`, and a test
    must neither collide with a running demo nor, worse, pass against another checkout's plant."""
    import yaml

    from runtime.site import bundled_site
    from tests.ports import free_site_ports

    src = bundled_site()
    site = yaml.safe_load(src.read_text())
    free_site_ports(site)
    plant = site["plant"]["params"]
    plant["scenario"] = str(src.parent / plant["scenario"])
    for t in site["tasks"]:
        for key in ("path", "password_file"):
            if key in t.get("params", {}):
                t["params"][key] = str(src.parent / t["params"][key])
    site["state_dir"] = str(tmp / "var")
    site.update(overrides)
    path = tmp / "site.yaml"
    path.write_text(yaml.safe_dump(site, sort_keys=False))
    return path
