"""Scan lateness of the bundled site with the local API under load and without, each beside a bare loop (issue 10).

    python -m tests.bench.bench_localapi_lateness [--seconds 60] [--rounds 2] [--no-amqp] [--json FILE]

The method is tests/bench/bench_ocpp_lateness.py's (its ``run_beside_bare``: the bundled site on free ports
in real time with ``--record``, a bare absolute-deadline loop in a process of its own for the same minute,
variants alternating round by round). "load" runs: a pymodbus client reads the SunSpec 701 block from the
site's localapi_modbus server 10 times a second (its request latency is measured), the localapi_mqtt task
publishes to a private mosquitto at its fastest (``interval_s`` 1: 1 message/s per changing tag) and the
localapi_amqp task publishes telemetry every second to a private RabbitMQ. "quiet" runs: the same site, no
client, no brokers, the bus tasks removed. The machine is shared: compare ratios runtime/bare, not figures.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import yaml
from pymodbus.client import ModbusTcpClient

from tests.bench.bench_ocpp_lateness import alternate, bare_summary, run_beside_bare, summary
from tests.bench.bench_scan import pct
from tests.localapi.conftest import Mosquitto, RabbitMQ
from tests.runtime.helpers import bundled_site_copy

BLOCK_701 = 40070  # model 701's header: after "SunS" (40000-40001) and model 1 (2 + 66 registers)
BLOCK_LEN = 100  # the 701 block as tests/localapi/bench_modbus_server.py reads it (<= 125 per request)
POLL_S = 0.1  # the EMS's poll period: 10 requests a second


class Poller(threading.Thread):
    """An EMS polling the 701 block at a fixed rate (absolute deadlines) for ``seconds``, the bare loop's
    window (polls past it would meet the runtime's shutdown); request latency in ms."""

    def __init__(self, port: int, seconds: float) -> None:
        super().__init__(daemon=True)
        self.port = port
        self.seconds = seconds
        self.stop = threading.Event()
        self.lat_ms: list[float] = []
        self.errors = 0
        self.last_error = ""

    def run(self) -> None:
        client = ModbusTcpClient("127.0.0.1", port=self.port, timeout=2, retries=0)
        end = time.monotonic() + self.seconds  # the window starts with the bare loop, readiness included
        ready_by = time.monotonic() + 30  # the task process may start its server after the scan's warm-up
        while not client.connect() and time.monotonic() < ready_by and not self.stop.is_set():
            self.stop.wait(0.1)  # readiness poll, bounded
        nxt = time.monotonic()
        try:
            while not self.stop.is_set() and time.monotonic() < end:
                if not client.connect():  # a no-op while connected; after a lost link, the EMS reconnects
                    self.errors += 1
                    self.last_error = "connect failed"
                else:
                    t0 = time.perf_counter()
                    try:
                        rr = client.read_holding_registers(BLOCK_701, count=BLOCK_LEN, device_id=1)
                        ok = not rr.isError()
                        if not ok:
                            self.last_error = str(rr)
                    except Exception as exc:  # the link's failure is counted, the EMS goes on polling
                        ok = False
                        self.last_error = f"{type(exc).__name__}: {exc}"
                    if ok:
                        self.lat_ms.append((time.perf_counter() - t0) * 1e3)
                    else:
                        self.errors += 1
                nxt += POLL_S
                self.stop.wait(max(0.0, nxt - time.monotonic()))  # the poll rate's pacing
        finally:
            client.close()


def site_for(tmp: Path, load: bool, mqtt_port: int | None, amqp_url: str | None) -> tuple[Path, dict[str, Any]]:
    """The bundled site's copy with the bus tasks publishing every second to the brokers, or without them."""
    path = bundled_site_copy(tmp)
    site = yaml.safe_load(path.read_text())
    site["tasks"] = [t for t in site["tasks"] if t["type"] not in ("localapi_mqtt", "localapi_amqp")]
    if load and mqtt_port is not None:
        site["tasks"].append(
            {
                "type": "localapi_mqtt",
                "name": "mqtt",
                "params": {"host": "127.0.0.1", "port": mqtt_port, "interval_s": 1.0},
            }
        )
    if load and amqp_url is not None:
        site["tasks"].append(
            {
                "type": "localapi_amqp",
                "name": "amqp",
                "params": {"url": amqp_url, "interval_s": 1.0, "state_dir": str(tmp / "var" / "localapi")},
            }
        )
    path.write_text(yaml.safe_dump(site, sort_keys=False))
    return path, site


def one_run(tmp: Path, load: bool, seconds: float, amqp: bool) -> dict[str, Any]:
    brokers: list[Mosquitto | RabbitMQ] = []
    poller: Poller | None = None
    sub: mqtt.Client | None = None
    per_topic: Counter[str] = Counter()
    try:
        mqtt_port = amqp_url = None
        if load:
            (tmp / "mqtt").mkdir()
            mosq = Mosquitto(tmp / "mqtt")
            mosq.start()
            brokers.append(mosq)
            mqtt_port = mosq.port
            if amqp:
                (tmp / "amqp").mkdir()
                rabbit = RabbitMQ(tmp / "amqp")
                t0 = time.monotonic()
                rabbit.start()
                brokers.append(rabbit)
                amqp_url = rabbit.url
                print(f"RabbitMQ up in {time.monotonic() - t0:.1f} s", file=sys.stderr, flush=True)
        site, conf = site_for(tmp, load, mqtt_port, amqp_url)
        if load:
            port = next(t["params"]["port"] for t in conf["tasks"] if t["type"] == "localapi_modbus")
            poller = Poller(port, seconds)

        def beside() -> None:
            nonlocal sub
            if poller is not None:
                poller.start()
            if mqtt_port is not None:  # a subscriber counts what the MQTT task publishes in the window
                sub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
                sub.on_message = lambda _c, _u, msg: per_topic.update([msg.topic])
                sub.on_connect = lambda c, *_: c.subscribe("#")
                sub.connect("127.0.0.1", mqtt_port)
                sub.loop_start()

        late_ms, bare_out, err = run_beside_bare(tmp, site, conf, seconds, beside if load else None)
    finally:
        if sub is not None:
            sub.disconnect()
            sub.loop_stop()
        if poller is not None and poller.is_alive():
            poller.stop.set()
            poller.join(timeout=10)
        for b in reversed(brokers):
            b.stop()
    period_ms = float(conf["scan"]["period_ms"])
    rt_sum = summary(late_ms)
    res: dict[str, Any] = {
        "variant": "load" if load else "quiet",
        "period_ms": period_ms,
        "runtime": rt_sum,
        "overruns": sum(1 for x in late_ms if x > period_ms),
        "bare": bare_summary(bare_out),
        "p99_ratio": round(rt_sum["p99_ms"] / bare_out["p99"], 2) if bare_out["p99"] > 0 else None,
        "mqtt_connected": "MQTT connected" in err if load else None,
        "amqp_connected": ("AMQP connected" in err) if load and amqp else None,
    }
    if sub is not None:
        state = {t: n for t, n in per_topic.items() if "/state/" in t}
        # each topic's first message is its retained copy, delivered on subscribe
        res["mqtt"] = {
            "state_topics": len(state),
            "state_msgs_per_s": round(sum(n - 1 for n in state.values()) / seconds, 2),
            "max_per_tag_per_s": round(max((n - 1 for n in state.values()), default=0) / seconds, 2),
        }
    if poller is not None:
        lat = poller.lat_ms
        res["modbus"] = {
            "requests": len(lat),
            "errors": poller.errors,
            "last_error": poller.last_error,
            "p50_ms": round(pct(lat, 0.5), 3),
            "p99_ms": round(pct(lat, 0.99), 3),
            "max_ms": round(max(lat, default=float("nan")), 3),
        }
    return res


def measure(seconds: float, rounds: int, amqp: bool) -> list[dict[str, Any]]:
    return alternate(rounds, lambda tmp, load: one_run(tmp, load, seconds, amqp))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tests.bench.bench_localapi_lateness")
    ap.add_argument("--seconds", type=float, default=60.0, help="measured seconds per run")
    ap.add_argument("--rounds", type=int, default=2, help="rounds of one run per variant")
    ap.add_argument("--no-amqp", action="store_true", help="load without RabbitMQ (where it cannot start)")
    ap.add_argument("--json", type=Path)
    a = ap.parse_args(argv)
    runs = measure(a.seconds, a.rounds, not a.no_amqp)
    print("variant | runtime p50 / p99 / max ms | overruns | bare p50 / p99 / max ms | p99 ratio | Modbus p50 / p99 ms")
    for r in runs:
        rs, b, m = r["runtime"], r["bare"], r.get("modbus")
        mb = f"{m['p50_ms']} / {m['p99_ms']} ({m['requests']} req, {m['errors']} err)" if m else "-"
        print(
            f"{r['variant']} | {rs['p50_ms']} / {rs['p99_ms']} / {rs['max_ms']} | {r['overruns']} | "
            f"{b['p50_ms']} / {b['p99_ms']} / {b['max_ms']} | {r['p99_ratio']} | {mb}"
        )
    if a.json:
        a.json.write_text(json.dumps(runs, indent=1) + "\n")
    ok = all(r["mqtt_connected"] is not False and r["amqp_connected"] is not False for r in runs)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
