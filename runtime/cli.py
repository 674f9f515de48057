"""``v2g-plc``: the command line (a stable interface: docs/design.md#command-line)."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from runtime.yamlload import ConfigError

if TYPE_CHECKING:
    from runtime.site import BuiltSite

log = logging.getLogger("v2g_plc")

EXIT_CONFIG = 2


def _site_arg(p: argparse.ArgumentParser, optional: bool) -> None:
    if optional:
        p.add_argument("site", nargs="?", type=Path, help="site file (default: the bundled simulated site)")
    else:
        p.add_argument("site", type=Path, help="site file")


def _build(path: Path | None, speed: int = 1) -> BuiltSite:
    from runtime.site import build_site, bundled_site

    return build_site(path or bundled_site(), speed=speed)


def _build_to_run(path: Path | None, speed: int = 1, *, plant: bool) -> BuiltSite:
    """The site as ``run`` builds it, and what run needs of the host, before anything starts."""
    from runtime.site import preflight

    built = _build(path, speed)
    preflight(built.loaded, plant=plant)
    return built


def cmd_run(a: argparse.Namespace) -> int:
    from runtime.commands import RESET_EXIT
    from runtime.runner import Runner, RunOptions, flush_logging, setup_logging

    setup_logging()
    built = _build_to_run(a.site, a.speed, plant=not a.no_plant)
    opts = RunOptions(
        for_s=a.for_s,
        speed=a.speed,
        stats_json=a.stats_json,
        dump_tags=a.dump_tags,
        record=a.record,
        record_outputs=a.record_outputs,
        start_plant=not a.no_plant,
        watch=not a.no_watch,
    )
    code = Runner(built, opts).run()
    if code == RESET_EXIT and not os.environ.get("INVOCATION_ID") and os.environ.get("V2G_RESET_EXIT") != "1":
        # Not under systemd (which restarts the unit on this code, RestartForceExitStatus=): start again
        # ourselves, the same command in the same process, outputs already safe and state persisted.
        logging.getLogger("v2g_plc").warning("reset: re-executing %s", " ".join(sys.argv))
        flush_logging()
        os.execv(sys.executable, [sys.executable, "-m", "runtime.cli", *sys.argv[1:]])
    return code


def cmd_check(a: argparse.Namespace) -> int:
    """Everything ``run`` validates and builds before its first cycle, without starting a process or
    touching the network: the site and every component, the virtual plant, the hardware watchdog device,
    the persisted state."""
    from runtime.runner import Runner, RunOptions, StartError

    built = _build_to_run(a.site, plant=True)
    try:
        Runner(built, RunOptions()).restore_state()  # the very code run starts with; it only reads the file
    except StartError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    print(
        f"{built.path}: ok ({len(built.tags.specs)} tags, {len(built.drivers)} devices, "
        f"{len(built.programs)} programs, {len(built.interlocks)} interlocks, {len(built.tasks)} tasks)"
    )
    # what a CSMS changed (OCPP variables, DER controls) beside the site file's own values
    for part in (*built.tasks, *built.interlocks):
        effective = getattr(part, "effective_variables", None)
        if effective is not None:
            try:
                values = effective()
            except (OSError, ValueError) as exc:
                print(f"error: {part.name!r}: its stored variables cannot be read: {exc}", file=sys.stderr)
                return EXIT_CONFIG
            print(f"  {part.name}: " + ", ".join(f"{k}={v}" for k, v in values.items()))
    return 0


def cmd_replay(a: argparse.Namespace) -> int:
    from runtime.recording import FrameError
    from runtime.replay import replay

    built = _build(a.site)
    try:
        n = replay(built, a.inputs, a.outputs)
    except FrameError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except OSError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"replayed {n} cycles -> {a.outputs}", file=sys.stderr)
    return 0


def cmd_schema(a: argparse.Namespace) -> int:
    from runtime.schema import site_schema

    print(json.dumps(site_schema(), indent=2))
    return 0


def _control(site: Path | None, request: dict) -> dict:
    from runtime.config import load_site
    from runtime.iothread import control_request
    from runtime.site import bundled_site

    path = load_site(site or bundled_site()).control_socket

    try:
        return control_request(path, request, timeout=5)
    except OSError as exc:
        raise SystemExit(f"error: no runtime answers on {path} ({exc.strerror or exc})") from None


def cmd_reset_trip(a: argparse.Namespace) -> int:
    if a.offline:  # the runtime is stopped: clear persisted latches (refused while one answers the socket)
        from runtime.site import bundled_site
        from runtime.statefile import reset_offline

        return reset_offline(a.site or bundled_site(), everything=a.all)
    reply = _control(a.site, {"cmd": "reset_trip", "by": "v2g-plc reset-trip"})
    print(json.dumps(reply))
    return 0 if reply.get("ok") else 1


def cmd_force(a: argparse.Namespace) -> int:
    if a.release:
        req = {"cmd": "unforce", "tag": a.tag}
    else:
        if a.value is None:
            raise SystemExit("error: give a VALUE (JSON), or --release")
        req = {"cmd": "force", "tag": a.tag, "value": json.loads(a.value)}
    reply = _control(a.site, req)
    print(json.dumps(reply))
    return 0 if reply.get("ok") else 1


def cmd_mode(a: argparse.Namespace) -> int:
    """An operator override through the control socket: it outranks the back office, the local EMS and the
    plan until it expires or is handed back with ``mode local`` (docs/modes.md "Who may ask for what")."""
    req: dict[str, Any] = {"cmd": "mode_request", "mode": a.mode, "by": "v2g-plc mode"}
    if a.setpoint_w is not None:
        req["setpoint_w"] = a.setpoint_w
    if a.expiry_s is not None:
        req["expiry_s"] = a.expiry_s
    if a.evse is not None:  # a depot: the EVSE the override is for (its evseId, tag prefix evse<n>.)
        req["evse"] = a.evse
    reply = _control(a.site, req)
    print(json.dumps(reply))
    return 0 if reply.get("ok") else 1


def cmd_status(a: argparse.Namespace) -> int:
    reply = _control(a.site, {"cmd": "read", "tags": a.tag} if a.tag else {"cmd": "status"})
    print(json.dumps(reply))
    return 0 if reply.get("ok") else 1


RELOAD_WAIT_S = 90.0  # validation (a child process, at most 60 s) and one cycle boundary


def cmd_reload(a: argparse.Namespace) -> int:
    """Ask the runtime to validate its site file again and apply what may change live; wait for the outcome."""
    import time

    from runtime.online.service import FINAL

    reply = _control(a.site, {"cmd": "reload", "by": "v2g-plc reload"})
    if not reply.get("ok"):
        print(json.dumps(reply))
        return 1
    rid = reply["reload"]
    deadline = time.monotonic() + RELOAD_WAIT_S
    while time.monotonic() < deadline:
        st = _control(a.site, {"cmd": "status"}).get("reload", {})
        if st.get("id", 0) >= rid and st.get("state") in FINAL:
            print(json.dumps(st))
            return 0 if st["state"] in ("applied", "unchanged") else 1
        time.sleep(0.1)  # a client polling a server for an outcome, not a test's synchronisation
    print(json.dumps({"ok": False, "error": f"no outcome within {RELOAD_WAIT_S:g} s", "reload": rid}))
    return 1


def _delegate(module: str) -> int:
    import importlib

    mod = importlib.import_module(module)
    return int(mod.cli(sys.argv[2:]))


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "backtest":
        return _delegate("backtest.cli")
    if argv and argv[0] == "probe":
        return _delegate("runtime.probe")
    ap = argparse.ArgumentParser(prog="v2g-plc", description="PLC-style control runtime for V2G charging sites")
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("run", help="run a site (default: the bundled simulated site)")
    _site_arg(p, True)
    p.add_argument("--for", dest="for_s", type=float, metavar="SECONDS", help="stop cleanly after this long")
    p.add_argument(
        "--speed",
        type=int,
        default=1,
        metavar="N",
        help="simulated sites: each real cycle advances simulated time by N periods",
    )
    p.add_argument("--stats-json", type=Path, metavar="FILE")
    p.add_argument("--dump-tags", type=Path, metavar="FILE")
    p.add_argument("--record", type=Path, metavar="FILE", help="write the input frames the cycles saw")
    p.add_argument("--record-outputs", type=Path, metavar="FILE", help="write every cycle's outputs")
    p.add_argument("--no-plant", action="store_true", help="do not start the site's virtual plant")
    p.add_argument(
        "--no-watch", action="store_true", help="apply an edited site file only on `v2g-plc reload`, not on save"
    )
    p.set_defaults(fn=cmd_run)
    p = sub.add_parser("check", help="validate a site and its maps")
    _site_arg(p, False)
    p.set_defaults(fn=cmd_check)
    p = sub.add_parser("replay", help="run programs and safety over recorded input frames")
    _site_arg(p, True)
    p.add_argument("--inputs", type=Path, required=True)
    p.add_argument("--outputs", type=Path, required=True)
    p.set_defaults(fn=cmd_replay)
    p = sub.add_parser("schema", help="print the JSON Schema of the site file")
    p.set_defaults(fn=cmd_schema)
    p = sub.add_parser("reset-trip", help="operator reset of a latched trip on a running runtime")
    _site_arg(p, True)
    p.add_argument("--offline", action="store_true", help="the runtime is stopped: clear the persisted state")
    p.add_argument("--all", action="store_true", help="with --offline: every entry, not only unclaimed ones")
    p.set_defaults(fn=cmd_reset_trip)
    p = sub.add_parser("force", help="force a tag on a running runtime (commissioning; never bypasses safety)")
    p.add_argument("tag")
    p.add_argument("value", nargs="?", help="JSON value")
    p.add_argument("--release", action="store_true")
    p.add_argument("--site", type=Path)
    p.set_defaults(fn=cmd_force)
    p = sub.add_parser("mode", help="operator override: follow a set point (remote) or hand back (local)")
    p.add_argument("mode", choices=("remote", "local"))
    p.add_argument("--setpoint-w", type=float, help="W, signed: + charges the EV, - discharges it")
    p.add_argument("--expiry-s", type=float, help="seconds until the override ends by itself (default 900)")
    p.add_argument("--evse", type=int, help="on a depot: the EVSE the override is for (docs/depot.md)")
    p.add_argument("--site", type=Path)
    p.set_defaults(fn=cmd_mode)
    p = sub.add_parser("status", help="ask a running runtime for its state (or read tags with --tag)")
    _site_arg(p, True)
    p.add_argument("--tag", action="append", help="read this tag (repeatable)")
    p.set_defaults(fn=cmd_status)
    p = sub.add_parser("reload", help="validate the site file again and apply what may change live (online change)")
    _site_arg(p, True)
    p.set_defaults(fn=cmd_reload)
    sub.add_parser("backtest", help="arbitrage backtest over a price series (see --help)")
    sub.add_parser("probe", help="read one Modbus device and print its tags (see --help)")
    a = ap.parse_args(argv)
    try:
        return int(a.fn(a))
    except ConfigError as exc:
        print(f"configuration error:\n{exc}", file=sys.stderr)
        return EXIT_CONFIG


if __name__ == "__main__":
    sys.exit(main())
