"""Each read is judged once per cycle (``_Evidence``); a tag named by a setting but outside the judged reads
is still read as through ``_val``, on first use. Here the mode tag, which a site without external modes
leaves unread, is also the back office's link flag in ``comms.external_tags``: its value decides."""

from __future__ import annotations

import pytest

from runtime.api import SiteInfo
from tests.safety.rig import Memory, Rig

LINK = "backoffice.link"


@pytest.mark.parametrize("request_w", [-5000.0, 0.0, 5000.0])
def test_a_tag_outside_the_judged_reads_is_read_as_evidence(request_w: float) -> None:
    mem = Memory(SiteInfo("rig", 240.0, 60, 20_000), {LINK: True})
    rig = Rig(programs=[mem], comms={"mode_tag": LINK, "external_tags": [LINK]})
    assert LINK not in rig.safety.reads  # no external modes: the mode is not judged
    rig.req.setpoint = request_w
    rig.settle()
    assert rig.out["safety.external_ok"] is True
    mem.values[LINK] = False  # the link flag says the back office is down
    rig.run(0.1)
    assert rig.out["safety.external_ok"] is False
    assert rig.out["inverter.setpoint"] == request_w  # no external mode runs: nothing else changes
