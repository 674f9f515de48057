"""Two network namespaces joined by a veth pair: the SECC on one end, the simulated EV on the other.

Why: the `iso15118` package finds its peer by SDP over IPv6 link-local multicast, which needs a real
interface (not `lo`); namespaces give each side its own, on this machine only. Root is needed; without it
the tests skip with the reason (and fail under V2G_REQUIRE_PEERS=1, as CI runs them).
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.peers import require

# As runtime/secc/driver.py has them; not imported from there, so that a test process never registers
# the SECC plug-ins by the way (the configuration reference is generated from what is registered).
ROOT = Path(__file__).resolve().parents[2]
BRIDGE = ROOT / "services" / "secc" / "bridge.py"
DEFAULT_PYTHON = ROOT / ".venv-secc" / "bin" / "python"
IPROUTE2 = "apt-get install iproute2"
JAVA = "apt-get install default-jre-headless"
SECC_VENV = "make secc-venv"
_ids = itertools.count()


@dataclass(frozen=True)
class Pair:
    secc_ns: str
    secc_if: str
    ev_ns: str
    ev_if: str


def require_peers() -> None:
    """Root, `ip`, Java and the SECC virtualenv, or skip (fail in CI) saying which is missing."""
    require("root (network namespaces)", os.geteuid() == 0, "run the tests as root, as CI does")
    require("ip", shutil.which("ip") is not None, IPROUTE2)
    require("java", shutil.which("java") is not None, JAVA)
    require("the SECC virtualenv", DEFAULT_PYTHON.exists(), SECC_VENV)


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=10)


def _link_local_ready(ns: str, iface: str) -> bool:
    out = subprocess.run(
        ["ip", "-n", ns, "-6", "addr", "show", "dev", iface], capture_output=True, text=True, timeout=10
    ).stdout
    return "scope link" in out and "tentative" not in out


@contextmanager
def veth_pair() -> Iterator[Pair]:
    """A fresh pair per use (names unique per process and call); removed on exit whatever happened."""
    n = f"{os.getpid() % 100000}x{next(_ids)}"
    p = Pair(f"v2g-secc-{n}", f"vs{n}", f"v2g-ev-{n}", f"ve{n}")
    made: list[str] = []
    try:
        for ns in (p.secc_ns, p.ev_ns):
            _ip("netns", "add", ns)
            made.append(ns)
        _ip("link", "add", p.secc_if, "type", "veth", "peer", "name", p.ev_if)
        for ns, iface in ((p.secc_ns, p.secc_if), (p.ev_ns, p.ev_if)):
            _ip("link", "set", iface, "netns", ns)
            # No duplicate address detection: the link-local address is usable at once (RFC 4862 5.4).
            subprocess.run(
                ["ip", "netns", "exec", ns, "sysctl", "-qw", f"net.ipv6.conf.{iface}.accept_dad=0"],
                check=True,
                capture_output=True,
                timeout=10,
            )
            _ip("-n", ns, "link", "set", "lo", "up")
            _ip("-n", ns, "link", "set", iface, "up")
        deadline = time.monotonic() + 10
        while not (_link_local_ready(p.secc_ns, p.secc_if) and _link_local_ready(p.ev_ns, p.ev_if)):
            if time.monotonic() > deadline:
                raise RuntimeError("no IPv6 link-local address on the veth pair within 10 s")
            time.sleep(0.05)
        yield p
    finally:
        for ns in made:  # deleting a namespace deletes the veth end in it, and with it the pair
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=10)


EXAMPLES = DEFAULT_PYTHON.parents[1] / "lib"
EV_CONFIGS = {
    "-20 DC BPT": ("iso15118_20", "evcc_config_dc_bpt.json"),
    "-20 AC BPT": ("iso15118_20", "evcc_config_ac_bpt.json"),
    "-20 DC": ("iso15118_20", "evcc_config_dc.json"),
    "-20 AC": ("iso15118_20", "evcc_config_ac.json"),
    "-2 DC": ("iso15118_2", "evcc_config_eim_dc.json"),
    "-2 AC": ("iso15118_2", "evcc_config_eim_ac.json"),
    "DIN": ("DIN", "evcc_config.json"),
}


def ev_config(name: str, tmp: Path, **overrides: Any) -> Path:
    """One of the package's shipped EV configurations, with ``overrides`` (camelCase keys)."""
    sub, fname = EV_CONFIGS[name]
    (src,) = EXAMPLES.glob(f"python3*/site-packages/iso15118/shared/examples/evcc/{sub}/{fname}")
    cfg = json.loads(src.read_text())
    cfg.update(overrides)
    out = tmp / f"ev-{sub}-{fname}"
    out.write_text(json.dumps(cfg))
    return out


PATIENT_EV = Path(__file__).with_name("patient_ev.py")


def start_ev(
    pair: Pair, config: Path, log: Path, patience: float = 10.0, pki: Path | None = None, nice: int = -5
) -> subprocess.Popen[bytes]:
    """The package's EV simulator in the EV namespace, its message timeouts x ``patience`` (patient_ev.py:
    behaviour here, timing in the benchmark); every message it decodes goes to ``log``. With ``pki`` it
    speaks TLS 1.3 with that PKI's trust and OEM certificate (give the config ``useTls: true``). ``nice``: a
    benchmark that measures the site puts the EV, which on a site runs elsewhere, behind everything else."""
    env = {**os.environ, "NETWORK_INTERFACE": pair.ev_if, "MESSAGE_LOG_JSON": "true", "LOG_LEVEL": "INFO"}
    if pki is not None:
        env |= {"PKI_PATH": f"{pki}/", "ENABLE_TLS_1_3": "true"}
    with open(log, "ab") as out:
        return subprocess.Popen(
            ["ip", "netns", "exec", pair.ev_ns, str(DEFAULT_PYTHON), str(PATIENT_EV), str(patience), str(config)],
            env=env,
            cwd=config.parent,  # the package reads a .env from its working directory: a clean one
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            preexec_fn=lambda: os.nice(nice),  # -5 as the SECC: its answers are due within 0.5 s (the EV's timer)
        )


def stop(proc: subprocess.Popen[bytes], timeout: float = 10) -> int:
    """Terminate, then kill after ``timeout``: every teardown is bounded."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout)
    return proc.returncode


def decoded(log: Path, message: str) -> list[dict[str, Any]]:
    """Every ``message`` (e.g. DC_ChargeLoopRes) the EV decoded, as the JSON it logged."""
    out: list[dict[str, Any]] = []
    if not log.exists():
        return out
    for line in log.read_text(errors="replace").splitlines():
        if "Decoded message" in line and f'{{"{message}"' in line:
            out.append(json.loads(line[line.index("{") :])[message])
    return out


def rational(v: dict[str, int]) -> float:
    """ISO 15118-20 RationalNumber: Value x 10^Exponent."""
    return float(v["Value"]) * 10.0 ** int(v["Exponent"])
