"""`check` refuses what `run` would refuse before its first cycle: the same build, no process, no network.

Each case here passed `check` before (exit 0) while `run` failed on it, or ran without something the
site asked for. Now both exit 2 naming file, line and key, and nothing starts.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from runtime.yamlload import dotted
from tests.contract.sitedata import Key, bundled_here, line_of_key, set_at, write
from tests.runtime.helpers import cli

Edit = Callable[[dict[str, Any], Path], Key]


def _price_file(data: dict[str, Any], tmp: Path) -> Key:
    set_at(data, ("tasks", 0, "params", "path"), str(tmp / "prices" / "absent.csv"))
    return ("tasks", 0, "params", "path")


def _plant_map(data: dict[str, Any], tmp: Path) -> Key:
    data["plant"]["params"]["devices"][1]["map"] = "no_such_map"
    return ("plant",)


def _plant_scenario(data: dict[str, Any], tmp: Path) -> Key:
    data["plant"]["params"]["scenario"] = str(tmp / "absent_scenario.yaml")
    return ("plant", "params", "scenario")


def _socket_path(data: dict[str, Any], tmp: Path) -> Key:
    data["control_socket"] = str(tmp / ("s" * 120) / "control.sock")
    return ("control_socket",)


def _watchdog_device(data: dict[str, Any], tmp: Path) -> Key:
    data["watchdog"] = {"systemd": False, "hardware": {"device": str(tmp / "no_watchdog"), "timeout_s": 4}}
    return ("watchdog", "hardware", "device")


# (id, edit returning the key the error names, words of the message, what run did before)
CASES: list[tuple[str, Edit, str]] = [
    ("missing_price_file", _price_file, "No such file"),  # run: the task logged, prices never came
    ("plant_device_without_map", _plant_map, "no_such_map"),  # run: exit 1 after starting the plant
    ("missing_plant_scenario", _plant_scenario, "absent_scenario.yaml"),  # run: exit 1, plant process died
    ("control_socket_path_too_long", _socket_path, "longer than 107 bytes"),  # run: no control socket, silently
    ("watchdog_device_missing", _watchdog_device, "no_watchdog"),  # run: exit 2, after starting I/O and tasks
]


@pytest.mark.slow
@pytest.mark.parametrize(("name", "edit", "words"), CASES, ids=[c[0] for c in CASES])
def test_check_refuses_what_run_refuses(tmp_path: Path, name: str, edit: Edit, words: str) -> None:
    data = bundled_here(tmp_path)
    key = edit(data, tmp_path)
    site = write(tmp_path, data)
    text = site.read_text()
    for args in (("check", str(site)), ("run", str(site), "--for", "2")):
        res = cli(*args)
        assert res.returncode == 2, f"{args[0]}: {res.stderr[-2000:]}"
        assert "Traceback" not in res.stderr
        assert words in res.stderr, res.stderr
        if key != ("plant",):  # the plant's own errors name the plant's file and key
            assert f"{site}:{line_of_key(text, key)}: {dotted(key)}: " in res.stderr
    assert not (tmp_path / "var").exists(), "run started something"


def test_run_without_the_plant_does_not_need_it(tmp_path: Path) -> None:
    """`--no-plant` runs against other devices: a plant it will not start is no reason to refuse."""
    data = bundled_here(tmp_path)
    _plant_map(data, tmp_path)
    site = write(tmp_path, data)
    res = cli("run", str(site), "--no-plant", "--for", "1")
    assert res.returncode == 0, res.stderr[-2000:]


def test_check_refuses_unreadable_persisted_state(tmp_path: Path) -> None:
    """`run` refuses to start over a state file it cannot read (it may hold a latched trip): so does check."""
    site = write(tmp_path, bundled_here(tmp_path))
    (tmp_path / "var").mkdir()
    (tmp_path / "var" / "state.json").write_text('{"safety": {"latched": [["write_mis')
    res = cli("check", str(site))
    assert res.returncode == 2 and "state.json is unreadable" in res.stderr, res.stderr
    assert "Traceback" not in res.stderr


def test_the_bundled_site_checks(tmp_path: Path) -> None:
    res = cli("check", str(write(tmp_path, bundled_here(tmp_path))))
    assert res.returncode == 0, res.stderr
    assert "ok (" in res.stdout
