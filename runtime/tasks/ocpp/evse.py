"""One EVSE of the station: its transaction, connector status, mode request and the tags it reads.

A site of one charger is a station of one EVSE (``evse_id``, tags as named); a depot (``evses`` in the
params, filled from the site file's ``evses:``) is one station whose EVSE n is the depot's EVSE n: evseId
n, tag prefix ``evse<n>.`` (docs/depot.md "Back office"). A tag name resolves as the EVSE view resolves it
for the scan's per-EVSE components (runtime/evses.py): ``evse<n>.<name>`` where the site has it, the site's
own tag otherwise, so ``safety.trip`` is the EVSE's trip and ``meter.voltage`` the site meter's.
"""

from __future__ import annotations

import collections
from collections.abc import Callable
from typing import Any

from runtime.evses import prefix_of
from runtime.tags import Image
from runtime.tasks.ocpp.transactions import Sample, Transactions, TxState
from runtime.tasks.ocpp.variables import OcppParams, TagMap

SITE_TX_KEY = "tx"  # the queue's state key of a single site's transaction (the key before depots)


class Evse:
    def __init__(self, p: OcppParams, n: int, depot: bool, stored: Callable[[str], Any]) -> None:
        """``stored``: the queue's persisted state by key (its transaction state, None when there is none)."""
        self.n = n
        self.prefix = prefix_of(n) if depot else ""
        self.state_key = f"tx:{n}" if depot else SITE_TX_KEY
        self.tags: TagMap = p.tags
        state = TxState.from_json(stored(self.state_key))
        self.tx = Transactions(n, p.connector_id, p.power_threshold_w, state, p.state_hold_s)
        self.status: str | None = None  # ConnectorStatusEnumType now
        self.sent_status: str | None = None  # the one the CSMS has
        self.status_changes: collections.deque[tuple[str, str]] = collections.deque(maxlen=100)
        self.last_sample: Sample | None = None
        self.aligned_slot: int | None = None
        self.last_periodic = -1e9  # monotonic time of the last periodic sample (sample_floor_s)
        self.needs_sent: dict[str, Any] | None = None  # the EV's charging needs the CSMS last got
        self.mode_sent: dict[str, Any] | None = None  # the last mode request asked of the scan
        self.mode_sent_us = 0
        self.steering = False  # a mode request is on its way
        self.trip = ""
        self._names: dict[str, str] = {}

    def name(self, img: Image, plain: str) -> str:
        """The site's name of ``plain`` for this EVSE (module docstring); the tag set is fixed for a run."""
        site = self._names.get(plain)
        if site is None:
            own = self.prefix + plain
            site = self._names[plain] = own if own in img else plain
        return site

    def value(self, img: Image, plain: str) -> Any:
        return img.value(self.name(img, plain))

    def sample(self, img: Image) -> Sample:
        t = self.tags
        connected = self.value(img, t.connected)
        trip = img.tag(self.name(img, t.trip)).value  # the committed trip code, whatever its quality
        return Sample(
            connected=None if connected is None else bool(connected),
            power_w=self.value(img, t.power),
            setpoint_w=img.tag(self.name(img, t.setpoint)).value,
            import_wh=self.value(img, t.energy_import),
            export_wh=self.value(img, t.energy_export),
            soc=self.value(img, t.soc),
            voltage=self.value(img, t.voltage),
            trip=str(trip or ""),
        )
