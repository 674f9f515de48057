"""Online change on a real running runtime (``v2g-plc run``): the file watcher, the validating child, the
cycle boundary, the event log, the recording and replay, the control socket's ``reload`` and the task
process started from the running snapshot."""

from __future__ import annotations

import json
import os
import re
import signal
from pathlib import Path
from typing import Any

import pytest

from runtime.api import Command
from runtime.engine import RECONFIGURE
from runtime.online.service import FINAL, SNAPSHOT
from runtime.recording import read_frames
from runtime.site import build_site
from runtime.yamlload import ConfigError
from tests.runtime.helpers import cli, control, read_jsonl, read_tag, start_cli, stop_cli, wait_for

SITE = """\
site: {{name: online, nominal_voltage: 240.0, nominal_frequency: 60}}
scan: {{period_ms: {period_ms}, overrun_fault_after: 50}}
devices:
  - name: dev
    type: memory
    params:
      poll_s: {poll_s}
      echo: {{inverter.power: inverter.setpoint}}
      tags:
        - {{name: grid.voltage, unit: V, value: 240.0, stale_after_s: 1.0}}
        - {{name: grid.frequency, unit: Hz, value: 60.0, stale_after_s: 1.0}}
        - {{name: ev.soc, value: 0.5, stale_after_s: 1.0}}
        - {{name: inverter.power, unit: W, value: 0.0, stale_after_s: 1.0}}
        - {{name: inverter.write_mismatch, type: bool, value: false, stale_after_s: 1.0}}
        - {{name: inverter.setpoint, unit: W, direction: output, value: 0.0}}
        - {{name: inverter.enable, type: bool, direction: output, value: false}}
programs:
  - {{type: example_copy, name: ask, params: {{source: ev.soc, target: inverter.setpoint, gain: 10000, declare_target: false}}}}
safety:
  - type: v2g_safety
    name: safety
    params:
      category: III
      rated_charge_w: 11000
      rated_discharge_w: 11000
      voltage: {{ov1: {{clearing_s: {ov1_s}}}}}
      comms: {{required_tags: [grid.voltage, grid.frequency, inverter.power], snr_tag: null}}
      islanding: {{loss_tag: null}}
      thermal: {{tag: null}}
      battery: {{soh_tag: null}}
      limits: {{rating_charge_tag: null, rating_discharge_tag: null}}
"""
TASK = """\
tasks:
  - {{type: example_counter, name: counter, params: {{interval_s: {interval_s}}}}}
"""


def site_text(period_ms: int = 20, poll_s: float = 0.05, ov1_s: float = 13.0, interval_s: float | None = None) -> str:
    text = SITE.format(period_ms=period_ms, poll_s=poll_s, ov1_s=ov1_s)
    return text + (TASK.format(interval_s=interval_s) if interval_s is not None else "")


def editor_save(path: Path, text: str) -> None:
    """As editors save: the whole text to a temp file beside it, then a rename over the original."""
    tmp = path.with_name(f".{path.name}.swp")
    tmp.write_text(text)
    os.replace(tmp, path)


def status(sock: Path) -> dict[str, Any]:
    try:
        return control(sock, {"cmd": "status"})
    except OSError:
        return {}


def reload_after(sock: Path, before: int, timeout: float = 60.0) -> dict[str, Any]:
    """The outcome of the first reload after request ``before``."""

    def done() -> dict[str, Any] | None:
        st = status(sock).get("reload", {})
        return st if st.get("id", 0) > before and st.get("state") in FINAL else None

    return wait_for(done, timeout, "the reload's outcome")


def started(sock: Path) -> dict[str, Any]:
    return wait_for(lambda: (st := status(sock)).get("k", -1) >= 0 and st, 60, "the runtime's first cycles")


def events(tmp: Path, kind: str) -> list[dict[str, Any]]:
    return [e for e in read_jsonl(tmp / "var" / "events.jsonl") if e["kind"] == kind]


def test_an_editor_save_tightens_a_trip_at_one_cycle_and_replay_takes_it_at_the_same_cycle(tmp_path: Path) -> None:
    site, sock = tmp_path / "site.yaml", tmp_path / "var" / "control.sock"
    site.write_text(site_text())
    rec, rec_out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    proc = start_cli("run", str(site), "--record", str(rec), "--record-outputs", str(rec_out))
    try:
        first = started(sock)
        old = first["revision"]
        assert wait_for(lambda: (read_tag(sock, "runtime.revision") or {}).get("value") == old, 10, "the revision tag")
        editor_save(site, site_text(ov1_s=2.0))
        got = reload_after(sock, first["reload"]["id"])
        assert got["state"] == "applied", got
        new = got["revision"]
        assert new != old and "safety.voltage.ov1.clearing_s" in got["message"]
        wait_for(lambda: (read_tag(sock, "runtime.revision") or {}).get("value") == new, 10, "the new revision tag")
        assert (tmp_path / "var" / SNAPSHOT).read_text() == site.read_text()
        wait_for(lambda: events(tmp_path, "reconfigure"), 15, "the reconfigure event")
    finally:
        err = stop_cli(proc)
    assert proc.returncode == 0, err
    (ev,) = events(tmp_path, "reconfigure")
    assert ev["data"]["diff"] == {"safety.voltage.ov1.clearing_s": [13.0, 2.0]}
    assert ev["data"]["revision"] == new and ev["data"]["from"] == old
    # the recording carries the change in the frame of the cycle that took it ...
    frames = [json.loads(line) for line in rec.read_text().splitlines()]
    taken = [f["k"] for f in frames for c in f.get("commands", []) if c["name"] == RECONFIGURE]
    assert taken == [ev["k"]]
    # ... and replay, built from the revision the run started with, applies it at that very cycle
    site.write_text(site_text())
    built = build_site(site)
    engine = built.engine(age_inputs=False)
    applied_at = []
    for f in read_frames(rec):
        k = f.t_us // built.info.period_us
        engine.step(f.t_us, f.updates, tuple(Command(c.name, c.args) for c in f.commands))
        applied_at += [k for _, ok, _ in engine.reconfigured if ok]
    assert applied_at == [ev["k"]]
    assert engine.interlocks[0].params.voltage.ov1.clearing_s == 2.0
    # and the whole replay reproduces the live outputs line for line
    res = cli("replay", str(site), "--inputs", str(rec), "--outputs", str(tmp_path / "replayed.jsonl"))
    assert res.returncode == 0, res.stderr
    live = {json.loads(x)["k"]: x for x in rec_out.read_text().splitlines()}
    replayed = {json.loads(x)["k"]: x for x in (tmp_path / "replayed.jsonl").read_text().splitlines()}
    # (how many cycles the live run lasted depends on the machine; what counts is that the live outputs reach
    # past the cycle that took the change and the replay has each of them, identical)
    assert max(live) >= ev["k"] and set(live) <= set(replayed)
    assert all(replayed[k] == line for k, line in live.items())


def test_a_half_written_file_and_a_broken_yaml_change_nothing_until_the_file_is_whole(tmp_path: Path) -> None:
    site, sock = tmp_path / "site.yaml", tmp_path / "var" / "control.sock"
    site.write_text(site_text())
    proc = start_cli("run", str(site))
    try:
        first = started(sock)
        old, n = first["revision"], first["reload"]["id"]
        whole = site_text(ov1_s=2.0)
        site.write_text(whole[: whole.index("safety:")])  # half written: no interlock yet
        got = reload_after(sock, n)
        assert got["state"] == "invalid" and got["revision"] == old
        assert f"{site}:1: safety: required key is missing" in got["message"]
        broken = whole.replace("scan: {period_ms: 20, overrun_fault_after: 50}", "scan: {period_ms: 20, overrun")
        site.write_text(broken)
        got = reload_after(sock, got["id"])
        assert got["state"] == "invalid" and got["revision"] == old
        assert f"{site}:3: (top level): YAML syntax error" in got["message"]  # where PyYAML notices it
        assert status(sock)["revision"] == old and read_tag(sock, "runtime.revision")["value"] == old
        k = status(sock)["k"]
        wait_for(lambda: status(sock)["k"] > k + 10, 10, "the scan going on")
        site.write_text(whole)
        got = reload_after(sock, got["id"])
        assert got["state"] == "applied" and got["revision"] != old
        wait_for(lambda: len(events(tmp_path, "reload_invalid")) == 2, 10, "both refusals in the event log")
    finally:
        err = stop_cli(proc)
    assert "online change not applied" in err


def test_a_device_change_or_a_weakened_trip_needs_a_restart_and_nothing_is_applied(tmp_path: Path) -> None:
    site, sock = tmp_path / "site.yaml", tmp_path / "var" / "control.sock"
    site.write_text(site_text(ov1_s=2.0))
    proc = start_cli("run", str(site))
    try:
        first = started(sock)
        old, n = first["revision"], first["reload"]["id"]
        editor_save(site, site_text(ov1_s=2.0, poll_s=0.1, period_ms=10))
        got = reload_after(sock, n)
        assert got["state"] == "refused" and got["revision"] == old
        assert "needs a restart" in got["message"]
        assert "scan.period_ms changed (20.0 -> 10.0)" in got["message"]
        assert "devices 'dev': poll_s changed" in got["message"]
        (ev,) = wait_for(lambda: events(tmp_path, "reload_refused"), 10, "the refusal in the event log")
        assert ev["data"]["restart"] and ev["data"]["diff"]["devices.dev.poll_s"] == [0.05, 0.1]
        editor_save(site, site_text(ov1_s=5.0))  # 2 s -> 5 s: a protection loosened
        got = reload_after(sock, got["id"])
        assert got["state"] == "refused" and got["revision"] == old
        assert "a protection would be loosened" in got["message"] and "needs a restart" in got["message"]
        (ev,) = wait_for(lambda: events(tmp_path, "reconfigure_refused"), 10, "the engine's refusal")
        assert ev["data"]["diff"] == {"safety.voltage.ov1.clearing_s": [2.0, 5.0]}
        assert read_tag(sock, "runtime.revision")["value"] == old
    finally:
        stop_cli(proc)


def test_reload_over_the_socket_restarts_tasks_from_the_snapshot_never_the_edited_file(tmp_path: Path) -> None:
    site, sock = tmp_path / "site.yaml", tmp_path / "var" / "control.sock"
    site.write_text(site_text(interval_s=0.05))
    proc = start_cli("run", str(site), "--no-watch")
    try:
        first = started(sock)
        pid = wait_for(lambda: (read_tag(sock, "counter.pid") or {}).get("value"), 30, "the task process")
        site.write_text(site_text(interval_s=0.1))
        res = cli("reload", str(site))
        assert res.returncode == 0, res.stdout + res.stderr
        got = json.loads(res.stdout)
        assert got["state"] == "applied" and got["revision"] != first["revision"]
        assert "tasks.counter.interval_s" in got["message"]
        res = cli("status", str(site))
        assert json.loads(res.stdout)["revision"] == got["revision"]
        pid2 = wait_for(
            lambda: (
                (t := read_tag(sock, "counter.pid"))
                and t["quality"] == "good"
                and t["value"] not in (0, pid)
                and t["value"]
            ),
            30,
            "the task process restarted with the new revision",
        )
        assert (tmp_path / "var" / SNAPSHOT).read_text() == site_text(interval_s=0.1)
        # The file is edited into something broken and not reloaded; the task process dies: it restarts from
        # the running revision, never from the edited file.
        site.write_text("scan: [this is not a site\n")
        os.kill(pid2, signal.SIGKILL)
        wait_for(
            lambda: (t := read_tag(sock, "counter.pid")) and t["quality"] == "good" and t["value"] not in (0, pid2),
            30,
            "the task process restarted from the snapshot",
        )
        assert status(sock)["revision"] == got["revision"]
        res = cli("reload", str(site))  # the client cannot even find the socket in a broken file: says why
        assert res.returncode == 2 and f"{site}:2: (top level): YAML syntax error" in res.stderr
    finally:
        stop_cli(proc)


def test_the_snapshot_reads_as_the_site_file_relative_paths_and_errors_included(tmp_path: Path) -> None:
    """The task process builds the snapshot as if it were the site file: a relative path resolves beside the
    site, not beside the snapshot in state_dir, and an error names the site file."""
    from runtime.taskproc import snapshot_site

    (tmp_path / "prices.csv").write_text("time,price\n2018-01-01T00:00,20.0\n")
    task = """\
tasks:
  - type: prices_csv
    name: prices
    params: {path: prices.csv, timezone: UTC, market: day_ahead}
"""
    text = SITE.format(period_ms=20, poll_s=0.05, ov1_s=13.0) + task
    site, snap = tmp_path / "site.yaml", tmp_path / "var" / SNAPSHOT
    snap.parent.mkdir()
    snap.write_text(text)
    site.write_text("scan: [the file being edited, broken\n")
    built = build_site(snapshot_site(site, snap))
    assert built.loaded.resolve(built.tasks[0].params.path) == tmp_path / "prices.csv"
    snap.write_text(text.replace("prices.csv", "missing.csv"))
    with pytest.raises(ConfigError, match=f"{re.escape(str(site))}:.*missing.csv"):
        build_site(snapshot_site(site, snap))
