"""Registration of the ``ocpp`` task type and the shared tags it publishes."""

from __future__ import annotations

from pathlib import Path

from runtime.api import ParamError, SiteInfo
from runtime.evses import prefix_of, rename_spec
from runtime.tags import Direction, TagSpec, TagType
from runtime.tasks.base import Task, TaskContext, register_task
from runtime.tasks.ocpp.protocol import VERSIONS
from runtime.tasks.ocpp.variables import OcppParams

STALE_S = 10.0  # the station publishes at least every second while the task lives
PER_EVSE = ("ocpp.limit_charge", "ocpp.limit_discharge", "ocpp.operation_mode")  # under evse<n>. on a depot


@register_task("ocpp")
class OcppTask(Task):
    """The station's link to its CSMS. Publishes ``ocpp.limit_charge``/``ocpp.limit_discharge`` (W >= 0)
    for the safety layer's external limits, and ``ocpp.rtt`` (s) / ``ocpp.connected`` / ``ocpp.accepted``
    for its back-office supervision."""

    Params = OcppParams
    params: OcppParams
    events = True  # NotifyEvent from the scan's event stream

    def __init__(self, name: str, params: OcppParams, site: SiteInfo):
        super().__init__(name, _resolved(params, site.base_dir), site)

    def state_dir(self) -> Path:
        return Path(self.params.state_dir)

    def effective_variables(self) -> dict[str, object]:
        """The device-model values in force (site file, or the CSMS's where it set one): for ``check``."""
        from runtime.tasks.ocpp.variables import DeviceModel

        return DeviceModel(self.params, self.state_dir()).effective()

    def declare(self) -> list[TagSpec]:
        """The link's and the connection's tags unprefixed; each EVSE's limits and operation mode under its
        prefix on a depot (``evse3.ocpp.limit_charge``, what EVSE 3's safety reads as ``ocpp.limit_charge``
        through the EVSE view), unprefixed on a site of one charger."""
        site = [s for s in self._declare() if s.name not in PER_EVSE]
        per = [s for s in self._declare() if s.name in PER_EVSE]
        if not self.params.evses:
            return site + per
        return site + [rename_spec(s, prefix_of(n)) for n in self.params.evses for s in per]

    def _declare(self) -> list[TagSpec]:
        S = Direction.SHARED
        return [
            TagSpec("ocpp.connected", TagType.BOOL, "", S, False, STALE_S, "WebSocket to the CSMS open"),
            TagSpec(
                "ocpp.accepted",
                TagType.BOOL,
                "",
                S,
                False,
                STALE_S,
                "boot accepted, CSMS heard within OfflineThreshold",
            ),
            TagSpec("ocpp.rtt", TagType.FLOAT, "s", S, None, STALE_S, "round trip of the last CALL to the CSMS"),
            TagSpec("ocpp.limit_charge", TagType.FLOAT, "W", S, None, STALE_S, "charging limit of the CSMS's profiles"),
            TagSpec(
                "ocpp.limit_discharge", TagType.FLOAT, "W", S, None, STALE_S, "0 unless the CSMS accepted us lately"
            ),
            TagSpec("ocpp.queue", TagType.INT, "", S, 0, STALE_S, "transaction messages waiting for the CSMS"),
            TagSpec(
                "ocpp.operation_mode",
                TagType.STR,
                "",
                S,
                "",
                STALE_S,
                "OCPP 2.1 operationMode in force ('' none); ExternalSetpoint/ExternalLimits: the local EMS may steer",
            ),
            TagSpec(
                "ocpp.connection_import_w",
                TagType.FLOAT,
                "W",
                S,
                None,
                STALE_S,
                "LocalLoadBalancing: the period's limit at the site meter, for the allocator; 1e8 W: none",
            ),
            TagSpec(
                "ocpp.connection_export_w",
                TagType.FLOAT,
                "W",
                S,
                None,
                STALE_S,
                "LocalLoadBalancing: the period's dischargeLimit magnitude at the site meter; 1e8 W: none",
            ),
            TagSpec(
                "ocpp.afrr_signal",
                TagType.INT,
                "",
                S,
                None,
                STALE_S,
                "OCPP 2.1 AFRRSignal in force (from its timestamp on), the v2xSignalWattCurve's input; bad: none yet",
            ),
        ]

    async def run(self, cx: TaskContext) -> None:
        from runtime.tasks.ocpp.station import Station

        st = Station(
            self.params, self.state_dir(), self.site.nominal_voltage, self.site.phases, list(VERSIONS.values())
        )
        await st.run(cx)


def _resolved(p: OcppParams, base_dir: Path) -> OcppParams:
    """Paths relative to the site file made absolute, and the files the profile needs present (a site that
    cannot connect fails ``check``, not at 3 a.m.)."""

    def absolute(v: str) -> str:
        return str(Path(v) if Path(v).is_absolute() else base_dir / v)

    keys = ["state_dir", "ca_file", "cert_file", "key_file"] + [
        k for k in ("password_file", "station_ca_file") if getattr(p, k)
    ]
    q = p.model_copy(update={k: absolute(getattr(p, k)) for k in keys})
    need = {1: ["password_file"], 2: ["password_file", "ca_file"], 3: ["ca_file", "cert_file", "key_file"]}
    for k in need[q.security_profile]:
        if not Path(getattr(q, k)).is_file():
            raise ParamError((k,), f"{getattr(q, k)} does not exist (security profile {q.security_profile} needs it)")
    return q
