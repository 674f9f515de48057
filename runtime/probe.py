"""``v2g-plc probe HOST[:PORT] --map MAP [--unit N | --serial DEV]``: the commissioning tool.

Reads one device once through the same driver, map and codec the runtime uses, and prints every tag with
its quality, so that "the meter says 0x02 at 40123" is found on the bench, not in the field.
Exit status: 0 all tags good, 1 some tags bad, 2 configuration error, 3 no connection.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
from pathlib import Path
from typing import Any

from runtime.yamlload import ConfigError


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="v2g-plc probe", description="read one Modbus device and print its tags")
    ap.add_argument("target", nargs="?", help="HOST[:PORT] of a Modbus TCP device (default port 502)")
    ap.add_argument("--map", required=True, help="I/O map file, or the name of a shipped map (io_maps/)")
    ap.add_argument("--unit", type=int, default=1, help="Modbus device id (default 1)")
    ap.add_argument("--serial", metavar="DEV", help="Modbus RTU on this serial device instead of TCP")
    ap.add_argument("--baud", type=int, default=9600)
    ap.add_argument("--parity", choices=["N", "E", "O"], default="E")
    ap.add_argument("--stopbits", type=int, choices=[1, 2], default=1)
    ap.add_argument("--timeout", type=float, default=1.0, help="response timeout, seconds")
    ap.add_argument("--prefix", default="", help="tag prefix, as in the site file")
    ap.add_argument("--json", action="store_true", help="print JSON instead of a table")
    ap.add_argument("-v", "--verbose", action="store_true", help="log every request problem")
    return ap


def _build(args: argparse.Namespace) -> Any:
    from runtime.api import SiteInfo
    from runtime.io.modbus_rtu import ModbusRtuDriver
    from runtime.io.modbus_tcp import ModbusTcpDriver

    site = SiteInfo("probe", 240.0, 60.0, 20_000, base_dir=Path.cwd())
    common = {
        "units": [{"map": args.map, "unit": args.unit, "prefix": args.prefix}],
        "timeout_s": args.timeout,
        "retries": 1,
    }
    if args.serial:
        rtu = ModbusRtuDriver.Params.model_validate(
            {**common, "port": args.serial, "baudrate": args.baud, "parity": args.parity, "stopbits": args.stopbits}
        )
        return ModbusRtuDriver("probe", rtu, site)
    host, _, port = args.target.rpartition(":") if ":" in args.target else (args.target, "", "502")
    tcp = ModbusTcpDriver.Params.model_validate({**common, "host": host, "port": int(port)})
    return ModbusTcpDriver("probe", tcp, site)


def cli(argv: list[str]) -> int:
    ap = _parser()
    args = ap.parse_args(argv)
    if bool(args.target) == bool(args.serial):
        ap.error("give HOST[:PORT] for Modbus TCP or --serial DEV for Modbus RTU (not both)")
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.ERROR, stream=sys.stderr, format="%(levelname)s %(message)s"
    )
    from runtime.io.driver import IOContext

    if args.verbose:
        logging.getLogger("pymodbus").setLevel(logging.INFO)

    try:
        drv = _build(args)
    except ConfigError as exc:
        print(str(exc), file=sys.stderr)
        return 2
    except (ValueError, TypeError) as exc:
        print(f"probe: {exc}", file=sys.stderr)
        return 2
    io = IOContext()
    ok = asyncio.run(drv.read_once(io))
    if not ok:
        print(f"probe: cannot connect to {drv.describe()}", file=sys.stderr)
        return 3
    latest = {u.name: u for u in io.drain()}
    rows = []
    for spec in drv.declare():
        if not spec.is_input:
            continue
        u = latest.get(spec.name)
        rows.append(
            {
                "tag": spec.name,
                "value": None if u is None else u.value,
                "quality": "bad" if u is None else u.quality.value,
                "unit": spec.unit,
            }
        )
    if args.json:
        print(json.dumps({"device": drv.describe(), "unit": args.unit, "tags": rows}, indent=1))
    else:
        print(f"# {drv.describe()} unit {args.unit}, map {args.map}")
        w = max(len(r["tag"]) for r in rows) if rows else 10
        for r in rows:
            v = r["value"]
            text = f"{v:.10g}" if isinstance(v, float) else repr(v) if isinstance(v, str) else str(v)
            print(f"{r['tag']:<{w}}  {text if r['quality'] == 'good' else '-':>16} {r['unit']:<5} {r['quality']}")
    return 0 if all(r["quality"] == "good" for r in rows) else 1


if __name__ == "__main__":
    sys.exit(cli(sys.argv[1:]))
