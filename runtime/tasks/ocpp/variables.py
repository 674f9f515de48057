"""The station's settings and the device-model variables a CSMS may read and change.

The site file gives each variable its value; a value set by the CSMS (SetVariables) is stored under
``state_dir`` and wins until the site file's own value for it changes, then the file wins and the stored
value is dropped (docs/design.md "CSMS variables vs the site file"). Component and variable names are
those of the OCPP 2.0.1 part 2 appendices (device model).
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, model_validator

from runtime.api import Params, TagName

log = logging.getLogger("v2g_plc.ocpp")

SCHEMA = 1  # of variables.json


TransferMode = Literal[
    "AC_BPT", "AC_BPT_DER", "DC_BPT", "DC_ACDP_BPT"
]  # OCPP 2.1 EnergyTransferModeEnumType, bidirectional


class Variables(Params):
    """Device-model variables (OCPP 2.0.1 part 2, appendix "Controller components"), in the site file."""

    TxUpdatedInterval: int = Field(15, ge=1, le=86400, description="SampledDataCtrlr: s between meter values")
    AlignedInterval: int = Field(
        900, ge=0, le=86400, description="AlignedDataCtrlr.Interval: s between clock-aligned values (0: off)"
    )
    HeartbeatInterval: int = Field(300, ge=1, le=86400, description="OCPPCommCtrlr; the CSMS's boot answer wins")
    MessageAttempts: int = Field(5, ge=1, le=100, description="OCPPCommCtrlr, instance TransactionEvent")
    MessageAttemptInterval: int = Field(10, ge=1, le=3600, description="s; times the attempt number")
    RetryBackOffWaitMinimum: int = Field(3, ge=1, le=3600, description="OCPPCommCtrlr: s before a reconnect")
    RetryBackOffRandomRange: int = Field(10, ge=0, le=3600, description="s of random extra wait")
    RetryBackOffRepeatTimes: int = Field(5, ge=0, le=20, description="doublings of the wait")
    OfflineThreshold: int = Field(
        300, ge=1, le=86400, description="s offline after which statuses are re-sent and discharge stops"
    )


class OcppParams(Params):
    csms_url: str = Field(description="the operator's CentralSystemURI, ws:// (profile 1) or wss:// (2, 3)")
    identity: str = Field(min_length=1, max_length=48, pattern=r"^[A-Za-z0-9*\-_=:+|@.]+$")
    security_profile: Literal[1, 2, 3] = 2
    password_file: str | None = Field(None, description="profiles 1/2: file holding the Basic auth password")
    ca_file: str = "/etc/v2g-plc/certs/csms-root-ca.pem"
    cert_file: str = "/etc/v2g-plc/certs/station.pem"
    key_file: str = "/etc/v2g-plc/certs/station.key"
    station_ca_file: str | None = Field(
        None, description="profile 3: the CA that issues the station's certificates (default: ca_file)"
    )
    renew_before_days: float = Field(
        30.0, ge=0, le=365, description="profile 3: ask the CSMS for a new station certificate this long before expiry"
    )
    state_dir: str = Field("var/ocpp", description="queue, variables, profiles (relative: to the site file)")
    evse_id: int = Field(1, ge=1, le=255, description="a site of one charger: its evseId")
    evses: list[Annotated[int, Field(ge=1, le=999)]] = Field(
        default_factory=list,
        description="a depot: the station's EVSEs, evseId n = tag prefix evse<n>. (filled from the site's evses: "
        "when omitted; empty on a site of one charger, which is evse_id)",
    )
    connector_id: int = Field(1, ge=1, le=255)
    vendor: str = Field("v2g-plc", max_length=50)
    model: str = Field("v2g-plc", max_length=20)
    serial: str | None = Field(None, max_length=25, description="default: the identity")
    firmware: str = Field("0.1.0", max_length=50)
    rated_power_w: float = Field(11000.0, gt=0, le=1e6, description="published as the limit with no profile")
    discharge_requires_csms: bool = Field(
        True, description="no discharge unless the CSMS accepted the station within OfflineThreshold"
    )
    call_timeout_s: float = Field(30.0, gt=0, le=300)
    queue_max_bytes: int = Field(4_000_000, ge=10_000, le=1_000_000_000, description="offline queue bound")
    sample_floor_s: float = Field(
        1.0, ge=0, le=60, description="real seconds at least between periodic samples (a site run at --speed)"
    )
    energy_transfer_modes: list[TransferMode] = Field(
        default_factory=lambda: list[TransferMode](["AC_BPT"]),
        min_length=1,
        description="V2XChargingCtrlr.SupportedEnergyTransferModes (EnergyTransferModeEnumType, bidirectional)",
    )
    target_soc: float = Field(
        0.8,
        ge=0,
        le=1,
        description="departure SoC for NotifyEVChargingNeeds (the planner's reserve, if any, is the V2X floor)",
    )
    soc_max: float = Field(0.9, ge=0, le=1, description="SoC ceiling for NotifyEVChargingNeeds")
    authorize_remote_start: bool = Field(
        True, description="AuthCtrlr.AuthorizeRemoteStart: a remote start's idToken is authorized by the CSMS"
    )
    power_threshold_w: float = Field(50.0, ge=0, le=10000, description="|power| above: energy is flowing")
    state_hold_s: float = Field(
        10.0,
        ge=0,
        le=3600,
        description="cycle-clock s a charging state holds before ChargingStateChanged is sent, unless none was "
        "sent for as long (a real start or stop is sent at once; a swing of the power through zero is not)",
    )
    tags: TagMap = Field(default_factory=lambda: TagMap())
    variables: Variables = Field(default_factory=lambda: Variables())

    @model_validator(mode="after")
    def _scheme(self) -> OcppParams:
        scheme = self.csms_url.split("://", 1)[0]
        want = "ws" if self.security_profile == 1 else "wss"
        if scheme != want:
            raise ValueError(f"security_profile {self.security_profile} needs a {want}:// csms_url")
        if self.security_profile in (1, 2) and not self.password_file:
            raise ValueError(f"security_profile {self.security_profile} needs password_file")
        if len(set(self.evses)) != len(self.evses):
            raise ValueError("evses lists an EVSE twice")
        return self

    @property
    def evse_ids(self) -> list[int]:
        """The station's EVSEs: the depot's, or the one of a site of one charger."""
        return list(self.evses) or [self.evse_id]


class TagMap(Params):
    """Which image tags the station reads (defaults: the bundled maps' names)."""

    connected: TagName = "ev.connected"
    power: TagName = "inverter.power"
    setpoint: TagName = "inverter.setpoint"
    energy_import: TagName = "meter.energy_import"
    energy_export: TagName = "meter.energy_export"
    soc: TagName = "ev.soc"
    voltage: TagName = "grid.voltage"
    trip: TagName = "safety.trip"
    capacity: TagName = "ev.capacity_wh"
    reserve_soc: TagName = "plan.reserve_soc"


OcppParams.model_rebuild()


@dataclass(frozen=True)
class VarDef:
    component: str
    variable: str
    key: str  # field of Variables, or a special key
    mutability: Literal["ReadOnly", "ReadWrite", "WriteOnly"] = "ReadWrite"
    unit: str | None = "s"
    instance: str | None = None


VARDEFS: tuple[VarDef, ...] = (
    VarDef("SampledDataCtrlr", "TxUpdatedInterval", "TxUpdatedInterval"),
    VarDef("AlignedDataCtrlr", "Interval", "AlignedInterval"),
    VarDef("OCPPCommCtrlr", "HeartbeatInterval", "HeartbeatInterval"),
    VarDef("OCPPCommCtrlr", "MessageAttempts", "MessageAttempts", unit=None, instance="TransactionEvent"),
    VarDef("OCPPCommCtrlr", "MessageAttemptInterval", "MessageAttemptInterval", instance="TransactionEvent"),
    VarDef("OCPPCommCtrlr", "RetryBackOffWaitMinimum", "RetryBackOffWaitMinimum"),
    VarDef("OCPPCommCtrlr", "RetryBackOffRandomRange", "RetryBackOffRandomRange"),
    VarDef("OCPPCommCtrlr", "RetryBackOffRepeatTimes", "RetryBackOffRepeatTimes", unit=None),
    VarDef("OCPPCommCtrlr", "OfflineThreshold", "OfflineThreshold"),
    VarDef("SecurityCtrlr", "SecurityProfile", "security_profile", "ReadOnly", None),
    VarDef("SecurityCtrlr", "Identity", "identity", "ReadOnly", None),
    VarDef("SecurityCtrlr", "BasicAuthPassword", "password", "WriteOnly", None),
    VarDef("SampledDataCtrlr", "TxUpdatedMeasurands", "measurands", "ReadOnly", None),
    VarDef("AuthCtrlr", "AuthorizeRemoteStart", "authorize_remote_start", "ReadOnly", None),
    # OCPP 2.1 part 2, appendix "V2XChargingCtrlr": what the station offers for bidirectional charging
    VarDef("V2XChargingCtrlr", "Available", "v2x_available", "ReadOnly", None),
    VarDef("V2XChargingCtrlr", "Enabled", "v2x_enabled", "ReadOnly", None),
    VarDef("V2XChargingCtrlr", "SupportedEnergyTransferModes", "v2x_transfer_modes", "ReadOnly", None),
    VarDef("V2XChargingCtrlr", "SupportedOperationModes", "v2x_operation_modes", "ReadOnly", None),
)

# the operation modes the site carries out (docs/ocpp.md "OCPP 2.1"), in OperationModeEnumType's order
OPERATION_MODES = ",".join(
    ("Idle", "ChargingOnly", "CentralSetpoint", "ExternalSetpoint", "ExternalLimits", "CentralFrequency",
     "LocalFrequency", "LocalLoadBalancing")
)  # fmt: skip

MEASURANDS = (
    "Energy.Active.Import.Register,Energy.Active.Export.Register,Power.Active.Import,Power.Active.Export,SoC,Voltage"
)


def find(component: str, variable: str, instance: str | None = None) -> VarDef | None:
    for d in VARDEFS:
        if d.component == component and d.variable == variable and (instance is None or instance == d.instance):
            return d
    return None


class DeviceModel:
    """The effective variables: the site file's values, overlaid by the CSMS's stored ones."""

    def __init__(self, params: OcppParams, state_dir: Path) -> None:
        self.params = params
        self.path = state_dir / "variables.json"
        self.password_path = state_dir / "password"
        self.file_values = params.variables.model_dump()
        self.overrides: dict[str, int] = {}
        self.granted: dict[str, int] = {}  # by the CSMS at boot (HeartbeatInterval, B01.FR.04): not stored
        self._load()

    def _load(self) -> None:
        if not self.path.exists():
            return
        doc = json.loads(self.path.read_text())
        if doc.get("schema") != SCHEMA:
            raise ValueError(f"{self.path}: schema {doc.get('schema')!r}, this runtime reads {SCHEMA}")
        for key, entry in doc.get("values", {}).items():
            if key not in self.file_values:
                continue
            if entry.get("file") != self.file_values[key]:
                log.info("ocpp: %s changed in the site file: the value the CSMS set (%s) is dropped", key, entry)
                continue
            self.overrides[key] = int(entry["value"])

    def _save(self) -> None:
        doc = {
            "schema": SCHEMA,
            "values": {k: {"value": v, "file": self.file_values[k]} for k, v in self.overrides.items()},
        }
        _write_atomic(self.path, json.dumps(doc, indent=1).encode(), 0o600)

    def __getitem__(self, key: str) -> int:
        if key in self.granted:
            return self.granted[key]
        return self.overrides.get(key, self.file_values[key])

    def grant(self, key: str, value: int) -> None:
        self.granted[key] = value

    def password(self) -> str | None:
        """The Basic auth password: one set by the CSMS wins over the operator's file."""
        if self.password_path.exists():
            return self.password_path.read_text().strip()
        pf = self.params.password_file
        return Path(pf).read_text().strip() if pf else None

    def read(self, d: VarDef) -> str | None:
        """The actual value as OCPP text, or None for a write-only variable."""
        if d.mutability == "WriteOnly":
            return None
        if d.key == "security_profile":
            return str(self.params.security_profile)
        if d.key == "identity":
            return self.params.identity
        if d.key == "measurands":
            return MEASURANDS
        if d.key == "authorize_remote_start":
            return "true" if self.params.authorize_remote_start else "false"
        if d.key in ("v2x_available", "v2x_enabled"):
            return "true"
        if d.key == "v2x_transfer_modes":
            return ",".join(self.params.energy_transfer_modes)
        if d.key == "v2x_operation_modes":
            return OPERATION_MODES
        return str(self[d.key])

    def write(self, d: VarDef, text: str) -> str:
        """Apply a SetVariables value: the attributeStatus (OCPP 2.0.1 part 2, B05)."""
        if d.mutability == "ReadOnly":
            return "Rejected"
        if d.key == "password":
            # SecurityCtrlr.BasicAuthPassword: 16-40 characters (OCPP 2.0.1 part 2, A01.FR.04)
            if not 16 <= len(text) <= 40:
                return "Rejected"
            _write_atomic(self.password_path, text.encode(), 0o600)
            return "Accepted"
        try:
            value = int(text)
        except ValueError:
            return "Rejected"
        field = Variables.model_fields[d.key]
        try:
            Variables(**{**self.file_values, d.key: value})
        except ValueError:
            log.info("ocpp: SetVariables %s=%s rejected: outside %s", d.variable, text, field.metadata)
            return "Rejected"
        self.overrides[d.key] = value
        self.granted.pop(d.key, None)
        self._save()
        return "Accepted"

    def effective(self) -> dict[str, Any]:
        """What ``check`` and the log show."""
        return {f"{d.component}.{d.variable}": self.read(d) for d in VARDEFS if d.mutability != "WriteOnly"}


def _write_atomic(path: Path, data: bytes, mode: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
