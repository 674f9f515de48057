"""Free loopback ports for tests, so that two checkouts (or a running demo) on one machine never collide.

The bundled site keeps its documented ports (15502-15505) for `make run`; every test asks for its own.
"""

from __future__ import annotations

import socket
from typing import Any


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now (the kernel picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def free_ports(n: int) -> list[int]:
    """``n`` distinct free ports, all bound at once while they are picked so that none repeats."""
    socks = [socket.socket(socket.AF_INET, socket.SOCK_STREAM) for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [int(s.getsockname()[1]) for s in socks]
    finally:
        for s in socks:
            s.close()


def free_site_ports(site: dict[str, Any]) -> None:
    """Give every listening or connecting port of a parsed site file (the bundled one above all) a free
    one: its devices and the virtual plant's servers alike, the plant's demo CSMS and the station's URL to
    it, and every task that listens (the local API). A test that forgot one would talk to another
    checkout's running demo."""
    devices = site.get("devices", [])
    plant = (site.get("plant") or {}).get("params", {})
    ports = free_ports(len(devices) + 1 + len(site.get("tasks", [])))
    remap = {}
    for d, p in zip(devices, ports, strict=False):
        remap[d["params"]["port"]] = p
        d["params"]["port"] = p
    for pd in plant.get("devices", []):
        pd["port"] = remap[pd["port"]]
    csms = ports[len(devices)]
    if "csms_port" in plant:
        old = plant["csms_port"]
        plant["csms_port"] = csms
        for t in site.get("tasks", []):
            url = t.get("params", {}).get("csms_url", "")
            if f":{old}/" in url:
                t["params"]["csms_url"] = url.replace(f":{old}/", f":{csms}/")
    for t, p in zip(site.get("tasks", []), ports[len(devices) + 1 :], strict=False):
        if "port" in t.get("params", {}):
            t["params"]["port"] = p
