"""Supervision of the link counts in real time, as staleness does, also on a simulated site run at --speed
N: poll periods, the set point refresh and the device's reversion timeout (docs/depot.md "Poll periods
under --speed"). The site at N x is the real site time-lapsed (the same requests per second on the wire),
so the I/O of a depot does not fall behind at speed and its fast points do not go stale (comms_lost).
And what one missed poll means: a lost answer is
retried inside the poll; a poll unanswered after its retries is bad at once."""

from __future__ import annotations

import asyncio

from runtime.api import SiteInfo
from runtime.io.driver import IOContext
from runtime.io.maps import PollClass
from runtime.io.modbus_common import ModbusDriver
from runtime.io.modbus_tcp import ModbusTcpDriver
from runtime.tags import US, Quality
from tests.faults.proxy import Rule
from tests.faults.rig import rig
from tests.io.helpers import ROOT, Tags, free_port, inputs, plant, tcp_driver, teardown, wait_for

METER = "site_meter_tcp"  # meter.power fast, meter.current normal
SPEED = 100
NORMAL_S = 0.25  # real seconds
WINDOW_S = 1.5  # real seconds of cycles counted
CYCLE_S = 0.02  # the scan's period that wakes the driver each cycle (what the runner does)


def test_due_counts_real_time_not_the_cycle_clock() -> None:
    """The due rule alone, with the link's clock moved by hand: at x100 one real second is 100 s of the
    cycle clock, far past a 2 s period on the cycle clock, and still half of it in real time."""
    drv = tcp_driver(free_port(), METER, units=[{"unit": 1, "map": METER, "poll": {"normal_s": 2.0, "slow_s": 60}}])
    u = drv.units[0]
    io = IOContext(speed=SPEED)
    start = io.link_us() / US
    u.rd.last_poll = {cls: start for cls in PollClass}
    io.t0_ns -= 1_000_000_000  # one real second later: 100 s of the cycle clock
    assert ModbusDriver._due(u, io) == {PollClass.FAST}
    io.t0_ns -= 1_100_000_000  # 2.1 real seconds after the last poll
    assert ModbusDriver._due(u, io) == {PollClass.FAST, PollClass.NORMAL}
    io.t0_ns -= 58_000_000_000  # 60.1 real seconds
    assert ModbusDriver._due(u, io) == set(PollClass)


def test_at_speed_the_normal_class_is_read_on_its_real_period_and_the_fast_one_every_cycle() -> None:
    async def main() -> None:
        port = free_port()
        vp = plant([{"name": "dev", "map": METER, "port": port}], step_s=0.1)
        await vp.start()
        drv = tcp_driver(port, METER, units=[{"unit": 1, "map": METER, "poll": {"normal_s": NORMAL_S, "slow_s": 600}}])
        io = IOContext(speed=SPEED)
        tags = Tags(io)
        task = asyncio.create_task(drv.run(io))
        try:
            await wait_for(lambda: tags.good("meter.power", "meter.current"), 10, "first reads")
            tags.poll()
            tags.count.clear()
            loop = asyncio.get_running_loop()
            end = loop.time() + WINDOW_S
            cycles = 0
            while loop.time() < end:  # the scan's cycles: each wakes the driver for a round
                drv.on_outputs(io.now_us(), {}, {})
                cycles += 1
                await asyncio.sleep(CYCLE_S)
            tags.poll()
            fast = tags.count.get("meter.power", 0)
            normal = tags.count.get("meter.current", 0)
            # fast: about every cycle (a loaded machine runs fewer rounds than cycles, never more)
            assert fast >= cycles / 3, (fast, cycles)
            # normal: on its real period (on the cycle clock x100 it would be every round, like fast)
            assert 2 <= normal <= WINDOW_S / NORMAL_S + 2, (normal, fast)
            assert normal < fast / 2, (normal, fast)
        finally:
            await teardown([task], [drv], [vp])

    asyncio.run(main())


POWER = range(0, 2)  # meter.power's registers (site_meter_tcp): only the request that reads them is dropped


async def _power_updates(r, rule: Rule, what: str) -> list[Quality]:  # type: ignore[no-untyped-def]
    """The qualities of meter.power delivered from the moment ``rule`` is injected until it has acted and
    one good read came after it."""
    seen: list[Quality] = []
    r.io.drain()
    r.proxy.inject(rule)

    def done() -> bool:
        seen.extend(u.quality for u in r.io.drain() if u.name == "meter.power")
        return rule.hits >= (rule.times or 0) and bool(seen) and seen[-1] is Quality.GOOD

    await wait_for(done, 10, what)
    return seen


def test_one_lost_answer_is_retried_and_no_tag_turns_bad() -> None:
    """One missed answer is not a missed poll: the request is retried inside the poll (``retries``)."""

    async def main() -> None:
        async with rig(METER, retries=1, timeout_s=0.3) as r:
            await wait_for(lambda: r.tags.good(*r.inputs), 10, "first reads")
            seen = await _power_updates(
                r, Rule("drop", function={4}, addresses=POWER, times=1), "a read after the drop"
            )
            assert Quality.BAD not in seen, seen

    asyncio.run(main())


def test_a_poll_unanswered_after_its_retries_turns_its_tags_bad_at_once() -> None:
    """Every attempt of one poll unanswered: bad at once (docs/depot.md "One missed poll"), good again at
    the next answered poll."""

    async def main() -> None:
        async with rig(METER, retries=1, timeout_s=0.3) as r:
            await wait_for(lambda: r.tags.good(*r.inputs), 10, "first reads")
            seen = await _power_updates(r, Rule("drop", function={4}, addresses=POWER, times=2), "bad, then good again")
            assert Quality.BAD in seen, seen
            first_bad = seen.index(Quality.BAD)
            assert seen[first_bad + 1 :] and Quality.GOOD in seen[first_bad + 1 :]

    asyncio.run(main())


INV = "sunspec_der_inverter"  # refresh_s 2 s; reversion timeout 10 s written at connect (WSetRvrtTms)
FAST_SITE = SiteInfo("test", 240.0, 60.0, 20_000 * SPEED, base_dir=ROOT, speed=SPEED)


def test_at_speed_the_refresh_and_the_reversion_timeout_count_real_time() -> None:
    """At x100 a 2 s refresh on the cycle clock was a write every 20 ms cycle; it is one every 2 real
    seconds, and the device (which counts the plant's time) is told 100 x 10 s, so it still reverts 10 real
    seconds after the scan stops, as on the real site."""

    async def main() -> None:
        port = free_port()
        vp = plant([{"name": "dev", "map": INV, "port": port}])
        await vp.start()
        params = {"host": "127.0.0.1", "port": port, "timeout_s": 0.3, "retries": 0, "units": [{"unit": 1, "map": INV}]}
        drv = ModbusTcpDriver("dev", ModbusTcpDriver.Params.model_validate(params), FAST_SITE)
        io = IOContext(speed=SPEED)
        tags = Tags(io)
        task = asyncio.create_task(drv.run(io))
        try:
            await wait_for(lambda: tags.good(*inputs(drv)), 10, "all tags good")
            dev = vp.devices["dev"]
            await wait_for(lambda: dev.config.get("WSetRvrtTms") is not None, 5, "reversion timeout written")
            assert dev.config["WSetRvrtTms"] == 10 * SPEED
            u = drv.units[0]
            wset = u.disc.addr["WSet"][1]
            outs = {"inverter.setpoint": -7000.0, "inverter.enable": True}
            cycle_us = 20_000 * SPEED  # a 20 ms scan at x100: 2 s of the cycle clock per cycle
            refresh_cycles = round(u.map.refresh_s * US / 20_000)  # 100 cycles of 20 ms: 2 real seconds
            for k in range(3 * refresh_cycles + 1):
                drv.on_outputs(k * cycle_us, outs, outs if k == 0 else {})
                await asyncio.sleep(0)
            await wait_for(lambda: not u.wr.pending, 5)
            # once on change, then once per 2 real seconds of cycles: 4, not one per cycle (301)
            assert len([w for w in dev.writes if w[1] == wset]) == 4
        finally:
            await teardown([task], [drv], [vp])

    asyncio.run(main())
