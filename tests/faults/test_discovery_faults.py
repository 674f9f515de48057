"""SunSpec discovery under every way a device can answer it wrongly (booting, busy, garbled, a stale
transaction id, a hung answer, a cut chain): the tags stay bad while it does, and discovery is retried
(1, 2, 4 ... 30 s of the cycle clock) until the device heals, without a restart or a reconnect."""

from __future__ import annotations

import asyncio

import pytest

from tests.faults.proxy import Rule
from tests.faults.rig import rig
from tests.io.helpers import wait_for

INV = "sunspec_der_inverter"
SPEED = 10  # cycle clock x10: the retry schedule's 1, 2, 4 s pass in 0.1, 0.2, 0.4 s

# Where the simulated inverter's chain is (SunS at 40000): model 1 header at 40002 (length 66), so the
# header of the next model (701) is at 40070.
MODEL_701_HEADER = range(40070, 40072)

MODES = {
    "booting_illegal_address": Rule("exception", code=0x02, function={3}),
    "busy": Rule("exception", code=0x06, function={3}),
    "gateway_no_target": Rule("exception", code=0x0B, function={3}),
    "garbled": Rule("garble", function={3}),
    "garbage": Rule("garbage", function={3}),
    "wrong_transaction_id": Rule("wrong_tid", function={3}),
    "wrong_function_code": Rule("wrong_fc", function={3}),
    "truncated": Rule("truncate", function={3}),
    "hung": Rule("hang"),
    "late": Rule("delay", delay_s=0.6, function={3}),
    "chain_cut_busy": Rule("exception", code=0x06, function={3}, addresses=MODEL_701_HEADER),
    "chain_garbled": Rule("garble", function={3}, addresses=MODEL_701_HEADER),
}


def marker_reads(r) -> int:  # type: ignore[no-untyped-def]
    """Reads of the SunS marker at 40000 that reached the wire."""
    return sum(1 for q in r.proxy.seen if q.function == 3 and q.address == 40000 and q.count == 2)


@pytest.mark.parametrize("mode", list(MODES))
def test_discovery_fault_is_retried_until_the_device_heals(mode: str) -> None:
    async def main() -> None:
        async with rig(INV, start=False, speed=SPEED) as r:
            r.proxy.inject(MODES[mode])
            r.start()
            u = r.drv.units[0]
            # tried again: on the retry schedule, or on a new connection when the answers made the link
            # give up (no answer or invalid answers several times in a row)
            await wait_for(lambda: marker_reads(r) >= 2, 15, "discovery tried again")
            assert not u.disc.complete
            assert not r.tags.good("inverter.power")
            r.proxy.clear()
            await wait_for(lambda: r.tags.good(*r.inputs), 15, f"all good after {mode} healed")
            assert u.disc.complete
            assert u.disc.addr["inverter.power"][1] == 40000 + 2 + 68 + 10

    asyncio.run(main())


def test_discovery_retries_back_off() -> None:
    """While a device stays busy, discovery is tried at 0, 1, 3, 7, 15 ... s (cycle clock), not every cycle."""

    async def main() -> None:
        async with rig(INV, start=False, speed=SPEED) as r:
            r.proxy.inject(Rule("exception", code=0x06, function={3}))
            r.start()
            u = r.drv.units[0]
            await wait_for(lambda: u.disc.attempts >= 4, 15, "four attempts")
            t4 = r.io.now_us()
            await wait_for(lambda: u.disc.attempts >= 5, 15, "fifth attempt")
            # the 4th failure waits 8 s before the 5th attempt
            assert r.io.now_us() - t4 >= 7.5e6
            # each attempt reads the marker at each of the three bases: no more requests than that
            assert r.proxy.count("exception") <= 3 * u.disc.attempts + 3

    asyncio.run(main())


def test_a_device_without_a_model_keeps_the_others_and_finds_it_once_it_appears() -> None:
    """Model 713 missing at first (a DC charger before the EV's data arrived): its tags are bad, the rest
    good; once the chain lists it, its tags turn good without a reconnect."""

    async def main() -> None:
        async with rig(INV, start=False, speed=SPEED) as r:
            dev = r.vp.devices["dev"]
            a713 = dev.addr["ev.soc"] - 4
            saved = dev.image[a713], dev.image[a713 + 1]
            dev.image[a713], dev.image[a713 + 1] = 0xFFFF, 0
            r.start()
            await wait_for(lambda: r.tags.good("inverter.power") and r.tags.bad("ev.soc", "ev.soh"), 10)
            dev.image[a713], dev.image[a713 + 1] = saved
            await wait_for(lambda: r.tags.good(*r.inputs), 15, "model 713 found on a retry")
            assert r.proxy.connections == 1

    asyncio.run(main())
