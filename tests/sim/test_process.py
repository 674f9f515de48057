"""``python -m runtime.sim``: a process of its own that says READY, serves Modbus, and goes away cleanly
on SIGTERM or when its parent (stdin) goes away."""

from __future__ import annotations

import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.io.helpers import ROOT, free_port


def site(tmp_path: Path, params: str) -> Path:
    f = tmp_path / "site.yaml"
    f.write_text(
        "site: {name: t, nominal_voltage: 240, nominal_frequency: 60}\nplant:\n  type: virtual\n  params:\n" + params
    )
    return f


def start(f: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "runtime.sim", "--site", str(f), "--speed", "5"],
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def ready(p: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    """The plant's one line, waited for with a bound (a plant that never starts fails, not hangs)."""
    assert p.stdout is not None
    readable, _, _ = select.select([p.stdout], [], [], timeout)
    assert readable, f"no READY within {timeout} s"
    assert p.stdout.readline().strip() == b"READY"


@pytest.mark.parametrize("how", ["sigterm", "sigint", "stdin_eof"])
def test_ready_serves_and_exits(tmp_path: Path, how: str) -> None:
    port = free_port()
    f = site(tmp_path, f"    devices: [{{name: meter, map: site_meter_tcp, port: {port}}}]\n")
    p = start(f)
    try:
        ready(p)
        out = subprocess.run(
            [sys.executable, "-m", "runtime.probe", f"127.0.0.1:{port}", "--map", "site_meter_tcp", "--json"],
            cwd=ROOT,
            capture_output=True,
            timeout=30,
        )
        assert out.returncode == 0, out.stderr
        assert b'"meter.energy_import"' in out.stdout
        if how == "sigterm":
            p.send_signal(signal.SIGTERM)
        elif how == "sigint":
            p.send_signal(signal.SIGINT)
        else:
            assert p.stdin is not None
            p.stdin.close()
        assert p.wait(timeout=10) == 0
        assert p.stdout is not None and p.stdout.read() == b""  # exactly one line: READY
    finally:
        if p.poll() is None:
            p.kill()
            p.wait(timeout=10)


def test_bad_plant_params_name_file_line(tmp_path: Path) -> None:
    f = site(tmp_path, "    devices: [{name: m, map: site_meter_tcp, port: 1}]\n    step_s: -1\n")
    p = start(f)
    _, err = p.communicate(timeout=30)
    assert p.returncode == 2
    assert f"{f}:6: plant.params.step_s".encode() in err


def test_probe_exit_codes(tmp_path: Path) -> None:
    port = free_port()
    t0 = time.monotonic()
    out = subprocess.run(
        [sys.executable, "-m", "runtime.probe", f"127.0.0.1:{port}", "--map", "site_meter_tcp"],
        cwd=ROOT,
        capture_output=True,
        timeout=30,
    )
    assert out.returncode == 3 and b"cannot connect" in out.stderr
    assert time.monotonic() - t0 < 30
    out = subprocess.run(
        [sys.executable, "-m", "runtime.probe", "127.0.0.1:1", "--map", str(tmp_path / "nope.yaml")],
        cwd=ROOT,
        capture_output=True,
        timeout=30,
    )
    assert out.returncode == 2 and b"not found" in out.stderr
