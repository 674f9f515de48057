"""Depot site files for tests: N EVSEs from one template, a site meter, the allocator and the connection
interlock. Ports come from tests/ports.py; building a site opens none of them."""

from __future__ import annotations

from pathlib import Path

from tests.ports import free_ports

TEMPLATE = """\
site: {{name: test-depot, nominal_voltage: 240.0, nominal_frequency: 60}}
scan: {{period_ms: {period_ms}}}
devices:
  - name: meter
    type: modbus_tcp
    params: {{host: 127.0.0.1, port: {meter_port}, units: [{{unit: 1, map: site_meter_tcp}}]}}
evses:
  template:
    devices:
      - name: charger
        type: modbus_tcp
        params: {{host: 127.0.0.1, port: {charger_port}, units: [{{unit: "${{id}}", map: sunspec_der_inverter}}]}}
      - name: modem
        type: modbus_tcp
        params: {{host: 127.0.0.1, port: {charger_port}, units: [{{unit: "${{id}}", map: plc_modem}}]}}
    programs:
      - type: modes
        name: modes
        params: {{plan_tag: null, reserve_tag: null, fallback_soc: 0.9, fallback_charge_w: 11000}}
      - type: dispatch
        name: dispatch
        params: {{plan_power_tag: null, plan_soc_tag: null, plan_end_tag: null, plan_price_tag: null,
                 max_charge_w: 11000, max_discharge_w: 11000, ramp_w_per_s: 1000000}}
    safety:
      # PCC protection: every EVSE's IEEE 1547 trips read the site meter at the point of common coupling;
      # charging too returns along the enter-service ramp, so 20 chargers never step onto the service at once.
      - type: v2g_safety
        name: safety
        params:
          category: III
          rated_charge_w: 11000
          rated_discharge_w: 11000
          tags: {{voltage: meter.voltage, frequency: meter.frequency}}
          thermal: {{tag: null}}
          enter_service: {{delay_s: {es_delay_s}, ramp_s: {es_ramp_s}, gate_charging: true}}
          comms: {{required_tags: [meter.voltage, meter.frequency, inverter.power, meter.power]}}
  each: [{each}]
programs:
  - type: allocator
    name: allocator
    params: {{import_limit_w: {import_w}, export_limit_w: {export_w}}}
safety:
  - type: connection_limit
    name: connection
    params: {{import_limit_w: {import_w}, export_limit_w: {export_w}}}
state_dir: {state_dir}
"""


def depot_site(
    tmp: Path,
    n: int = 3,
    *,
    import_w: float = 30_000,
    export_w: float = 20_000,
    period_ms: int = 100,
    es_delay_s: float = 1.0,
    es_ramp_s: float = 2.0,
) -> Path:
    meter_port, charger_port = free_ports(2)
    text = TEMPLATE.format(
        period_ms=period_ms,
        meter_port=meter_port,
        charger_port=charger_port,
        each=", ".join(f"{{id: {i}}}" for i in range(1, n + 1)),
        import_w=import_w,
        export_w=export_w,
        es_delay_s=es_delay_s,
        es_ramp_s=es_ramp_s,
        state_dir=tmp / "var",
    )
    path = tmp / "depot.yaml"
    path.write_text(text)
    return path
