"""The AMQP interface on a depot, its routing without a broker (the broker's part, confirms and
redelivery, is tests/localapi/test_amqp_api.py's): each EVSE's events and telemetry under
``<site>.evse.<n>.``, mode requests per EVSE carrying ``evse: n``, the connection limits from
``<site>.set.connection``, and a single site's keys unchanged."""

from __future__ import annotations

import asyncio
import json

import pytest

from runtime.api import SiteInfo
from runtime.tags import US
from runtime.tasks.localapi.amqp import AmqpApi, AmqpApiParams
from runtime.tasks.localapi.connection import EXPORT_TAG, IMPORT_TAG
from runtime.tasks.localapi.requests import Requests
from tests.localapi.depot import RATING, Recorder, depot_tags
from tests.localapi.test_modbus_server import image

SITE = SiteInfo("amqp-site", 240.0, 60.0, 20_000)


def task(**kw: object) -> AmqpApi:
    return AmqpApi("amqp", AmqpApiParams(state_dir="/nonexistent", **kw), SITE)  # type: ignore[arg-type]


def test_events_and_telemetry_of_each_evse_go_under_its_key() -> None:
    t = task(evses=[1, 2, 3], tags=["inverter.power"], site_tags=["meter.power"])
    assert t.event_key({"kind": "trip", "source": "evse2.safety"}) == "amqp-site.evse.2.event.trip"
    assert t.event_key({"kind": "limit", "source": "allocator"}) == "amqp-site.event.limit"
    assert t.event_key({"kind": "trip", "source": "evse9.safety"}) == "amqp-site.event.trip"  # not an EVSE here
    msgs = {m.routing_key: json.loads(m.body) for m in t.telemetry(image(depot_tags()), 5 * US)}
    assert set(msgs) == {"amqp-site.telemetry", *(f"amqp-site.evse.{n}.telemetry" for n in (1, 2, 3))}
    assert msgs["amqp-site.telemetry"]["tags"]["meter.power"]["value"] == 48_000.0
    powers = [msgs[f"amqp-site.evse.{n}.telemetry"]["tags"]["inverter.power"]["value"] for n in (1, 2, 3)]
    assert powers == [7000.0, -4000.0, 0.0]  # both signs and zero, each under its own EVSE
    assert msgs["amqp-site.evse.2.telemetry"]["evse"] == 2 and msgs["amqp-site.evse.2.telemetry"]["t"] == 5.0
    one = task(tags=["inverter.power"])  # a single site: the keys and bodies it always had
    assert one.event_key({"kind": "trip", "source": "safety"}) == "amqp-site.event.trip"
    [m] = one.telemetry(image({"inverter.power": -1000.0}), 0)
    assert m.routing_key == "amqp-site.telemetry" and set(json.loads(m.body)) == {"site", "t", "tags"}


def test_commands_per_evse_and_the_connection_limits() -> None:
    async def main() -> None:
        rec = Recorder()
        cx = rec.context("amqp")
        t = task(evses=[1, 2, 3], connection=RATING)
        assert {s.name for s in t.declare()} >= {IMPORT_TAG, EXPORT_TAG}
        t.requests = Requests(cx, "amqp", t.params)
        try:
            ok, _ = await t._command(b'{"mode": "remote", "setpoint_w": 2000}', "amqp-site.evse.3.set.mode")
            assert ok and rec.commands[-1][1] == {"mode": "remote", "setpoint_w": 2000.0, "evse": 3}
            assert rec.commands[-1][2] == "amqp:amqp-site.evse.3.set.mode"
            await cx._publish(image(depot_tags()), 10 * US)
            t._link_state(cx)
            assert await t._command(b'{"import_w": 0, "export_w": 0, "expiry_s": 5}', "amqp-site.set.connection")
            assert t._link_state(cx)[IMPORT_TAG] == 0.0 and t._link_state(cx)[EXPORT_TAG] == 0.0  # zero is a limit
            await cx._publish(image(depot_tags()), 15 * US)
            assert t._link_state(cx)[IMPORT_TAG] == 100_000.0  # 5 s later: the rating again
            for key, payload, why in (
                ("amqp-site.set.mode", b'{"mode": "local"}', "name their EVSE"),
                ("amqp-site.evse.4.set.mode", b'{"mode": "local"}', "no EVSE '4'"),
                ("amqp-site.evse.1.set.trip_reset", b"{}", "unknown command"),
                ("amqp-site.set.connection", b'{"export_w": 60001}', "outside 0..60000"),
                ("amqp-site.set.connection", b'{"import_w": "lots"}', "import_w"),
            ):
                with pytest.raises(ValueError, match=why):
                    await t._command(payload, key)
            assert len(rec.commands) == 1
            single = task()
            single.requests = Requests(cx, "amqp", single.params)
            with pytest.raises(ValueError, match="one charger"):
                await single._command(b'{"mode": "local"}', "amqp-site.evse.1.set.mode")
            with pytest.raises(ValueError, match="does not carry the connection limits"):
                await single._command(b'{"import_w": 1}', "amqp-site.set.connection")
            assert await single._command(b'{"mode": "local"}', "amqp-site.set.mode") == (True, "")
            assert "evse" not in rec.commands[-1][1]  # a single site's request names no EVSE
        finally:
            await t.requests.close()

    asyncio.run(main())
