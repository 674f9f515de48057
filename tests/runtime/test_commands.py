"""Typed commands from a real task process over the real channel: allowlisted, checked again by the scan,
applied at a cycle boundary through safety's last word, recorded for replay, answered with a reason."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

from runtime.api import SiteInfo
from runtime.commands import CONTROL, CommandsSection, Gate, Refused, Request
from tests.runtime.helpers import ROOT, cli, read_tag, start_cli, stop_cli, wait_for, write_site

SITE_INFO = SiteInfo("commands", 240.0, 60.0, 20_000)


def commander(commands: list[dict[str, Any]], allow: str = "[availability, stop, start, mode_request]") -> str:
    return f"""\
commands:
  allow:
    example_commander: {allow}
tasks:
  - type: example_commander
    name: ocpp_like
    params:
      by: csms-station-7
      commands: {json.dumps(commands)}
"""


def acks(sock: Path, n: int) -> list[list[Any]]:
    def got() -> list[list[Any]] | None:
        t = read_tag(sock, "commander.acks")
        a = json.loads(t["value"]) if t and t["value"] else []
        return a if len(a) >= n else None

    return wait_for(got, 30, f"{n} answers from the scan")


def with_soc(site: Path, soc: float) -> None:
    """The test site's program asks for ev.soc x 10000 W: a negative soc asks for discharge."""
    site.write_text(site.read_text().replace("{name: ev.soc, value: 0.5,", f"{{name: ev.soc, value: {soc},"))


REFUSED = [
    {"kind": "reset", "args": {}},  # not in this site's allowlist
    {"kind": "availability", "args": {"operative": "no"}},  # wrong type
    {"kind": "mode_request", "args": {"mode": "remote", "setpoint_w": 1e9, "expiry_s": 60}},  # out of range
    {"kind": "launch", "args": {}},  # unknown kind
    {"kind": "force", "args": {"tag": "inverter.setpoint", "value": 1.0}},  # never from a task
]


@pytest.mark.parametrize("soc", [-0.5, 0.0, 0.5])
def test_availability_from_a_task_zeroes_both_ways_persists_and_refusals_say_why(tmp_path: Path, soc: float) -> None:
    cmds = [*REFUSED, {"kind": "availability", "args": {"operative": False}}]
    site = write_site(tmp_path, extra=commander(cmds))
    with_soc(site, soc)
    proc = start_cli("run", str(site))
    sock = tmp_path / "var" / "control.sock"
    try:
        got = acks(sock, len(cmds))
        reasons = {kind: (ok, reason) for kind, ok, reason in got}
        assert reasons["reset"] == (
            False,
            "reset not allowed for example_commander (site file commands.allow.example_commander)",
        )
        assert reasons["availability"][0] is True  # the last one: the valid one
        assert got[1] == ["availability", False, "operative must be true or false"]
        assert "setpoint_w 1000000000.0 outside" in reasons["mode_request"][1]
        assert reasons["launch"] == (False, "unknown command kind 'launch'")
        assert reasons["force"] == (False, "force only from the local control socket")
        wait_for(lambda: read_tag(sock, "inverter.setpoint")["value"] == 0.0, what="out of service: 0 W")
        assert read_tag(sock, "inverter.enable")["value"] is False
        state = json.loads((tmp_path / "var" / "state.json").read_text())
        assert state["components"]["runtime.availability"]["operative"] is False
        assert state["components"]["runtime.availability"]["by"] == "csms-station-7"
    finally:
        err = stop_cli(proc)
    assert "command reset from ocpp_like refused (asked by csms-station-7)" in err
    # a restart keeps the station out of service: the set point stays 0 whatever the program asks
    site.write_text(site.read_text().replace(json.dumps(cmds), "[]"))
    proc = start_cli("run", str(site))
    try:
        wait_for(lambda: read_tag(sock, "ev.soc") is not None, what="the restarted runtime")
        for _ in range(20):
            t = read_tag(sock, "inverter.setpoint")
            assert t["value"] == 0.0
    finally:
        err = stop_cli(proc)
    assert "restored persisted state of runtime.availability" in err


def test_stop_then_start_and_a_recording_with_commands_replays(tmp_path: Path) -> None:
    cmds = [{"kind": "stop", "args": {"remote_id": 3}}, {"kind": "start", "args": {"remote_id": 4}}]
    site = write_site(tmp_path, extra=commander(cmds))
    rec, rec_out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    proc = start_cli("run", str(site), "--record", str(rec), "--record-outputs", str(rec_out))
    sock = tmp_path / "var" / "control.sock"
    try:
        acks(sock, 2)  # both applied: the scan answers after the cycle that took the command
        # a cycle after the start, so that the last recorded output is the program's again
        wait_for(lambda: read_tag(sock, "inverter.setpoint")["value"] == 5000.0, what="started again")
    finally:
        err = stop_cli(proc)
    assert proc.returncode == 0, err[-2000:]
    frames = [json.loads(line) for line in rec.read_text().splitlines()]
    recorded = [c for f in frames for c in f.get("commands", [])]
    assert [c["name"] for c in recorded] == ["stop", "start"]
    assert recorded[0]["args"]["by"] == "csms-station-7" and recorded[0]["args"]["source"] == "ocpp_like"
    live = [json.loads(line) for line in rec_out.read_text().splitlines()]
    k_stop = next(f["k"] for f in frames if any(c["name"] == "stop" for c in f.get("commands", [])))
    k_start = next(f["k"] for f in frames if any(c["name"] == "start" for c in f.get("commands", [])))
    held = [o["tags"]["inverter.setpoint"] for o in live if k_stop <= o["k"] < k_start]
    assert held and set(held) == {0.0}  # stopped: 0 W from the cycle of the command on
    assert live[-1]["tags"]["inverter.setpoint"] == 5000.0  # started again: the program's 0.5 x 10000 W
    rep = tmp_path / "replayed.jsonl"
    res = cli("replay", str(site), "--inputs", str(rec), "--outputs", str(rep))
    assert res.returncode == 0, res.stderr
    by_k = {json.loads(line)["k"]: line for line in rep.read_text().splitlines()}
    assert all(by_k[json.loads(line)["k"]] == line for line in rec_out.read_text().splitlines())


def test_reset_persists_holds_safe_and_exits_with_the_restart_code(tmp_path: Path) -> None:
    site = write_site(tmp_path, extra=commander([{"kind": "reset", "args": {}}], allow="[reset]"))
    rec_out = tmp_path / "out.jsonl"
    proc = start_cli("run", str(site), "--record-outputs", str(rec_out), env={"V2G_RESET_EXIT": "1"})
    try:
        code = proc.wait(timeout=60)
    finally:
        err = stop_cli(proc)
    assert code == 75, err[-2000:]
    assert "reset accepted" in err
    last = json.loads(rec_out.read_text().splitlines()[-1])
    assert last["tags"]["inverter.setpoint"] == 0.0 and last["tags"]["inverter.enable"] is False


# ---------------------------------------------------------------------------------------------- the gate


def test_without_systemd_a_reset_re_executes_the_runtime(tmp_path: Path) -> None:
    """No INVOCATION_ID (not a systemd unit): after the reset the same process starts again, fresh."""
    site = write_site(tmp_path, extra=commander([{"kind": "reset", "args": {}}], allow="[reset]"))
    env = {k: v for k, v in os.environ.items() if k not in ("INVOCATION_ID", "V2G_RESET_EXIT")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "runtime.cli", "run", str(site)], cwd=ROOT, env=env, text=True,
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    lines: list[str] = []
    assert proc.stderr is not None
    threading.Thread(target=lambda: lines.extend(iter(proc.stderr.readline, "")), daemon=True).start()  # type: ignore[union-attr]
    try:
        # the commander asks again in every new incarnation: two re-executions prove the cycle
        wait_for(lambda: sum("reset: re-executing" in ln for ln in lines) >= 2, 60, "two re-executions")
        assert proc.poll() is None  # the same process, started over
        assert sum("scan running" in ln for ln in lines) >= 2
    finally:
        proc.kill()
        proc.wait(timeout=10)


def gate(commissioning: bool = False, **allow: list[str]) -> Gate:
    section = CommandsSection.model_validate({"allow": allow, "max_per_minute": 3})
    return Gate({"backoffice": "ocpp", "local": "localapi"}, section, commissioning, 20_000)


@pytest.mark.parametrize(
    ("req", "reason"),
    [
        (Request("1", "availability", "nobody", "x", {"operative": False}), "unknown source 'nobody'"),
        (Request("1", "availability", "local", "x", {"operative": False}), "availability not allowed for localapi"),
        (Request("1", "availability", "backoffice", "x", {"operative": 1}), "operative must be true or false"),
        (Request("1", "availability", "backoffice", "x", {"operative": True, "x": 1}), "unknown argument 'x'"),
        (Request("1", "start", "backoffice", "x", {"remote_id": "7"}), "remote_id must be a 32-bit integer"),
        (
            Request(
                "1", "mode_request", "backoffice", "x", {"mode": "remote", "setpoint_w": float("nan"), "expiry_s": 1}
            ),
            "setpoint_w must be a finite number",
        ),
        (
            Request("1", "mode_request", "backoffice", "x", {"mode": "turbo", "setpoint_w": 1.0, "expiry_s": 1}),
            "mode must be one of",
        ),
        (
            Request("1", "mode_request", "backoffice", "x", {"mode": "remote", "expiry_s": 1}),
            "mode remote needs setpoint_w",
        ),
        (
            Request("1", "mode_request", "backoffice", "x", {"mode": "local", "limit_pct": 101}),
            "limit_pct 101 outside",
        ),
        (
            Request("1", "mode_request", "backoffice", "x", {"mode": "local", "expiry_s": 0}),
            "expiry_s must be above 0",
        ),
        (
            Request("1", "mode_request", "backoffice", "x", {"mode": "turbo"}),
            "mode must be one of",
        ),
        (Request("1", "force", "backoffice", "x", {"tag": "a.b", "value": 1}), "force only from the local control"),
        (Request("1", "force", CONTROL, "x", {"tag": "a.b", "value": 1}), "force only while the site file says"),
    ],
)
def test_the_gate_refuses_with_the_reason(req: Request, reason: str) -> None:
    g = gate(ocpp=["availability", "start", "stop", "mode_request"])
    with pytest.raises(Refused, match=reason.replace("(", r"\(")):
        g.check(req, 0)


def test_the_gate_accepts_typed_commands_with_source_and_identity_and_rate_limits_per_source() -> None:
    g = gate(ocpp=["availability"])
    r = Request("9", "availability", "backoffice", "CS-1", {"operative": False})
    c = g.check(r, 0)
    assert c.name == "availability" and dict(c.args) == {
        "operative": False,
        "source": "backoffice",
        "source_type": "ocpp",
        "by": "CS-1",
        "id": "9",
    }
    g.check(r, 1)
    g.check(r, 2)
    with pytest.raises(Refused, match="rate limit"):
        g.check(r, 3)
    assert g.check(r, 60_000_001).name == "availability"  # a minute later (cycle clock)
    assert gate(True).check(Request("2", "force", CONTROL, "op", {"tag": "a.b", "value": 1}), 0).name == "force"


def test_the_site_file_allowlist_is_validated_with_its_line(tmp_path: Path) -> None:
    site = write_site(tmp_path, extra="commands:\n  allow:\n    ocpp: [availability, force]\n")
    res = cli("check", str(site))
    assert res.returncode != 0
    assert "site.yaml" in res.stderr + res.stdout and "commands.allow.ocpp" in res.stderr + res.stdout
    site = write_site(tmp_path, extra="commands:\n  allow:\n    no_such_task: [availability]\n")
    res = cli("check", str(site))
    assert res.returncode != 0 and "unknown task type 'no_such_task'" in res.stderr + res.stdout


def test_the_control_socket_refuses_a_force_unless_commissioning(tmp_path: Path) -> None:
    from tests.runtime.helpers import control

    proc = start_cli("run", str(write_site(tmp_path)))
    sock = tmp_path / "var" / "control.sock"
    try:
        wait_for(lambda: read_tag(sock, "ev.soc") is not None, what="the control socket")
        reply = control(sock, {"cmd": "force", "tag": "inverter.setpoint", "value": -7000.0})
        assert reply == {"ok": False, "error": "force only while the site file says commissioning: true"}
        assert control(sock, {"cmd": "unforce", "tag": "inverter.setpoint"})["ok"] is True  # a release is harmless
        assert read_tag(sock, "inverter.setpoint")["forced"] is False
    finally:
        stop_cli(proc)
