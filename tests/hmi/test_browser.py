"""The HMI in a real headless Chromium against a real runtime and the virtual plant (real Modbus on
loopback): log in, watch the live SoC move, force and release a tag, see a write-mismatch trip appear when
the plant's inverter refuses set-point writes (an operator-reset trip), reset it once the device agrees
again, and see a viewer refused an action. Screenshots of each page go to docs/screenshots/."""

from __future__ import annotations

import os
import tempfile
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from runtime.sim.devices import Fault
from runtime.tasks.hmi.users import add_user
from tests.hmi.browser import PlantThread, chromium
from tests.runtime.helpers import bundled_site_copy, read_tag, start_cli, stop_cli, wait_for

SPEED = 100  # the planner charges for the first simulated hour: 36 s of real time with a moving SoC
# The committed pictures in docs/screenshots are refreshed on demand (V2G_SCREENSHOTS=docs/screenshots);
# an ordinary run still takes every screenshot, into a temporary folder, so a clean checkout stays clean.
SHOTS = Path(os.environ.get("V2G_SCREENSHOTS") or Path(tempfile.gettempdir()) / f"v2g-hmi-shots-{os.getpid()}")
OPERATOR, OPERATOR_PW = "olivia", "operator-pass-1"
VIEWER, VIEWER_PW = "victor", "viewer-pass-1"


def calm_site(tmp: Path) -> tuple[Path, int]:
    """The bundled site on free ports, commissioning on (forces allowed), and without its scripted grid
    disturbances: the only trip in this test is the one it injects."""
    site = bundled_site_copy(tmp, commissioning=True)
    d = yaml.safe_load(site.read_text())
    plant = d["plant"]["params"]
    plant["scenario"] = None
    plant["events"] = [{"t": 0, "event": "plug_in", "soc": 0.45}]
    site.write_text(yaml.safe_dump(d, sort_keys=False))
    hmi = next(t for t in d["tasks"] if t["type"] == "hmi")
    users = tmp / hmi["params"].get("users_file", "var/hmi/users.json")
    add_user(users, OPERATOR, "operator", OPERATOR_PW)
    add_user(users, VIEWER, "viewer", VIEWER_PW)
    return site, int(hmi["params"]["port"])


def until(driver: Any, cond: Callable[[Any], Any], timeout: float, what: str) -> Any:
    from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException
    from selenium.webdriver.support.ui import WebDriverWait

    # live pages rebuild their tables at every push: an element found a moment ago may be gone; poll again
    ignored = (NoSuchElementException, StaleElementReferenceException)
    return WebDriverWait(driver, timeout, poll_frequency=0.1, ignored_exceptions=ignored).until(cond, message=what)


def by_id(driver: Any, eid: str) -> Any:
    from selenium.webdriver.common.by import By

    return driver.find_element(By.ID, eid)


def login(driver: Any, base: str, user: str, password: str) -> None:
    driver.get(base + "login")
    by_id(driver, "user").send_keys(user)
    by_id(driver, "password").send_keys(password)
    by_id(driver, "login-btn").click()
    until(driver, lambda d: user in by_id(d, "who").text, 15, f"{user} logged in")
    until(driver, lambda d: by_id(d, "live").text == "live", 15, "live values")


def act(driver: Any, button: str) -> str:
    """Click an action button, confirm in the dialog, and return the answer the page shows."""
    by_id(driver, "answer").get_property("hidden") or driver.execute_script(
        "document.getElementById('answer').hidden = true"
    )
    by_id(driver, button).click()
    until(driver, lambda d: by_id(d, "confirm").get_property("open"), 5, "the confirmation dialog")
    by_id(driver, "confirm-ok").click()
    until(driver, lambda d: not by_id(d, "answer").get_property("hidden"), 30, "the scan's answer")
    return str(by_id(driver, "answer").text)


def page(driver: Any, name: str) -> None:
    from selenium.webdriver.common.by import By

    driver.find_element(By.CSS_SELECTOR, f'nav a[data-page="{name}"]').click()
    until(driver, lambda d: not by_id(d, f"page-{name}").get_property("hidden"), 5, f"page {name}")


def shot(driver: Any, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)  # relative: from the project's root, where pytest runs
    assert driver.save_screenshot(str(SHOTS / f"{name}.png"))


def http_up(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as r:
            return bool(r.status == 200)
    except OSError:
        return False


def test_operator_and_viewer_in_a_real_browser(tmp_path: Path) -> None:
    site, port = calm_site(tmp_path)
    base = f"http://127.0.0.1:{port}/"
    sock = tmp_path / "var" / "control.sock"
    with chromium() as driver, PlantThread(site, SPEED) as plant:
        proc = start_cli("run", str(site), "--no-plant", "--speed", str(SPEED))
        try:
            wait_for(lambda: http_up(base + "login"), 120, "the HMI listening")  # a loaded CI machine
            login(driver, base, OPERATOR, OPERATOR_PW)

            # the live SoC moves while the plant charges (server-sent events, no reload)
            until(driver, lambda d: by_id(d, "soc").get_attribute("data-value"), 30, "a SoC")
            soc0 = float(by_id(driver, "soc").get_attribute("data-value"))
            until(
                driver, lambda d: float(by_id(d, "soc").get_attribute("data-value") or soc0) != soc0, 30, "SoC change"
            )
            soc1 = float(by_id(driver, "soc").get_attribute("data-value"))
            # the sign spelled out agrees with where the SoC went (+ into the EV battery)
            want = "charging (into the EV battery)" if soc1 > soc0 else "discharging (out of the EV battery)"
            until(driver, lambda d: by_id(d, "power-dir").text == want, 15, want)
            shot(driver, "overview")

            page(driver, "plan")
            until(driver, lambda d: " intervals, " in by_id(d, "plan-status").text, 20, "the plan")
            until(driver, lambda d: " 0 samples" not in by_id(d, "plan-status").text, 20, "measured history")
            shot(driver, "plan")

            # a force (commissioning) is shown prominently on every page, and released again
            page(driver, "tags")
            by_id(driver, "force-tag").send_keys("meter.current")
            by_id(driver, "force-value").send_keys("12.5")
            assert "accepted" in act(driver, "force-btn")
            until(driver, lambda d: "meter.current = 12.5" in by_id(d, "forces-banner").text, 15, "the force banner")
            until(
                driver,
                lambda d: "FORCED" in d.find_element("css selector", 'tr[data-tag="meter.current"]').text,
                15,
                "the forced row",
            )
            shot(driver, "tags")

            # the plant's inverter refuses every write of its set point: a write mismatch, operator reset
            wset = plant.vp.devices["inverter"].addr["WSet"]
            plant.inject("inverter", Fault(exception=4, addresses={wset, wset + 1}, on_write_only=True))
            page(driver, "overview")
            until(driver, lambda d: by_id(d, "trip").get_attribute("data-value") == "write_mismatch", 45, "the trip")
            assert by_id(driver, "trip-banner").is_displayed()
            assert "TRIPPED: write_mismatch" in by_id(driver, "trip-banner").text
            shot(driver, "trip")
            plant.inject("inverter", None)  # the device obeys again; the latch stays until someone resets it
            wait_for(lambda: (read_tag(sock, "inverter.write_mismatch") or {}).get("value") is False, 30, "agreement")
            assert by_id(driver, "trip").get_attribute("data-value") == "write_mismatch"
            answer = act(driver, "reset-trip")
            assert "reset the latched trip: accepted by the scan" in answer
            until(driver, lambda d: by_id(d, "trip").get_attribute("data-value") == "", 30, "the trip reset")
            assert by_id(driver, "trip-banner").get_property("hidden")

            # the event log shows the trip and the force, and filters by kind
            page(driver, "events")
            until(driver, lambda d: "write_mismatch" in by_id(d, "ev-table").text, 15, "the trip in the log")
            assert "meter.current forced to 12.5" in by_id(driver, "ev-table").text
            shot(driver, "events")
            from selenium.webdriver.support.ui import Select

            Select(by_id(driver, "ev-kind")).select_by_value("trip")
            until(
                driver,
                lambda d: (
                    {r.get_attribute("class") for r in d.find_elements("css selector", "#ev-table tbody tr")}
                    == {"kind-trip"}
                ),
                15,
                "only trips",
            )

            page(driver, "tags")
            by_id(driver, "force-tag").clear()
            by_id(driver, "force-tag").send_keys("meter.current")
            assert "accepted" in act(driver, "unforce-btn")
            until(driver, lambda d: by_id(d, "forces-banner").get_property("hidden"), 15, "the force released")

            # a viewer sees everything and may do nothing
            by_id(driver, "logout-btn").click()
            until(driver, lambda d: d.current_url.endswith("/login"), 10, "logged out")
            login(driver, base, VIEWER, VIEWER_PW)
            answer = act(driver, "mode-local-btn")
            assert "refused (403)" in answer and "viewer" in answer
            assert by_id(driver, "answer").get_attribute("data-accepted") == "false"
        finally:
            err = stop_cli(proc)
    assert f"hmi: {OPERATOR} asked to reset the latched trip: accepted" in err
    assert f"hmi: {OPERATOR} asked to force meter.current to 12.5: accepted" in err
    assert f"{VIEWER} asked" not in err
