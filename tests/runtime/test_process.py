"""The runtime as a real process: recording and replay, clean stop on SIGTERM, exit files."""

from __future__ import annotations

import json
import signal
from pathlib import Path

from tests.runtime.helpers import bundled_site_copy, cli, read_jsonl, start_cli, wait_for, write_site


def test_record_replays_to_the_recorded_outputs_line_by_line(tmp_path: Path) -> None:
    site = write_site(tmp_path)
    rec, rec_out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    stats, dump = tmp_path / "stats.json", tmp_path / "tags.json"
    res = cli(
        "run",
        str(site),
        "--for",
        "2",
        "--record",
        str(rec),
        "--record-outputs",
        str(rec_out),
        "--stats-json",
        str(stats),
        "--dump-tags",
        str(dump),
    )
    assert res.returncode == 0, res.stderr
    live = rec_out.read_text().splitlines()
    assert len(live) > 20
    rep = tmp_path / "replayed.jsonl"
    res = cli("replay", str(site), "--inputs", str(rec), "--outputs", str(rep))
    assert res.returncode == 0, res.stderr
    replayed = rep.read_text().splitlines()
    # The live run may have skipped deadlines (overruns); replay runs every k. Compare by cycle number.
    by_k = {json.loads(line)["k"]: line for line in replayed}
    assert all(by_k[json.loads(line)["k"]] == line for line in live)
    # and something actually happened: the setpoint followed ev.soc * 10000
    assert json.loads(live[-1])["tags"]["inverter.setpoint"] == 5000.0
    s = json.loads(stats.read_text())
    assert s["period_ms"] == 20 and s["cycles"] >= len(live) - 1
    assert set(s["lateness_ms"]) == {"p50", "p99", "max"} and set(s["cycle_time_ms"]) == {"p50", "p99", "max"}
    tags = json.loads(dump.read_text())["tags"]
    assert tags["grid.voltage"]["value"] == 240.0 and tags["grid.voltage"]["quality"] == "good"
    assert tags["grid.voltage"]["unit"] == "V" and tags["grid.voltage"]["age_s"] < 1.0


def test_replay_twice_is_byte_identical(tmp_path: Path) -> None:
    site = write_site(tmp_path)
    frames = tmp_path / "in.jsonl"
    frames.write_text(
        '{"t": 0, "tags": {"grid.voltage": 240.0, "ev.soc": 0.5}}\n'
        '{"t": 0.05, "tags": {"ev.soc": 0.9}}\n'
        '{"t": 0.1, "tags": {"ev.soc": {"value": 0.9, "quality": "bad"}}}\n'
        '{"t": 0.5, "tags": {"ev.soc": 2.0}}\n'
    )
    outs = []
    for n in (1, 2):
        out = tmp_path / f"out{n}.jsonl"
        res = cli("replay", str(site), "--inputs", str(frames), "--outputs", str(out))
        assert res.returncode == 0, res.stderr
        outs.append(out.read_bytes())
    assert outs[0] == outs[1]
    lines = [json.loads(x) for x in outs[0].decode().splitlines()]
    assert [x["k"] for x in lines] == list(range(26))  # until the last frame's t: 0.5 s / 20 ms
    sp = [x["tags"]["inverter.setpoint"] for x in lines]
    assert sp[0] == sp[2] == 5000.0  # frame at t=0.05 applies at k=3 (k*P >= t), not before
    assert sp[3] == 9000.0
    assert sp[5] == 0.0 and sp[24] == 0.0  # bad quality -> the program's fail-safe 0, held while unnamed
    assert sp[25] == 11000.0  # 20000 clamped by the interlock


def test_replay_rejects_a_malformed_frame_naming_the_line(tmp_path: Path) -> None:
    site = write_site(tmp_path)
    frames = tmp_path / "in.jsonl"
    frames.write_text('{"t": 0, "tags": {}}\n{"tags": {}}\n')
    res = cli("replay", str(site), "--inputs", str(frames), "--outputs", str(tmp_path / "o.jsonl"))
    assert res.returncode == 2 and f"{frames}:2:" in res.stderr


def test_sigterm_leaves_safe_outputs_written(tmp_path: Path) -> None:
    site = write_site(tmp_path)
    journal = tmp_path / "journal.jsonl"
    proc = start_cli("run", str(site), "--stats-json", str(tmp_path / "stats.json"))
    try:
        # running and energising: the setpoint follows ev.soc (0.5 * 10000 W)
        wait_for(
            lambda: any(j["writes"].get("inverter.setpoint") == 5000.0 for j in read_jsonl(journal)),
            what="the setpoint to be written",
        )
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0, proc.stderr.read() if proc.stderr else ""
    finally:
        if proc.poll() is None:
            proc.kill()
    last = read_jsonl(journal)[-1]["writes"]
    assert last == {"inverter.setpoint": 0.0, "inverter.enable": False}
    assert (tmp_path / "stats.json").exists()  # exit files written on a signal too


def test_bundled_site_runs(tmp_path: Path) -> None:
    site = bundled_site_copy(tmp_path)  # on free ports: never another checkout's plant
    res = cli("run", str(site), "--for", "3", "--dump-tags", str(tmp_path / "t.json"), timeout=180)
    assert res.returncode == 0, res.stderr[-3000:]
    tags = json.loads((tmp_path / "t.json").read_text())["tags"]
    for core in ("grid.voltage", "inverter.setpoint"):
        assert core in tags


def test_a_recording_with_forces_replays_to_the_same_outputs(tmp_path: Path) -> None:
    """Forces are operator commands: recorded with their cycle, replayed on the same cycle."""
    from tests.runtime.helpers import control, read_tag

    site = write_site(tmp_path, extra="commissioning: true\n")
    rec, rec_out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    proc = start_cli("run", str(site), "--for", "6", "--record", str(rec), "--record-outputs", str(rec_out))
    sock = tmp_path / "var" / "control.sock"
    wait_for(lambda: read_tag(sock, "ev.soc") is not None, what="the control socket")
    reply = control(sock, {"cmd": "force", "tag": "ev.soc", "value": 0.8})
    assert reply["ok"], reply
    wait_for(lambda: read_tag(sock, "inverter.setpoint")["value"] == 8000.0, what="the force to act")
    assert control(sock, {"cmd": "force", "tag": "inverter.setpoint", "value": 20000.0})["ok"]
    wait_for(lambda: read_tag(sock, "inverter.setpoint")["forced"], what="the output force")
    assert control(sock, {"cmd": "unforce", "tag": "inverter.setpoint"})["ok"]
    assert control(sock, {"cmd": "unforce", "tag": "ev.soc"})["ok"]
    assert proc.wait(timeout=60) == 0
    assert '"name":"force"' in rec.read_text()
    rep = tmp_path / "replayed.jsonl"
    res = cli("replay", str(site), "--inputs", str(rec), "--outputs", str(rep))
    assert res.returncode == 0, res.stderr
    by_k = {json.loads(line)["k"]: line for line in rep.read_text().splitlines()}
    live = rec_out.read_text().splitlines()
    assert all(by_k[json.loads(line)["k"]] == line for line in live)
    assert any(json.loads(line)["tags"]["inverter.setpoint"] == 11000.0 for line in live)  # forced, clamped
