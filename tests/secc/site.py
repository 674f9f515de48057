"""A site whose only field device besides memory is the SECC: the set point comes from a memory input,
and a test trips it by forcing the trip output the ``secc_link`` interlock reads (commissioning)."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

from tests.secc.netns import Pair

SITE = """\
site:
  name: secc-test
  nominal_voltage: 240.0
  nominal_frequency: 60
scan:
  period_ms: 20
  overrun_fault_after: 50
commissioning: true
state_dir: {tmp}/var
control_socket: {tmp}/control.sock
devices:
  - name: dev
    type: memory
    params:
      poll_s: 0.05
      tags:
        - {{name: test.request_w, unit: W, value: {request_w}, stale_after_s: 1.0}}
        - {{name: inverter.setpoint, unit: W, direction: output, value: 0.0}}
        - {{name: inverter.enable, type: bool, direction: output, value: true}}
        - {{name: test.trip, type: str, direction: output, value: ""}}
        - {{name: test.limit_charge, unit: W, direction: output, value: 11000.0}}
        - {{name: test.limit_discharge, unit: W, direction: output, value: 11000.0}}
        - {{name: test.reason, type: str, direction: output, value: ""}}
{hook_tags}  - name: secc
    type: secc
    params:
      iface: {iface}
      netns: {netns}
      protocols: {protocols}
{tls}
      log_file: secc.log
      log_messages: true
      heartbeat_s: {heartbeat_s}
      backoff_s: 0.5
programs:
  - type: example_copy
    name: request
    params: {{source: test.request_w, target: inverter.setpoint, declare_target: false}}
safety:
  - type: ev_limits
    name: ev_limits
    params: {{reason_tag: test.reason}}
  - type: secc_link
    name: secc_link
    params: {{trip_tag: test.trip, limit_charge_tag: test.limit_charge, limit_discharge_tag: test.limit_discharge{hook_params}}}
"""


PROTOCOLS = ["ISO_15118_20_DC", "ISO_15118_20_AC", "ISO_15118_2", "DIN_SPEC_70121"]


def write(
    tmp: Path,
    pair: Pair,
    *,
    request_w: float = -7000.0,
    heartbeat_s: float = 3.0,
    protocols: list[str] | None = None,
    pki: Path | None = None,
    charger: dict[str, object] | None = None,
) -> Path:
    """The site file in ``tmp``; TLS on with the PKI at ``pki``, else off (the site says so). With
    ``charger`` ({"contactor_closed": bool, "isolation": str, "cp_state": str}), memory inputs
    ``test.<key>`` stand for the charger map's points and ``secc_link`` hands them to the SECC's hooks
    (a test forces them); without, the SECC keeps the package's simulated answers."""
    path = tmp / "site.yaml"
    tls = f"      tls: true\n      pki_path: {pki}" if pki else "      tls: false"
    hook_tags = hook_params = ""
    for key, value in (charger or {}).items():
        kind = "bool" if isinstance(value, bool) else "str"
        hook_tags += f"        - {{name: test.{key}, type: {kind}, value: {json.dumps(value)}}}\n"
        hook_params += f", {key.removesuffix('_closed')}_tag: test.{key}"
    text = SITE.format(
        tmp=tmp,
        iface=pair.secc_if,
        netns=pair.secc_ns,
        request_w=request_w,
        heartbeat_s=heartbeat_s,
        protocols=json.dumps(protocols or PROTOCOLS),
        tls=tls,
        hook_tags=hook_tags,
        hook_params=hook_params,
    )
    path.write_text(textwrap.dedent(text))
    return path
