"""The `iso15118` package's EV simulator with message timeouts stretched (run with .venv-secc's python).

Why: the EV waits 0.5 s for a -20 charge loop answer (the package's Timeouts, as ISO 15118-20 sets it).
The tests prove behaviour, not timing: on a 2-core machine that runs other suites beside them, an answer
can be late without anything being wrong. How fast the SECC answers is measured in BENCHMARKS.md
("ISO 15118"), with the unmodified EV. Usage: python patient_ev.py FACTOR EV_CONFIG.json
"""

import asyncio
import sys
from enum import Enum

import iso15118.evcc.states.din_spec_states as din
import iso15118.evcc.states.evcc_state as base
import iso15118.evcc.states.iso15118_2_states as v2
import iso15118.evcc.states.iso15118_20_states as v20
import iso15118.evcc.states.sap_states as sap
from iso15118.evcc import main as ev_main


def stretched(enum: type, factor: float) -> type:
    # __members__, not iteration: members with equal values are aliases, and iteration skips them
    return Enum(enum.__name__, {n: float(m.value) * factor for n, m in enum.__members__.items()}, type=float)  # type: ignore[misc]


if __name__ == "__main__":
    factor = float(sys.argv.pop(1))
    for mod in (din, base, v2, v20, sap):
        mod.Timeouts = stretched(mod.Timeouts, factor)
    sys.exit(asyncio.run(ev_main.main()))
