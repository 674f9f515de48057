"""End to end through the real runtime: `v2g-plc run` with the SunSpec server and the metrics endpoint as
tasks in the task process, serving the image the scan publishes; a pysunspec2 client and an HTTP scrape
read it while the scan runs."""

from __future__ import annotations

import signal
import urllib.request
from pathlib import Path

import pytest
import sunspec2.modbus.client as ssc
from prometheus_client.parser import text_string_to_metric_families

from tests.ports import free_ports
from tests.runtime.helpers import start_cli, wait_for, write_site

TASKS = """\
task_process:
  heartbeat_s: 1.0
tasks:
  - type: localapi_modbus
    name: modbus
    params:
      port: {modbus}
      allow: [{{address: 127.0.0.1, role: read_only}}]
      max_charge_w: 11000
      max_discharge_w: 11000
  - type: localapi_metrics
    name: metrics
    params: {{port: {metrics}, tags: [grid.voltage, ev.soc]}}
"""


def _sunspec(port: int) -> tuple[float, float] | None:
    d = ssc.SunSpecModbusClientDeviceTCP(slave_id=1, ipaddr="127.0.0.1", ipport=port, timeout=2)
    try:
        d.scan()
        v, soc = d.models[701][0].LLV.cvalue, d.models[713][0].SoC.cvalue
        return (v, soc) if v is not None and soc is not None else None
    except Exception:
        return None  # not listening yet, or the first image not published yet
    finally:
        d.close()


def _metrics(port: int) -> dict[str, float] | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as r:
            text = r.read().decode()
    except OSError:
        return None
    out: dict[str, float] = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[s.name + "".join(f",{k}={v}" for k, v in sorted(s.labels.items()))] = s.value
    return out if out.get("v2g_plc_tag_value,tag=grid.voltage") else None


@pytest.mark.slow
def test_live_site_serves_the_published_image(tmp_path: Path) -> None:
    modbus, metrics = free_ports(2)
    site = write_site(tmp_path, extra=TASKS.format(modbus=modbus, metrics=metrics))
    proc = start_cli("run", str(site), "--for", "60")
    try:
        v, soc = wait_for(lambda: _sunspec(modbus), timeout=40, what="the SunSpec server to serve the site")
        assert v == 240.0 and soc == 50.0  # the memory device's grid.voltage and ev.soc (0.5)
        m = wait_for(lambda: _metrics(metrics), timeout=20, what="the metrics endpoint")
        assert m["v2g_plc_tag_value,tag=grid.voltage"] == 240.0
        assert m["v2g_plc_scan_lateness_seconds_count"] > 0 and m["v2g_plc_cycles_total"] > 0
        assert proc.poll() is None
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        try:
            _, err = proc.communicate(timeout=20)
        except Exception:
            proc.kill()
            _, err = proc.communicate()
        print(err[-4000:])
