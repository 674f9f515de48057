"""The bridge's per-session EV data, in the SECC's own interpreter (it imports the `iso15118` package).

The package's EV data context defaults its limits to one instance shared by every context (a default
argument evaluated once): a context made for a new session carried the last EV's power limits. The
bridge's SessionData makes its own (docs/iso15118.md "Setting it up")."""

from __future__ import annotations

import subprocess

from tests.peers import require
from tests.secc import netns

PROBE = """
import sys
from iso15118.secc.controller.ev_data import EVDataContext
import bridge

old = bridge.SessionData()
old.rated_limits.dc_limits.max_discharge_power = 11000.0
old.session_limits.ac_limits.max_charge_power = 7000.0
new = bridge.SessionData()
shared = EVDataContext().rated_limits is EVDataContext().rated_limits  # the package's own, for contrast
print(new.rated_limits.dc_limits.max_discharge_power, new.session_limits.ac_limits.max_charge_power, shared)
"""


def test_a_new_session_starts_without_the_last_evs_limits() -> None:
    require("the SECC virtualenv", netns.DEFAULT_PYTHON.exists(), netns.SECC_VENV)
    out = subprocess.run(
        [str(netns.DEFAULT_PYTHON), "-c", PROBE],
        cwd=netns.BRIDGE.parent,  # the bridge imports its neighbour failures.py as a script does
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ["None", "None", "True"]
