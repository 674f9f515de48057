"""NotifyEVChargingNeeds (OCPP 2.1, K "ISO 15118 / V2X") from the EV's tags: pure, no I/O.

``v2xChargingParameters`` carries the EV's power range as magnitudes (charge and discharge, W >= 0) and its
energy requests in Wh from the present SoC: to the departure target (``evTargetEnergyRequest``), to the
SoC ceiling (``evMaxV2XEnergyRequest``) and to the departure reserve below which V2X must not go
(``evMinV2XEnergyRequest``, negative while there is energy to give). A CSMS plans with these, so they are
sent at the start of a transaction and again only when they change materially (``MATERIAL_WH`` of any
energy request, or a changed power range or target), never at the scan's pace.
"""

from __future__ import annotations

from typing import Any

MATERIAL_WH = 1000.0  # an energy request that moved less than this is no news to the CSMS


def needs(
    soc: float,
    capacity_wh: float,
    reserve_soc: float | None,
    *,
    target_soc: float,
    soc_max: float,
    max_charge_w: float,
    max_discharge_w: float,
    transfer_mode: str,
) -> dict[str, Any]:
    """The ``chargingNeeds`` object (ChargingNeedsType) for an EV at ``soc`` (0..1)."""
    floor = target_soc if reserve_soc is None else reserve_soc
    v2x = {
        "minChargePower": 0.0,
        "maxChargePower": max_charge_w,
        "minDischargePower": 0.0,
        "maxDischargePower": max_discharge_w,
        "evTargetEnergyRequest": round(max(0.0, (target_soc - soc) * capacity_wh), 1),
        "evMinV2XEnergyRequest": round((floor - soc) * capacity_wh, 1),
        "evMaxV2XEnergyRequest": round((soc_max - soc) * capacity_wh, 1),
        "targetSoC": round(target_soc * 100),
    }
    return {"requestedEnergyTransfer": transfer_mode, "v2xChargingParameters": v2x}


def material(sent: dict[str, Any] | None, now: dict[str, Any]) -> bool:
    """Whether ``now`` differs enough from what the CSMS last got to send it again."""
    if sent is None:
        return True
    a, b = sent["v2xChargingParameters"], now["v2xChargingParameters"]
    for k in b:
        if k.startswith("ev") and k.endswith("EnergyRequest"):
            if abs(a.get(k, 0.0) - b[k]) >= MATERIAL_WH:
                return True
        elif a.get(k) != b[k]:
            return True
    return sent["requestedEnergyTransfer"] != now["requestedEnergyTransfer"]
