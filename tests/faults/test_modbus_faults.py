"""Every Modbus wire fault, injected by the proxy between the real driver and the virtual plant: each turns
the tags it touches bad (never a wrong value), and the link comes back by itself once the fault heals."""

from __future__ import annotations

import asyncio
import logging

import pytest

from tests.faults.proxy import Rule
from tests.faults.rig import rig
from tests.io.helpers import wait_for

METER = "site_meter_tcp"
LOG = "v2g_plc.io.modbus"


def run(coro) -> None:  # type: ignore[no-untyped-def]
    asyncio.run(coro)


async def heal_and_recover(r, what: str) -> None:  # type: ignore[no-untyped-def]
    r.proxy.clear()
    await wait_for(lambda: r.tags.good(*r.inputs), 10, f"all tags good again after {what}")


@pytest.mark.parametrize(
    "rule,counted",
    [
        (Rule("drop"), "no_answer"),
        (Rule("delay", delay_s=1.0), "no_answer"),  # later than the 0.3 s timeout
        (Rule("truncate"), "no_answer"),
        (Rule("hang"), None),
        (Rule("garble"), "garbled"),
        (Rule("garbage"), "garbled"),
        (Rule("wrong_tid"), "wrong_transaction"),
        (Rule("wrong_tid", tid_delta=0), "wrong_transaction"),  # pymodbus alone accepts id 0 for any request
        (Rule("wrong_fc"), "wrong_function"),
        (Rule("exception", code=0x04), "exception"),
        (Rule("exception", code=0x06), "exception"),
    ],
    ids=[
        "drop",
        "delay_past_timeout",
        "truncate",
        "hang",
        "garble",
        "garbage",
        "wrong_tid",
        "tid_zero",
        "wrong_fc",
        "exception_0x04",
        "exception_0x06",
    ],
)
def test_wire_fault_turns_tags_bad_and_heals(rule: Rule, counted: str | None, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)

    async def main() -> None:
        async with rig(METER) as r:
            await wait_for(lambda: r.tags.good(*r.inputs), 10, "all good")
            r.proxy.inject(rule)
            await wait_for(lambda: r.tags.bad(*r.inputs), 10, f"all bad under {rule.action}")
            if counted is not None:
                assert r.drv.faults[counted] > 0, dict(r.drv.faults)
            await heal_and_recover(r, rule.action)

    run(main())
    # a garbled frame never reaches pymodbus's decoder (which would raise inside asyncio's protocol callback)
    assert "Fatal error" not in caplog.text
    assert "Traceback" not in caplog.text


def test_answers_keep_their_values_under_a_delay_within_the_timeout() -> None:
    async def main() -> None:
        async with rig(METER, timeout_s=1.0) as r:
            await wait_for(lambda: r.tags.good(*r.inputs), 10)
            r.proxy.inject(Rule("delay", delay_s=0.05))
            seen = r.proxy.count()
            await wait_for(lambda: r.proxy.count("delay") >= 10, 10, "ten delayed answers")
            assert r.tags.good(*r.inputs)
            assert r.drv.faults["no_answer"] == 0
            assert r.proxy.count() > seen

    run(main())


def test_a_late_answer_is_never_taken_for_the_next_request() -> None:
    """An answer held back and sent after the next one carries the old transaction id: it is dropped and
    the value delivered for each register is the one the device holds (the plant's meter power)."""

    async def main() -> None:
        async with rig(METER) as r:
            await wait_for(lambda: r.tags.good(*r.inputs), 10)
            r.proxy.inject(Rule("reorder", times=3))
            await wait_for(lambda: r.drv.faults["wrong_transaction"] >= 1, 10, "a late answer seen")
            await heal_and_recover(r, "reorder")
            expect = r.vp.plant.power_w + r.vp.plant.load_w
            await wait_for(lambda: abs(r.tags.value("meter.power") - expect) < 0.01, 5, "meter power as held")

    run(main())


def test_an_exception_on_one_address_range_turns_only_its_tags_bad() -> None:
    """Per unit, function and address: the energy counters (input 10..13, read apart with max_gap 0) fail,
    the fast values of the same device stay good."""

    async def main() -> None:
        async with rig(METER, units=[{"unit": 1, "map": METER, "max_gap": 0}]) as r:
            await wait_for(lambda: r.tags.good(*r.inputs), 10)
            r.proxy.inject(Rule("exception", code=0x04, unit=1, function={4}, addresses=range(10, 14)))
            energy = ("meter.energy_import", "meter.energy_export")
            await wait_for(lambda: r.tags.bad(*energy), 5, "energy counters bad")
            fast = ("meter.power", "meter.voltage", "meter.frequency")
            n = {t: r.tags.count[t] for t in fast}
            await wait_for(lambda: all(r.tags.poll().count[t] > n[t] for t in fast), 5, "fast values delivered")
            assert r.tags.good(*fast)
            assert r.tags.bad(*energy)
            await heal_and_recover(r, "exception on one address range")

    run(main())


@pytest.mark.parametrize("idle", [False, True], ids=["request_in_flight", "between_polls"])
def test_dropped_connection_is_noticed_at_once(idle: bool) -> None:
    """The request timeout is 5 s here: a drop noticed only when a request times out would take 5 s (it
    took about 1 s with the default 0.5 s x 2 tries); the link must end when the connection does."""

    async def main() -> None:
        async with rig(METER, timeout_s=5.0, retries=0) as r:
            await wait_for(lambda: r.tags.good(*r.inputs), 10)
            if idle:
                await r.proxy.drop_connections()
            else:
                r.proxy.inject(Rule("close", times=1))  # closed while the driver waits for this answer
            await wait_for(lambda: r.tags.bad(*r.inputs), 2.5, "all bad well before the request timeout")
            await wait_for(lambda: r.tags.good(*r.inputs), 10, "good again on a new connection")
            assert r.proxy.connections == 2

    run(main())


def test_invalid_answers_in_a_row_restart_the_connection() -> None:
    async def main() -> None:
        async with rig(METER) as r:  # retries 0: the 3rd invalid answer in a row ends the link
            await wait_for(lambda: r.tags.good(*r.inputs), 10)
            r.proxy.inject(Rule("wrong_fc"))
            await wait_for(lambda: r.proxy.connections >= 2, 10, "reconnected")
            await heal_and_recover(r, "wrong function codes")

    run(main())


def test_cancelling_the_driver_always_ends_it() -> None:
    """Cancelled at 60 different moments of busy polling (a request in flight, an answer arriving), the
    driver ends every time: pymodbus's asyncio.wait_for on Python 3.11 can swallow a cancel that arrives
    with the answer, and the driver polled on (a test once hung 300 s in teardown)."""

    async def main() -> None:
        async with rig(METER, start=False) as r:
            for k in range(60):
                task = asyncio.create_task(r.drv.run(r.io))
                await wait_for(lambda: r.drv.connected, 5, "connected")
                for _ in range(k % 7):
                    r.drv.on_outputs(0, {}, {})  # wake the unit: a request goes out now
                    await asyncio.sleep(0)
                task.cancel()
                done, _ = await asyncio.wait([task], timeout=3.0)
                assert task in done, f"driver ignored cancellation {k}"
                r.drv.client.close()
            assert r.tags.good(*r.inputs)

    run(main())
