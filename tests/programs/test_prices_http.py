"""The HTTP price feed against a real http.server on loopback: conditional requests (ETag and
Last-Modified, the 304 path), idempotency, rejected bodies, a server that is down."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from runtime.api import SiteInfo
from runtime.tags import US, Image, Quality
from runtime.tasks.base import TaskContext
from runtime.tasks.prices import HttpParams, PricesHttp
from tests.programs.test_prices_csv import Writes

NY = ZoneInfo("America/New_York")
SITE = SiteInfo("t", 240.0, 60.0, 20_000)


def signal(price0: float) -> dict[str, Any]:
    return {
        "market": "day_ahead",
        "start": "2018-06-04T00:00:00-04:00",
        "resolution_s": 3600,
        "prices": [price0 + h for h in range(24)],
    }


class Server:
    """Serves ``body`` with a strong ETag and Last-Modified, honouring both conditional headers."""

    def __init__(self) -> None:
        self.body = b""
        self.etag = ""
        self.last_modified = "Sun, 03 Jun 2018 16:00:00 GMT"
        self.honour = True
        self.requests: list[dict[str, str]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                outer.requests.append(dict(self.headers))
                inm, ims = self.headers.get("If-None-Match"), self.headers.get("If-Modified-Since")
                # RFC 9110 13.1.3: If-Modified-Since is ignored when If-None-Match is present.
                if outer.honour and (
                    (inm is not None and inm == outer.etag) or (inm is None and ims == outer.last_modified)
                ):
                    self.send_response(304)
                    if outer.etag:
                        self.send_header("ETag", outer.etag)
                    self.end_headers()
                    return
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                if outer.etag:
                    self.send_header("ETag", outer.etag)
                self.send_header("Last-Modified", outer.last_modified)
                self.send_header("Content-Length", str(len(outer.body)))
                self.end_headers()
                self.wfile.write(outer.body)

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/prices"

    def set(self, obj: Any, etag: str) -> None:
        self.body = obj if isinstance(obj, bytes) else json.dumps(obj).encode()
        self.etag = etag


@pytest.fixture
def server() -> Iterator[Server]:
    s = Server()
    t = threading.Thread(target=s.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    t.start()
    yield s
    s.httpd.shutdown()
    s.httpd.server_close()
    t.join()


def make(url: str, **params: Any) -> tuple[PricesHttp, TaskContext, Writes]:
    p = HttpParams(**{"url": url, "timezone": "America/New_York", "markets": ["day_ahead"], **params})
    task = PricesHttp("prices", p, SITE)
    w = Writes()
    return task, TaskContext("prices", w, dt.datetime(2018, 6, 4, tzinfo=NY), logging.getLogger("t")), w


def test_conditional_requests_and_304(server: Server) -> None:
    server.set(signal(30.0), '"v1"')
    task, cx, w = make(server.url, day_ahead_stale_after_s=3600)
    asyncio.run(task.poll(cx))
    assert task.status == 200 and w.last("prices.updated") == (1, Quality.GOOD)
    assert "If-None-Match" not in server.requests[0]
    cx.now_us = 3000 * US
    asyncio.run(task.poll(cx))
    assert task.status == 304
    assert server.requests[1]["If-None-Match"] == '"v1"'
    assert server.requests[1]["If-Modified-Since"] == server.last_modified
    assert w.last("prices.updated") == (1, Quality.GOOD)
    cx.now_us = 6000 * US  # 100 min after the 200, 50 min after the 304: fresh because the 304 confirmed
    task.feed.publish(cx)  # type: ignore[union-attr]
    assert w.last("prices.day_ahead")[1] is Quality.GOOD
    cx.now_us = 6601 * US  # more than an hour after the last confirmation
    task.feed.publish(cx)  # type: ignore[union-attr]
    assert w.last("prices.day_ahead")[1] is Quality.STALE


def test_last_modified_only(server: Server) -> None:
    server.set(signal(30.0), "")  # no ETag: the validator is Last-Modified alone
    task, cx, w = make(server.url)
    asyncio.run(task.poll(cx))
    asyncio.run(task.poll(cx))
    assert "If-None-Match" not in server.requests[1]
    assert server.requests[1]["If-Modified-Since"] == server.last_modified
    assert task.status == 304 and w.last("prices.updated")[0] == 1


def test_new_body_then_same_body_again(server: Server) -> None:
    server.set(signal(30.0), '"v1"')
    task, cx, w = make(server.url)
    asyncio.run(task.poll(cx))
    server.set(signal(40.0), '"v2"')
    asyncio.run(task.poll(cx))
    assert task.status == 200 and w.last("prices.updated")[0] == 2
    assert w.last("prices.day_ahead")[0][0]["price"] == 40.0
    server.honour = False  # a server that ignores conditional requests: same content, nothing changes
    asyncio.run(task.poll(cx))
    assert task.status == 200 and w.last("prices.updated")[0] == 2


def test_bad_body_keeps_last_valid(server: Server, caplog: pytest.LogCaptureFixture) -> None:
    server.set(signal(30.0), '"v1"')
    task, cx, w = make(server.url)
    asyncio.run(task.poll(cx))
    server.set(b"{not json", '"v2"')
    with caplog.at_level(logging.WARNING):
        asyncio.run(task.poll(cx))
        bad = signal(50.0)
        bad["prices"][3] = float("nan")
        server.set(json.dumps(bad).encode(), '"v3"')  # json.dumps writes NaN, which Python's json reads
        asyncio.run(task.poll(cx))
    assert "message rejected, last valid curve kept" in caplog.text and "not JSON" in caplog.text
    assert "signal rejected" in caplog.text and "prices[3]" in caplog.text
    assert server.requests[-1]["If-None-Match"] == '"v1"'  # validators only from the accepted body
    curve, q = w.last("prices.day_ahead")
    assert q is Quality.GOOD and curve[0]["price"] == 30.0 and w.last("prices.updated")[0] == 1


def test_server_down(caplog: pytest.LogCaptureFixture) -> None:
    s = Server()  # bound but never serving, then closed: connection refused
    url = s.url
    s.httpd.server_close()
    task, cx, w = make(url, timeout_s=2)
    with caplog.at_level(logging.WARNING):
        asyncio.run(task.poll(cx))
    assert task.status is None and "GET http://127.0.0.1" in caplog.text and "failed" in caplog.text
    assert w.log == []


def test_run_loop_publishes_on_task_clock(server: Server) -> None:
    server.set(
        [
            signal(30.0),
            {"market": "real_time", "start": "2018-06-04T04:00:00Z", "resolution_s": 300, "prices": [-7.5, 8.0]},
        ],
        '"v1"',
    )
    task, cx, w = make(server.url, markets=["day_ahead", "real_time"], poll_s=0.05)

    async def main() -> None:
        runner = asyncio.create_task(task.run(cx))
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 10
        while not any(t == "prices.real_time" for t, _, _ in w.log):
            assert loop.time() < deadline, "no real-time price published"
            await asyncio.sleep(0.01)
        await cx._publish(Image({}), 301 * US)  # the scan's clock moves on: the next interval
        while w.last("prices.real_time")[0] != 8.0:
            assert loop.time() < deadline, "real-time price did not follow the task clock"
            await asyncio.sleep(0.01)
        runner.cancel()

    asyncio.run(main())
    assert w.last("prices.real_time") == (8.0, Quality.GOOD)
    assert w.last("prices.updated")[0] == 2
