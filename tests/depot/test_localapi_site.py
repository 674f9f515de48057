"""The example depot's local API as the site file builds it: the Modbus task serves the site unit and one
unit per EVSE and owns the connection-limit tags; a unit numbering that overlaps, or two interfaces that
both carry the connection limits, is refused with the file, line and key."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from runtime.site import build_site
from runtime.tasks.localapi.connection import EXPORT_TAG, IMPORT_TAG
from runtime.tasks.localapi.modbus_server import ModbusServer
from runtime.yamlload import ConfigError
from tests.depot.test_day import DEPOT


def _copy(tmp: Path, text: str) -> Path:
    """The example's folder (the files its site names: maps, prices, secrets) with ``text`` as its site file."""
    shutil.copytree(DEPOT.parent, tmp, dirs_exist_ok=True, ignore=shutil.ignore_patterns("var"))  # not a run's state
    site = tmp / "depot.yaml"
    site.write_text(text)
    return site


def test_the_example_depot_serves_the_site_and_every_evse_and_owns_the_limits() -> None:
    built = build_site(DEPOT)
    [api] = [t for t in built.tasks if isinstance(t, ModbusServer)]
    assert api.params.evses == list(range(1, 21))  # filled from evses:
    assert api.params.evse_units() == {n: n + 1 for n in range(1, 21)}
    assert built.tags.owners[IMPORT_TAG] == built.tags.owners[EXPORT_TAG]
    assert "modbus_api" in built.tags.owners[IMPORT_TAG]
    assert api.connection is not None and api.connection.rating == (100_000.0, 60_000.0)


def test_an_overlapping_unit_is_refused_with_file_line_and_key(tmp_path: Path) -> None:
    text = DEPOT.read_text().replace("      port: 15610\n", "      port: 15610\n      site_unit: 5\n", 1)
    site = _copy(tmp_path, text)
    with pytest.raises(ConfigError) as err:
        build_site(site)
    [issue] = err.value.issues
    lines = text.splitlines()
    params = lines.index("      site_unit: 5") - 2  # the task's "params:" line (0-based), above port
    assert lines[params] == "    params:" and issue.line == params + 1
    assert issue.file == str(site) and issue.key.startswith("tasks[") and issue.key.endswith("].params")
    assert "site_unit 5 is EVSE 4's unit" in issue.message


def test_two_interfaces_carrying_the_limits_are_refused(tmp_path: Path) -> None:
    text = DEPOT.read_text()
    block = re.search(r"  - type: localapi_modbus\n(?:      .*\n|    .*\n)+", text)
    assert block is not None
    second = block.group(0).replace("name: modbus_api", "name: modbus_api2").replace("15610", "15612")
    site = _copy(tmp_path, text.replace(block.group(0), block.group(0) + second, 1))
    with pytest.raises(ConfigError, match=IMPORT_TAG.replace(".", r"\.")) as err:
        build_site(site)
    assert "modbus_api" in str(err.value) and "modbus_api2" in str(err.value)
