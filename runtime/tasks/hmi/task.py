"""Task ``hmi``: the operator HMI, an aiohttp server in the task process (docs/hmi.md).

Pages are plain HTML, CSS and JavaScript under ``static/`` (no build step, no CDN: controllers are
offline); live values arrive by server-sent events. Every operator action is a typed command to the scan
with ``by`` = the logged-in user, answered accepted or refused by the scan, and shown to the operator.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import importlib
import json
import logging
import ssl
import time
from pathlib import Path
from typing import Any

from runtime.api import ParamError, SiteInfo
from runtime.tags import US, Image
from runtime.tasks.base import Task, TaskContext, register_task
from runtime.tasks.hmi import view
from runtime.tasks.hmi.actions import ActionError, command_for
from runtime.tasks.hmi.auth import COOKIE, LoginLimiter, Session, Sessions, csrf_ok
from runtime.tasks.hmi.params import HmiParams
from runtime.tasks.hmi.users import UserError, UserStore

log = logging.getLogger("v2g_plc.hmi")

STATIC = Path(__file__).parent / "static"
SHUTDOWN_S = 2.0  # a stopping server waits this long for open requests (event streams end at once)
MAX_BODY = 16 * 1024  # a login or an action form is far smaller
HEADERS = {
    # OWASP secure headers: nothing from elsewhere, no framing, no referrer, no sniffing.
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'; form-action 'self'",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


@register_task("hmi")
class Hmi(Task):
    """Serves the overview, plan, event log and live tag pages, and sends operator actions to the scan."""

    Params = HmiParams
    params: HmiParams
    events = True  # the event log page and the forces in force come from the scan's event stream

    def __init__(self, name: str, params: HmiParams, site: SiteInfo):
        super().__init__(name, _resolved(params, site.base_dir), site)
        self.port: int | None = None
        self.url = ""
        self.forces: dict[str, Any] = {}
        self.log_rows: collections.deque[dict[str, Any]] = collections.deque(maxlen=self.params.events_kept)
        self.n_events = 0  # events seen so far: the event stream of a page resumes by this count
        self.history = view.History(round(self.params.history_s * US), self.params.history_points)
        self.version = 0  # publications seen
        self.closing = asyncio.Event()

    # ---- the task -----------------------------------------------------------------------------------

    async def run(self, cx: TaskContext) -> None:
        # aiohttp is imported in a thread: an import of a second or more on a busy controller would block
        # the task process's loop, and with it the heartbeat the supervisor judges a hang by.
        web = await asyncio.to_thread(importlib.import_module, "aiohttp.web")
        self.cx = cx
        self.users = UserStore(Path(self.params.users_file))
        self.sessions = Sessions(self.params.session_s, time.monotonic)
        self.limiter = LoginLimiter(self.params.login_failures, self.params.login_window_s, time.monotonic)
        self.closing = asyncio.Event()
        app = web.Application(client_max_size=MAX_BODY, middlewares=[_headers])
        app.add_routes(
            [
                web.get("/", self.page),
                web.get("/login", self.login_page),
                web.post("/api/login", self.login),
                web.post("/api/logout", self.logout),
                web.get("/api/session", self.session_info),
                web.get("/api/snapshot", self.snapshot),
                web.get("/api/plan", self.plan),
                web.get("/api/events", self.event_log),
                web.get("/api/stream", self.stream),
                web.post("/api/action", self.action),
                web.static("/static", STATIC, follow_symlinks=False),
            ]
        )
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=SHUTDOWN_S)
        await runner.setup()
        tls = self._tls()
        site = web.TCPSite(runner, self.params.host, self.params.port, ssl_context=tls, shutdown_timeout=SHUTDOWN_S)
        await site.start()
        self.port = self.params.port
        self.url = f"{'https' if tls else 'http'}://{self.params.host}:{self.port}/"
        try:
            n = self.users.count()
        except UserError as exc:
            n = 0
            log.error("hmi: %s", exc)
        log.info("hmi on %s (%d users in %s)", self.url, n, self.params.users_file)
        if n == 0:
            log.warning(
                "hmi: no users yet: python -m runtime.tasks.hmi.users --file %s add NAME operator",
                self.params.users_file,
            )
        reader = asyncio.get_running_loop().create_task(self._read_events(cx))
        try:
            while True:
                image = await cx.next_image()
                self.history.feed(image, cx.now_us, cx.calendar())
                self.version += 1
        finally:
            self.closing.set()
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await reader
            with contextlib.suppress(Exception):
                await asyncio.wait_for(runner.cleanup(), SHUTDOWN_S * 2)

    async def _read_events(self, cx: TaskContext) -> None:
        while True:
            e = await cx.next_event()
            view.forces_from_event(self.forces, e)
            t = e.get("t")
            cal = cx.calendar(round(float(t) * US)) if isinstance(t, (int, float)) else None
            self.log_rows.append(view.event_row(e, cal))
            self.n_events += 1

    def _tls(self) -> ssl.SSLContext | None:
        if self.params.cert_file is None or self.params.key_file is None:
            return None
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.load_cert_chain(self.params.cert_file, self.params.key_file)
        return ctx

    # ---- sessions -----------------------------------------------------------------------------------

    def _session(self, request: Any) -> Session | None:
        return self.sessions.get(request.cookies.get(COOKIE))

    def _need(self, request: Any, *, post: bool = False, operator: bool = False) -> Session:
        """The request's session, or the HTTP error that ends the request: 401 without login, 403 for a
        missing CSRF token on a POST or a viewer asking for an action."""
        from aiohttp import web

        s = self._session(request)
        if s is None:
            raise web.HTTPUnauthorized(text="log in first")
        if post and not csrf_ok(s, request.headers.get("X-CSRF-Token")):
            raise web.HTTPForbidden(text="missing or wrong CSRF token")
        if operator:
            try:
                role = self.users.role(s.user.name)
            except UserError as exc:
                log.error("hmi: %s", exc)
                role = None
            if role != "operator":
                raise web.HTTPForbidden(
                    text=f"{s.user.name} is a {role or 'removed user'}: actions need the operator role"
                )
        return s

    async def page(self, request: Any) -> Any:
        from aiohttp import web

        if self._session(request) is None:
            raise web.HTTPFound("/login")
        return web.FileResponse(STATIC / "index.html")

    async def login_page(self, request: Any) -> Any:
        from aiohttp import web

        return web.FileResponse(STATIC / "login.html")

    async def login(self, request: Any) -> Any:
        from aiohttp import web

        addr = request.remote or "?"
        wait = self.limiter.retry_after(addr)
        if wait > 0:
            return web.json_response(
                {"error": f"too many failed logins: try again in {wait:.0f} s"},
                status=429,
                headers={"Retry-After": str(max(1, round(wait)))},
            )
        try:
            body = await request.json()
            name, password = str(body["user"]), str(body["password"])
        except (ValueError, KeyError, TypeError):
            return web.json_response({"error": "user and password expected (JSON)"}, status=400)
        try:
            user = await asyncio.to_thread(self.users.verify, name, password)  # scrypt: off the loop
        except UserError as exc:
            log.error("hmi: %s", exc)
            return web.json_response({"error": "the users file cannot be read: see the log"}, status=500)
        if user is None:
            self.limiter.failed(addr)
            log.warning("hmi: failed login for %r from %s", name[:64], addr)
            return web.json_response({"error": "wrong user or password"}, status=401)
        self.limiter.succeeded(addr)
        token, s = self.sessions.create(user)
        log.info("hmi: %s (%s) logged in from %s", user.name, user.role, addr)
        resp = web.json_response({"user": user.name, "role": user.role, "csrf": s.csrf})
        resp.set_cookie(
            COOKIE,
            token,
            httponly=True,
            samesite="Strict",
            secure=self.params.cert_file is not None,
            path="/",
            max_age=round(self.params.session_s),
        )
        return resp

    async def logout(self, request: Any) -> Any:
        from aiohttp import web

        self._need(request, post=True)
        self.sessions.drop(request.cookies.get(COOKIE))
        resp = web.json_response({"ok": True})
        resp.del_cookie(COOKIE, path="/")
        return resp

    async def session_info(self, request: Any) -> Any:
        from aiohttp import web

        s = self._need(request)
        return web.json_response(
            {"user": s.user.name, "role": s.user.role, "csrf": s.csrf, "default_expiry_s": self.params.default_expiry_s}
        )

    # ---- data ---------------------------------------------------------------------------------------

    def _state(self) -> dict[str, Any]:
        cx = self.cx
        image: Image = cx.image
        forces = view.forces_in_force(image, self.forces)
        return {
            "overview": view.overview(image, cx.now_us, cx.calendar(), forces),
            "tags": view.tags(image, cx.now_us, forces),
        }

    async def snapshot(self, request: Any) -> Any:
        from aiohttp import web

        self._need(request)
        return web.json_response(self._state())

    async def plan(self, request: Any) -> Any:
        from aiohttp import web

        self._need(request)
        return web.json_response(view.plan(self.cx.image, self.history.samples, self.cx.calendar()))

    async def event_log(self, request: Any) -> Any:
        from aiohttp import web

        self._need(request)
        q = request.query
        try:
            limit = max(1, min(int(q.get("limit", "500")), 5000))
        except ValueError:
            raise web.HTTPBadRequest(text="limit must be an integer") from None
        rows = view.filter_events(self.log_rows, q.get("kind", ""), q.get("source", ""), q.get("q", ""), limit)
        kinds = sorted({str(r.get("kind")) for r in self.log_rows})
        sources = sorted({str(r.get("source")) for r in self.log_rows})
        return web.json_response({"events": rows, "kinds": kinds, "sources": sources, "total": self.n_events})

    async def stream(self, request: Any) -> Any:
        """Server-sent events: ``state`` (overview and tags) at most every ``push_s`` while the image
        changes, ``event`` for each new event of the scan's stream."""
        from aiohttp import web

        self._need(request)
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-store"})
        await resp.prepare(request)
        seen_version = -1
        seen_events = self.n_events
        try:
            while not self.closing.is_set():
                chunks = []
                if self.version != seen_version:
                    seen_version = self.version
                    chunks.append(f"event: state\ndata: {json.dumps(self._state())}\n\n")
                new = self.n_events - seen_events
                if new > 0:
                    rows = list(self.log_rows)[-min(new, len(self.log_rows)) :]
                    seen_events = self.n_events
                    chunks += [f"event: event\ndata: {json.dumps(r)}\n\n" for r in rows]
                if self._session(request) is None:  # logged out or expired: the stream ends with it
                    break
                if chunks:
                    await resp.write("".join(chunks).encode())
                with contextlib.suppress(TimeoutError):  # the push interval, or at once when closing
                    await asyncio.wait_for(self.closing.wait(), self.params.push_s)
        except (ConnectionResetError, asyncio.CancelledError):
            pass
        return resp

    async def action(self, request: Any) -> Any:
        from aiohttp import web

        s = self._need(request, post=True, operator=True)
        try:
            body = await request.json()
        except ValueError:
            return web.json_response({"accepted": False, "reason": "an action is a JSON object"}, status=400)
        try:
            kind, args, what = command_for(body, self.cx.image, self.params.default_expiry_s)
        except ActionError as exc:
            return web.json_response({"accepted": False, "reason": str(exc)}, status=400)
        ok, reason = await self.cx.command(kind, args, by=s.user.name)
        log.warning(
            "hmi: %s asked to %s: %s%s",
            s.user.name,
            what,
            "accepted" if ok else "refused",
            f" ({reason})" if reason else "",
        )
        return web.json_response({"accepted": ok, "reason": reason, "what": what, "kind": kind})


async def _headers(request: Any, handler: Any) -> Any:
    from aiohttp import web

    try:
        resp = await handler(request)
    except web.HTTPException as exc:
        exc.headers.update(HEADERS)
        raise
    for k, v in HEADERS.items():
        if k == "Cache-Control" and "Cache-Control" in resp.headers:
            continue
        resp.headers.setdefault(k, v)
    return resp


_headers.__middleware_version__ = 1  # type: ignore[attr-defined]  # what aiohttp.web.middleware sets, without
# importing aiohttp into the scan process, which loads every task module to validate the site


def _resolved(p: HmiParams, base_dir: Path) -> HmiParams:
    """Paths relative to the site file made absolute; a configured certificate must exist (a site that
    cannot serve fails ``check``, not at the first login)."""

    def absolute(v: str) -> str:
        return str(Path(v) if Path(v).is_absolute() else base_dir / v)

    q = p.model_copy(
        update={k: absolute(getattr(p, k)) for k in ("users_file", "cert_file", "key_file") if getattr(p, k)}
    )
    for k in ("cert_file", "key_file"):
        f = getattr(q, k)
        if f is not None and not Path(f).is_file():
            raise ParamError((k,), f"{f} does not exist")
    return q
