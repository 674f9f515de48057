"""``python -m runtime.sim --site SITE.yaml [--speed N]``: run the virtual plant of a site file.

Prints exactly one line ``READY`` on stdout once every server listens. Exits cleanly on SIGTERM/SIGINT,
and when stdin reaches EOF (the parent that started it died), so a crashed runtime never leaves an
orphaned plant holding its ports.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import stat
import sys
import threading
from pathlib import Path

from runtime.sim.config import load_plant
from runtime.yamlload import ConfigError


def _watchable(fd: int) -> bool:
    """A pipe, socket or terminal: a parent is on the other end. /dev/null or a file is not watched."""
    try:
        mode = os.fstat(fd).st_mode
    except OSError:
        return False
    return stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode) or os.isatty(fd)


async def _main(site: Path, speed: float, watch_stdin: bool) -> int:
    plant = load_plant(site)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    if watch_stdin and _watchable(sys.stdin.fileno()):
        fd = sys.stdin.fileno()

        def wait_eof() -> None:  # a thread: a blocking read is the one portable way to see EOF
            try:
                while os.read(fd, 4096):
                    pass
            except OSError:
                pass
            loop.call_soon_threadsafe(stop.set)

        threading.Thread(target=wait_eof, name="stdin-eof", daemon=True).start()
    await plant.start()
    csms = None
    if plant.params.csms_port is not None:  # the simulated world's back office, beside its devices
        from runtime.tasks.ocpp.local_csms import LocalCsms

        csms = await LocalCsms(plant.params.host, plant.params.csms_port, subprotocols=("ocpp2.1", "ocpp2.0.1")).start()
        logging.getLogger("v2g_plc.csms").setLevel(logging.INFO)  # boot, statuses, transactions: the demo
        logging.getLogger("v2g_plc.csms").info("CSMS: listening on %s", csms.url)
    print("READY", flush=True)
    try:
        await plant.run_realtime(speed, stop)
    finally:
        if csms is not None:
            await csms.close()
        await plant.stop()
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m runtime.sim", description=__doc__.splitlines()[0])
    ap.add_argument("--site", required=True, type=Path, help="site file with a plant: section")
    ap.add_argument("--speed", type=float, default=1.0, help="simulated seconds per real second")
    ap.add_argument("--ignore-stdin", action="store_true", help="do not exit when stdin reaches EOF")
    ap.add_argument("-v", "--verbose", action="store_true")
    args = ap.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        stream=sys.stderr,
        format="%(asctime)s sim %(levelname)s %(message)s",
    )
    if not args.verbose:  # a client hanging up mid-response is normal for a plant; pymodbus calls it an ERROR
        logging.getLogger("pymodbus").setLevel(logging.CRITICAL)
    if args.speed <= 0:
        ap.error("--speed must be > 0")
    try:
        return asyncio.run(_main(args.site, args.speed, not args.ignore_stdin))
    except ConfigError as exc:
        print(str(exc), file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
