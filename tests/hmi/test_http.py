"""The HMI's protections over real HTTP and HTTPS, against a running runtime (a memory-device site, the
HMI in its task process, free ports): no data or action without login, CSRF on every POST, a viewer
refused, the login rate limit, cookie flags, security headers, the scan's own answer to every command,
and live values by server-sent events."""

from __future__ import annotations

import contextlib
import http.client
import json
import ssl
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from runtime.tasks.hmi.users import add_user
from tests.ocpp.certs import make_pki
from tests.ports import free_port
from tests.runtime.helpers import start_cli, stop_cli, wait_for, write_site

OP, OP_PW = "olivia", "operator-pass-1"
VIEW, VIEW_PW = "victor", "viewer-pass-1"


class Client:
    def __init__(self, port: int, tls: ssl.SSLContext | None = None) -> None:
        self.port = port
        self.tls = tls
        self.cookie = ""
        self.csrf = ""

    def conn(self) -> http.client.HTTPConnection:
        if self.tls is not None:
            return http.client.HTTPSConnection("localhost", self.port, timeout=10, context=self.tls)
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)

    def req(self, method: str, path: str, body: Any = None, csrf: str | None = None) -> tuple[int, Any, Any]:
        c = self.conn()
        try:
            headers = {"Content-Type": "application/json"}
            if self.cookie:
                headers["Cookie"] = self.cookie
            if csrf is not None:
                headers["X-CSRF-Token"] = csrf
            c.request(method, path, None if body is None else json.dumps(body), headers)
            r = c.getresponse()
            data = r.read()
            try:
                parsed: Any = json.loads(data)
            except ValueError:
                parsed = data.decode(errors="replace")
            return r.status, r.headers, parsed
        finally:
            c.close()

    def login(self, user: str, password: str) -> tuple[int, Any, Any]:
        status, headers, body = self.req("POST", "/api/login", {"user": user, "password": password})
        if status == 200:
            self.cookie = headers["Set-Cookie"].split(";", 1)[0]
            self.csrf = body["csrf"]
        return status, headers, body

    def action(self, body: Any) -> tuple[int, Any]:
        status, _, answer = self.req("POST", "/api/action", body, csrf=self.csrf)
        return status, answer


@contextlib.contextmanager
def runtime(tmp: Path, params: str = "", commissioning: bool = False) -> Iterator[int]:
    port = free_port()
    extra = f"""\
tasks:
  - {{type: hmi, name: hmi, params: {{port: {port}, login_failures: 3, push_s: 0.1{params}}}}}
commands:
  allow:
    hmi: [reset_trip]
commissioning: {"true" if commissioning else "false"}
"""
    site = write_site(tmp, extra=extra)
    add_user(tmp / "var" / "hmi" / "users.json", OP, "operator", OP_PW)
    add_user(tmp / "var" / "hmi" / "users.json", VIEW, "viewer", VIEW_PW)
    proc = start_cli("run", str(site))
    try:
        yield port
    finally:
        stop_cli(proc)


def up(c: Client) -> bool:
    try:
        return c.req("GET", "/login")[0] == 200
    except OSError:
        return False


def test_login_csrf_roles_and_the_scans_answers_over_http(tmp_path: Path) -> None:
    with runtime(tmp_path) as port:
        anon = Client(port)
        wait_for(lambda: up(anon), 60, "the HMI listening")
        status, headers, _ = anon.req("GET", "/")
        assert status == 302 and headers["Location"] == "/login"
        for path in ("/api/snapshot", "/api/plan", "/api/events", "/api/stream", "/api/session"):
            assert anon.req("GET", path)[0] == 401, path
        assert anon.action({"action": "reset_trip"})[0] == 401
        status, headers, _ = anon.req("GET", "/login")
        assert "default-src 'self'" in headers["Content-Security-Policy"] and headers["X-Frame-Options"] == "DENY"
        assert headers["X-Content-Type-Options"] == "nosniff" and headers["Referrer-Policy"] == "no-referrer"

        op = Client(port)
        status, headers, body = op.login(OP, OP_PW)
        assert status == 200 and body["role"] == "operator"
        flags = [f.strip().lower() for f in headers["Set-Cookie"].split(";")]
        assert "httponly" in flags and "samesite=strict" in flags and "secure" not in flags  # plain HTTP here
        status, _, snap = op.req("GET", "/api/snapshot")
        assert status == 200 and snap["overview"]["soc"]["value"] == 0.5
        assert snap["overview"]["setpoint"]["direction"] == "charging"  # the test site asks ev.soc x 10000 W
        assert {t["name"] for t in snap["tags"]} >= {"ev.soc", "inverter.setpoint", "runtime.lateness"}

        # CSRF: the token must come back in the header, a wrong one is refused like a missing one
        assert op.req("POST", "/api/action", {"action": "reset_trip"})[0] == 403
        assert op.req("POST", "/api/action", {"action": "reset_trip"}, csrf="forged")[0] == 403
        # the scan answers: reset_trip is allowlisted, mode_request is not, force needs commissioning
        assert op.action({"action": "reset_trip"}) == (
            200,
            {"accepted": True, "reason": "", "what": "reset the latched trip", "kind": "reset_trip"},
        )
        status, answer = op.action({"action": "mode", "mode": "local"})
        assert status == 200 and answer["accepted"] is False
        assert answer["reason"] == "mode_request not allowed for hmi (site file commands.allow.hmi)"
        status, answer = op.action({"action": "force", "tag": "inverter.setpoint", "value": -3000})
        assert answer["accepted"] is False and "commissioning: true" in answer["reason"]
        status, answer = op.action({"action": "mode", "mode": "remote", "setpoint_w": float("inf")})
        assert status == 400 and "finite" in answer["reason"]  # never sent: JSON has no infinity anyway

        viewer = Client(port)
        assert viewer.login(VIEW, VIEW_PW)[0] == 200
        assert viewer.req("GET", "/api/snapshot")[0] == 200
        status, text = viewer.action({"action": "reset_trip"})
        assert status == 403 and "viewer" in text

        # a demotion in the users file takes effect at the next action, not at the next login
        demoted = Client(port)
        add_user(tmp_path / "var" / "hmi" / "users.json", "dora", "operator", "operator-pass-2")
        assert demoted.login("dora", "operator-pass-2")[0] == 200
        assert demoted.action({"action": "reset_trip"})[1]["accepted"] is True
        add_user(tmp_path / "var" / "hmi" / "users.json", "dora", "viewer", "operator-pass-2")
        status, text = demoted.action({"action": "reset_trip"})
        assert status == 403 and "dora is a viewer" in text

        # live values by server-sent events
        c = op.conn()
        c.request("GET", "/api/stream", headers={"Cookie": op.cookie})
        r = c.getresponse()
        assert r.status == 200 and r.headers["Content-Type"].startswith("text/event-stream")
        assert r.readline() == b"event: state\n"
        state = json.loads(r.readline().removeprefix(b"data: "))
        assert state["overview"]["mode"]["name"] == "mode.state"
        c.close()

        # logout ends the session on the server, not only in the browser
        assert op.req("POST", "/api/logout", csrf=op.csrf)[0] == 200
        assert op.req("GET", "/api/snapshot")[0] == 401

        # login rate limit: three failures from one address, then even the right password waits
        for _ in range(3):
            assert anon.login(OP, "wrong password")[0] == 401
        status, headers, body = anon.login(OP, OP_PW)
        assert status == 429 and int(headers["Retry-After"]) >= 1 and "too many failed logins" in body["error"]
        assert anon.login("nobody", "x" * 2000)[0] == 429


def test_https_when_a_certificate_is_configured(tmp_path: Path) -> None:
    pki = make_pki(tmp_path / "pki")
    params = f", cert_file: {pki.dir / 'server.pem'}, key_file: {pki.dir / 'server.key'}"
    with runtime(tmp_path, params, commissioning=True) as port:
        ctx = ssl.create_default_context(cafile=str(pki.ca))
        op = Client(port, ctx)
        wait_for(lambda: up(op), 60, "the HMI listening on HTTPS")
        status, headers, _ = op.login(OP, OP_PW)
        assert status == 200
        assert "secure" in [f.strip().lower() for f in headers["Set-Cookie"].split(";")]
        # commissioning: the HMI may force, both signs and zero, and release; the scan answers each
        for w in (-3000, 0, 3000):
            status, answer = op.action({"action": "force", "tag": "inverter.setpoint", "value": w})
            assert answer == {
                "accepted": True,
                "reason": "",
                "what": f"force inverter.setpoint to {float(w)!r}",
                "kind": "force",
            }

        # a force the engine would refuse is answered refused, with the engine's reason, not "accepted"
        status, answer = op.action({"action": "force", "tag": "no.such_tag", "value": 1.0})
        assert answer["accepted"] is False and "unknown tag 'no.such_tag'" in answer["reason"]
        status, answer = op.action({"action": "force", "tag": "inverter.enable", "value": 3000.0})
        assert answer["accepted"] is False and answer["reason"]

        def forces() -> list[Any]:
            return list(op.req("GET", "/api/snapshot")[2]["overview"]["forces"])

        wait_for(lambda: forces() == [{"tag": "inverter.setpoint", "value": 3000.0}], 10, "the last force shown")
        assert op.action({"action": "unforce", "tag": "inverter.setpoint"})[1]["accepted"] is True
        wait_for(lambda: forces() == [], 10, "the force released")
        plain = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        try:
            plain.request("GET", "/login")
            status = plain.getresponse().status
        except (OSError, http.client.HTTPException):
            status = 0
        finally:
            plain.close()
        assert status != 200  # no plain HTTP beside HTTPS
