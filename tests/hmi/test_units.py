"""The HMI's pure parts: users and their hashes, sessions, the login limit, what the pages show, and the
commands operator forms turn into; plus the scan's gate for forces from the HMI."""

from __future__ import annotations

import datetime as dt
import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from runtime.commands import CommandsSection, Gate, Refused, Request
from runtime.tags import Image, Quality, TagValue
from runtime.tasks.hmi import view
from runtime.tasks.hmi.actions import ActionError, command_for
from runtime.tasks.hmi.auth import LoginLimiter, Sessions, csrf_ok
from runtime.tasks.hmi.users import User, UserError, UserStore, add_user, site_users_file
from tests.runtime.helpers import ROOT


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def test_users_are_scrypt_hashed_in_a_0600_file_and_verified(tmp_path: Path) -> None:
    f = tmp_path / "var" / "hmi" / "users.json"
    add_user(f, "olivia", "operator", "correct horse")
    add_user(f, "victor", "viewer", "battery staple")
    assert stat.S_IMODE(os.stat(f).st_mode) == 0o600
    text = f.read_text()
    assert "correct horse" not in text and "battery staple" not in text
    doc = json.loads(text)
    assert doc["schema_version"] == 1 and doc["users"]["olivia"]["scrypt"]["n"] == 2**14
    store = UserStore(f)
    assert store.verify("olivia", "correct horse") == User("olivia", "operator")
    assert store.verify("victor", "battery staple") == User("victor", "viewer")
    assert store.verify("olivia", "battery staple") is None
    assert store.verify("nobody", "correct horse") is None
    add_user(f, "olivia", "viewer", "new password")  # replaced: role and password
    assert store.verify("olivia", "correct horse") is None
    assert store.verify("olivia", "new password") == User("olivia", "viewer")


@pytest.mark.parametrize(
    ("name", "role", "password", "why"),
    [
        ("a b", "operator", "long enough", "user name"),
        ("x", "admin", "long enough", "role 'admin'"),
        ("x", "viewer", "short", "password"),
    ],
)
def test_a_bad_user_is_refused_with_the_reason(tmp_path: Path, name: str, role: str, password: str, why: str) -> None:
    with pytest.raises(UserError, match=why):
        add_user(tmp_path / "u.json", name, role, password)
    assert not (tmp_path / "u.json").exists()


def test_a_broken_users_file_says_which_file(tmp_path: Path) -> None:
    f = tmp_path / "u.json"
    f.write_text("{not json")
    with pytest.raises(UserError, match=str(f)):
        UserStore(f).verify("x", "whatever1")
    with pytest.raises(UserError, match="schema_version"):
        f.write_text('{"users": []}')
        UserStore(f).verify("x", "whatever1")


def test_the_users_command_reads_the_password_from_stdin_and_finds_the_sites_file(tmp_path: Path) -> None:
    site = tmp_path / "site.yaml"
    site.write_text("tasks:\n  - {type: hmi, name: hmi, params: {users_file: state/users.json}}\n")
    assert site_users_file(site) == tmp_path / "state" / "users.json"
    res = subprocess.run(
        [sys.executable, "-m", "runtime.tasks.hmi.users", "--site", str(site), "add", "olivia", "operator"],
        input="from stdin 123\n",
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
    )
    assert res.returncode == 0, res.stderr
    assert UserStore(tmp_path / "state" / "users.json").verify("olivia", "from stdin 123") is not None
    res = subprocess.run(
        [sys.executable, "-m", "runtime.tasks.hmi.users", "--file", str(tmp_path / "u.json"), "add", "x", "viewer"],
        input="short\n",
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
    )
    assert res.returncode == 2 and "password" in res.stderr


def test_sessions_expire_and_csrf_must_match() -> None:
    clock = Clock()
    s = Sessions(60.0, clock)
    token, sess = s.create(User("olivia", "operator"))
    assert s.get(token) is sess and s.get("forged") is None and s.get(None) is None
    assert csrf_ok(sess, sess.csrf) and not csrf_ok(sess, None) and not csrf_ok(sess, sess.csrf + "x")
    clock.t += 59.9
    assert s.get(token) is sess
    clock.t += 0.2
    assert s.get(token) is None
    token, _ = s.create(User("olivia", "operator"))
    s.drop(token)
    assert s.get(token) is None


def test_login_limit_per_address_and_window() -> None:
    clock = Clock()
    lim = LoginLimiter(3, 60.0, clock)
    for _ in range(3):
        assert lim.retry_after("10.0.0.1") == 0
        lim.failed("10.0.0.1")
        clock.t += 1
    assert lim.retry_after("10.0.0.1") == pytest.approx(57.0)
    assert lim.retry_after("10.0.0.2") == 0  # another address is not held back
    clock.t += 57.0
    assert lim.retry_after("10.0.0.1") == 0  # the oldest failure left the window
    lim.failed("10.0.0.2")
    lim.succeeded("10.0.0.2")
    assert lim.retry_after("10.0.0.2") == 0


def img(**tags: object) -> Image:
    return Image({k.replace("__", "."): TagValue(v, Quality.GOOD, 0) for k, v in tags.items()})


@pytest.mark.parametrize(
    ("w", "word"),
    [
        (7000.0, "charging"),
        (-7000.0, "discharging"),
        (0.0, "idle"),
        (-0.0, "idle"),
        (None, "unknown"),
        (float("nan"), "unknown"),
    ],
)
def test_the_sign_is_spelled_out(w: float | None, word: str) -> None:
    assert view.direction(w) == word


def test_overview_shows_sign_quality_age_and_forces() -> None:
    image = Image(
        {
            "inverter.power": TagValue(-7000.0, Quality.GOOD, 1_000_000),
            "inverter.setpoint": TagValue(5000.0, Quality.GOOD, 2_000_000),
            "ev.soc": TagValue(0.5, Quality.STALE, 0),
            "meter.power": TagValue(None, Quality.BAD, 0),
            "safety.trip": TagValue("write_mismatch", Quality.GOOD, 0),
            "runtime.revision": TagValue("3f9a1c0d2b7e", Quality.GOOD, 0),
        }
    )
    cal = dt.datetime(2027, 1, 4, 17, 30, tzinfo=dt.UTC)
    o = view.overview(image, 3_000_000, cal, {"inverter.setpoint": 5000.0})
    assert o["power"]["direction"] == "discharging" and o["setpoint"]["direction"] == "charging"
    assert o["power"]["age_s"] == 2.0 and o["setpoint"]["forced"] and not o["power"]["forced"]
    assert o["soc"]["quality"] == "stale" and o["trip"]["value"] == "write_mismatch"
    assert o["grid_voltage"]["quality"] == "missing"
    assert o["revision"]["value"] == "3f9a1c0d2b7e"  # the running configuration (online change)
    assert o["forces"] == [{"tag": "inverter.setpoint", "value": 5000.0}]
    meter = next(c for c in o["comms"] if c["device"] == "meter")
    assert meter["not_good"] == ["meter.power"] and meter["good"] == 0
    json.dumps(o, allow_nan=False)  # the page gets valid JSON


def test_forces_follow_the_force_events() -> None:
    forces: dict[str, object] = {}
    view.forces_from_event(forces, {"kind": "force", "data": {"tag": "a.b", "value": 1.5}})
    view.forces_from_event(forces, {"kind": "force", "data": {"tag": "c.d", "value": True}})
    view.forces_from_event(forces, {"kind": "trip", "data": {"tag": "c.d"}})
    assert forces == {"a.b": 1.5, "c.d": True}
    view.forces_from_event(forces, {"kind": "force", "data": {"tag": "a.b"}})
    assert forces == {"c.d": True}


def test_forces_in_force_come_from_the_image_flag() -> None:
    """A force set before the HMI subscribed shows (the image says forced); a value the operator asked
    for wins over the image's post-safety value; a force the image no longer has is not shown."""
    image = Image(
        {
            "inverter.setpoint": TagValue(0.0, Quality.GOOD, 0, True),  # forced to -3000, safety said 0
            "plc.snr": TagValue(25.0, Quality.GOOD, 0, True),  # forced before the HMI subscribed
            "ev.soc": TagValue(0.5, Quality.GOOD, 0, False),
        }
    )
    asked = {"inverter.setpoint": -3000.0, "ev.soc": 0.9}  # ev.soc released while nobody listened
    assert view.forces_in_force(image, asked) == {"inverter.setpoint": -3000.0, "plc.snr": 25.0}
    assert view.forces_in_force(image, {}) == {"inverter.setpoint": 0.0, "plc.snr": 25.0}


def test_event_filters() -> None:
    rows = [
        {"seq": 1, "kind": "trip", "source": "safety", "message": "trip write_mismatch"},
        {"seq": 2, "kind": "transition", "source": "modes", "message": "idle -> charge"},
        {"seq": 3, "kind": "trip", "source": "safety", "message": "trip OV2"},
    ]
    assert [r["seq"] for r in view.filter_events(rows)] == [3, 2, 1]
    assert [r["seq"] for r in view.filter_events(rows, kind="trip")] == [3, 1]
    assert [r["seq"] for r in view.filter_events(rows, source="modes")] == [2]
    assert [r["seq"] for r in view.filter_events(rows, text="MISMATCH")] == [1]
    assert [r["seq"] for r in view.filter_events(rows, limit=1)] == [3]


def test_history_samples_on_the_cycle_clock() -> None:
    h = view.History(every_us=60_000_000, keep=3)
    cal = dt.datetime(2027, 1, 4, tzinfo=dt.UTC)
    for k in range(0, 600_000_000, 20_000_000):  # 10 simulated minutes in 20 s steps
        h.feed(img(ev__soc=k / 1e9), k, cal + dt.timedelta(microseconds=k))
    assert len(h.samples) == 3  # the latest three of ten
    assert [s["soc"] for s in h.samples] == [0.42, 0.48, 0.54]


@pytest.mark.parametrize(
    ("w", "word"),
    [(3000, "charge 3000 W"), (-3000, "discharge 3000 W"), (0, "hold 0 W")],
)
def test_a_mode_request_keeps_its_sign(w: float, word: str) -> None:
    kind, args, what = command_for({"action": "mode", "mode": "remote", "setpoint_w": w, "expiry_s": 60}, img(), 900)
    assert kind == "mode_request" and args == {"mode": "remote", "setpoint_w": float(w), "expiry_s": 60.0}
    assert word in what
    _, args, _ = command_for({"action": "mode", "mode": "remote", "setpoint_w": w}, img(), 900)
    assert args["expiry_s"] == 900


@pytest.mark.parametrize(
    ("body", "why"),
    [
        ({"action": "mode", "mode": "remote", "setpoint_w": "NaN"}, "finite"),
        ({"action": "mode", "mode": "remote", "setpoint_w": 2e6}, "outside"),
        ({"action": "mode", "mode": "remote", "setpoint_w": 1, "expiry_s": 0}, "expiry_s 0 outside"),
        ({"action": "mode", "mode": "turbo"}, "remote or local"),
        ({"action": "force", "tag": "no.such", "value": 1}, "unknown tag"),
        ({"action": "force", "tag": "inverter.enable", "value": "maybe"}, "true or false"),
        ({"action": "force", "tag": "inverter.setpoint", "value": "inf"}, "finite"),
        ({"action": "launch"}, "action must be one of"),
        ([1, 2], "JSON object"),
    ],
)
def test_a_bad_form_is_refused_before_asking_the_scan(body: object, why: str) -> None:
    image = img(inverter__enable=False, inverter__setpoint=0.0)
    with pytest.raises(ActionError, match=why):
        command_for(body, image, 900)


def test_a_forced_value_takes_the_tags_type() -> None:
    image = img(inverter__enable=False, inverter__setpoint=0.0, plc__tone_maps=2, mode__state="idle")
    assert command_for({"action": "force", "tag": "inverter.enable", "value": "true"}, image, 900)[1]["value"] is True
    assert (
        command_for({"action": "force", "tag": "inverter.setpoint", "value": "-2500"}, image, 900)[1]["value"]
        == -2500.0
    )
    assert command_for({"action": "force", "tag": "plc.tone_maps", "value": 3}, image, 900)[1]["value"] == 3
    assert command_for({"action": "force", "tag": "mode.state", "value": 7}, image, 900)[1]["value"] == "7"
    assert command_for({"action": "unforce", "tag": "no.such"}, image, 900)[:2] == ("unforce", {"tag": "no.such"})


def gate(commissioning: bool) -> Gate:
    section = CommandsSection.model_validate({"allow": {"hmi": ["reset_trip", "mode_request"]}})
    return Gate({"hmi": "hmi", "backoffice": "ocpp", "local": "localapi"}, section, commissioning, 20_000)


def test_the_scan_takes_forces_from_the_hmi_only_while_commissioning() -> None:
    force = Request("1", "force", "hmi", "olivia", {"tag": "a.b", "value": 1})
    unforce = Request("2", "unforce", "hmi", "olivia", {"tag": "a.b"})
    c = gate(True).check(force, 0)
    assert c.name == "force" and c.args["by"] == "olivia" and c.args["source"] == "hmi"
    with pytest.raises(Refused, match="force only while the site file says commissioning: true"):
        gate(False).check(force, 0)
    assert gate(False).check(unforce, 0).name == "unforce"  # releasing takes an override away: always
    for source in ("backoffice", "local"):  # no other network-facing task forces, commissioning or not
        with pytest.raises(Refused, match="only from the local control socket"):
            gate(True).check(Request("3", "force", source, "x", {"tag": "a.b", "value": 1}), 0)
    assert gate(False).check(Request("4", "reset_trip", "hmi", "olivia", {}), 0).args["by"] == "olivia"
    with pytest.raises(Refused, match="availability not allowed for hmi"):
        gate(True).check(Request("5", "availability", "hmi", "olivia", {"operative": False}), 0)


@pytest.mark.parametrize(
    ("params", "why"),
    [
        ("cert_file: nowhere.pem, key_file: nowhere.key", "nowhere.pem does not exist"),
        ("cert_file: nowhere.pem", "cert_file and key_file go together"),
        ("port: 0", "port"),
        ("push_s: .nan", "push_s"),
    ],
)
def test_a_bad_hmi_block_fails_check_with_its_key(tmp_path: Path, params: str, why: str) -> None:
    from tests.runtime.helpers import cli, write_site

    site = write_site(tmp_path, extra=f"tasks:\n  - {{type: hmi, name: hmi, params: {{{params}}}}}\n")
    res = cli("check", str(site))
    out = res.stdout + res.stderr
    assert res.returncode != 0 and why in out and "site.yaml" in out, out
