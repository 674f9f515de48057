"""`make run-ev`: the bundled site with an SECC and the `iso15118` package's EV simulator, over ISO 15118-20.

The bundled site (as `make run` runs it, on free ports so that both can run at once) gains what a site
with an SECC has (docs/iso15118.md "Site file"): the `secc` device on one end of a veth pair in its own
network namespace, `ev_source` reading the EV's data from it (the inverter map's SoC renamed away: one
writer of ``ev.soc``), dispatch and ``ev_limits`` on the EV's own limits, the handshake timeouts in the
PLC-link supervision, and `secc_link` last under `safety:`. The EV simulator runs on the other end, one
-20 DC BPT session after another once the SECC listens, until Ctrl-C. TLS is off because this site file says so (``tls:
false``): a demo has no PKI. Root is needed for the namespaces.

    .venv/bin/python -m tests.secc.run_ev [--speed 1] [--config "-20 DC BPT"] [--dir var/run-ev] [--patience 10]
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import yaml

from runtime.iothread import control_request
from tests.runtime.helpers import bundled_site_copy
from tests.secc import netns


def secc_site(folder: Path, pair: netns.Pair) -> Path:
    """The bundled site copied into ``folder`` with the SECC, the EV source and the link."""
    path = bundled_site_copy(folder)
    site: dict[str, Any] = yaml.safe_load(path.read_text())
    for dev in site["devices"]:
        if dev["name"] == "inverter":  # its SunSpec map also reads an EV SoC: ev_source writes ev.soc now
            dev["params"]["units"][0]["rename"] = {"ev.soc": "charger.ev_soc"}
    secc = {"iface": pair.secc_if, "netns": pair.secc_ns, "tls": False, "log_file": str(folder / "secc.log")}
    site["devices"].append({"name": "secc", "type": "secc", "params": secc})
    site["programs"].insert(0, {"type": "ev_source", "name": "ev", "params": {"source": "secc"}})
    for prog in site["programs"]:
        if prog["type"] == "dispatch":  # dispatch honours the EV's own power limits
            prog["params"] |= {"ev_max_charge_tag": "ev.max_charge_w", "ev_max_discharge_tag": "ev.max_discharge_w"}
    for lock in site["safety"]:
        if lock["type"] == "v2g_safety":  # handshakes timing out at a marginal SNR make the PLC link weak
            lock["params"].setdefault("comms", {})["handshake_timeouts_tag"] = "secc.handshake_timeouts"
    site["safety"] += [{"type": "ev_limits", "name": "ev_limits"}, {"type": "secc_link", "name": "secc_link"}]
    path.write_text(yaml.safe_dump(site, sort_keys=False))
    return path


EV_LIFE_S = 180.0  # an EV whose session failed can linger (the package's EV does not always exit): bounded


def secc_state(sock: Path) -> Any:
    """``secc.state`` of a running runtime, once it is good (None before)."""
    try:
        reply = control_request(sock, {"cmd": "read", "tags": ["secc.state"]}, timeout=5)
    except OSError:
        return None
    tag = reply.get("tags", {}).get("secc.state") or {}
    return tag.get("value") if tag.get("quality") == "good" else None


def wait_listening(sock: Path, stop: threading.Event, timeout_s: float = 300.0) -> bool:
    """Until the SECC listens (its codec warm-up takes seconds to a minute): an EV started earlier finds
    no SECC by SDP and gives up."""
    deadline = time.monotonic() + timeout_s
    while secc_state(sock) != "Idle":
        if stop.wait(0.5) or time.monotonic() > deadline:
            return False
    return True


def ev_loop(
    pair: netns.Pair,
    config: Path,
    log: Path,
    stop: threading.Event,
    patience: float = 1.0,
    sock: Path | None = None,
    nice: int = -5,
) -> None:
    """One EV session after another (the package's EV ends after one), a second apart; with ``sock``,
    each once the SECC listens."""
    while not stop.is_set():
        if sock is not None and not wait_listening(sock, stop):
            return
        ev = netns.start_ev(pair, config, log, patience=patience, nice=nice)
        end = time.monotonic() + EV_LIFE_S
        while ev.poll() is None and time.monotonic() < end and not stop.wait(0.5):
            pass
        netns.stop(ev)
        stop.wait(1.0)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tests.secc.run_ev", description=__doc__.splitlines()[0])
    ap.add_argument("--speed", default="1", help="the site's clock speed (the EV's session runs in real time)")
    ap.add_argument("--config", default="-20 DC BPT", choices=sorted(netns.EV_CONFIGS))
    ap.add_argument("--dir", type=Path, default=Path("var/run-ev"), help="site file, state and logs")
    ap.add_argument(
        "--patience",
        type=float,
        default=10.0,
        help="the EV's message timeouts x this (1: the unmodified EV, which a loaded machine can make time out)",
    )
    a = ap.parse_args(argv)
    netns.require_peers()
    folder = a.dir.resolve()
    folder.mkdir(parents=True, exist_ok=True)
    with netns.veth_pair() as pair:
        path = secc_site(folder, pair)
        print(f"site: {path}\nSECC log: {folder / 'secc.log'}\nEV log: {folder / 'ev.log'}", flush=True)
        runtime = subprocess.Popen([sys.executable, "-m", "runtime.cli", "run", str(path), "--speed", a.speed])
        stop = threading.Event()
        cfg, sock = netns.ev_config(a.config, folder), folder / "var" / "control.sock"
        evs = threading.Thread(target=ev_loop, args=(pair, cfg, folder / "ev.log", stop, a.patience, sock), daemon=True)
        evs.start()
        try:
            return runtime.wait()
        except KeyboardInterrupt:
            runtime.send_signal(signal.SIGINT)  # the runtime stops cleanly: safe outputs, then the SECC
            try:
                return runtime.wait(30)
            except subprocess.TimeoutExpired:
                runtime.kill()
                return runtime.wait(10)
        finally:
            stop.set()
            evs.join(15)
            if runtime.poll() is None:
                os.kill(runtime.pid, signal.SIGKILL)
                runtime.wait(10)


if __name__ == "__main__":
    sys.exit(main())
