"""The deployment files: the systemd unit's key options (and the absence of the ones that would defeat
them), the site-file snippet of deploy/README.md against the unit and the config models, and the real
checkers where the machine has them (systemd-analyze, nft, systemd-sysusers; skipped, saying so,
where it does not).
"""

from __future__ import annotations

import configparser
import re
import subprocess
from pathlib import Path

import pytest
import yaml

from runtime.commands import RESET_EXIT
from runtime.config import ScanSection, WatchdogSection
from tests.peers import NFTABLES, SYSTEMD, needs

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
UNIT = DEPLOY / "systemd" / "v2g-plc.service"
NFT = DEPLOY / "nftables" / "v2g-plc.nft"
SYSUSERS = DEPLOY / "sysusers.d" / "v2g-plc.conf"


class _MultiDict(dict):  # type: ignore[type-arg]
    """configparser keeps the last of repeated keys; systemd accumulates them (DeviceAllow=, ...)."""

    def __setitem__(self, key: str, value: object) -> None:
        if isinstance(value, list) and key in self and isinstance(self[key], list):
            self[key].extend(value)
        else:
            super().__setitem__(key, value)


def parse_unit(text: str) -> dict[str, dict[str, list[str]]]:
    cp = configparser.RawConfigParser(
        strict=False,
        dict_type=_MultiDict,
        interpolation=None,
        delimiters=("=",),
        comment_prefixes=("#", ";"),
        empty_lines_in_values=False,
    )
    cp.optionxform = str  # type: ignore[assignment,method-assign]  # systemd keys are case-sensitive
    cp.read_string(text)
    return {s: {k: v.split("\n") for k, v in cp.items(s)} for s in cp.sections()}


def seconds(value: str) -> float:
    """systemd time span (the forms this unit uses): 10s, 2s, 10min, 500ms, bare seconds."""
    units = {"ms": 0.001, "s": 1, "sec": 1, "min": 60, "m": 60, "h": 3600, "": 1}
    total = 0.0
    for num, unit in re.findall(r"(\d+(?:\.\d+)?)\s*([a-z]*)", value):
        total += float(num) * units[unit]
    return total


@pytest.fixture(scope="module")
def unit() -> dict[str, dict[str, list[str]]]:
    return parse_unit(UNIT.read_text())


def one(unit: dict[str, dict[str, list[str]]], key: str, section: str = "Service") -> str:
    values = unit[section][key]
    assert len(values) == 1, f"{key}= given {len(values)} times"
    return values[0]


# -- the unit's key options ------------------------------------------------------------------------------


def test_notify_watchdog_and_restart(unit: dict[str, dict[str, list[str]]]) -> None:
    assert one(unit, "Type") == "notify"
    assert one(unit, "NotifyAccess") == "main"
    assert one(unit, "Restart") == "on-failure"
    assert seconds(one(unit, "WatchdogSec")) >= 1
    assert one(unit, "ExecStart") == "/opt/v2g-plc/.venv/bin/v2g-plc run /etc/v2g-plc/site.yaml"
    assert "2" in one(unit, "RestartPreventExitStatus").split()  # exit 2 = invalid site file
    assert one(unit, "RestartForceExitStatus").split() == [str(RESET_EXIT)]  # a reset restarts, always


def test_realtime_only_for_the_scan_thread(unit: dict[str, dict[str, list[str]]]) -> None:
    assert 1 <= int(one(unit, "LimitRTPRIO")) <= 99
    assert one(unit, "CPUSchedulingResetOnFork") == "yes"
    service = unit["Service"]
    for key in ("CPUSchedulingPolicy", "CPUSchedulingPriority", "RestrictRealtime"):
        assert key not in service, f"{key}= contradicts LimitRTPRIO= for the scan thread alone"


def test_devices_the_runtime_needs_are_allowed(unit: dict[str, dict[str, list[str]]]) -> None:
    service = unit["Service"]
    assert "PrivateDevices" not in service, "PrivateDevices=yes hides /dev/watchdog and the serial ports"
    assert "PrivateUsers" not in service, "PrivateUsers=yes maps the dialout group away"
    allow = {tuple(v.split()) for v in service["DeviceAllow"]}
    for dev in ("/dev/watchdog", "char-watchdog", "char-ttyS", "char-ttyUSB"):
        assert (dev, "rw") in allow, f"DeviceAllow={dev} rw missing"
    assert one(unit, "DevicePolicy") in ("closed", "auto")
    assert "dialout" in one(unit, "SupplementaryGroups").split()


def test_hardening_that_does_not_contradict(unit: dict[str, dict[str, list[str]]]) -> None:
    assert one(unit, "ProtectSystem") == "strict"
    assert one(unit, "ProtectHome") == "yes"
    assert one(unit, "NoNewPrivileges") == "yes"
    assert one(unit, "PrivateTmp") == "yes"
    # port 502 for the local API's Modbus server, nothing else (issue: "CAP_NET_BIND_SERVICE")
    assert one(unit, "CapabilityBoundingSet") == "CAP_NET_BIND_SERVICE"
    assert one(unit, "AmbientCapabilities") == "CAP_NET_BIND_SERVICE"
    assert "/var/lib/v2g-plc" in one(unit, "ReadWritePaths").split()
    assert one(unit, "StateDirectory") == "v2g-plc"
    assert "AF_UNIX" in one(unit, "RestrictAddressFamilies").split()  # NOTIFY_SOCKET is AF_UNIX
    filters = unit["Service"]["SystemCallFilter"]
    assert "@system-service" in filters  # includes @resources (sched_setscheduler) and ioctl
    assert not any("@resources" in f and f.startswith("~") for f in filters), "SCHED_FIFO needs @resources"
    assert "User" in unit["Service"] and one(unit, "User") != "root"
    assert "DynamicUser" not in unit["Service"]


def test_stop_leaves_room_for_safe_outputs(unit: dict[str, dict[str, list[str]]]) -> None:
    assert one(unit, "KillMode") == "mixed"  # SIGTERM to the runtime, which stops its task process in order
    assert seconds(one(unit, "TimeoutStopSec")) >= 5


# -- the README's site snippet against the unit and the config models ------------------------------------


def readme_site_snippet() -> dict:  # type: ignore[type-arg]
    text = (DEPLOY / "README.md").read_text()
    m = re.search(r"<!-- deploy-site-snippet.*?-->\s*```yaml\n(.*?)```", text, re.S)
    assert m, "deploy/README.md lost its site snippet"
    return yaml.safe_load(m.group(1))


def test_readme_site_snippet_fits_the_unit(unit: dict[str, dict[str, list[str]]]) -> None:
    snip = readme_site_snippet()
    scan = ScanSection.model_validate(snip["scan"])
    wd = WatchdogSection.model_validate(snip["watchdog"])
    assert scan.realtime_priority is not None and scan.realtime_priority <= int(one(unit, "LimitRTPRIO"))
    assert snip["state_dir"] in one(unit, "ReadWritePaths").split()
    assert snip["state_dir"] == "/var/lib/" + one(unit, "StateDirectory")
    assert Path(snip["control_socket"]).parent == Path("/run") / one(unit, "RuntimeDirectory")
    # The hardware timer must outlast systemd's own recovery (watchdog kill + restart + start-up),
    # or every service restart becomes a machine reset.
    assert wd.hardware is not None and wd.hardware.device == "/dev/watchdog"
    recovery_s = seconds(one(unit, "WatchdogSec")) + seconds(one(unit, "RestartSec")) + 5
    assert wd.hardware.timeout_s > recovery_s


# -- real checkers, where installed ----------------------------------------------------------------------


def _unit_with_existing_exec(tmp_path: Path, text: str) -> Path:
    """systemd-analyze verify wants ExecStart= to exist: point it at a stand-in (the venv is not here)."""
    exe = tmp_path / "v2g-plc"
    exe.write_text("#!/bin/sh\nexit 0\n")
    exe.chmod(0o755)
    path = tmp_path / "v2g-plc.service"
    path.write_text(text.replace("/opt/v2g-plc/.venv/bin/v2g-plc", str(exe)))
    return path


def _verify(path: Path) -> tuple[int, str]:
    r = subprocess.run(["systemd-analyze", "verify", "--man=no", str(path)], capture_output=True, text=True, timeout=60)
    lines = [ln for ln in (r.stdout + r.stderr).splitlines() if path.name in ln or str(path) in ln]
    return r.returncode, "\n".join(lines)


@needs("systemd-analyze", SYSTEMD)
def test_systemd_analyze_verify(tmp_path: Path) -> None:
    rc, complaints = _verify(_unit_with_existing_exec(tmp_path, UNIT.read_text()))
    assert rc == 0 and complaints == "", complaints
    # The check is real: a broken copy is reported.
    bad_dir = tmp_path / "bad"
    bad_dir.mkdir()
    bad = UNIT.read_text().replace("LimitRTPRIO=50", "LimitRTPRIO=50\nWatchdogSecs=10s")
    rc, complaints = _verify(_unit_with_existing_exec(bad_dir, bad))
    assert "WatchdogSecs" in complaints


@needs("systemd-analyze", SYSTEMD)
def test_systemd_analyze_security_exposure(tmp_path: Path) -> None:
    path = _unit_with_existing_exec(tmp_path, UNIT.read_text())
    r = subprocess.run(
        ["systemd-analyze", "security", "--offline=yes", "--threshold=30", "--no-pager", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    if "unrecognized option" in r.stderr or "Unknown option" in r.stderr:
        pytest.skip("this systemd-analyze has no offline security analysis (systemd < 250)")
    m = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", r.stdout + r.stderr)
    assert m, r.stdout + r.stderr
    assert r.returncode == 0 and float(m.group(1)) <= 3.0, r.stdout[-2000:]


@needs("nft", NFTABLES)
def test_nftables_ruleset_parses(tmp_path: Path) -> None:
    def check(path: Path) -> subprocess.CompletedProcess[str]:
        # -c: check only, nothing is loaded into the kernel.
        return subprocess.run(["nft", "-c", "-f", str(path)], capture_output=True, text=True, timeout=60)

    r = check(NFT)
    if r.returncode != 0 and "Operation not permitted" in r.stderr:
        pytest.skip("nft -c needs CAP_NET_ADMIN here")
    assert r.returncode == 0, r.stderr
    bad = tmp_path / "bad.nft"
    bad.write_text(NFT.read_text().replace("tcp dport 502 accept", "tcp dport 502 acept"))
    assert check(bad).returncode != 0


def test_nftables_modbus_only_into_the_field_vlan() -> None:
    rules = [ln.split("#")[0].strip() for ln in NFT.read_text().splitlines()]
    modbus_accepts = [r for r in rules if "dport 502" in r and r.endswith("accept")]
    assert modbus_accepts == ["oifname $field_if ip daddr $field_net tcp dport 502 accept"]
    assert any("dport 502" in r and "reject" in r for r in rules)
    assert "policy drop" in NFT.read_text()


def test_nftables_local_api_and_hmi_only_from_their_clients() -> None:
    rules = [ln.split("#")[0].strip() for ln in NFT.read_text().splitlines()]
    inbound = {
        r.split(" tcp dport ")[1].split()[0]: r.split(" tcp dport ")[0]
        for r in rules
        if " tcp dport $" in r and r.startswith("ip saddr")
    }
    assert inbound == {
        "$localapi_port": "ip saddr $ems",
        "$metrics_port": "ip saddr $scraper",
        "$hmi_port": "ip saddr $mgmt_net",
    }
    assert "ip daddr $amqp_broker tcp dport $amqp_port accept" in rules


@needs("systemd-sysusers", SYSTEMD)
def test_sysusers_creates_the_service_user(tmp_path: Path) -> None:
    (tmp_path / "etc").mkdir()
    r = subprocess.run(
        ["systemd-sysusers", f"--root={tmp_path}", str(SYSUSERS)], capture_output=True, text=True, timeout=60
    )
    assert r.returncode == 0, r.stderr
    passwd = (tmp_path / "etc" / "passwd").read_text()
    group = (tmp_path / "etc" / "group").read_text()
    assert re.search(r"^v2g-plc:x:\d+:\d+:", passwd, re.M)
    assert re.search(r"^dialout:x:\d+:.*\bv2g-plc\b", group, re.M)
