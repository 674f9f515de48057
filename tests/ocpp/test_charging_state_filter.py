"""ChargingStateChanged without chatter (runtime/tasks/ocpp/transactions.py): frequency response swings the
power through zero every few cycles; a state the power only passes through is not reported, while a real
start, a real stop and a trip are reported in the step that sees them. Cycle clock, no sleeping."""

from __future__ import annotations

from runtime.tags import US
from runtime.tasks.ocpp.transactions import Sample, Transactions, TxState

PERIOD_US = 20_000  # the bundled site's scan
HOLD_S = 10.0
SWING = [3000.0, 1000.0, 0.0, -1000.0, -3000.0, -1000.0, 0.0, 1000.0]  # W, a swing through zero every 4 cycles


class Feed:
    def __init__(self, hold_s: float) -> None:
        self.tx = Transactions(1, 1, 50.0, TxState(), hold_s)
        self.now_us = 0
        self.changes: list[tuple[int, str]] = []  # (cycle, state reported)

    def step(self, power: float, setpoint: float | None = None, trip: str = "", connected: bool = True) -> str | None:
        sp = power if setpoint is None else setpoint
        s = Sample(connected, power_w=power, setpoint_w=sp, trip=trip)
        msg = self.tx.step(s, self.now_us, "2027-01-04T17:00:00.000Z", 15, False)
        self.now_us += PERIOD_US
        if msg is not None and msg[1]["triggerReason"] == "ChargingStateChanged":
            state = str(msg[1]["transactionInfo"]["chargingState"])
            self.changes.append((self.now_us // PERIOD_US - 1, state))
            return state
        return None

    def run(self, seconds: float, power: float, **kw: object) -> None:
        for _ in range(round(seconds * US / PERIOD_US)):
            self.step(power, **kw)  # type: ignore[arg-type]


def swing(feed: Feed, cycles: int = 200) -> None:
    for k in range(cycles):
        feed.step(SWING[k % len(SWING)])


def test_the_swings_of_frequency_response_are_not_each_a_transaction_event() -> None:
    unfiltered = Feed(0.0)
    unfiltered.step(0.0)  # Started
    unfiltered.run(5.0, 3000.0)
    swing(unfiltered)
    assert len(unfiltered.changes) > 100  # what the CSMS got before: every pass through zero, twice

    feed = Feed(HOLD_S)
    feed.step(0.0)
    feed.run(5.0, 3000.0)
    n = len(feed.changes)
    swing(feed)
    assert len(feed.changes) - n <= 1  # 200 cycles, 4 s: at most the first swing after a quiet spell
    swing(feed, round(30 * US / PERIOD_US))  # 30 s more of it: at most one per hold
    assert len(feed.changes) - n <= 1 + 30 / HOLD_S


def test_a_real_start_and_stop_are_reported_in_the_cycle_that_sees_them() -> None:
    feed = Feed(HOLD_S)
    assert feed.step(0.0, setpoint=0.0) is None  # Started, EVConnected
    feed.run(3.0, 0.0, setpoint=0.0)
    assert feed.step(7000.0) == "Charging"  # the first charge of the transaction: at once
    feed.run(60.0, 7000.0)
    assert feed.step(0.0, setpoint=0.0) == "SuspendedEVSE"  # the site stops offering power: at once
    feed.run(60.0, 0.0, setpoint=0.0)
    assert feed.step(7000.0) == "Charging"  # and starts again after a quiet spell: at once


def test_a_trip_is_reported_at_once_even_in_the_swing() -> None:
    feed = Feed(HOLD_S)
    feed.step(0.0)
    feed.run(5.0, 3000.0)
    swing(feed, 20)
    assert feed.step(0.0, setpoint=0.0, trip="ov2") == "SuspendedEVSE"


def test_a_new_state_after_the_swing_is_reported_once_it_held() -> None:
    feed = Feed(HOLD_S)
    feed.step(0.0)
    feed.run(5.0, 3000.0)
    swing(feed, 29)  # the first swing reported (after a quiet spell), the next ones held back
    reported = feed.changes[-1][1]
    assert reported != "SuspendedEV"
    cycles = 0
    while feed.changes[-1][1] == reported:  # the EV now stands still at 0 W while offered power
        feed.step(0.0, setpoint=-3000.0)
        cycles += 1
        assert cycles * PERIOD_US <= HOLD_S * US + PERIOD_US
    assert feed.changes[-1][1] == "SuspendedEV"
