"""Real headless Chromium (Debian's ``chromium`` + ``chromium-driver``) driven through Selenium, and the
in-process virtual plant the browser tests inject faults into."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tests.peers import require_program

CHROMIUM_INSTALL = "apt-get install chromium chromium-driver"
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--window-size=1280,1000",
)


@contextlib.contextmanager
def chromium() -> Iterator[Any]:
    """A fresh headless Chromium with its own profile directory; quit (bounded) and profile removed after."""
    binary = require_program("chromium", CHROMIUM_INSTALL)
    driver_path = require_program("chromedriver", CHROMIUM_INSTALL)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="hmi-chromium-")
    opts = webdriver.ChromeOptions()
    opts.binary_location = binary
    for f in (*FLAGS, f"--user-data-dir={profile}"):
        opts.add_argument(f)
    driver = webdriver.Chrome(service=Service(executable_path=driver_path), options=opts)
    driver.set_page_load_timeout(30)
    driver.set_script_timeout(30)
    try:
        yield driver
    finally:
        try:
            driver.quit()
        finally:
            shutil.rmtree(profile, ignore_errors=True)


class PlantThread:
    """The site's virtual plant (and its demo CSMS) on an event loop in a thread of the test, so that the
    test can inject a device fault (runtime.sim.devices.Fault) into the very plant the runtime polls."""

    def __init__(self, site: Path, speed: float) -> None:
        from runtime.sim.config import load_plant

        self.vp = load_plant(site)
        self.speed = speed
        self.loop = asyncio.new_event_loop()
        self.ready = threading.Event()
        self.error: BaseException | None = None
        self._stop: asyncio.Event | None = None
        self.thread = threading.Thread(target=self._run, name="plant", daemon=True)

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        try:
            self.loop.run_until_complete(self._main())
        except BaseException as exc:  # told to the test, which waits on ready
            self.error = exc
            self.ready.set()

    async def _main(self) -> None:
        from runtime.tasks.ocpp.local_csms import LocalCsms

        self._stop = asyncio.Event()
        await self.vp.start()
        csms = None
        if self.vp.params.csms_port is not None:
            csms = await LocalCsms(self.vp.params.host, self.vp.params.csms_port).start()
        self.ready.set()
        try:
            await self.vp.run_realtime(self.speed, self._stop)
        finally:
            if csms is not None:
                await csms.close()
            await self.vp.stop()

    def inject(self, device: str, fault: Any) -> None:
        self.loop.call_soon_threadsafe(self.vp.inject, device, fault)

    def __enter__(self) -> PlantThread:
        self.thread.start()
        if not self.ready.wait(30) or self.error is not None:
            raise RuntimeError(f"the virtual plant did not start: {self.error!r}")
        return self

    def __exit__(self, *exc: object) -> None:
        if self._stop is not None:
            self.loop.call_soon_threadsafe(self._stop.set)
        self.thread.join(15)
