"""Price ingestion tasks: day-ahead curves and real-time prices from a CSV file, HTTP JSON or MQTT.

Published shared tags (the planner reads them in exactly this format):

- ``prices.day_ahead`` (TagType.JSON): the known day-ahead curve, sorted by start, from the current
  interval on (``keep_past_s`` widens it into the past)::

      [{"start": "2018-06-04T04:00:00+00:00", "end": "2018-06-04T05:00:00+00:00", "price": 23.5}, ...]

  ``start``/``end`` are ISO 8601 instants with an explicit UTC offset (always +00:00), ``price`` is
  currency per MWh (may be negative). Intervals are 15 or 60 minutes and contiguous within a day.
- ``prices.real_time`` (float, currency/MWh): the price of the 5-minute real-time interval now.
- ``prices.updated`` (int): revision counter, bumped when received data add or revise an interval (not
  when the window slides forward in time); re-plan when it changes.

Quality: a tag is written ``good`` while its feed's data are younger than the feed's ``stale_after_s``
(time since the source last delivered or confirmed them, on the task clock) and cover the present;
otherwise the last value is written ``stale``. The tags carry the same ``stale_after_s``, so they also
turn stale in the scan if this task process stops. Time is the scan's cycle clock
(``TaskContext.now_us``), so a simulated site run with ``--speed N`` sees prices published on its own
calendar.

Sources: ``prices_csv`` (a file, optionally replayed from a simulated start date with the market's
publication time, 12:00 on D-1 for day D), ``prices_http`` (polled with ETag/If-None-Match and
Last-Modified/If-Modified-Since; stdlib urllib in a thread) and ``prices_mqtt`` (aiomqtt). The two live
sources take JSON signals as described in ``price_parse.parse_signal``. Parsing and validation live in
``runtime.tasks.price_parse``; a rejected signal is logged with every reason and the last valid curve is
kept. The same signal twice changes nothing.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
from pathlib import Path
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo

from pydantic import Field, model_validator

from runtime.api import Params, SiteFile, TagName, TimeZoneName
from runtime.tags import US, Direction, Quality, TagSpec, TagType
from runtime.tasks.base import Task, TaskContext, register_task
from runtime.tasks.price_parse import (
    UTC,
    CurveStore,
    DstPolicy,
    Interval,
    PriceError,
    Row,
    check_curve,
    check_day,
    curve_json,
    localize,
    parse_csv,
    parse_signal,
)

Market = Literal["day_ahead", "real_time"]


class FeedParams(Params):
    timezone: TimeZoneName = Field(description="IANA zone of the source's naive times and delivery days")
    day_ahead_tag: TagName | None = "prices.day_ahead"
    real_time_tag: TagName | None = "prices.real_time"
    updated_tag: TagName | None = Field("prices.updated", description="None when another feed publishes it")
    day_ahead_stale_after_s: float = Field(
        36 * 3600.0, gt=0, le=7 * 86400, description="age limit of day-ahead data: one daily publication plus margin"
    )
    real_time_stale_after_s: float = Field(
        900.0, gt=0, le=86400, description="age limit of real-time data: 3 intervals"
    )
    day_ahead_resolutions_s: list[Annotated[int, Field(gt=0, le=86400)]] = Field([900, 3600], min_length=1)
    real_time_resolutions_s: list[Annotated[int, Field(gt=0, le=86400)]] = Field([300], min_length=1)
    refresh_s: float = Field(10.0, gt=0, le=3600, description="re-publish period on the task clock (keeps tags fresh)")
    keep_past_s: float = Field(0.0, ge=0, le=7 * 86400, description="also publish intervals that ended this long ago")
    # Bounds of a plausible price. SDAC's harmonised clearing-price limits are -500 and +4000 EUR/MWh;
    # widen them for markets with other caps.
    min_price: float = Field(-500.0, ge=-1e5, le=1e5)
    max_price: float = Field(4000.0, ge=-1e5, le=1e5)

    @model_validator(mode="after")
    def _check(self) -> FeedParams:
        if self.min_price >= self.max_price:
            raise ValueError("min_price must be below max_price")
        if self.refresh_s * 2 > min(self.day_ahead_stale_after_s, self.real_time_stale_after_s):
            raise ValueError("refresh_s must be at most half of every stale_after_s")
        return self


class Feed:
    """State shared by every source: the store, the age of each market's data, the tag writes."""

    def __init__(self, name: str, p: FeedParams, markets: tuple[str, ...], log: logging.Logger):
        self.name = name
        self.p = p
        self.tz = ZoneInfo(p.timezone)
        self.markets = markets
        self.log = log
        self.store = CurveStore()
        self.confirmed_us: dict[str, int | None] = {m: None for m in markets}
        self.last_rt: float | None = None
        self.fresh: dict[str, bool | None] = {m: None for m in markets}
        self.tags = {"day_ahead": p.day_ahead_tag, "real_time": p.real_time_tag}
        self.stale_us = {
            "day_ahead": int(p.day_ahead_stale_after_s * US),
            "real_time": int(p.real_time_stale_after_s * US),
        }
        self.resolutions = {
            "day_ahead": {dt.timedelta(seconds=s) for s in p.day_ahead_resolutions_s},
            "real_time": {dt.timedelta(seconds=s) for s in p.real_time_resolutions_s},
        }

    def declare(self) -> list[TagSpec]:
        p = self.p
        specs = []
        if "day_ahead" in self.markets and p.day_ahead_tag:
            specs.append(
                TagSpec(
                    p.day_ahead_tag,
                    TagType.JSON,
                    "",
                    Direction.SHARED,
                    None,
                    p.day_ahead_stale_after_s,
                    "day-ahead curve: sorted [{start, end, price}], ISO 8601 UTC, currency/MWh",
                )
            )
        if "real_time" in self.markets and p.real_time_tag:
            specs.append(
                TagSpec(
                    p.real_time_tag,
                    TagType.FLOAT,
                    "currency/MWh",
                    Direction.SHARED,
                    None,
                    p.real_time_stale_after_s,
                    "real-time price of the current interval",
                )
            )
        if p.updated_tag:
            specs.append(
                TagSpec(
                    p.updated_tag,
                    TagType.INT,
                    "",
                    Direction.SHARED,
                    0,
                    max(p.day_ahead_stale_after_s, p.real_time_stale_after_s),
                    "price revision counter",
                )
            )
        return specs

    @staticmethod
    def now_utc(cx: TaskContext, tz: ZoneInfo) -> dt.datetime:
        """UTC instant of the task clock; elapsed time is added in UTC, so DST never shifts it."""
        start = cx.calendar(0)
        if start.tzinfo is None:
            start = start.replace(tzinfo=tz)
        return start.astimezone(UTC) + dt.timedelta(microseconds=cx.now_us)

    def accept(self, cx: TaskContext, market: str, intervals: list[Interval], source: str) -> bool:
        """Validate and store one signal; log and keep the last valid curve when it is rejected.
        Returns True when the data were valid (changed or not): the feed is confirmed alive."""
        if market not in self.markets:
            self.log.warning(
                "%s: %s: %s signal ignored: this feed takes %s", self.name, source, market, ", ".join(self.markets)
            )
            return False
        try:
            curve = check_curve(intervals, source=source, min_price=self.p.min_price, max_price=self.p.max_price)
            lengths = {iv.end - iv.start for iv in curve}
            if not lengths <= self.resolutions[market]:
                raise PriceError(
                    [
                        f"{source}: interval lengths {sorted(str(x) for x in lengths)} not allowed "
                        f"for {market} (allowed: {sorted(str(x) for x in self.resolutions[market])})"
                    ]
                )
        except PriceError as exc:
            self.log.warning(
                "%s: %s signal rejected, last valid curve kept: %s", self.name, market, "; ".join(exc.errors)
            )
            return False
        self.confirmed_us[market] = cx.now_us
        cutoff = self.now_utc(cx, self.tz) - dt.timedelta(seconds=self.p.keep_past_s)
        live = [iv for iv in curve if iv.end > cutoff]
        added, revised = self.store.apply(market, live)
        if added or revised:
            self.log.info(
                "%s: %s: %s %d new, %d revised intervals (revision %d)",
                self.name,
                source,
                market,
                added,
                revised,
                self.store.revision,
            )
        return True

    def confirm(self, cx: TaskContext, markets: tuple[str, ...] | None = None) -> None:
        """The source says nothing changed (HTTP 304): the data held are as young as now."""
        for m in markets or self.markets:
            if self.confirmed_us.get(m) is not None:
                self.confirmed_us[m] = cx.now_us

    def publish(self, cx: TaskContext) -> None:
        now = self.now_utc(cx, self.tz)
        cutoff = now - dt.timedelta(seconds=self.p.keep_past_s)
        self.store.prune(cutoff)
        for m in self.markets:
            tag, seen = self.tags[m], self.confirmed_us[m]
            if tag is None or seen is None:
                continue  # never had data: the tag stays bad ("never read") in the scan
            current = self.store.at(m, now)
            fresh = cx.now_us - seen <= self.stale_us[m] and current is not None
            if fresh != self.fresh[m]:
                if not fresh:
                    why = "no interval covers now" if current is None else "data older than stale_after_s"
                    self.log.warning("%s: %s prices stale: %s", self.name, m, why)
                elif self.fresh[m] is not None:
                    self.log.info("%s: %s prices fresh again", self.name, m)
                self.fresh[m] = fresh
            q = Quality.GOOD if fresh else Quality.STALE
            if m == "day_ahead":
                cx.write(tag, curve_json(self.store.window(m, cutoff)), q)
            else:
                if current is not None:
                    self.last_rt = current.price
                if self.last_rt is not None:
                    cx.write(tag, self.last_rt, q)
        if self.p.updated_tag:
            cx.write(self.p.updated_tag, self.store.revision)

    async def publish_loop(self, cx: TaskContext) -> None:
        step = int(self.p.refresh_s * US)
        while True:
            self.publish(cx)
            await cx.sleep_until(cx.now_us + step)


# -- CSV ------------------------------------------------------------------------------------------------


def decode_price_file(raw: bytes, source: str) -> str:
    """A price file's bytes as text (UTF-8, an optional BOM); PriceError naming the line of a bad byte."""
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise PriceError([f"{source}:{line}: not UTF-8 (byte 0x{raw[exc.start]:02x} at offset {exc.start})"]) from None


class CsvParams(FeedParams):
    path: SiteFile = Field(description="CSV file with time,price columns (relative: to the site file)")
    market: Market = "day_ahead"
    resolution_s: int = Field(3600, gt=0, le=86400, description="interval length of every row")
    dst: DstPolicy = Field("strict", description="'evened': the file has 24 rows on DST days (see price_parse)")
    time_column: str = "time"
    price_column: str = "price"
    publication_time: dt.time | None = Field(
        dt.time(12, 0), description="day-ahead: local time on D-1 when day D is published; None: no delay"
    )
    publication_days_ahead: int = Field(1, ge=0, le=7)
    data_start: dt.date | None = Field(
        None, description="simulated start: this data day is replayed as the task clock's first day"
    )
    loop: bool = Field(False, description="with data_start: replay the data again when they run out")
    poll_s: float = Field(60.0, gt=0, le=86400, description="re-check the file on the task clock")

    @model_validator(mode="after")
    def _loop(self) -> CsvParams:
        if self.loop and self.data_start is None:
            raise ValueError("loop needs data_start")
        return self


@register_task("prices_csv")
class PricesCsv(Task):
    """Prices from a CSV file, published day by day at the market's publication time on the task clock."""

    Params = CsvParams
    params: CsvParams

    def __init__(self, name: str, params: CsvParams, site: Any):
        super().__init__(name, params, site)
        self.feed: Feed | None = None
        self._mtime: float | None = None
        self._days: dict[dt.date, list[Row]] = {}
        self._cache: dict[dt.date, list[Interval] | None] = {}

    def _feed(self, cx: TaskContext) -> Feed:
        if self.feed is None:
            self.feed = Feed(self.name, self.params, (self.params.market,), cx.log)
        return self.feed

    def declare(self) -> list[TagSpec]:
        return Feed(self.name, self.params, (self.params.market,), logging.getLogger(__name__)).declare()

    @property
    def file(self) -> Path:
        p = Path(self.params.path)
        return p if p.is_absolute() else self.base_dir / p

    def _load(self, log: logging.Logger) -> bool:
        """Re-read the file when it changed; False when it cannot be read (the feed then ages). A file
        that is not text (a bad byte) is logged once and the last good data kept until the file changes
        again: a restart would read the same bytes, so the task must not die on them."""
        try:
            mtime = self.file.stat().st_mtime
            if mtime == self._mtime:
                return True
            raw = self.file.read_bytes()
        except OSError as exc:
            log.warning("%s: cannot read %s: %s", self.name, self.file, exc)
            return False
        try:
            text = decode_price_file(raw, self.file.name)
        except PriceError as exc:
            log.warning("%s: %s; the last good data kept until the file changes", self.name, exc)
            self._mtime = mtime
            return True
        p = self.params
        parsed = parse_csv(text, source=self.file.name, time_column=p.time_column, price_column=p.price_column)
        for err in parsed.errors:
            log.warning("%s: %s", self.name, err)
        tz = ZoneInfo(p.timezone)
        days: dict[dt.date, list[Row]] = {}
        for row in parsed.rows:
            wall = row.time if row.time.tzinfo is None else row.time.astimezone(tz).replace(tzinfo=None)
            days.setdefault(wall.date(), []).append(Row(row.line, wall, row.price))
        self._days, self._cache, self._mtime = days, {}, mtime
        log.info(
            "%s: read %s: %d rows, %d days, %d rows rejected",
            self.name,
            self.file.name,
            len(parsed.rows),
            len(days),
            len(parsed.errors),
        )
        return True

    def _data_day(self, day: dt.date, clock_day0: dt.date) -> dt.date | None:
        p = self.params
        if p.data_start is None:
            return day if day in self._days else None
        d = p.data_start + (day - clock_day0)
        if p.loop and self._days:
            first, last = min(self._days), max(self._days)
            span = (last - first).days + 1
            d = first + dt.timedelta(days=(d - first).days % span)
        return d if d in self._days else None

    def _curve(self, day: dt.date, clock_day0: dt.date, log: logging.Logger) -> list[Interval] | None:
        """Day ``day`` of the task's calendar, from the data day it replays; validated once per file read."""
        if day in self._cache:
            return self._cache[day]
        p = self.params
        tz = ZoneInfo(p.timezone)
        src = self._data_day(day, clock_day0)
        curve: list[Interval] | None = None
        if src is not None:
            shift = day - src
            rows = [Row(r.line, r.time + shift, r.price) for r in self._days[src]]
            label = f"{self.file.name} day {src}" + (f" as {day}" if shift else "")
            pairs, errors = localize(rows, tz, dt.timedelta(seconds=p.resolution_s), source=label, dst=p.dst)
            try:
                if errors:
                    raise PriceError(errors)
                curve = check_curve(
                    [iv for _, iv in pairs],
                    source=label,
                    min_price=p.min_price,
                    max_price=p.max_price,
                    resolution=dt.timedelta(seconds=p.resolution_s),
                )
                if p.market == "day_ahead":
                    check_day(curve, day, tz, source=label)
            except PriceError as exc:
                log.warning("%s: %s rejected, last valid curve kept: %s", self.name, label, "; ".join(exc.errors))
                curve = None
        self._cache[day] = curve
        return curve

    def poll(self, cx: TaskContext) -> None:
        """One look at the file and the clock: apply every day published by now, then publish the tags."""
        feed = self._feed(cx)
        p = self.params
        if self._load(cx.log):
            tz = feed.tz
            now = feed.now_utc(cx, tz)
            today = now.astimezone(tz).date()
            clock_day0 = (now - dt.timedelta(microseconds=cx.now_us)).astimezone(tz).date()
            ahead = p.publication_days_ahead if p.market == "day_ahead" else 0
            for i in range(-1, ahead + 1):
                day = today + dt.timedelta(days=i)
                if p.market == "day_ahead" and p.publication_time is not None:
                    pub = dt.datetime.combine(
                        day - dt.timedelta(days=p.publication_days_ahead), p.publication_time, tz
                    ).astimezone(UTC)
                    if pub > now:
                        continue
                curve = self._curve(day, clock_day0, cx.log)
                if curve is None:
                    continue
                if p.market == "real_time":
                    curve = [iv for iv in curve if iv.start <= now]  # a real-time price is known from its start
                if curve:
                    feed.accept(cx, p.market, curve, f"{self.file.name} {day}")
        feed.publish(cx)

    async def run(self, cx: TaskContext) -> None:
        step = int(min(self.params.poll_s, self.params.refresh_s) * US)
        while True:
            self.poll(cx)
            await cx.sleep_until(cx.now_us + step)


# -- HTTP -----------------------------------------------------------------------------------------------


class LiveParams(FeedParams):
    markets: list[Market] = Field(["day_ahead", "real_time"], min_length=1)
    default_market: Market | None = Field(None, description="market of signals that do not name one")


class HttpParams(LiveParams):
    url: str = Field(pattern=r"^https?://")
    poll_s: float = Field(300.0, gt=0, le=86400, description="seconds between requests (wall clock)")
    timeout_s: float = Field(10.0, gt=0, le=120)


def fetch(
    url: str, etag: str | None, last_modified: str | None, timeout: float
) -> tuple[int, bytes, str | None, str | None]:
    """One conditional GET (RFC 9110 13.1.2 If-None-Match, 13.1.3 If-Modified-Since); blocking.
    urllib is imported here: it pulls in ssl, which the scan process (importing every task module to
    find registrations) must not carry."""
    import urllib.error
    import urllib.request

    req = urllib.request.Request(url, headers={"Accept": "application/json"})
    if etag:
        req.add_header("If-None-Match", etag)
    if last_modified:
        req.add_header("If-Modified-Since", last_modified)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, resp.read(), resp.headers.get("ETag"), resp.headers.get("Last-Modified")
    except urllib.error.HTTPError as exc:
        if exc.code == 304:
            return 304, b"", exc.headers.get("ETag") or etag, exc.headers.get("Last-Modified") or last_modified
        raise


def signals_of(body: bytes | str, *, tz: ZoneInfo, source: str, default_market: str | None) -> list[Any]:
    """The JSON signals of one body (an object, a list, or {"signals": [...]}); PriceError if not JSON."""
    try:
        obj = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise PriceError([f"{source}: not JSON: {exc}"]) from None
    if isinstance(obj, dict) and "signals" in obj:
        obj = obj["signals"]
    return obj if isinstance(obj, list) else [obj]


class _LiveTask(Task):
    params: LiveParams

    def __init__(self, name: str, params: LiveParams, site: Any):
        super().__init__(name, params, site)
        self.feed: Feed | None = None

    def _feed(self, cx: TaskContext) -> Feed:
        if self.feed is None:
            self.feed = Feed(self.name, self.params, tuple(self.params.markets), cx.log)
        return self.feed

    def declare(self) -> list[TagSpec]:
        return Feed(self.name, self.params, tuple(self.params.markets), logging.getLogger(__name__)).declare()

    def handle(self, cx: TaskContext, body: bytes | str, source: str) -> bool:
        """Apply one message; True when at least one signal in it was valid."""
        feed = self._feed(cx)
        try:
            objs = signals_of(body, tz=feed.tz, source=source, default_market=self.params.default_market)
        except PriceError as exc:
            cx.log.warning("%s: message rejected, last valid curve kept: %s", self.name, "; ".join(exc.errors))
            return False
        ok = False
        for i, obj in enumerate(objs):
            src = source if len(objs) == 1 else f"{source}[{i}]"
            try:
                sig = parse_signal(obj, tz=feed.tz, source=src, default_market=self.params.default_market)
            except PriceError as exc:
                cx.log.warning("%s: signal rejected, last valid curve kept: %s", self.name, "; ".join(exc.errors))
                continue
            ok = feed.accept(cx, sig.market, sig.intervals, src) or ok
        feed.publish(cx)
        return ok


@register_task("prices_http")
class PricesHttp(_LiveTask):
    """Polls a JSON endpoint with conditional requests; a 304 confirms the data held are current."""

    Params = HttpParams
    params: HttpParams

    def __init__(self, name: str, params: HttpParams, site: Any):
        super().__init__(name, params, site)
        self.etag: str | None = None
        self.last_modified: str | None = None
        self.status: int | None = None

    async def poll(self, cx: TaskContext) -> None:
        from http.client import HTTPException

        p = self.params
        feed = self._feed(cx)
        try:
            status, body, etag, lm = await asyncio.to_thread(fetch, p.url, self.etag, self.last_modified, p.timeout_s)
        except (OSError, ValueError, HTTPException) as exc:  # URLError, HTTPError, timeouts, bad responses
            cx.log.warning("%s: GET %s failed: %s", self.name, p.url, exc)
            self.status = None
            return
        self.status = status
        if status == 304:
            feed.confirm(cx)
            feed.publish(cx)
            return
        if self.handle(cx, body, p.url):
            # Validators are kept only for a body we accepted: a rejected body is fetched again in full.
            self.etag, self.last_modified = etag, lm

    async def run(self, cx: TaskContext) -> None:
        publisher = asyncio.create_task(self._feed(cx).publish_loop(cx))
        try:
            while True:
                await self.poll(cx)
                await asyncio.sleep(self.params.poll_s)
        finally:
            publisher.cancel()


# -- MQTT -----------------------------------------------------------------------------------------------


class MqttParams(LiveParams):
    host: str = "localhost"
    port: int = Field(1883, ge=1, le=65535)
    topic: str = Field(min_length=1, description="topic filter; retained messages give the curve at once")
    qos: Literal[0, 1, 2] = 1
    keepalive_s: int = Field(60, ge=5, le=3600)
    reconnect_s: float = Field(5.0, gt=0, le=300)


@register_task("prices_mqtt")
class PricesMqtt(_LiveTask):
    """Subscribes to a topic of JSON signals (aiomqtt); reconnects with a fixed backoff."""

    Params = MqttParams
    params: MqttParams

    connected: bool = False

    async def run(self, cx: TaskContext) -> None:
        import aiomqtt  # task process only

        p = self.params
        publisher = asyncio.create_task(self._feed(cx).publish_loop(cx))
        try:
            while True:
                try:
                    async with aiomqtt.Client(p.host, p.port, keepalive=p.keepalive_s) as client:
                        await client.subscribe(p.topic, qos=p.qos)
                        self.connected = True
                        cx.log.info("%s: subscribed to %s on %s:%d", self.name, p.topic, p.host, p.port)
                        async for msg in client.messages:
                            payload = msg.payload
                            body = bytes(payload) if isinstance(payload, (bytes, bytearray)) else str(payload)
                            self.handle(cx, body, f"mqtt {msg.topic}")
                except aiomqtt.MqttError as exc:
                    self.connected = False
                    cx.log.warning(
                        "%s: MQTT %s:%d: %s; retrying in %g s", self.name, p.host, p.port, exc, p.reconnect_s
                    )
                    await asyncio.sleep(p.reconnect_s)
        finally:
            publisher.cancel()
