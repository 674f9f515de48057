"""kill -9 at random moments: the bundled site, as a real process tree, loses its scan process, its task
process or its virtual plant again and again, and every time:

- the scan process restarts with no discharge while enter service has its 300 s of delay to run
  (charging, a load, may start: without a plan yet the site charges toward the departure SoC), and every
  trip latched on disk before the start is active again from the first cycle, with set point 0 and the
  permit withdrawn;
- a killed task process is restarted by the scan process with no discharge meanwhile; a killed plant (all
  field devices dead) trips to safe outputs; a killed scan process takes its children with it;
- no file in state_dir is half-written: every ``*.json`` parses, every complete line of ``events.jsonl``
  parses (an unterminated last line, from a kill inside a write, is tolerated: no reader in the runtime
  reads that log back, and :func:`tests.slow.bundled.read_events` skips such a line).

The operator-reset trip is made in the running site the way an operator's commissioning would: with
``trust_forced_inputs`` the forced ``inverter.write_mismatch`` is evidence, and it latches
``write_mismatch`` after ``write_mismatch_s``. The loop reads ``state.json`` to know what was persisted at
the moment of each kill. ``V2G_KILL_LOOPS`` sets the number of kills (default 50); the seed is printed.
"""

from __future__ import annotations

import json
import os
import random
import signal
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from runtime.iothread import control_request
from tests.slow.bundled import copy_bundled_site, kill_tree, processes, start_site

KILLS = int(os.environ.get("V2G_KILL_LOOPS", "50"))
SPEED = 20  # 300 s of enter-service delay = 15 s of real time: longer than any iteration's reads
ES_DELAY_S = 300.0  # the bundled site's enter-service delay (IEEE 1547-2018 clause 4.10.3 default)
TARGETS = ("scan", "task", "plant")
MISMATCH = "inverter.write_mismatch"
READ = ["inverter.setpoint", "inverter.enable", "safety.trip", "inverter.power", MISMATCH]


def wait_for(cond: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = cond()
        if got:
            return got
        time.sleep(0.05)  # poll interval
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def latched_on_disk(state_dir: Path) -> set[str]:
    """Trip codes under any ``latched`` list of state.json (whatever component keys it); the file must parse."""
    path = state_dir / "state.json"
    if not path.exists():
        return set()
    data = json.loads(path.read_text())  # a half-written file fails the test here
    codes: set[str] = set()

    def walk(x: Any) -> None:
        if isinstance(x, dict):
            for k, v in x.items():
                if k == "latched" and isinstance(v, list):
                    codes.update(str(e[0] if isinstance(e, list) else e.get("code")) for e in v)
                else:
                    walk(v)

    walk(data)
    return codes


def check_files(state_dir: Path) -> int:
    """Every file in state_dir is whole; returns the number of unterminated last lines seen (tolerated)."""
    tails = 0
    for f in sorted(state_dir.iterdir()):
        if f.is_socket() or f.suffix == ".tmp":  # a .tmp is the writer's scratch copy, renamed when whole
            continue
        text = f.read_text()
        if f.suffix == ".json":
            json.loads(text)
        elif f.suffix == ".jsonl":
            lines = text.split("\n")
            if lines[-1] != "":
                tails += 1
                lines = lines[:-1]
            for n, line in enumerate(lines, 1):
                assert line == "" or isinstance(json.loads(line), dict), f"{f}:{n} is not a JSON object"
    return tails


class Site:
    """One start of the site copy: the process tree and its control socket."""

    def __init__(self, site: Path, log: Path) -> None:
        self.sock = site.parent / "state" / "control.sock"
        self.proc = start_site(site, "--speed", str(SPEED), log=log)
        self.log = log

    def ask(self, request: dict[str, Any]) -> dict[str, Any] | None:
        try:
            return control_request(self.sock, request, timeout=5.0)
        except (OSError, ValueError):
            return None

    def read(self) -> dict[str, Any] | None:
        """Tag values, with the simulated time of the cycle; None while the scan has not run a cycle."""
        got = self.ask({"cmd": "read", "tags": READ})
        if not got or not got.get("tags"):
            return None
        status = self.ask({"cmd": "status"}) or {}
        vals = {n: t["value"] for n, t in got["tags"].items()}
        vals["_t"] = status.get("t")
        vals["_quality"] = {n: t["quality"] for n, t in got["tags"].items()}
        return vals

    def up(self, timeout: float = 90.0) -> dict[str, Any]:
        def ready() -> dict[str, Any] | None:
            if self.proc.poll() is not None:
                raise AssertionError(f"the site exited with {self.proc.returncode}: {self.log.read_text()[-3000:]}")
            return self.read()

        return wait_for(ready, timeout, "the first cycle of the restarted site")  # type: ignore[no-any-return]


def assert_safe(v: dict[str, Any], when: str) -> None:
    """Set point 0 and no permit: what a (re)start owes until enter service, and what a trip owes."""
    assert v["inverter.setpoint"] == 0.0, f"{when}: set point {v['inverter.setpoint']}"
    assert v["inverter.enable"] is False, f"{when}: permit given ({v})"


def assert_no_export(v: dict[str, Any], when: str) -> None:
    """Inside the enter-service delay: no discharge (IEEE 1547 enter service; charging is a load the site may
    take, e.g. the departure charge without a plan), and safe outright while a trip is active."""
    assert v["inverter.setpoint"] >= 0.0, f"{when}: discharge {v['inverter.setpoint']} W inside enter service"
    if v["safety.trip"]:
        assert_safe(v, f"{when} (tripped)")


def make_site(tmp: Path) -> Path:
    def edit(site: dict[str, Any]) -> None:
        safety = site["safety"][0]["params"]
        safety["trust_forced_inputs"] = True  # commissioning: a forced read-back mismatch is evidence
        site["commissioning"] = True  # forces are accepted only while commissioning

    return copy_bundled_site(tmp, edit=edit)


def new_task_process(s: Site, old: int) -> bool:
    p = processes(s.proc.pid).get("task")
    return p is not None and p != old


def tripped_without_plant(s: Site) -> dict[str, Any] | None:
    r = s.read()
    return r if r and r["safety.trip"] and r["_quality"]["inverter.power"] != "good" else None


def one_kill(i: int, rng: random.Random, site: Path, log: Path) -> dict[str, Any]:
    """Start the site, check the restart, act, kill one process at a random moment, stop; what happened."""
    state_dir = site.parent / "state"
    on_disk = latched_on_disk(state_dir)
    s = Site(site, log)
    try:
        first = s.up()
        assert_no_export(first, f"kill {i}: first cycle after the restart")
        if on_disk:  # a trip latched before the kill: back at once, and with it the safe state
            assert first["safety.trip"] in on_disk, f"kill {i}: {on_disk} on disk, trip is {first['safety.trip']!r}"
            assert_safe(first, f"kill {i}: first cycle after the restart, tripped")
        # something for the kill to interrupt: latch the operator trip, or clear it, or neither
        action = rng.choice(["latch", "clear", "none"])
        if action == "latch":
            s.ask({"cmd": "force", "tag": MISMATCH, "value": True})
        elif action == "clear":
            s.ask({"cmd": "force", "tag": MISMATCH, "value": False})
            s.ask({"cmd": "reset_trip", "by": "kill loop"})
        target = rng.choice(TARGETS)
        deadline = time.monotonic() + rng.uniform(0.0, 2.5)
        while time.monotonic() < deadline:
            v = s.read()
            if v is not None:
                assert v["_t"] is None or v["_t"] < ES_DELAY_S, "the iteration outlived the enter-service delay"
                assert_no_export(v, f"kill {i}: before the kill")
        persisted = latched_on_disk(state_dir)  # what the kill must not lose
        pids = processes(s.proc.pid)
        assert target in pids, f"kill {i}: no {target} process among {pids}"
        os.kill(pids[target], signal.SIGKILL)

        if target == "scan":
            s.proc.wait(timeout=10)
            others = [p for r, p in pids.items() if r != "scan"]
            wait_for(
                lambda: not any(_alive(p) for p in others), 20, f"kill {i}: the killed scan process's children to exit"
            )
        elif target == "task":
            old = pids["task"]
            wait_for(lambda: new_task_process(s, old), 60, f"kill {i}: the scan process to restart its task process")
            v = wait_for(s.read, 10, "an answer after the task restart")
            assert_no_export(v, f"kill {i}: after the task restart")
        else:  # plant: every field device is gone; the scan carries on and trips
            v = wait_for(lambda: tripped_without_plant(s), 30, f"kill {i}: bad tags and a trip without the plant")
            assert_safe(v, f"kill {i}: after the plant died")
        if s.proc.poll() is None:
            s.proc.send_signal(signal.SIGTERM)
            assert s.proc.wait(timeout=30) == 0, f"kill {i}: clean stop failed: {log.read_text()[-3000:]}"
    finally:
        kill_tree(s.proc)
    tails = check_files(state_dir)
    after = latched_on_disk(state_dir)
    kept = persisted - ({"write_mismatch"} if action == "clear" else set())
    assert kept <= after, f"kill {i} ({target}, {action}): {kept - after} latched on disk before, gone after"
    return {"target": target, "action": action, "restored": first["safety.trip"] if on_disk else "", "tails": tails}


@pytest.mark.timeout(3000)
def test_kill_9_at_random_moments_restarts_safe_with_trips_latched_and_files_whole(tmp_path: Path) -> None:
    seed = int(os.environ.get("V2G_KILL_SEED", str(random.SystemRandom().randrange(2**32))))
    rng = random.Random(seed)
    print(f"kill loop: {KILLS} kills, seed {seed} (V2G_KILL_SEED={seed} repeats it)")
    site = make_site(tmp_path / "site")
    t0 = time.monotonic()
    runs = [one_kill(i, rng, site, tmp_path / "run.log") for i in range(KILLS)]
    kills = Counter(r["target"] for r in runs)
    restored = Counter(r["restored"] for r in runs if r["restored"])
    print(
        f"kill loop: {len(runs)} kills {dict(kills)} in {time.monotonic() - t0:.0f} s; restarts with a restored "
        f"trip {dict(restored)}; unterminated event-log tails {sum(r['tails'] for r in runs)}"
    )
    assert len(runs) == KILLS
    if KILLS >= 30:  # at random, but every process and a restored trip at least once in 30
        assert set(kills) == set(TARGETS) and restored, (kills, restored)


def _alive(pid: int) -> bool:
    """A process that exists and is not a zombie waiting for its (dead) parent's reaper."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_kill_loop_helpers_see_a_half_written_file(tmp_path: Path) -> None:
    """The checks of the loop are real: a truncated state file and a broken middle log line fail them."""
    (tmp_path / "state.json").write_text('{"safety": {"latched": [["write_mis')
    with pytest.raises(ValueError):
        latched_on_disk(tmp_path)
    (tmp_path / "state.json").write_text('{"safety": {"latched": [["write_mismatch", "why"]]}}')
    assert latched_on_disk(tmp_path) == {"write_mismatch"}
    (tmp_path / "events.jsonl").write_text('{"k": 1}\n{"k": 2}\n{"k": 3, "mess')
    assert check_files(tmp_path) == 1  # an unterminated tail is tolerated, and counted
    (tmp_path / "events.jsonl").write_text('{"k": 1}\n{"k": 2, "mess\n{"k": 3}\n')
    with pytest.raises(ValueError):
        check_files(tmp_path)
