"""Several supervised task processes: one hung group is restarted while the others keep their process,
their image and their commands; groups by default (backoffice, local, planning) or by ``process:``."""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from runtime.commands import Request
from runtime.config import check_components, load_site
from runtime.site import build_site
from runtime.tags import Image, Quality, TagValue
from runtime.taskproc import (
    ALIVE,
    Channels,
    TaskChannel,
    TaskSupervisor,
    alive_tag,
    group_tasks,
    site_channels,
    site_groups,
)
from runtime.yamlload import ConfigError
from tests.runtime.helpers import ROOT, bundled_site_copy, read_tag, start_cli, stop_cli, wait_for, write_site

GROUPS = """\
commissioning: true
task_process:
  heartbeat_s: 1.0
  restart_backoff_s: 0.2
  restart_backoff_max_s: 1.0
commands:
  allow:
    example_asker: [availability]
tasks:
  - type: example_hang
    name: stuck
    params: {{prefix: stuck, hang_file: {hang}, stale_after_s: 300}}
  - type: example_counter
    name: counter
    process: local
    params: {{prefix: counter, interval_s: 0.05, stale_after_s: 300}}
  - type: example_asker
    name: asker
    process: local
    params: {{prefix: asker, kind: availability, args: {{operative: true}}, by: test, interval_s: 2.1}}
"""


def children(pid: int) -> dict[str, int]:
    """The task processes of a runtime: group -> pid, from their command lines."""
    out = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        for c in (task / "children").read_text().split():
            cmd = cmdline(int(c))
            if "runtime.taskproc" in cmd:
                out[cmd[cmd.index("--group") + 1]] = int(c)
    return out


def cmdline(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")
    except OSError:
        return []


def good(sock: Path, name: str) -> Any:
    t = read_tag(sock, name)
    return t["value"] if t and t["quality"] == "good" and t["value"] else None


def value(sock: Path, name: str) -> Any:
    t = read_tag(sock, name)
    return t["value"] if t else None


@pytest.fixture
def grouped(tmp_path: Path):
    hang = tmp_path / "hang-now"
    site = write_site(tmp_path, extra=GROUPS.format(hang=hang))
    proc = start_cli("run", str(site))
    yield proc, tmp_path / "var" / "control.sock", hang
    err = stop_cli(proc)  # the hung process ignores SIGTERM: the supervisor kills it within its bound
    print(err[-4000:])


def test_a_hung_group_is_restarted_while_another_keeps_its_process_image_and_commands(grouped) -> None:
    proc, sock, hang = grouped
    local = wait_for(lambda: good(sock, "counter.pid"), 60, "the local group's writes")
    planning = wait_for(lambda: good(sock, "stuck.pid"), 30, "the planning group's writes")
    assert local != planning and proc.pid not in (local, planning)
    assert children(proc.pid) == {"planning": planning, "local": local}
    assert len({cmdline(p)[cmdline(p).index("--runtime-id") + 1] for p in (local, planning)}) == 1  # not a reboot
    wait_for(lambda: value(sock, ALIVE) is True, 30, "every group alive")
    assert value(sock, alive_tag("local")) is True and value(sock, alive_tag("planning")) is True

    hang.touch()  # the planning task blocks its event loop, heartbeat and all
    wait_for(lambda: value(sock, alive_tag("planning")) is False, 30, "the planning group judged hung")
    assert value(sock, ALIVE) is False  # the site-wide tag: false while any group is down
    assert value(sock, alive_tag("local")) is True
    assert read_tag(sock, "stuck.count")["quality"] == "stale"  # the hung group's shared tags, at once
    # while planning is down, local still gets the image (seen_k echoes the cycle clock) and its commands
    # are still answered by the scan (one every 2.1 s: the gate allows a task 30 a minute)
    seen, accepted = value(sock, "counter.seen_k"), value(sock, "asker.accepted")
    wait_for(lambda: value(sock, "counter.seen_k") > seen, 10, "local to see new images")
    wait_for(lambda: value(sock, "asker.accepted") > accepted, 10, "local's commands to be answered")

    restarted = wait_for(lambda: (p := good(sock, "stuck.pid")) and p != planning and p, 30, "planning restarted")
    wait_for(lambda: not os.path.exists(f"/proc/{planning}"), 10, "the hung process reaped")
    assert restarted != local
    assert good(sock, "counter.pid") == local and good(sock, "asker.pid") == local  # never restarted
    assert children(proc.pid)["local"] == local
    assert value(sock, alive_tag("local")) is True

    hang.unlink()  # the next planning process runs: every group alive again
    wait_for(lambda: value(sock, ALIVE) is True, 30, "every group alive again")
    assert children(proc.pid)["local"] == local


def test_a_site_without_process_keys_gets_the_three_default_groups(tmp_path: Path) -> None:
    site = bundled_site_copy(tmp_path)
    built = build_site(site)
    assert all("process" not in t.model_fields_set for t in built.loaded.config.tasks)
    groups = {g: [t.name for t in ts] for g, ts in site_groups(built).items()}
    assert groups == {
        "planning": ["prices", "planner"],
        "backoffice": ["backoffice"],
        "local": ["modbus_api", "metrics", "hmi"],
    }
    for g in groups:
        assert alive_tag(g) in built.tags
    channels = site_channels(built)  # a group may write only the shared tags its own tasks declare
    assert "plan.power" in channels["planning"].allowed and "ocpp.connected" in channels["backoffice"].allowed
    assert "plan.power" not in channels["backoffice"].allowed | channels["local"].allowed
    assert all(not (channels[a].allowed & channels[b].allowed) for a in channels for b in channels if a < b)

    proc = start_cli("run", str(site))
    try:
        sock = tmp_path / "var" / "control.sock"
        wait_for(lambda: value(sock, ALIVE) is True, 90, "three task processes alive")
        pids = children(proc.pid)
        assert set(pids) == {"backoffice", "local", "planning"} and len(set(pids.values())) == 3
        assert all(value(sock, alive_tag(g)) is True for g in pids)
    finally:
        stop_cli(proc)
    assert all(not os.path.exists(f"/proc/{p}") for p in pids.values())


def test_a_site_whose_tasks_are_all_one_type_gets_one_process(tmp_path: Path) -> None:
    extra = """\
task_process: {heartbeat_s: 1.0}
tasks:
  - {type: example_counter, name: a, params: {prefix: a}}
  - {type: example_counter, name: b, params: {prefix: b}}
"""
    site = write_site(tmp_path, extra=extra)
    built = build_site(site)
    assert [n for n in built.tags.specs if n.startswith("runtime.tasks.")] == [alive_tag("planning")]
    proc = start_cli("run", str(site))
    try:
        sock = tmp_path / "var" / "control.sock"
        a = wait_for(lambda: good(sock, "a.pid"), 60, "task a's writes")
        assert wait_for(lambda: good(sock, "b.pid"), 10, "task b's writes") == a
        assert children(proc.pid) == {"planning": a}
        wait_for(lambda: value(sock, ALIVE) is True, 10, "alive")
    finally:
        stop_cli(proc)


@pytest.mark.parametrize("name", ["Back-Office", "", "x" * 25, "9lives", 7])
def test_a_bad_process_name_is_refused_at_its_line(tmp_path: Path, name: Any) -> None:
    extra = f"""\
tasks:
  - type: example_counter
    name: a
    process: {json.dumps(name)}
"""
    site = write_site(tmp_path, extra=extra)
    with pytest.raises(ConfigError) as err:
        build_site(site)
    line = site.read_text().splitlines().index(f"    process: {json.dumps(name)}") + 1
    assert any(i.line == line and i.key == "tasks[0].process" for i in err.value.issues), str(err.value)


# -- the channels of several groups, over real socket pairs -----------------------------------------


def _pair(allowed: set[str]) -> tuple[TaskChannel, socket.socket]:
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    ch = TaskChannel(frozenset(allowed))
    ch.attach(ours)
    return ch, theirs


def _recv_all(sock: socket.socket) -> list[Any]:
    import pickle

    sock.setblocking(False)
    out = []
    while True:
        try:
            out.append(pickle.loads(sock.recv(1 << 20)))
        except BlockingIOError:
            return out


def test_each_group_writes_only_its_own_shared_tags_and_gets_only_its_own_answers() -> None:
    a, a_end = _pair({"a.x"})
    b, b_end = _pair({"b.x"})
    chans = Channels({"planning": a, "local": b})
    try:
        a_end.send(json.dumps(["w", [["a.x", 1, "good"], ["b.x", 666, "good"]]]).encode())  # b.x is not a's
        b_end.send(json.dumps(["w", [["b.x", 2, "good"]]]).encode())
        cmd = {"kind": "availability", "source": "t", "by": "x", "args": {"operative": True}}
        a_end.send(json.dumps(["c", {**cmd, "id": "7-1"}]).encode())
        b_end.send(json.dumps(["c", {**cmd, "id": "7-1"}]).encode())  # the same id from another process
        got = {(u.name, u.value) for u in chans.drain()}
        assert got == {("a.x", 1), ("b.x", 2)}
        reqs = chans.take_requests()
        assert sorted(r.id for r in reqs) == ["local/7-1", "planning/7-1"]
        assert all(isinstance(r, Request) and r.kind == "availability" for r in reqs)
        chans.ack("planning/7-1", True)
        chans.ack("local/7-1", False, "refused")
        chans.ack("nogroup/7-1", True)  # an unknown group is answered nowhere
        chans.publish(0, Image({"a.x": TagValue(1, Quality.GOOD, 0)}), None)
        to_a = [m for m in _recv_all(a_end) if m[0] == "ack"]
        to_b = [m for m in _recv_all(b_end) if m[0] == "ack"]
        assert to_a == [("ack", "7-1", True, "")] and to_b == [("ack", "7-1", False, "refused")]
    finally:
        for s in (a_end, b_end):
            s.close()
        a.detach()
        b.detach()


def test_the_site_wide_alive_tag_needs_every_group_and_no_group_means_not_alive() -> None:
    a, a_end = _pair(set())
    b, b_end = _pair(set())
    chans = Channels({"planning": a, "local": b})
    try:
        a_end.send(b'["hb"]')
        chans.drain()
        now = time.monotonic_ns()
        assert chans.check_alive(now, 10**9) is False  # local has not been heard
        assert {u.name: u.value for u in chans.alive_updates()} == {
            alive_tag("planning"): True,
            alive_tag("local"): False,
        }
        b_end.send(b'["hb"]')
        chans.drain()
        assert chans.check_alive(time.monotonic_ns(), 10**9) is True
        assert chans.check_alive(time.monotonic_ns() + 2 * 10**9, 10**9) is False  # both silent too long
    finally:
        for s in (a_end, b_end):
            s.close()
        a.detach()
        b.detach()
    assert Channels({}).check_alive(time.monotonic_ns(), 10**9) is False


# A stand-in for a hung task process: it ignores SIGTERM, and when the SIGTERM comes it says whether every
# sibling named in the file argv[1] is still running then (not killed, not a zombie).
IGNORES_SIGTERM = """
import os, signal, sys, time

def alive(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False

def on_term(signum, frame):
    with open(sys.argv[1]) as f:
        pids = [int(p) for p in f.read().split()]
    print("siblings alive" if all(alive(p) for p in pids) else "a sibling was gone", flush=True)

signal.signal(signal.SIGTERM, on_term)
print("ready", flush=True)
time.sleep(60)
"""


def bare_supervisor(tmp_path: Path, group: str, tasks: list[str] | None = None) -> TaskSupervisor:
    """A group's supervisor whose process the test starts itself (a stand-in, not a task process)."""
    return TaskSupervisor(
        tmp_path / "none.yaml",
        TaskChannel(),
        speed=1,
        start=dt.datetime.now(dt.UTC),
        heartbeat_s=1,
        backoff_s=1,
        backoff_max_s=1,
        group=group,
        tasks=tasks or (),
    )


def test_stopping_several_groups_is_bounded_by_one_timeout(tmp_path: Path) -> None:
    """Every child is asked at once, then killed when the one deadline passes: a child that ignores
    SIGTERM costs the timeout once, not once per group. Shown without a clock: each child, when its
    SIGTERM comes, finds every sibling still running, so no group's kill came before another's stop (a stop
    one group after the other would have killed the first before the second was asked)."""
    from runtime.taskproc import stop_all

    pids = tmp_path / "pids"
    sups = []
    for g in ("a", "b", "c"):
        sup = bare_supervisor(tmp_path, g)
        sup.proc = subprocess.Popen(
            [sys.executable, "-c", IGNORES_SIGTERM, str(pids)], stdout=subprocess.PIPE, text=True
        )
        sups.append(sup)
    for sup in sups:
        assert sup.proc is not None and sup.proc.stdout is not None
        assert sup.proc.stdout.readline() == "ready\n"  # its SIGTERM handler is set
    pids.write_text(" ".join(str(s.proc.pid) for s in sups if s.proc is not None))
    stop_all(sups, timeout_s=0.5)
    assert all(s.proc is not None and s.proc.returncode == -signal.SIGKILL for s in sups)  # all ignored SIGTERM
    said = [s.proc.stdout.read() for s in sups if s.proc is not None and s.proc.stdout is not None]
    assert said == ["siblings alive\n"] * 3


def test_an_online_change_of_task_params_restarts_only_the_groups_that_run_them(tmp_path: Path) -> None:
    from runtime.taskproc import restart_groups, stop_all

    groups = {"backoffice": ["backoffice"], "local": ["hmi", "metrics"], "planning": ["prices", "planner"]}
    sups = []
    for g, tasks in groups.items():
        sup = bare_supervisor(tmp_path, g, tasks)
        sup.proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])  # a task process
        sups.append(sup)
    by_group = {s.group: s for s in sups}
    try:
        restart_groups(sups, ["planner"])
        assert by_group["planning"].proc is not None
        assert by_group["planning"].proc.wait(timeout=10) == -signal.SIGTERM
        assert all(by_group[g].proc.poll() is None for g in ("backoffice", "local"))  # type: ignore[union-attr]
        restart_groups(sups)  # not told which: every group
        assert all(s.proc.wait(timeout=10) == -signal.SIGTERM for s in sups)  # type: ignore[union-attr]
    finally:
        stop_all(sups)


# What each group of the bundled site must not import: the other groups' plug-ins, and no driver, program
# or interlock (the scan process runs those).
NOT_IN = {
    "backoffice": ["runtime.tasks.hmi.task", "runtime.tasks.planner_task", "runtime.tasks.prices"],
    "local": ["runtime.tasks.ocpp.task", "ocpp", "runtime.tasks.planner_task", "runtime.tasks.prices"],
    "planning": ["runtime.tasks.ocpp.task", "ocpp", "runtime.tasks.hmi.task", "runtime.tasks.localapi.metrics"],
}
NOBODY = [
    "runtime.io.modbus_tcp",
    "programs.modes",
    "safety.supervisor",
    "runtime.secc.driver",
    "runtime.tasks.fleet_task",
]


@pytest.mark.parametrize("group", sorted(NOT_IN))
def test_a_group_process_imports_the_modules_of_its_own_tasks_only(group: str) -> None:
    """Built in a fresh interpreter as a task process builds its group: its own tasks' modules are loaded,
    the other groups' and the scan's plug-ins are not (they cost every task process their memory)."""
    built = build_site(ROOT / "runtime" / "sites" / "sim.yaml")
    names = [t.name for t in site_groups(built)[group]]
    mine = sorted({type(t).__module__ for t in site_groups(built)[group]})
    code = (
        "import json, sys; from pathlib import Path; from runtime.taskproc import group_tasks; "
        f"_, tasks = group_tasks(Path({str(ROOT / 'runtime' / 'sites' / 'sim.yaml')!r}), None, 1, {names!r}); "
        "print(json.dumps([[t.name for t in tasks], sorted(sys.modules)]))"
    )
    res = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]
    got, modules = json.loads(res.stdout)
    assert got == names
    assert set(mine) <= set(modules)
    assert [m for m in (*NOT_IN[group], *NOBODY) if m in modules] == []


def test_the_registry_finds_every_plugin_in_its_sources() -> None:
    """A lookup imports the module the sources name for a type: every registered type is there, at its
    own module, so no lookup falls back to importing every plug-in."""
    from runtime.registry import PLUGIN_PACKAGES, SECTIONS, load_all, source_index

    load_all()
    index = source_index()
    for reg in SECTIONS:
        for type_name in reg:
            module = reg[type_name].__module__
            if module.split(".")[0] in {p.split(".")[0] for p in PLUGIN_PACKAGES} and module != __name__:
                assert index.get((reg.section, type_name)) == module, (reg.section, type_name)


@pytest.mark.parametrize("label", ["backoffice", "modbus_api", "fleet"])
def test_a_task_process_builds_its_depot_task_with_the_params_the_scan_validated(label: str) -> None:
    """A group's process builds its tasks from the site file itself: on a depot each must know the EVSEs,
    as the scan's validation gave them (the OCPP station of N EVSEs, the local API's units, the fleet plan)."""
    depot = Path(__file__).resolve().parents[2] / "runtime" / "sites" / "depot.yaml"
    loaded = load_site(depot)
    scan = check_components(loaded)
    i = next(i for i, c in enumerate(loaded.config.tasks) if c.name == label)
    _, tasks = group_tasks(depot, None, 1, (label,))
    assert [t.name for t in tasks] == [label]
    assert getattr(tasks[0].params, "evses", None) == getattr(scan[("tasks", i)], "evses", None)
    assert getattr(tasks[0].params, "evses", None)  # not empty: 20 EVSEs
